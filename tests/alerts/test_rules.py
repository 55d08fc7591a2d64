"""Tests for runwatch.alerts (rules, engine, conditions): pure and synchronous, time passed in as ``now``."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from runwatch.alerts import AlertEngine
from runwatch.alerts.conditions import AnomalyCondition
from runwatch.alerts.rules import (
    DEFAULT_RULES,
    AbsenceRule,
    AnomalyRule,
    NonFiniteRule,
    RateRule,
    Rule,
    StagnationRule,
    ThresholdRule,
    parse_rules,
)
from runwatch.events import AlertEvent, ExceptionEvent, Heartbeat, LogEvent, Metric, RunLifecycle, StatePatch
from runwatch.exceptions import ConfigError

NOW = 1_700_000_000.0
NAN = math.nan
INF = math.inf


def metric(ts: float = NOW, run: str = "run-1", **values: float) -> Metric:
    """One logging call of ``values`` at event time ``ts``."""
    return Metric(run, ts, values)


def error(ts: float = NOW, run: str = "run-1", level: str = "error", type: str = "oops") -> LogEvent:
    """A log event of ``level``."""
    return LogEvent(run, ts, type, level)


def transitions(events: list[AlertEvent]) -> list[tuple[str, str]]:
    """(rule, state) of each alert event, in order."""
    return [(event.rule, event.state) for event in events]


def loss_above(threshold: float = 1.0, **options: Any) -> ThresholdRule:
    """A threshold rule ``loss > threshold``."""
    return ThresholdRule(name="loss_high", metric="loss", op=">", threshold=threshold, **options)


# -- parsing and validation ------------------------------------------------------------------------

VALID_TABLES = [
    pytest.param(
        {"kind": "threshold", "name": "t", "metric": "loss", "op": ">=", "threshold": 3, "aggregate": "mean"},
        ThresholdRule,
        id="threshold",
    ),
    pytest.param({"kind": "non_finite", "name": "n", "metrics": ["loss", "grad/*"]}, NonFiniteRule, id="non_finite"),
    pytest.param({"kind": "rate", "name": "r", "window_seconds": 60, "limit": 5}, RateRule, id="rate"),
    pytest.param(
        {"kind": "absence", "name": "a", "target": "heartbeat", "duration_seconds": 30}, AbsenceRule, id="absence"
    ),
    pytest.param({"kind": "stagnation", "name": "s", "metric": "loss", "steps": 100}, StagnationRule, id="stagnation"),
    pytest.param({"kind": "anomaly", "name": "z", "metric": "reward", "z": 3}, AnomalyRule, id="anomaly"),
]


@pytest.mark.parametrize(("table", "cls"), VALID_TABLES)
def test_parse_rules_builds_every_kind(table: dict[str, Any], cls: type[Rule]) -> None:
    """Each kind's table becomes an instance of its rule class with the common defaults."""
    (rule,) = parse_rules([table])

    assert type(rule) is cls
    assert rule.kind == table["kind"]
    assert (rule.for_seconds, rule.keep_firing_for_seconds, rule.severity) == (0.0, 0.0, "warning")


def test_parse_rules_normalises_shorthand_and_numbers() -> None:
    """A single string stands for a list of one, and whole numbers become floats."""
    (rule,) = parse_rules([{"kind": "non_finite", "name": "n", "metrics": "loss", "for_seconds": 5}])

    assert isinstance(rule, NonFiniteRule)
    assert rule.metrics == ("loss",)
    assert rule.for_seconds == 5.0 and type(rule.for_seconds) is float


BAD_TABLES = [
    pytest.param("nope", "rules", "must be a list", id="not-a-list"),
    pytest.param([42], "rules[0]", "must be a table", id="not-a-table"),
    pytest.param([{"kind": "magic", "name": "x"}], "rules[0].kind", "must be one of", id="unknown-kind"),
    pytest.param(
        [{"kind": "threshold", "name": "x", "op": ">", "threshold": 1}], "rules[0].metric", "required", id="missing"
    ),
    pytest.param(
        [{"kind": "rate", "name": "x", "window_seconds": 1, "limit": 1, "colour": "red"}],
        "rules[0].colour",
        "unknown field",
        id="unknown-field",
    ),
    pytest.param(
        [{"kind": "threshold", "name": "x", "metric": "loss", "op": "=>", "threshold": 1}], "rules[0].op", "=>", id="op"
    ),
    pytest.param(
        [{"kind": "threshold", "name": "x", "metric": "loss", "op": ">", "threshold": "high"}],
        "rules[0].threshold",
        "must be a number",
        id="threshold-type",
    ),
    pytest.param(
        [{"kind": "threshold", "name": "x", "metric": "loss", "op": ">", "threshold": True}],
        "rules[0].threshold",
        "must be a number",
        id="bool-is-not-a-number",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "for_seconds": -1}], "rules[0].for_seconds", "at least 0", id="negative"
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "severity": "fatal"}], "rules[0].severity", "page", id="severity"
    ),
    pytest.param([{"kind": "non_finite", "name": ""}], "rules[0].name", "must not be empty", id="empty-name"),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "labels": {"1st": "a"}}], "rules[0].labels.1st", "label name", id="label"
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "labels": {"metric": "a"}}],
        "rules[0].labels.metric",
        "reserved",
        id="reserved",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "labels": {"team": 3}}],
        "rules[0].labels.team",
        "must be a string",
        id="label-value",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{valu}"}}],
        "rules[0].annotations.summary",
        "unknown template field {valu}",
        id="template-field",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{value.__class__}"}}],
        "rules[0].annotations.summary",
        "unknown template field",
        id="template-attribute",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{value:d}"}}],
        "rules[0].annotations.summary",
        "cannot be rendered",
        id="template-spec",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{value"}}],
        "rules[0].annotations.summary",
        "not a valid template",
        id="template-syntax",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "x", "annotations": {"summary": "{0}"}}],
        "rules[0].annotations.summary",
        "unknown template field",
        id="template-positional",
    ),
    pytest.param(
        [{"kind": "rate", "name": "x", "window_seconds": 60, "limit": 1, "levels": ["loud"]}],
        "rules[0].levels[0]",
        "must be one of",
        id="rate-level",
    ),
    pytest.param(
        [{"kind": "rate", "name": "x", "window_seconds": 60, "limit": 1, "op": "<"}],
        "rules[0].op",
        "must be one of",
        id="rate-op",
    ),
    pytest.param(
        [{"kind": "rate", "name": "x", "window_seconds": 0, "limit": 1}],
        "rules[0].window_seconds",
        "greater than 0",
        id="rate-window",
    ),
    pytest.param(
        [{"kind": "absence", "name": "x", "target": "heartbeat", "duration_seconds": 9, "metric": "loss"}],
        "rules[0].metric",
        'target = "metric"',
        id="absence-metric",
    ),
    pytest.param(
        [{"kind": "stagnation", "name": "x", "metric": "loss", "steps": 10, "window_seconds": 60}],
        "rules[0].steps",
        "exactly one",
        id="stagnation-both",
    ),
    pytest.param(
        [{"kind": "stagnation", "name": "x", "metric": "loss", "steps": 1.5}],
        "rules[0].steps",
        "must be an integer",
        id="stagnation-steps",
    ),
    pytest.param(
        [{"kind": "anomaly", "name": "x", "metric": "loss", "window_values": 10, "min_values": 20}],
        "rules[0].min_values",
        "between 2 and 10",
        id="anomaly-min-values",
    ),
    pytest.param(
        [{"kind": "non_finite", "name": "a"}, {"kind": "non_finite", "name": "a"}],
        "rules[1].name",
        "duplicate rule name 'a' (also rules[0])",
        id="duplicate",
    ),
]


