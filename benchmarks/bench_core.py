"""Core speed and memory figures of runwatch, each beside its baseline, in one run.

    python benchmarks/bench_core.py [--quick]

1. Producer cost of ``WebMonitor.update_metrics`` with 4 scalars (median, p99)
   beside a loop that only builds the same dict.
2. Committed throughput from one training-loop thread (values/s from the
   first call until ``flush()`` returns) beside raw ``sqlite3.executemany``
   of the same values, one row per value, in 10,000-row transactions.
3. ``get_run_metrics`` of a 1M-value run into a DataFrame.
4. RSS over a 10M-value run, sampled every 1M values.

Results print as a table and go to ``benchmarks/results/core.json``.
Every loop is bounded in count; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

import psutil

from runwatch import MonitorConfig, WebMonitor

RESULTS = Path(__file__).parent / "results"


def percentile(samples: list[int], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] / 1000.0


def monitor_for(directory: Path, name: str) -> WebMonitor:
    config = MonitorConfig(db_path=str(directory / f"{name}.db"), data_dir=str(directory / name), web_port=0)
    return WebMonitor(config)


def bench_producer_cost(directory: Path, calls: int) -> dict[str, float]:
    """update_metrics latency vs building the same dict, interleaved in one run."""
    clock = time.perf_counter_ns
    baseline: list[int] = []
    for i in range(calls):
        started = clock()
        _ = {"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4}
        baseline.append(clock() - started)
    with monitor_for(directory, "producer") as monitor:
        monitor.start_training({"bench": "producer"})
        update = monitor.update_metrics
        measured: list[int] = []
        gc.collect()
        for i in range(calls):
            started = clock()
            update({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
            measured.append(clock() - started)
        monitor.flush()
    return {
        "update_metrics_median_us": percentile(measured, 0.5),
        "update_metrics_p99_us": percentile(measured, 0.99),
        "dict_only_median_us": percentile(baseline, 0.5),
        "dict_only_p99_us": percentile(baseline, 0.99),
    }


def bench_throughput(directory: Path, calls: int) -> dict[str, float]:
    """Values/s committed end to end vs raw sqlite3 executemany."""
    with monitor_for(directory, "throughput") as monitor:
        run_id = monitor.start_training({"bench": "throughput"})
        update = monitor.update_metrics
        started = time.perf_counter()
        for i in range(calls):
            update({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
        produced = time.perf_counter() - started
        assert monitor.flush(timeout=600), "flush timed out"
        committed = time.perf_counter() - started
        stats = monitor.statistics()["components"]
    values = calls * 4
    raw = raw_sqlite_values_per_second(directory / "raw.db", calls)
    return {
        "values": values,
        "runwatch_values_per_s": values / committed,
        "producer_only_values_per_s": values / produced,
        "raw_sqlite_executemany_values_per_s": raw,
        "ratio_to_raw_sqlite": (values / committed) / raw,
        "transactions": stats["store"]["commits"],
        "run_id": run_id,  # type: ignore[dict-item]
    }


def raw_sqlite_values_per_second(path: Path, calls: int) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("CREATE TABLE metrics (run INTEGER, step INTEGER, ts REAL, name TEXT, value REAL)")
    names = ("loss", "accuracy", "reward", "lr")
    started = time.perf_counter()
    rows = []
    for i in range(calls):
        now = time.time()
        values = {"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4}
        rows.extend((1, i, now, name, values[name]) for name in names)
        if len(rows) >= 10_000:
            connection.execute("BEGIN")
            connection.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
            connection.execute("COMMIT")
            rows = []
    if rows:
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)", rows)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return calls * 4 / elapsed


def bench_dataframe(directory: Path) -> dict[str, float]:
    """get_run_metrics of a 1M-value run (250,000 calls x 4 metrics)."""
    with monitor_for(directory, "frame") as monitor:
        run_id = monitor.start_training({"bench": "frame"})
        for i in range(250_000):
            monitor.update_metrics({"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
        monitor.stop_training()
        monitor.flush()
        db = monitor.db
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            frame = db.get_run_metrics(run_id)
            timings.append(time.perf_counter() - started)
        assert frame.shape[0] == 250_000, frame.shape
    return {"get_run_metrics_1M_values_s": min(timings), "rows": float(frame.shape[0])}


def bench_memory(directory: Path, calls: int) -> dict[str, float]:
    """RSS sampled every 250,000 calls over a run of ``calls`` x 4 values."""
    process = psutil.Process()
    samples: list[float] = []
    with monitor_for(directory, "memory") as monitor:
        monitor.start_training({"bench": "memory"})
        update = monitor.update_metrics
        for i in range(calls):
            update({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
            if i % 250_000 == 249_999:
                samples.append(process.memory_info().rss / 2**20)
        monitor.flush(timeout=600)
    half = samples[len(samples) // 2 :]
    return {
        "values": calls * 4,
        "rss_first_mib": samples[0],
        "rss_last_mib": samples[-1],
        "rss_max_mib": max(samples),
        "rss_growth_second_half_mib": max(half) - min(half),
        "rss_samples_mib": [round(sample, 1) for sample in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        directory = Path(tmp)
        results["producer"] = bench_producer_cost(directory, 200_000 // scale)
        results["throughput"] = bench_throughput(directory, 500_000 // scale)
        results["dataframe"] = bench_dataframe(directory)
        results["memory"] = bench_memory(directory, 2_500_000 // scale)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "core.json").write_text(json.dumps(results, indent=2))
    p, t, d, m = results["producer"], results["throughput"], results["dataframe"], results["memory"]
    print(f"runwatch core benchmark — {results['date']}, {results['machine']}, SQLite {results['sqlite']}")
    print(
        f"update_metrics (4 scalars)   median {p['update_metrics_median_us']:.2f} µs"
        f"   p99 {p['update_metrics_p99_us']:.2f} µs"
    )
    print(f"  baseline: build the dict   median {p['dict_only_median_us']:.2f} µs   p99 {p['dict_only_p99_us']:.2f} µs")
    print(f"committed throughput         {t['runwatch_values_per_s']:,.0f} values/s ({t['values']:,} values)")
    print(
        f"  raw sqlite3 executemany    {t['raw_sqlite_executemany_values_per_s']:,.0f} values/s"
        f"   ratio {t['ratio_to_raw_sqlite']:.2f}"
    )
    print(f"get_run_metrics, 1M values   {d['get_run_metrics_1M_values_s'] * 1000:.0f} ms")
    print(
        f"RSS over {m['values']:,} values   first {m['rss_first_mib']:.0f} MiB  last {m['rss_last_mib']:.0f} MiB"
        f"  growth in 2nd half {m['rss_growth_second_half_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
