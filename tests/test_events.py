"""Tests for runwatch.events: pure and synchronous (no event loop, no clock)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.events import (
    LEVELS,
    AlertEvent,
    ExceptionEvent,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    copy_state,
    flatten_metrics,
    merge_state,
    merge_state_into,
)
from runwatch.wire import event_from_dict, event_to_dict

TS = 1_700_000_000.5

# One fully populated event of every kind (every optional field set).
ALL_KINDS = [
    pytest.param(
        Metric("run-1", TS, {"loss": 0.5, "acc": 1}, step=3, tags={"split": "train"}),
        id="metric",
    ),
    pytest.param(
        LogEvent(
            "run-1",
            TS,
            "episode_end",
            level="warning",
            data={"reward": 1.5, "ok": True, "tags": ["a", "b"]},
            detail={"category": "ui", "labels": ["a"]},
        ),
        id="log",
    ),
    pytest.param(
        StatePatch(
            "run-1", TS, {"phase": {"name": "warmup", "epoch": 2}}, detail={"timestamp": "2026-01-01T00:00:00Z"}
        ),
        id="state",
    ),
    pytest.param(
        RunLifecycle(
            "run-1",
            TS,
            "completed",
            run_kind="session",
            config={"lr": 0.001, "layers": [64, 64]},
            final_reward=12.5,
            metadata={"host": "box"},
            owner="remote:worker-7",
        ),
        id="lifecycle",
    ),
    pytest.param(
        ExceptionEvent(
            "run-1",
            TS,
            "ValueError",
            "bad value",
            traceback="Traceback ...",
            category="data",
            severity="critical",
            component="loader",
        ),
        id="exception",
    ),
    pytest.param(Heartbeat("run-1", TS, {"total_steps": 10, "total_episodes": 2}), id="heartbeat"),
    pytest.param(
        AlertEvent(
            "run-1",
            TS,
            "loss_nan",
            "firing",
            severity="critical",
            value=float("inf"),
            labels={"metric": "loss"},
            annotations={"summary": "loss is not finite"},
            active_since=TS - 10,
        ),
        id="alert",
    ),
]

# The smallest valid construction of every kind (defaults everywhere else).
MINIMAL_KINDS = [
    pytest.param(Metric, ("r", TS, {"x": 1.0}), id="metric"),
    pytest.param(LogEvent, ("r", TS, "note"), id="log"),
    pytest.param(StatePatch, ("r", TS, {}), id="state"),
    pytest.param(RunLifecycle, ("r", TS, RunTransition.STARTED), id="lifecycle"),
    pytest.param(ExceptionEvent, ("r", TS, "KeyError", "missing"), id="exception"),
    pytest.param(Heartbeat, ("r", TS), id="heartbeat"),
    pytest.param(AlertEvent, ("r", TS, "rule", "pending"), id="alert"),
]


def _same(a: Any, b: Any) -> bool:
    """Structural equality where NaN equals NaN (and 1 equals 1.0, as in Python)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- construction ------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "args"), MINIMAL_KINDS)
def test_every_kind_constructs_with_defaults(cls: type[Any], args: tuple[Any, ...]) -> None:
    """Every event kind builds from its required fields and reports its kind."""
    event = cls(*args)
    assert event.run_id == "r"
    assert event.timestamp == TS
    assert event.kind == cls.kind
    assert event_to_dict(event)["kind"] == cls.kind


@pytest.mark.parametrize("event", ALL_KINDS)
def test_every_kind_constructs_with_all_fields(event: Any) -> None:
    """Every event kind builds with every optional field set, keeping the values."""
    wire = event_to_dict(event)
    assert set(wire) == {"kind", *event._fields}
    for name in event._fields:
        assert _same(wire[name], getattr(event, name)), name
    assert all(value is not None for value in event), "every optional field is set"


def test_lifecycle_transition_is_normalised_to_the_enum() -> None:
    """A lifecycle transition given as a string becomes a RunTransition with its status."""
    event = RunLifecycle("r", TS, "failed")
    assert event.transition is RunTransition.FAILED
    assert event.status == "failed"
    assert RunLifecycle("r", TS, "resumed").status == "running"


