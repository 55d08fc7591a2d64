"""Tests for runwatch.stages.liveness: the pure tracker without a loop, the store mapping, the stage in a pipeline."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from plugins_for_tests import RecordingSink

from runwatch.events import AlertEvent, Heartbeat, LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from runwatch.exceptions import ConfigError
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.config import load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.stages.liveness import LivenessTracker, StoredRun, Transition, transition_event
from runwatch.store.encode import LIVENESS_STATUS, BatchEncoder

T0 = 1_700_000_000.0
TIMEOUT = 10  # guards every wait; nothing here legitimately takes this long


def started(run_id: str = "r", ts: float = T0, **metadata: Any) -> RunLifecycle:
    """A started lifecycle event, with metadata when given."""
    return RunLifecycle(run_id, ts, RunTransition.STARTED, metadata=metadata or None)


def tracker(**options: Any) -> LivenessTracker:
    """A tracker with the default 60 s / 300 s limits unless overridden."""
    return LivenessTracker(**options)


def kinds(transitions: list[Transition]) -> list[tuple[str, str]]:
    """(run id, new status) of each transition."""
    return [(t.run_id, t.status) for t in transitions]


# -- pure core: heartbeat mode -------------------------------------------------------------------


def test_silent_run_is_hung_after_the_timeout_and_not_before() -> None:
    """A run whose last heartbeat is older than 60 s becomes hung, once."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)

    assert watch.check(T0 + 60) == []
    changes = watch.check(T0 + 61)
    assert kinds(changes) == [("r", "hung")]
    assert changes[0].event_type == "application_appears_hung"
    assert changes[0].previous_status == "running"
    assert changes[0].silent_seconds == pytest.approx(61) and changes[0].limit_seconds == 60
    assert watch.check(T0 + 62) == []


def test_a_run_that_never_heartbeated_is_not_watched_in_heartbeat_mode() -> None:
    """Without a first heartbeat, neither silence nor other events make a run hung."""
    watch = tracker()
    watch.observe([started(), Metric("r", T0, {"x": 1.0}), LogEvent("r", T0, "note")], T0)

    assert watch.check(T0 + 10_000) == []


def test_a_run_whose_own_signal_is_any_event_is_watched_from_its_start_without_heartbeats() -> None:
    """liveness_signal="any_event" in a run's start (ingest's own runs) arms it at once: any event is a sign of
    life, and silence makes it hung, then crashed, even in heartbeat mode."""
    watch = tracker()
    watch.observe([started("own", liveness_signal="any_event"), started("plain")], T0)
    watch.observe([Metric("own", T0 + 50, {"x": 1.0}), Metric("plain", T0 + 50, {"x": 1.0})], T0 + 50)

    assert watch.check(T0 + 100) == []
    assert kinds(watch.check(T0 + 111)) == [("own", "hung")]
    assert kinds(watch.observe([LogEvent("own", T0 + 120, "note")], T0 + 120)) == [("own", "running")]
    assert kinds(watch.check(T0 + 421)) == [("own", "crashed")]


def test_a_run_whose_own_signal_is_none_is_never_judged() -> None:
    """liveness_signal="none" (datacat's sessions: their protocol judges them) leaves a run unwatched: no
    verdict however long it is silent after its heartbeats, in either mode, even when the store lists it."""
    for signal in ("heartbeat", "any_event"):
        watch = tracker(signal=signal)
        watch.observe([started("dc", liveness_signal="none"), Heartbeat("dc", T0), Metric("dc", T0, {"x": 1.0})], T0)
        watch.observe([LogEvent("dc", T0, "application_appears_hung")], T0)  # its own client's, not a verdict
        watch.refresh([StoredRun("dc", "running", T0, T0, None, watched=False)], T0 + 1, watch_new=True)

        assert watch.check(T0 + 100_000) == []
        assert watch.run_ids == [] and watch.status("dc") is None