@pytest.mark.parametrize(("data", "path", "message"), BAD_TABLES)
def test_parse_errors_name_the_field(data: Any, path: str, message: str) -> None:
    """A bad rule table raises ConfigError whose path is ``rules[i].field`` and whose reason says what is wrong."""
    with pytest.raises(ConfigError) as caught:
        parse_rules(data)

    assert caught.value.path == path
    assert message in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_constructing_a_rule_validates_too() -> None:
    """Rules built in code are validated like parsed ones; ConfigError is a ValueError."""
    with pytest.raises(ValueError, match="op: must be one of"):
        ThresholdRule(name="x", metric="loss", op="gt", threshold=1)
    with pytest.raises(TypeError, match="base class"):
        Rule(name="x")


def test_rules_are_frozen_with_read_only_mappings() -> None:
    """A rule cannot be changed after construction, nor can its labels."""
    rule = NonFiniteRule(name="n", labels={"team": "ml"})

    with pytest.raises(AttributeError):
        rule.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rule.labels["team"] = "ops"  # type: ignore[index]


def test_default_rules_cover_nan_error_bursts_and_hangs() -> None:
    """The defaults: non-finite → critical, ≥10 errors in 60 s → error, 120 s without heartbeat → warning 'hung'."""
    by_name = {rule.name: rule for rule in DEFAULT_RULES}

    non_finite, burst, hung = by_name["non_finite_metric"], by_name["error_burst"], by_name["heartbeat_absent"]
    assert isinstance(non_finite, NonFiniteRule) and non_finite.severity == "critical" and non_finite.metrics == ()
    assert isinstance(burst, RateRule) and burst.severity == "error"
    assert (burst.op, burst.limit, burst.window_seconds, set(burst.levels)) == (">=", 10, 60.0, {"error", "critical"})
    assert isinstance(hung, AbsenceRule) and hung.severity == "warning"
    assert (hung.target, hung.duration_seconds, dict(hung.labels)) == ("heartbeat", 120.0, {"condition": "hung"})


def test_engine_rejects_duplicate_names_and_non_rules() -> None:
    """An engine needs rules with unique names."""
    with pytest.raises(ConfigError, match="duplicate rule name"):
        AlertEngine([NonFiniteRule(name="a"), NonFiniteRule(name="a")])
    with pytest.raises(TypeError, match="must be a rule"):
        AlertEngine([{"kind": "non_finite", "name": "a"}])  # type: ignore[list-item]


# -- templates -------------------------------------------------------------------------------------


def test_annotations_render_value_run_metric_and_labels() -> None:
    """Templates fill in value (with a spec), run_id, metric, rule, severity and labels; a missing label is empty."""
    rule = loss_above(
        2.0,
        severity="page",
        labels={"team": "ml"},
        annotations={
            "summary": "{metric}={value:.2f} in {run_id} ({rule}/{severity}, team {labels[team]}{labels[nope]})",
            "plain": "value {value}",
        },
    )
    (event,) = AlertEngine([rule]).observe([metric(loss=3.14159)], NOW)

    assert event.annotations == {"summary": "loss=3.14 in run-1 (loss_high/page, team ml)", "plain": "value 3.14159"}
    assert event.labels == {"team": "ml", "metric": "loss"}
    assert event.severity == "page"


def test_integral_values_render_without_a_fraction() -> None:
    """A count renders as '10', not '10.0'; NaN renders as 'nan'."""
    engine = AlertEngine([RateRule(name="burst", window_seconds=60, limit=9, annotations={"s": "{value} errors"})])
    (event,) = engine.observe([error(NOW + i) for i in range(10)], NOW)
    assert event.annotations == {"s": "10 errors"}

    engine = AlertEngine([NonFiniteRule(name="n", annotations={"s": "{value:.3f}!"})])
    (event,) = engine.observe([metric(loss=NAN)], NOW)
    assert event.annotations == {"s": "nan!"}


# -- threshold -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        pytest.param(">", 1.5, True, id="gt"),
        pytest.param(">", 1.0, False, id="gt-equal"),
        pytest.param(">=", 1.0, True, id="ge"),
        pytest.param("<", 0.5, True, id="lt"),
        pytest.param("<=", 1.0, True, id="le"),
        pytest.param("==", 1.0, True, id="eq"),
        pytest.param("!=", 1.0, False, id="ne"),
        pytest.param(">", NAN, False, id="nan-never-greater"),
    ],
)
def test_threshold_operators(op: str, value: float, fires: bool) -> None:
    """Each operator compares the last value with the threshold (NaN compares false)."""
    engine = AlertEngine([ThresholdRule(name="t", metric="loss", op=op, threshold=1.0)])

    events = engine.observe([metric(loss=value)], NOW)

    assert transitions(events) == ([("t", "firing")] if fires else [])


