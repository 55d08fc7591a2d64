"""Property tests of the event model: every kind round-trips through its dict form, the wire and the store.

tests/test_events.py has hand-picked events of every kind and a dict round-trip
property for metrics; tests/store/test_queries.py reads hand-picked values back.
These properties generate events of every kind (NaN and ±Inf where allowed,
64-bit integer bounds, unicode including astral characters, nested payloads) and check:

* ``event_from_dict(event_to_dict(e)) == e`` and ``event_to_wire(e)`` is strict
  JSON that decodes back to ``e`` (docs/protocol.md: a metric's NaN is ``null``,
  ±Inf are ``"Infinity"``/``"-Infinity"``; elsewhere JSON payloads hold no
  non-finite number, which the encoder writes as ``null``);
* a malformed field raises ``TypeError``/``ValueError`` whose ``.field`` names it;
* written through the pipeline and read back through ``DatabaseManager``, every
  kind comes back with the same data: metric values bit-exact (NaN, ±Inf, -0.0,
  subnormals; a 64-bit integer as its float64), steps and timestamps, log,
  lifecycle, exception and alert events with their payloads, the state as the
  patches merged in order, and the run row (status, kind, config, metadata,
  final reward, heartbeat counters, times, per-metric statistics).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.events import (
    EVENT_CLASSES,
    INT64_MAX,
    INT64_MIN,
    LEVELS,
    MAX_TIMESTAMP,
    AlertEvent,
    ExceptionEvent,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    merge_state,
)
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store.encode import LIVENESS_STATUS
from runwatch.store.manager import DatabaseManager
from runwatch.wire import event_from_dict, event_to_dict, event_to_wire

# -- strategies ---------------------------------------------------------------------

#: Any unicode text hypothesis draws (astral characters, combining marks, NUL...);
#: lone surrogates are excluded by hypothesis' default alphabet (see the test for them below).
texts = st.text(max_size=12)
# Run ids, log types and metric names cannot hold NUL (runwatch.events.check_storable).
names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10)
timestamps = st.one_of(st.floats(0.0, MAX_TIMESTAMP), st.integers(0, int(MAX_TIMESTAMP)))
int64s = st.one_of(st.integers(INT64_MIN, INT64_MAX), st.sampled_from([INT64_MIN, INT64_MAX, 0, -1]))
any_floats = st.one_of(
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308])
)
levels = st.sampled_from(LEVELS)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), int64s, any_floats, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=8,
)
json_objects = st.dictionaries(texts, json_values, max_size=4)
string_maps = st.dictionaries(texts, texts, max_size=3)
# A metric named like a frame column comes back as ``metric:<name>`` (documented in
# run_metrics_frame); names that already start with ``metric:`` would chain that prefix.
metric_names = names.filter(lambda name: not name.startswith("metric:"))
metric_values = st.one_of(any_floats, int64s)


@st.composite
def metric_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Flat or nested metric mappings whose flattened names are all distinct."""
    flat = draw(st.dictionaries(metric_names, metric_values, min_size=1, max_size=5))
    if draw(st.booleans()):
        group = draw(names.filter(lambda name: "/" not in name and not name.startswith("metric:")))
        inner = draw(st.dictionaries(names, metric_values, min_size=1, max_size=3))
        flat = {name: value for name, value in flat.items() if not name.startswith(group + "/")}
        flat.pop(group, None)
        return {**flat, group: inner}
    return flat


