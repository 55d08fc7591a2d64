"""Storage faults under a live WebMonitor: the store degrades, retries, and resumes by itself.

Four faults hit the SQLite sink while a training loop emits numbered metrics
and a remote producer POSTs numbered ingest batches:

(a) disk full: ``PRAGMA max_page_count`` set to the current page count on the
    sink's own connection (SQLITE_FULL), then raised back;
(b) a file-size limit: a child process running a WebMonitor lowers its own
    ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so writes fail with EFBIG), then lifts it;
(c) a read-only store: ``PRAGMA query_only`` on the sink's connection. Chosen
    because the suite may run as root, who writes through file modes, and no
    read-only bind mount or ``chattr +i`` is available here; ``query_only`` makes
    SQLite itself refuse every write (SQLITE_READONLY), as a read-only file would;
(d) a lock: another process holds ``BEGIN IMMEDIATE``.

For each: no exception reaches the producer; the log holds a bounded number of
runwatch records (the sink logs on the 1st, 2nd, 4th, 8th... failure of an
episode and once on recovery); statistics and ``/api/health`` say ``degraded``
for as long as the fault lasts; commits are retried with backoff, not per
incoming batch; no ingest batch is stored in part; writing resumes by itself;
and at the end every emitted event is stored exactly once or counted as dropped.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from chunk_helpers import metric_values
from tiers import soak_timeout, tier

from runwatch import MonitorConfig, WebMonitor
from runwatch.pipeline.config import default_pipeline_config

RUN_ID = "faults"
INGEST_RUN_ID = "faults-ingest"
INGEST_TYPE = "fault_batch"
BATCH_SIZE = 50
# Guards every single wait; nothing here legitimately takes this long.
TIMEOUT = 30.0
#: How long each fault is held once the store reports it.
FAULT_SECONDS = tier(2.0, 30.0)
#: Components on the store's path whose drop counters account for events not stored.
STORE_PATH = ("app", "ingest", "liveness", "alerts", "store")


# -- producers ---------------------------------------------------------------------------


@dataclass
class Producer:
    """A training loop in a thread: numbered ``seq`` metrics through ``update_metrics``, paced."""

    emit: Callable[[float], None]
    emitted: int = 0
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Start emitting in a daemon thread."""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for _ in range(20):
                try:
                    self.emit(float(self.emitted))
                except BaseException as exc:  # the point of the test: this must stay empty
                    self.errors.append(exc)
                self.emitted += 1
            self.stop.wait(0.005)  # pacing (~4,000 events/s), not synchronisation

    def finish(self) -> None:
        """Stop emitting and join."""
        self.stop.set()
        assert self.thread is not None
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@dataclass
class Poster:
    """A remote producer in a thread: numbered ingest batches POSTed one after another."""

    url: str
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Start posting in a daemon thread."""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=4 * TIMEOUT) as client:
            sequence = 0
            while not self.stop.is_set():
                batch_id = f"b{sequence}"
                sequence += 1
                events = [
                    {
                        "kind": "log",
                        "run_id": INGEST_RUN_ID,
                        "timestamp": time.time(),
                        "type": INGEST_TYPE,
                        "level": "info",
                        "data": {"batch": batch_id, "i": i},
                    }
                    for i in range(BATCH_SIZE)
                ]
                try:
                    response = client.post(
                        "/api/ingest",
                        content=orjson.dumps({"batch_id": batch_id, "events": events}),
                        headers={"content-type": "application/json"},
                    )
                except httpx.HTTPError as exc:
                    self.errors.append(f"{batch_id}: {exc!r}")
                    continue
                self.outcomes[batch_id] = response.status_code
                self.stop.wait(0.02)  # pacing, not synchronisation

    def acked(self) -> list[str]:
        """Batch ids answered 202."""
        return [batch_id for batch_id, status in self.outcomes.items() if status == 202]

    def finish(self) -> None:
        """Stop after the batch in flight (which waits for its commit) and join."""
        self.stop.set()
        assert self.thread is not None
        self.thread.join(4 * TIMEOUT)
        assert not self.thread.is_alive()


# -- checks ------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` (bounded) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # poll interval
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def health(url: str) -> dict[str, Any]:
    """GET /api/health."""
    response = httpx.get(url + "/api/health", timeout=TIMEOUT)
    assert response.status_code == 200
    return response.json()


def dropped_on_store_path(statistics: dict[str, Any]) -> int:
    """Events counted as dropped anywhere between the producers and the store."""
    total = 0
    for component in STORE_PATH:
        entry = statistics["components"].get(component, {})
        for counters in (
            entry.get("dropped_events", {}),
            entry.get("buffer", {}).get("dropped_events", {}),
            entry.get("intake", {}).get("dropped_events", {}),
            entry.get("store_dropped_events", {}),
        ):
            total += sum(counters.values())
    return total


def check_store(db: Path, run_id: str, emitted: int, dropped: int, acked: list[str]) -> dict[str, int]:
    """Integrity, exactly-once ``seq`` values, whole ingest batches, consistent metric stats."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs: Counter[int] = Counter(int(value) for value in metric_values(db, run_id, "seq"))
        stats_count = connection.execute(
            "SELECT s.count FROM metric_stats s JOIN runs r ON r.id = s.run WHERE r.run_id = ? AND s.name = 'seq'",
            (run_id,),
        ).fetchone()[0]
        per_batch = Counter(
            dict(
                connection.execute(
                    "SELECT data ->> '$.batch', count(*) FROM events WHERE type = ? GROUP BY 1", (INGEST_TYPE,)
                ).fetchall()
            )
        )
        receipts = Counter(batch_id for (batch_id,) in connection.execute("SELECT batch_id FROM ingest_batches"))
    finally:
        connection.close()
    twice = [seq for seq, n in seqs.items() if n > 1]
    assert not twice, f"{len(twice)} value(s) stored more than once, e.g. {twice[:5]}"
    assert stats_count == sum(seqs.values()), "metric_stats disagree with the rows: a half-applied transaction"
    assert set(seqs) <= set(range(emitted))
    assert len(seqs) + dropped == emitted, f"stored {len(seqs)} + dropped {dropped} != emitted {emitted}"
    partial = {batch_id: n for batch_id, n in per_batch.items() if n != BATCH_SIZE}
    assert not partial, f"partially stored batches: {partial}"
    for batch_id in acked:
        assert per_batch[batch_id] == BATCH_SIZE and receipts[batch_id] == 1, batch_id
    assert set(per_batch) == set(receipts), "a batch's events and its receipt were committed apart"
    return {"stored": len(seqs), "ingest_batches": len(per_batch)}