def test_threshold_fires_at_once_and_resolves_on_the_last_value() -> None:
    """With for_seconds 0 a true condition fires immediately; the batch's last value decides, and false resolves."""
    engine = AlertEngine([loss_above(1.0)])

    assert engine.observe([metric(loss=5.0), metric(loss=0.5)], NOW) == []  # only the last value counts
    (fired,) = engine.observe([metric(loss=2.0)], NOW + 1)
    assert (fired.state, fired.value, fired.active_since, fired.timestamp) == ("firing", 2.0, NOW + 1, NOW + 1)
    assert engine.observe([metric(loss=3.0)], NOW + 2) == []  # still firing: no event
    (resolved,) = engine.observe([metric(loss=0.5)], NOW + 3)
    assert (resolved.state, resolved.value, resolved.active_since) == ("resolved", 0.5, NOW + 1)


def test_threshold_glob_has_one_instance_per_metric_name() -> None:
    """A glob matches several metrics; each is its own alert, labelled with its name."""
    engine = AlertEngine([ThresholdRule(name="grad", metric="grad/*", op=">", threshold=10)])

    events = engine.observe([metric(**{"grad/a": 11.0, "grad/b": 12.0, "loss": 99.0})], NOW)

    assert sorted(event.labels["metric"] for event in events) == ["grad/a", "grad/b"]
    (resolved,) = engine.observe([metric(**{"grad/a": 1.0})], NOW + 1)
    assert resolved.labels == {"metric": "grad/a"} and resolved.state == "resolved"
    assert [alert["labels"]["metric"] for alert in engine.active_alerts()] == ["grad/b"]


def test_threshold_mean_uses_a_window_of_event_time() -> None:
    """aggregate=mean averages the finite values within window_seconds of the newest (by event timestamps)."""
    rule = ThresholdRule(name="m", metric="loss", op=">", threshold=5, aggregate="mean", window_seconds=10)
    engine = AlertEngine([rule])

    assert engine.observe([metric(NOW, loss=8.0), metric(NOW + 1, loss=1.0)], NOW) == []  # mean 4.5
    (fired,) = engine.observe([metric(NOW + 2, loss=9.0), metric(NOW + 3, loss=NAN)], NOW + 1)  # mean 6, NaN skipped
    assert fired.value == pytest.approx(6.0)
    # 12 s later the first three values are out of the window: mean of 2.0 alone.
    (resolved,) = engine.observe([metric(NOW + 14, loss=2.0)], NOW + 2)
    assert resolved.state == "resolved" and resolved.value == pytest.approx(2.0)


def test_threshold_mean_window_sorts_out_of_order_events() -> None:
    """Events out of time order still leave the window by their own timestamps."""
    rule = ThresholdRule(name="m", metric="loss", op=">", threshold=5, aggregate="mean", window_seconds=10)
    engine = AlertEngine([rule])

    engine.observe([metric(NOW + 20, loss=1.0), metric(NOW, loss=100.0), metric(NOW + 15, loss=1.0)], NOW)

    assert engine.statistics()["firing"] == 0  # 100.0 at NOW is 20 s older than the newest: out


def test_threshold_mean_window_holds_at_most_max_window_values() -> None:
    """A mean window is bounded: beyond max_window_values only the newest values count."""
    rule = ThresholdRule(name="m", metric="loss", op=">", threshold=5, aggregate="mean", window_seconds=3600)
    engine = AlertEngine([rule], max_window_values=3)

    engine.observe([metric(NOW + i, loss=v) for i, v in enumerate([100.0, 1.0, 1.0, 1.0])], NOW)

    assert engine.statistics()["firing"] == 0  # 100 fell out: the mean is 1


# -- the state machine: for / keep_firing_for ------------------------------------------------------


def test_for_seconds_goes_pending_then_fires_on_a_tick() -> None:
    """A condition must hold for_seconds: pending first, firing at the first evaluation after that."""
    engine = AlertEngine([loss_above(1.0, for_seconds=60)])

    (pending,) = engine.observe([metric(loss=2.0)], NOW)
    assert (pending.state, pending.active_since) == ("pending", NOW)
    assert engine.tick(NOW + 59.9) == []
    assert engine.observe([metric(loss=3.0)], NOW + 30) == []  # still pending, timer unchanged
    (firing,) = engine.tick(NOW + 60)
    assert (firing.state, firing.active_since, firing.value, firing.timestamp) == ("firing", NOW, 3.0, NOW + 60)
    assert engine.tick(NOW + 120) == []


def test_pending_alert_that_stops_goes_inactive() -> None:
    """A condition that turns false before for_seconds ends the pending alert with an 'inactive' event."""
    engine = AlertEngine([loss_above(1.0, for_seconds=60)])

    engine.observe([metric(loss=2.0)], NOW)
    (inactive,) = engine.observe([metric(loss=0.1)], NOW + 10)

    assert (inactive.state, inactive.active_since, inactive.value) == ("inactive", NOW, 0.1)
    assert engine.tick(NOW + 100) == []
    (pending,) = engine.observe([metric(loss=2.0)], NOW + 200)  # the timer starts again
    assert (pending.state, pending.active_since) == ("pending", NOW + 200)


def test_keep_firing_for_holds_a_firing_alert_after_the_condition_stops() -> None:
    """keep_firing_for_seconds keeps firing after the condition turns false, then resolves on a tick."""
    engine = AlertEngine([loss_above(1.0, keep_firing_for_seconds=30)])

    engine.observe([metric(loss=2.0)], NOW)
    assert engine.observe([metric(loss=0.5)], NOW + 10) == []  # kept
    assert engine.tick(NOW + 39) == []
    (resolved,) = engine.tick(NOW + 40)
    assert (resolved.state, resolved.value, resolved.active_since) == ("resolved", 0.5, NOW)


def test_keep_firing_for_restarts_when_the_condition_returns() -> None:
    """A condition true again while kept firing cancels the keep timer, without an event."""
    engine = AlertEngine([loss_above(1.0, keep_firing_for_seconds=30)])

    engine.observe([metric(loss=2.0)], NOW)
    engine.observe([metric(loss=0.5)], NOW + 10)
    assert engine.observe([metric(loss=2.0)], NOW + 20) == []
    assert engine.observe([metric(loss=0.5)], NOW + 30) == []
    assert engine.tick(NOW + 59) == []  # 29 s after it stopped again
    assert transitions(engine.tick(NOW + 60)) == [("loss_high", "resolved")]


