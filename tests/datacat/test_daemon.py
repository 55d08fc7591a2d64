"""The life of a session as datacat's daemon drives it, request by request, against `runwatch serve`
(docs/datacat.md; spec sections 4.2-4.4, 5.1 and 5.2): registration with machine_id and hostname, batched
wrapped states, events and metrics with timestamps, counters as running totals re-sent every flush,
histogram buckets in metadata, heartbeats, hang and recovery events dated 0001-01-01, crash, end, and the
reads the daemon makes for get_details() and get_all_sessions()."""

from __future__ import annotations

import time
from typing import Any

from ._harness import Serve, assert_ok, assert_text_error, gzipped, without_times
from .conftest import API_KEY

DEFAULT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
MACHINE = "456c47a07b039f60a478f6d5844470c9"


def daemon_time(offset: float = 0.0) -> str:
    """A time as the daemon writes one (Go's RFC3339Nano, UTC)."""
    seconds = time.time() + offset
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds % 1 * 1e9):09d}".rstrip("0").rstrip(".") + "Z"


def latency_histogram(flush: str) -> dict[str, Any]:
    """The daemon's flush of three samples (0.004, 0.2, 99) of a histogram with the default buckets."""
    counts = {0.005: 1, 0.25: 1, 60: 1}
    return {
        "timestamp": flush,
        "name": "latency",
        "type": "histogram",
        "value": 33.068,
        "unit": "seconds",
        "metadata": {
            "buckets": [{"le": bound, "count": counts.get(bound, 0)} for bound in DEFAULT_BUCKETS],
            "count": 3,
            "sum": 99.204,
        },
    }


def test_the_daemons_full_life_is_stored_as_datacat_stores_it(serve: Serve) -> None:
    """Register, heartbeat, one flush of states, events, metrics, counter totals and histograms, a later
    flush re-sending the totals, the reads behind get_details()/get_all_sessions(), then end."""
    register = {"hostname": "vm", "machine_id": MACHINE, "product": "PyApp", "version": "2.0"}
    created = serve.post("/api/sessions", register)
    assert created.status == 200, created
    session_id = created.json()["session_id"]
    path = f"/api/sessions/{session_id}"

    assert_ok(serve.post(f"{path}/heartbeat", {}))  # the application's heartbeat, forwarded at once

    # The first flush, in the daemon's order: states, events, metrics, counter totals, histograms.
    state_times = [daemon_time(), daemon_time(0.001)]
    states = [
        {"timestamp": state_times[0], "state": {"status": "running", "window": {"active": "w1", "open": ["w1"]}}},
        {"timestamp": state_times[1], "state": {"gone": None, "window": {"open": ["w1", "w2"]}}},
    ]
    for state in states:
        assert_ok(serve.post(f"{path}/state", state))
    stacktrace = [
        "Traceback (most recent call last):\n",
        '  File "/app/drive.py", line 21, in <module>\n    raise ValueError("boom")\n',
        "ValueError: boom\n",
    ]
    events = [
        {
            "name": "user_action",
            "category": "ui",
            "group": "grp",
            "labels": ["l1"],
            "message": "hello",
            "data": {"k": 1},
            "stacktrace": ["a", "b"],
        },
        {"name": "lvl", "category": "warning", "group": "", "labels": [], "message": "", "data": {}},
        {
            "name": "exception",
            "category": "error",
            "group": "exception",
            "labels": ["exception", "ValueError"],
            "message": "boom",
            "data": {"ctx": "c"},
            "stacktrace": stacktrace,
            "exception_type": "ValueError",
            "exception_msg": "boom",
            "source_file": "/app/drive.py",
            "source_line": 21,
            "source_function": "<module>",
        },
        {
            "name": "log.app.mod",
            "category": "warning",
            "group": "app.mod",
            "labels": ["warning", "app.mod", "<module>"],
            "message": "careful now",
            "data": {
                "funcName": "<module>",
                "level_name": "WARNING",
                "lineno": 25,
                "logger": "app.mod",
                "module": "drive",
                "pathname": "/app/drive.py",
            },
        },
    ]
    for event in events:
        assert_ok(serve.post(f"{path}/events", {"timestamp": daemon_time(), **event}))
    metrics = [
        {"name": "mem", "type": "gauge", "value": 1024.5, "tags": ["app:x"]},
        {"name": "fps", "type": "gauge", "value": 60, "unit": "fps", "tags": ["t"]},
        {"name": "load", "type": "timer", "value": 1.25, "count": 3, "unit": "seconds"},
        {"name": "work", "type": "timer", "value": 0.0023, "count": 2, "unit": "milliseconds"},
    ]
    for metric in metrics:
        assert_ok(serve.post(f"{path}/metrics", {"timestamp": daemon_time(), **metric}))
    totals = [
        {"name": "requests", "type": "counter", "value": 3},
        {"name": "bytes", "type": "counter", "value": 1024, "tags": ["a:2", "b:1"]},
    ]
    frame = {
        "name": "frame",
        "type": "histogram",
        "value": 0.016,
        "metadata": {
            "buckets": [
                {"le": 0.016666666666666666, "count": 1},
                {"le": 0.03333333333333333, "count": 0},
                {"le": 0.1, "count": 0},
            ],
            "count": 1,
            "note": "x",
            "sum": 0.016,
        },
    }
    flushes = [daemon_time(), daemon_time(5)]
    for flush in flushes:  # totals and histograms are re-sent at every flush, unchanged here
        for total in totals:
            assert_ok(serve.post(f"{path}/metrics", {"timestamp": flush, **total}))
        assert_ok(serve.post(f"{path}/metrics", latency_histogram(flush)))
        assert_ok(serve.post(f"{path}/metrics", {"timestamp": flush, **frame}))
        assert_ok(serve.post(f"{path}/heartbeat", {}))  # the daemon's own 15 s heartbeat

    details = serve.session(session_id)  # get_details(): GET with no Content-Type and no key
    assert details["state"] == {
        "product": "PyApp",
        "status": "running",
        "version": "2.0",
        "window": {"active": "w1", "open": ["w1", "w2"]},
    }
    assert [entry["timestamp"] for entry in details["state_history"]] == state_times
    assert details["state_history"][0]["state"] == {
        "product": "PyApp",
        "status": "running",
        "version": "2.0",
        "window": {"active": "w1", "open": ["w1"]},
    }
    expected_events = [{**event} for event in events]
    expected_events[1]["labels"] = []
    assert without_times(details["events"]) == expected_events
    expected_metrics = [*metrics]
    for flush in flushes:
        expected_metrics += [
            *totals,
            {key: value for key, value in latency_histogram(flush).items() if key != "timestamp"},
            frame,
        ]
    assert without_times(details["metrics"]) == expected_metrics
    assert [m["timestamp"] for m in details["metrics"] if m["name"] == "requests"] == flushes
    assert (details["machine_id"], details["hostname"]) == (MACHINE, "vm")
    assert (details["active"], details["suspended"], details["crashed"], details["hung"]) == (True, False, False, False)
    assert [session for session in serve.all_sessions() if session["id"] == session_id] == [details]

    # end(): the daemon flushes (nothing left here), then posts end with {} (never gzipped, never keyed).
    assert_ok(serve.post(f"{path}/end", {}))
    ended = serve.session(session_id)
    assert (ended["active"], ended["crashed"], "ended_at" in ended) == (False, False, True)