def test_integer_timestamp_is_accepted() -> None:
    """An int timestamp (whole seconds) is a valid timestamp."""
    assert Metric("r", 1_700_000_000, {"x": 1.0}).timestamp == 1_700_000_000


def test_log_event_defaults() -> None:
    """A log event defaults to level info and an empty data payload."""
    event = LogEvent("r", TS, "note")
    assert event.level == "info"
    assert event.data == {}


# -- validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "field"),
    [
        pytest.param(lambda: Metric("r", TS, {"": 1.0}), ValueError, "metric name", id="empty-metric-name"),
        pytest.param(lambda: Metric("r", TS, {"g": {"": 1.0}}), ValueError, "metric name", id="empty-nested-name"),
        pytest.param(lambda: Metric("r", TS, {1: 1.0}), TypeError, "metric name", id="non-string-metric-name"),
        pytest.param(lambda: Metric("r", TS, {"loss": "0.5"}), TypeError, "'loss'", id="string-value"),
        pytest.param(lambda: Metric("r", TS, {"g": {"loss": None}}), TypeError, "'g/loss'", id="none-nested-value"),
        pytest.param(lambda: Metric("r", TS, {"a": {"b": 1}, "a/b": 2}), ValueError, "'a/b'", id="name-given-twice"),
        pytest.param(lambda: Metric("r", TS, {"a/b": 2, "a": {"b": 1}}), ValueError, "'a/b'", id="name-given-twice-2"),
        pytest.param(lambda: Metric("r", TS, {}), ValueError, "at least one value", id="no-values"),
        pytest.param(lambda: Metric("r", TS, {"g": {}}), ValueError, "at least one value", id="only-empty-group"),
        pytest.param(lambda: Metric("r", TS, [("x", 1.0)]), TypeError, "metrics", id="values-not-a-mapping"),
        pytest.param(lambda: Metric("r", TS, {"x": 1.0}, step=1.5), TypeError, "step", id="float-step"),
        pytest.param(lambda: Metric("r", TS, {"x": 1.0}, step="3"), TypeError, "step", id="string-step"),
        pytest.param(lambda: Metric("r", TS, {"x": 1.0}, step=True), TypeError, "step", id="bool-step"),
        pytest.param(lambda: Metric("r", TS, {"x": 1.0}, tags={"a": 1}), TypeError, "tags", id="non-string-tag"),
        pytest.param(lambda: Metric("", TS, {"x": 1.0}), TypeError, "run_id", id="empty-run-id"),
        pytest.param(lambda: Metric(None, TS, {"x": 1.0}), TypeError, "run_id", id="none-run-id"),
        pytest.param(lambda: Metric("r", "now", {"x": 1.0}), TypeError, "timestamp", id="string-timestamp"),
        pytest.param(lambda: LogEvent("r", float("nan"), "t"), ValueError, "timestamp", id="nan-timestamp"),
        pytest.param(lambda: LogEvent("r", TS, "t", level="verbose"), ValueError, "level", id="bad-level"),
        pytest.param(lambda: LogEvent("r", TS, "t", level="INFO"), ValueError, "level", id="upper-case-level"),
        pytest.param(lambda: LogEvent("r", TS, ""), ValueError, "type", id="empty-log-type"),
        pytest.param(lambda: LogEvent("r", TS, "t", data={"s": {1, 2}}), TypeError, "data.s", id="set-in-data"),
        pytest.param(lambda: LogEvent("r", TS, "t", data={"o": object()}), TypeError, "data.o", id="object"),
        pytest.param(lambda: LogEvent("r", TS, "t", data={1: "x"}), TypeError, "data keys", id="int-key"),
        pytest.param(lambda: LogEvent("r", TS, "t", data=[1]), TypeError, "data", id="data-not-a-mapping"),
        pytest.param(lambda: StatePatch("r", TS, {"a": [b"raw"]}), TypeError, "patch.a[0]", id="bytes-in-state"),
        pytest.param(lambda: StatePatch("r", TS, "x"), TypeError, "patch", id="patch-not-a-mapping"),
        pytest.param(lambda: RunLifecycle("r", TS, "exploded"), ValueError, "transition", id="bad-transition"),
        pytest.param(lambda: RunLifecycle("r", TS, "started", config=[1]), TypeError, "config", id="bad-config"),
        pytest.param(
            lambda: RunLifecycle("r", TS, "started", metadata={"f": print}), TypeError, "metadata.f", id="bad-meta"
        ),
        pytest.param(
            lambda: RunLifecycle("r", TS, "completed", final_reward="high"), TypeError, "final_reward", id="reward"
        ),
        pytest.param(lambda: ExceptionEvent("r", TS, "", "m"), ValueError, "error_type", id="empty-error-type"),
        pytest.param(lambda: ExceptionEvent("r", TS, "E", None), TypeError, "message", id="none-message"),
        pytest.param(lambda: ExceptionEvent("r", TS, "E", "m", severity="fatal"), ValueError, "level", id="severity"),
        pytest.param(lambda: ExceptionEvent("r", TS, "E", "m", component=3), TypeError, "component", id="component"),
        pytest.param(lambda: Heartbeat("r", TS, {"steps": 1.5}), TypeError, "counters", id="float-counter"),
        pytest.param(lambda: AlertEvent("r", TS, "rule", "exploded"), ValueError, "state", id="alert-state"),
        pytest.param(lambda: AlertEvent("r", TS, "", "firing"), ValueError, "rule", id="empty-rule"),
    ],
)
def test_invalid_fields_raise_naming_the_field(build: Any, error: type[Exception], field: str) -> None:
    """A bad field raises TypeError or ValueError whose message names that field."""
    with pytest.raises(error) as info:
        build()
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("build", "error", "field"),
    [
        pytest.param(lambda: Metric("r", float("nan"), {"x": 1.0}), ValueError, "timestamp", id="metric-nan-ts"),
        pytest.param(lambda: Metric("r", float("inf"), {"x": 1.0}), ValueError, "timestamp", id="metric-inf-ts"),
        pytest.param(lambda: Heartbeat("r", TS, [("steps", 1)]), TypeError, "counters", id="heartbeat-counters-list"),
        pytest.param(lambda: LogEvent("r", TS, "t", level=["info"]), TypeError, "level", id="unhashable-level"),
        pytest.param(lambda: AlertEvent("r", TS, "rule", "firing", value="high"), TypeError, "value", id="alert-value"),
        pytest.param(
            lambda: AlertEvent("r", TS, "rule", "firing", active_since="now"), TypeError, "active_since", id="since"
        ),
    ],
)
def test_invalid_edge_fields_raise_naming_the_field(build: Any, error: type[Exception], field: str) -> None:
    """Non-finite timestamps, non-mapping counters, unhashable levels and bad alert fields raise naming the field."""
    with pytest.raises(error) as info:
        build()
    assert field in str(info.value)


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_is_accepted(level: str) -> None:
    """Every documented level name is a valid log level and exception severity."""
    assert LogEvent("r", TS, "t", level=level).level == level
    assert ExceptionEvent("r", TS, "E", "m", severity=level).severity == level


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(float("-inf"), id="minus-inf"),
    ],
)
def test_non_finite_metric_values_are_kept(value: float) -> None:
    """NaN and ±Inf are legal metric values, kept as they are and reported by has_non_finite."""
    event = Metric("r", TS, {"loss": value, "ok": 1.0})
    assert _same(event.values["loss"], value)
    assert event.has_non_finite()
    assert not Metric("r", TS, {"ok": 1.0}).has_non_finite()