def test_resolved_alert_starts_over_with_pending() -> None:
    """After resolving, a new true condition goes through pending again with a new active_since."""
    engine = AlertEngine([loss_above(1.0, for_seconds=5)])

    states = []
    for at, loss in [(0, 2.0), (5, 2.0), (6, 0.0), (10, 2.0), (15, 2.0)]:
        states += [(event.state, event.active_since) for event in engine.observe([metric(loss=loss)], NOW + at)]

    assert states == [
        ("pending", NOW),
        ("firing", NOW),
        ("resolved", NOW),
        ("pending", NOW + 10),
        ("firing", NOW + 10),
    ]


def test_single_run_batches_evaluate_like_mixed_ones() -> None:
    """A one-run batch of metrics and heartbeats (evaluated in bulk) gives the same alerts as the general path."""
    rules = [
        *DEFAULT_RULES,
        loss_above(3.0, for_seconds=2),
        ThresholdRule(name="m", metric="acc", op="<", threshold=0.2, aggregate="mean", window_seconds=5),
        StagnationRule(name="s", metric="loss", steps=7),
        AnomalyRule(name="z", metric="loss", z=3, window_values=20),
    ]
    bulk, general = AlertEngine(rules), AlertEngine(rules)
    values = noisy(400, seed=3)
    seen: set[tuple[str, str]] = set()
    for step in range(0, 400, 40):
        batch: list[Any] = [
            metric(NOW + i, loss=values[i] - 2 if i % 50 else NAN, acc=(i % 7) / 20) for i in range(step, step + 40)
        ]
        batch.insert(5, Heartbeat("run-1", NOW + step))
        at = NOW + step
        expected = general.observe([*batch, StatePatch("run-1", at, {"step": step})], at)  # forces the general path
        assert [(e.rule, e.state, e.value, e.labels) for e in bulk.observe(batch, at)] == [
            (e.rule, e.state, e.value, e.labels) for e in expected
        ]
        assert transitions(bulk.tick(at + 30)) == transitions(general.tick(at + 30))
        seen.update(transitions(expected))
    assert bulk.statistics() == general.statistics()
    assert {rule for rule, _ in seen} >= {"non_finite_metric", "loss_high", "m", "s", "z"}
    assert {state for _, state in seen} >= {"pending", "firing", "resolved"}


def test_every_transition_is_one_event_and_alert_events_are_not_observed() -> None:
    """Each transition yields exactly one AlertEvent; alert events fed back in change nothing."""
    engine = AlertEngine([loss_above(1.0)])

    fired = engine.observe([metric(loss=2.0)], NOW)
    assert engine.observe(fired, NOW + 1) == []  # no feedback loop
    assert engine.observe([StatePatch("run-1", NOW, {"a": 1})], NOW + 2) == []
    assert engine.statistics()["transitions_total"] == 1


# -- non_finite ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [pytest.param(NAN, id="nan"), pytest.param(INF, id="inf"), pytest.param(-INF, id="-inf")]
)
def test_non_finite_value_fires_per_metric(bad: float) -> None:
    """NaN and ±Inf in any metric fire one alert per metric, labelled with it, carrying the value."""
    engine = AlertEngine([NonFiniteRule(name="nf", severity="critical")])

    (event,) = engine.observe([metric(loss=bad, acc=0.5)], NOW)

    assert (event.state, event.severity, event.labels) == ("firing", "critical", {"metric": "loss"})
    assert event.value is not None and (math.isnan(event.value) if bad != bad else event.value == bad)


def test_non_finite_resolves_when_that_metric_is_finite_again() -> None:
    """Other metrics reporting do not resolve it; the same metric reporting a finite value does."""
    engine = AlertEngine([NonFiniteRule(name="nf")])

    engine.observe([metric(loss=NAN)], NOW)
    assert engine.observe([metric(acc=1.0)], NOW + 1) == []
    (resolved,) = engine.observe([metric(loss=0.3)], NOW + 2)

    assert (resolved.state, resolved.value) == ("resolved", 0.3)


def test_non_finite_mid_batch_still_fires() -> None:
    """A NaN followed by a finite value in the same evaluation still counts (any value since the last evaluation)."""
    engine = AlertEngine([NonFiniteRule(name="nf")])

    assert transitions(engine.observe([metric(loss=NAN), metric(loss=1.0)], NOW)) == [("nf", "firing")]


def test_non_finite_watches_only_the_named_metrics() -> None:
    """With metrics given (names or globs), other metrics are ignored."""
    engine = AlertEngine([NonFiniteRule(name="nf", metrics=("loss", "grad/*"))])

    events = engine.observe([metric(loss=NAN, acc=NAN, **{"grad/w": INF})], NOW)

    assert sorted(event.labels["metric"] for event in events) == ["grad/w", "loss"]


# -- rate ------------------------------------------------------------------------------------------


def test_rate_fires_on_an_error_burst() -> None:
    """The default burst rule fires on the 10th error/critical event within 60 s; other levels do not count."""
    engine = AlertEngine(DEFAULT_RULES)

    noise = [error(NOW + i, level="warning") for i in range(20)]
    assert engine.observe(noise + [error(NOW + i) for i in range(9)], NOW) == []
    events = engine.observe([ExceptionEvent("run-1", NOW + 30, "ValueError", "bad", severity="critical")], NOW + 1)

    # The critical one also fires the default critical_error rule.
    assert sorted(transitions(events)) == [("critical_error", "firing"), ("error_burst", "firing")]
    burst = next(event for event in events if event.rule == "error_burst")
    assert (burst.value, burst.severity) == (10.0, "error")
    assert events[0].annotations["summary"] == "10 errors within 60 s in run run-1"


def test_rate_window_uses_event_time() -> None:
    """Ten errors spread over more than the window do not make a burst."""
    engine = AlertEngine([RateRule(name="burst", window_seconds=60, limit=10, op=">=")])

    assert engine.observe([error(NOW + 10 * i) for i in range(10)], NOW) == []