def runwatch_records(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """Warnings and errors logged by runwatch."""
    return [r for r in records if r.name.startswith("runwatch") and r.levelno >= logging.WARNING]


def log_bound(commit_errors: int) -> int:
    """At most: a record per power-of-two failure count, one on recovery, and a few from other components."""
    # The count was sampled just before the fault cleared: allow one more doubling after it.
    return int(math.log2(max(commit_errors, 1))) + 2 + 1 + 3


def retry_bound(seconds: float) -> int:
    """Commit attempts a backing-off sink can make in ``seconds`` (ticks every 0.5 s, backoff from 0.05 s)."""
    return int(seconds / 0.5) + 8


# -- in-process faults -------------------------------------------------------------------


async def _on_writer(sink: Any, sql: str) -> list[Any]:
    # The store exposes no hook for its writer connection's pragmas: the test reaches in.
    async with sink._writer._db.execute(sql) as cursor:  # noqa: SLF001
        return list(await cursor.fetchall())


class Fault:
    """A storage fault that can be injected into a running monitor and cleared."""

    name = "fault"

    def inject(self, monitor: WebMonitor, db: Path) -> None:
        """Start the fault."""

    def clear(self) -> None:
        """End the fault."""


class DiskFull(Fault):
    """(a) ``PRAGMA max_page_count`` = the current page count: the next page the store needs is refused."""

    name = "disk_full"

    def inject(self, monitor: WebMonitor, db: Path) -> None:
        self.thread = monitor.pipeline_thread
        self.sink = self.thread.pipeline.component("store")
        pages = self.thread.call(_on_writer, self.sink, "PRAGMA page_count")[0][0]
        self.thread.call(_on_writer, self.sink, f"PRAGMA max_page_count = {pages}")

    def clear(self) -> None:
        self.thread.call(_on_writer, self.sink, "PRAGMA max_page_count = 1073741823")


class ReadOnly(Fault):
    """(c) ``PRAGMA query_only``: SQLite refuses every write on the sink's connection."""

    name = "read_only"

    def inject(self, monitor: WebMonitor, db: Path) -> None:
        self.thread = monitor.pipeline_thread
        self.sink = self.thread.pipeline.component("store")
        self.thread.call(_on_writer, self.sink, "PRAGMA query_only = 1")

    def clear(self) -> None:
        self.thread.call(_on_writer, self.sink, "PRAGMA query_only = 0")


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
connection.close()
print("released", flush=True)
"""


class Locked(Fault):
    """(d) Another process holds the write lock (``BEGIN IMMEDIATE``) until told to let go."""

    name = "locked"

    def inject(self, monitor: WebMonitor, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"  # bounded by the test's timeout

    def clear(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        assert self.process.wait(TIMEOUT) == 0
        self.process.stdin.close()
        self.process.stdout.close()


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    """A WebMonitor with its web server on a free loopback port."""
    with WebMonitor(MonitorConfig(db_path=str(tmp_path / "faults.db"), data_dir=str(tmp_path / "d"), web_port=0)) as m:
        yield m


@pytest.mark.soak
@soak_timeout(40, 300)
@pytest.mark.parametrize("fault", [DiskFull(), ReadOnly(), Locked()], ids=lambda f: f.name)
def test_the_store_degrades_under_a_fault_and_resumes_by_itself(
    monitor: WebMonitor, tmp_path: Path, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """Under a storage fault the producer never fails, health says degraded, and all is stored once after it clears."""
    caplog.set_level(logging.WARNING, logger="runwatch")
    db = tmp_path / "faults.db"
    url = monitor.web_url
    assert url is not None
    monitor.start_training(run_id=RUN_ID)
    producer = Producer(lambda seq: monitor.update_metrics({"seq": seq}))
    poster = Poster(url)

    def store() -> dict[str, Any]:
        return monitor.statistics()["components"]["store"]

    producer.start()
    poster.start()
    try:
        wait_until(lambda: store()["committed_events"] > 0 and poster.acked(), "the first commits")
        fault.inject(monitor, db)
        try:
            wait_until(lambda: store()["health"] == "degraded", "the store to report degraded")
            degraded_at = time.monotonic()
            seen = health(url)
            assert seen["status"] == "degraded" and seen["store"]["health"] == "degraded", seen
            assert seen["store"]["last_commit_error"]
            errors_at_onset = store()["commit_errors"]
            # Hold the fault; it must be reported the whole time.
            while time.monotonic() - degraded_at < FAULT_SECONDS:
                assert store()["health"] == "degraded"
                time.sleep(0.05)  # sampling interval while the fault is held
            held = time.monotonic() - degraded_at
            errors = store()["commit_errors"]
            attempts = errors - errors_at_onset
        finally:
            fault.clear()
        cleared_at = time.monotonic()
        wait_until(lambda: store()["health"] == "ok", "the store to recover")
        recovery = time.monotonic() - cleared_at
        assert health(url)["status"] == "ok"
    finally:
        producer.finish()
        poster.finish()
    assert monitor.flush(timeout=TIMEOUT)
    statistics = monitor.statistics()
    monitor.close()

    assert not producer.errors, producer.errors[:3]
    assert not poster.errors, poster.errors[:3]
    assert set(poster.outcomes.values()) == {202}, Counter(poster.outcomes.values())
    assert attempts <= retry_bound(held), f"{attempts} commit attempts in {held:.1f} s: no backoff"
    records = runwatch_records(caplog.records)
    assert len(records) <= log_bound(errors), [r.getMessage() for r in records]
    assert any("accepts writes again" in r.getMessage() for r in records)
    counts = check_store(db, RUN_ID, producer.emitted, dropped_on_store_path(statistics), poster.acked())
    print(
        f"{fault.name}: degraded {held:.1f} s, {attempts} retries while held, {errors} commit error(s), "
        f"recovered {recovery:.2f} s after clearing, {len(records)} log record(s), "
        f"{producer.emitted} emitted / {counts['stored']} stored, {len(poster.acked())} ingest batches acked"
    )


@pytest.mark.soak
@soak_timeout(30, 300)
@pytest.mark.parametrize("fault", [DiskFull()], ids=lambda f: f.name)  # read_only takes the same path
def test_commit_retries_back_off_when_no_flush_barrier_waits(
    tmp_path: Path, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    """With pending events past a transaction's size and no flush waiting, retries still back off (no storm)."""
    caplog.set_level(logging.WARNING, logger="runwatch")
    db = tmp_path / "faults.db"
    graph = default_pipeline_config(alerts=True)
    graph["sinks"]["store"]["max_events"] = 500  # every incoming batch finds a full transaction pending
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0, pipeline=graph)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id=RUN_ID)
        producer = Producer(lambda seq: monitor.update_metrics({"seq": seq}))

        def store() -> dict[str, Any]:
            return monitor.statistics()["components"]["store"]

        producer.start()
        try:
            wait_until(lambda: store()["committed_events"] > 0, "the first commits")
            fault.inject(monitor, db)
            try:
                wait_until(lambda: store()["health"] == "degraded", "the store to report degraded")
                degraded_at = time.monotonic()
                errors_at_onset = store()["commit_errors"]
                while time.monotonic() - degraded_at < FAULT_SECONDS:
                    assert store()["health"] == "degraded"
                    time.sleep(0.05)  # sampling interval while the fault is held
                held = time.monotonic() - degraded_at
                errors = store()["commit_errors"]
                pending = store()["pending_events"]
            finally:
                fault.clear()
            wait_until(lambda: store()["health"] == "ok", "the store to recover")
        finally:
            producer.finish()
        assert monitor.flush(timeout=TIMEOUT)
        statistics = monitor.statistics()

    attempts = errors - errors_at_onset
    assert pending > 500, "the fault did not outlast a transaction's worth of events"
    assert attempts <= retry_bound(held), f"{attempts} commit attempts in {held:.1f} s: one per batch, no backoff"
    assert not producer.errors, producer.errors[:3]
    records = runwatch_records(caplog.records)
    assert len(records) <= log_bound(errors), [r.getMessage() for r in records]
    counts = check_store(db, RUN_ID, producer.emitted, dropped_on_store_path(statistics), [])
    print(
        f"{fault.name}: {attempts} retries in {held:.1f} s with {pending} events pending, "
        f"{len(records)} log record(s), {producer.emitted} emitted / {counts['stored']} stored"
    )


