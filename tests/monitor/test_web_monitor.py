"""Tests for runwatch.monitor.WebMonitor against a real SQLite store in a temporary directory."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sqlite3
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest

from runwatch import DatabaseManager, ErrorCategory, ErrorSeverity, MonitorConfig, UnknownRunError, WebMonitor
from runwatch.pipeline.config import default_pipeline_config

ERROR_EVENT_KEYS = {"category", "severity", "component", "message", "error_type", "traceback"}


def make_config(directory: Path) -> MonitorConfig:
    """A monitor config whose store and data live in ``directory`` and whose web port is any free one."""
    return MonitorConfig(
        db_path=str(directory / "monitoring.db"),
        data_dir=str(directory / "data"),
        web_port=0,
        pipeline=default_pipeline_config(snapshots=True),  # no alert rules: the tests log NaN on purpose
    )


@pytest.fixture
def config(tmp_path: Path) -> MonitorConfig:
    return make_config(tmp_path)


@pytest.fixture
def monitor(config: MonitorConfig) -> Iterator[WebMonitor]:
    with WebMonitor(config) as m:
        yield m


@pytest.fixture(scope="module")
def active_monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """One monitor with a running run, shared by tests that only check rejected calls (they write nothing)."""
    with WebMonitor(make_config(tmp_path_factory.mktemp("active"))) as m:
        m.start_training()
        yield m


@pytest.fixture(scope="module")
def idle_monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """One monitor without a run, shared by tests that only check rejected calls."""
    with WebMonitor(make_config(tmp_path_factory.mktemp("idle"))) as m:
        yield m


@pytest.fixture
def local_time_utc_minus_5(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the process's local time zone UTC-5 (a POSIX TZ string needs no tz database)."""
    monkeypatch.setenv("TZ", "EST5")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(seconds_after: float) -> datetime:
    """An aware UTC datetime a fixed number of seconds after 2024-01-01 12:00 UTC."""
    return datetime(2024, 1, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds_after)


# -- lifecycle ------------------------------------------------------------------------


def test_start_training_returns_a_new_run_id_and_starts_a_running_run(monitor: WebMonitor) -> None:
    """start_training returns a fresh id that becomes current_run_id, with status running in the store."""
    assert (monitor.current_run_id, monitor.training_state) == (None, "idle")

    run_id = monitor.start_training({"lr": 0.001, "algorithm": "dqn"})

    assert isinstance(run_id, str) and run_id
    assert (monitor.current_run_id, monitor.training_state) == (run_id, "running")
    summary = monitor.get_run_summary(run_id)
    assert (summary["status"], summary["kind"], summary["config"]) == (
        "running",
        "training",
        {"lr": 0.001, "algorithm": "dqn"},
    )
    assert summary["end_time"] is None


def test_start_training_with_a_new_explicit_id_uses_that_id(monitor: WebMonitor) -> None:
    """A run id that does not exist yet starts a new run under exactly that id."""
    assert monitor.start_training(run_id="my-experiment-1") == "my-experiment-1"

    assert [run["run_id"] for run in monitor.get_training_runs()] == ["my-experiment-1"]


def test_pause_resume_and_stop_change_the_state_locally_and_in_the_store(monitor: WebMonitor) -> None:
    """Pausing, resuming and stopping move training_state and the stored status together."""
    run_id = monitor.start_training()

    monitor.pause_training()
    assert (monitor.training_state, monitor.current_run_id) == ("paused", run_id)
    assert monitor.get_run_summary(run_id)["status"] == "paused"

    monitor.resume_training()
    assert monitor.training_state == "running"
    assert monitor.get_run_summary(run_id)["status"] == "running"

    monitor.stop_training(final_reward=4.5)
    assert (monitor.training_state, monitor.current_run_id) == ("completed", None)
    summary = monitor.get_run_summary(run_id)
    assert (summary["status"], summary["final_reward"]) == ("completed", 4.5)
    assert summary["end_time"] is not None
    events = [event["event_type"] for event in monitor.get_run_events(run_id)]
    assert events == ["run_started", "run_paused", "run_resumed", "run_completed"]


def test_fail_training_marks_the_run_failed_with_its_reason(monitor: WebMonitor) -> None:
    """fail_training ends the run with status failed and keeps the reason in its metadata."""
    run_id = monitor.start_training()

    monitor.fail_training("loss diverged")

    assert (monitor.training_state, monitor.current_run_id) == ("failed", None)
    summary = monitor.get_run_summary(run_id)
    assert summary["status"] == "failed"
    assert summary["metadata"] == {"reason": "loss diverged"}
    assert [event["event_type"] for event in monitor.get_run_events(run_id, "run_failed")] == ["run_failed"]


def test_pause_and_resume_refuse_the_wrong_state(monitor: WebMonitor) -> None:
    """Pausing a paused run or resuming a running one raises ValueError and changes nothing."""
    monitor.start_training()
    with pytest.raises(ValueError, match="not paused"):
        monitor.resume_training()

    monitor.pause_training()
    with pytest.raises(ValueError, match="already paused"):
        monitor.pause_training()

    assert monitor.training_state == "paused"


def test_starting_while_a_run_is_active_raises(active_monitor: WebMonitor) -> None:
    """A second start_training while a run is active raises ValueError naming the active run."""
    active = active_monitor.current_run_id
    assert active is not None

    with pytest.raises(ValueError, match=re.escape(active)):
        active_monitor.start_training()

    assert active_monitor.current_run_id == active