def test_rate_decays_on_tick_by_the_runs_event_clock() -> None:
    """Without new events the window empties as the run's clock advances, and the alert resolves."""
    engine = AlertEngine([RateRule(name="burst", window_seconds=60, limit=2)])
    # The producer's clock is an hour behind ours: the window follows the event clock, not now.
    skewed = NOW - 3600

    assert transitions(engine.observe([error(skewed + i) for i in range(3)], NOW)) == [("burst", "firing")]
    # The run's clock is its newest event (skewed + 2) plus the time since it arrived.
    assert engine.tick(NOW + 58) == []
    (resolved,) = engine.tick(NOW + 59)  # skewed + 0 is out of the window: 2 left
    assert (resolved.state, resolved.value) == ("resolved", 2.0)
    assert engine.tick(NOW + 63) == []
    assert engine.statistics()["series"] == 0  # an empty, inactive window is forgotten


def test_rate_filters_by_kind_type_and_level() -> None:
    """kinds, types (log type or exception error_type, globs) and levels narrow what is counted."""
    rule = RateRule(name="oom", window_seconds=60, limit=1, kinds=("exception",), types=("*OutOfMemory*",))
    engine = AlertEngine([rule])

    events = engine.observe(
        [
            error(NOW, type="OutOfMemoryError"),  # a log event: wrong kind
            ExceptionEvent("run-1", NOW, "ValueError", "x"),
            ExceptionEvent("run-1", NOW, "CudaOutOfMemoryError", "x", severity="warning"),
            ExceptionEvent("run-1", NOW, "CudaOutOfMemoryError", "x"),
        ],
        NOW,
    )

    assert [(event.state, event.value) for event in events] == [("firing", 2.0)]


def test_rate_count_saturates_at_the_window_capacity() -> None:
    """A rate window is bounded; the count it reports stops growing at its capacity."""
    engine = AlertEngine([RateRule(name="burst", window_seconds=60, limit=0)])

    (event,) = engine.observe([error(NOW) for _ in range(1000)], NOW)

    assert event.value == 64.0  # max(limit + 1, 4 * limit + 64)


# -- absence ---------------------------------------------------------------------------------------


def test_heartbeat_absence_fires_on_tick_and_resolves_on_a_heartbeat() -> None:
    """The default hang rule fires 120 s after the last heartbeat arrived, labelled hung; a heartbeat resolves it."""
    engine = AlertEngine(DEFAULT_RULES)

    engine.observe([Heartbeat("run-1", NOW)], NOW)
    assert engine.tick(NOW + 119) == []
    engine.observe([metric(loss=1.0)], NOW + 100)  # metrics are not heartbeats
    (fired,) = engine.tick(NOW + 120)
    assert (fired.rule, fired.state, fired.severity, fired.value) == ("heartbeat_absent", "firing", "warning", 120.0)
    assert fired.labels == {"condition": "hung"}
    assert fired.annotations == {"summary": "no heartbeat from run run-1 for 120 s"}
    (resolved,) = engine.observe([Heartbeat("run-1", NOW + 130)], NOW + 130)
    assert (resolved.state, resolved.value) == ("resolved", 0.0)


def test_absence_watches_a_run_only_after_its_first_awaited_event() -> None:
    """A run that never sent a heartbeat is not reported for lacking one."""
    engine = AlertEngine(DEFAULT_RULES)

    engine.observe([metric(loss=1.0)], NOW)

    assert engine.tick(NOW + 10_000) == []


def test_metric_absence_waits_for_the_named_metric_only() -> None:
    """target=metric with a name: other metrics do not reset its clock."""
    rule = AbsenceRule(
        name="no_loss", target="metric", metric="loss", duration_seconds=60, annotations={"s": "{metric}"}
    )
    engine = AlertEngine([rule])

    engine.observe([metric(loss=1.0)], NOW)
    engine.observe([metric(acc=1.0)], NOW + 50)
    (fired,) = engine.tick(NOW + 60)

    assert (fired.rule, fired.state, fired.annotations) == ("no_loss", "firing", {"s": "loss"})
    assert fired.labels == {}


def test_any_metric_and_any_event_absence() -> None:
    """target=metric without a name waits for any metric; target=event for any event at all."""
    rules = [
        AbsenceRule(name="no_metric", target="metric", duration_seconds=60),
        AbsenceRule(name="silent", target="event", duration_seconds=60),
    ]
    engine = AlertEngine(rules)

    engine.observe([metric(acc=1.0)], NOW)
    engine.observe([error(NOW + 30)], NOW + 30)

    assert transitions(engine.tick(NOW + 60)) == [("no_metric", "firing")]
    assert transitions(engine.tick(NOW + 90)) == [("silent", "firing")]


def test_absence_for_seconds_counts_from_when_the_condition_became_true() -> None:
    """for_seconds applies to absence too: pending at the duration, firing after for_seconds more."""
    engine = AlertEngine([AbsenceRule(name="hb", target="heartbeat", duration_seconds=60, for_seconds=30)])

    engine.observe([Heartbeat("run-1", NOW)], NOW)

    assert transitions(engine.tick(NOW + 60)) == [("hb", "pending")]
    assert engine.tick(NOW + 89) == []
    assert transitions(engine.tick(NOW + 90)) == [("hb", "firing")]


def test_paused_run_is_not_absent_and_resumes_with_a_fresh_clock() -> None:
    """Pausing resolves absence and suppresses it; resuming restarts the absence clock."""
    engine = AlertEngine(DEFAULT_RULES)

    engine.observe([Heartbeat("run-1", NOW)], NOW)
    engine.tick(NOW + 200)  # firing
    (resolved,) = engine.observe([RunLifecycle("run-1", NOW + 210, "paused")], NOW + 210)
    assert resolved.state == "resolved"
    assert engine.tick(NOW + 5000) == []
    engine.observe([RunLifecycle("run-1", NOW + 6000, "resumed")], NOW + 6000)
    assert engine.tick(NOW + 6119) == []
    assert transitions(engine.tick(NOW + 6120)) == [("heartbeat_absent", "firing")]


# -- stagnation ------------------------------------------------------------------------------------


