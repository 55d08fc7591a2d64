"""Data-lifecycle figures: backup and cleanup beside a live writer, and cleanup memory.

    python benchmarks/bench_lifecycle.py [--size-mb 200] [--cleanup-rows 2000000] [--window-seconds 5]

1. Backup while ingesting. A store of about ``--size-mb`` MB (bulk logging
   calls written as sealed columnar chunks) is opened by a WebMonitor whose training
   thread logs 4 scalars per call as fast as it can. Committed events/s are
   measured over a window without backup, over back-to-back backups (at
   least one, for at least the window), and over a window without backup
   again. Target: ingest during backup ≥ 0.70 of undisturbed. A 1 GB store
   works (``--size-mb 1000``) but takes minutes to build and back up.
2. Cleanup while ingesting: a cleanup pass over the same store's bulk runs
   (old, completed) is stepped for one window, with the pauses of
   ``cleanup_old_data``, while the thread logs; same ratio, and the records
   removed per second beside a saturated writer.
3. Cleanup memory: ``--cleanup-rows`` logging calls in old runs, removed by a
   child process whose peak RSS (``ru_maxrss``) is reported beside its RSS
   before the cleanup. Target: peak < 200 MB.

Results print as a table and go to ``benchmarks/results/lifecycle.json``.
Every loop is bounded; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from runwatch.store.lifecycle import MAX_PAUSE_SECONDS, CleanupPass

RESULTS = Path(__file__).parent / "results"
OLD_TS = 1_600_000_000.0  # 2020: older than any cutoff used here
NAMES = ["loss", "accuracy", "reward", "lr", "grad_norm", "entropy", "value_loss", "kl"]


def build_store(path: Path, *, target_mb: float | None = None, rows: int | None = None, runs: int = 20) -> int:
    """Bulk-write old completed runs of 8-metric logging calls (columnar chunks, sealed) until the file
    reaches ``target_mb`` or ``rows`` calls; returns the calls written."""
    import numpy as np

    from runwatch.store.chunk_store import SQLiteSeriesStore
    from runwatch.store.schema import prepare_database
    from runwatch.store.series import SeriesBuilder

    prepare_database(str(path))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO runs (run_id, status, start_time, end_time, updated_at) VALUES (?, 'completed', ?, ?, ?)",
        [(f"bulk-{i}", OLD_TS, OLD_TS + 3600, OLD_TS + 3600) for i in range(runs)],
    )
    conn.executemany(
        "INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts)"
        " VALUES (?, ?, 0, 0, 0, 0, 0, 0, ?)",
        [(run, name, OLD_TS) for run in range(1, runs + 1) for name in NAMES],
    )
    conn.executemany(
        "INSERT INTO events (run, ts, kind, type, level, data) VALUES (?, ?, 'log', 'episode_end', 'info', '{}')",
        [(run, OLD_TS + i) for run in range(1, runs + 1) for i in range(100)],
    )
    conn.execute("COMMIT")
    store = SQLiteSeriesStore(conn, SeriesBuilder(max_chunk_seconds=None))
    written = 0
    chunk = 200_000
    while True:
        count = chunk if rows is None else min(chunk, rows - written)
        if count <= 0:
            break
        per_run = -(-count // runs)
        for run in range(runs):
            index = written // runs + np.arange(per_run, dtype=np.int64)
            row = index * runs + run
            values = [
                row * 1e-6,
                np.full(per_run, 0.91),
                (row % 1000) + 0.5,
                np.full(per_run, 0.0003),
                np.full(per_run, 1.25),
                np.full(per_run, 0.693),
                np.full(per_run, 0.0125),
                np.full(per_run, 0.004),
            ]
            time_us = np.rint((OLD_TS + row * 1e-3) * 1e6).astype(np.int64)
            store.add_columns(f"bulk-{run}", NAMES, values, time_us=time_us, step=row)
        store.commit(seal_all=True)
        written += per_run * runs
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if target_mb is not None and path.stat().st_size >= target_mb * 1e6:
            break
    conn.close()
    return written


class Ingest:
    """A training-loop thread logging 4 scalars per call as fast as it can, with the store's commit count."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._log, name="bench-training-loop")

    def _log(self) -> None:
        update = self.monitor.update_metrics
        for i in range(10**10):  # bounded; stopped by the event long before
            if self._stop.is_set():
                return
            update({"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4})

    def committed(self) -> int:
        return int(self.monitor.statistics()["components"]["store"]["committed_events"])

    def __enter__(self) -> Ingest:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(60)


def rate_over(ingest: Ingest, work: Any, min_seconds: float) -> tuple[float, int, float]:
    """Committed events/s while ``work()`` is called back to back for at least ``min_seconds``.

    Returns the rate, how many times ``work`` ran and the elapsed seconds.
    """
    before, started, calls = ingest.committed(), time.perf_counter(), 0
    while True:
        work()
        calls += 1
        if time.perf_counter() - started >= min_seconds or calls >= 10_000:
            break
    elapsed = time.perf_counter() - started
    return (ingest.committed() - before) / elapsed, calls, elapsed


def cleanup_step(job: Any, conn: sqlite3.Connection) -> None:
    """One transaction of a cleanup pass and its pause, as ``cleanup_old_data`` runs them."""
    started = time.perf_counter()
    if job.step(conn):
        time.sleep(min(time.perf_counter() - started, MAX_PAUSE_SECONDS))
    else:
        time.sleep(0.01)  # done: nothing left to remove


def idle(seconds: float) -> Any:
    return lambda: time.sleep(seconds)


def bench_live(directory: Path, size_mb: float, window: float) -> dict[str, Any]:
    """Backup, then cleanup, of a ``size_mb`` store while a training thread logs."""
    from runwatch import MonitorConfig, WebMonitor
    from runwatch.store.manager import DatabaseManager

    db = directory / "live.db"
    started = time.perf_counter()
    bulk_rows = build_store(db, target_mb=size_mb)
    build_seconds = time.perf_counter() - started
    size = db.stat().st_size
    config = MonitorConfig(db_path=str(db), data_dir=str(directory / "data"), web_port=0)
    manager = DatabaseManager(db)
    backups = directory / "backups"
    backup_seconds: list[float] = []

    def one_backup() -> None:
        began = time.perf_counter()
        path = manager.create_backup(backups)
        backup_seconds.append(time.perf_counter() - began)
        path.unlink()

    with WebMonitor(config) as monitor:
        monitor.start_training({"bench": "lifecycle"})
        with Ingest(monitor) as ingest:
            idle(1.0)()  # warm up: the first commits are slower
            # Undisturbed and backup windows alternate, so a drift of the
            # undisturbed rate (WAL size, page cache) weighs on both sides.
            base: list[float] = []
            during: list[float] = []
            count = 0
            for _ in range(2):
                base.append(rate_over(ingest, idle(window / 20), window)[0])
                rate, calls, _ = rate_over(ingest, one_backup, window)
                during.append(rate)
                count += calls
            base.append(rate_over(ingest, idle(window / 20), window)[0])
            # The cleanup is stepped for one window (removing all the bulk rows
            # beside a saturated writer would take minutes: it yields to it).
            job = CleanupPass(OLD_TS + 86_400)
            with sqlite3.connect(db, timeout=5) as conn:
                during_cleanup, _, cleanup_seconds = rate_over(ingest, lambda: cleanup_step(job, conn), window)
            base.append(rate_over(ingest, idle(window / 20), window)[0])
        monitor.flush(120)
        store = monitor.statistics()["components"]["store"]
    baseline_backup = sum(base[:3]) / 3
    baseline_cleanup = (base[2] + base[3]) / 2
    during_backup = sum(during) / len(during)
    return {
        "store_mb": size / 1e6,
        "bulk_metric_rows": bulk_rows,
        "build_seconds": build_seconds,
        "ingest_undisturbed_events_per_s": base,
        "backups": count,
        "backup_seconds_median": sorted(backup_seconds)[len(backup_seconds) // 2],
        "backup_mb_per_s": size / 1e6 / (sorted(backup_seconds)[len(backup_seconds) // 2]),
        "ingest_during_backup_events_per_s": during,
        "backup_ratio": during_backup / baseline_backup,
        "cleanup_records": job.removed_records,
        "cleanup_seconds": cleanup_seconds,
        "cleanup_records_per_s": job.removed_records / cleanup_seconds,
        "ingest_during_cleanup_events_per_s": during_cleanup,
        "cleanup_ratio": during_cleanup / baseline_cleanup,
        "sink_commit_errors": store["commit_errors"],
    }


# VmHWM (peak RSS) restarts at exec, unlike ru_maxrss, which keeps the
# forking parent's peak: the parent here holds a pipeline and a web server.
_CHILD = """
import sys, time, json
from datetime import datetime, UTC
from runwatch.store.manager import DatabaseManager

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

manager = DatabaseManager(sys.argv[1])
manager.get_schema_version()
before = status("VmRSS")
started = time.perf_counter()
removed = manager.cleanup_old_data(datetime.fromtimestamp(float(sys.argv[2]), tz=UTC))
seconds = time.perf_counter() - started
print(json.dumps({"removed": removed, "seconds": seconds, "rss_before_kib": before, "rss_peak_kib": status("VmHWM")}))
"""


def bench_cleanup_memory(directory: Path, rows: int) -> dict[str, Any]:
    """Peak RSS of a process removing ``rows`` metric rows (and their runs)."""
    db = directory / "cleanup.db"
    started = time.perf_counter()
    build_store(db, rows=rows)
    build_seconds = time.perf_counter() - started
    size = db.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db), str(OLD_TS + 86_400)],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    child = json.loads(out.stdout)
    with sqlite3.connect(db) as conn:
        left = conn.execute("SELECT count(*) FROM metric_chunks").fetchone()[0]
    return {
        "metric_rows": rows,
        "store_mb": size / 1e6,
        "build_seconds": build_seconds,
        "removed_records": child["removed"],
        "rows_left": left,
        "seconds": child["seconds"],
        "records_per_s": child["removed"] / child["seconds"],
        "rss_before_mb": child["rss_before_kib"] * 1024 / 1e6,
        "rss_peak_mb": child["rss_peak_kib"] * 1024 / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="store size for the live part (default 200)")
    parser.add_argument("--cleanup-rows", type=int, default=2_000_000, help="metric rows for the memory part")
    parser.add_argument("--window-seconds", type=float, default=5.0, help="length of each measured window")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-") as tmp:
        directory = Path(tmp)
        results["live"] = live = bench_live(directory, args.size_mb, args.window_seconds)
        results["cleanup_memory"] = memory = bench_cleanup_memory(directory, args.cleanup_rows)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lifecycle.json").write_text(json.dumps(results, indent=2))

    base = live["ingest_undisturbed_events_per_s"]
    print(f"runwatch lifecycle benchmark — {results['date']}, {results['machine']}, SQLite {results['sqlite']}")
    print(f"{'measure':<46}{'value':>22}  target")
    rows = [
        ("store for the live part", f"{live['store_mb']:.0f} MB, {live['bulk_metric_rows']:,} rows", ""),
        ("ingest undisturbed (events/s)", " / ".join(f"{b:,.0f}" for b in base), ""),
        (
            f"backup: {live['backups']} back to back, median",
            f"{live['backup_seconds_median']:.2f} s ({live['backup_mb_per_s']:.0f} MB/s)",
            "",
        ),
        (
            "ingest during backup (events/s)",
            " / ".join(f"{b:,.0f}" for b in live["ingest_during_backup_events_per_s"]),
            "",
        ),
        ("  ratio to undisturbed", f"{live['backup_ratio']:.2f}", ">= 0.70"),
        (
            "cleanup beside the writer (one window)",
            f"{live['cleanup_records']:,} rec in {live['cleanup_seconds']:.1f} s",
            "",
        ),
        ("ingest during cleanup (events/s)", f"{live['ingest_during_cleanup_events_per_s']:,.0f}", ""),
        ("  ratio to undisturbed", f"{live['cleanup_ratio']:.2f}", ""),
        ("sink commit errors", f"{live['sink_commit_errors']}", "0"),
        (
            f"cleanup of {memory['metric_rows']:,} metric rows",
            f"{memory['seconds']:.1f} s ({memory['records_per_s']:,.0f} rec/s)",
            "",
        ),
        ("  RSS before / peak", f"{memory['rss_before_mb']:.0f} / {memory['rss_peak_mb']:.0f} MB", "< 200 MB"),
        ("  metric chunks left", f"{memory['rows_left']:,}", "0"),
    ]
    for name, value, target in rows:
        print(f"{name:<46}{value:>22}  {target}")


if __name__ == "__main__":
    main()