def test_number_like_values_are_converted_to_float() -> None:
    """bool and numpy scalars become floats; ints stay ints."""
    np = pytest.importorskip("numpy")
    event = Metric("r", TS, {"flag": True, "n": np.float32(0.5), "i": np.int64(3), "k": 7})
    assert event.values == {"flag": 1.0, "n": 0.5, "i": 3.0, "k": 7}
    assert all(type(value) in (float, int) for value in event.values.values())


def test_numpy_integer_step_is_accepted_as_int() -> None:
    """A numpy integer step is converted to a plain int."""
    np = pytest.importorskip("numpy")
    event = Metric("r", TS, {"x": 1.0}, step=np.int64(5))
    assert event.step == 5
    assert type(event.step) is int


def test_non_finite_floats_are_accepted_in_json_payloads() -> None:
    """NaN and Inf inside a log payload are accepted (they are stored as null)."""
    event = LogEvent("r", TS, "t", data={"v": float("nan"), "w": [float("inf")]})
    assert math.isnan(event.data["v"])


# -- flattening --------------------------------------------------------------------


def test_nested_metrics_flatten_to_group_slash_name() -> None:
    """Nested mappings of metrics flatten to group/name keys, at any depth."""
    event = Metric("r", TS, {"train": {"loss": 0.5, "opt": {"lr": 1e-3}}, "epoch": 2})
    assert event.values == {"train/loss": 0.5, "train/opt/lr": 1e-3, "epoch": 2}


