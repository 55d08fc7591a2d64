"""Tests for runwatch.integrations' shared RunRecorder, against a real monitor and store (no framework needed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runwatch import DatabaseManager, MonitorConfig, WebMonitor
from runwatch.integrations import Outcome, RunRecorder, outcome_of
from runwatch.integrations._recorder import json_safe, scalar_metrics
from runwatch.pipeline.config import default_pipeline_config

FRAMEWORKS = ["torch", "lightning", "transformers", "stable_baselines3", "gymnasium", "keras"]


@pytest.fixture
def config(tmp_path: Path) -> MonitorConfig:
    return MonitorConfig(
        db_path=str(tmp_path / "monitoring.db"),
        data_dir=str(tmp_path / "data"),
        web_port=0,
        pipeline=default_pipeline_config(),
    )


@pytest.fixture
def monitor(config: MonitorConfig) -> Iterator[WebMonitor]:
    with WebMonitor(config) as m:
        yield m


def stored(config: MonitorConfig, run_id: str) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """The run's summary, metrics and events as another reader of the store sees them."""
    with DatabaseManager(config.db_path) as db:
        return db.get_run_summary(run_id), db.get_run_metrics(run_id), db.get_run_events(run_id)


def test_importing_the_integrations_package_imports_no_framework() -> None:
    """`import runwatch.integrations` loads none of the frameworks nor any integration module."""
    modules = [*FRAMEWORKS, "runwatch.integrations.lightning", "runwatch.integrations.keras"]
    code = f"import json, sys, runwatch.integrations; print(json.dumps([m for m in {modules!r} if m in sys.modules]))"

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)

    assert json.loads(completed.stdout) == []


def test_the_integrations_package_exports_the_shared_recorder() -> None:
    """runwatch.integrations exposes exactly the recorder, the outcome enum and outcome_of."""
    import runwatch.integrations

    assert runwatch.integrations.__all__ == ["Outcome", "RunRecorder", "outcome_of"]
    assert [outcome.value for outcome in Outcome] == ["completed", "failed", "interrupted"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(None, (Outcome.COMPLETED, None), id="returned"),
        pytest.param(SystemExit(0), (Outcome.COMPLETED, None), id="exit-0"),
        pytest.param(KeyboardInterrupt(), (Outcome.INTERRUPTED, "KeyboardInterrupt"), id="ctrl-c"),
        pytest.param(ValueError("bad lr"), (Outcome.FAILED, "ValueError: bad lr"), id="error"),
        pytest.param(SystemExit(1), (Outcome.FAILED, "SystemExit: 1"), id="exit-1"),
    ],
)
def test_outcome_of_maps_how_training_ended(error: BaseException | None, expected: tuple[Outcome, str | None]) -> None:
    """A return or exit 0 completes, Ctrl-C interrupts, anything else fails with 'Type: message'."""
    assert outcome_of(error) == expected


def test_scalar_metrics_keeps_numbers_flattens_groups_and_counts_the_rest() -> None:
    """Numbers, bools and numpy scalars are kept, groups flatten to a/b, strings/None/arrays are counted out."""
    values = {
        "loss": 0.5,
        "step": 3,
        "stopped": True,
        "lr": np.float32(0.25),
        "eval": {"acc": np.int64(1)},
        "name": "run",
        "nothing": None,
        "vector": np.arange(3),
        "": 1.0,
    }

    kept, skipped = scalar_metrics(values)

    assert kept == {"loss": 0.5, "step": 3, "stopped": 1.0, "lr": 0.25, "eval/acc": 1.0}
    assert skipped == 4


def test_json_safe_turns_what_json_cannot_hold_into_text() -> None:
    """Enums, paths, tuples, sets, numpy scalars and huge ints become JSON; other objects their text."""

    class Mode(Enum):
        FAST = "fast"

    value = {
        "mode": Mode.FAST,
        "dir": Path("/tmp/x"),
        "shape": (1, 2),
        "tags": {"b", "a"},
        "lr": np.float64(0.1),
        "big": 2**70,
        "activation": math.floor,
        1: "key",
    }

    assert json_safe(value) == {
        "mode": "fast",
        "dir": "/tmp/x",
        "shape": [1, 2],
        "tags": ["a", "b"],
        "lr": 0.1,
        "big": str(2**70),
        "activation": str(math.floor),
        "1": "key",
    }


