"""Tests of runwatch.client._wire: the dialects' request bodies, answers, and state dedupe (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runwatch.client._wire import (
    DATACAT,
    RUNWATCH,
    StateDeduper,
    datacat_request,
    dialect_from_health,
    error_message,
    is_missing_route,
    lean_operation,
    rfc3339,
    runwatch_request,
)

T = 1_700_000_000.25  # 2023-11-14T22:13:20.25Z


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        pytest.param(T, "2023-11-14T22:13:20.25Z", id="fraction-trimmed"),
        pytest.param(1_700_000_000.0, "2023-11-14T22:13:20Z", id="whole-second"),
        pytest.param(1_700_000_000.123456, "2023-11-14T22:13:20.123456Z", id="microseconds"),
        pytest.param(1_700_000_000.9999996, "2023-11-14T22:13:21Z", id="rounds-up-into-the-next-second"),
        pytest.param(0.0, "1970-01-01T00:00:00Z", id="epoch"),
    ],
)
def test_rfc3339_writes_utc_with_a_trimmed_fraction(epoch: float, text: str) -> None:
    """Epoch seconds become RFC 3339 in UTC with Z, the fraction without trailing zeros, as datacat writes them."""
    assert rfc3339(epoch) == text


@pytest.mark.parametrize(
    ("status", "body", "dialect"),
    [
        pytest.param(
            200, b'{"service":"datacat-server","status":"healthy","version":"1.0.0"}\n', DATACAT, id="datacat"
        ),
        pytest.param(404, b'{"error":{"status":404,"message":"Not Found","field":null}}', RUNWATCH, id="runwatch-404"),
        pytest.param(401, b'{"error":{"status":401}}', RUNWATCH, id="behind-a-token"),
        pytest.param(200, b"<html>ok</html>", RUNWATCH, id="a-page-not-json"),
        pytest.param(200, b'{"ok": true}', RUNWATCH, id="json-without-status"),
        pytest.param(503, b"busy", None, id="server-error-undecided"),
    ],
)
def test_the_dialect_comes_from_the_health_answer(status: int, body: bytes, dialect: str | None) -> None:
    """datacat's 200 with a string status means datacat; any other answer runwatch; a 5xx decides nothing."""
    assert dialect_from_health(status, body) == dialect


def test_error_messages_are_runwatchs_json_or_datacats_text() -> None:
    """runwatch's error object gives message and field; datacat's plain text is the message."""
    assert error_message(422, b'{"error":{"message":"bad","field":"name"}}') == ("bad", "name")
    assert error_message(404, b"Session not found\n") == ("Session not found", None)
    assert error_message(502, b"") == ("Bad Gateway", None)


@pytest.mark.parametrize(
    ("status", "body", "missing"),
    [
        pytest.param(404, b"Not found\n", True, id="datacat-unknown-operation"),
        pytest.param(405, b"Method not allowed\n", True, id="method"),
        pytest.param(404, b'{"error":{"message":"unknown session","field":"session_id"}}', False, id="unknown-session"),
        pytest.param(422, b"Not found\n", False, id="other-status"),
    ],
)
def test_a_missing_batch_route_is_told_from_an_unknown_session(status: int, body: bytes, missing: bool) -> None:
    """datacat's text 404 means no /batch route; runwatch's JSON 404 names an unknown session."""
    assert is_missing_route(status, body) is missing


def event(**fields: Any) -> dict[str, Any]:
    """A neutral event operation with runwatch's fields and ``fields``."""
    return {"op": "event", "name": "e", "data": {"k": 1}, "level": "info", "timestamp": T, **fields}


def test_lean_operations_without_datacat_fields_are_passed_as_they_are() -> None:
    """An event or metric with only runwatch's fields is the same object (no copy on the hot path)."""
    plain_event = event()
    metric = {"op": "metric", "name": "m", "value": 1, "tags": ["a"], "timestamp": T}
    assert lean_operation(plain_event) is plain_event
    assert lean_operation(metric) is metric


def test_lean_events_fold_datacat_fields_into_data_without_overwriting() -> None:
    """group, labels, message, stacktrace and a free-form category go into data, unless data has the key."""
    rich = event(category="ui", group="g", labels=["l"], message="hi", stacktrace=["a"], data={"message": "mine"})
    assert lean_operation(rich) == {
        "op": "event",
        "name": "e",
        "data": {"message": "mine", "category": "ui", "group": "g", "labels": ["l"], "stacktrace": ["a"]},
        "level": "info",
        "timestamp": T,
    }
    assert "category" not in lean_operation(event(category="error", group="g"))["data"]  # a level is no category


