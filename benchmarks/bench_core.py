"""runwatch end to end (WebMonitor, the chunk store, the server), each figure beside its baseline from the same run.

    python benchmarks/bench_core.py [--quick] [--repeat N]

The figures of issue 15's target table, measured as a user runs runwatch:

1. Producer cost of ``WebMonitor.update_metrics`` (4 scalars, web on; the
   call alone timed, its dict made before): median and mean at full speed,
   and the median at 1,000 calls/s (the loop sleeping until each call's
   millisecond tick), beside copying the same dict and beside an inline raw
   sqlite3 insert of the call.
2. Committed values/s for 1, 4 and 100 scalars per call: from the first
   ``update_metrics`` until ``flush()`` returns, beside raw sqlite3 writing
   runwatch's former layout (one row per call, values as a JSON array) and
   one row per value, the same calls in transactions of 20,000 calls;
   interleaved repetitions, median and range. Bytes per value on disk of
   each store (file size after a checkpoint, minus an empty store's).
3. ``get_run_metrics(run, ["loss"])`` of runs of 1M and 5M calls (fresh
   ``DatabaseManager`` each time), beside ``numpy.load`` of the same columns
   and a raw sqlite3 read of the former row layout (1M).
4. A cold chart through the server: ``runwatch serve`` started fresh, then
   one request of the loss of runs of 1M and 10M calls (request time at the
   client), by each route a chart is read by: the dashboard's run page and
   compare view (``GET /api/compare?runs={id}&metrics=loss&max_points=2000``:
   a mean line with its min/max band) and the run's metrics route (``GET
   /api/runs/{id}/metrics?names=loss&max_points=2000``: min/max points), each
   on a server of its own, beside reading the 1M series from the row layout
   and downsampling it in numpy.
5. Peak RSS of a process logging 2M values (500,000 calls of 4 scalars, made
   one at a time) at full speed through a WebMonitor with the web server on,
   beside a process making the same calls without runwatch, and an idle
   started monitor.

Runs of 1M, 5M and 10M calls for sections 3 and 4 are written through the
store's write path (``Store.open_writer``: the monitor's store sink minus the
pipeline in front of it, batches of 50,000 calls), which is faster to fill
than 10M ``update_metrics`` calls; everything else goes through
``WebMonitor``. The workload is the one of bench_store.py (a noisy loss, a
batch accuracy, a schedule, a sample counter; 100 scalars: gradient norms,
accuracies, schedules, counters). The load average at the start and
CPU time beside wall time are printed, since other processes may share the
cores. Results go to ``benchmarks/results/core.json``; every loop is bounded
in count, nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import bench_store as workload  # noqa: E402  (the workload generator lives beside this script)

from runwatch import DatabaseManager, MonitorConfig, WebMonitor  # noqa: E402
from runwatch.events import RunLifecycle, RunTransition  # noqa: E402
from runwatch.store.sqlite import SQLiteStore  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TS = workload.TS
CALLS_PER_TRANSACTION = 20_000
TARGETS = {
    "values_4_ratio": 1.0,
    "values_100": 4_000_000,
    "producer_median_us": 1.0,
    "producer_mean_us": 2.0,
    "producer_paced_median_us": 1.5,
    "frame_1m_ms": 30,
    "frame_5m_ms": 150,
    "chart_1m_ms": 20,
    "chart_10m_ms": 50,
    "bytes_per_value": 10,
    "rss_mib": 120,
}


def summary(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def rows_for(scalars: int, calls: int) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The workload's values as one tuple per call (made before any timing)."""
    names, columns = workload.columns_for(scalars, 0, calls)
    return names, list(zip(*[column.tolist() for column in columns], strict=True))


def monitor_for(directory: Path, name: str) -> WebMonitor:
    """A monitor as a user starts one: default graph, web server on (an ephemeral loopback port)."""
    config = MonitorConfig(db_path=str(directory / f"{name}.db"), data_dir=str(directory / name), web_port=0)
    return WebMonitor(config)