def test_stagnation_in_steps_fires_and_an_improvement_resolves() -> None:
    """mode=min: steps logging calls without a new minimum fire; a new minimum resolves."""
    engine = AlertEngine([StagnationRule(name="plateau", metric="loss", steps=3)])

    assert engine.observe([metric(loss=v) for v in (5.0, 4.0, 4.5, 4.0)], NOW) == []  # 2 calls since 4.0
    (fired,) = engine.observe([metric(loss=4.2)], NOW + 1)
    assert (fired.state, fired.value) == ("firing", 3.0)
    (resolved,) = engine.observe([metric(loss=3.9)], NOW + 2)
    assert (resolved.state, resolved.value) == ("resolved", 0.0)


def test_stagnation_max_mode_needs_more_than_min_delta() -> None:
    """mode=max: a reward must rise by more than min_delta over its best to count as progress; NaN never does."""
    engine = AlertEngine([StagnationRule(name="flat", metric="reward", mode="max", min_delta=0.5, steps=3)])

    events = engine.observe([metric(reward=v) for v in (1.0, 1.4, 1.2, NAN)], NOW)

    assert [(event.state, event.value) for event in events] == [("firing", 3.0)]
    (resolved,) = engine.observe([metric(reward=1.6)], NOW + 1)
    assert resolved.state == "resolved"


def test_stagnation_over_event_time() -> None:
    """window_seconds: no improvement for that long, by event timestamps."""
    engine = AlertEngine([StagnationRule(name="plateau", metric="loss", window_seconds=100)])

    engine.observe([metric(NOW, loss=1.0), metric(NOW + 50, loss=1.0)], NOW)
    (fired,) = engine.observe([metric(NOW + 100, loss=1.0)], NOW + 1)

    assert (fired.state, fired.value) == ("firing", 100.0)


def test_windows_follow_a_metric_logged_in_only_some_calls() -> None:
    """Calls without the metric neither count as stagnating calls nor enter its mean window."""
    rules = [
        StagnationRule(name="plateau", metric="loss", steps=2),
        ThresholdRule(name="m", metric="loss", op=">", threshold=2, aggregate="mean", window_seconds=60),
    ]
    engine = AlertEngine(rules)

    batch = [metric(loss=NAN), metric(acc=1.0), metric(loss=3.0), metric(acc=1.0), metric(acc=9.0)]
    # The mean is 3.0 (NaN skipped); 3.0 was an improvement, and the acc-only calls are not loss calls.
    assert transitions(engine.observe(batch, NOW)) == [("m", "firing")]
    batch = [metric(acc=1.0), metric(loss=3.0), metric(acc=1.0), metric(loss=3.5)]
    assert transitions(engine.observe(batch, NOW + 1)) == [("plateau", "firing")]


# -- anomaly ---------------------------------------------------------------------------------------


def steady(n: int, start: float = NOW) -> list[Metric]:
    """``n`` loss values alternating 1.0 and 1.2 (mean 1.1, standard deviation 0.1)."""
    return [metric(start + i, loss=1.0 + 0.2 * (i % 2)) for i in range(n)]


def test_anomaly_fires_on_a_spike_with_its_z_score() -> None:
    """A value more than z standard deviations from the window's mean fires, reporting its z-score."""
    engine = AlertEngine([AnomalyRule(name="spike", metric="loss", z=4, window_values=20)])

    assert engine.observe(steady(20), NOW) == []
    (fired,) = engine.observe([metric(loss=2.1)], NOW + 1)
    assert fired.state == "firing" and fired.value == pytest.approx(10.0)
    (resolved,) = engine.observe([metric(loss=1.1)], NOW + 2)
    assert resolved.state == "resolved" and abs(resolved.value or 0) < 4


def test_anomaly_judges_each_value_not_only_the_last() -> None:
    """A spike followed by normal values in the same evaluation still fires."""
    engine = AlertEngine([AnomalyRule(name="spike", metric="loss", z=4, window_values=20)])

    events = engine.observe([*steady(20), metric(loss=9.0), metric(loss=1.1)], NOW)

    assert transitions(events) == [("spike", "firing")]


def test_anomaly_stays_exact_over_many_values_and_a_drifting_mean() -> None:
    """Long runs (many periodic recomputations) around a mean far from zero keep the z-score exact."""
    engine = AlertEngine([AnomalyRule(name="spike", metric="loss", z=4, window_values=20)])
    offset = 1e6

    for start in range(0, 2000, 100):
        assert engine.observe([metric(loss=offset + v.values["loss"]) for v in steady(100)], NOW + start) == []
    (fired,) = engine.observe([metric(loss=offset + 2.1)], NOW + 3000)

    assert fired.value == pytest.approx(10.0, rel=1e-6)


def noisy(n: int, seed: int) -> list[float]:
    """``n`` reproducible pseudo-random values around 5.0 with a few spikes up and down."""
    state, values = seed, []
    for i in range(n):
        state = (state * 1103515245 + 12345) % 2**31
        values.append(5.0 + state / 2**31 + (40.0 if i % 97 == 60 else -40.0 if i % 89 == 30 else 0.0))
    return values


@pytest.mark.parametrize("direction", ["both", "above", "below"])
def test_anomaly_vectorised_judging_matches_the_loop(direction: str) -> None:
    """Large evaluations (judged with numpy prefix sums) give the same z-scores as the value-by-value loop."""
    rule = AnomalyRule(name="spike", metric="loss", z=3, window_values=50, min_values=10, direction=direction)
    condition = AnomalyCondition(0, rule)
    window = condition.new_data(AlertEngine([rule]).max_window_values)
    values = noisy(2000, seed=7)
    hits = 0
    for start in range(0, 2000, 100):
        batch = values[start : start + 100]
        reference = copy.deepcopy(window)
        worst, latest = condition._judge_vectorised(window, batch)
        expected_worst, expected_latest = condition._judge(reference, batch)
        hits += worst is not None
        assert (worst is None) == (expected_worst is None)
        assert worst == pytest.approx(expected_worst, rel=1e-9)
        assert latest == pytest.approx(expected_latest, rel=1e-9, abs=1e-9)
        assert list(window.values) == list(reference.values)
    assert hits >= 5


def test_anomaly_ignores_rounding_in_a_constant_window() -> None:
    """A constant metric (whose window mean is not bit-exact) never looks anomalous to itself, in either path."""
    engine = AlertEngine([AnomalyRule(name="flat", metric="lr", window_values=200)])

    assert engine.observe([metric(lr=0.1 + 0.2) for _ in range(300)], NOW) == []
    assert engine.observe([metric(lr=0.1 + 0.2) for _ in range(10)], NOW + 1) == []


