"""Tests for runwatch.alerts.stage: the ``alerts`` stage in a real pipeline, its state file and its service."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from helpers import context
from plugins_for_tests import RecordingSink

from runwatch.alerts.engine import AlertEngine
from runwatch.alerts.rules import DEFAULT_RULES, NonFiniteRule, ThresholdRule
from runwatch.alerts.stage import ALERT_ENGINE, AlertsStage, effective_rules
from runwatch.events import AlertEvent, Heartbeat, Metric
from runwatch.exceptions import ConfigError
from runwatch.pipeline.component import Output
from runwatch.pipeline.config import load_pipeline_config, resolve_component_class
from runwatch.pipeline.runtime import Pipeline

# Guards every await that could hang; nothing here legitimately takes this long.
TIMEOUT = 10
# Time-driven work (ticks, periodic commits) never happens during a test: flushes and stops drive everything.
NEVER = 3600.0
TS = 1_700_000_000.0
RECORDING = f"{RecordingSink.__module__}:RecordingSink"


def config(tmp_path: Path, sink: dict[str, Any] | None = None, **stage_options: Any) -> dict[str, Any]:
    """in_process source → alerts stage → one sink (a RecordingSink unless given)."""
    return {
        "sources": {"app": {"type": "in_process"}},
        "stages": {
            "alerts": {
                "type": "alerts",
                "inputs": ["app"],
                "evaluate_interval_seconds": NEVER,
                "state_path": str(tmp_path / "alerts.json"),
                **stage_options,
            }
        },
        "sinks": {"out": sink or {"type": RECORDING, "inputs": ["alerts"]}},
    }


async def flushed(pipeline: Pipeline) -> None:
    """Wait until everything emitted so far has reached every sink."""
    with anyio.fail_after(TIMEOUT):
        assert await pipeline.flush(timeout=TIMEOUT) is True


def alerts_in(events: list[Any]) -> list[AlertEvent]:
    """The alert events among ``events``."""
    return [event for event in events if isinstance(event, AlertEvent)]


class RecordingOutput(Output):
    """An output that keeps what a stage sends instead of feeding buffers."""

    def __init__(self) -> None:
        super().__init__([])
        self.batches: list[list[Any]] = []

    async def send(self, batch: list[Any]) -> None:
        self.batches.append(batch)


# -- in a pipeline ------------------------------------------------------------------------------------


async def test_nan_loss_fires_an_alert_downstream_within_the_same_flush(tmp_path: Path) -> None:
    """A NaN loss reaches the sink unchanged, followed by a firing critical alert, by the time flush() returns."""
    nan_loss = Metric("run-1", TS, {"loss": math.nan, "acc": 0.5}, step=7)
    async with Pipeline(config(tmp_path), context=context(tmp_path)) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"loss": 0.5}, step=6))
        pipeline.emit(nan_loss)
        await flushed(pipeline)

        sink = pipeline.component("out")
        assert isinstance(sink, RecordingSink)
        events = sink.events
        assert events[0] == Metric("run-1", TS, {"loss": 0.5}, step=6)
        assert events[1] is nan_loss  # the very event, unchanged
        (alert,) = alerts_in(events)
        assert events[-1] is alert
        assert (alert.rule, alert.state, alert.severity, alert.labels) == (
            "non_finite_metric",
            "firing",
            "critical",
            {"metric": "loss"},
        )
        assert alert.annotations == {"summary": "loss is nan in run run-1"}


async def test_alert_events_are_stored_as_alert_rows(tmp_path: Path) -> None:
    """Downstream of the stage, the SQLite store records each transition as an 'alert' event."""
    db = tmp_path / "runs.db"
    store = {"type": "sqlite", "inputs": ["alerts"], "path": str(db), "flush_interval_seconds": NEVER}
    async with Pipeline(config(tmp_path, sink=store), context=context(tmp_path)) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"loss": math.inf}))
        pipeline.emit(Metric("run-1", TS + 1, {"loss": 0.25}))  # a later batch may resolve it; at least one row
        await flushed(pipeline)

        def rows() -> list[tuple[Any, ...]]:
            connection = sqlite3.connect(db)
            try:
                return connection.execute("SELECT kind, type, level, data FROM events WHERE kind = 'alert'").fetchall()
            finally:
                connection.close()

        with anyio.fail_after(TIMEOUT):
            stored = await anyio.to_thread.run_sync(rows)
    kind, type_, level, data = stored[0]
    assert (kind, type_, level) == ("alert", "alert", "critical")
    assert json.loads(data) | {"active_since": None} == {
        "rule": "non_finite_metric",
        "state": "firing",
        "severity": "critical",
        "value": None,  # +Inf has no JSON form
        "labels": {"metric": "loss"},
        "annotations": {"summary": "loss is inf in run run-1"},
        "active_since": None,
    }


async def test_firing_state_survives_a_restart(tmp_path: Path) -> None:
    """A firing alert is saved on close, restored by the next pipeline, and resolves there with its old active_since."""
    async with Pipeline(config(tmp_path), context=context(tmp_path)) as first:
        first.emit(Metric("run-1", TS, {"loss": math.nan}))
        await flushed(first)
        (fired,) = alerts_in(first.component("out").events)  # type: ignore[attr-defined]
    saved = json.loads(await anyio.Path(tmp_path / "alerts.json").read_text())
    assert [(i["rule"], i["state"]) for i in saved["instances"]] == [("non_finite_metric", "firing")]

    async with Pipeline(config(tmp_path), context=context(tmp_path)) as second:
        engine = second.context.services[ALERT_ENGINE]
        assert [(a["rule"], a["state"], a["active_since"]) for a in engine.active_alerts(run_id="run-1")] == [
            ("non_finite_metric", "firing", fired.active_since)
        ]
        second.emit(Metric("run-1", TS + 5, {"loss": math.nan}))  # still NaN: no second "firing"
        await flushed(second)
        second.emit(Metric("run-1", TS + 6, {"loss": 0.1}))
        await flushed(second)
        alerts = alerts_in(second.component("out").events)  # type: ignore[attr-defined]

    assert [(a.state, a.active_since) for a in alerts] == [("resolved", fired.active_since)]


async def test_the_engine_is_a_service_while_the_stage_runs(tmp_path: Path) -> None:
    """The ALERT_ENGINE service answers active_alerts() while running and is gone after close."""
    ctx = context(tmp_path)
    async with Pipeline(config(tmp_path), context=ctx) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"loss": math.nan}))
        pipeline.emit(Metric("run-2", TS, {"loss": 1.0}))
        await flushed(pipeline)
        service = ctx.services[ALERT_ENGINE]
        assert service is pipeline.component("alerts").engine  # type: ignore[attr-defined]
        assert [a["run_id"] for a in service.active_alerts(severity="critical")] == ["run-1"]
        assert service.active_alerts(run_id="run-2") == []
        stats = pipeline.statistics()["components"]["alerts"]
        assert (stats["rules"], stats["firing"], stats["alert_events_total"]) == (len(DEFAULT_RULES), 1, 1)
    assert ALERT_ENGINE not in ctx.services


async def test_no_rules_only_forwards(tmp_path: Path) -> None:
    """With default_rules false and no rules the stage is a pass-through."""
    async with Pipeline(config(tmp_path, default_rules=False), context=context(tmp_path)) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"loss": math.nan}))
        await flushed(pipeline)
        events = pipeline.component("out").events  # type: ignore[attr-defined]

    assert len(events) == 1 and alerts_in(events) == []


async def test_configured_rules_run_beside_the_defaults(tmp_path: Path) -> None:
    """A configured threshold fires alongside the default NaN rule."""
    rules = [{"kind": "threshold", "name": "acc_low", "metric": "acc", "op": "<", "threshold": 0.1, "severity": "info"}]
    async with Pipeline(config(tmp_path, rules=rules), context=context(tmp_path)) as pipeline:
        pipeline.emit(Metric("run-1", TS, {"loss": math.nan, "acc": 0.05}))
        await flushed(pipeline)
        alerts = alerts_in(pipeline.component("out").events)  # type: ignore[attr-defined]

    assert sorted((a.rule, a.severity) for a in alerts) == [("acc_low", "info"), ("non_finite_metric", "critical")]


async def test_an_evaluation_error_is_counted_and_the_batch_still_forwarded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the engine raises, the batch still goes downstream; the error is counted and logged."""
    async with Pipeline(config(tmp_path), context=context(tmp_path)) as pipeline:
        stage = pipeline.component("alerts")
        assert isinstance(stage, AlertsStage)

        def broken(events: Any, now: float) -> list[AlertEvent]:
            raise RuntimeError("rule bug")

        stage.engine.observe = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="runwatch.alerts"):
            pipeline.emit(Metric("run-1", TS, {"loss": 1.0}))
            await flushed(pipeline)
        assert len(pipeline.component("out").events) == 1  # type: ignore[attr-defined]
        stats = pipeline.statistics()["components"]["alerts"]
        assert (stats["evaluation_errors_total"], stats["errors"], stats["dropped_events"]) == (1, 0, {})
    assert "failed to evaluate a batch" in caplog.text