# -- closing while another process holds the write lock --------------------------------------

#: The shutdown deadline of the closing tests, and what close() may take beyond it (the web server's
#: own shutdown, the thread's join).
CLOSE_DEADLINE = 2.0
CLOSE_MARGIN = 2.0


def test_close_with_a_write_locked_store_keeps_its_shutdown_deadline(tmp_path: Path) -> None:
    """With the store write-locked by another process, close() returns within shutdown_timeout_seconds."""
    db = tmp_path / "locked.db"
    config = MonitorConfig(
        db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0, shutdown_timeout_seconds=CLOSE_DEADLINE
    )
    lock = Locked()
    monitor = WebMonitor(config)
    try:
        monitor.start_training(run_id=RUN_ID)
        for seq in range(1_000):
            monitor.update_metrics({"seq": seq})
        assert monitor.flush(timeout=TIMEOUT)
        lock.inject(monitor, db)
        for seq in range(1_000, 60_000):  # a backlog the store cannot take: transactions wait for the lock
            monitor.update_metrics({"seq": seq})
        started = time.monotonic()
        monitor.close()
        took = time.monotonic() - started
        statistics = monitor.statistics()
    finally:
        monitor.close()
        lock.clear()
    print(f"\nclose with a locked store: {took:.2f} s (deadline {CLOSE_DEADLINE} s)")
    assert took < CLOSE_DEADLINE + CLOSE_MARGIN
    assert statistics["components"]["store"]["store_dropped_events"]  # what the lock kept out is counted
    # Exactly the events flushed before the lock are stored, once each; nothing of the backlog slipped in part.
    assert check_store(db, RUN_ID, 1_000, 0, [])["stored"] == 1_000