def metrics(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[Metric]:
    return st.builds(
        Metric,
        run_ids,
        timestamps,
        metric_dicts(),
        step=st.one_of(st.none(), int64s),
        tags=st.one_of(st.none(), string_maps),
    )


def log_events(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[LogEvent]:
    # Liveness verdict types change the run's status (tests/stages/test_liveness.py covers them).
    types = names.filter(lambda name: name not in LIVENESS_STATUS)
    return st.builds(
        LogEvent,
        run_ids,
        timestamps,
        types,
        levels,
        st.one_of(st.none(), json_objects),
        st.one_of(st.none(), json_objects),
    )


def state_patches(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[StatePatch]:
    return st.builds(StatePatch, run_ids, timestamps, json_objects, st.one_of(st.none(), json_objects))


def lifecycles(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[RunLifecycle]:
    return st.builds(
        RunLifecycle,
        run_ids,
        timestamps,
        st.sampled_from(list(RunTransition)),
        run_kind=st.sampled_from(["training", "session"]),
        config=st.one_of(st.none(), json_objects),
        final_reward=st.one_of(st.none(), any_floats),
        metadata=st.one_of(st.none(), json_objects),
        owner=st.one_of(st.none(), names),
    )


def exceptions(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[ExceptionEvent]:
    return st.builds(
        ExceptionEvent,
        run_ids,
        timestamps,
        names,
        texts,
        traceback=texts,
        category=texts,
        severity=levels,
        component=st.one_of(st.none(), texts),
    )


def heartbeats(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[Heartbeat]:
    counter_names = st.one_of(st.sampled_from(["total_steps", "total_episodes"]), texts)
    return st.builds(Heartbeat, run_ids, timestamps, st.one_of(st.none(), st.dictionaries(counter_names, int64s)))


def alerts(run_ids: st.SearchStrategy[str]) -> st.SearchStrategy[AlertEvent]:
    return st.builds(
        AlertEvent,
        run_ids,
        timestamps,
        names,
        st.sampled_from(["inactive", "pending", "firing", "resolved"]),
        severity=st.one_of(levels, st.just("page"), names),
        value=st.one_of(st.none(), any_floats),
        labels=st.one_of(st.none(), string_maps),
        annotations=st.one_of(st.none(), string_maps),
        active_since=st.one_of(st.none(), timestamps),
    )


KINDS = {
    "metric": metrics,
    "log": log_events,
    "state": state_patches,
    "lifecycle": lifecycles,
    "exception": exceptions,
    "heartbeat": heartbeats,
    "alert": alerts,
}


def any_event(run_ids: st.SearchStrategy[str] = names) -> st.SearchStrategy[Any]:
    return st.one_of(*(build(run_ids) for build in KINDS.values()))


def test_the_strategies_cover_every_event_class() -> None:
    """Every class in EVENT_CLASSES has a strategy here, so a new kind cannot go untested."""
    assert set(KINDS) == set(EVENT_CLASSES)


# -- comparing ----------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Structural equality where NaN equals NaN, -0.0 differs from 0.0 and 1 differs from 1.0 and True."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def same_or_zeros(a: Any, b: Any) -> bool:
    """``same``, except that 0.0 and -0.0 are equal."""
    return same(a, b) or (a == 0.0 and b == 0.0)


def stored_json(value: Any) -> Any:
    """A JSON payload as the store gives it back: non-finite numbers are ``null`` (JSON has none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: stored_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [stored_json(item) for item in value]
    return value


# -- dict and wire forms ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(event=any_event())
def test_every_kind_round_trips_through_its_dict_form(event: Any) -> None:
    """event_from_dict(event_to_dict(e)) == e for every kind, also after rebuilding every float."""
    data = event_to_dict(event)
    assert data["kind"] == event.kind
    back = event_from_dict(data)
    assert type(back) is type(event)
    assert back == event
    # Equality above may hold by object identity for NaN; rebuild every value to rule that out.
    rebuilt = event_from_dict(_rebuilt(data))
    assert same(_rebuilt(event_to_dict(rebuilt)), _as_read(data))


def _as_read(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` rebuilt, with an int timestamp as the float event_from_dict makes of it (the constructors keep it)."""
    out = _rebuilt(data)
    if type(out["timestamp"]) is int:
        out["timestamp"] = float(out["timestamp"])
    return out


def _rebuilt(value: Any) -> Any:
    if isinstance(value, float):
        return float(repr(value))
    if isinstance(value, dict):
        return {key: _rebuilt(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rebuilt(item) for item in value]
    return value


def _strict_loads(text: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _from_wire_numbers(value: Any) -> float:
    """docs/protocol.md: a metric value is a number, null (NaN) or "Infinity"/"-Infinity"."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return {"Infinity": math.inf, "-Infinity": -math.inf}[value]
    return value


@settings(max_examples=300, deadline=None)
@given(event=any_event())
def test_wire_form_is_strict_json_and_decodes_to_the_same_event(event: Any) -> None:
    """event_to_wire(e) encodes as strict JSON and decodes (per docs/protocol.md) back to e."""
    wire = event_to_wire(event)
    text = orjson.dumps(wire)  # how the websocket hub and the REST API encode it
    decoded = _strict_loads(text)
    assert json.dumps(decoded, allow_nan=False)  # nothing non-standard survived decoding
    if decoded["kind"] == "metric":
        decoded["values"] = {name: _from_wire_numbers(value) for name, value in decoded["values"].items()}
        expected = event_to_dict(event)
    else:
        # Elsewhere a non-finite number has no JSON form: it travels as null.
        expected = stored_json(event_to_dict(event))
    back = event_from_dict(decoded)
    assert type(back) is type(event)
    assert same(_rebuilt(event_to_dict(back)), _as_read(expected))


wire_metric_items = st.fixed_dictionaries(
    {"kind": st.just("metric"), "run_id": st.one_of(names, st.just(""), st.just("a\x00b"), st.integers())},
    optional={
        "timestamp": st.one_of(timestamps, st.just(-1.0), st.just(math.nan)),
        "values": st.one_of(
            st.dictionaries(
                st.one_of(metric_names, st.just(""), st.just("x\x00y")),
                st.one_of(metric_values, st.booleans(), st.sampled_from(["NaN", "Infinity", "-Infinity", "x"])),
                max_size=4,
            ),
            st.none(),
        ),
        "step": st.one_of(st.none(), int64s, st.just(2.0), st.just(2.5), st.just(2**63), st.booleans()),
        "tags": st.one_of(st.none(), string_maps, st.just({"a": 1})),
        "extra": st.just(1),
    },
)


@settings(max_examples=400, deadline=None)
@given(item=wire_metric_items)
def test_the_ingest_fast_path_decides_as_the_generic_path(item: dict[str, Any]) -> None:
    """event_from_wire builds the event the generic decoding does, or refuses it with the same error and field."""
    from runwatch.wire.events import decode_wire_numbers, event_from_wire

    def outcome(decode: Any) -> Any:
        try:
            return ("ok", event_to_dict(decode()))
        except (TypeError, ValueError) as exc:
            return (type(exc), str(exc), getattr(exc, "field", None))

    fast = outcome(lambda: event_from_wire(dict(item)))
    generic = outcome(lambda: event_from_dict(decode_wire_numbers(dict(item))))
    if fast[0] == "ok":
        assert generic[0] == "ok" and same(_rebuilt(fast[1]), _rebuilt(generic[1]))
    else:
        assert fast == generic


# -- invalid fields -----------------------------------------------------------------

#: Per kind and field, values that must be refused (as a JSON producer could send them).
BAD_COMMON = {
    "run_id": [None, 0, "", [], {}],
    "timestamp": [None, "1", -1.0, math.nan, math.inf, MAX_TIMESTAMP * 2, True, [], {}],
}
BAD_FIELDS: dict[str, dict[str, list[Any]]] = {
    "metric": {
        # (an int beyond 64 bits is a valid metric value: it is taken as its float)
        "values": [None, [], {}, 3, "x", {"": 1.0}, {"x": "1"}, {"x": None}, {"g": {"x": []}}, {"x": [1.0]}],
        "step": [1.5, "3", True, 2**63, [], {}],
        "tags": [3, "x", [], {"a": 1}, {"a": None}],
    },
    "log": {
        "type": [None, "", 3, []],
        "level": [None, "loud", "INFO", 3, []],
        "data": [3, "x", [1], {"k": 2**64}, {"k": [2**64]}],
        "detail": [3, "x", [1], {"k": 2**64}],
    },
    "state": {
        "patch": [None, 3, "x", [], {"k": 2**64}, {"k": {"j": -(2**63) - 1}}],
        "detail": [3, "x", [], {"k": 2**64}],
    },
    "lifecycle": {
        "transition": [None, "exploded", 3, []],
        "run_kind": [None, "", 3],
        "config": [3, "x", [1], {"k": 2**64}],
        "final_reward": ["x", [], {}],
        "metadata": [3, "x", [1], {"k": 2**64}],
        "owner": [3, "", "a\x00b", "x" * 201],
    },
    "exception": {
        "error_type": [None, "", 3],
        "message": [None, 3, []],
        "traceback": [None, 3],
        "category": [None, 3],
        "severity": [None, "fatal", 3],
        "component": [3, []],
    },
    "heartbeat": {"counters": [3, "x", [], {"n": 1.5}, {"n": "1"}, {"n": 2**63}]},
    "alert": {
        "rule": [None, "", 3],
        "state": [None, "exploded", 3],
        "severity": [None, "", 3],
        "value": ["x", [], {}],
        "labels": [3, [], {"a": 1}],
        "annotations": [3, [], {"a": None}],
        "active_since": ["x", -1.0, math.nan],
    },
}
CASES = [
    (kind, field, bad)
    for kind, fields in BAD_FIELDS.items()
    for field, values in {**BAD_COMMON, **fields}.items()
    for bad in values
]


def test_the_bad_field_table_covers_every_field() -> None:
    """Every field of every kind has refused values in the table below."""
    for kind, cls in EVENT_CLASSES.items():
        assert set(BAD_COMMON) | set(BAD_FIELDS[kind]) == set(cls._fields), kind


@settings(max_examples=200, deadline=None)
@given(event=any_event(), case=st.sampled_from(CASES))
def test_a_malformed_field_raises_an_error_naming_it(event: Any, case: tuple[str, str, Any]) -> None:
    """event_from_dict refuses a malformed field with TypeError/ValueError whose .field names that field."""
    kind, field, bad = case
    data = event_to_dict(event)
    if data["kind"] != kind:  # the case's field is put into a valid event of its kind
        data = event_to_dict(next(iter(_MINIMAL[kind])))
    data[field] = bad
    with pytest.raises((TypeError, ValueError)) as info:
        event_from_dict(data)
    named = getattr(info.value, "field", None)
    assert named is not None, f"{kind}.{field} = {bad!r}: {info.value} names no field"
    assert named == field or named.startswith((field + ".", field + "[")), (kind, field, bad, named, str(info.value))


_MINIMAL: dict[str, list[Any]] = {
    "metric": [Metric("r", 1.0, {"x": 1.0})],
    "log": [LogEvent("r", 1.0, "t")],
    "state": [StatePatch("r", 1.0, {})],
    "lifecycle": [RunLifecycle("r", 1.0, "started")],
    "exception": [ExceptionEvent("r", 1.0, "E", "m")],
    "heartbeat": [Heartbeat("r", 1.0)],
    "alert": [AlertEvent("r", 1.0, "rule", "firing")],
}


@pytest.mark.parametrize("kind", sorted(EVENT_CLASSES))
def test_missing_and_unknown_fields_are_named(kind: str) -> None:
    """A required field left out, or a field the kind does not have, is named in .field."""
    cls = EVENT_CLASSES[kind]
    data = event_to_dict(_MINIMAL[kind][0])
    for field in cls._fields:
        if field in cls._field_defaults:
            continue
        partial = {key: value for key, value in data.items() if key != field}
        with pytest.raises(ValueError, match=field) as info:
            event_from_dict(partial)
        assert getattr(info.value, "field", None) == field
    with pytest.raises(ValueError, match="bogus") as info:
        event_from_dict({**data, "bogus": 1})
    assert getattr(info.value, "field", None) == "bogus"


# -- through the store --------------------------------------------------------------

_stores = itertools.count()


#: When the last :func:`write_and_read` began and ended writing (epoch seconds): the store caps a
#: run's times at its commits, so a timestamp after the start may read back as a commit time.
written_between = [0.0, 0.0]


def write_and_read(root: Path, events: list[Any]) -> DatabaseManager:
    """Write ``events`` through the default pipeline into a new store; a manager to read it."""
    db = root / f"store-{next(_stores)}.db"
    written_between[0] = time.time()

    async def write() -> None:
        async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
            for event in events:
                pipeline.emit(event)
            assert await pipeline.flush(30)
            stats = pipeline.statistics()["components"]["store"]
            assert stats["store_dropped_events"] == {} and stats["dropped_events"] == {}, stats

    asyncio.run(write())
    written_between[1] = time.time()
    return DatabaseManager(db)


def when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def frame_column(name: str) -> str:
    """The column of metric ``name`` (run_metrics_frame renames the fixed column names)."""
    return "metric:" + name if name in ("timestamp", "step") else name


def check_metrics(db: DatabaseManager, run_id: str, logged: list[Metric]) -> None:
    frame = db.get_run_metrics(run_id, align="call")  # one row per call, as written
    assert len(frame) == len(logged)
    if not logged:
        return
    all_names = {name for metric in logged for name in metric.values}
    assert set(frame.columns) == {"timestamp", "step", *(frame_column(name) for name in all_names)}
    # The store keeps a call's time as integer microseconds, round(seconds * 10**6) (docs/store.md).
    micros = np.rint(np.array([metric.timestamp for metric in logged]) * 1e6).astype(np.int64)
    expected_times = pd.to_datetime(micros, unit="us", utc=True)
    assert (frame["timestamp"].to_numpy() == expected_times.as_unit("ns").to_numpy()).all()
    assert frame["step"].tolist() == [pd.NA if m.step is None else m.step for m in logged]
    for row, metric in enumerate(logged):
        for name in all_names:
            stored = float(frame[frame_column(name)].iloc[row])
            # NaN where the call did not log the name; a 64-bit int comes back as float64 (float columns).
            wanted = float(metric.values[name]) if name in metric.values else math.nan
            assert same(stored, wanted), (row, name, stored, wanted)
    summary = db.get_run_summary(run_id)["metrics"]
    assert set(summary) == all_names
    for name in all_names:
        values = [(float(m.values[name]), m) for m in logged if name in m.values]
        numbers = [value for value, _ in values if not math.isnan(value)]
        stats = summary[name]
        assert stats["count"] == len(values) and stats["nan_count"] == len(values) - len(numbers), (name, stats)
        assert same(stats["last"], values[-1][0]), (name, stats)
        assert stats["last_step"] == values[-1][1].step
        assert stats["last_timestamp"] == when(values[-1][1].timestamp)
        if numbers:  # -0.0 == 0.0: which zero is the least of both is not defined
            assert same_or_zeros(stats["min"], min(numbers)), (name, stats)
            assert same_or_zeros(stats["max"], max(numbers)), (name, stats)
        else:
            assert stats["min"] is None and stats["max"] is None and stats["mean"] is None


def expected_event(event: Any) -> dict[str, Any]:
    """How a stored log, lifecycle, exception or alert event reads back."""
    if type(event) is LogEvent:
        kind, type_, level, data = "log", event.type, event.level, dict(event.data)
    elif type(event) is RunLifecycle:
        data = {"status": event.status}
        if event.transition is RunTransition.STARTED:
            data["kind"] = event.run_kind
            if event.config is not None:
                data["config"] = event.config
        if event.final_reward is not None:
            data["final_reward"] = event.final_reward
        if event.metadata is not None:
            data["metadata"] = event.metadata
        kind, type_, level = "lifecycle", f"run_{event.transition.value}", "info"
    elif type(event) is ExceptionEvent:
        kind, type_, level = "exception", "error", event.severity
        data = {
            "category": event.category,
            "severity": event.severity,
            "component": event.component,
            "message": event.message,
            "error_type": event.error_type,
            "traceback": event.traceback,
        }
    else:
        assert type(event) is AlertEvent
        kind, type_ = "alert", "alert"
        level = event.severity if event.severity in LEVELS else "warning"
        data = {
            "rule": event.rule,
            "state": event.state,
            "severity": event.severity,
            "value": event.value,
            "labels": dict(event.labels),
            "annotations": dict(event.annotations),
            "active_since": event.active_since,
        }
    return {"event_type": type_, "event_data": stored_json(data), "level": level, "kind": kind}


def assert_capped(stored: datetime | None, written: float | None) -> None:
    """A run time reads back as written, or, when written later than the writing began, as a
    time of the commit between that start and ``written`` (the store caps run times at its commits)."""
    if written is None or stored is None:
        assert stored is written is None, (stored, written)
        return
    started, finished = written_between
    if written <= started:
        assert stored == when(written), (stored, written)
    else:
        assert when(started) <= stored <= when(min(written, finished)), (stored, written, started, finished)


def check_run_row(db: DatabaseManager, run_id: str, events: list[Any]) -> None:
    summary = db.get_run_summary(run_id)
    status, kind, config, metadata, reward, end = "running", "training", None, None, None, None
    last_heartbeat, steps, episodes = None, 0, 0
    for event in events:
        if type(event) is RunLifecycle:
            status = event.status
            if event.transition is RunTransition.STARTED:
                kind, end = event.run_kind, None
                config = event.config if event.config is not None else config
                metadata = event.metadata if event.metadata is not None else metadata
            elif event.transition is RunTransition.RESUMED:
                end = None
                config = event.config if event.config is not None else config
            elif event.transition in (RunTransition.COMPLETED, RunTransition.FAILED):
                end = event.timestamp
                if event.final_reward is not None and not math.isnan(event.final_reward):
                    reward = event.final_reward
                metadata = event.metadata if event.metadata is not None else metadata
        elif type(event) is Heartbeat:
            last_heartbeat = event.timestamp
            steps = (event.counters or {}).get("total_steps", steps)
            episodes = (event.counters or {}).get("total_episodes", episodes)
    active = [event.timestamp for event in events if type(event) is not AlertEvent]
    assert summary["status"] == status and summary["kind"] == kind
    assert same(summary["config"], stored_json(config if config is not None else {}))
    assert same(summary["metadata"], stored_json(metadata))
    # A REAL column: SQLite stores NaN as NULL, so a NaN final reward reads back as no reward
    # (the earlier one, if any), and -0.0 as the integer 0.
    assert same_or_zeros(summary["final_reward"], reward), (summary["final_reward"], reward)
    assert_capped(summary["end_time"], end)
    assert_capped(summary["last_heartbeat"], last_heartbeat)
    assert (summary["total_steps"], summary["total_episodes"]) == (steps, episodes)
    assert_capped(summary["start_time"], events[0].timestamp)  # set once, when the run's row is created
    assert_capped(summary["updated_at"], max([events[0].timestamp, *active]))
    patches = [event.patch for event in events if type(event) is StatePatch]
    state: dict[str, Any] = {}
    for patch in patches:
        state = merge_state(state, patch)
    assert same(db.get_run_state(run_id), stored_json(state))
    assert same(summary["state"], stored_json(state))


@settings(max_examples=60, deadline=None)
@given(
    run_ids=st.lists(names, min_size=1, max_size=2, unique=True),
    data=st.data(),
)
def test_every_kind_reads_back_from_the_store_as_written(
    tmp_path_factory: pytest.TempPathFactory, run_ids: list[str], data: st.DataObject
) -> None:
    """Events of every kind written through the pipeline read back through DatabaseManager unchanged."""
    events = data.draw(st.lists(any_event(st.sampled_from(run_ids)), min_size=1, max_size=25))
    with write_and_read(tmp_path_factory.getbasetemp(), events) as db:
        stored_runs = {run["run_id"] for run in db.get_training_runs()}
        assert stored_runs == {event.run_id for event in events}
        for run_id in stored_runs:
            mine = [event for event in events if event.run_id == run_id]
            check_metrics(db, run_id, [event for event in mine if type(event) is Metric])
            stored = sorted(db.get_run_events(run_id), key=lambda event: event["id"])  # storage order
            expected = [
                expected_event(e) for e in mine if type(e) in (LogEvent, RunLifecycle, ExceptionEvent, AlertEvent)
            ]
            times = [when(e.timestamp) for e in mine if type(e) in (LogEvent, RunLifecycle, ExceptionEvent, AlertEvent)]
            assert [event["timestamp"] for event in stored] == times
            got = [{key: event[key] for key in ("event_type", "event_data", "level", "kind")} for event in stored]
            assert same(got, expected), (got, expected)
            check_run_row(db, run_id, mine)


@pytest.mark.parametrize("bad", ["a\x00b", "\x00", "\ud800", "x\udfff"])
def test_an_unstorable_run_id_or_log_type_is_refused_at_the_call(bad: str) -> None:
    """A run id or log type with NUL or a lone surrogate raises ValueError whose .field names it."""
    for data, field in (
        ({"kind": "log", "run_id": bad, "timestamp": 1.0, "type": "t"}, "run_id"),
        ({"kind": "log", "run_id": "r", "timestamp": 1.0, "type": bad}, "type"),
        ({"kind": "heartbeat", "run_id": bad, "timestamp": 1.0}, "run_id"),
    ):
        with pytest.raises(ValueError) as info:
            event_from_dict(data)
        assert getattr(info.value, "field", None) == field


def test_a_metric_with_an_unstorable_name_is_dropped_alone(tmp_path: Path) -> None:
    """A metric whose run id or name has NUL or a lone surrogate is dropped and counted; its batch is stored."""
    good = [Metric("ok", 1.0, {"x": 1.0}, step=1), Metric("ok", 2.0, {"x": 2.0}, step=2)]
    bad = [
        Metric("ok\x00", 1.5, {"x": 9.0}),
        Metric("ok", 1.5, {"x\x00": 9.0}),
        Metric("ok", 1.5, {"\ud800": 9.0}),
        Metric("\udc00", 1.5, {"x": 9.0}),
    ]
    db = tmp_path / "store.db"

    async def write() -> dict[str, Any]:
        async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
            for event in [good[0], *bad, good[1]]:
                pipeline.emit(event)
            assert await pipeline.flush(30)
            return pipeline.statistics()["components"]["store"]

    stats = asyncio.run(write())
    assert stats["store_dropped_events"] == {"unencodable": len(bad)}
    with DatabaseManager(db) as manager:
        assert [run["run_id"] for run in manager.get_training_runs()] == ["ok"]  # no truncated "ok" twin
        frame = manager.get_run_metrics("ok")
        assert list(frame.columns) == ["timestamp", "step", "x"]
        assert frame["x"].tolist() == [1.0, 2.0]