# -- the stage alone: ticks and the state file ----------------------------------------------------------------


def stage_at(tmp_path: Path, **options: Any) -> AlertsStage:
    """An AlertsStage built as the config loader would, with its state in tmp_path."""
    spec = load_pipeline_config(config(tmp_path, **options)).get("alerts")
    return AlertsStage("alerts", spec.options, context(tmp_path))


async def test_tick_fires_absence_and_saves_state_only_when_it_changed(tmp_path: Path) -> None:
    """tick() sends the hang alert 120 s after the last heartbeat and saves the state only when it changed."""
    stage = stage_at(tmp_path)
    output = stage.output = RecordingOutput()  # type: ignore[assignment]
    await stage.start()
    try:
        now = time.time()
        await stage.write([Heartbeat("run-1", now)])
        await stage.tick(now + 60)
        await stage.tick(now + 61)  # nothing changed since
        assert stage.statistics()["state_snapshots_total"] == 1

        await stage.tick(now + 121)
    finally:
        await stage.aclose()

    alerts = [event for batch in output.batches for event in batch if isinstance(event, AlertEvent)]
    assert [(a.rule, a.state, a.labels) for a in alerts] == [("heartbeat_absent", "firing", {"condition": "hung"})]
    assert stage.statistics()["state_snapshots_total"] == 2
    assert 1 <= stage.statistics()["state_writes_total"] <= 2  # the writer may skip a superseded snapshot
    saved = json.loads(await anyio.Path(tmp_path / "alerts.json").read_text())
    assert [(i["rule"], i["state"]) for i in saved["instances"]] == [("heartbeat_absent", "firing")]
    assert [path async for path in anyio.Path(tmp_path).glob(".*.tmp")] == []  # the atomic write left none