def test_resuming_an_existing_run_keeps_its_start_and_continues_its_counts(monitor: WebMonitor) -> None:
    """start_training(run_id=<existing>) resumes that run: same start time, step and episode counts go on."""
    run_id = monitor.start_training({"lr": 0.1})
    for step in range(2):
        monitor.update_step(step, 1.0, "up", 0.01, {"hp": 100})
    monitor.update_episode(0, 2.0, 2, True)
    monitor.stop_training()
    before = monitor.get_run_summary(run_id)

    assert monitor.start_training(run_id=run_id) == run_id
    assert monitor.current_run_id == run_id
    monitor.update_step(2, 1.0, "down", 0.01, {"hp": 90})
    monitor.update_episode(1, 1.0, 1, False)
    monitor.stop_training()

    after = monitor.get_run_summary(run_id)
    assert after["start_time"] == before["start_time"]
    assert (before["total_steps"], after["total_steps"]) == (2, 3)
    assert (before["total_episodes"], after["total_episodes"]) == (1, 2)
    assert after["status"] == "completed"
    assert [run["run_id"] for run in monitor.get_training_runs()] == [run_id]
    assert "run_resumed" in after["event_counts"]


def test_lifecycle_calls_return_once_another_reader_sees_their_change(monitor: WebMonitor) -> None:
    """start/pause/resume/stop_training are commit points: a reader that never flushes sees each change at once."""
    with DatabaseManager(monitor.config.db_path) as reader:  # its own connection; it cannot flush the monitor
        for _ in range(5):
            run_id = monitor.start_training()
            assert reader.get_run_summary(run_id)["status"] == "running"
            monitor.update_metrics({"loss": 0.5})
            monitor.pause_training()
            assert reader.get_run_summary(run_id)["status"] == "paused"
            monitor.resume_training()
            assert reader.get_run_summary(run_id)["status"] == "running"
            monitor.stop_training(final_reward=1.0)
            summary = reader.get_run_summary(run_id)
            assert (summary["status"], summary["final_reward"]) == ("completed", 1.0)
            assert summary["metrics"]["loss"]["count"] == 1  # what was logged before the stop is there too
        failed = monitor.start_training()
        monitor.fail_training("diverged")
        assert reader.get_run_summary(failed)["status"] == "failed"