def test_flatten_metrics_keeps_flat_plain_values() -> None:
    """A flat dict of plain numbers comes back equal but as a new dict."""
    metrics = {"a": 1.0, "b": 2}
    flat = flatten_metrics(metrics)
    assert flat == metrics
    assert flat is not metrics


def test_flatten_metrics_accepts_any_mapping() -> None:
    """A non-dict Mapping (e.g. a mappingproxy) is flattened like a dict."""
    from types import MappingProxyType

    assert flatten_metrics(MappingProxyType({"g": MappingProxyType({"x": 1.5})})) == {"g/x": 1.5}


# -- copies and immutability ------------------------------------------------------------


def test_metric_values_are_copied_from_the_callers_dict() -> None:
    """Mutating the caller's dict after construction does not change the metric."""
    values = {"loss": 0.5}
    nested = {"train": {"loss": 0.5}}
    flat_event = Metric("r", TS, values)
    nested_event = Metric("r", TS, nested)
    values["loss"] = 9.0
    values["new"] = 1.0
    nested["train"]["loss"] = 9.0
    assert flat_event.values == {"loss": 0.5}
    assert nested_event.values == {"train/loss": 0.5}


@pytest.mark.parametrize(
    ("build", "field"),
    [
        pytest.param(lambda m: Metric("r", TS, {"x": 1.0}, tags=m), "tags", id="metric-tags"),
        pytest.param(lambda m: LogEvent("r", TS, "t", data=m), "data", id="log-data"),
        pytest.param(lambda m: StatePatch("r", TS, m), "patch", id="state-patch"),
        pytest.param(lambda m: RunLifecycle("r", TS, "started", config=m), "config", id="lifecycle-config"),
        pytest.param(lambda m: AlertEvent("r", TS, "rule", "firing", labels=m), "labels", id="alert-labels"),
    ],
)
def test_mapping_fields_are_copied_from_the_callers_dict(build: Any, field: str) -> None:
    """Mutating the caller's mapping after construction does not change an (immutable) event."""
    caller = {"k": "v"}
    event = build(caller)
    caller["k"] = "changed"
    caller["extra"] = "added"
    assert getattr(event, field) == {"k": "v"}


@pytest.mark.parametrize("event", ALL_KINDS)
def test_events_are_immutable(event: Any) -> None:
    """Assigning to any field, or adding an attribute, raises AttributeError."""
    for name in event._fields:
        with pytest.raises(AttributeError):
            setattr(event, name, None)
    with pytest.raises(AttributeError):
        event.new_attribute = 1


def test_events_with_hashable_fields_hash_like_equality() -> None:
    """Equal events with hashable fields hash equal, and the kind takes part in the hash."""
    error = ExceptionEvent("r", TS, "E", "m")
    assert hash(error) == hash(ExceptionEvent("r", TS, "E", "m"))
    assert len({Heartbeat("r", TS), Heartbeat("r", TS), error}) == 2


def test_equal_fields_of_different_kinds_are_not_equal() -> None:
    """Two kinds with field-for-field equal tuples never compare equal."""
    # A Heartbeat's tuple is (run_id, timestamp, counters): a tuple built as a StatePatch's
    # (run_id, timestamp, patch) without its detail has the same shape.
    heartbeat = Heartbeat("r", TS, {})
    patch = tuple.__new__(StatePatch, ("r", TS, {}))
    assert tuple(heartbeat) == tuple(patch)
    log = LogEvent("r", TS, "t")
    assert heartbeat != patch
    assert patch != heartbeat
    assert heartbeat != ("r", TS, {})
    assert log.__eq__(Heartbeat("r", TS)) is False