def test_a_run_the_store_says_is_unwatched_is_forgotten() -> None:
    """A run watched from its events (its start unseen) is dropped once the store says its protocol judges it."""
    watch = tracker()
    watch.observe([Heartbeat("dc", T0)], T0)
    assert watch.run_ids == ["dc"]

    watch.refresh([StoredRun("dc", "running", T0, T0, None, watched=False)], T0 + 1)

    assert watch.check(T0 + 100_000) == [] and watch.run_ids == []


def test_heartbeat_after_hung_recovers_at_once() -> None:
    """A hung run that heartbeats again is recovered by the batch carrying the heartbeat."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 100)

    changes = watch.observe([Heartbeat("r", T0 + 110)], T0 + 110)

    assert kinds(changes) == [("r", "running")]
    assert changes[0].event_type == "application_recovered" and changes[0].previous_status == "hung"
    assert watch.status("r") == "running"
    assert watch.check(T0 + 120) == []


def test_a_stale_heartbeat_does_not_recover() -> None:
    """A heartbeat stamped long ago (a late delivery) is no proof of life now."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 100)

    assert watch.observe([Heartbeat("r", T0 + 10)], T0 + 100) == []
    assert watch.status("r") == "hung"


def test_silent_past_the_crash_limit_is_crashed() -> None:
    """Past 300 s a hung run is crashed; a run first checked that late goes straight to crashed."""
    watch = tracker()
    watch.observe([started("a"), Heartbeat("a", T0), started("b"), Heartbeat("b", T0)], T0)
    assert kinds(watch.check(T0 + 100)) == [("a", "hung"), ("b", "hung")]
    assert watch.check(T0 + 300) == []

    changes = watch.check(T0 + 301)

    assert kinds(changes) == [("a", "crashed"), ("b", "crashed")]
    assert changes[0].event_type == "application_crashed" and changes[0].previous_status == "hung"
    late = tracker()
    late.observe([started(), Heartbeat("r", T0)], T0)
    assert [(t.previous_status, t.status) for t in late.check(T0 + 500)] == [("running", "crashed")]


def test_crashed_run_that_heartbeats_again_recovers() -> None:
    """A crashed run is still watched: a fresh heartbeat brings it back to running."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 1000)

    changes = watch.observe([Heartbeat("r", T0 + 1001)], T0 + 1001)

    assert [(t.previous_status, t.status) for t in changes] == [("crashed", "running")]


def test_a_run_sets_its_own_timeout_in_its_started_metadata() -> None:
    """heartbeat_timeout_seconds in the started metadata overrides the default for that run only."""
    watch = tracker()
    watch.observe([started("quick", heartbeat_timeout_seconds=5), Heartbeat("quick", T0)], T0)
    watch.observe([started("slow"), Heartbeat("slow", T0)], T0)

    assert kinds(watch.check(T0 + 6)) == [("quick", "hung")]


def test_a_timeout_longer_than_the_crash_limit_raises_the_crash_limit() -> None:
    """A run whose own timeout exceeds crash_timeout_seconds is not crashed before it is even hung."""
    watch = tracker()
    watch.observe([started(heartbeat_timeout_seconds=600), Heartbeat("r", T0)], T0)

    assert watch.check(T0 + 400) == []
    assert kinds(watch.check(T0 + 601)) == [("r", "crashed")]


@pytest.mark.parametrize(
    "transition",
    [
        pytest.param(RunTransition.PAUSED, id="paused"),
        pytest.param(RunTransition.COMPLETED, id="completed"),
        pytest.param(RunTransition.FAILED, id="failed"),
    ],
)
def test_paused_and_ended_runs_are_not_watched(transition: RunTransition) -> None:
    """After pause, completion or failure, silence is expected and never flagged."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0), RunLifecycle("r", T0 + 1, transition)], T0 + 1)

    assert watch.check(T0 + 10_000) == []
    assert watch.status("r") is None


