"""Tests for runwatch.pipeline.runtime: a real graph on a real loop, with SQLite in tmp_path."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from chunk_helpers import stored_calls, stored_steps
from helpers import context
from plugins_for_tests import BlockingSink, FailingStage, GatedHub, GatedSink, RecordingSink, RecordingStage

from runwatch.events import Heartbeat, LogEvent, Metric
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline

# Guards every await that could hang; nothing here legitimately takes this long.
TIMEOUT = 10
# Long enough that time-driven commits never happen during a test: only
# flush barriers and shutdown commit.
NEVER = 3600.0
TS = 1_700_000_000.0

RECORDING = f"{RecordingSink.__module__}:RecordingSink"
FAILING = f"{FailingStage.__module__}:FailingStage"
GATED = f"{GatedSink.__module__}:GatedSink"
BLOCKING = f"{BlockingSink.__module__}:BlockingSink"
GATED_HUB = f"{GatedHub.__module__}:GatedHub"
RECORDING_STAGE = f"{RecordingStage.__module__}:RecordingStage"


def metric(step: int, run_id: str = "run-1") -> Metric:
    """One metric event for ``step``."""
    return Metric(run_id, TS + step, {"loss": 1.0 / (step + 1), "train": {"acc": step / 100}}, step=step)


def sqlite_config(db: Path, **sink_options: Any) -> dict[str, Any]:
    """The in-process source feeding the SQLite store at ``db``; commits only on flush or stop."""
    return {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "store": {
                "type": "sqlite",
                "inputs": ["app"],
                "path": str(db),
                "flush_interval_seconds": NEVER,
                **sink_options,
            }
        },
    }


def make_pipeline(config: dict[str, Any], tmp_path: Path, shutdown_timeout_seconds: float = 5.0) -> Pipeline:
    """A pipeline whose files stay in tmp_path; its stop deadline is shorter than TIMEOUT."""
    return Pipeline(config, context=context(tmp_path), shutdown_timeout_seconds=shutdown_timeout_seconds)


async def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Run one query on a fresh connection, off the event loop."""

    def run() -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(db)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    with anyio.fail_after(TIMEOUT):
        return await anyio.to_thread.run_sync(run)


async def in_thread(fn: Any) -> Any:
    """Run a synchronous producer in a real worker thread, guarded by a timeout."""
    with anyio.fail_after(TIMEOUT):
        return await anyio.to_thread.run_sync(fn)


def stats_of(pipeline: Pipeline, component_id: str) -> dict[str, Any]:
    """The runner's statistics entry for one component."""
    result: dict[str, Any] = pipeline.statistics()["components"][component_id]
    return result


# -- SQLite: flush and stop ---------------------------------------------------------------


async def test_emit_from_a_thread_then_flush_commits_rows(tmp_path: Path) -> None:
    """Events emitted from a producer thread are committed to SQLite by the time flush() returns."""
    db = tmp_path / "runs.db"
    count = 200
    async with make_pipeline(sqlite_config(db), tmp_path) as pipeline:
        await in_thread(lambda: [pipeline.emit(metric(step)) for step in range(count)])
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        # The store only commits on flush here, so these rows prove flush waited for the commit.
        assert stored_calls(db) == count
        assert await query(db, "SELECT run_id FROM runs") == [("run-1",)]
        steps = stored_steps(db, "run-1")
        assert (min(steps), max(steps)) == (0, count - 1)
        assert stats_of(pipeline, "store")["committed_events"] == count


async def test_flush_from_the_producer_thread_returns_after_commit(tmp_path: Path) -> None:
    """The synchronous flush a training thread calls returns only once its events are committed."""
    db = tmp_path / "runs.db"
    async with make_pipeline(sqlite_config(db), tmp_path) as pipeline:
        bridge = pipeline.intake.bridge

        def produce() -> list[int]:
            seen = []
            for round_ in range(3):
                for step in range(round_ * 10, round_ * 10 + 10):
                    pipeline.emit(metric(step))
                assert bridge.flush(timeout=TIMEOUT) is True
                seen.append(stored_calls(db))
            return seen

        assert await in_thread(produce) == [10, 20, 30]


async def test_flush_with_nothing_emitted_completes(tmp_path: Path) -> None:
    """flush() on an idle pipeline returns True without any event in flight."""
    async with make_pipeline(sqlite_config(tmp_path / "runs.db"), tmp_path) as pipeline:
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True


