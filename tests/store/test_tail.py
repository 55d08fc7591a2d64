"""The store tail: what other writers commit, read back as typed events, once, never this process's own.

Real SQLite files and real pipelines: a "writer" pipeline (in-process source → SQLite sink) stands for a
training script writing the store; a "server" pipeline stores events of its own and tails the same store
into a recording sink, as ``runwatch serve`` does into its websocket hub.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from plugins_for_tests import RecordingSink

from runwatch.events import (
    AlertEvent,
    ExceptionEvent,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
)
from runwatch.exceptions import StoreUnavailable
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.store.ledger import FOREIGN, OWN, PENDING, CommitLedger
from runwatch.store.schema import prepare_database
from runwatch.store.sqlite import SQLiteStore

TIMEOUT = 10
TS = 1_700_000_000.0
RECORDING = f"{RecordingSink.__module__}:RecordingSink"


def writer_config(db: Path) -> dict[str, Any]:
    """A training script's graph: everything it emits goes to the store."""
    return {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"store": {"type": "sqlite", "inputs": ["app"], "path": str(db)}},
    }


def server_config(db: Path, poll: float = 0.01) -> dict[str, Any]:
    """A server's graph: its own events to the store and the live view; the tail to the live view only."""
    return {
        "sources": {
            "app": {"type": "in_process"},
            "tail": {"type": "store_tail", "path": str(db), "poll_interval_seconds": poll},
        },
        "sinks": {
            "store": {"type": "sqlite", "inputs": ["app"], "path": str(db)},
            "live": {"type": RECORDING, "inputs": ["app", "tail"]},
        },
    }


def pipeline(config: dict[str, Any], tmp_path: Path) -> Pipeline:
    """A pipeline whose files stay in tmp_path."""
    return Pipeline(config, context=ComponentContext(db_path=str(tmp_path / "unused.db"), data_dir=tmp_path))


def every_kind(run_id: str) -> list[Any]:
    """One event of each stored kind, NaN and infinities included."""
    return [
        RunLifecycle(run_id, TS, RunTransition.STARTED, config={"lr": 0.1}, metadata={"host": "a"}),
        Metric(run_id, TS + 1, {"loss": 0.5, "nan": math.nan, "inf": math.inf, "ninf": -math.inf}, step=3),
        Metric(run_id, TS + 2, {"loss": 0.25}, step=4, tags={"phase": "eval"}),
        LogEvent(run_id, TS + 3, "checkpoint", "warning", {"path": "/tmp/x", "n": [1, 2]}),
        StatePatch(run_id, TS + 4, {"game": {"level": 2}}),
        ExceptionEvent(run_id, TS + 5, "ValueError", "bad", "tb", "data", "error", "loader"),
        AlertEvent(run_id, TS + 6, "nan_loss", "firing", "critical", 1.0, {"metric": "loss"}, {"summary": "s"}, TS),
        RunLifecycle(run_id, TS + 7, RunTransition.COMPLETED, final_reward=2.5),
    ]


def same(a: Any, b: Any) -> bool:
    """Event equality where NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Metric):
        return (
            (a.run_id, a.timestamp, a.step, a.tags) == (b.run_id, b.timestamp, b.step, b.tags)
            and all(
                (math.isnan(x) and math.isnan(y)) or x == y
                for x, y in zip(a.values.values(), b.values.values(), strict=True)
            )
            and list(a.values) == list(b.values)
        )
    return bool(a == b)


async def emit_and_flush(writer: Pipeline, events: list[Any]) -> None:
    """Hand events to a pipeline and wait until they are committed."""
    for event in events:
        writer.emit(event)
    assert await writer.flush(TIMEOUT)


async def wait_for(predicate: Any) -> None:
    """Poll (bounded) until ``predicate()`` holds: the tail reports progress only in its counters."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await anyio.sleep(0.005)  # poll interval


# -- the ledger (pure) -------------------------------------------------------------------------


def test_ledger_calls_rows_pending_until_settled_then_own() -> None:
    """A row in an unsettled transaction is pending; once committed it is own; other ids are foreign."""
    ledger = CommitLedger()
    entry = ledger.begin()
    entry.ranges.append(("events", 10, 12))
    assert ledger.owner("events", 11) == PENDING
    assert ledger.owner("events", 13) == FOREIGN
    assert ledger.owner("state_history", 11) == FOREIGN
    ledger.settle(entry, committed=True)
    assert ledger.owner("events", 10) == OWN and ledger.owner("events", 12) == OWN


def test_ledger_forgets_a_rolled_back_transaction() -> None:
    """Ids of a transaction that rolled back may be another writer's later: they are foreign again."""
    ledger = CommitLedger()
    entry = ledger.begin()
    entry.ranges.append(("metric_rows", 0, 99))
    entry.heartbeats["r"] = 5.0
    ledger.settle(entry, committed=False)
    assert ledger.owner("metric_rows", 50) == FOREIGN
    assert ledger.heartbeat_owner("r", 5.0) == FOREIGN
    assert len(ledger) == 0


