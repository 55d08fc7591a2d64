"""kill -9 in the middle of ingest: nothing acknowledged is lost, nothing is stored twice.

A child process logs numbered steps through a real WebMonitor and prints the
last step each returned ``flush()`` covered, while (by seed) frequent
snapshots, WAL checkpoints or a cleanup of older runs run beside it. The
parent kills it with SIGKILL at random moments, then checks the store: ``integrity_check`` is ok, every
acknowledged step is present exactly once, and what is stored is a gap-free
prefix of what was emitted (no phantom or reordered events). The next
monitor on the same store marks the run crashed and can resume it.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chunk_helpers import metric_values
from tiers import soak_timeout, tier

from runwatch import MonitorConfig, WebMonitor

CHILD = """
import sqlite3, sys, threading, time
from datetime import datetime, timezone
from runwatch import DatabaseManager, MonitorConfig, WebMonitor

db, data, batch, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
snapshot_interval = 0.05 if mode == "snapshots" else 300.0
config = MonitorConfig(db_path=db, data_dir=data, web_port=0, snapshot_interval=snapshot_interval)
monitor = WebMonitor(config)
if mode == "cleanup":  # finished runs for a cleanup to remove while the crash run ingests
    for index in range(10):
        monitor.start_training(run_id=f"old-{index}")
        for step in range(3_000):
            monitor.update_metrics({"loss": 1.0, "step_copy": float(step)})
        monitor.stop_training()
    monitor.flush(timeout=30)


def background():
    if mode == "checkpoints":
        connection = sqlite3.connect(db, timeout=30)
        while True:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            time.sleep(0.01)
    if mode == "cleanup":
        with DatabaseManager(db) as manager:
            manager.cleanup_old_data(datetime.now(timezone.utc))


threading.Thread(target=background, daemon=True).start()
monitor.start_training(run_id="crash")
step = 0
while True:
    for _ in range(batch):
        monitor.update_metrics({"loss": 1.0 / (step + 1), "step_copy": float(step)})
        step += 1
    if mode == "snapshots":
        monitor.update_game_state({"step": step})
    if monitor.flush(timeout=30):
        print("acked", step - 1, flush=True)
"""


# What else runs when the kill lands: only batches, frequent snapshots, WAL checkpoints, a cleanup.
MODES = ("batches", "snapshots", "checkpoints", "cleanup")


def stored_steps(db: Path) -> list[int]:
    """The ``step_copy`` values stored for the run, in call order."""
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    connection.close()
    return [int(value) for value in metric_values(db, "crash", "step_copy")]


@pytest.mark.soak
@soak_timeout(180, 900)
@pytest.mark.parametrize("seed", range(1, tier(21, 101)))
def test_kill_9_loses_no_acknowledged_event_and_stores_none_twice(tmp_path: Path, seed: int) -> None:
    """After SIGKILL at a random moment every acknowledged step is stored exactly once, as a gap-free prefix."""
    rng = random.Random(seed)
    db, data = tmp_path / "crash.db", tmp_path / "data"
    batch = rng.choice([50, 500, 5_000])  # kills land in small and large transactions alike
    mode = MODES[seed % len(MODES)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(data), str(batch), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    acknowledged = -1
    try:
        deadline = time.monotonic() + 60
        wanted = rng.randint(2, 6)
        for _ in range(wanted):
            line = child.stdout.readline() if child.stdout else ""
            assert line.startswith("acked "), f"the child stopped early: {line!r}"
            acknowledged = int(line.split()[1])
            assert time.monotonic() < deadline
        # A random moment inside the next batch or commit: the point of the test, not synchronisation.
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        if child.stdout:  # acknowledgements printed before the kill landed count too
            for line in child.stdout.read().splitlines():
                if line.startswith("acked "):
                    acknowledged = int(line.split()[1])
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout:
            child.stdout.close()

    steps = stored_steps(db)
    assert len(steps) == len(set(steps)), "a step was stored twice"
    assert steps == list(range(len(steps))), "the store is not a gap-free prefix of what was emitted"
    assert len(steps) - 1 >= acknowledged, (
        f"acknowledged step {acknowledged} is missing (stored up to {len(steps) - 1})"
    )

    started = time.monotonic()
    config = MonitorConfig(db_path=str(db), data_dir=str(data), web_port=0)
    with WebMonitor(config) as monitor:
        ready = time.monotonic() - started
        assert monitor.get_run_summary("crash")["status"] == "crashed"
        monitor.start_training(run_id="crash")  # resumes the crashed run
        monitor.update_metrics({"loss": 0.0, "step_copy": float(len(steps))})
        monitor.stop_training()
        assert monitor.get_run_summary("crash")["status"] == "completed"
    assert stored_steps(db) == list(range(len(steps) + 1))
    assert ready < 10, f"restart to ready took {ready:.1f} s"