def test_first_record_starts_an_owned_run_and_finish_completes_it(config: MonitorConfig, monitor: WebMonitor) -> None:
    """Metrics start a run with framework config under the user's; finish(completed) ends it, committed."""
    recorder = RunRecorder(monitor, component="test", config={"lr": 0.1})
    recorder.start({"lr": 0.5, "epochs": 3})
    recorder.log_metrics({"loss": 1.0, "note": "text"}, step=7)

    recorder.finish(Outcome.COMPLETED)

    assert recorder.run_id is not None and recorder.owns_run
    run, metrics, _ = stored(config, recorder.run_id)
    assert (run["status"], run["config"]) == ("completed", {"lr": 0.1, "epochs": 3})
    assert (list(metrics["step"]), list(metrics["loss"])) == ([7], [1.0])
    assert recorder.statistics()["skipped_values"] == 1


@pytest.mark.parametrize(
    ("outcome", "reason", "stored_reason"),
    [
        pytest.param(Outcome.FAILED, "ValueError: x", "ValueError: x", id="failed"),
        pytest.param(Outcome.INTERRUPTED, "KeyboardInterrupt", "interrupted: KeyboardInterrupt", id="interrupted"),
    ],
)
def test_failure_and_interruption_fail_the_run_with_a_reason(
    config: MonitorConfig, monitor: WebMonitor, outcome: Outcome, reason: str, stored_reason: str
) -> None:
    """A failed or interrupted training leaves the run failed with the reason (interrupted: prefixed)."""
    recorder = RunRecorder(monitor, component="test")
    recorder.log_metrics({"loss": 1.0})

    recorder.finish(outcome, reason)

    assert recorder.run_id is not None
    run, _, _ = stored(config, recorder.run_id)
    assert (run["status"], run["metadata"]) == ("failed", {"reason": stored_reason})


def test_a_failure_before_any_record_is_still_a_failed_run(config: MonitorConfig, monitor: WebMonitor) -> None:
    """finish(failed) with nothing recorded yet starts the run to fail it, so the failure is visible."""
    recorder = RunRecorder(monitor, component="test")

    recorder.finish(Outcome.FAILED, "OSError: no data")

    assert recorder.run_id is not None
    assert stored(config, recorder.run_id)[0]["status"] == "failed"


def test_only_the_first_outcome_counts(config: MonitorConfig, monitor: WebMonitor) -> None:
    """A second finish (a later stage failing after the run completed) does not change the run's status."""
    recorder = RunRecorder(monitor, component="test")
    recorder.log_metrics({"loss": 1.0})
    recorder.finish(Outcome.COMPLETED)

    recorder.finish(Outcome.FAILED, "late")

    assert recorder.run_id is not None
    assert stored(config, recorder.run_id)[0]["status"] == "completed"
    assert recorder.outcome is Outcome.COMPLETED


def test_records_after_the_end_go_into_the_ended_run_without_reopening_it(
    config: MonitorConfig, monitor: WebMonitor
) -> None:
    """Metrics and events after finish land in the completed run, which stays completed."""
    recorder = RunRecorder(monitor, component="test")
    recorder.log_metrics({"loss": 1.0}, step=1)
    recorder.finish(Outcome.COMPLETED)

    recorder.log_metrics({"eval_loss": 2.0}, step=1)
    recorder.log_event("evaluated", {"split": "test"})
    monitor.flush()

    assert recorder.run_id is not None
    run, metrics, events = stored(config, recorder.run_id)
    assert run["status"] == "completed"
    assert list(metrics["eval_loss"].dropna()) == [2.0]
    assert [e["event_data"] for e in events if e["event_type"] == "evaluated"] == [{"split": "test"}]