def test_equal_fields_of_the_same_kind_are_equal() -> None:
    """Events of one kind with equal fields are equal, and != is its negation."""
    assert Heartbeat("r", TS, {"s": 1}) == Heartbeat("r", TS, {"s": 1})
    assert Heartbeat("r", TS, {"s": 1}).__ne__(Heartbeat("r", TS, {"s": 1})) is False
    assert Heartbeat("r", TS, {"s": 1}) != Heartbeat("r", TS, {"s": 2})


# -- wire form ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", ALL_KINDS)
def test_wire_form_round_trips_for_every_kind(event: Any) -> None:
    """event_from_dict(event_to_dict(e)) equals e for every kind, with every field set."""
    wire = event_to_dict(event)
    assert wire["kind"] == event.kind
    back = event_from_dict(wire)
    assert type(back) is type(event)
    assert _same(tuple(back), tuple(event))


@pytest.mark.parametrize(("cls", "args"), MINIMAL_KINDS)
def test_wire_form_round_trips_with_defaults(cls: type[Any], args: tuple[Any, ...]) -> None:
    """A minimal event of every kind round-trips, and so does its wire form without defaults."""
    event = cls(*args)
    assert event_from_dict(event_to_dict(event)) == event
    required = {"kind": cls.kind, **dict(zip(cls._fields, args, strict=False))}
    assert event_from_dict(required) == event


def test_wire_form_holds_plain_json_values() -> None:
    """The wire form of a lifecycle event holds the transition as its string value."""
    wire = event_to_dict(RunLifecycle("r", TS, RunTransition.PAUSED))
    assert wire["transition"] == "paused"
    assert type(wire["transition"]) is str


def test_event_from_dict_uses_default_run_id() -> None:
    """A wire dict without run_id takes default_run_id, and an explicit run_id wins."""
    event = event_from_dict({"kind": "heartbeat", "timestamp": TS}, default_run_id="dflt")
    assert event.run_id == "dflt"
    event = event_from_dict({"kind": "heartbeat", "run_id": "own", "timestamp": TS}, default_run_id="dflt")
    assert event.run_id == "own"


def test_event_from_dict_converts_integer_timestamps() -> None:
    """An integer timestamp on the wire becomes a float."""
    event = event_from_dict({"kind": "heartbeat", "run_id": "r", "timestamp": 5})
    assert event.timestamp == 5.0
    assert type(event.timestamp) is float


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        pytest.param({"kind": "bogus", "run_id": "r", "timestamp": TS}, ValueError, "kind", id="unknown-kind"),
        pytest.param({"run_id": "r", "timestamp": TS}, ValueError, "kind", id="missing-kind"),
        pytest.param({"kind": 3, "run_id": "r", "timestamp": TS}, ValueError, "kind", id="non-string-kind"),
        pytest.param(
            {"kind": "heartbeat", "run_id": "r", "timestamp": TS, "extra": 1},
            ValueError,
            "unknown field 'extra'",
            id="unknown-field",
        ),
        pytest.param(
            {"kind": "heartbeat", "run_id": "r", "timestamp": TS, "kind_": 1},
            ValueError,
            "unknown field 'kind_'",
            id="near-miss-field",
        ),
        pytest.param({"kind": "metric", "run_id": "r", "timestamp": TS}, ValueError, "'values'", id="missing-values"),
        pytest.param({"kind": "log", "run_id": "r", "type": "t"}, ValueError, "'timestamp'", id="missing-timestamp"),
        pytest.param({"kind": "heartbeat", "timestamp": TS}, ValueError, "'run_id'", id="missing-run-id"),
        pytest.param(
            {"kind": "metric", "run_id": "r", "timestamp": TS, "values": {"x": "1"}},
            TypeError,
            "'x'",
            id="invalid-field-value",
        ),
        pytest.param(["metric"], TypeError, "JSON object", id="not-a-mapping"),
    ],
)
def test_event_from_dict_errors_name_the_problem(data: Any, error: type[Exception], message: str) -> None:
    """A malformed wire dict raises TypeError/ValueError naming the kind or field."""
    with pytest.raises(error) as info:
        event_from_dict(data)
    assert message in str(info.value)