def test_ledger_forgets_what_the_tail_passed() -> None:
    """Settled ranges below the tail's cursors are dropped; ranges above it and unsettled ones stay."""
    ledger = CommitLedger()
    passed, ahead, open_ = ledger.begin(), ledger.begin(), ledger.begin()
    passed.ranges.append(("events", 1, 5))
    ahead.ranges.append(("events", 6, 9))
    open_.ranges.append(("events", 10, 10))
    ledger.settle(passed, committed=True)
    ledger.settle(ahead, committed=True)
    ledger.forget({"events": 8}, ledger.mark())
    assert len(ledger) == 2
    assert ledger.owner("events", 7) == OWN and ledger.owner("events", 10) == PENDING


def test_ledger_keeps_heartbeats_a_read_may_not_have_seen() -> None:
    """An entry of heartbeats only is forgotten after a read that began once it was committed, not before."""
    ledger = CommitLedger()
    before_commit = ledger.mark()
    entry = ledger.begin()
    entry.heartbeats["r"] = 3.0
    ledger.settle(entry, committed=True)
    ledger.forget({}, before_commit)  # that read began before the commit: it may not have seen the heartbeat
    assert ledger.heartbeat_owner("r", 3.0) == OWN
    ledger.forget({}, ledger.mark())
    assert len(ledger) == 0


def test_ledger_knows_its_own_heartbeat_values() -> None:
    """A run's heartbeat at the value this process wrote is own; another value is another writer's."""
    ledger = CommitLedger()
    entry = ledger.begin()
    entry.heartbeats["r"] = 7.5
    assert ledger.heartbeat_owner("r", 7.5) == PENDING
    ledger.settle(entry, committed=True)
    assert ledger.heartbeat_owner("r", 7.5) == OWN
    assert ledger.heartbeat_owner("r", 8.0) == FOREIGN


# -- the tail over a real store ------------------------------------------------------------------


async def test_tail_reads_back_every_kind_as_it_was_written(tmp_path: Path) -> None:
    """Each stored event comes back equal to what the writer emitted (NaN, ±Inf, step, tags, payloads)."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    tail = SQLiteStore(db).open_tail()
    tail.open()
    events = every_kind("r1")
    async with pipeline(writer_config(db), tmp_path) as writer:
        await emit_and_flush(writer, events)
    read = tail.read()
    got = sorted((row.event for rows in read.rows.values() for row in rows), key=lambda e: e.timestamp)
    assert len(got) == len(events)
    assert all(same(a, b) for a, b in zip(got, events, strict=True)), got
    assert read.undecodable == 0 and not read.more
    tail.close()


async def test_tail_starts_at_the_end_of_the_store(tmp_path: Path) -> None:
    """What was committed before the tail opened is history, not live: it is not read."""
    db = tmp_path / "store.db"
    async with pipeline(writer_config(db), tmp_path) as writer:
        await emit_and_flush(writer, every_kind("old"))
        tail = SQLiteStore(db).open_tail()
        tail.open()
        await emit_and_flush(writer, [Metric("new", TS, {"x": 1.0}, step=0)])
    read = tail.read()
    assert [row.event.run_id for rows in read.rows.values() for row in rows] == ["new"]
    tail.close()


async def test_a_full_window_asks_for_more_and_nothing_is_read_twice(tmp_path: Path) -> None:
    """With a window of 7 rows, 50 metric rows come back in 8 reads, each exactly once, in order."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    tail = SQLiteStore(db).open_tail(max_rows=7)
    tail.open()
    async with pipeline(writer_config(db), tmp_path) as writer:
        await emit_and_flush(writer, [Metric("r", TS + i, {"i": float(i)}, step=i) for i in range(50)])
    steps: list[int] = []
    reads = 0
    while True:
        read = tail.read()
        reads += 1
        steps += [row.event.step for row in read.rows["metric_rows"]]
        for table, end in read.ends.items():
            tail.advance(table, end)
        if not read.more:
            break
    assert steps == list(range(50))
    assert reads == 8
    tail.close()


async def test_heartbeats_come_back_as_progress_once(tmp_path: Path) -> None:
    """A live run's newer heartbeat is read with its counters; once taken it is not read again."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    tail = SQLiteStore(db).open_tail()
    tail.open()
    async with pipeline(writer_config(db), tmp_path) as writer:
        await emit_and_flush(
            writer,
            [
                RunLifecycle("r", TS, RunTransition.STARTED),
                Heartbeat("r", TS + 1, {"total_steps": 12, "total_episodes": 2}),
            ],
        )
    read = tail.read()
    assert [tuple(progress) for progress in read.progress] == [("r", TS + 1, 12, 2)]
    tail.took_heartbeat("r", TS + 1)
    assert tail.read().progress == []
    tail.close()


async def test_changed_only_when_another_connection_commits(tmp_path: Path) -> None:
    """After a read, the tail sees no change while nothing is committed, and a change after another's commit."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    tail = SQLiteStore(db).open_tail()
    tail.open()
    assert tail.changed()  # never read yet
    tail.read()  # the tail's own reads change nothing
    assert not tail.changed()
    async with pipeline(writer_config(db), tmp_path) as writer:
        await emit_and_flush(writer, [Metric("r", TS, {"x": 1.0})])
    assert tail.changed()
    tail.read()
    assert not tail.changed()
    tail.close()