def test_an_active_run_is_adopted_not_ended(config: MonitorConfig, monitor: WebMonitor) -> None:
    """With a run active, the recorder records into it; its outcome becomes a training_end event, not the status."""
    run_id = monitor.start_training({"mine": True})
    recorder = RunRecorder(monitor, component="test")
    recorder.start({"lr": 0.1})
    recorder.log_metrics({"loss": 1.0})

    recorder.finish(Outcome.FAILED, "RuntimeError: boom")

    assert (recorder.run_id, recorder.owns_run, monitor.current_run_id) == (run_id, False, run_id)
    monitor.stop_training()
    monitor.flush()
    run, _, events = stored(config, run_id)
    assert (run["status"], run["config"]) == ("completed", {"mine": True})
    by_type = {e["event_type"]: e for e in events}
    assert by_type["hyperparameters"]["event_data"] == {"lr": 0.1}
    assert by_type["training_end"]["event_data"] == {
        "component": "test",
        "outcome": "failed",
        "reason": "RuntimeError: boom",
    }
    assert by_type["training_end"]["level"] == "error"


def test_begin_after_an_unfinished_training_fails_it_then_resumes(config: MonitorConfig, monitor: WebMonitor) -> None:
    """begin() while the last begun training never finished marks that run failed, then resumes it."""
    recorder = RunRecorder(monitor, component="test")
    recorder.begin({"attempt": 1})
    recorder.begin({"attempt": 2})
    recorder.finish(Outcome.COMPLETED)

    assert recorder.run_id is not None
    run, _, events = stored(config, recorder.run_id)
    assert [e["event_type"] for e in events if e["kind"] == "lifecycle"] == [
        "run_started",
        "run_failed",
        "run_resumed",
        "run_completed",
    ]
    assert (run["status"], run["config"]) == ("completed", {"attempt": 2})


def test_a_monitor_config_makes_an_owned_monitor_closed_by_close(config: MonitorConfig) -> None:
    """Given a MonitorConfig, the monitor is created at the first record; close() completes the run and closes it."""
    recorder = RunRecorder(config, component="test")
    assert recorder.monitor is None
    recorder.log_metrics({"loss": 1.0})
    own = recorder.monitor

    recorder.close()

    assert isinstance(own, WebMonitor) and own.statistics()["running"] is False
    assert recorder.run_id is not None
    assert stored(config, recorder.run_id)[0]["status"] == "completed"


def test_with_block_exit_on_an_exception_fails_the_run(config: MonitorConfig, monitor: WebMonitor) -> None:
    """Leaving the recorder's with-block on an exception fails its unfinished run and lets the exception through."""
    with pytest.raises(ZeroDivisionError), RunRecorder(monitor, component="test") as recorder:
        recorder.log_metrics({"loss": 1.0})
        1 / 0  # noqa: B018 - the error is the test

    assert recorder.run_id is not None
    run, _, _ = stored(config, recorder.run_id)
    assert (run["status"], run["metadata"]["reason"]) == ("failed", "ZeroDivisionError: division by zero")


def test_runwatch_trouble_is_counted_reported_and_never_raised(config: MonitorConfig) -> None:
    """On a closed monitor every method returns quietly; failures are counted per method and reported once."""
    monitor = WebMonitor(config)
    recorder = RunRecorder(monitor, component="test")
    recorder.log_metrics({"loss": 1.0})
    monitor.close()

    for step in range(5):
        recorder.log_metrics({"loss": 1.0}, step=step)
    recorder.log_event("checkpoint_saved", {"path": "x"})
    recorder.finish(Outcome.COMPLETED)
    recorder.close()

    stats = recorder.statistics()
    assert stats["errors_by_method"]["log_metrics"] == 5
    assert stats["errors"] >= 6
    assert monitor.error_handler.get_error_counts()["by_category"]["system"] == len(
        {(m, "ValueError") for m in stats["errors_by_method"]}
    )


def test_bad_arguments_are_refused_when_the_recorder_is_made() -> None:
    """A monitor of another type, a non-mapping config or an empty run id raise at construction."""
    with pytest.raises(TypeError, match="monitor must be a WebMonitor"):
        RunRecorder("monitoring.db", component="test")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a mapping"):
        RunRecorder(component="test", config=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_id"):
        RunRecorder(component="test", run_id=" ")