#: Names the store can keep (event_from_dict refuses NUL and lone surrogates in run ids and metric names).
storable_text = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
metric_names = st.text(storable_text, min_size=1, max_size=12)
metric_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=200, database=None, deadline=None)
@given(
    run_id=st.text(storable_text, min_size=1, max_size=20),
    timestamp=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    values=st.dictionaries(metric_names, metric_values, min_size=1, max_size=8),
    step=st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    tags=st.one_of(st.none(), st.dictionaries(metric_names, st.text(max_size=8), max_size=3)),
)
def test_metric_round_trip_property(
    run_id: str, timestamp: float, values: dict[str, float], step: int | None, tags: dict[str, str] | None
) -> None:
    """Any valid metric, NaN and ±Inf included, survives event_to_dict → event_from_dict."""
    event = Metric(run_id, timestamp, values, step=step, tags=tags)
    wire = event_to_dict(event)
    # Rebuild every float so equality cannot pass on object identity (NaN is NaN).
    wire["values"] = {name: float(repr(v)) if type(v) is float else v for name, v in wire["values"].items()}
    back = event_from_dict(wire)
    assert type(back) is Metric
    assert back.run_id == run_id
    assert back.timestamp == timestamp
    assert back.step == step
    assert back.tags == tags
    assert _same(back.values, values)
    assert back.has_non_finite() == any(type(v) is float and not math.isfinite(v) for v in values.values())


