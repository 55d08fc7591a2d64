"""Tests for runwatch.wire.datacat: datacat's bodies as runwatch's events, and its session document from rows."""

from __future__ import annotations

import gzip
import json
from typing import Any

import orjson
import pytest

from runwatch.events import LogEvent, Metric, RunLifecycle, StatePatch
from runwatch.exceptions import WireError
from runwatch.wire.datacat import (
    CreateBody,
    crash_detected_event,
    crash_events,
    create_events,
    datacat_merge,
    event_from_body,
    gunzip,
    liveness_flags,
    metric_from_body,
    parse_create_body,
    session_document,
    state_from_body,
)

NOW = 1_800_000_000.0


def test_a_datacat_event_becomes_a_log_event_with_its_fields_in_detail() -> None:
    """Name, level (the category when it is one of runwatch's levels) and data go where runwatch keeps them;
    datacat's own fields, the timestamp text and the receipt go in the detail."""
    body = b'{"name":"ui","category":"warning","group":"g","labels":["l"],"message":"m","data":{"k":1},"source_line":7}'

    event = event_from_body("s", body, NOW)

    assert (event.type, event.level, event.data, event.timestamp) == ("ui", "warning", {"k": 1}, NOW)
    assert dict(event.detail or {}) == {
        "timestamp": "2027-01-15T08:00:00Z",
        "name": "ui",
        "category": "warning",
        "group": "g",
        "labels": ["l"],
        "message": "m",
        "source_line": 7,
        "received": NOW,
    }


def test_events_runwatch_cannot_date_or_name_get_the_receipt_and_a_placeholder() -> None:
    """The daemon's zero time files the event at its receipt; an empty name is stored as (unnamed) with the
    exact name kept in the detail; a custom category is level info; null data is kept as null."""
    event = event_from_body("s", b'{"name":"","category":"ui","timestamp":"0001-01-01T00:00:00Z"}', NOW)

    assert (event.type, event.level, event.timestamp, event.data) == ("(unnamed)", "info", NOW, {})
    assert event.detail is not None and event.detail["name"] == "" and event.detail["null_data"] is True
    assert event.detail["timestamp"] == "0001-01-01T00:00:00Z"


def test_a_datacat_metric_keeps_its_own_fields_in_a_tag() -> None:
    """A metric is one value; its tags hold the tag list and datacat's fields (type, count, unit, metadata)."""
    metric = metric_from_body("s", b'{"name":"t","type":"timer","value":2,"count":0,"unit":"s","tags":["a"]}', NOW)

    assert isinstance(metric, Metric) and dict(metric.values) == {"t": 2.0}
    tags = dict(metric.tags or {})
    assert json.loads(tags["tags"]) == ["a"]
    assert json.loads(tags["datacat"]) == {
        "timestamp": "2027-01-15T08:00:00Z",
        "type": "timer",
        "received": NOW,
        "count": 0,
        "unit": "s",
    }


def test_a_state_update_in_either_form_is_a_patch_with_its_time() -> None:
    """The wrapped form's state is the patch and its timestamp the snapshot's time; the plain form is all patch."""
    wrapped = state_from_body("s", b'{"timestamp":"2020-01-01T00:00:00Z","state":{"a":null}}', NOW)
    plain = state_from_body("s", b'{"b":1}', NOW)

    assert (dict(wrapped.patch), wrapped.timestamp) == ({"a": None}, 1577836800.0)
    assert wrapped.detail is not None and wrapped.detail["timestamp"] == "2020-01-01T00:00:00Z"
    assert (dict(plain.patch), plain.timestamp) == ({"b": 1}, NOW)


@pytest.mark.parametrize("body", [b"[1]", b'{"state":"x"}', b'{"a":' + b"{" * 70 + b"}" * 71])
def test_bad_state_bodies_are_400_invalid_request_body(body: bytes) -> None:
    """A type error, or a patch nested past runwatch's limit, is datacat's 400."""
    with pytest.raises(WireError) as caught:
        state_from_body("s", body, NOW)
    assert (caught.value.status, caught.value.message) == (400, "Invalid request body")


def test_create_reads_runwatchs_own_keys_and_ignores_bad_ones() -> None:
    """metadata and heartbeat_timeout_seconds are read when well typed and ignored otherwise, as Go ignores
    decode errors on create."""
    good = parse_create_body(b'{"product":"p","version":"1","metadata":{"a":1},"heartbeat_timeout_seconds":5}')
    bad = parse_create_body(b'{"product":"p","version":"1","metadata":[1],"heartbeat_timeout_seconds":-1}')

    assert (good.metadata, good.heartbeat_timeout_seconds) == ({"a": 1}, 5.0)
    assert (bad.metadata, bad.heartbeat_timeout_seconds) == (None, None)