async def test_default_state_path_is_in_the_data_dir(tmp_path: Path) -> None:
    """Without state_path the state goes to <data_dir>/alerts_state.json (created on close)."""
    spec = load_pipeline_config(
        {
            "sources": {"app": {"type": "in_process"}},
            "stages": {"alerts": {"type": "alerts", "inputs": ["app"]}},
            "sinks": {"out": {"type": RECORDING, "inputs": ["alerts"]}},
        }
    ).get("alerts")
    stage = AlertsStage("alerts", spec.options, context(tmp_path))
    await stage.start()
    await stage.aclose()

    assert stage.state_path == tmp_path / "data" / "alerts_state.json"
    assert json.loads(await anyio.Path(stage.state_path).read_text())["version"] == 1
    assert stage.tick_interval_seconds == 1.0


async def test_a_corrupt_state_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unreadable state file is moved to *.corrupt, logged, and the stage starts afresh."""
    await anyio.Path(tmp_path / "alerts.json").write_text('{"version": 1, "instances": [{"rule": "non_finite", "kind"')
    stage = stage_at(tmp_path)
    with caplog.at_level(logging.ERROR, logger="runwatch.alerts"):
        await stage.start()
    await stage.aclose()

    assert await anyio.Path(tmp_path / "alerts.json.corrupt").exists()
    assert "is unusable" in caplog.text
    assert json.loads(await anyio.Path(tmp_path / "alerts.json").read_text())["instances"] == []


async def test_a_state_file_the_engine_rejects_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Valid JSON that is not a snapshot is set aside too, naming what is wrong."""
    await anyio.Path(tmp_path / "alerts.json").write_text('{"version": 42}')
    stage = stage_at(tmp_path)
    with caplog.at_level(logging.ERROR, logger="runwatch.alerts"):
        await stage.start()
    await stage.aclose()

    assert await anyio.Path(tmp_path / "alerts.json.corrupt").read_text() == '{"version": 42}'
    assert "snapshot.version" in caplog.text


