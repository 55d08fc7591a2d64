"""The workspace's figures: remote mode beside embedded mode, and live delivery from other writers, in one run.

    python benchmarks/bench_workspace.py [--quick]

1. Producer cost of ``update_metrics`` (4 scalars; median, p99): a ``WebMonitor`` writing its
   store (embedded) beside one in remote mode (``MonitorConfig(server_url=...)``: in-process
   source → ``remote`` sink → spool → ``POST /api/ingest`` of a ``runwatch serve``).
2. Committed throughput, values/s from the first call until everything is committed: embedded
   (until ``flush()`` returns) beside remote (until the server acknowledged the last batch), from
   one process and from 4 processes at once.
3. Emit → ``/ws`` subscriber latency (p50, p99) at 10,000 and 100,000 values/s (calls of 10
   values): a run written by another local process (embedded; the server's store tail follows the
   file) and a remote run (through the server's ingest). The subscriber uses the ``columns``
   format; latency is each call's ``sent_at`` value against the receive time, on one clock.
0. The idle cost of following the store: CPU time of an idle ``runwatch serve`` over 10 s, its
   default graph (with the store tail) beside the same graph without it.
4. What a ``kill -9`` of the training process loses, at 10,000 calls/s: the calls that returned
   before the kill (the script writes its step to a shared file after each) less the steps
   stored once everything left behind is in (embedded: the store; remote: the server, after the
   next process of the run sent what the killed one had spooled).

The server is a real ``runwatch serve`` subprocess (its default graph, which follows its
store); producers are subprocesses of this script (``--role``). Results print as a table and
go to ``benchmarks/results/workspace.json``.
Every loop is bounded in count and time; nothing leaves the machine (loopback only).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
TIMEOUT = 300.0
VALUES_PER_CALL_LATENCY = 10


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def monitor(directory: Path, name: str, url: str | None = None) -> Any:
    """A training script's monitor: embedded (its own store), or in remote mode (``server_url``)."""
    from runwatch import MonitorConfig, WebMonitor

    config = MonitorConfig(
        db_path=str(directory / f"{name}.db"), data_dir=str(directory / name), web_port=0, server_url=url
    )
    return WebMonitor(config)


def delivered(mon: Any) -> bool:
    """Wait until a remote monitor's server has everything (embedded: committed)."""
    return bool(mon.wait_delivered(TIMEOUT))


# -- producer roles (subprocesses) -------------------------------------------------------------