def test_resumed_run_waits_for_a_fresh_heartbeat() -> None:
    """A resumed run is not judged on the heartbeats from before its pause."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0), RunLifecycle("r", T0 + 1, RunTransition.PAUSED)], T0 + 1)
    watch.observe([RunLifecycle("r", T0 + 500, RunTransition.RESUMED)], T0 + 500)

    assert watch.check(T0 + 501) == []
    watch.observe([Heartbeat("r", T0 + 502)], T0 + 502)
    assert kinds(watch.check(T0 + 563)) == [("r", "hung")]


def test_future_timestamps_are_capped_at_now() -> None:
    """A producer clock running ahead cannot keep a run alive forever."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0 + 3600)], T0)

    assert watch.last_signal("r") == T0
    assert kinds(watch.check(T0 + 61)) == [("r", "hung")]


def test_verdicts_from_elsewhere_are_taken_without_repeating_them() -> None:
    """An application_appears_hung sent by a client (or another watcher) sets the status silently."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)

    assert watch.observe([LogEvent("r", T0 + 1, "application_appears_hung", "warning")], T0 + 1) == []
    assert watch.status("r") == "hung"
    assert watch.check(T0 + 100) == []
    assert kinds(watch.observe([Heartbeat("r", T0 + 101)], T0 + 101)) == [("r", "running")]


def test_a_sign_of_life_a_verdict_already_weighed_does_not_recover_the_run() -> None:
    """A crash verdict from elsewhere, then a heartbeat no newer than its evidence (an upload): still crashed."""
    watch = tracker()
    verdict = LogEvent("r", T0 + 50, "application_crashed", "error", {"last_signal": T0 + 40})
    assert watch.observe([started(), verdict], T0 + 55) == []
    assert watch.observe([Heartbeat("r", T0 + 40)], T0 + 56) == []  # the one the verdict weighed
    watch.refresh([StoredRun("r", "crashed", T0 + 40, T0 + 40)], T0 + 57)
    assert watch.check(T0 + 57) == [] and watch.status("r") == "crashed"
    assert kinds(watch.observe([Heartbeat("r", T0 + 41)], T0 + 58)) == [("r", "running")]  # a newer one does


def test_crash_detections_verdict_weighs_signs_of_life_up_to_its_own_time() -> None:
    """run_crashed (uploaded as application_crashed) carries no last_signal: its timestamp is the last one seen."""
    watch = tracker()
    watch.observe([started(), LogEvent("r", T0 + 30, "application_crashed", "error", {"reason": "gone"})], T0 + 31)
    assert watch.observe([Heartbeat("r", T0 + 30)], T0 + 32) == []
    assert watch.status("r") == "crashed"


# -- pure core: any_event mode ------------------------------------------------------------------


def test_any_event_mode_counts_every_event_as_a_sign_of_life() -> None:
    """In any_event mode the start arms the watch and metrics, logs and state keep a run alive."""
    watch = tracker(signal="any_event")
    watch.observe([started()], T0)
    assert kinds(watch.check(T0 + 61)) == [("r", "hung")]

    changes = watch.observe([Metric("r", T0 + 70, {"x": 1.0})], T0 + 70)
    assert kinds(changes) == [("r", "running")]
    watch.observe([StatePatch("r", T0 + 120, {"a": 1}), LogEvent("r", T0 + 125, "note")], T0 + 125)
    assert watch.check(T0 + 180) == []


def test_any_event_mode_ignores_verdicts_and_alerts() -> None:
    """Liveness verdicts and alert events are not signs of the producer's life."""
    watch = tracker(signal="any_event")
    watch.observe([started()], T0)
    watch.check(T0 + 61)

    later = [
        LogEvent("r", T0 + 62, "application_appears_hung", "warning"),
        AlertEvent("r", T0 + 62, "loss_high", "firing"),
    ]
    assert watch.observe(later, T0 + 62) == []
    assert watch.status("r") == "hung"