def test_anomaly_waits_for_min_values() -> None:
    """Nothing is judged before the window holds min_values values."""
    engine = AlertEngine([AnomalyRule(name="spike", metric="loss", z=2, window_values=50, min_values=10)])

    assert engine.observe([*steady(9), metric(loss=100.0)], NOW) == []


def test_anomaly_direction_above_ignores_drops() -> None:
    """direction=above only reports values above the mean."""
    engine = AlertEngine([AnomalyRule(name="up", metric="loss", z=3, window_values=20, direction="above")])

    assert engine.observe([*steady(20), metric(loss=-5.0)], NOW) == []
    assert transitions(engine.observe([metric(loss=5.0)], NOW + 1)) == [("up", "firing")]


def test_anomaly_against_a_constant_window_is_infinite() -> None:
    """Any change from a constant window is anomalous (infinite z); the same value is not."""
    engine = AlertEngine([AnomalyRule(name="jump", metric="lr", window_values=10)])

    assert engine.observe([metric(lr=0.1) for _ in range(10)], NOW) == []
    (fired,) = engine.observe([metric(lr=0.2)], NOW + 1)
    assert fired.value == INF


def test_anomaly_window_holds_only_the_last_n_values() -> None:
    """The window rolls: after N normal values an old regime no longer counts."""
    engine = AlertEngine([AnomalyRule(name="spike", metric="loss", z=4, window_values=10)])

    engine.observe([metric(loss=100.0 + (i % 2)) for i in range(10)], NOW)  # an old regime near 100
    assert transitions(engine.observe(steady(10), NOW + 1)) == [("spike", "firing")]  # the drop; then all ~1.1
    (resolved,) = engine.observe([metric(loss=1.1)], NOW + 2)
    assert resolved.state == "resolved" and abs(resolved.value or 0) < 1


# -- runs ending, bounded memory -------------------------------------------------------------------


def test_a_run_that_ends_resolves_its_alerts_and_drops_its_state() -> None:
    """completed/failed resolve firing alerts, end pending ones (inactive) and forget the run."""
    engine = AlertEngine([NonFiniteRule(name="nf"), loss_above(1.0, for_seconds=60), *DEFAULT_RULES[1:]])
    engine.observe([metric(acc=NAN, loss=5.0), Heartbeat("run-1", NOW)], NOW)

    events = engine.observe([metric(loss=6.0), RunLifecycle("run-1", NOW + 1, "failed")], NOW + 1)

    assert sorted(transitions(events)) == [("loss_high", "inactive"), ("nf", "resolved")]
    assert engine.statistics() | {"transitions_total": 0} == {
        "rules": 2 + len(DEFAULT_RULES[1:]),
        "runs": 0,
        "series": 0,
        "firing": 0,
        "pending": 0,
        "transitions_total": 0,
        "dropped_series_total": 0,
        "evicted_runs_total": 0,
    }
    assert engine.tick(NOW + 10_000) == []  # no hang alert for a finished run


def test_late_events_of_an_ended_run_are_ignored_until_it_starts_again() -> None:
    """A straggling heartbeat after completion tracks nothing; a new 'started' makes the run live again."""
    engine = AlertEngine(DEFAULT_RULES)

    engine.observe([Heartbeat("run-1", NOW), RunLifecycle("run-1", NOW, "completed"), Heartbeat("run-1", NOW)], NOW)
    assert engine.tick(NOW + 1000) == [] and engine.statistics()["runs"] == 0
    engine.observe([RunLifecycle("run-1", NOW + 2000, "started"), Heartbeat("run-1", NOW + 2000)], NOW + 2000)
    assert transitions(engine.tick(NOW + 2120)) == [("heartbeat_absent", "firing")]


def test_many_finished_runs_leave_bounded_state() -> None:
    """Thousands of runs that log and finish leave no run state, and the ended-run memory is capped."""
    engine = AlertEngine([*DEFAULT_RULES, StagnationRule(name="s", metric="loss", steps=5)], max_runs=100)

    for i in range(2000):
        run = f"run-{i}"
        engine.observe([metric(run=run, loss=1.0), Heartbeat(run, NOW), RunLifecycle(run, NOW, "completed")], NOW)

    assert engine.statistics()["runs"] == 0 and engine.statistics()["series"] == 0
    assert len(engine.snapshot()["ended_runs"]) == 100


def test_series_per_rule_are_capped_and_drops_counted() -> None:
    """Beyond max_series_per_rule new series are not tracked; the drops are counted."""
    engine = AlertEngine([NonFiniteRule(name="nf")], max_series_per_rule=2)

    events = engine.observe([metric(**{f"m{i}": NAN for i in range(5)})], NOW)

    assert len(events) == 2
    assert engine.statistics()["dropped_series_total"] == 3


def test_runs_are_capped_by_evicting_the_least_recently_active() -> None:
    """Past max_runs the least recently active run is evicted and its alerts resolved."""
    engine = AlertEngine([NonFiniteRule(name="nf")], max_runs=2)

    engine.observe([metric(run="a", loss=NAN)], NOW)
    engine.observe([metric(run="b", loss=NAN)], NOW + 1)
    engine.observe([metric(run="a", acc=1.0)], NOW + 2)  # a is now more recent than b
    events = engine.observe([metric(run="c", loss=1.0)], NOW + 3)

    assert [(event.run_id, event.state) for event in events] == [("b", "resolved")]
    assert engine.statistics()["evicted_runs_total"] == 1
    assert [alert["run_id"] for alert in engine.active_alerts()] == ["a"]


# -- active_alerts ---------------------------------------------------------------------------------


def test_active_alerts_lists_pending_and_firing_with_filters() -> None:
    """active_alerts lists pending and firing alerts, oldest first, filtered by run and severity, JSON-safe."""
    engine = AlertEngine([NonFiniteRule(name="nf", severity="critical"), loss_above(1.0, for_seconds=60)])
    engine.observe([metric(run="a", loss=NAN)], NOW)
    engine.observe([metric(run="b", loss=5.0)], NOW + 1)

    alerts = engine.active_alerts()

    assert [(a["rule"], a["run_id"], a["state"], a["value"]) for a in alerts] == [
        ("nf", "a", "firing", None),
        ("loss_high", "b", "pending", 5.0),
    ]
    assert alerts[0]["kind"] == "non_finite" and alerts[0]["labels"] == {"metric": "loss"}
    assert [a["rule"] for a in engine.active_alerts(run_id="b")] == ["loss_high"]
    assert [a["run_id"] for a in engine.active_alerts(severity="critical")] == ["a"]
    json.dumps(alerts, allow_nan=False)