async def test_stop_drains_every_queue_into_the_store(tmp_path: Path) -> None:
    """Leaving the context without flush still commits every emitted event before stop returns."""
    db = tmp_path / "runs.db"
    count = 500
    pipeline = make_pipeline(sqlite_config(db), tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with pipeline:

            def produce() -> None:
                for step in range(count):
                    pipeline.emit(metric(step))
                pipeline.emit(LogEvent("run-1", TS, "episode_end", data={"reward": 1.0}))

            await in_thread(produce)
    assert not pipeline.running
    assert stored_calls(db) == count
    assert await query(db, "SELECT count(*) FROM events WHERE type = 'episode_end'") == [(1,)]
    stats = pipeline.statistics()
    assert stats["running"] is False
    assert stats["components"]["store"]["dropped_events"] == {}
    assert stats["components"]["store"]["buffer"]["dropped_events"] == {}


async def test_flush_after_stop_returns_false(tmp_path: Path) -> None:
    """flush() on a stopped pipeline reports False instead of waiting."""
    pipeline = make_pipeline(sqlite_config(tmp_path / "runs.db"), tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with pipeline:
            assert await pipeline.flush(timeout=TIMEOUT) is True
        assert await pipeline.flush(timeout=NEVER) is False


async def test_stop_right_after_start_is_prompt(tmp_path: Path) -> None:
    """Stopping a pipeline before its source task has run still drains and returns without the deadline."""
    db = tmp_path / "runs.db"
    deadline = 1.0
    pipeline = make_pipeline(sqlite_config(db), tmp_path, shutdown_timeout_seconds=deadline)
    with anyio.fail_after(TIMEOUT):
        async with pipeline:
            pipeline.emit(metric(0))  # no await: the source task has not started yet
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert elapsed < deadline, f"stop needed its whole {deadline} s deadline"
    assert stored_calls(db) == 1


# -- failures inside components -----------------------------------------------------------------


async def test_a_stage_that_raises_is_counted_and_the_pipeline_keeps_running(tmp_path: Path) -> None:
    """Batches a stage raises on are dropped and counted; other batches, flushes and the producer are unaffected."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"flaky": {"type": FAILING, "inputs": ["app"]}},
        "sinks": {"rec": {"type": RECORDING, "inputs": ["flaky"]}},
    }
    kinds = ["ok", "boom", "ok", "ok", "boom", "ok", "boom", "ok"]
    async with make_pipeline(config, tmp_path) as pipeline:
        bridge = pipeline.intake.bridge

        def produce() -> list[bool]:
            # A flush after each event makes each event its own batch, so the counts are exact.
            results = []
            for index, kind in enumerate(kinds):
                pipeline.emit(LogEvent("run-1", TS + index, kind))
                results.append(bridge.flush(timeout=TIMEOUT))
            return results

        assert await in_thread(produce) == [True] * len(kinds)
        recorder = pipeline.component("rec")
        assert isinstance(recorder, RecordingSink)
        assert [event.type for event in recorder.events] == ["ok"] * kinds.count("ok")
        flaky = stats_of(pipeline, "flaky")
        assert flaky["errors"] == kinds.count("boom")
        assert flaky["dropped_events"] == {"component_error": kinds.count("boom")}
        assert "RuntimeError" in flaky["last_error"]
        assert flaky["failed"] is False
        assert pipeline.running
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True


async def test_a_stuck_sink_cannot_hold_stop_past_the_deadline(tmp_path: Path) -> None:
    """With a sink that never returns, stop gives up after shutdown_timeout_seconds and counts the drops."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"stuck": {"type": BLOCKING, "inputs": ["app"]}},
    }
    deadline = 0.2
    pipeline = make_pipeline(config, tmp_path, shutdown_timeout_seconds=deadline)
    with anyio.fail_after(TIMEOUT):
        async with pipeline:
            sink = pipeline.component("stuck")
            assert isinstance(sink, BlockingSink)
            pipeline.emit(Heartbeat("run-1", TS))
            await sink.entered.wait()  # the first batch is stuck inside write
            for index in range(5):
                pipeline.emit(Heartbeat("run-1", TS + index))
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert elapsed >= deadline
    assert elapsed < deadline + 5, "stop returned soon after its deadline"
    assert sink.cancelled
    assert sink.closed
    buffer = stats_of(pipeline, "stuck")["buffer"]
    assert buffer["dropped_events"] == {"shutdown_timeout": 5}
    assert buffer["received_events"] == buffer["delivered_events"] + buffer["buffered_events"] + 5


async def test_a_batch_cancelled_inside_a_stuck_sink_is_counted_as_dropped(tmp_path: Path) -> None:
    """Every emitted event is stored or counted dropped, including the batch cancelled inside write."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"stuck": {"type": BLOCKING, "inputs": ["app"]}},
    }
    pipeline = make_pipeline(config, tmp_path, shutdown_timeout_seconds=0.1)
    with anyio.fail_after(TIMEOUT):
        async with pipeline:
            sink = pipeline.component("stuck")
            assert isinstance(sink, BlockingSink)
            pipeline.emit(Heartbeat("run-1", TS))
            await sink.entered.wait()
            for index in range(5):
                pipeline.emit(Heartbeat("run-1", TS + index))
    stuck = stats_of(pipeline, "stuck")
    dropped = sum(stuck["dropped_events"].values()) + sum(stuck["buffer"]["dropped_events"].values())
    assert len(sink.events) + dropped == 6


async def test_a_batch_a_sink_is_writing_shows_as_in_flight_until_it_returns(tmp_path: Path) -> None:
    """in_flight_events counts the batch handed to a sink until its write returns, then drops to 0."""
    config = {"sources": {"app": {"type": "in_process"}}, "sinks": {"slow": {"type": GATED, "inputs": ["app"]}}}
    async with make_pipeline(config, tmp_path) as pipeline:
        sink = pipeline.component("slow")
        assert isinstance(sink, GatedSink)
        for step in range(7):
            pipeline.emit(metric(step))
        with anyio.fail_after(TIMEOUT):
            await sink.entered.wait()
        held = stats_of(pipeline, "slow")
        assert held["in_flight_events"] > 0
        assert held["in_flight_events"] + held["buffer"]["buffered_events"] == 7
        sink.gate.set()
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        assert stats_of(pipeline, "slow")["in_flight_events"] == 0
        assert len(sink.events) == 7


async def test_drop_newest_on_a_slow_sink_counts_every_event(tmp_path: Path) -> None:
    """A small drop_newest buffer before a slow sink drops events, and sent == delivered + dropped + buffered."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "slow": {
                "type": GATED,
                "inputs": ["app"],
                "buffer": {"max_events": 5, "when_full": "drop_newest"},
            }
        },
    }
    async with make_pipeline(config, tmp_path) as pipeline:
        sink = pipeline.component("slow")
        assert isinstance(sink, GatedSink)
        # All 20 are queued before the source runs, so they reach the buffer as one batch of 20.
        for step in range(20):
            pipeline.emit(metric(step))
        with anyio.fail_after(TIMEOUT):
            await sink.entered.wait()  # the sink holds the first 5 and is stuck behind its gate
        for step in range(20, 40):
            pipeline.emit(metric(step))
        sink.gate.set()
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        sent = stats_of(pipeline, "app")["sent_events"]
        buffer = stats_of(pipeline, "slow")["buffer"]
    assert sent == 40
    assert buffer["received_events"] == sent
    dropped = buffer["dropped_events"].get("overflow", 0)
    assert set(buffer["dropped_events"]) == {"overflow"}
    assert dropped >= 15, "the first batch of 20 could keep only 5"
    assert sent == buffer["delivered_events"] + dropped + buffer["buffered_events"]
    assert len(sink.events) == buffer["delivered_events"]
    steps = [event.step for event in sink.events]
    assert steps[:5] == [0, 1, 2, 3, 4], "drop_newest kept the oldest"
    assert steps == sorted(steps)