def test_heartbeat_mode_ignores_other_events_as_signals() -> None:
    """In heartbeat mode a hung run that only logs metrics stays hung."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 61)

    assert watch.observe([Metric("r", T0 + 62, {"x": 1.0})], T0 + 62) == []
    assert watch.status("r") == "hung"


# -- pure core: reconciling with the store ---------------------------------------------------------


def test_seeded_run_silent_past_the_crash_limit_is_crashed_at_the_first_check() -> None:
    """Running runs found in the store at start are watched; one silent past 300 s is crashed."""
    watch = tracker()
    rows = [
        StoredRun("dead", "running", T0, T0),
        StoredRun("alive", "running", T0 + 990, T0 + 990),
        StoredRun("quiet", "running", None, T0),
        StoredRun("done", "completed", T0, T0),
    ]
    watch.refresh(rows, T0 + 1000, watch_new=True)

    assert sorted(watch.run_ids) == ["alive", "dead", "quiet"]
    assert kinds(watch.check(T0 + 1000)) == [("dead", "crashed")]


def test_a_fresher_signal_in_the_store_keeps_a_run_alive() -> None:
    """Heartbeats another process committed count: the run is not flagged."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)

    watch.refresh([StoredRun("r", "running", T0 + 50, T0 + 50)], T0 + 100)

    assert watch.check(T0 + 100) == []
    assert kinds(watch.check(T0 + 111)) == [("r", "hung")]


def test_the_store_status_is_taken_over_once_settled() -> None:
    """A hung verdict another watcher wrote is adopted, so this tracker does not repeat it."""
    watch = tracker(settle_seconds=30)
    watch.observe([started(), Heartbeat("r", T0)], T0)

    watch.refresh([StoredRun("r", "hung", T0, T0)], T0 + 70)

    assert watch.status("r") == "hung"
    assert watch.check(T0 + 70) == []


def test_a_recent_own_verdict_is_not_undone_by_a_stale_store_row() -> None:
    """Within settle_seconds of its own verdict, the tracker keeps it over the not-yet-committed store."""
    watch = tracker(settle_seconds=30)
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 61)

    watch.refresh([StoredRun("r", "running", T0, T0)], T0 + 65)

    assert watch.status("r") == "hung"
    assert watch.check(T0 + 66) == []


def test_recovery_learned_from_the_store_is_reported() -> None:
    """A hung run heartbeating through another process recovers at the next check."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 61)

    watch.refresh([StoredRun("r", "hung", T0 + 100, T0 + 100)], T0 + 101)

    assert [(t.previous_status, t.status) for t in watch.check(T0 + 101)] == [("hung", "running")]


def test_a_crashed_run_heartbeating_again_is_recovered_once_its_status_is_known() -> None:
    """A heartbeat for a run unknown to the tracker but crashed in the store recovers it after the refresh."""
    watch = tracker()
    assert watch.observe([Heartbeat("old", T0 + 2000)], T0 + 2000) == []

    watch.refresh([StoredRun("old", "crashed", T0, T0)], T0 + 2001)

    assert [(t.previous_status, t.status) for t in watch.check(T0 + 2001)] == [("crashed", "running")]


def test_runs_the_store_holds_as_ended_are_forgotten() -> None:
    """A run completed through another process is no longer watched."""
    watch = tracker(settle_seconds=30)
    watch.observe([started(), Heartbeat("r", T0)], T0)

    watch.refresh([StoredRun("r", "completed", T0 + 10, T0 + 10)], T0 + 40)

    assert watch.run_ids == []
    assert watch.check(T0 + 10_000) == []


def test_the_store_supplies_a_runs_own_timeout() -> None:
    """heartbeat_timeout_seconds read from the stored metadata applies to a seeded run."""
    watch = tracker()
    watch.refresh([StoredRun("r", "running", T0, T0, 10.0)], T0, watch_new=True)

    assert kinds(watch.check(T0 + 11)) == [("r", "hung")]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"heartbeat_timeout_seconds": 0}, id="zero-timeout"),
        pytest.param({"crash_timeout_seconds": -1}, id="negative-crash"),
        pytest.param({"settle_seconds": float("nan")}, id="nan-settle"),
        pytest.param({"signal": "sometimes"}, id="unknown-signal"),
    ],
)
def test_tracker_rejects_bad_options(options: dict[str, Any]) -> None:
    """Non-positive times and unknown signals are ValueErrors naming the option."""
    name = next(iter(options))
    with pytest.raises(ValueError, match=name):
        LivenessTracker(**options)


def test_transition_event_records_the_verdict() -> None:
    """A transition becomes a log event with the verdict's level and details."""
    change = Transition("r", "application_crashed", "crashed", "hung", T0, 301.25, 300.0)

    event = transition_event(change, T0 + 301.25, "heartbeat")

    assert event == LogEvent(
        "r",
        T0 + 301.25,
        "application_crashed",
        "error",
        {
            "status": "crashed",
            "previous_status": "hung",
            "last_signal": T0,
            "silent_seconds": 301.25,
            "limit_seconds": 300.0,
            "signal": "heartbeat",
        },
    )