def test_lean_exception_events_carry_type_message_and_traceback_in_data() -> None:
    """An exception's fields become data's type, message and traceback, winning over the extra data."""
    failure = event(
        name="exception",
        level="error",
        data={"ctx": "c", "type": "mine"},
        group="exception",
        labels=["exception", "ValueError"],
        message="boom",
        stacktrace=["Traceback\n", "ValueError: boom\n"],
        exception_type="ValueError",
        exception_msg="boom",
        source_line=3,
    )
    assert lean_operation(failure)["data"] == {
        "ctx": "c",
        "type": "ValueError",
        "message": "boom",
        "traceback": "Traceback\nValueError: boom\n",
    }


def test_lean_metrics_keep_runwatchs_fields_only() -> None:
    """A typed metric loses type, count, unit and metadata in runwatch's form."""
    metric = {"op": "metric", "name": "t", "value": 0.5, "timestamp": T, "type": "timer", "count": 3, "unit": "s"}
    assert lean_operation(metric) == {"op": "metric", "name": "t", "value": 0.5, "timestamp": T}


def test_runwatch_requests_are_the_strict_routes_bodies() -> None:
    """Each operation maps to its route with the body runwatch's strict routes take."""
    assert runwatch_request({"op": "state", "state": {"a": 1}, "timestamp": T}) == ("/state", {"a": 1})
    assert runwatch_request(event(level="warning", group="g")) == (
        "/events",
        {"name": "e", "data": {"k": 1, "group": "g"}, "level": "warning"},
    )
    assert runwatch_request({"op": "metric", "name": "m", "value": 2, "timestamp": T, "type": "timer"}) == (
        "/metrics",
        {"name": "m", "value": 2},
    )
    assert runwatch_request({"op": "heartbeat", "timestamp": T}) == ("/heartbeat", {})
    assert runwatch_request({"op": "end", "timestamp": T}) == ("/end", {})


def test_datacat_requests_are_the_bodies_datacats_daemon_forwards() -> None:
    """State is wrapped with its time, events carry every non-omitted key, metrics their type."""
    assert datacat_request({"op": "state", "state": {"a": None}, "timestamp": T}) == (
        "/state",
        {"timestamp": "2023-11-14T22:13:20.25Z", "state": {"a": None}},
    )
    assert datacat_request(event(level="warning")) == (
        "/events",
        {
            "timestamp": "2023-11-14T22:13:20.25Z",
            "name": "e",
            "category": "warning",
            "group": "",
            "labels": [],
            "message": "",
            "data": {"k": 1},
        },
    )
    _, body = datacat_request(event(category="ui", stacktrace=["a"], source_line=12, exception_type="E"))
    assert (body["category"], body["stacktrace"], body["source_line"], body["exception_type"]) == ("ui", ["a"], 12, "E")
    metric = {"op": "metric", "name": "load", "value": 1.25, "timestamp": T, "type": "timer", "count": 3}
    assert datacat_request({**metric, "unit": "seconds"}) == (
        "/metrics",
        {
            "timestamp": "2023-11-14T22:13:20.25Z",
            "name": "load",
            "type": "timer",
            "value": 1.25,
            "count": 3,
            "unit": "seconds",
        },
    )
    assert datacat_request({"op": "metric", "name": "m", "value": 5, "timestamp": T})[1]["type"] == "gauge"


def test_state_deduper_drops_repeats_as_datacats_daemon_does() -> None:
    """An update whose every key already has that value (as JSON) is a repeat; any change is not."""
    states = StateDeduper()
    assert states.changes("s", {"status": "running", "window": {"open": ["w1"], "active": "w1"}})
    assert not states.changes("s", {"status": "running"})
    assert not states.changes("s", {"window": {"active": "w1", "open": ["w1"]}})  # key order does not matter
    assert states.changes("s", {"window": {"open": ["w1", "w2"]}})  # a partial object is a change
    assert states.changes("s", {"flag": 1}) and states.changes("s", {"flag": True})  # true is not 1
    assert states.changes("s", {"gone": None}) and not states.changes("s", {"gone": None})  # null is kept
    assert states.changes("other", {"status": "running"})  # per session
    states.forget("s")
    assert states.changes("s", {"status": "running"})


def test_datacat_bodies_are_json() -> None:
    """Every datacat body serialises to JSON without NaN (what the server can decode)."""
    _, body = datacat_request(event(labels=["a"], group="g", message="m"))
    assert json.loads(json.dumps(body, allow_nan=False)) == body