def test_events_cut_off_at_the_shutdown_deadline_are_each_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing past the deadline with a locked store: on each sink's path, received = delivered + dropped, exactly.

    A stage fans out to the store and a live hub, so an event lost before the fan-out is lost on both
    paths; the shutdown log counts it once per sink, and its headline is the most one sink missed.
    """
    caplog.set_level(logging.ERROR, logger="runwatch")
    db = tmp_path / "locked.db"
    graph = {
        "shutdown_timeout_seconds": CLOSE_DEADLINE,
        "sources": {"app": {"type": "in_process", "max_events": 20_000, "when_full": "drop_newest"}},
        "stages": {"pass": {"type": "filter", "inputs": ["app"], "buffer": {"max_events": 5_000}}},
        "sinks": {
            # Small transactions: the store is cut off inside write() as well as in its buffer.
            "store": {
                "type": "sqlite",
                "inputs": ["pass"],
                "max_events": 1_000,
                "max_pending_events": 2_000,  # then write() waits, its buffer fills, and the stage's send waits
                "buffer": {"max_events": 5_000},
            },
            "live": {"type": "websocket_hub", "inputs": ["pass"], "buffer": {"max_events": 5_000}},
        },
    }
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0, pipeline=graph)
    lock = Locked()
    monitor = WebMonitor(config)
    try:
        monitor.start_training(run_id=RUN_ID)
        assert monitor.flush(timeout=TIMEOUT)
        lock.inject(monitor, db)
        for seq in range(60_000):
            monitor.update_metrics({"seq": seq})
        wait_until(lambda: monitor.statistics()["components"]["pass"]["in_flight_events"], "the stage to block")
        monitor.stop_training()  # its last events go in now (dropped at the full intake), not during close()
        before = monitor.pipeline_thread.pipeline.lost_on_paths()
        monitor.close()
        statistics = monitor.statistics()["components"]
        after = monitor.pipeline_thread.pipeline.lost_on_paths()
    finally:
        monitor.close()
        lock.clear()
    intake = statistics["app"]["intake"]
    received = intake["accepted_events"] + intake["buffered_events"] + sum(intake["dropped_events"].values())
    committed = statistics["store"]["committed_events"]
    delivered_live = statistics["live"]["processed_events"]
    assert intake["buffered_events"] == 0
    assert received == committed + sum(after["store"].values()), (received, committed, after["store"])
    assert received == delivered_live + sum(after["live"].values()), (received, delivered_live, after["live"])
    assert committed < received  # the deadline did cut events off
    # The log: one line, each sink's loss during the shutdown counted once.
    lines = [r.getMessage() for r in caplog.records if "did not drain" in r.getMessage()]
    assert len(lines) == 1, lines
    headline, per_sink = re.fullmatch(r".*; (\d+) event\(s\) lost \(.*\); per sink: (.*)", lines[0]).groups()
    logged = {sink: int(n) for sink, n in re.findall(r"(?:^|; )sinks\.([\w-]+) (\d+)", per_sink)}
    during = {sink: sum(after[sink].values()) - sum(before[sink].values()) for sink in ("store", "live")}
    assert logged == during
    assert int(headline) == max(during.values())


# -- (b) a file-size limit, in a child process ---------------------------------------------

CHILD = """
import json, logging, os, resource, signal, sys, threading
sys.path.insert(0, sys.argv[3])
from test_storage_faults import Producer
from runwatch import MonitorConfig, WebMonitor

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
logging.basicConfig(level=logging.WARNING, format="LOG %(name)s %(levelname)s %(message)s")
db = sys.argv[1]
monitor = WebMonitor(MonitorConfig(db_path=db, data_dir=sys.argv[2], web_port=0))
monitor.start_training(run_id="fsize")
producer = Producer(lambda seq: monitor.update_metrics({"seq": seq}))
producer.start()
print(json.dumps({"url": monitor.web_url}), flush=True)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for line in sys.stdin:
    command = line.strip()
    if command == "limit":  # no file may grow past its current size
        sizes = [os.path.getsize(db + suffix) for suffix in ("", "-wal") if os.path.exists(db + suffix)]
        resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes), hard))
        print(json.dumps({"limit": max(sizes)}), flush=True)
    elif command == "unlimit":
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        print(json.dumps({"limit": None}), flush=True)
    elif command == "stop":
        producer.finish()
        flushed = monitor.flush(timeout=30)
        statistics = monitor.statistics()
        monitor.close()
        errors = [repr(e) for e in producer.errors]
        print(json.dumps({"emitted": producer.emitted, "errors": errors, "flushed": flushed,
                          "statistics": statistics}), flush=True)
        break