def test_statistics_count_watched_runs_and_verdicts() -> None:
    """statistics() reports watched runs and verdicts by kind."""
    watch = tracker()
    watch.observe([started(), Heartbeat("r", T0)], T0)
    watch.check(T0 + 61)
    watch.observe([Heartbeat("r", T0 + 62)], T0 + 62)

    assert watch.statistics() == {"watched_runs": 1, "hung_total": 1, "crashed_total": 0, "recovered_total": 1}


# -- the store mapping -------------------------------------------------------------------------------


@pytest.mark.parametrize(("event_type", "status"), list(LIVENESS_STATUS.items()))
def test_liveness_log_events_set_the_run_status_but_not_its_activity_time(event_type: str, status: str) -> None:
    """The encoder turns each liveness verdict into a status update that leaves updated_at alone."""
    encoded = BatchEncoder().encode([LogEvent("r", T0 + 5, event_type, "warning")], {"r": 1}, {})

    update = encoded.run_updates[1]
    assert update.liveness_status == status and update.status is None
    assert update.updated_at == 0.0  # MAX(updated_at, 0) keeps the stored value
    assert encoded.event_rows is not None and event_type.encode() in encoded.event_rows


def test_other_log_events_do_not_touch_the_status() -> None:
    """An ordinary log event advances updated_at and sets no status."""
    encoded = BatchEncoder().encode([LogEvent("r", T0 + 5, "note")], {"r": 1}, {})

    assert encoded.run_updates[1].status is None
    assert encoded.run_updates[1].updated_at == T0 + 5


# -- config --------------------------------------------------------------------------------------------


def test_stage_options_reject_a_crash_limit_below_the_hung_limit() -> None:
    """crash_timeout_seconds below heartbeat_timeout_seconds is a ConfigError naming the key."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"alive": {"type": "liveness", "inputs": ["app"], "crash_timeout_seconds": 30}},
        "sinks": {"out": {"type": "blackhole", "inputs": ["alive"]}},
    }
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(config)
    assert caught.value.path == "stages.alive.crash_timeout_seconds"


def test_stage_options_have_the_documented_defaults() -> None:
    """The liveness type is built in, with 60 s / 300 s / heartbeat / 5 s defaults."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"alive": {"type": "liveness", "inputs": ["app"]}},
        "sinks": {"out": {"type": "blackhole", "inputs": ["alive"]}},
    }
    options = load_pipeline_config(config).get("alive").options

    assert (options.heartbeat_timeout_seconds, options.crash_timeout_seconds) == (60.0, 300.0)
    assert (options.signal, options.check_interval_seconds, options.path) == ("heartbeat", 5.0, None)


# -- the stage in a real pipeline ------------------------------------------------------------------------


class ProbeSink(RecordingSink):
    """Records batches and lets a test wait for a log event of a given type."""

    def __init__(self, id: str, options: RecordingSink.Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self._seen: dict[str, anyio.Event] = {}

    def _event(self, event_type: str) -> anyio.Event:
        return self._seen.setdefault(event_type, anyio.Event())

    async def write(self, batch: list[Any]) -> None:
        await super().write(batch)
        for event in batch:
            if type(event) is LogEvent:
                self._event(event.type).set()

    async def wait_for(self, event_type: str) -> LogEvent:
        """The first log event of ``event_type`` (waits for it, bounded by TIMEOUT)."""
        with anyio.fail_after(TIMEOUT):
            await self._event(event_type).wait()
        return next(e for e in self.events if type(e) is LogEvent and e.type == event_type)


PROBE = f"{ProbeSink.__module__}:ProbeSink"


def graph(db: Path, *, liveness: bool = True) -> dict[str, Any]:
    """The in-process source, the liveness stage (checking every 10 ms), the store and a probe."""
    upstream = "alive" if liveness else "app"
    config: dict[str, Any] = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": [upstream], "path": str(db)},
            "probe": {"type": PROBE, "inputs": [upstream]},
        },
    }
    if liveness:
        config["stages"] = {"alive": {"type": "liveness", "inputs": ["app"], "check_interval_seconds": 0.01}}
    return config