# -- merge_state -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "patch", "expected"),
    [
        pytest.param({"a": 1}, {"b": 2}, {"a": 1, "b": 2}, id="adds-key"),
        pytest.param({"a": 1}, {"a": 2}, {"a": 2}, id="replaces-scalar"),
        pytest.param(
            {"model": {"lr": 0.1, "layers": 2}},
            {"model": {"lr": 0.01}},
            {"model": {"lr": 0.01, "layers": 2}},
            id="nested-merge",
        ),
        pytest.param({"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}}}, {"a": {"b": {"c": 1, "d": 3}}}, id="deep"),
        pytest.param({"xs": [1, 2, 3]}, {"xs": [4]}, {"xs": [4]}, id="lists-replace"),
        pytest.param({"a": 1, "b": 2}, {"a": None}, {"b": 2}, id="none-deletes"),
        pytest.param({"a": {"b": 1, "c": 2}}, {"a": {"b": None}}, {"a": {"c": 2}}, id="none-deletes-nested"),
        pytest.param({"a": 1}, {"missing": None}, {"a": 1}, id="deleting-absent-key"),
        pytest.param({"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}}, id="mapping-replaces-scalar"),
        pytest.param({"a": {"b": 2}}, {"a": 5}, {"a": 5}, id="scalar-replaces-mapping"),
        pytest.param({}, {"a": {"b": None, "c": 1}}, {"a": {"c": 1}}, id="none-inside-new-mapping"),
        pytest.param({"a": 1}, {}, {"a": 1}, id="empty-patch"),
    ],
)
def test_merge_state(base: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    """merge_state deep-merges mappings, replaces lists and scalars, and deletes on None."""
    assert merge_state(base, patch) == expected


def test_merge_state_does_not_mutate_its_inputs() -> None:
    """Neither the base nor the patch (nor anything nested in them) is modified."""
    base = {"model": {"lr": 0.1, "layers": [64]}, "gone": 1}
    patch = {"model": {"lr": 0.01, "layers": [32]}, "gone": None, "new": {"x": 1}}
    base_before = {"model": {"lr": 0.1, "layers": [64]}, "gone": 1}
    patch_before = {"model": {"lr": 0.01, "layers": [32]}, "gone": None, "new": {"x": 1}}
    merged = merge_state(base, patch)
    assert base == base_before
    assert patch == patch_before
    assert merged == {"model": {"lr": 0.01, "layers": [32]}, "new": {"x": 1}}
    merged["model"]["lr"] = 5
    assert base["model"]["lr"] == 0.1
    assert patch["model"]["lr"] == 0.01


@pytest.mark.parametrize(
    "patches",
    [
        pytest.param([{"a": {"b": 1}}, {"a": {"c": 2}}, {"a": {"b": None}}], id="nested"),
        pytest.param([{"a": 1}, {"a": {"x": {"y": 1}}}, {"a": {"x": {"z": 2}}}, {"a": 3}], id="replace-and-merge"),
        pytest.param([{"l": [1]}, {"l": [2, 3]}, {"gone": None}, {}], id="lists-and-deletes"),
    ],
)
def test_merge_state_into_merges_like_merge_state_without_touching_the_patches(patches: list[Any]) -> None:
    """Merging in place gives what merge_state gives, and no patch changes when later ones are merged."""
    kept = [copy.deepcopy(patch) for patch in patches]
    state: dict[str, Any] = copy_state({"base": {"k": 1}})
    expected: dict[str, Any] = {"base": {"k": 1}}
    for patch in patches:
        merge_state_into(state, patch)
        expected = merge_state(expected, patch)
    assert state == expected
    assert patches == kept


# -- strings JSON and SQLite cannot hold; numpy values in payloads ----------------------------------

LONE = "frame_\udcff.png"  # what os.fsdecode gives for a file name that is not UTF-8


@pytest.mark.parametrize(
    ("build", "path"),
    [
        pytest.param(lambda: LogEvent("r", TS, "t", data={"file": LONE}), "data.file", id="log-data-value"),
        pytest.param(lambda: LogEvent("r", TS, "t", data={"a": [1, {LONE: 2}]}), "data.a[1]", id="log-data-key"),
        pytest.param(lambda: StatePatch("r", TS, {"g": {"files": ["ok", LONE]}}), "patch.g.files[1]", id="state"),
        pytest.param(lambda: RunLifecycle("r", TS, "started", config={"path": LONE}), "config.path", id="config"),
        pytest.param(lambda: RunLifecycle("r", TS, "failed", metadata={"why": LONE}), "metadata.why", id="metadata"),
        pytest.param(lambda: ExceptionEvent("r", TS, "OSError", LONE), "message", id="exception-message"),
        pytest.param(lambda: ExceptionEvent("r", TS, "E", "m", traceback=LONE), "traceback", id="exception-trace"),
        pytest.param(lambda: Heartbeat("r", TS, {LONE: 1}), "counters keys", id="heartbeat-counter"),
        pytest.param(lambda: Metric("r", TS, {"x": 1.0}, tags={"file": LONE}), "tags.file", id="metric-tag"),
        pytest.param(lambda: LogEvent("r", TS, LONE), "type", id="log-type"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_field_path(build: Any, path: str) -> None:
    """A string with a lone surrogate anywhere in an event is a ValueError at the call naming its path."""
    with pytest.raises(ValueError, match="lone surrogate") as caught:
        build()
    assert str(caught.value).startswith(path + " "), caught.value


def test_numpy_scalars_and_0d_arrays_become_python_values_in_payloads() -> None:
    """numpy scalars of every dtype and 0-d arrays in a payload are stored as the Python value they hold."""
    np = pytest.importorskip("numpy")
    data = {
        "f32": np.float32(0.5),
        "f16": np.float16(2.0),
        "i8": np.int8(-3),
        "u64": np.uint64(7),
        "i64": np.int64(2**40),
        "flag": np.bool_(True),
        "zero_d": np.array(1.25),
        "zero_d_int": np.array(4, dtype=np.int32),
        "text": np.str_("hello"),
        "nested": [np.float64(1.5), {"deep": np.int16(9)}],
    }
    for event in (
        LogEvent("r", TS, "t", data=data),
        StatePatch("r", TS, data),
        RunLifecycle("r", TS, "started", config=data),
    ):
        payload = (
            event.data
            if isinstance(event, LogEvent)
            else event.patch
            if isinstance(event, StatePatch)
            else event.config
        )
        expected = {
            "f32": 0.5, "f16": 2.0, "i8": -3, "u64": 7, "i64": 2**40, "flag": True, "zero_d": 1.25,
            "zero_d_int": 4, "text": "hello", "nested": [1.5, {"deep": 9}],
        }  # fmt: skip
        assert payload == expected
        assert [type(payload[key]) for key in expected] == [type(value) for value in expected.values()]


def test_a_numpy_array_with_dimensions_is_still_refused() -> None:
    """Only 0-d values convert: an array with dimensions is a TypeError naming the field."""
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"^patch.a must be JSON-compatible, got ndarray"):
        StatePatch("r", TS, {"a": np.zeros(3)})


def test_a_self_referencing_metrics_dict_is_a_value_error_not_recursion() -> None:
    """A metrics mapping that contains itself is refused with ValueError (not RecursionError)."""
    metrics: dict[str, Any] = {"loss": 1.0}
    metrics["self"] = metrics
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        Metric("r", TS, metrics)
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        StatePatch("r", TS, metrics)


_DIGEST = "ab" * 32


def test_image_events_travel_without_their_bytes() -> None:
    """An image's wire form has everything but the bytes; its weight counts them."""
    from runwatch.events import ImageEvent, event_nbytes
    from runwatch.wire import event_to_wire

    event = ImageEvent("r", TS, "frame", 3, b"\x89PNG" + bytes(10_000), "image/png", 4, 2, _DIGEST, "cap")
    wire = event_to_wire(event)
    assert "data" not in wire
    assert wire == {
        "kind": "image", "run_id": "r", "timestamp": TS, "name": "frame", "step": 3, "mime": "image/png",
        "width": 4, "height": 2, "digest": _DIGEST, "caption": "cap",
    }  # fmt: skip
    assert event_nbytes(event) > 10_000


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        pytest.param({"name": ""}, ValueError, "name", id="empty name"),
        pytest.param({"name": "a\x00b"}, ValueError, "NUL", id="NUL in name"),
        pytest.param({"step": 1.5}, TypeError, "step", id="float step"),
        pytest.param({"data": "text"}, TypeError, "data", id="text data"),
        pytest.param({"mime": "image/gif"}, ValueError, "mime", id="gif"),
        pytest.param({"width": 0}, TypeError, "width", id="zero width"),
        pytest.param({"digest": "XYZ"}, ValueError, "digest", id="bad digest"),
        pytest.param({"caption": 3}, TypeError, "caption", id="number caption"),
    ],
)
def test_image_events_check_their_fields(change: dict[str, Any], error: type[Exception], match: str) -> None:
    """Each field of an image event is checked at construction, naming it."""
    from runwatch.events import ImageEvent

    fields: dict[str, Any] = {
        "run_id": "r", "timestamp": TS, "name": "frame", "step": 1, "data": b"x", "mime": "image/png",
        "width": 1, "height": 1, "digest": _DIGEST, "caption": None,
    }  # fmt: skip
    ImageEvent(**fields)
    with pytest.raises(error, match=match):
        ImageEvent(**(fields | change))


def test_histogram_events_check_their_counts_and_range() -> None:
    """A histogram's counts must add up to its size, with a finite range when it has bins."""
    from runwatch.events import HistogramEvent
    from runwatch.wire import event_to_wire

    ok = HistogramEvent("r", TS, "q", 0, 4, 1, 0, 0, 0.0, 1.0, math.inf, 0.0, 1.0, (1, 2))
    assert event_to_wire(ok)["sum"] == "Infinity" and event_to_wire(ok)["counts"] == (1, 2)
    with pytest.raises(ValueError, match="size"):
        HistogramEvent("r", TS, "q", 0, 5, 1, 0, 0, 0.0, 1.0, 1.0, 0.0, 1.0, (1, 2))
    with pytest.raises(TypeError, match="finite"):
        HistogramEvent("r", TS, "q", 0, 3, 0, 0, 0, math.nan, 1.0, 1.0, 0.0, 1.0, (1, 2))
    with pytest.raises(ValueError, match="None"):
        HistogramEvent("r", TS, "q", 0, 0, 0, 0, 0, 0.0, None, 0.0, None, None, ())
    with pytest.raises(TypeError, match="counts"):
        HistogramEvent("r", TS, "q", 0, 3, 0, 0, 0, 0.0, 1.0, 1.0, 0.0, 1.0, (1, -1, 3))
