"""datacat's write bodies on `runwatch serve`, read as Go reads them and stored as datacat stores them:
state (both forms, deep merge), events, metrics, end, crash, and writes after the end
(docs/datacat.md; spec sections 1.4-1.9, 1.12, 4.1, 5.4)."""

from __future__ import annotations

import pytest

from ._harness import Serve, assert_ok, assert_text_error, go_epoch, without_times


def test_state_merges_in_both_forms_with_datacats_rules(serve: Serve) -> None:
    """Plain and wrapped state updates deep-merge; each is a history entry of the whole state at its time."""
    session_id = serve.create()
    path = f"/api/sessions/{session_id}/state"
    updates = [
        b'{"a":{"b":1,"c":[1,2]},"n":null}',
        b'{"state":{"a":{"c":[3]},"new":{"x":null}},"timestamp":"2020-01-02T03:04:05.123456789+02:00"}',
        b'{"timestamp":"2021-01-01T00:00:00Z","z":1}',
        b'{"State":{"q":1},"other":2}',
        b'{"state":null,"k":1}',
        b"null",
        b'{"a":{"b":null}}',
        b'{"big":12345678901234567890,"f":1.0,"e":1e21}',
    ]
    for raw in updates:
        assert_ok(serve.post(path, raw=raw))

    answer = serve.get(f"/api/sessions/{session_id}")
    session = answer.json()
    final = {
        "a": {"c": [3]},
        "big": 12345678901234567000,
        "e": 1e21,
        "f": 1,
        "k": 1,
        "new": {"x": None},
        "product": "P",
        "q": 1,
        "timestamp": "2021-01-01T00:00:00Z",
        "version": "1",
        "z": 1,
    }
    assert session["state"] == final
    assert b'"big":12345678901234567000,"e":1e+21,"f":1,' in answer.body  # numbers as Go prints a float64
    history = session["state_history"]
    assert len(history) == len(updates)
    assert history[0]["state"] == {"a": {"b": 1, "c": [1, 2]}, "product": "P", "version": "1"}
    assert history[1] == {
        "timestamp": "2020-01-02T03:04:05.123456789+02:00",
        "state": {"a": {"b": 1, "c": [3]}, "new": {"x": None}, "product": "P", "version": "1"},
    }
    assert history[2]["timestamp"] == "2021-01-01T00:00:00Z"
    assert "other" not in history[3]["state"] and history[3]["state"]["q"] == 1
    assert history[5]["state"] == history[4]["state"]  # null: an empty update, still a snapshot
    assert history[7]["state"] == final


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"timestamp":12345,"z":1}', id="number-timestamp-plain-form"),
        pytest.param(b'{"state":"running"}', id="string-state"),
        pytest.param(b"[1]", id="array"),
        pytest.param(b'"s"', id="string"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"x":1}{"y":2}', id="trailing-data"),
        pytest.param(b'{"timestamp":"2020-01-01 00:00:00Z"}', id="space-timestamp"),
        pytest.param(b'{"a":NaN}', id="nan"),
        pytest.param(b'{"a":1e400}', id="out-of-range"),
    ],
)
def test_bad_state_bodies_are_400_and_store_nothing(serve: Serve, raw: bytes) -> None:
    """A state body Go's decoder refuses is 400 "Invalid request body" and adds no history entry."""
    session_id = serve.create()

    assert_text_error(serve.post(f"/api/sessions/{session_id}/state", raw=raw), 400, "Invalid request body")

    assert serve.session(session_id)["state_history"] == []