# -- graph shapes ---------------------------------------------------------------------------------


async def test_fan_out_delivers_everything_to_both_sinks(tmp_path: Path) -> None:
    """Two sinks on one source each receive every event, in order, and a flush waits for both."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "left": {"type": RECORDING, "inputs": ["app"]},
            "right": {"type": RECORDING, "inputs": ["app"], "buffer": {"max_events": 3}},
        },
    }
    count = 300
    async with make_pipeline(config, tmp_path) as pipeline:
        left, right = pipeline.component("left"), pipeline.component("right")
        assert isinstance(left, RecordingSink) and isinstance(right, RecordingSink)
        assert left.started and right.started
        await in_thread(lambda: [pipeline.emit(metric(step)) for step in range(count)])
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        assert [event.step for event in left.events] == list(range(count))
        assert [event.step for event in right.events] == list(range(count))
        assert left.flushes >= 1 and right.flushes >= 1
        assert all(len(batch) <= 3 for batch in right.batches), "a buffer's bound caps its batches"
    assert left.closed and right.closed
    stats = pipeline.statistics()["components"]
    assert stats["app"]["sent_events"] == count
    assert stats["left"]["recorded_events"] == stats["right"]["recorded_events"] == count


async def test_fan_in_from_two_stages_flushes_through_both_paths(tmp_path: Path) -> None:
    """A sink fed by two stages of one source gets each event once per path, and flush waits for both paths."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {
            "metrics": {"type": "filter", "inputs": ["app"], "kinds": ["metric"]},
            "logs": {"type": "filter", "inputs": ["app"], "kinds": ["log"]},
        },
        "sinks": {"rec": {"type": RECORDING, "inputs": ["metrics", "logs"]}},
    }
    async with make_pipeline(config, tmp_path) as pipeline:
        pipeline.emit(metric(0))
        pipeline.emit(LogEvent("run-1", TS, "note"))
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        recorder = pipeline.component("rec")
        assert isinstance(recorder, RecordingSink)
        assert sorted(event.kind for event in recorder.events) == ["log", "metric"]