def test_create_events_start_a_session_judged_by_its_protocol() -> None:
    """A new session is a session run whose liveness the liveness stage leaves alone, with a first state."""
    started, first = create_events("s", CreateBody("p", "1", "m", "h"), NOW)

    assert isinstance(started, RunLifecycle) and started.run_kind == "session"
    assert started.metadata is not None
    assert {key: started.metadata[key] for key in ("protocol", "machine_id", "hostname", "liveness_signal")} == {
        "protocol": "datacat",
        "machine_id": "m",
        "hostname": "h",
        "liveness_signal": "none",
    }
    assert isinstance(first, StatePatch) and dict(first.patch) == {"product": "p", "version": "1"}
    assert first.detail is not None and first.detail["initial"] is True


def test_gunzip_reads_every_member_and_reports_a_broken_stream() -> None:
    """Members are concatenated; a corrupt tail is reported incomplete; a bad header or too much is refused."""
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == (b"abcd", True)
    data, whole = gunzip(gzip.compress(b"abcdef")[:-6], 100)
    assert not whole
    with pytest.raises(WireError) as caught:
        gunzip(b"not gzip", 100)
    assert (caught.value.status, caught.value.message) == (400, "Failed to decompress request")
    with pytest.raises(WireError) as caught:
        gunzip(gzip.compress(b"x" * 1000), 100)
    assert caught.value.status == 413


def test_datacat_merge_keeps_nulls_inside_a_value_it_sets() -> None:
    """null deletes; objects merge into objects; anything else is set as is, nulls inside included."""
    state: dict[str, Any] = {"a": {"b": 1, "c": 2}, "x": 1}
    datacat_merge(state, {"a": {"b": None}, "new": {"n": None}, "x": None, "l": [1]})
    assert state == {"a": {"c": 2}, "new": {"n": None}, "l": [1]}


@pytest.mark.parametrize(
    ("crashed", "ended", "heartbeat", "expected"),
    [
        pytest.param(True, False, NOW, (False, False), id="crashed"),
        pytest.param(False, True, NOW - 999, (False, False), id="ended"),
        pytest.param(False, False, None, (True, False), id="never-heartbeated"),
        pytest.param(False, False, NOW - 60, (True, False), id="silent-exactly-the-timeout"),
        pytest.param(False, False, NOW - 61, (False, True), id="silent-longer"),
    ],
)
def test_liveness_flags_follow_datacats_rules(
    crashed: bool, ended: bool, heartbeat: float | None, expected: tuple[bool, bool]
) -> None:
    """active and suspended: crashed and ended are inactive; silence strictly past the timeout suspends."""
    flags = liveness_flags(
        crashed=crashed, hung=False, ended=ended, last_heartbeat=heartbeat, now=NOW, timeout_seconds=60
    )
    assert (flags.active, flags.suspended) == expected


def _row(event: LogEvent) -> tuple[Any, ...]:
    detail = None if event.detail is None else orjson.dumps(event.detail).decode()
    return (event.timestamp, event.type, event.level, orjson.dumps(event.data).decode(), detail)


def test_the_document_follows_the_rows_in_arrival_order() -> None:
    """Flags come from the events (hang, recovery, crash) in order; updated_at is the last receipt, not a
    crash detection; runwatch's own events and patches appear in datacat's shape."""
    run = {
        "run_id": "s",
        "status": "running",
        "start_time": NOW,
        "end_time": None,
        "last_heartbeat": None,
        "metadata": {"machine_id": "m", "hostname": ""},
    }
    own = LogEvent("s", NOW + 1, "batch_event", "debug", {"i": 1})
    hang = event_from_body("s", b'{"name":"application_appears_hung"}', NOW + 2)
    detected = crash_detected_event("s", "m", NOW + 9)
    _, first = create_events("s", CreateBody("p", "1"), NOW)
    states = [
        (first.timestamp, orjson.dumps(first.patch).decode(), orjson.dumps(first.detail).decode()),
        (NOW + 3, '{"k":{"x":null}}', None),
    ]

    document = session_document(
        run, [_row(own), _row(hang), _row(detected)], [], states, now=NOW + 10, timeout_seconds=60
    )

    assert list(document)[:9] == [
        "id",
        "created_at",
        "updated_at",
        "active",
        "suspended",
        "crashed",
        "hung",
        "machine_id",
        "state",
    ]
    assert (document["crashed"], document["hung"], document["active"]) == (True, True, False)
    assert document["updated_at"] == "2027-01-15T08:00:03Z"  # the patch, not the detection at +9
    assert document["events"][0] == {
        "timestamp": "2027-01-15T08:00:01Z",
        "name": "batch_event",
        "category": "debug",
        "group": "",
        "labels": None,
        "message": "",
        "data": {"i": 1},
    }
    assert document["state"] == {"product": "p", "version": "1", "k": {"x": None}}
    assert document["state_history"] == [{"timestamp": "2027-01-15T08:00:03Z", "state": document["state"]}]

    crashed, *_ = crash_events("s", "r", NOW + 11)
    after_crash = session_document(
        {**run, "status": "crashed", "end_time": NOW + 11},
        [_row(hang), _row(crashed)],
        [],
        [],
        now=NOW + 12,
        timeout_seconds=60,
    )
    assert (after_crash["crashed"], after_crash["hung"], after_crash["ended_at"]) == (
        True,
        False,
        "2027-01-15T08:00:11Z",
    )