def test_events_take_datacats_fields_and_defaults(serve: Serve) -> None:
    """Events keep every datacat field in arrival order; category defaults to info, becomes error with an
    exception type, stays as given otherwise; level is ignored; empty optional fields are left out."""
    session_id = serve.create()
    path = f"/api/sessions/{session_id}/events"
    bodies = [
        b'{"name":"e1"}',
        b'{"name":"e2","category":"info","exception_type":"ValueError","timestamp":"2020-01-01T00:00:00Z",'
        b'"labels":["a"],"data":{"k":"<&>"},"source_line":0,"stacktrace":[]}',
        b'{"name":"e6","timestamp":null,"level":"error","category":"custom-cat"}',
        b'{"name":"e8","timestamp":"0001-01-01T00:00:00Z"}',
        b"null",
        b'{"Name":"full","CATEGORY":"ui","group":"grp","labels":["l1"],"message":"hello","data":{"k":1},'
        b'"stacktrace":["a","b"],"exception_type":"E","exception_msg":"m","source_file":"f.py","source_line":21,'
        b'"source_function":"<module>"}',
    ]
    for raw in bodies:
        assert_ok(serve.post(path, raw=raw))

    answer = serve.get(f"/api/sessions/{session_id}")
    events = answer.json()["events"]
    assert events[1]["timestamp"] == "2020-01-01T00:00:00Z" and events[3]["timestamp"] == "0001-01-01T00:00:00Z"
    assert without_times(events) == [
        {"name": "e1", "category": "info", "group": "", "labels": None, "message": "", "data": None},
        {
            "name": "e2",
            "category": "error",
            "group": "",
            "labels": ["a"],
            "message": "",
            "data": {"k": "<&>"},
            "exception_type": "ValueError",
        },
        {"name": "e6", "category": "custom-cat", "group": "", "labels": None, "message": "", "data": None},
        {"name": "e8", "category": "info", "group": "", "labels": None, "message": "", "data": None},
        {"name": "", "category": "info", "group": "", "labels": None, "message": "", "data": None},
        {
            "name": "full",
            "category": "ui",
            "group": "grp",
            "labels": ["l1"],
            "message": "hello",
            "data": {"k": 1},
            "stacktrace": ["a", "b"],
            "exception_type": "E",
            "exception_msg": "m",
            "source_file": "f.py",
            "source_line": 21,
            "source_function": "<module>",
        },
    ]
    assert b'"data":{"k":"\\u003c\\u0026\\u003e"}' in answer.body  # Go escapes <, > and &


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"name":"t","timestamp":"2020-01-01T00:00:00"}', id="no-offset"),
        pytest.param(b'{"name":"t","timestamp":1577836800}', id="epoch"),
        pytest.param(b'{"name":"t","timestamp":""}', id="empty-timestamp"),
        pytest.param(b'{"name":"t","timestamp":"2020-01-01 00:00:00Z"}', id="space"),
        pytest.param(b'{"name":"t","timestamp":"2020-01-01t00:00:00z"}', id="lowercase"),
        pytest.param(b'{"name":"t","timestamp":"2020-02-30T00:00:00Z"}', id="no-such-day"),
        pytest.param(b'{"name":"e7","source_line":12.0}', id="fraction-line"),
        pytest.param(b'{"name":"t","labels":"a"}', id="string-labels"),
        pytest.param(b'{"name":"t","data":[1]}', id="array-data"),
        pytest.param(b'{"name":1}', id="number-name"),
        pytest.param(b'{"name":"t"} {}', id="trailing-data"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bad_event_bodies_are_400(serve: Serve, raw: bytes) -> None:
    """An event body with a type or syntax error is 400 "Invalid request body" and stores nothing."""
    session_id = serve.create()

    assert_text_error(serve.post(f"/api/sessions/{session_id}/events", raw=raw), 400, "Invalid request body")

    assert serve.session(session_id)["events"] == []


def test_metrics_take_datacats_fields_and_defaults(serve: Serve) -> None:
    """Metrics keep type (any string, gauge by default), value (0 when absent), count (0 included), unit,
    tags and metadata (left out when empty), in arrival order; only the first JSON value is read."""
    session_id = serve.create()
    path = f"/api/sessions/{session_id}/metrics"
    bodies = [
        b'{"name":"m1","value":5}',
        b'{"name":"m2","value":1.5,"type":"timer","count":0,"unit":"seconds","tags":[],"metadata":{}}',
        b'{"name":"m4","value":null,"type":"whatever","timestamp":"2020-01-01T00:00:00.5+00:00"}',
        b'{"name":"m6","value":1} junk',
        b"null",
        b'{"name":"h","type":"histogram","value":0.016,"tags":["t:1"],'
        b'"metadata":{"buckets":[{"le":0.016666666666666666,"count":1}],"count":1,"sum":0.016}}',
    ]
    for raw in bodies:
        assert_ok(serve.post(path, raw=raw))

    metrics = serve.session(session_id)["metrics"]
    assert metrics[2]["timestamp"] == "2020-01-01T00:00:00.5Z"
    assert without_times(metrics) == [
        {"name": "m1", "type": "gauge", "value": 5},
        {"name": "m2", "type": "timer", "value": 1.5, "count": 0, "unit": "seconds"},
        {"name": "m4", "type": "whatever", "value": 0},
        {"name": "m6", "type": "gauge", "value": 1},
        {"name": "", "type": "gauge", "value": 0},
        {
            "name": "h",
            "type": "histogram",
            "value": 0.016,
            "tags": ["t:1"],
            "metadata": {"buckets": [{"le": 0.016666666666666666, "count": 1}], "count": 1, "sum": 0.016},
        },
    ]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"name":"m","value":"1"}', id="string-value"),
        pytest.param(b'{"name":"m","value":true}', id="bool-value"),
        pytest.param(b'{"name":"m","value":1,"count":2.5}', id="fraction-count"),
        pytest.param(b'{"name":"m","value":1,"tags":[1]}', id="number-tags"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"name":"m"', id="truncated"),
    ],
)
def test_bad_metric_bodies_are_400(serve: Serve, raw: bytes) -> None:
    """A metric body with a type error or no complete first value is 400 "Invalid request body"."""
    session_id = serve.create()

    assert_text_error(serve.post(f"/api/sessions/{session_id}/metrics", raw=raw), 400, "Invalid request body")

    assert serve.session(session_id)["metrics"] == []