def test_a_standalone_daemon_with_gzip_and_a_key_reports_hang_recovery_and_parent_crash(keyed_serve: Serve) -> None:
    """A standalone daemon sends every request gzipped with the bearer key; its hang, recovery and crash
    events carry the zero time; the crash it posts ends the session crashed; its end, sent without the
    key, is refused 401 as datacat refuses it."""
    serve = keyed_serve
    key = {"Authorization": f"Bearer {API_KEY}", "Content-Encoding": "gzip", "Content-Type": "application/json"}

    def post(path: str, document: Any) -> Any:
        return serve.send("POST", path, gzipped(document), key)

    register = {"hostname": "vm", "machine_id": MACHINE, "product": "Standalone", "version": "9"}
    created = post("/api/sessions", register)
    assert created.status == 200, created
    session_id = created.json()["session_id"]
    path = f"/api/sessions/{session_id}"

    def read() -> dict[str, Any]:
        answer = serve.send("GET", path, None, {"Authorization": f"Bearer {API_KEY}"})
        assert answer.status == 200, answer
        return dict(answer.json())

    assert_ok(post(f"{path}/heartbeat", {}))
    assert_ok(post(f"{path}/metrics", {"timestamp": daemon_time(), "name": "abs", "type": "counter", "value": 7}))
    assert_ok(post(f"{path}/metrics", {"timestamp": daemon_time(), "name": "c", "type": "counter", "value": 2}))
    zero = "0001-01-01T00:00:00Z"
    hang = {
        "timestamp": zero,
        "name": "application_appears_hung",
        "category": "error",
        "group": "datacat.daemon",
        "labels": ["heartbeat", "hung"],
        "message": "Application has not sent heartbeat for 3 seconds",
        "data": {"last_heartbeat": "2026-12-07T08:49:02Z", "seconds_since_heartbeat": 3},
    }
    assert_ok(post(f"{path}/events", hang))
    hung = read()
    assert (hung["hung"], hung["active"], hung["events"][-1]["timestamp"]) == (True, True, zero)

    assert_ok(post(f"{path}/heartbeat", {}))
    recovered = {
        "timestamp": zero,
        "name": "application_recovered",
        "category": "info",
        "group": "datacat.daemon",
        "labels": ["heartbeat", "recovery"],
        "message": "Application heartbeat resumed after hang",
        "data": {},
    }
    assert_ok(post(f"{path}/events", recovered))
    assert read()["hung"] is False

    parent = {
        "timestamp": zero,
        "name": "parent_process_crashed",
        "category": "critical",
        "group": "datacat.daemon",
        "labels": ["crash", "process"],
        "message": "Parent process (PID 21080) is no longer running",
        "data": {"parent_pid": 21080},
    }
    assert_ok(post(f"{path}/events", parent))
    assert_ok(post(f"{path}/metrics", {"timestamp": daemon_time(), "name": "c", "type": "counter", "value": 2}))
    assert_ok(post(f"{path}/crash", {"reason": "parent_process_terminated"}))

    crashed = read()
    assert (crashed["crashed"], crashed["active"], crashed["hung"], "ended_at" in crashed) == (True, False, False, True)
    assert crashed["events"][:3] == [hang, recovered, parent]
    last = crashed["events"][-1]
    assert (last["name"], last["category"], last["data"]) == (
        "session_crashed_detected",
        "critical",
        {"reason": "parent_process_terminated"},
    )
    assert [(m["name"], m["value"]) for m in crashed["metrics"]] == [("abs", 7), ("c", 2), ("c", 2)]
    assert_text_error(serve.post(f"{path}/end", {}), 401, "Unauthorized")