def test_a_lifecycle_call_with_the_store_locked_returns_by_its_timeout_and_counts_it(tmp_path: Path) -> None:
    """With the store's write lock held elsewhere, start/stop_training return after commit_timeout_seconds, raise
    nothing, count each miss, and the changes are committed once the lock is released."""
    config = make_config(tmp_path).with_changes(commit_timeout_seconds=0.3)
    with WebMonitor(config) as monitor:
        blocker = sqlite3.connect(config.db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: every commit waits
        try:
            started = time.monotonic()
            run_id = monitor.start_training()
            monitor.stop_training()
            waited = time.monotonic() - started
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert waited >= 0.6  # each call waited for its commit, up to its timeout
        assert monitor.statistics()["uncommitted_lifecycle_calls"] == 2
        assert monitor.flush()
        assert monitor.get_run_summary(run_id)["status"] == "completed"


def test_resuming_a_run_continues_its_global_step(monitor: WebMonitor) -> None:
    """A resumed run's next logging call takes the step after the highest one it logged before."""
    run_id = monitor.start_training()
    monitor.update_metrics({"loss": 1.0})
    monitor.update_metrics({"loss": 0.5}, step=41)
    monitor.stop_training()

    monitor.start_training(run_id=run_id)
    assert monitor.step == 41
    monitor.update_metrics({"loss": 0.25})

    assert monitor.get_run_metrics(run_id)["step"].tolist() == [0, 41, 42]


def test_get_training_runs_lists_training_runs_unless_asked_for_another_kind(monitor: WebMonitor) -> None:
    """Sessions in the same store are left out of get_training_runs() unless kind= asks for them."""
    from runwatch import SessionMonitor

    run_id = monitor.start_training()
    with SessionMonitor(monitor.db) as sessions:
        sessions.record_metric("page_load_time", "session-1", 7, 0.25)
        assert sessions.flush()

    assert [run["run_id"] for run in monitor.get_training_runs()] == [run_id]
    assert [run["run_id"] for run in monitor.get_training_runs(kind="session")] == ["session-1"]
    assert {run["run_id"] for run in monitor.get_training_runs(kind=None)} == {run_id, "session-1"}


def test_debug_raises_the_runwatch_logger_only_until_close(config: MonitorConfig) -> None:
    """debug=True puts the runwatch logger at DEBUG while the monitor lives; close() restores its level and the
    root logger is never touched."""
    runwatch_logger, root = logging.getLogger("runwatch"), logging.getLogger()
    before = (runwatch_logger.level, root.level)

    monitor = WebMonitor(config.with_changes(debug=True))
    assert runwatch_logger.level == logging.DEBUG
    monitor.close()

    assert (runwatch_logger.level, root.level) == before


# -- metrics --------------------------------------------------------------------------


def test_update_metrics_flattens_nested_dicts_to_group_slash_name(monitor: WebMonitor) -> None:
    """Nested metric dicts become ``group/name`` columns (any depth), beside flat names."""
    run_id = monitor.start_training()

    monitor.update_metrics({"loss": 0.5, "q_value": {"mean": 1.0, "max": 2.0}, "a": {"b": {"c": 3.0}}})

    frame = monitor.get_run_metrics(run_id)
    assert list(frame.columns) == ["timestamp", "step", "loss", "q_value/mean", "q_value/max", "a/b/c"]
    assert frame.iloc[0][["loss", "q_value/mean", "q_value/max", "a/b/c"]].tolist() == [0.5, 1.0, 2.0, 3.0]


def test_nan_and_infinities_come_back_exactly(monitor: WebMonitor) -> None:
    """NaN, +Inf and -Inf logged as metric values are read back as NaN, +Inf and -Inf."""
    run_id = monitor.start_training()

    monitor.update_metrics({"loss": 1.0, "grad_norm": 2.0, "log_prob": -3.0})
    monitor.update_metrics({"loss": math.nan, "grad_norm": math.inf, "log_prob": -math.inf})

    frame = monitor.get_run_metrics(run_id)
    assert frame["loss"].iloc[0] == 1.0 and math.isnan(frame["loss"].iloc[1])
    assert frame["grad_norm"].tolist() == [2.0, math.inf]
    assert frame["log_prob"].tolist() == [-3.0, -math.inf]
    stats = monitor.get_run_summary(run_id)["metrics"]
    assert (stats["loss"]["nan_count"], stats["grad_norm"]["max"], stats["log_prob"]["min"]) == (1, math.inf, -math.inf)


def test_metric_frame_by_call_has_one_row_per_logging_call_with_step_and_timestamp(monitor: WebMonitor) -> None:
    """align="call" gives each logging call its own row, timestamp and global step, as logged."""
    run_id = monitor.start_training()
    when = at(0)

    monitor.update_metrics({"loss": 1.0}, timestamp=when)
    monitor.update_metrics({"loss": 0.5, "accuracy": 0.9})
    monitor.update_step(7, 1.5, "left", 0.02, {})
    monitor.update_metrics({"loss": 0.25})

    frame = monitor.get_run_metrics(run_id, align="call")
    assert list(frame.columns[:2]) == ["timestamp", "step"]
    assert len(frame) == 4
    assert frame["timestamp"].iloc[0] == pd.Timestamp(when)
    assert frame["timestamp"].iloc[1] > frame["timestamp"].iloc[0]
    assert frame["step"].tolist() == [0, 1, 2, 2]
    assert frame["episode_step"].iloc[2] == 7
    assert frame["loss"].tolist()[:2] == [1.0, 0.5] and math.isnan(frame["loss"].iloc[2])
    assert math.isnan(frame["accuracy"].iloc[0]) and frame["accuracy"].iloc[1] == 0.9


def test_metric_frame_merges_the_calls_of_a_step_into_one_row_by_default(monitor: WebMonitor) -> None:
    """The default frame has one row per global step: update_step's reward and the loss logged after it share one."""
    run_id = monitor.start_training()
    for episode_step in range(3):
        monitor.update_step(episode_step, float(episode_step), "up", 0.01, {})
        monitor.update_metrics({"loss": 1.0 / (episode_step + 1)})

    frame = monitor.get_run_metrics(run_id)

    assert frame["step"].tolist() == [0, 1, 2]
    assert frame["reward"].tolist() == [0.0, 1.0, 2.0]
    assert frame["loss"].tolist() == [1.0, 0.5, 1.0 / 3]
    assert frame["episode_step"].tolist() == [0.0, 1.0, 2.0]
    assert len(monitor.get_run_metrics(run_id, align="call")) == 6


def test_update_metrics_takes_a_keyword_step_and_later_calls_continue_from_it(monitor: WebMonitor) -> None:
    """step= sets a call's global step; calls without one take the previous step plus one."""
    run_id = monitor.start_training()

    monitor.update_metrics({"loss": 1.0})
    monitor.update_metrics({"loss": 0.9}, step=100)
    monitor.update_metrics({"loss": 0.8})
    monitor.update_metrics({"accuracy": 0.7}, step=101)

    frame = monitor.get_run_metrics(run_id)
    assert frame["step"].tolist() == [0, 100, 101]
    assert frame["loss"].tolist() == [1.0, 0.9, 0.8]
    assert frame["accuracy"].isna().tolist() == [True, True, False]
    assert monitor.step == 101
    assert monitor.get_run_summary(run_id)["metrics"]["loss"]["last_step"] == 101


def test_a_step_merged_row_keeps_a_logged_nan_and_the_last_value_of_each_metric(monitor: WebMonitor) -> None:
    """Within a step each metric keeps its last logged value, a logged NaN included; untouched ones stay."""
    run_id = monitor.start_training()

    monitor.update_metrics({"loss": 1.0, "accuracy": 0.5}, step=3)
    monitor.update_metrics({"loss": math.nan}, step=3)
    monitor.update_metrics({"lr": 0.1}, step=3)

    frame = monitor.get_run_metrics(run_id)
    assert len(frame) == 1
    assert math.isnan(frame["loss"].iloc[0])
    assert (frame["accuracy"].iloc[0], frame["lr"].iloc[0]) == (0.5, 0.1)


def test_the_step_must_be_an_integer(active_monitor: WebMonitor) -> None:
    """A step that is not a 64-bit integer is refused at the call, naming step."""
    with pytest.raises(TypeError, match="step"):
        active_monitor.update_metrics({"loss": 1.0}, step=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step"):
        active_monitor.update_metrics({"loss": 1.0}, step=2**63)
    with pytest.raises(TypeError):
        active_monitor.update_metrics({"loss": 1.0}, None, 5)  # type: ignore[misc]  # keyword-only


def test_get_run_metrics_refuses_an_unknown_alignment(monitor: WebMonitor) -> None:
    """align must be "step" or "call"; anything else is a ValueError naming align."""
    run_id = monitor.start_training()
    with pytest.raises(ValueError, match="align"):
        monitor.get_run_metrics(run_id, align="episode")


def test_metric_queries_filter_by_name_and_time(monitor: WebMonitor) -> None:
    """metric_names keeps only calls that logged those names; start/end times bound the rows."""
    run_id = monitor.start_training()
    for second in range(4):
        monitor.update_metrics({"loss": float(second)}, timestamp=at(second))
    monitor.update_metrics({"accuracy": 0.5}, timestamp=at(10))

    assert monitor.get_run_metrics(run_id, ["loss"])["loss"].tolist() == [0.0, 1.0, 2.0, 3.0]
    window = monitor.get_run_metrics(run_id, start_time=at(1), end_time=at(2))
    assert window["loss"].tolist() == [1.0, 2.0]


def test_update_system_metrics_logs_under_system_reported_apart_from_the_sampler(monitor: WebMonitor) -> None:
    """update_system_metrics writes system/reported/*, never the sampler's own system/* series."""
    run_id = monitor.start_training()

    monitor.update_system_metrics(12.5, 40.0, 73.25)

    frame = monitor.get_run_metrics(run_id)
    row = frame.iloc[0]
    reported = ("system/reported/cpu_percent", "system/reported/memory_percent", "system/reported/disk_usage")
    assert tuple(row[name] for name in reported) == (12.5, 40.0, 73.25)
    assert "system/cpu_percent" not in frame.columns


# -- steps, episodes, state, events ----------------------------------------------------


def test_update_step_stores_reward_and_inference_time_at_the_step_and_the_rest_in_the_state(
    monitor: WebMonitor,
) -> None:
    """update_step logs reward/inference_time and its episode_step; the action and game state go into the run state."""
    run_id = monitor.start_training()

    monitor.update_step(3, 0.25, "up", 0.015, {"position": {"x": 1, "y": 2}, "hp": 90})

    frame = monitor.get_run_metrics(run_id, ["reward", "inference_time", "episode_step"])
    assert frame["step"].tolist() == [0]  # the run's global step; the episode's own is a column
    assert frame["episode_step"].tolist() == [3.0]
    assert (frame["reward"].tolist(), frame["inference_time"].tolist()) == ([0.25], [0.015])
    assert monitor.flush()  # db is the raw DatabaseManager: it reads without flushing
    state = monitor.db.get_run_state(run_id)
    assert state["game_state"] == {"position": {"x": 1, "y": 2}, "hp": 90}
    assert (state["last_action"], state["step"]) == ("up", 3)


def test_update_step_counts_steps_in_the_run_summary(monitor: WebMonitor) -> None:
    """Every update_step call counts one step in total_steps."""
    run_id = monitor.start_training()
    for step in range(5):
        monitor.update_step(step, 0.1, "a", 0.001, {"step": step})
    monitor.stop_training()

    assert monitor.get_run_summary(run_id)["total_steps"] == 5


def test_step_count_is_visible_in_the_summary_right_after_update_step(monitor: WebMonitor) -> None:
    """get_run_summary right after update_step calls already counts those steps (read-your-writes)."""
    run_id = monitor.start_training()
    for step in range(3):
        monitor.update_step(step, 0.1, "a", 0.001, {})

    assert monitor.get_run_summary(run_id)["total_steps"] == 3


def test_update_episode_counts_episodes_and_records_an_episode_end_event(monitor: WebMonitor) -> None:
    """update_episode counts an episode, logs episode/* metrics at the next step and an episode_end event."""
    run_id = monitor.start_training()

    monitor.update_episode(0, 12.5, 200, True, {"epsilon": 0.5})
    monitor.update_episode(1, -3.0, 150, False)

    summary = monitor.get_run_summary(run_id)
    assert summary["total_episodes"] == 2
    events = monitor.get_run_events(run_id, "episode_end")
    assert [event["event_data"] for event in events] == [
        {"episode": 0, "total_reward": 12.5, "steps": 200, "success": True, "metadata": {"epsilon": 0.5}},
        {"episode": 1, "total_reward": -3.0, "steps": 150, "success": False},
    ]
    frame = monitor.get_run_metrics(run_id, ["episode/index", "episode/total_reward", "episode/success"])
    assert frame["step"].tolist() == [0, 1]
    assert frame["episode/index"].tolist() == [0.0, 1.0]
    assert frame["episode/total_reward"].tolist() == [12.5, -3.0]
    assert frame["episode/success"].tolist() == [1.0, 0.0]


def test_update_game_state_merges_into_the_run_state_with_the_frame_number(monitor: WebMonitor) -> None:
    """Game states deep-merge into the run state's game_state; the latest frame_number is kept."""
    run_id = monitor.start_training()

    monitor.update_game_state({"hp": 100, "position": {"x": 1}}, frame_number=10)
    monitor.update_game_state({"position": {"y": 2}}, frame_number=11)

    state = monitor.get_run_summary(run_id)["state"]
    assert state == {"game_state": {"hp": 100, "position": {"x": 1, "y": 2}}, "frame_number": 11}


def test_record_event_is_returned_with_type_data_and_timestamp(monitor: WebMonitor) -> None:
    """A recorded event comes back with its event_type, event_data, timestamp and level."""
    run_id = monitor.start_training()

    monitor.record_event("checkpoint_saved", {"path": "ckpt/ep9.pt", "episode": 9}, timestamp=at(0), level="warning")

    (event,) = monitor.get_run_events(run_id, "checkpoint_saved")
    assert event["event_type"] == "checkpoint_saved"
    assert event["event_data"] == {"path": "ckpt/ep9.pt", "episode": 9}
    assert event["timestamp"] == at(0)
    assert event["level"] == "warning"


def test_numpy_values_are_taken_by_game_state_events_and_episode_metadata(monitor: WebMonitor) -> None:
    """numpy scalars of any dtype and 0-d arrays are stored as Python values, as update_metrics takes them."""
    import numpy as np

    run_id = monitor.start_training()
    monitor.update_game_state({"hp": np.int64(90), "speed": np.float32(1.5), "alive": np.bool_(True)}, np.int64(7))
    monitor.record_event("checkpoint", {"loss": np.float16(0.25), "epoch": np.uint8(3), "best": np.array(0.5)})
    monitor.update_episode(np.int32(1), np.float32(2.5), np.int64(40), np.bool_(False), metadata={"seed": np.int64(4)})

    summary = monitor.get_run_summary(run_id)
    assert summary["state"] == {"game_state": {"hp": 90, "speed": 1.5, "alive": True}, "frame_number": 7}
    assert monitor.get_run_events(run_id, "checkpoint")[0]["event_data"] == {"loss": 0.25, "epoch": 3, "best": 0.5}
    episode = monitor.get_run_events(run_id, "episode_end")[0]["event_data"]
    assert episode == {"episode": 1, "total_reward": 2.5, "steps": 40, "success": False, "metadata": {"seed": 4}}


def test_a_lone_surrogate_is_refused_at_the_call_and_stores_nothing(monitor: WebMonitor) -> None:
    """A non-UTF-8 file name from os.fsdecode is a ValueError naming where it is; nothing of the call is stored."""
    run_id = monitor.start_training()
    name = os.fsdecode(b"frame_\xff.png")
    with pytest.raises(ValueError, match=r"^data\.file must be valid unicode"):
        monitor.record_event("saved", {"file": name})
    with pytest.raises(ValueError, match=r"^patch\.game_state\.frames\[0\] must be valid unicode"):
        monitor.update_game_state({"frames": [name]})
    with pytest.raises(ValueError, match=r"^data\.metadata\.file must be valid unicode"):
        monitor.update_episode(1, 1.0, 10, True, metadata={"file": name})
    with pytest.raises(ValueError, match=r"^action must be valid unicode"):
        monitor.update_step(1, 0.5, name, 0.01, {})
    with pytest.raises(ValueError, match=r"^patch\.game_state\.f must be valid unicode"):
        monitor.update_step(1, 0.5, "left", 0.01, {"f": name})
    monitor.record_event("after", {"ok": True})
    summary = monitor.get_run_summary(run_id)
    assert summary["state"] == {} and summary["metrics"] == {}
    logged = [event["event_type"] for event in monitor.db.get_run_events(run_id) if event["kind"] == "log"]
    assert logged == ["after"]


def test_an_error_about_a_non_utf8_file_name_is_recorded_escaped(monitor: WebMonitor) -> None:
    """ErrorHandler keeps an exception whose message holds a lone surrogate, escaped as \\udcxx (never refused)."""
    run_id = monitor.start_training()
    name = os.fsdecode(b"ckpt_\xff.pt")
    try:
        raise ValueError(f"cannot load {name}")
    except ValueError as error:
        monitor.error_handler.handle_error(error)
    (event,) = monitor.get_run_events(run_id, "error")
    assert event["event_data"]["message"] == "cannot load ckpt_\\udcff.pt"
    assert "cannot load ckpt_\\udcff.pt" in event["event_data"]["traceback"]


def test_run_events_filter_by_type_and_time(monitor: WebMonitor) -> None:
    """get_run_events keeps only the requested type and the events between start_time and end_time."""
    run_id = monitor.start_training()
    for second in (0, 10, 20):
        monitor.record_event("checkpoint_saved", {"at": second}, timestamp=at(second))
    monitor.record_event("eval_done", {"score": 1}, timestamp=at(10))

    by_type = monitor.get_run_events(run_id, "checkpoint_saved")
    window = monitor.get_run_events(run_id, start_time=at(5), end_time=at(15))

    assert [event["event_data"]["at"] for event in by_type] == [0, 10, 20]
    assert [(event["event_type"], event["event_data"]) for event in window] == [
        ("checkpoint_saved", {"at": 10}),
        ("eval_done", {"score": 1}),
    ]


def test_a_naive_timestamp_means_the_same_instant_when_recording_and_filtering(
    local_time_utc_minus_5: None, monitor: WebMonitor
) -> None:
    """A naive datetime used to record an event or metric selects that record when used as a filter."""
    run_id = monitor.start_training()
    when = datetime(2024, 1, 1, 12, 0, 0)

    monitor.record_event("checkpoint_saved", {}, timestamp=when)
    monitor.update_metrics({"loss": 1.0}, timestamp=when)

    events = monitor.get_run_events(run_id, "checkpoint_saved", start_time=when, end_time=when)
    frame = monitor.get_run_metrics(run_id, start_time=when, end_time=when)
    assert len(events) == 1
    assert frame["loss"].tolist() == [1.0]


def test_queries_right_after_logging_see_everything_without_a_flush(monitor: WebMonitor) -> None:
    """Every query method sees all calls made before it, with no explicit flush."""
    run_id = monitor.start_training()
    for index in range(500):
        monitor.update_metrics({"loss": float(index)})
        if index % 100 == 0:
            monitor.record_event("note", {"index": index})
    monitor.update_game_state({"level": 3})

    assert len(monitor.get_run_metrics(run_id)) == 500
    assert [event["event_data"]["index"] for event in monitor.get_run_events(run_id, "note")] == [0, 100, 200, 300, 400]
    summary = monitor.get_run_summary(run_id)
    assert summary["metrics"]["loss"]["count"] == 500
    assert summary["metrics"]["loss"]["last"] == 499.0
    assert summary["state"] == {"game_state": {"level": 3}}
    assert [run["run_id"] for run in monitor.get_training_runs(status="running")] == [run_id]


# -- caller mistakes ---------------------------------------------------------------


NO_RUN_CALLS: list[Any] = [
    pytest.param(lambda m: m.update_metrics({"loss": 1.0}), id="update_metrics"),
    pytest.param(lambda m: m.update_system_metrics(1.0, 2.0, 3.0), id="update_system_metrics"),
    pytest.param(lambda m: m.update_game_state({"hp": 1}), id="update_game_state"),
    pytest.param(lambda m: m.update_step(0, 1.0, "up", 0.01, {}), id="update_step"),
    pytest.param(lambda m: m.update_episode(0, 1.0, 10, True), id="update_episode"),
    pytest.param(lambda m: m.record_event("note", {}), id="record_event"),
    pytest.param(lambda m: m.pause_training(), id="pause_training"),
    pytest.param(lambda m: m.resume_training(), id="resume_training"),
    pytest.param(lambda m: m.stop_training(), id="stop_training"),
    pytest.param(lambda m: m.fail_training("x"), id="fail_training"),
]


@pytest.mark.parametrize("call", NO_RUN_CALLS)
def test_recording_without_an_active_run_raises(idle_monitor: WebMonitor, call: Callable[[WebMonitor], None]) -> None:
    """Every recording or lifecycle call without an active run raises ValueError telling to start one."""
    with pytest.raises(ValueError, match="start_training"):
        call(idle_monitor)

    assert idle_monitor.training_state == "idle"


BAD_INPUT_CALLS: list[Any] = [
    pytest.param(lambda m: m.update_metrics({"": 1.0}), ValueError, "metric name", id="empty-name"),
    pytest.param(lambda m: m.update_metrics({"q": {"": 1.0}}), ValueError, "metric name", id="empty-nested-name"),
    pytest.param(lambda m: m.update_metrics({"loss": "high"}), TypeError, "loss", id="string-value"),
    pytest.param(lambda m: m.update_metrics({"q": {"max": None}}), TypeError, "q/max", id="none-nested-value"),
    pytest.param(lambda m: m.update_metrics({}), ValueError, "at least one", id="no-values"),
    pytest.param(lambda m: m.update_metrics({"loss": 1.0}, timestamp="now"), TypeError, "timestamp", id="timestamp"),
    pytest.param(lambda m: m.update_step(1.5, 1.0, "up", 0.01, {}), TypeError, "step", id="float-step"),
    pytest.param(lambda m: m.update_step("1", 1.0, "up", 0.01, {}), TypeError, "step", id="string-step"),
    pytest.param(lambda m: m.update_step(1, "1.0", "up", 0.01, {}), TypeError, "reward", id="string-reward"),
    pytest.param(lambda m: m.update_step(1, 1.0, 3, 0.01, {}), TypeError, "action", id="int-action"),
    pytest.param(lambda m: m.update_step(1, 1.0, "up", None, {}), TypeError, "inference_time", id="none-time"),
    pytest.param(lambda m: m.update_step(1, 1.0, "up", 0.01, [1]), TypeError, "game_state", id="list-game-state"),
    pytest.param(lambda m: m.update_game_state("hp=1"), TypeError, "state", id="string-state"),
    pytest.param(lambda m: m.update_game_state({}, frame_number=1.0), TypeError, "frame_number", id="frame"),
    pytest.param(lambda m: m.update_episode(0, "x", 10, True), TypeError, "total_reward", id="episode-reward"),
    pytest.param(lambda m: m.update_episode(0, 1.0, 1.5, True), TypeError, "steps", id="episode-steps"),
    pytest.param(lambda m: m.update_system_metrics("high", 1.0, 1.0), TypeError, "cpu_percent", id="cpu"),
    pytest.param(lambda m: m.record_event("note", "text"), TypeError, "data", id="event-data"),
    pytest.param(lambda m: m.record_event("", {}), ValueError, "event_type", id="empty-event-type"),
    pytest.param(lambda m: m.record_event("note", {}, level="loud"), ValueError, "level", id="event-level"),
    pytest.param(lambda m: m.stop_training(final_reward="big"), TypeError, "final_reward", id="final-reward"),
    pytest.param(lambda m: m.start_training(config=["lr"]), TypeError, "config", id="start-config"),
]


@pytest.mark.parametrize(("call", "error", "field"), BAD_INPUT_CALLS)
def test_bad_input_raises_naming_the_field(
    active_monitor: WebMonitor, call: Callable[[WebMonitor], None], error: type[Exception], field: str
) -> None:
    """A wrongly typed or empty argument raises TypeError/ValueError whose message names the field."""
    with pytest.raises(error, match=re.escape(field)):
        call(active_monitor)

    assert active_monitor.training_state == "running"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(lambda m: m.get_run_summary("no-such-run"), id="summary"),
        pytest.param(lambda m: m.get_run_metrics("no-such-run"), id="metrics"),
        pytest.param(lambda m: m.get_run_events("no-such-run"), id="events"),
    ],
)
def test_queries_of_an_unknown_run_raise_unknown_run_error(
    active_monitor: WebMonitor, query: Callable[[WebMonitor], object]
) -> None:
    """Querying an id no run has raises UnknownRunError, a ValueError naming the id."""
    with pytest.raises(UnknownRunError, match="no-such-run") as raised:
        query(active_monitor)

    assert isinstance(raised.value, ValueError)