def stored_bytes(path: Path) -> int:
    """Bytes of a store's pages in use, after a checkpoint."""
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)
    finally:
        connection.close()


def remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


# -- 1. producer cost ---------------------------------------------------------------------------


def time_calls(
    call: Callable[[dict[str, Any]], None],
    make: Callable[[int], dict[str, Any]],
    calls: int,
    *,
    pace_hz: float | None = None,
) -> list[int]:
    """Nanoseconds of each ``call(values)``, ``values = make(i)`` made before the clock starts (a training
    loop has its values when it calls). With ``pace_hz`` the loop sleeps until each call's tick, as a loop
    waiting for its accelerator gives up the GIL meanwhile (a spin wait would hold it and starve the
    pipeline thread, which a real loop does not)."""
    clock = time.perf_counter_ns
    samples: list[int] = []
    period = None if pace_hz is None else int(1e9 / pace_hz)
    next_at = clock()
    gc.collect()
    for i in range(calls):
        values = make(i)
        if period is not None:
            next_at += period
            wait = next_at - clock()
            if wait > 0:
                time.sleep(wait / 1e9)
        started = clock()
        call(values)
        samples.append(clock() - started)
    return samples


def stats_us(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": ordered[len(ordered) // 2] / 1000,
        "mean_us": sum(ordered) / len(ordered) / 1000,
        "p99_us": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000,
    }


