"""The host — the training loop — is never harmed by runwatch's own trouble.

Faults injected inside the pipeline (a stage that raises, a sink whose
serialiser fails, the event loop stopped under the monitor) never raise into
``update_metrics`` / ``record_event`` / ``flush``, keep the calls about as
fast as a baseline measured in the same run, and are counted in
``statistics()`` and logged a bounded number of times. A forked child's copy
of a monitor is disabled with one warning (the parent keeps working, and the
child may open its own monitor). A script that exits without ``close()`` has
everything stored by the exit hook, and with a stuck sink it still exits
within its shutdown deadline, counting what was not stored in one log line.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chunk_helpers import stored_calls
from plugins_for_overload import PickySerialiserSink, RaisingStage, StuckSink
from tiers import tier

from runwatch import DatabaseManager, MonitorConfig, WebMonitor

RAISING = f"{RaisingStage.__module__}:RaisingStage"
PICKY = f"{PickySerialiserSink.__module__}:PickySerialiserSink"
STUCK = f"{StuckSink.__module__}:StuckSink"
TESTS_DIR = Path(__file__).resolve().parent

#: A faulty pipeline's call time (p99) against the healthy baseline of the same run.
P99_RATIO_LIMIT = 25.0
CALLS = 20_000
TIMEOUT = 30


def monitor_on(tmp: Path, pipeline: dict[str, Any], name: str = "host.db") -> WebMonitor:
    """A monitor on ``pipeline``; heartbeats only when asked; a stuck sink holds a lifecycle call 1 s at most."""
    config = MonitorConfig(
        db_path=str(tmp / name),
        data_dir=str(tmp / "data"),
        web_port=0,
        update_interval=3600.0,
        pipeline=pipeline,
        commit_timeout_seconds=1.0,
    )
    return WebMonitor(config)


def timed_calls(calls: list[Callable[[], None]]) -> list[int]:
    """Run each call, returning its duration in ns; any exception fails the test right there."""
    clock = time.perf_counter_ns
    durations = []
    for call in calls:
        before = clock()
        call()
        durations.append(clock() - before)
    return durations


def p99(samples: list[int]) -> float:
    """The 99th percentile (nearest rank)."""
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)])


def runwatch_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records runwatch logged at WARNING or above."""
    return [r for r in caplog.records if r.name.startswith("runwatch") and r.levelno >= logging.WARNING]


def metric_rows(db: Path) -> int:
    """Logging calls committed to ``db``."""
    return stored_calls(db)


def workload(monitor: WebMonitor, faults: bool) -> list[Callable[[], None]]:
    """CALLS training-loop calls; with ``faults`` every 50th carries an event the faulty components choke on."""
    calls: list[Callable[[], None]] = []
    for i in range(CALLS):
        if faults and i % 100 == 0:
            calls.append(lambda: monitor.record_event("boom", {"i": 1}))  # the stage raises on its batch
        elif faults and i % 100 == 50:
            calls.append(lambda: monitor.update_metrics({"poison": 1.0}))  # the sink's serialiser fails
        else:
            calls.append(lambda i=i: monitor.update_metrics({"loss": 1.0 / (i + 1), "acc": 0.5}))
    return calls