def test_opening_a_store_that_does_not_exist_fails_without_creating_it(tmp_path: Path) -> None:
    """The tail never creates a store: a missing file is an error (the source retries later)."""
    tail = SQLiteStore(tmp_path / "missing.db").open_tail()
    with pytest.raises(StoreUnavailable):
        tail.open()
    assert not (tmp_path / "missing.db").exists()


# -- the source in a pipeline ---------------------------------------------------------------------


async def test_source_sends_other_writers_events_once_and_never_its_own(tmp_path: Path) -> None:
    """The server's live view gets the writer's events once, and its own stored events once (not back via the tail)."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    async with pipeline(server_config(db), tmp_path) as server, pipeline(writer_config(db), tmp_path) as writer:
        live = server.component("live")
        assert isinstance(live, RecordingSink)
        own = [Metric("server-run", TS + i, {"own": float(i)}, step=i) for i in range(20)]
        own.append(LogEvent("server-run", TS + 30, "note", data={"a": 1}))
        foreign = [Metric("script-run", TS + i, {"loss": float(i)}, step=i) for i in range(20)]
        for a, b in zip(own, foreign, strict=False):
            server.emit(a)
            writer.emit(b)
        server.emit(own[-1])
        assert await server.flush(TIMEOUT) and await writer.flush(TIMEOUT)
        await wait_for(lambda: sum(e.run_id == "script-run" for e in live.events) >= 20)
        # A few more polls: anything of the server's own would have come back by now.
        tail = server.component("tail")
        polls = tail.statistics()["polls"]
        await wait_for(lambda: tail.statistics()["polls"] >= polls + 3)
        by_run: dict[str, list[Any]] = {}
        for event in live.events:
            by_run.setdefault(event.run_id, []).append(event)
        assert by_run["script-run"] == foreign
        assert by_run["server-run"] == own  # once: from its own path only
        assert tail.statistics()["own_rows_skipped"] == 21
        assert tail.statistics()["tailed_events"] == 20


async def test_source_sends_another_writers_heartbeats_but_not_its_own(tmp_path: Path) -> None:
    """A heartbeat committed by another process reaches the live view; the server's own heartbeat does not come back."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    async with pipeline(server_config(db), tmp_path) as server, pipeline(writer_config(db), tmp_path) as writer:
        live = server.component("live")
        for source, run_id in ((server, "mine"), (writer, "theirs")):
            await emit_and_flush(
                source,
                [RunLifecycle(run_id, TS, RunTransition.STARTED), Heartbeat(run_id, TS + 1, {"total_steps": 3})],
            )
        await wait_for(lambda: any(isinstance(e, Heartbeat) and e.run_id == "theirs" for e in live.events))
        tail = server.component("tail")
        polls = tail.statistics()["polls"]
        await wait_for(lambda: tail.statistics()["polls"] >= polls + 3)
        beats = [(e.run_id, e.timestamp, e.counters) for e in live.events if isinstance(e, Heartbeat)]
        assert beats.count(("mine", TS + 1, {"total_steps": 3})) == 1  # its own path only
        assert ("theirs", TS + 1, {"total_steps": 3, "total_episodes": 0}) in beats


async def test_rows_of_an_unsettled_own_transaction_wait_for_its_outcome(tmp_path: Path) -> None:
    """Rows the ledger holds as pending are sent once the transaction is known to have rolled back (not skipped)."""
    db = tmp_path / "store.db"
    prepare_database(str(db))
    config = server_config(db)
    config["sinks"]["live"]["inputs"] = ["tail"]
    async with pipeline(config, tmp_path) as server, pipeline(writer_config(db), tmp_path) as writer:
        live = server.component("live")
        tail = server.component("tail")
        ledger = tail.ledger
        # Pretend the server's writer is committing the ids the other writer is about to get.
        fake = ledger.begin()
        fake.ranges.append(("events", 1, 1_000))
        await emit_and_flush(writer, [LogEvent("theirs", TS, "hello")])
        polls = tail.statistics()["polls"]
        await wait_for(lambda: tail.statistics()["polls"] >= polls + 3)
        assert live.events == []  # held back while pending
        ledger.settle(fake, committed=False)
        await wait_for(lambda: len(live.events) == 1)
        assert live.events == [LogEvent("theirs", TS, "hello")]