async def test_a_failing_state_write_is_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """If the state file cannot be read or written the stage still works; failures are counted and logged."""
    blocker = anyio.Path(tmp_path / "not-a-dir")
    await blocker.write_text("a file where a directory should be")
    stage = stage_at(tmp_path, state_path=str(tmp_path / "not-a-dir" / "alerts.json"))
    stage.output = RecordingOutput()  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="runwatch.alerts"):
        await stage.start()
        await stage.write([Metric("run-1", TS, {"loss": math.nan})])
        await stage.aclose()

    stats = stage.statistics()
    assert (stats["state_writes_total"], stats["state_write_errors_total"], stats["firing"]) == (0, 1, 1)
    assert stats["last_state_error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert "cannot read the alert state" in caplog.text and "cannot save the alert state" in caplog.text


# -- configuration -------------------------------------------------------------------------------------------------


def test_alerts_is_a_builtin_stage_type() -> None:
    """The type name 'alerts' resolves to AlertsStage."""
    assert resolve_component_class("alerts") is AlertsStage


@pytest.mark.parametrize(
    ("rules", "path", "reason"),
    [
        pytest.param(
            [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{valeu}"}}],
            "stages.alerts.rules.0",
            "annotations.summary: unknown template field {valeu}",
            id="template",
        ),
        pytest.param(
            [{"kind": "non_finite", "name": "ok"}, {"kind": "threshold", "name": "t", "metric": "m", "op": ">"}],
            "stages.alerts.rules.1",
            "threshold: is required for a threshold rule",
            id="missing-field",
        ),
        pytest.param(
            [{"kind": "non_finite", "name": "a"}, {"kind": "non_finite", "name": "a"}],
            "stages.alerts.rules",
            "rules[1].name: duplicate rule name 'a' (also rules[0])",
            id="duplicate",
        ),
        pytest.param("loss > 1", "stages.alerts.rules", "list", id="not-a-list"),
    ],
)
def test_bad_rules_are_config_errors_at_load(tmp_path: Path, rules: Any, path: str, reason: str) -> None:
    """Loading a pipeline config validates the rules; the error names the stage, the rule and the field."""
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(config(tmp_path, rules=rules))

    assert caught.value.path == path
    assert reason in caught.value.reason


def test_effective_rules_merge_defaults_and_configured_ones() -> None:
    """Configured rules come after the defaults; one named like a default replaces it; defaults can be left out."""
    custom = {"kind": "non_finite", "name": "non_finite_metric", "severity": "page"}
    extra = {"kind": "threshold", "name": "t", "metric": "loss", "op": ">", "threshold": 1}

    rules = effective_rules([custom, extra])

    names = [rule.name for rule in rules]
    assert names == ["error_burst", "critical_error", "heartbeat_absent", "non_finite_metric", "t"]
    assert isinstance(rules[3], NonFiniteRule) and rules[3].severity == "page"
    assert isinstance(rules[4], ThresholdRule)
    assert effective_rules(None) == list(DEFAULT_RULES)
    assert effective_rules(None, default_rules=False) == []
    with pytest.raises(ConfigError, match=r"^rules\[1\]\.op: "):
        effective_rules([custom, {**extra, "op": "~"}])


def test_the_registered_service_is_a_pure_engine(tmp_path: Path) -> None:
    """The stage holds an AlertEngine built from its effective rules (the service the API will use)."""
    stage = stage_at(tmp_path, rules=[{"kind": "anomaly", "name": "z", "metric": "loss"}])

    assert isinstance(stage.engine, AlertEngine)
    assert [rule.name for rule in stage.engine.rules] == [rule.name for rule in DEFAULT_RULES] + ["z"]