def bench_producer(directory: Path, calls: int, paced_calls: int, repeat: int) -> dict[str, Any]:
    """update_metrics beside copying the dict and an inline raw sqlite3 insert of the call, interleaved."""
    names, rows = rows_for(4, calls)
    raw = sqlite3.connect(directory / "inline.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("CREATE TABLE rows (step INTEGER, ts REAL, vals TEXT)")

    def make(i: int) -> dict[str, Any]:
        return dict(zip(names, rows[i % calls], strict=True))

    def copy_only(values: dict[str, Any]) -> None:
        _ = values.copy()  # the least a producer that keeps the caller's values must do

    def inline_sqlite(values: dict[str, Any]) -> None:
        raw.execute("INSERT INTO rows VALUES (?, ?, ?)", (0, time.time(), orjson.dumps(list(values.values()))))

    keys = ("runwatch", "copy", "runwatch_paced", "copy_paced", "sqlite_paced")
    out: dict[str, list[dict[str, float]]] = {key: [] for key in keys}
    for rep in range(repeat):
        with monitor_for(directory, f"producer-{rep}") as monitor:
            monitor.start_training({"bench": "producer"})
            update = monitor.update_metrics
            out["copy"].append(stats_us(time_calls(copy_only, make, calls)))
            out["runwatch"].append(stats_us(time_calls(update, make, calls)))
            assert monitor.flush(timeout=600), "flush timed out"
            out["copy_paced"].append(stats_us(time_calls(copy_only, make, paced_calls, pace_hz=1000)))
            out["runwatch_paced"].append(stats_us(time_calls(update, make, paced_calls, pace_hz=1000)))
            raw.execute("BEGIN")
            out["sqlite_paced"].append(stats_us(time_calls(inline_sqlite, make, paced_calls, pace_hz=1000)))
            raw.execute("COMMIT")
            assert monitor.flush(timeout=600)
    raw.close()
    return {
        key: {stat: summary([sample[stat] for sample in samples]) for stat in samples[0]}
        for key, samples in out.items()
    }


# -- 2. committed throughput and bytes per value ------------------------------------------------


def runwatch_write(directory: Path, name: str, names: list[str], rows: list[tuple[Any, ...]]) -> dict[str, float]:
    path = directory / f"{name}.db"
    remove(path)
    with monitor_for(directory, name) as monitor:
        monitor.start_training({"bench": name})
        update = monitor.update_metrics
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        for row in rows:
            update(dict(zip(names, row, strict=True)))
        produced = time.perf_counter() - started
        assert monitor.flush(timeout=600), "flush timed out"
        elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
        commits = monitor.statistics()["components"]["store"]["commits"]
    return {"seconds": elapsed, "cpu_s": cpu_s, "producer_s": produced, "commits": commits, "bytes": stored_bytes(path)}


def raw_write(path: Path, names: list[str], rows: list[tuple[Any, ...]], *, per_value: bool) -> dict[str, float]:
    """Raw sqlite3: runwatch's former layout (a row per call, a JSON array) or a row per value."""
    remove(path)
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    if per_value:
        connection.execute("CREATE TABLE metrics (run INTEGER, step INTEGER, ts REAL, name TEXT, value REAL)")
        sql = "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)"
    else:
        connection.execute(
            "CREATE TABLE metric_rows (run INTEGER NOT NULL, row INTEGER NOT NULL, step INTEGER, ts REAL NOT NULL,"
            " keyset INTEGER NOT NULL, vals TEXT NOT NULL, tags TEXT, PRIMARY KEY (run, row)) WITHOUT ROWID"
        )
        sql = "INSERT INTO metric_rows VALUES (?, ?, ?, ?, ?, ?, NULL)"
    empty = stored_bytes(path)
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    batch: list[tuple[Any, ...]] = []
    for step, row in enumerate(rows):
        values = dict(zip(names, row, strict=True))
        now = time.time()
        if per_value:
            batch.extend((1, step, now, name, value) for name, value in values.items())
        else:
            batch.append((1, step, step, now, 1, orjson.dumps(list(values.values())).decode()))
        if step % CALLS_PER_TRANSACTION == CALLS_PER_TRANSACTION - 1:
            connection.execute("BEGIN")
            connection.executemany(sql, batch)
            connection.execute("COMMIT")
            batch = []
    if batch:
        connection.execute("BEGIN")
        connection.executemany(sql, batch)
        connection.execute("COMMIT")
    elapsed, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    connection.close()
    return {"seconds": elapsed, "cpu_s": cpu_s, "bytes": stored_bytes(path) - empty}


def empty_store_bytes(directory: Path) -> int:
    with monitor_for(directory, "empty") as monitor:
        monitor.start_training({"bench": "empty"})
        assert monitor.flush(timeout=60)
    return stored_bytes(directory / "empty.db")


def bench_throughput(directory: Path, repeat: int, scale: int) -> dict[str, Any]:
    cases = {1: 1_000_000 // scale, 4: 500_000 // scale, 100: 30_000 // scale}
    empty = empty_store_bytes(directory)
    results: dict[str, Any] = {}
    for scalars, calls in cases.items():
        names, rows = rows_for(scalars, calls)
        values = calls * scalars
        samples: dict[str, list[dict[str, float]]] = {"runwatch": [], "raw_per_call_json": [], "raw_per_value": []}
        for rep in range(repeat):  # interleaved: each repetition runs all three, in turn
            samples["runwatch"].append(runwatch_write(directory, f"tp-{scalars}-{rep}", names, rows))
            samples["raw_per_call_json"].append(raw_write(directory / "raw-call.db", names, rows, per_value=False))
            samples["raw_per_value"].append(raw_write(directory / "raw-value.db", names, rows, per_value=True))
        rates = {key: [values / s["seconds"] for s in value] for key, value in samples.items()}
        ratios = [rate / base for rate, base in zip(rates["runwatch"], rates["raw_per_call_json"], strict=True)]
        del rows
        results[str(scalars)] = {
            "calls": calls,
            "values": values,
            "values_per_s": {key: summary(value) for key, value in rates.items()},
            "cpu_us_per_value": {
                key: summary([s["cpu_s"] / values * 1e6 for s in value]) for key, value in samples.items()
            },
            "ratio_to_raw_per_call_json": summary(ratios),
            "ratio_to_raw_per_value": summary(
                [r / b for r, b in zip(rates["runwatch"], rates["raw_per_value"], strict=True)]
            ),
            "bytes_per_value": {
                "runwatch": (samples["runwatch"][-1]["bytes"] - empty) / values,
                "raw_per_call_json": samples["raw_per_call_json"][-1]["bytes"] / values,
                "raw_per_value": samples["raw_per_value"][-1]["bytes"] / values,
            },
            "commits": samples["runwatch"][-1]["commits"],
        }
        for rep in range(repeat):
            remove(directory / f"tp-{scalars}-{rep}.db")
    return results


# -- 3 and 4. reads -----------------------------------------------------------------------------


def build_read_store(directory: Path, scale: int) -> dict[str, int]:
    """Runs of 1M, 5M and 10M calls (4 scalars) through the store layer's writer, and the 1M run in the
    former row layout (raw sqlite3) with numpy files of its loss columns."""
    sizes = {"r1m": 1_000_000 // scale, "r5m": 5_000_000 // scale, "r10m": 10_000_000 // scale}
    path = directory / "reads.db"

    async def write() -> None:
        writer = SQLiteStore(path).open_writer(owner="bench:1:1.0")
        await writer.open()
        try:
            for run_id, calls in sizes.items():
                await writer.write([RunLifecycle(run_id, TS, RunTransition.STARTED)])
                for batch in workload.batches(run_id, 4, calls, 50_000):
                    await writer.write(batch)
                await writer.write([RunLifecycle(run_id, TS + calls, RunTransition.COMPLETED)])
        finally:
            await writer.aclose()

    anyio.run(write)
    rows = workload.new_store(directory / "rows.db", ["r1m"], chunks=False)
    writer = workload.BaselineWriter(rows)
    for batch in workload.batches("r1m", 4, sizes["r1m"], 50_000):
        writer.write(batch)
    rows.close()
    frame = DatabaseManager(path).get_run_metrics("r1m", ["loss"], align="call")
    np.save(directory / "loss.npy", frame["loss"].to_numpy())
    np.save(directory / "step.npy", frame["step"].to_numpy(dtype=np.int64))
    np.save(directory / "time.npy", frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64))
    return sizes


def raw_row_read(directory: Path) -> np.ndarray:
    """The former layout read raw: fetch every call's row, parse the JSON arrays, take the loss column."""
    return workload.raw_row_read(directory / "rows.db", "r1m")


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - started, time.process_time() - cpu


def bench_frames(directory: Path, repeat: int) -> dict[str, Any]:
    path = directory / "reads.db"

    def frame(run_id: str, align: str) -> None:
        got = DatabaseManager(path).get_run_metrics(run_id, ["loss"], align=align)
        assert len(got) > 0

    frame("r1m", "call")  # pandas' first use of a time zone costs ~0.3 s once per process: not a read's cost
    keys = ("frame_1m", "frame_1m_call", "frame_5m", "frame_5m_call", "numpy_1m", "raw_rows_1m")
    samples: dict[str, list[tuple[float, float]]] = {key: [] for key in keys}
    for rep in range(max(repeat, 7)):
        gc.collect()
        samples["frame_1m"].append(timed(lambda: frame("r1m", "step")))
        samples["frame_1m_call"].append(timed(lambda: frame("r1m", "call")))
        samples["numpy_1m"].append(timed(lambda: [np.load(directory / f"{n}.npy") for n in ("loss", "step", "time")]))
        samples["frame_5m"].append(timed(lambda: frame("r5m", "step")))
        samples["frame_5m_call"].append(timed(lambda: frame("r5m", "call")))
        if rep < 3:
            samples["raw_rows_1m"].append(timed(lambda: raw_row_read(directory)))
    return {
        key: {"wall_s": summary([w for w, _ in value]), "cpu_s": summary([c for _, c in value])}
        for key, value in samples.items()
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return bytes(response.read())


CHART_ROUTES = {
    "compare": "/api/compare?runs={run}&metrics=loss&max_points=2000",
    "metrics": "/api/runs/{run}/metrics?names=loss&max_points=2000",
}


def cold_chart(directory: Path, run_id: str, route: str) -> dict[str, Any]:
    """Start `runwatch serve` on the store, wait for it, then time the first chart request."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "runwatch.cli",
        "serve",
        "--db",
        str(directory / "reads.db"),
        "--port",
        str(port),
        "--data-dir",
        str(directory / "serve-data"),
    ]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("runwatch serve did not start") from None
                time.sleep(0.05)  # polling a starting server: nothing to wait on but its port
        started = time.perf_counter()
        body = get(f"http://127.0.0.1:{port}" + CHART_ROUTES[route].format(run=run_id))
        elapsed = time.perf_counter() - started
        found = orjson.loads(body)["series"]
        series = found[0] if route == "compare" else found["loss"]
        return {"seconds": elapsed, "points": len(series["v"]), "total_points": series["total_points"]}
    finally:
        server.terminate()
        server.wait(30)


def bench_charts(directory: Path, repeat: int) -> dict[str, Any]:
    samples: dict[str, list[dict[str, Any]]] = {
        f"{route}_{size}": [] for route in CHART_ROUTES for size in ("chart_1m", "chart_10m")
    }
    baseline: list[tuple[float, float]] = []
    from runwatch.web.series import downsample_min_max

    for rep in range(max(repeat, 5)):
        for route in CHART_ROUTES:
            samples[f"{route}_chart_1m"].append(cold_chart(directory, "r1m", route))
            samples[f"{route}_chart_10m"].append(cold_chart(directory, "r10m", route))
        if rep < 3:
            baseline.append(timed(lambda: downsample_min_max(raw_row_read(directory), 2000)))
    out: dict[str, Any] = {
        key: {
            "seconds": summary([s["seconds"] for s in value]),
            "points": value[0]["points"],
            "total_points": value[0]["total_points"],
        }
        for key, value in samples.items()
    }
    out["raw_rows_downsampled_1m"] = {"seconds": summary([w for w, _ in baseline])}
    return out


# -- 5. peak RSS ------------------------------------------------------------------------------------

RSS_SCRIPT = textwrap.dedent(
    """
    import json, math, sys, tempfile
    sys.path.insert(0, sys.argv[2])

    def peak_mib():
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024

    def call(i):
        # Values made as a loop makes them, one call at a time (nothing prepared in memory).
        return {"loss": 2.5 * math.exp(-i / 2e5) + (i % 97) * 1e-4, "accuracy": (i % 256) / 256.0,
                "lr": 3e-4 * min(1.0, i / 10_000), "samples": i * 256}

    calls = int(sys.argv[3])
    out = {"started_mib": peak_mib()}
    if sys.argv[1] == "runwatch":
        import bench_core as bench
        from pathlib import Path
        with tempfile.TemporaryDirectory() as tmp:
            with bench.monitor_for(Path(tmp), "rss") as monitor:
                monitor.start_training({"bench": "rss"})
                assert monitor.flush(timeout=60)
                out["idle_monitor_mib"] = peak_mib()
                update = monitor.update_metrics
                for i in range(calls):
                    update(call(i))
                assert monitor.flush(timeout=600)
    else:
        for i in range(calls):
            _ = call(i)
    out["peak_mib"] = peak_mib()
    print(json.dumps(out))
    """
)


def bench_rss(scale: int) -> dict[str, Any]:
    calls = str(500_000 // scale)
    here = str(Path(__file__).parent)
    out = {}
    for kind in ("runwatch", "baseline"):
        result = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, kind, here, calls],
            check=True,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out[kind] = json.loads(result.stdout)
    return out


# -- report ---------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(measure, this run, baseline in the same run, target and whether it is met) for the README."""
    p, t, f, c, r = (results[k] for k in ("producer", "throughput", "frames", "charts", "rss"))

    def med(entry: dict[str, Any]) -> float:
        return float(entry["median"])

    def rng(entry: dict[str, Any], fmt: str) -> str:
        return f"[{format(entry['min'], fmt)}–{format(entry['max'], fmt)}]"

    rows = []
    four = t["4"]
    ratio = four["ratio_to_raw_per_call_json"]
    rows.append(
        (
            "committed values/s, 4 scalars/call",
            f"{med(four['values_per_s']['runwatch']) / 1e6:.2f}M {rng(four['values_per_s']['runwatch'], '.3g')}"
            f" = {med(ratio):.2f}× raw per-call JSON rows {rng(ratio, '.2f')}",
            f"raw sqlite3, a row per call (JSON array): {med(four['values_per_s']['raw_per_call_json']) / 1e6:.2f}M;"
            f" a row per value: {med(four['values_per_s']['raw_per_value']) / 1e6:.2f}M",
            f"≥ 1.0× (moonshot 2×): {verdict(med(ratio) >= TARGETS['values_4_ratio'])}",
        )
    )
    one = t["1"]
    rows.append(
        (
            "committed values/s, 1 scalar/call",
            f"{med(one['values_per_s']['runwatch']) / 1e6:.2f}M = {med(one['ratio_to_raw_per_call_json']):.2f}× raw",
            f"raw per-call JSON rows {med(one['values_per_s']['raw_per_call_json']) / 1e6:.2f}M;"
            f" per value {med(one['values_per_s']['raw_per_value']) / 1e6:.2f}M",
            "(≥ 1.0× raw): " + verdict(med(one["ratio_to_raw_per_call_json"]) >= 1.0),
        )
    )
    hundred = t["100"]
    rows.append(
        (
            "committed values/s, 100 scalars/call",
            f"{med(hundred['values_per_s']['runwatch']) / 1e6:.2f}M {rng(hundred['values_per_s']['runwatch'], '.3g')}",
            f"raw per-call JSON rows {med(hundred['values_per_s']['raw_per_call_json']) / 1e6:.2f}M;"
            f" per value {med(hundred['values_per_s']['raw_per_value']) / 1e6:.2f}M",
            f"≥ 4M: {verdict(med(hundred['values_per_s']['runwatch']) >= TARGETS['values_100'])}",
        )
    )
    full, copy = p["runwatch"], p["copy"]
    rows.append(
        (
            "producer median / mean, full speed (4 scalars)",
            f"{med(full['median_us']):.2f} / {med(full['mean_us']):.2f} µs (p99 {med(full['p99_us']):.1f})",
            f"copying the dict: {med(copy['median_us']):.2f} / {med(copy['mean_us']):.2f} µs",
            f"≤ 1.0 / ≤ 2.0 µs: median {verdict(med(full['median_us']) <= TARGETS['producer_median_us'])},"
            f" mean {verdict(med(full['mean_us']) <= TARGETS['producer_mean_us'])}",
        )
    )
    paced = p["runwatch_paced"]
    rows.append(
        (
            "producer median at 1,000 calls/s",
            f"{med(paced['median_us']):.2f} µs (mean {med(paced['mean_us']):.2f})",
            f"copying the dict: {med(p['copy_paced']['median_us']):.2f} µs; inline raw sqlite3 insert:"
            f" {med(p['sqlite_paced']['median_us']):.2f} µs",
            f"≤ 1.5 µs: {verdict(med(paced['median_us']) <= TARGETS['producer_paced_median_us'])}",
        )
    )
    reads = (("1M", "frame_1m", "numpy_1m", "frame_1m_ms"), ("5M", "frame_5m", None, "frame_5m_ms"))
    for label, key, base, target in reads:
        wall = f[key]["wall_s"]
        extra = f" (align=call {med(f[key + '_call']['wall_s']) * 1e3:.0f} ms)"
        baseline = (
            f"numpy.load of the columns {med(f['numpy_1m']['wall_s']) * 1e3:.1f} ms; raw read of the row layout"
            f" {med(f['raw_rows_1m']['wall_s']) * 1e3:.0f} ms"
            if base
            else "—"
        )
        rows.append(
            (
                f"`get_run_metrics`, one metric of {label} calls",
                f"{med(wall) * 1e3:.0f} ms {rng({k: v * 1e3 for k, v in wall.items()}, '.0f')}{extra}",
                baseline,
                f"≤ {TARGETS[target]} ms: {verdict(med(wall) * 1e3 <= TARGETS[target])}",
            )
        )
    for label, key, target in (("1M", "chart_1m", "chart_1m_ms"), ("10M", "chart_10m", "chart_10m_ms")):
        dashboard, points = c["compare_" + key], c["metrics_" + key]
        worst = max(med(dashboard["seconds"]), med(points["seconds"]))
        rows.append(
            (
                f"2,000-point chart, cold server, {label} calls",
                f"dashboard (`/api/compare`) {med(dashboard['seconds']) * 1e3:.1f} ms"
                f" {rng({k: v * 1e3 for k, v in dashboard['seconds'].items()}, '.1f')}"
                f" ({dashboard['points']} buckets of {dashboard['total_points']:,} points);"
                f" `/api/runs/{{id}}/metrics` {med(points['seconds']) * 1e3:.1f} ms"
                f" {rng({k: v * 1e3 for k, v in points['seconds'].items()}, '.1f')} ({points['points']} points)",
                f"row layout read + numpy downsampling: {med(c['raw_rows_downsampled_1m']['seconds']) * 1e3:.0f} ms"
                if label == "1M"
                else "—",
                f"≤ {TARGETS[target]} ms: {verdict(worst * 1e3 <= TARGETS[target])}",
            )
        )
    per_value = [t[k]["bytes_per_value"]["runwatch"] for k in ("1", "4", "100")]
    raw = [t[k]["bytes_per_value"]["raw_per_call_json"] for k in ("1", "4", "100")]
    rows.append(
        (
            "bytes per value on disk, 1 / 4 / 100 scalars",
            " / ".join(f"{v:.2f}" for v in per_value),
            "raw per-call JSON rows: " + " / ".join(f"{v:.1f}" for v in raw),
            f"≤ 10 for all three: {verdict(max(per_value) <= TARGETS['bytes_per_value'])}",
        )
    )
    rows.append(
        (
            "peak RSS, 2M values at full speed, web on",
            f"{r['runwatch']['peak_mib']:.0f} MiB"
            f" (an idle started monitor: {r['runwatch']['idle_monitor_mib']:.0f} MiB)",
            f"a Python process making the same calls without runwatch: {r['baseline']['peak_mib']:.0f} MiB",
            f"≤ 120 MiB: {verdict(r['runwatch']['peak_mib'] <= TARGETS['rss_mib'])}",
        )
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of each measure")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        directory = Path(tmp)
        results["producer"] = bench_producer(directory, 200_000 // scale, 3_000 // scale, args.repeat)
        results["throughput"] = bench_throughput(directory, args.repeat, scale)
        results["read_runs"] = build_read_store(directory, scale)
        results["frames"] = bench_frames(directory, args.repeat)
        results["charts"] = bench_charts(directory, args.repeat)
        results["rss"] = bench_rss(scale)
    results["load_average_at_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))  # before the table: keep the figures
    results["table"] = table(results)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))
    print(
        f"runwatch core benchmark — {results['date']}, {results['machine']}, SQLite {results['sqlite']},"
        f" load average {results['load_average_at_start']:.1f} → {results['load_average_at_end']:.1f}"
    )
    print("| measure | this run | baseline, same run | target: met? |")
    print("|---|---|---|---|")
    for row in results["table"]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