def pipeline(db: Path, tmp_path: Path, *, liveness: bool = True) -> Pipeline:
    """A pipeline on ``db`` whose files stay in tmp_path."""
    context = ComponentContext(db_path=str(db), data_dir=tmp_path / "data")
    return Pipeline(graph(db, liveness=liveness), context=context, shutdown_timeout_seconds=5)


async def run_statuses(db: Path) -> dict[str, str]:
    """run_id → status in the store, read off the loop."""

    def read() -> dict[str, str]:
        connection = sqlite3.connect(db)
        try:
            return dict(connection.execute("SELECT run_id, status FROM runs").fetchall())
        finally:
            connection.close()

    return await anyio.to_thread.run_sync(read)


async def flush(running: Pipeline) -> None:
    """Wait until everything emitted so far is committed."""
    assert await running.flush(TIMEOUT)


async def test_stage_marks_a_silent_run_hung_then_recovered_in_the_store(tmp_path: Path) -> None:
    """In a real pipeline a run silent past 60 s is stored as hung, and a heartbeat makes it running again."""
    db = tmp_path / "live.db"
    now = time.time()
    async with pipeline(db, tmp_path) as running:
        probe = running.component("probe")
        assert isinstance(probe, ProbeSink)
        running.emit(started("silent", now - 100))
        running.emit(Heartbeat("silent", now - 100))
        running.emit(started("busy", now))
        running.emit(Heartbeat("busy", now))

        hung = await probe.wait_for("application_appears_hung")
        await flush(running)
        assert hung.run_id == "silent" and hung.data["previous_status"] == "running"
        assert await run_statuses(db) == {"silent": "hung", "busy": "running"}

        running.emit(Heartbeat("silent", time.time()))
        recovered = await probe.wait_for("application_recovered")
        await flush(running)

    assert recovered.run_id == "silent"
    assert await run_statuses(db) == {"silent": "running", "busy": "running"}


async def test_stage_on_start_marks_runs_silent_past_the_crash_limit_crashed(tmp_path: Path) -> None:
    """A run left running in the store with its last heartbeat 1000 s ago is crashed by a starting stage."""
    db = tmp_path / "restart.db"
    now = time.time()
    async with pipeline(db, tmp_path, liveness=False) as first:
        first.emit(started("orphan", now - 1000))
        first.emit(Heartbeat("orphan", now - 1000))
        first.emit(started("fresh", now))
        first.emit(Heartbeat("fresh", now))
        await flush(first)

    async with pipeline(db, tmp_path) as second:
        probe = second.component("probe")
        assert isinstance(probe, ProbeSink)
        crashed = await probe.wait_for("application_crashed")
        await flush(second)
        verdicts = [e.run_id for e in probe.events if type(e) is LogEvent and e.type in LIVENESS_STATUS]

    assert crashed.run_id == "orphan" and crashed.data["silent_seconds"] >= 1000
    assert verdicts == ["orphan"]  # the same check left the fresh run alone
    assert await run_statuses(db) == {"orphan": "crashed", "fresh": "running"}


async def test_a_verdict_never_reopens_a_finished_run(tmp_path: Path) -> None:
    """An application_recovered event (say, from a remote producer) leaves a completed run completed."""
    db = tmp_path / "finished.db"
    now = time.time()
    async with pipeline(db, tmp_path, liveness=False) as running:
        running.emit(started("done", now - 10))
        running.emit(RunLifecycle("done", now - 5, "completed"))
        await flush(running)
        running.emit(LogEvent("done", now, "application_recovered", "info"))
        await flush(running)
    assert await run_statuses(db) == {"done": "completed"}