# -- closing ----------------------------------------------------------------------


def test_close_completes_the_active_run_and_is_idempotent(config: MonitorConfig) -> None:
    """close() completes the active run; a second close is harmless and a closed monitor refuses new runs."""
    with WebMonitor(config) as monitor:
        run_id = monitor.start_training()
        monitor.close()
        monitor.close()

        assert (monitor.training_state, monitor.current_run_id) == ("completed", None)
        with pytest.raises(ValueError, match="closed"):
            monitor.start_training()

    with DatabaseManager(config.db_path) as db:
        summary = db.get_run_summary(run_id)
    assert summary["status"] == "completed"
    assert summary["end_time"] is not None


def test_leaving_with_by_an_exception_fails_the_run_and_records_the_error(config: MonitorConfig) -> None:
    """An exception leaving the with block propagates, fails the run and is stored as an error event."""
    with pytest.raises(KeyError, match="boom"), WebMonitor(config) as monitor:
        run_id = monitor.start_training()
        raise KeyError("boom")

    assert monitor.training_state == "failed"
    with DatabaseManager(config.db_path) as db:
        summary = db.get_run_summary(run_id)
        (error,) = db.get_run_events(run_id, "error")
    assert summary["status"] == "failed"
    assert summary["metadata"] == {"reason": "KeyError: 'boom'"}
    data = error["event_data"]
    assert set(data) == ERROR_EVENT_KEYS
    assert (data["error_type"], data["category"], data["severity"]) == ("KeyError", "unknown", "error")
    assert 'raise KeyError("boom")' in data["traceback"]