async def test_filter_stage_keeps_matching_kinds_and_metrics(tmp_path: Path) -> None:
    """The filter keeps only the listed kinds and, in metrics, only the values whose names match."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {
            "keep": {"type": "filter", "inputs": ["app"], "kinds": ["metric", "log"], "metrics": ["train/*"]},
        },
        "sinks": {"rec": {"type": RECORDING, "inputs": ["keep"]}},
    }
    async with make_pipeline(config, tmp_path) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"train": {"loss": 0.5, "acc": 0.9}, "val": {"loss": 0.7}}, step=1))
        pipeline.emit(Metric("run-1", TS, {"val": {"loss": 0.6}}, step=2))  # no matching value: dropped
        pipeline.emit(LogEvent("run-1", TS, "note"))
        pipeline.emit(Heartbeat("run-1", TS))  # kind not kept
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        recorder = pipeline.component("rec")
        assert isinstance(recorder, RecordingSink)
        kept = recorder.events
        assert [event.kind for event in kept] == ["metric", "log"]
        assert kept[0] == Metric("run-1", TS, {"train/loss": 0.5, "train/acc": 0.9}, step=1)
        assert type(kept[0]) is Metric
        assert stats_of(pipeline, "keep")["filtered_events"] == 2


async def test_filter_stage_keeps_matching_runs(tmp_path: Path) -> None:
    """The filter's run globs keep only the events of matching runs."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"keep": {"type": "filter", "inputs": ["app"], "runs": ["exp-*"]}},
        "sinks": {"rec": {"type": RECORDING, "inputs": ["keep"]}},
    }
    async with make_pipeline(config, tmp_path) as pipeline:
        for run_id in ("exp-1", "debug", "exp-2"):
            pipeline.emit(Heartbeat(run_id, TS))
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        recorder = pipeline.component("rec")
        assert isinstance(recorder, RecordingSink)
        assert [event.run_id for event in recorder.events] == ["exp-1", "exp-2"]


async def test_statistics_describe_every_component(tmp_path: Path) -> None:
    """statistics() lists each component's role, type, counters and its buffer."""
    async with make_pipeline(sqlite_config(tmp_path / "runs.db"), tmp_path) as pipeline:
        pipeline.emit(metric(0))
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(timeout=TIMEOUT) is True
        stats = pipeline.statistics()
    assert stats["running"] is True
    app, store = stats["components"]["app"], stats["components"]["store"]
    assert (app["role"], app["type"]) == ("source", "in_process")
    assert app["intake"]["accepted_events"] == 1
    assert (store["role"], store["type"]) == ("sink", "sqlite")
    assert store["processed_events"] == 1
    assert store["buffer"]["delivered_events"] == 1
    assert store["errors"] == 0
    assert store["flushes"] >= 1


