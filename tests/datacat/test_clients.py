"""The exchanges of datacat's Go client (direct mode) and the reads of datacat-web, against `runwatch serve`
(docs/datacat.md; spec sections 5.5 and 5.6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ._harness import Serve, assert_ok, go_epoch, wait_until

GO = {"User-Agent": "Go-http-client/1.1", "Content-Type": "application/json"}


def go_body(document: Any) -> bytes:
    """A body as Go's json.Marshal writes a map: keys sorted, compact."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def test_every_call_of_the_go_client_is_answered_200(serve: Serve) -> None:
    """CreateSession, UpdateState (the plain form), LogEvent, LogMetric, LogMetricWithType, EndSession (no
    Content-Type, empty body), GetSession and GetAllSessions each get the 200 the Go client requires."""
    created = serve.send("POST", "/api/sessions", go_body({"product": "GoApp", "version": "1.0"}), GO)
    assert created.status == 200, created
    document = created.json()
    assert all(isinstance(value, str) for value in document.values())  # decodes as map[string]string
    session_id = document["session_id"]
    path = f"/api/sessions/{session_id}"

    assert_ok(serve.send("POST", f"{path}/state", go_body({"n": {"a": 1}, "status": "running"}), GO))
    assert_ok(serve.send("POST", f"{path}/events", go_body({"data": {"x": 1}, "name": "started"}), GO))
    assert_ok(serve.send("POST", f"{path}/events", go_body({"data": None, "name": "nil-data"}), GO))
    gauge = {"name": "cpu", "tags": ["app:go"], "type": "gauge", "value": 12.5}
    assert_ok(serve.send("POST", f"{path}/metrics", go_body(gauge), GO))
    assert_ok(serve.send("POST", f"{path}/metrics", go_body({**gauge, "tags": None}), GO))
    timer = {
        "count": 4,
        "metadata": {"k": "v"},
        "name": "t",
        "tags": None,
        "type": "timer",
        "unit": "seconds",
        "value": 0.5,
    }
    assert_ok(serve.send("POST", f"{path}/metrics", go_body(timer), GO))

    session = serve.session(session_id)  # GetSession: no body, no Content-Type
    assert session["state"] == {"n": {"a": 1}, "product": "GoApp", "status": "running", "version": "1.0"}
    assert [(e["name"], e["data"]) for e in session["events"]] == [("started", {"x": 1}), ("nil-data", None)]
    assert [{k: v for k, v in m.items() if k != "timestamp"} for m in session["metrics"]] == [
        gauge,
        {"name": "cpu", "type": "gauge", "value": 12.5},
        {"name": "t", "type": "timer", "value": 0.5, "count": 4, "unit": "seconds", "metadata": {"k": "v"}},
    ]
    # A Go-client session never heartbeats (Heartbeat sends nothing in direct mode): active until ended.
    assert (session["active"], session["suspended"]) == (True, False)

    assert_ok(serve.send("POST", f"{path}/end", b"", {"User-Agent": "Go-http-client/1.1", "Content-Length": "0"}))
    everything = serve.all_sessions()  # GetAllSessions
    (ended,) = [entry for entry in everything if entry["id"] == session_id]
    assert (ended["active"], "ended_at" in ended) == (False, True)


def badge(session: dict[str, Any]) -> str:
    """datacat-web's status badge of a session (its sessions table)."""
    if session["active"]:
        return "Active"
    if session["crashed"]:
        return "Crashed"
    if session["suspended"]:
        return "Suspended"
    return "Ended"


def test_datacat_webs_reads_list_filter_and_aggregate_sessions(quick_serve: Serve) -> None:
    """What datacat-web computes from GET /api/data/sessions and GET /api/sessions/{id} is there: products and
    versions from the state, the four flags for its badges and status filters, created_at for its time
    filters, event names, metric types with the last counter total and histogram buckets, the history."""
    serve = quick_serve
    product = f"Web-{datetime.now(UTC).timestamp()}"
    active = serve.create(product, "1.0")
    ended = serve.create(product, "1.0")
    crashed = serve.create(product, "2.0")
    hung = serve.create(product, "2.0")
    suspended = serve.create(product, "2.0", machine_id="m-web")
    assert_ok(serve.post(f"/api/sessions/{ended}/end", {}))
    assert_ok(serve.post(f"/api/sessions/{crashed}/crash", {"reason": "x"}))
    assert_ok(serve.post(f"/api/sessions/{hung}/events", {"name": "application_appears_hung"}))
    assert_ok(serve.post(f"/api/sessions/{suspended}/heartbeat", {}))
    for total in (1, 5):
        assert_ok(
            serve.post(f"/api/sessions/{active}/metrics", {"name": "requests", "type": "counter", "value": total})
        )
    histogram = {"buckets": [{"le": 0.1, "count": 2}, {"le": 1, "count": 1}], "count": 3, "sum": 0.9}
    assert_ok(
        serve.post(
            f"/api/sessions/{active}/metrics", {"name": "lat", "type": "histogram", "value": 0.3, "metadata": histogram}
        )
    )
    assert_ok(
        serve.post(f"/api/sessions/{active}/state", {"state": {"mode": "edit"}, "timestamp": "2026-01-01T00:00:00Z"})
    )
    wait_until(lambda: serve.session(suspended)["suspended"])

    sessions = {s["id"]: s for s in serve.all_sessions() if s["state"].get("product") == product}

    assert set(sessions) == {active, ended, crashed, hung, suspended}
    by_version: dict[str, int] = {}
    for session in sessions.values():
        by_version[session["state"]["version"]] = by_version.get(session["state"]["version"], 0) + 1
    assert by_version == {"1.0": 2, "2.0": 3}
    assert {badge(s) for s in sessions.values()} == {"Active", "Ended", "Crashed", "Suspended"}
    assert [sid for sid, s in sessions.items() if s["hung"]] == [hung] and badge(sessions[hung]) == "Active"
    assert badge(sessions[suspended]) == "Suspended" and badge(sessions[ended]) == "Ended"
    assert sessions[crashed]["crashed"] and "ended_at" in sessions[crashed]
    two_weeks_ago = datetime.now(UTC) - timedelta(weeks=2)
    assert all(go_epoch(s["created_at"]) > two_weeks_ago.timestamp() for s in sessions.values())
    assert any(e["name"] == "application_appears_hung" for e in sessions[hung]["events"])
    metrics = sessions[active]["metrics"]
    counters = [m for m in metrics if m["name"] == "requests"]
    assert (counters[0]["type"], counters[-1]["value"]) == ("counter", 5)  # the last point is the total
    (lat,) = [m for m in metrics if m["name"] == "lat"]
    assert (lat["metadata"]["buckets"][0], lat["metadata"]["count"], lat["metadata"]["sum"]) == (
        {"le": 0.1, "count": 2},
        3,
        0.9,
    )
    assert sessions[active]["state_history"][-1]["state"]["mode"] == "edit"
    assert serve.session(active) == sessions[active]


@pytest.mark.parametrize("path", ["/api/data/sessions", "/health"])
def test_datacat_webs_reads_need_no_content_type_and_no_key(serve: Serve, path: str) -> None:
    """datacat-web reads with plain GETs (no Content-Type, no Authorization) and gets JSON."""
    answer = serve.send("GET", path, None, {"User-Agent": "Go-http-client/1.1"})

    assert (answer.status, answer.headers["content-type"]) == (200, "application/json")