# -- export -----------------------------------------------------------------------


def test_export_run_data_writes_a_zip_with_run_metrics_events_and_state_history(
    monitor: WebMonitor, tmp_path: Path
) -> None:
    """export_run_data returns a .zip in output_dir holding run.json, metrics, events.jsonl and state_history.jsonl."""
    run_id = monitor.start_training({"lr": 0.01})
    monitor.update_metrics({"loss": 1.0})
    monitor.update_metrics({"loss": math.nan, "accuracy": 0.5})
    monitor.record_event("checkpoint_saved", {"path": "a.pt"})
    monitor.update_game_state({"hp": 7}, frame_number=1)

    path = monitor.export_run_data(run_id, tmp_path / "exports")

    assert path.suffix == ".zip" and path.parent == tmp_path / "exports" and path.is_file()
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        metrics_name = "metrics.parquet" if "metrics.parquet" in names else "metrics.csv"
        assert {"run.json", metrics_name, "events.jsonl", "state_history.jsonl"} <= names
        run = orjson.loads(archive.read("run.json"))
        metrics_bytes = archive.read(metrics_name)
        events = [orjson.loads(line) for line in archive.read("events.jsonl").splitlines()]
        history = [orjson.loads(line) for line in archive.read("state_history.jsonl").splitlines()]
    assert (run["run_id"], run["status"], run["config"]) == (run_id, "running", {"lr": 0.01})
    read = pd.read_parquet if metrics_name.endswith(".parquet") else pd.read_csv
    frame = read(io.BytesIO(metrics_bytes))
    assert len(frame) == 2
    assert frame["loss"].iloc[0] == 1.0 and math.isnan(frame["loss"].iloc[1])
    assert [event["event_type"] for event in events] == ["run_started", "checkpoint_saved"]
    assert events[1]["event_data"] == {"path": "a.pt"}
    assert [entry["patch"] for entry in history] == [{"game_state": {"hp": 7}, "frame_number": 1}]


