"""Restart to ready after kill -9 on a store of 1M events, in one run.

    python benchmarks/bench_recovery.py [--quick]

A child process logs 1M metric events (4 values each) through a WebMonitor,
then keeps logging and is killed with SIGKILL mid-ingest (the WAL holds
uncheckpointed pages, a transaction may be half-written). The parent then
times a new process on the same store from its start until its WebMonitor's
``/api/health`` answers 200 (interpreter and imports, crashed runs marked,
pipeline and web server up). Three kill → restart rounds; the target is ≤ 2 s.

Everything stays on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = """
import sys
from runwatch import MonitorConfig, WebMonitor

monitor = WebMonitor(MonitorConfig(db_path=sys.argv[1], data_dir=sys.argv[2], web_port=0))
monitor.start_training(run_id="recovery")
total = int(sys.argv[3])
for step in range(total):
    monitor.update_metrics({"loss": 1.0 / (step + 1), "accuracy": 0.5, "reward": float(step), "lr": 3e-4})
    if step % 100_000 == 99_999:
        monitor.flush(timeout=120)
print("logged", flush=True)
step = total
while True:  # keep ingesting until killed
    monitor.update_metrics({"loss": 1.0, "accuracy": 0.5, "reward": float(step), "lr": 3e-4})
    step += 1
    if step % 20_000 == 0:
        print("more", step, flush=True)
"""


def kill_mid_ingest(db: Path, data: Path, events: int) -> None:
    """Run the child until it has logged ``events`` and 40,000 more, then SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(data), str(events)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        for expected in ("logged", "more", "more"):
            line = child.stdout.readline()
            if not line.startswith(expected):
                raise RuntimeError(f"the child stopped early: {line!r}")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


READY_CHILD = """
import sys, time
import httpx
from runwatch import MonitorConfig, WebMonitor

with WebMonitor(MonitorConfig(db_path=sys.argv[1], data_dir=sys.argv[2], web_port=0)) as monitor:
    with httpx.Client(base_url=monitor.web_url, timeout=30) as client:
        for _ in range(3_000):  # bounded: at most ~30 s
            if client.get("/api/health").status_code == 200:
                break
            time.sleep(0.01)
    print("ready", monitor.get_run_summary("recovery")["status"], flush=True)
"""


def time_to_ready(db: Path, data: Path) -> float:
    """Seconds from starting a new process until its WebMonitor's ``/api/health`` answers 200.

    Includes the interpreter's start and imports: that is what a restart costs.
    """
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", READY_CHILD, str(db), str(data)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        ready = time.perf_counter() - started
        if line.split() != ["ready", "crashed"]:
            raise RuntimeError(f"the restarted monitor did not find the run crashed: {line!r}")
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events instead of 1M (a smoke run)")
    args = parser.parse_args()
    events = 100_000 if args.quick else 1_000_000
    rounds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-recovery-") as tmp:
        db, data = Path(tmp) / "recovery.db", Path(tmp) / "data"
        kill_mid_ingest(db, data, events)
        size_mb = sum(path.stat().st_size for path in Path(tmp).glob("recovery.db*")) / 1e6
        for round_index in range(3):
            if round_index:
                kill_mid_ingest(db, data, 0)
            rounds.append(time_to_ready(db, data))
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "events": events,
        "store_mb_at_first_kill": round(size_mb, 1),
        "restart_to_ready_s": rounds,
        "median_s": statistics.median(rounds),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recovery.json").write_text(json.dumps(results, indent=2))
    print(f"runwatch recovery benchmark — {results['date']}, {results['machine']}")
    print(
        f"kill -9 mid-ingest on a {events:,}-event store ({size_mb:.0f} MB with WAL): restart to ready "
        + ", ".join(f"{seconds:.2f} s" for seconds in rounds)
        + f" (median {results['median_s']:.2f} s; target ≤ 2 s)"
    )


if __name__ == "__main__":
    main()