def test_faulty_stage_and_sink_never_reach_the_caller(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A raising stage and a failing sink serialiser are counted and logged boundedly; calls neither raise nor slow."""
    caplog.set_level(logging.WARNING, logger="runwatch")
    pipeline = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"flaky": {"type": RAISING, "inputs": ["app"]}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": ["flaky"]},
            "picky": {"type": PICKY, "inputs": ["app"]},
        },
    }
    monitor = monitor_on(tmp_path, pipeline)
    try:
        monitor.start_training(run_id="faults")
        baseline = timed_calls(workload(monitor, faults=False))  # healthy: same calls, same monitor
        assert monitor.pipeline_thread.flush(timeout=TIMEOUT)
        healthy = monitor.statistics()["components"]
        assert healthy["flaky"]["errors"] == healthy["picky"]["errors"] == 0

        faulty = timed_calls(workload(monitor, faults=True))
        assert monitor.pipeline_thread.flush(timeout=TIMEOUT)  # the graph still completes barriers
        stats = monitor.statistics()["components"]
    finally:
        monitor.close()

    ratio = p99(faulty) / p99(baseline)
    print(f"\nfaults: p99 healthy {p99(baseline) / 1e3:.2f} µs, faulty {p99(faulty) / 1e3:.2f} µs (ratio {ratio:.2f})")
    assert ratio <= P99_RATIO_LIMIT

    accepted = stats["app"]["intake"]["accepted_events"]
    assert stats["app"]["intake"]["dropped_events"] == {}
    flaky, store, picky = stats["flaky"], stats["store"], stats["picky"]
    # Counted: every event is stored or dropped with reason component_error, on each path.
    assert flaky["errors"] > 0 and flaky["dropped_events"]["component_error"] > 0
    assert flaky["processed_events"] == accepted
    assert flaky["sent_events"] + flaky["dropped_events"]["component_error"] == accepted
    assert store["committed_events"] == flaky["sent_events"]
    assert picky["errors"] > 0 and "serialiser fault" in picky["last_error"]
    assert picky["serialised_events"] + picky["dropped_events"]["component_error"] == accepted
    # Logged, but boundedly: at the 1st, 2nd, 4th, 8th... error of each component.
    records = runwatch_records(caplog)
    limit = sum(math.floor(math.log2(stats[c]["errors"])) + 1 for c in ("flaky", "picky"))
    assert 0 < len(records) <= limit, [r.getMessage() for r in records]


def test_a_stopped_event_loop_never_blocks_or_raises_into_the_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the event loop stopped and closed under it, calls stay fast, never raise, are counted; flush returns."""
    caplog.set_level(logging.WARNING, logger="runwatch")
    intake = 1_000  # a small intake (block, 30 s timeout) that the calls below overflow many times
    pipeline = {
        "sources": {"app": {"type": "in_process", "max_events": intake}},
        "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}},
    }
    monitor = monitor_on(tmp_path, pipeline)
    thread = loop = worker = None
    try:
        monitor.start_training(run_id="loop")
        baseline = timed_calls([lambda: monitor.update_metrics({"loss": 1.0})] * CALLS)
        assert monitor.pipeline_thread.flush(timeout=TIMEOUT)
        before = monitor.statistics()["components"]["app"]["intake"]

        thread = monitor.pipeline_thread
        loop, worker = thread._loop, thread._thread
        assert loop is not None and worker is not None
        assert monitor.web_url is not None
        port = int(monitor.web_url.rsplit(":", 1)[1])
        loop.call_soon_threadsafe(loop.stop)
        worker.join(TIMEOUT)  # waits for the thread's end, bounded
        assert not worker.is_alive(), "the pipeline thread did not end after its loop stopped"
        assert loop.is_closed()
        # The web server's listening socket was closed with its loop (not left for the garbage collector).
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()

        after_stop = timed_calls(
            [lambda: monitor.update_metrics({"loss": 2.0}), lambda: monitor.record_event("e", {})] * (CALLS // 2)
        )
        started = time.monotonic()
        assert monitor.flush(timeout=TIMEOUT) is False
        assert time.monotonic() - started < 1.0, "flush waited on a pipeline that is gone"
        stats = monitor.statistics()
        assert stats["running"] is False
        counts = stats["components"]["app"]["intake"]
    finally:
        started = time.monotonic()
        monitor.close()
        assert time.monotonic() - started < 5.0
        thread = loop = worker = None
        gc.collect()  # an unclosed socket of the stopped loop would be reported here (warnings are errors)

    ratio = p99(after_stop) / p99(baseline)
    print(
        f"\nstopped loop: p99 healthy {p99(baseline) / 1e3:.2f} µs, after {p99(after_stop) / 1e3:.2f} µs ({ratio:.2f})"
    )
    assert max(after_stop) < 1e9, "a call waited on the dead pipeline"
    assert ratio <= P99_RATIO_LIMIT
    # Every call after the stop (and flush's heartbeat) is counted as dropped; nothing is lost silently.
    dropped = sum(counts["dropped_events"].values()) - sum(before["dropped_events"].values())
    assert dropped == len(after_stop) + 1
    assert set(counts["dropped_events"]) <= {"closed", "pipeline_stopped"}
    records = runwatch_records(caplog)
    assert any("stopped unexpectedly" in r.getMessage() for r in records)
    assert len(records) <= 2 * (math.floor(math.log2(dropped)) + 1) + 5, [r.getMessage() for r in records]


CHILD_REPORT_FIELDS = ("raised", "flushed", "max_call_s", "dropped", "warnings", "own_stored")


def test_a_forked_child_is_disabled_with_a_warning_and_the_parent_keeps_working(tmp_path: Path) -> None:
    """A forked child's copy of a monitor ignores calls (counted, one warning); a new one works; the parent too."""
    monitor = monitor_on(
        tmp_path,
        {
            "sources": {"app": {"type": "in_process", "max_events": 1_000}},
            "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}},
        },
    )
    try:
        monitor.start_training(run_id="parent")
        for i in range(100):
            monitor.update_metrics({"loss": float(i)})
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            status = 1
            try:
                report = child_after_fork(monitor, tmp_path)
                os.write(write_end, json.dumps(report).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        for i in range(100, 300):  # the parent keeps logging while the child runs
            monitor.update_metrics({"loss": float(i)})
        with os.fdopen(read_end, "rb") as pipe:
            data = pipe.read()  # returns at the child's exit (EOF), bounded by the test timeout
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        report = json.loads(data)
        assert monitor.flush(timeout=TIMEOUT) is True
        parent_stats = monitor.statistics()
    finally:
        monitor.close()

    assert report["raised"] is None
    assert report["flushed"] is False
    assert report["max_call_s"] < 1.0
    assert report["dropped"] == 5_000  # every call of the child, counted
    assert len(report["warnings"]) == 1 and "forked child" in report["warnings"][0]
    assert report["own_stored"] == 10
    assert "forked_child_dropped_events" not in parent_stats
    assert metric_rows(tmp_path / "host.db") == 300  # the parent's, all of them; none of the child's


#: Children forked while the parent commits, and the calls each child's own monitor records.
FORKS = tier(8, 30)
CHILD_CALLS = 20


def test_forked_children_record_into_the_store_their_parent_is_writing(tmp_path: Path) -> None:
    """Forks taken while the parent commits without pause: each child's own monitor on the same store records all."""
    # A small blocking intake: the training loop runs as fast as the store commits, so the store's
    # connection is mid-transaction at almost every fork.
    parent_graph = {
        "sources": {"app": {"type": "in_process", "max_events": 20_000}},
        "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}},
    }
    config = MonitorConfig(
        db_path=str(tmp_path / "shared.db"), data_dir=str(tmp_path / "parent"), web_port=0, update_interval=3600.0
    )
    monitor = WebMonitor(config.with_changes(pipeline=parent_graph))
    stop = threading.Event()
    writing = threading.Event()  # cleared while a child runs: the child need not share the CPU with it
    busy = threading.Event()  # set once the parent has filled its intake again: the store commits back to back
    parent_calls = 0

    def train() -> None:
        nonlocal parent_calls
        since_resumed = 0
        while not stop.is_set():
            if not writing.is_set():
                since_resumed = 0
                writing.wait()
                continue
            monitor.update_metrics({"loss": float(parent_calls)})
            parent_calls += 1
            since_resumed += 1
            if since_resumed == 2 * 20_000:
                busy.set()

    writer = threading.Thread(target=train, name="parent training loop")
    reports: list[dict[str, Any]] = []
    try:
        monitor.start_training(run_id="parent")
        writer.start()
        for index in range(FORKS):
            busy.clear()
            writing.set()
            assert busy.wait(TIMEOUT)
            # Each child runs the README's recipe: a new monitor (the default graph) on the same store.
            child_config = config.with_changes(data_dir=str(tmp_path / f"child-{index}"))
            reports.append(fork_a_monitor(child_config, index, forked=writing.clear))
            if reports[-1] != {"raised": None, "flushed": True}:
                break  # one failure is enough to see
    finally:
        stop.set()
        writing.set()
        writer.join(TIMEOUT)
        monitor.close()
    assert reports == [{"raised": None, "flushed": True}] * FORKS
    assert metric_rows_of(tmp_path / "shared.db", "parent") == parent_calls
    with DatabaseManager(config.db_path) as db:
        for index in range(FORKS):
            assert len(db.get_run_metrics(f"child-{index}", ["x"])) == CHILD_CALLS


def metric_rows_of(db: Path, run_id: str) -> int:
    """Logging calls committed to ``db`` for one run."""
    return stored_calls(db, run_id)


def fork_a_monitor(config: MonitorConfig, index: int, forked: Callable[[], None]) -> dict[str, Any]:
    """Fork now; the child records CHILD_CALLS metrics through a new monitor on ``config`` and reports.

    The parent calls ``forked`` right after the fork. A child still working
    after TIMEOUT seconds is killed and reported stuck.
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 1
        try:
            os.close(read_end)
            report: dict[str, Any] = {"raised": None, "flushed": False}
            try:
                with WebMonitor(config) as child:
                    child.start_training(run_id=f"child-{index}")
                    for step in range(CHILD_CALLS):
                        child.update_metrics({"x": float(step)})
                    report["flushed"] = child.flush(timeout=TIMEOUT)
            except BaseException as exc:
                report["raised"] = repr(exc)
            os.write(write_end, json.dumps(report).encode())
            status = 0
        finally:
            os._exit(status)
    forked()
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return {"raised": "stuck", "flushed": False}
        with os.fdopen(read_end, "rb", closefd=False) as pipe:
            data = pipe.read()  # the child writes once, then exits (EOF)
        result: dict[str, Any] = json.loads(data)
        return result
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


def child_after_fork(monitor: WebMonitor, tmp: Path) -> dict[str, Any]:
    """In the forked child: use the inherited monitor, then a monitor of its own; report what happened."""
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                captured.append(record.getMessage())

    logger = logging.getLogger("runwatch")
    logger.addHandler(Capture())
    report: dict[str, Any] = {"raised": None}
    try:
        clock = time.perf_counter
        slowest = 0.0
        for i in range(5_000):  # five times the intake: a queue nobody drains would block or grow here
            started = clock()
            monitor.update_metrics({"child": float(i)})
            slowest = max(slowest, clock() - started)
        report["max_call_s"] = slowest
        report["flushed"] = monitor.flush(timeout=5)
        report["dropped"] = monitor.statistics()["forked_child_dropped_events"]
        report["warnings"] = list(captured)
        own = WebMonitor(
            MonitorConfig(
                db_path=str(tmp / "child.db"),
                data_dir=str(tmp / "child"),
                web_port=0,
                pipeline={
                    "sources": {"app": {"type": "in_process"}},
                    "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}},
                },
            )
        )
        with own:
            own.start_training(run_id="child")
            for i in range(10):
                own.update_metrics({"own": float(i)})
            own.flush()
        report["own_stored"] = metric_rows(tmp / "child.db")
        monitor.close()  # the inherited copy: returns at once, touches nothing of the parent's
    except BaseException as exc:  # reported to the parent
        report["raised"] = repr(exc)
    return report


SCRIPT = """
import logging, sys
from runwatch import MonitorConfig, WebMonitor

logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
db, data, count, stuck, deadline = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", float(sys.argv[5])
pipeline = {
    "shutdown_timeout_seconds": deadline,
    "sources": {"app": {"type": "in_process"}},
    "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}},
}
if stuck:
    pipeline["sinks"]["stuck"] = {
        "type": "plugins_for_overload:StuckSink", "inputs": ["app"], "buffer": {"max_events": 100},
    }
config = MonitorConfig(
    db_path=db, data_dir=data, web_port=0, update_interval=3600.0, pipeline=pipeline, commit_timeout_seconds=0.5
)
monitor = WebMonitor(config)
monitor.start_training(run_id="script")
for i in range(count):
    monitor.update_metrics({"i": float(i)})
print("logged", count, flush=True)
# no close(): the exit hook has to do it
"""


def run_script(tmp: Path, count: int, stuck: bool, deadline: float) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the logging script to its exit; return it and the seconds from its last call to its exit."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp / "script.db"),
            str(tmp / "data"),
            str(count),
            "1" if stuck else "0",
            str(deadline),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the script has logged everything (or died)
    logged_at = time.monotonic()
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    exited_after = time.monotonic() - logged_at
    assert line.split() == ["logged", str(count)], (line, stderr)
    return subprocess.CompletedProcess(process.args, process.returncode, line + stdout, stderr), exited_after


def test_a_script_that_exits_without_close_has_every_event_stored(tmp_path: Path) -> None:
    """A script that logs N events and exits without close() has all N stored by the exit hook, its run completed."""
    count = 20_000
    result, _ = run_script(tmp_path, count, stuck=False, deadline=10.0)
    assert result.returncode == 0, result.stderr
    assert metric_rows(tmp_path / "script.db") == count
    connection = sqlite3.connect(tmp_path / "script.db")
    try:
        assert connection.execute("SELECT status FROM runs WHERE run_id = 'script'").fetchone() == ("completed",)
    finally:
        connection.close()
    assert "did not drain" not in result.stderr


def test_a_script_with_a_stuck_sink_exits_within_its_deadline_counting_the_rest(tmp_path: Path) -> None:
    """With a stuck sink the script exits within its shutdown deadline, one log line counting what was not stored."""
    count, deadline = 5_000, 2.0
    result, exited_after = run_script(tmp_path, count, stuck=True, deadline=deadline)
    assert result.returncode == 0, result.stderr
    assert exited_after < deadline + 8, f"exit took {exited_after:.1f} s past the last call"
    stored = metric_rows(tmp_path / "script.db")
    lines = [line for line in result.stderr.splitlines() if "did not drain" in line]
    assert len(lines) == 1, result.stderr
    headline, per_sink = re.fullmatch(r".*; (\d+) event\(s\) lost \(.*\); per sink: (.*)", lines[0]).groups()
    losses = {sink: int(n) for sink, n in re.findall(r"(?:^|; )sinks\.([\w-]+) (\d+)", per_sink)}
    # The store's path lost exactly what is not stored: the metrics plus at most the 4 run events
    # (start, its heartbeat, the exit hook's heartbeat and completion); each event counted once.
    assert count - stored <= losses["store"] <= count - stored + 4, (stored, losses)
    assert int(headline) == max(losses.values())
    assert losses["stuck"] > 0
    print(f"\nstuck sink: exit {exited_after:.2f} s after the last call (deadline {deadline} s); {lines[0]}")


def test_a_stuck_sink_behind_a_blocking_intake_costs_the_caller_one_timeout_not_one_per_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a stuck sink a blocking intake waits out its timeout once, then sheds (counted) until it drains again."""
    caplog.set_level(logging.WARNING, logger="runwatch")
    block_timeout = 0.5
    pipeline = {
        "shutdown_timeout_seconds": 0.5,
        "sources": {
            "app": {"type": "in_process", "max_events": 100, "block_timeout_seconds": block_timeout},
        },
        "sinks": {"stuck": {"type": STUCK, "inputs": ["app"], "buffer": {"max_events": 100}}},
    }
    monitor = monitor_on(tmp_path, pipeline)
    try:
        monitor.start_training()  # no run id: this graph has no store to look an existing run up in
        calls = 2_000  # without shedding: ~1,700 calls × 0.5 s each
        started = time.monotonic()
        durations = timed_calls([lambda: monitor.update_metrics({"loss": 1.0})] * calls)
        elapsed = time.monotonic() - started
        counts = monitor.statistics()["components"]["app"]["intake"]
    finally:
        started_close = time.monotonic()
        monitor.close()
        close_seconds = time.monotonic() - started_close
    print(f"\nstuck sink, block intake: {calls} calls in {elapsed:.2f} s; slowest {max(durations) / 1e9:.2f} s")
    assert elapsed < block_timeout + 3, "the caller waited out the timeout more than once"
    assert sum(1 for d in durations if d > block_timeout * 0.5e9) == 1
    assert counts["dropped_events"]["block_timeout"] > 0
    assert set(counts["dropped_events"]) == {"block_timeout"}
    assert counts["accepted_events"] + counts["buffered_events"] + counts["dropped_events"]["block_timeout"] == (
        2 + calls  # the run's start (lifecycle + heartbeat) and the calls
    )
    assert close_seconds < 0.5 + 5