# -- isolation and statistics --------------------------------------------------------


def test_two_monitors_on_two_stores_do_not_interfere(tmp_path: Path) -> None:
    """Runs, metrics and events of two monitors on two files stay in their own store."""
    with (
        WebMonitor(make_config(tmp_path / "a")) as first,
        WebMonitor(make_config(tmp_path / "b")) as second,
    ):
        run_a = first.start_training(run_id="run-a")
        run_b = second.start_training(run_id="run-b")
        first.update_metrics({"loss": 1.0})
        second.update_metrics({"reward": 2.0})
        second.update_metrics({"reward": 3.0})
        first.record_event("only_in_a", {})

        assert [run["run_id"] for run in first.get_training_runs()] == [run_a]
        assert [run["run_id"] for run in second.get_training_runs()] == [run_b]
        assert first.get_run_metrics(run_a)["loss"].tolist() == [1.0]
        assert second.get_run_metrics(run_b)["reward"].tolist() == [2.0, 3.0]
        assert second.get_run_summary(run_b)["event_counts"] == {"run_started": 1}
        with pytest.raises(UnknownRunError):
            second.get_run_summary(run_a)


def test_statistics_count_committed_events(monitor: WebMonitor) -> None:
    """After a query, statistics() shows every accepted event committed to the store and none pending."""
    run_id = monitor.start_training()
    before = monitor.statistics()["components"]["store"]["committed_events"]
    for index in range(3):
        monitor.record_event("note", {"index": index})

    monitor.get_run_events(run_id)
    stats = monitor.statistics()

    store = stats["components"]["store"]
    assert store["committed_events"] >= before + 3
    assert store["committed_events"] == stats["components"]["app"]["intake"]["accepted_events"]
    assert store["pending_events"] == 0
    assert stats["errors"]["total"] == 0