# -- snapshot and restore --------------------------------------------------------------------------


def roundtrip(engine: AlertEngine, rules: list[Rule] | None = None) -> AlertEngine:
    """A new engine restored from ``engine``'s snapshot after a trip through strict JSON."""
    text = json.dumps(engine.snapshot(), allow_nan=False)
    return AlertEngine.restore(engine.rules if rules is None else rules, json.loads(text))


def test_restore_keeps_a_pending_timer() -> None:
    """A pending alert restored from a snapshot fires once for_seconds has passed since it became pending."""
    rules = [loss_above(1.0, for_seconds=60)]
    engine = AlertEngine(rules)
    engine.observe([metric(loss=2.0)], NOW)

    restored = roundtrip(engine)

    assert [a["state"] for a in restored.active_alerts()] == ["pending"]
    assert restored.tick(NOW + 59) == []
    (fired,) = restored.tick(NOW + 60)
    assert (fired.state, fired.active_since, fired.value) == ("firing", NOW, 2.0)


def test_restore_keeps_a_firing_alert_without_firing_again() -> None:
    """A firing alert survives a restart silently and later resolves with its original active_since."""
    engine = AlertEngine(DEFAULT_RULES)
    engine.observe([metric(loss=NAN)], NOW)

    restored = roundtrip(engine)

    assert restored.tick(NOW + 1) == []
    assert restored.observe([metric(loss=NAN)], NOW + 2) == []
    (resolved,) = restored.observe([metric(loss=0.5)], NOW + 3)
    assert (resolved.rule, resolved.state, resolved.active_since) == ("non_finite_metric", "resolved", NOW)


def test_restore_keeps_absence_clocks_rate_windows_and_stagnation_counters() -> None:
    """Heartbeat clocks, error windows and plateau counters carry over a restart."""
    rules = [*DEFAULT_RULES, StagnationRule(name="plateau", metric="loss", steps=3)]
    engine = AlertEngine(rules)
    engine.observe([Heartbeat("run-1", NOW), *[error(NOW) for _ in range(9)], *[metric(loss=1.0)] * 3], NOW)

    restored = roundtrip(engine)

    assert transitions(restored.observe([error(NOW + 5), metric(loss=1.0)], NOW + 5)) == [
        ("plateau", "firing"),
        ("error_burst", "firing"),
    ]
    assert ("heartbeat_absent", "firing") in transitions(restored.tick(NOW + 120))


def test_named_metric_absence_survives_restart_and_pause() -> None:
    """A named-metric absence clock is restored, and restarts when a paused run resumes."""
    rules = [AbsenceRule(name="no_loss", target="metric", metric="loss", duration_seconds=60)]
    engine = AlertEngine(rules)
    engine.observe([metric(loss=1.0)], NOW)

    restored = roundtrip(engine)

    assert transitions(restored.tick(NOW + 60)) == [("no_loss", "firing")]
    restored.observe([RunLifecycle("run-1", NOW + 70, "paused")], NOW + 70)
    restored.observe([RunLifecycle("run-1", NOW + 500, "resumed")], NOW + 500)
    assert restored.tick(NOW + 559) == []
    assert transitions(restored.tick(NOW + 560)) == [("no_loss", "firing")]


def test_restore_keeps_keep_firing_timer_and_ended_runs() -> None:
    """A kept-firing alert resolves on schedule after a restart, and ended runs stay ended."""
    engine = AlertEngine([loss_above(1.0, keep_firing_for_seconds=30), *DEFAULT_RULES])
    engine.observe([metric(loss=2.0)], NOW)
    engine.observe([metric(loss=0.5)], NOW + 10)
    engine.observe([RunLifecycle("done", NOW, "completed")], NOW)

    restored = roundtrip(engine)

    assert restored.tick(NOW + 39) == []
    assert transitions(restored.tick(NOW + 40)) == [("loss_high", "resolved")]
    restored.observe([Heartbeat("done", NOW + 50)], NOW + 50)
    assert restored.tick(NOW + 500) == []


def test_restore_drops_state_of_rules_that_are_gone_or_changed_kind() -> None:
    """Only alerts of rules that still exist with the same kind are restored."""
    engine = AlertEngine([NonFiniteRule(name="a"), NonFiniteRule(name="b")])
    engine.observe([metric(loss=NAN)], NOW)

    restored = roundtrip(engine, [NonFiniteRule(name="a"), ThresholdRule(name="b", metric="loss", op=">", threshold=1)])

    assert [a["rule"] for a in restored.active_alerts()] == ["a"]


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        pytest.param([], "snapshot: must be an object", id="not-an-object"),
        pytest.param({"version": 99}, "snapshot.version", id="version"),
        pytest.param({"version": 1, "instances": {}}, "instances and ended_runs lists", id="instances-type"),
        pytest.param(
            {
                "version": 1,
                "instances": [{"rule": "nf", "kind": "non_finite", "run_id": "r", "metric": "m", "state": "burning"}],
            },
            r"snapshot.instances\[0\].state",
            id="state",
        ),
        pytest.param(
            {
                "version": 1,
                "instances": [{"rule": "nf", "kind": "non_finite", "run_id": "r", "metric": "m", "state": "firing"}],
            },
            r"snapshot.instances\[0\].active_since",
            id="missing-active-since",
        ),
        pytest.param(
            {"version": 1, "runs": {"r": {"clock": "soon"}}},
            r"snapshot.runs\['r'\].clock",
            id="clock",
        ),
    ],
)
def test_restore_rejects_a_malformed_snapshot_naming_the_entry(snapshot: Any, message: str) -> None:
    """A snapshot that is not what snapshot() writes raises ValueError naming the bad entry."""
    with pytest.raises(ValueError, match=message):
        AlertEngine.restore([NonFiniteRule(name="nf")], snapshot)