"""


class Child:
    """The child process: JSON lines on stdout (read by a thread into a queue), commands on stdin."""

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "fsize.db"
        self.process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(self.db), str(tmp / "d"), str(Path(__file__).parent)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        stdout, stderr = self.process.stdout, self.process.stderr
        self._readers = [
            threading.Thread(target=lambda: [self.lines.put(line) for line in stdout], daemon=True),
            threading.Thread(target=lambda: [self.stderr.append(line.rstrip()) for line in stderr], daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def answer(self) -> dict[str, Any]:
        """The next JSON line (bounded wait)."""
        try:
            return json.loads(self.lines.get(timeout=TIMEOUT))
        except queue.Empty:
            raise AssertionError(f"the child did not answer; stderr: {self.stderr[-20:]}") from None

    def command(self, text: str) -> dict[str, Any]:
        """Send one command and return its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self.answer()

    def finish(self) -> int:
        """Wait for the exit (kill if it hangs) and for its output."""
        try:
            code = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(TIMEOUT)
        for reader in self._readers:
            reader.join(TIMEOUT)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code


@pytest.mark.soak
@soak_timeout(40, 300)
def test_a_file_size_limit_degrades_a_child_monitor_which_resumes_when_lifted(tmp_path: Path) -> None:
    """A child WebMonitor past RLIMIT_FSIZE reports degraded, never raises, and stores everything once when lifted."""
    child = Child(tmp_path)
    try:
        url = child.answer()["url"]
        poster = Poster(url)
        poster.start()

        def store() -> dict[str, Any]:
            return health(url)["store"]

        try:
            wait_until(lambda: poster.acked(), "the first acknowledged batch")
            limit = child.command("limit")["limit"]
            wait_until(lambda: store()["health"] == "degraded", "the child's store to report degraded")
            degraded_at = time.monotonic()
            assert health(url)["status"] == "degraded"
            while time.monotonic() - degraded_at < FAULT_SECONDS:
                assert store()["health"] == "degraded", store()
                time.sleep(0.05)  # sampling interval while the fault is held
            error = store()["last_commit_error"]
            child.command("unlimit")
            cleared_at = time.monotonic()
            wait_until(lambda: store()["health"] == "ok", "the child's store to recover")
            recovery = time.monotonic() - cleared_at
        finally:
            poster.finish()
        result = child.command("stop")
    finally:
        code = child.finish()
    assert code == 0, child.stderr[-20:]
    assert result["flushed"] and not result["errors"], result["errors"][:3]
    assert not poster.errors and set(poster.outcomes.values()) == {202}, poster.errors[:3]
    statistics = result["statistics"]
    errors = statistics["components"]["store"]["commit_errors"]  # 0 again after recovery: counted per episode
    records = [line for line in child.stderr if line.startswith("LOG runwatch")]
    failures = [line for line in records if "commit to" in line]
    assert failures and len(records) <= log_bound(2 ** len(failures)), records
    assert any("accepts writes again" in line for line in records)
    assert errors == 0
    counts = check_store(
        tmp_path / "fsize.db", "fsize", result["emitted"], dropped_on_store_path(statistics), poster.acked()
    )
    print(
        f"fsize: limit {limit} bytes, error {error!r}, recovered {recovery:.2f} s after lifting, "
        f"{len(records)} log record(s), {result['emitted']} emitted / {counts['stored']} stored, "
        f"{len(poster.acked())} ingest batches acked"
    )