def role_flood(options: dict[str, Any]) -> None:
    """Log ``calls`` calls of 4 scalars as fast as possible; print start and committed times."""
    directory = Path(options["directory"])
    with monitor(directory, options["name"], options.get("url")) as mon:
        mon.start_training()  # a new run (a remote monitor keeps no store to look an id up in)
        update = mon.update_metrics
        print("ready", flush=True)
        sys.stdin.readline()
        started = time.time()
        for i in range(options["calls"]):
            update({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
        mon.flush(TIMEOUT)
        ok = delivered(mon)
        print(json.dumps({"started": started, "committed": time.time(), "ok": ok}), flush=True)


def role_paced(options: dict[str, Any]) -> None:
    """Log calls of 10 values (one is ``sent_at``) at ``calls_per_second`` for ``seconds``.

    With ``db`` it writes that store directly (another local process of the server's store);
    with ``url`` it sends to the server (remote mode).
    """
    from runwatch import MonitorConfig, WebMonitor

    directory = Path(options["directory"])
    if options.get("db"):
        config = MonitorConfig(db_path=options["db"], data_dir=str(directory / options["name"]), web_port=0)
        mon = WebMonitor(config)
    else:
        mon = monitor(directory, options["name"], options["url"])
    with mon:
        run_id = mon.start_training()
        update = mon.update_metrics
        gc.freeze()  # the recipe in docs/speed.md for a training script
        rate = options["calls_per_second"]
        total = int(rate * options["seconds"])
        extra = {f"v{k}": float(k) for k in range(VALUES_PER_CALL_LATENCY - 1)}
        started = time.monotonic()
        for i in range(total):
            update({"sent_at": time.time(), **extra}, step=i)
            ahead = started + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        mon.flush(TIMEOUT)
        delivered(mon)
        print(json.dumps({"calls": total, "run_id": run_id}), flush=True)


def role_victim(options: dict[str, Any]) -> None:
    """Log one call of 4 scalars per step at ``calls_per_second`` until killed; after each call, write the
    step to the shared file ``step_file`` (8 bytes), so the parent knows what returned before the kill."""
    import mmap
    import struct

    directory = Path(options["directory"])
    with monitor(directory, options["name"], options.get("url")) as mon, open(options["step_file"], "r+b") as file:
        shared = mmap.mmap(file.fileno(), 8)
        mon.start_training(run_id=options["name"])
        update, rate = mon.update_metrics, options["calls_per_second"]
        print("ready", flush=True)
        started = time.monotonic()
        for step in range(int(rate * 600)):  # bounded: the parent kills it long before
            update({"loss": 0.5, "accuracy": 0.9, "reward": float(step), "lr": 3e-4}, step=step)
            struct.pack_into("<q", shared, 0, step)
            ahead = started + (step + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def role_replay(options: dict[str, Any]) -> None:
    """The next process of a killed remote run: its monitor sends what the killed one spooled, first."""
    directory = Path(options["directory"])
    with monitor(directory, options["name"], options["url"]) as mon:
        print(json.dumps({"delivered": delivered(mon)}), flush=True)


# -- the server and the subscriber -------------------------------------------------------------


class Serve:
    """A ``runwatch serve`` subprocess of ``served.db`` on a free port (``extra``: more arguments)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.db = directory / "served.db"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(self.db),
             "--port", str(port), "--data-dir", str(directory / "serve-data"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line or re.search(r"runwatch: serving .* at http", line):
                break
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(TIMEOUT)


class Subscriber:
    """A /ws subscriber (columns format) timing each metric call of the runs it is told about."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self.latencies: dict[str, list[float]] = {}
        self._connect = connect
        self._address = url.replace("http://", "ws://") + "/ws?kinds=metric&metrics=sent_at&format=columns"
        self._ready = threading.Event()
        self._socket: Any = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _read(self) -> None:
        import orjson

        with self._connect(self._address, open_timeout=30, max_size=None) as ws:
            self._socket = ws
            self._ready.set()
            try:
                for message in ws:
                    now = time.time()
                    data = orjson.loads(message)
                    for block in data.get("metrics", ()):
                        if "sent_at" not in block["names"]:
                            continue
                        sent = block["values"][block["names"].index("sent_at")]
                        self.latencies.setdefault(block["run_id"], []).extend(
                            now - value for value in sent if value is not None
                        )
            except Exception:  # closed
                pass

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._thread.join(30)


def spawn(role: str, options: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, json.dumps(options)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


# -- measurements ---------------------------------------------------------------------------------


def bench_idle(directory: Path, seconds: float) -> dict[str, float]:
    """CPU % of one core used by an idle ``runwatch serve``, with and without the store tail."""
    import psutil

    from runwatch.pipeline.config import default_pipeline_config

    out: dict[str, float] = {}
    for label, tail in (("with_tail", True), ("without_tail", False)):
        place = directory / f"idle-{label}"
        place.mkdir()
        graph = default_pipeline_config(alerts=True, snapshots=True, system=True, tail=tail)
        config = place / "serve.json"
        config.write_text(json.dumps({"pipeline": graph}))
        server = Serve(place, "--config", str(config))
        try:
            time.sleep(1.0)  # past start-up
            process = psutil.Process(server.process.pid)
            before = process.cpu_times()
            time.sleep(seconds)  # the idle span measured
            after = process.cpu_times()
        finally:
            server.stop()
        used = (after.user - before.user) + (after.system - before.system)
        out[f"{label}_cpu_percent"] = 100 * used / seconds
    return out


def bench_producer_cost(directory: Path, url: str, calls: int) -> dict[str, float]:
    clock = time.perf_counter_ns
    out: dict[str, float] = {}
    for mode, target in (("embedded", None), ("remote", url)):
        with monitor(directory, f"cost-{mode}", target) as mon:
            mon.start_training()
            update = mon.update_metrics
            samples: list[float] = []
            gc.collect()
            for i in range(calls):
                started = clock()
                update({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
                samples.append((clock() - started) / 1000.0)
            mon.flush(TIMEOUT)
            delivered(mon)
        out[f"{mode}_median_us"] = percentile(samples, 0.5)
        out[f"{mode}_p99_us"] = percentile(samples, 0.99)
    return out


def run_floods(directory: Path, url: str | None, processes: int, calls: int, label: str) -> dict[str, Any]:
    children = [
        spawn("flood", {"directory": str(directory), "name": f"{label}-{n}", "url": url, "calls": calls})
        for n in range(processes)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for child in children:
        assert child.stdout is not None
        reports.append(json.loads(child.stdout.readline()))
        child.wait(TIMEOUT)
    seconds = max(r["committed"] for r in reports) - min(r["started"] for r in reports)
    values = processes * calls * 4
    return {"values_per_second": values / seconds, "seconds": seconds, "all_committed": all(r["ok"] for r in reports)}


def bench_throughput(directory: Path, url: str, calls: int) -> dict[str, Any]:
    return {
        "embedded_1": run_floods(directory, None, 1, calls, "flood-e1"),
        "remote_1": run_floods(directory, url, 1, calls, "flood-r1"),
        "embedded_4": run_floods(directory, None, 4, calls // 4, "flood-e4"),
        "remote_4": run_floods(directory, url, 4, calls // 4, "flood-r4"),
    }


def bench_latency(directory: Path, server: Serve, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for values_per_second in (10_000, 100_000):
        calls_per_second = values_per_second // VALUES_PER_CALL_LATENCY
        for mode in ("other_local_process", "remote"):
            name = f"lat-{mode}-{values_per_second}"
            subscriber = Subscriber(server.url)
            options: dict[str, Any] = {
                "directory": str(directory),
                "name": name,
                "calls_per_second": calls_per_second,
                "seconds": seconds,
            }
            if mode == "remote":
                options["url"] = server.url
            else:
                options["db"] = str(server.db)
            child = spawn("paced", options)
            assert child.stdout is not None
            report = json.loads(child.stdout.readline())
            child.wait(TIMEOUT)
            time.sleep(1.0)  # the last events' way to the subscriber (bounded; latencies are measured per event)
            subscriber.close()
            samples = subscriber.latencies.get(report["run_id"], [])
            out[f"{mode}_{values_per_second}"] = {
                "received_calls": len(samples),
                "sent_calls": int(calls_per_second * seconds),
                "p50_ms": 1000 * percentile(samples, 0.5),
                "p99_ms": 1000 * percentile(samples, 0.99),
                "max_ms": 1000 * max(samples, default=float("nan")),
            }
    return out


def bench_kill(directory: Path, server: Serve, rounds: int) -> dict[str, Any]:
    import struct

    out: dict[str, Any] = {}
    rate = 10_000
    for mode in ("embedded", "remote"):
        lost: list[int] = []
        for round_ in range(rounds):
            name = f"kill-{mode}-{round_}"
            step_file = directory / f"{name}.step"
            step_file.write_bytes(struct.pack("<q", -1))
            options: dict[str, Any] = {
                "directory": str(directory), "name": name, "step_file": str(step_file), "calls_per_second": rate,
                "url": server.url if mode == "remote" else None,
            }  # fmt: skip
            victim = spawn("victim", options)
            assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"
            time.sleep(1.0 + 0.37 * round_)  # log for a while; the kill lands at a different phase each round
            victim.send_signal(signal.SIGKILL)
            victim.wait(TIMEOUT)
            returned = struct.unpack("<q", step_file.read_bytes())[0] + 1
            if mode == "remote":
                replay = spawn("replay", options)
                assert replay.stdout is not None
                assert json.loads(replay.stdout.readline())["delivered"]
                replay.wait(TIMEOUT)
                db = server.db
            else:
                db = directory / f"{name}.db"
            lost.append(returned - stored_steps(db, name))
        out[mode] = {"calls_per_second": rate, "lost_calls": lost, "max_lost_ms": 1000 * max(lost) / rate}
    return out


def stored_steps(db: Path, run_id: str) -> int:
    """How many distinct steps of ``run_id`` the store at ``db`` holds."""
    import numpy as np

    from runwatch.store.sqlite import SQLiteStore

    steps = [
        series.points.step if series.points.step_valid is None else series.points.step[series.points.step_valid]
        for series in SQLiteStore(db).read_series(run_id, columns=("step",)).values()
    ]
    return len(np.unique(np.concatenate(steps))) if steps else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("options", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        roles = {"flood": role_flood, "paced": role_paced, "victim": role_victim, "replay": role_replay}
        roles[args.role](json.loads(args.options))
        return
    logging.getLogger("runwatch").setLevel(logging.ERROR)  # the monitors' closing hints are not figures
    calls = 20_000 if args.quick else 200_000
    flood_calls = 40_000 if args.quick else 400_000
    seconds = 3.0 if args.quick else 10.0
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-workspace-") as temporary:
        directory = Path(temporary)
        server = Serve(directory)
        try:
            results: dict[str, Any] = {
                "idle": bench_idle(directory, 3.0 if args.quick else 10.0),
                "producer_cost": bench_producer_cost(directory, server.url, calls),
                "throughput": bench_throughput(directory, server.url, flood_calls),
                "latency": bench_latency(directory, server, seconds),
                "kill": bench_kill(directory, server, 2 if args.quick else 5),
            }
        finally:
            server.stop()
    results["machine"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "workspace.json").write_text(json.dumps(results, indent=2))
    idle = results["idle"]
    print("idle runwatch serve, CPU % of one core")
    print(f"  with the store tail {idle['with_tail_cpu_percent']:.2f}  without {idle['without_tail_cpu_percent']:.2f}")
    cost = results["producer_cost"]
    print("producer cost, update_metrics with 4 scalars (µs)")
    print(f"  embedded  median {cost['embedded_median_us']:.2f}  p99 {cost['embedded_p99_us']:.2f}")
    print(f"  remote    median {cost['remote_median_us']:.2f}  p99 {cost['remote_p99_us']:.2f}")
    print("committed values/s (first call → committed; remote: acknowledged by the server)")
    for key, entry in results["throughput"].items():
        print(
            f"  {key:12s} {entry['values_per_second']:>12,.0f}  ({entry['seconds']:.2f} s, ok={entry['all_committed']})"
        )
    ratio = (
        results["throughput"]["remote_1"]["values_per_second"]
        / results["throughput"]["embedded_1"]["values_per_second"]
    )
    print(f"  remote / embedded, one process: {ratio:.2f}")
    print("emit → /ws latency (ms)")
    for key, entry in results["latency"].items():
        print(
            f"  {key:28s} p50 {entry['p50_ms']:7.1f}  p99 {entry['p99_ms']:7.1f}  max {entry['max_ms']:7.1f}"
            f"  ({entry['received_calls']}/{entry['sent_calls']} calls)"
        )
    print("kill -9 at 10,000 calls/s: calls that returned but were never stored")
    for mode, entry in results["kill"].items():
        print(f"  {mode:9s} {entry['lost_calls']}  (at most {entry['max_lost_ms']:.0f} ms of calls)")


if __name__ == "__main__":
    main()