# -- error handler ------------------------------------------------------------------


def test_error_handler_records_error_events_and_counts_them(monitor: WebMonitor) -> None:
    """handle_error stores an error event with the triage fields and counts it per category and severity."""
    run_id = monitor.start_training()
    handler = monitor.error_handler
    try:
        raise RuntimeError("CUDA out of memory")
    except RuntimeError as exc:
        handler.handle_error(exc, category=ErrorCategory.TRAINING, severity=ErrorSeverity.CRITICAL, component="gpu")
    handler.handle_error(OSError("disk full"), "checkpoint not written", ErrorCategory.SYSTEM, ErrorSeverity.WARNING)

    events = monitor.get_run_events(run_id, "error")
    assert [set(event["event_data"]) for event in events] == [ERROR_EVENT_KEYS, ERROR_EVENT_KEYS]
    first, second = (event["event_data"] for event in events)
    assert (first["category"], first["severity"], first["component"]) == ("training", "critical", "gpu")
    assert (first["message"], first["error_type"]) == ("CUDA out of memory", "RuntimeError")
    assert 'raise RuntimeError("CUDA out of memory")' in first["traceback"]
    assert (second["message"], second["error_type"], second["component"]) == ("checkpoint not written", "OSError", None)
    assert [event["level"] for event in events] == ["critical", "warning"]
    assert handler.get_error_counts() == {
        "by_category": {"training": 1, "system": 1},
        "by_severity": {"critical": 1, "warning": 1},
    }
    assert handler.total_errors == 2
    assert monitor.statistics()["errors"]["total"] == 2