async def test_a_component_that_fails_to_start_closes_the_others(tmp_path: Path) -> None:
    """If a component's start raises, start raises it and the components already opened are closed."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "rec": {"type": RECORDING, "inputs": ["app"]},
            # A directory where the database file should be: sqlite cannot open it.
            "store": {"type": "sqlite", "inputs": ["app"], "path": str(tmp_path)},
        },
    }
    pipeline = make_pipeline(config, tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - whatever sqlite raises for a directory
        with anyio.fail_after(TIMEOUT):
            await pipeline.start()
    assert not pipeline.running
    recorder = pipeline.component("rec")
    assert isinstance(recorder, RecordingSink)
    assert recorder.started == recorder.closed


# -- live views are off the barrier path ------------------------------------------------------


def store_and_stuck_hub(db: Path) -> dict[str, Any]:
    """In-process and ingest sources into the SQLite store and a websocket hub stuck in its first write."""
    return {
        "sources": {"app": {"type": "in_process"}, "ingest": {"type": "ingest"}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": ["app", "ingest"], "path": str(db), "flush_interval_seconds": NEVER},
            "live": {
                "type": GATED_HUB,
                "inputs": ["app", "ingest"],
                "buffer": {"max_events": 100, "when_full": "drop_oldest"},
            },
        },
    }


async def test_flush_and_ingest_acknowledgement_never_wait_for_a_stuck_websocket_hub(tmp_path: Path) -> None:
    """With the hub stuck, flush() and an ingest batch still complete once the store committed; the hub
    only falls behind (dropping its own oldest events, counted), and catches up once it moves again."""
    db = tmp_path / "hub.db"
    async with make_pipeline(store_and_stuck_hub(db), tmp_path) as pipeline:
        hub = pipeline.component("live")
        try:
            for step in range(300):
                pipeline.emit(metric(step))
            with anyio.fail_after(TIMEOUT):
                assert await pipeline.flush()
                result = await pipeline.component("ingest").submit([metric(0, "remote")], "b0")
            assert hub.entered.is_set() and hub.written_events == 0, "the hub was stuck in its first write"
            assert result.accepted == 1 and not result.duplicate
            assert stored_calls(db) == 301
            # A barrier that asks for live views too waits for the hub (a /ws subscriber's own start).
            assert not await pipeline.flush(timeout=0.2, live=True)
        finally:
            hub.gate.set()
        with anyio.fail_after(TIMEOUT):
            assert await pipeline.flush(live=True)
        buffer = stats_of(pipeline, "live")["buffer"]
    assert buffer["dropped_events"].get("overflow", 0) > 0, "the stuck hub dropped for itself"
    assert hub.written_events + buffer["dropped_events"]["overflow"] == buffer["received_events"]


# -- internal receipts ------------------------------------------------------------------------------


async def test_plugins_never_see_ingest_receipts_and_ingested_batches_still_commit_exactly_once(
    tmp_path: Path,
) -> None:
    """A plugin stage and a plugin sink downstream of ingest get only public events; the batch's receipt
    still reaches the store behind the stage's events, so the batch is stored once and a retry is a duplicate."""
    from runwatch.events import IngestReceipt

    db = tmp_path / "store.db"
    config = {
        "sources": {"ingest": {"type": "ingest"}},
        "stages": {"plugin": {"type": RECORDING_STAGE, "inputs": ["ingest"]}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": ["plugin"], "path": str(db)},
            "recorder": {"type": RECORDING, "inputs": ["ingest"]},
        },
    }
    async with Pipeline(config, context=ComponentContext(db_path=str(db))) as pipeline:
        source = pipeline.component("ingest")
        with anyio.fail_after(TIMEOUT):
            stored = await source.submit([metric(0), metric(1)], "b1")  # type: ignore[attr-defined]
            again = await source.submit([metric(0), metric(1)], "b1")  # type: ignore[attr-defined]
        seen = [*pipeline.component("plugin").events, *pipeline.component("recorder").events]  # type: ignore[attr-defined]
    assert (stored.accepted, stored.duplicate, again.duplicate) == (2, False, True)
    assert [type(event) for event in seen] == [Metric] * 4
    assert not any(type(event) is IngestReceipt for event in seen)
    with sqlite3.connect(db) as connection:
        assert stored_calls(db) == 2
        assert connection.execute("SELECT count(*) FROM ingest_batches").fetchone() == (1,)