def test_end_and_crash_are_repeatable_and_writes_after_them_are_taken(serve: Serve) -> None:
    """After end every write is taken; a second end moves ended_at; a crash after the end marks the session
    crashed with reason "" for {} (and abnormal_termination for an unreadable body); a heartbeat still moves
    last_heartbeat."""
    session_id = serve.create()
    path = f"/api/sessions/{session_id}"

    assert_ok(serve.post(f"{path}/end", raw=b"garbage"))
    first_end = serve.session(session_id)["ended_at"]
    assert_ok(serve.post(f"{path}/events", {"name": "late"}))
    assert_ok(serve.post(f"{path}/state", {"late": True}))
    assert_ok(serve.post(f"{path}/metrics", {"name": "late", "value": 1}))
    assert_ok(serve.send("POST", f"{path}/end", b"", {}))  # the Go client's end: no Content-Type, empty body
    ended = serve.session(session_id)
    assert go_epoch(ended["ended_at"]) > go_epoch(first_end)
    assert (ended["active"], ended["crashed"]) == (False, False)
    assert [e["name"] for e in ended["events"]] == ["late"] and ended["state"]["late"] is True

    assert_ok(serve.post(f"{path}/crash", {}))
    assert_ok(serve.post(f"{path}/crash", raw=b"bad"))
    assert_ok(serve.post(f"{path}/heartbeat", {}))
    crashed = serve.session(session_id)
    assert (crashed["active"], crashed["suspended"], crashed["crashed"]) == (False, False, True)
    assert go_epoch(crashed["last_heartbeat"]) >= go_epoch(crashed["ended_at"]) > go_epoch(ended["ended_at"])
    assert [(e["name"], e["category"], e["data"]) for e in crashed["events"][1:]] == [
        ("session_crashed_detected", "critical", {"reason": ""}),
        ("session_crashed_detected", "critical", {"reason": "abnormal_termination"}),
    ]


def test_hung_follows_hang_events_and_a_crash_clears_it(serve: Serve) -> None:
    """application_appears_hung sets hung (the session stays active), application_recovered clears it, a
    reported crash clears it, and a later hang event sets it again beside crashed."""
    session_id = serve.create()
    path = f"/api/sessions/{session_id}"

    assert_ok(serve.post(f"{path}/events", {"name": "application_appears_hung"}))
    hung = serve.session(session_id)
    assert (hung["active"], hung["hung"]) == (True, True) and hung["events"][0]["category"] == "info"
    assert_ok(serve.post(f"{path}/events", {"name": "application_recovered"}))
    assert serve.session(session_id)["hung"] is False
    assert_ok(serve.post(f"{path}/events", {"name": "application_appears_hung"}))
    assert_ok(serve.post(f"{path}/crash", {"reason": "x"}))
    crashed = serve.session(session_id)
    assert (crashed["crashed"], crashed["hung"], crashed["active"]) == (True, False, False)
    assert "ended_at" in crashed
    assert_ok(serve.post(f"{path}/events", {"name": "application_appears_hung"}))
    assert (serve.session(session_id)["crashed"], serve.session(session_id)["hung"]) == (True, True)


def test_only_a_crash_report_or_detection_crashes_a_session(serve: Serve) -> None:
    """An event a client names application_crashed (runwatch's own verdict name) is just an event for
    datacat: the session stays active and not crashed."""
    session_id = serve.create()

    assert_ok(serve.post(f"/api/sessions/{session_id}/events", {"name": "application_crashed"}))

    session = serve.session(session_id)
    assert (session["active"], session["crashed"]) == (True, False)


def test_a_retried_write_is_stored_twice(serve: Serve) -> None:
    """datacat has no idempotency key: the same event posted twice is two events."""
    session_id = serve.create()
    for _ in range(2):
        assert_ok(serve.post(f"/api/sessions/{session_id}/events", {"name": "again"}))

    assert [e["name"] for e in serve.session(session_id)["events"]] == ["again", "again"]


def test_every_write_moves_updated_at_to_its_receipt(serve: Serve) -> None:
    """updated_at is when the server received the last write, even for an event dated in the past."""
    session_id = serve.create()
    created = serve.session(session_id)["updated_at"]

    assert_ok(serve.post(f"/api/sessions/{session_id}/events", {"name": "old", "timestamp": "2001-01-01T00:00:00Z"}))

    assert go_epoch(serve.session(session_id)["updated_at"]) > go_epoch(created)