class UnprintableError(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_error_handler_never_raises_on_odd_input(monitor: WebMonitor) -> None:
    """handle_error swallows odd input (unprintable errors, bad categories, non-exceptions) and keeps working."""
    handler = monitor.error_handler
    handler.handle_error(ValueError("before any run"))  # counted, but there is no run to record it in
    run_id = monitor.start_training()

    handler.handle_error(UnprintableError())
    handler.handle_error(ValueError("x"), category="no such category")  # type: ignore[arg-type]
    handler.handle_error("not an exception")  # type: ignore[arg-type]
    handler.handle_error(ValueError("after the odd ones"), component="loop")

    messages = [event["event_data"]["message"] for event in monitor.get_run_events(run_id, "error")]
    assert messages[-1] == "after the odd ones"
    assert "before any run" not in messages
    assert handler.get_error_counts()["by_category"]["unknown"] >= 2


def test_error_handler_still_counts_and_records_an_unprintable_error(monitor: WebMonitor) -> None:
    """An exception whose __str__ raises is still counted and stored as an error event of its type."""
    run_id = monitor.start_training()

    monitor.error_handler.handle_error(UnprintableError(), category=ErrorCategory.TRAINING)

    assert monitor.error_handler.get_error_counts()["by_category"] == {"training": 1}
    events = monitor.get_run_events(run_id, "error")
    assert [event["event_data"]["error_type"] for event in events] == ["UnprintableError"]


# -- crash detection and the web interface ------------------------------------------


def test_a_run_of_a_dead_process_is_marked_crashed_by_a_new_monitor(config: MonitorConfig, dead_owner: str) -> None:
    """A new WebMonitor on the store marks a running run whose owner process is dead as crashed."""
    with WebMonitor(config) as first:
        run_id = first.start_training()
        assert first.flush()
        with contextlib.closing(sqlite3.connect(config.db_path)) as conn, conn:
            conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (dead_owner, run_id))

        with WebMonitor(config) as second:
            runs = {run["run_id"]: run["status"] for run in second.get_training_runs()}
            crashed = second.get_run_events(run_id, "run_crashed")
            summary = second.get_run_summary(run_id)

    assert runs == {run_id: "crashed"}
    assert [event["event_data"]["owner"] for event in crashed] == [dead_owner]
    assert summary["end_time"] is not None


def test_web_url_serves_the_runs_api(monitor: WebMonitor) -> None:
    """web_url is an http://127.0.0.1:<port> URL whose GET /api/runs answers 200 and lists the runs."""
    run_id = monitor.start_training()
    assert monitor.flush()

    url = monitor.web_url
    assert url is not None
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", url)
    assert match is not None and 0 < int(match.group(1)) < 65536
    response = httpx.get(f"{url}/api/runs", timeout=10)

    assert response.status_code == 200
    assert run_id in response.text


def test_static_dir_serves_the_users_files_after_the_dashboards_own(tmp_path: Path) -> None:
    """Files in static_dir are served at /static/<name>; a name the dashboard uses still gets the dashboard's file."""
    own = tmp_path / "my-static"
    own.mkdir()
    (own / "notes.txt").write_text("my notes")
    (own / "style.css").write_text("not the dashboard")
    (own / "js").mkdir()
    (own / "js" / "app.js").write_text("not the dashboard")
    config = make_config(tmp_path).with_changes(static_dir=str(own))
    with WebMonitor(config) as monitor, httpx.Client(base_url=monitor.web_url, timeout=10) as client:
        notes = client.get("/static/notes.txt")
        dashboard = [client.get("/static/style.css"), client.get("/static/js/app.js")]
        missing = client.get("/static/absent.txt")

    assert (notes.status_code, notes.text) == (200, "my notes")
    for response in dashboard:
        assert response.status_code == 200 and response.text != "not the dashboard"
    assert missing.status_code == 404
