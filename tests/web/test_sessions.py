"""Tests for runwatch's own session routes beside datacat's (runwatch.web.sessions, docs/sessions.md): the
listing, the paged view of a session, /batch, and what datacat's writes look like there, against a real
server on loopback. datacat's contract itself is tested in tests/datacat/."""

from __future__ import annotations

import json
import sqlite3
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor

TIMEOUT = 10  # guards every network wait; nothing here legitimately takes this long
JSON = {"content-type": "application/json"}


@dataclass
class Server:
    """A running monitor and an HTTP client for its web server."""

    monitor: WebMonitor
    client: httpx.Client
    db_path: Path

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None) -> httpx.Response:
        """POST ``body`` as JSON (or ``raw`` bytes) with the JSON content type."""
        content = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        return self.client.post(path, content=content, headers=JSON)

    def create(self, **body: Any) -> str:
        """Create a session (product ``app``, version ``1`` unless given) and return its id."""
        response = self.post("/api/sessions", {"product": "app", "version": "1", **body})
        assert response.status_code == 200, response.text
        session_id = response.json()["session_id"]
        assert isinstance(session_id, str)
        return session_id

    def get(self, session_id: str, **params: Any) -> dict[str, Any]:
        """GET runwatch's paged view of one session (200 expected)."""
        params.setdefault("events_limit", 100)
        response = self.client.get(f"/api/sessions/{session_id}", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body, dict)
        return body

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query the store directly."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by this module's tests (each test creates its own sessions)."""
    tmp = tmp_path_factory.mktemp("sessions")
    db_path = tmp / "m.db"
    monitor = WebMonitor(MonitorConfig(db_path=str(db_path), data_dir=str(tmp / "d"), web_port=0))
    client = httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT)
    try:
        yield Server(monitor, client, db_path)
    finally:
        client.close()
        monitor.close()


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error object of an error answer."""
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["status"] == response.status_code
    assert isinstance(error, dict)
    return error


# -- create and read ---------------------------------------------------------------------------


def test_a_created_session_shows_in_runwatchs_paged_view(server: Server) -> None:
    """A session created through datacat's route is a session run; runwatch's view shows its product,
    version, host, own metadata and timeout, and its first state (product and version)."""
    body = {
        "product": "editor",
        "version": "2.1",
        "hostname": "box-1",
        "machine_id": "m-1",
        "metadata": {"team": "a"},
        "heartbeat_timeout_seconds": 30,
    }
    response = server.post("/api/sessions", body)

    assert (response.status_code, list(response.json())) == (200, ["session_id"])
    session = server.get(response.json()["session_id"])
    assert {k: session[k] for k in ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")} == {
        "product": "editor",
        "version": "2.1",
        "hostname": "box-1",
        "metadata": {"team": "a"},
        "heartbeat_timeout_seconds": 30.0,
    }
    assert (session["status"], session["active"], session["ended_at"], session["last_heartbeat"]) == (
        "active",
        True,
        None,
        None,
    )
    assert (session["machine_id"], session["suspended"], session["crashed"], session["hung"]) == (
        "m-1",
        False,
        False,
        False,
    )
    assert session["state"] == {"product": "editor", "version": "2.1"}
    assert session["events"] == [] and session["metrics"] == []
    assert session["events_next_cursor"] is None and session["metrics_next_cursor"] is None
    assert session["created_at"].endswith("+00:00")
    assert server.rows("SELECT kind, status FROM runs WHERE run_id = ?", response.json()["session_id"]) == [
        ("session", "running")
    ]


def test_unknown_session_is_404_naming_it_on_runwatchs_routes(server: Server) -> None:
    """The paged view and /batch of an unknown session answer runwatch's 404 naming session_id."""
    responses = [
        server.client.get("/api/sessions/no-such-session", params={"events_limit": 5}),
        server.post("/api/sessions/no-such-session/batch", {"operations": [{"op": "heartbeat"}]}),
    ]

    for response in responses:
        assert response.status_code == 404, response.text
        assert error_of(response)["field"] == "session_id"


def test_a_training_run_is_not_a_session(server: Server) -> None:
    """A run of kind training is unknown to the sessions API (404) and not listed."""
    assert (
        server.post(
            "/api/ingest",
            [{"kind": "lifecycle", "run_id": "train-1", "timestamp": time.time(), "transition": "started"}],
        ).status_code
        == 202
    )

    assert server.client.get("/api/sessions/train-1").status_code == 404
    assert server.client.get("/api/sessions/train-1", params={"events_limit": 1}).status_code == 404
    assert server.post("/api/sessions/train-1/heartbeat", {}).status_code == 404
    listed = server.client.get("/api/sessions", params={"limit": 1000}).json()["sessions"]
    assert "train-1" not in {session["id"] for session in listed}


# -- writes ------------------------------------------------------------------------------------------


def test_state_deep_merges_objects_replaces_lists_and_deletes_nulls(server: Server) -> None:
    """State patches merge objects key by key, replace lists and scalars, and null deletes a key."""
    session_id = server.create()
    patches = [
        {"window": {"open": ["w1", "w2"], "active": "w1"}, "mode": "edit", "gone": 1},
        {"window": {"open": ["w1", "w2", "w3"]}},
        {"mode": "view", "gone": None, "window": {"size": {"w": 10}}},
        {"window": {"size": {"h": 5}, "open": []}},
    ]
    for patch in patches:
        response = server.post(f"/api/sessions/{session_id}/state", patch)
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    session = server.get(session_id)

    assert session["state"] == {
        "product": "app",
        "version": "1",
        "window": {"open": [], "active": "w1", "size": {"w": 10, "h": 5}},
        "mode": "view",
    }
    first_state = {"product": "app", "version": "1"}
    assert [entry["patch"] for entry in session["state_history"]] == [first_state, *patches]  # oldest first
    assert session["state_history_next_cursor"] is None
    assert all(entry["timestamp"].endswith("+00:00") for entry in session["state_history"])


def test_state_history_pages_back_with_a_cursor_like_events(server: Server) -> None:
    """state_history_limit and state_history_next_cursor walk every patch once: newest page first, each oldest first."""
    session_id = server.create()
    operations = [{"op": "state", "state": {f"k{i}": i}} for i in range(7)]
    assert server.post(f"/api/sessions/{session_id}/batch", {"operations": operations}).status_code == 200
    pages: list[list[int]] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"state_history_limit": 3}
        if cursor is not None:
            params["state_history_cursor"] = cursor
        response = server.client.get(f"/api/sessions/{session_id}", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([next(iter(entry["patch"].values())) for entry in body["state_history"]])
        cursor = body["state_history_next_cursor"]
        if cursor is None:
            break
    assert pages == [[4, 5, 6], [1, 2, 3], ["app", 0]]  # the first patch is the product and version
    assert body["state"] == {"product": "app", "version": "1", **{f"k{i}": i for i in range(7)}}
    bad = server.client.get(f"/api/sessions/{session_id}", params={"state_history_cursor": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "state_history_cursor"


@pytest.mark.parametrize("patches", [pytest.param(5_000, id="5000"), pytest.param(10_000, id="10000")])
def test_reading_a_session_is_bounded_by_its_pages_not_its_patches(server: Server, patches: int) -> None:
    """Thousands of one-key patches give small answers (the merged state plus a page) and little server memory,
    for runwatch's paged view, the list and end."""
    session_id = server.create(product=f"many-{patches}")
    for start in range(0, patches, 5_000):
        operations = [{"op": "state", "state": {f"k{i}": i}} for i in range(start, min(patches, start + 5_000))]
        assert server.post(f"/api/sessions/{session_id}/batch", {"operations": operations}).status_code == 200
    state_bytes = len(json.dumps({f"k{i}": i for i in range(patches)}))

    tracemalloc.start()  # the server runs in this process: its allocations are traced too
    try:
        one = server.client.get(f"/api/sessions/{session_id}", params={"state_history_limit": 100})
        listed = server.client.get("/api/sessions", params={"product": f"many-{patches}"})
        ended = server.client.post(f"/api/sessions/{session_id}/end", content=b"{}", headers=JSON)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # the state a few times over, never a state per patch

    for response in (one, listed, ended):
        assert response.status_code == 200, response.text
        assert len(response.content) < state_bytes + 20_000, len(response.content)  # the state once, a page
    body = one.json()
    assert len(body["state"]) == patches + 2 and len(body["state_history"]) == 100
    assert body["state_history"][-1]["patch"] == {f"k{patches - 1}": patches - 1}


def test_events_show_name_level_and_data_newest_first(server: Server) -> None:
    """datacat's events show in runwatch's view with their name, data and level (the category when it is
    one of runwatch's levels, else info), newest first."""
    session_id = server.create()
    answer = server.post(f"/api/sessions/{session_id}/events", {"name": "login", "data": {"user": "al"}})
    assert answer.json() == {"status": "ok"}
    server.post(f"/api/sessions/{session_id}/events", {"name": "disk_low", "data": {"free": 3}, "category": "warning"})
    server.post(f"/api/sessions/{session_id}/events", {"name": "clicked", "category": "ui"})
    server.post(f"/api/sessions/{session_id}/events", {"name": "bare"})

    events = server.get(session_id)["events"]

    assert [(e["name"], e["level"], e["data"]) for e in events] == [
        ("bare", "info", {}),
        ("clicked", "info", {}),
        ("disk_low", "warning", {"free": 3}),
        ("login", "info", {"user": "al"}),
    ]


def test_metrics_keep_their_value_and_tags(server: Server) -> None:
    """Metrics are read back with their value and the tag list as given (empty when none)."""
    session_id = server.create()
    server.post(
        f"/api/sessions/{session_id}/metrics", {"name": "memory_usage", "value": 1024.5, "tags": ["app:x", "a,b"]}
    )
    server.post(f"/api/sessions/{session_id}/metrics", {"name": "fps", "value": 60})

    metrics = server.get(session_id)["metrics"]

    assert [(m["name"], m["value"], m["tags"]) for m in metrics] == [
        ("fps", 60.0, []),
        ("memory_usage", 1024.5, ["app:x", "a,b"]),
    ]
    summary = server.client.get(f"/api/runs/{session_id}").json()
    assert summary["metrics"]["memory_usage"]["last"] == 1024.5  # the same store as training metrics


@pytest.mark.parametrize("raw", [pytest.param(b"", id="empty"), pytest.param(b"{}", id="empty-object")])
def test_heartbeat_sets_last_heartbeat(server: Server, raw: bytes) -> None:
    """A heartbeat (empty body or {}) is stored as the session's last_heartbeat."""
    session_id = server.create()
    before = time.time()

    response = server.post(f"/api/sessions/{session_id}/heartbeat", raw=raw)

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    stored = server.rows("SELECT last_heartbeat FROM runs WHERE run_id = ?", session_id)[0][0]
    assert stored >= before
    assert server.get(session_id)["last_heartbeat"] is not None


def test_an_ended_session_takes_datacats_writes_but_not_a_batch(server: Server) -> None:
    """After its end a session takes datacat's writes (as datacat does); runwatch's /batch refuses it with 409."""
    session_id = server.create()
    server.post(f"/api/sessions/{session_id}/events", {"name": "work"})

    response = server.post(f"/api/sessions/{session_id}/end", {})

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    session = server.get(session_id)
    assert (session["status"], session["active"]) == ("ended", False)
    assert session["ended_at"] is not None
    assert server.post(f"/api/sessions/{session_id}/events", {"name": "late"}).status_code == 200
    late = server.post(
        f"/api/sessions/{session_id}/batch", {"batch_id": "after-end", "operations": [{"op": "heartbeat"}]}
    )
    assert late.status_code == 409, late.text
    assert error_of(late)["field"] == "session_id"
    assert [e["name"] for e in server.get(session_id)["events"]] == ["late", "work"]


def test_liveness_verdicts_show_as_session_status(server: Server) -> None:
    """A hung verdict makes the session hung (still active); a recovery makes it active again."""
    session_id = server.create()
    now = time.time()

    def verdict(event_type: str) -> None:
        event = {"kind": "log", "run_id": session_id, "timestamp": now, "type": event_type, "level": "warning"}
        assert server.post("/api/ingest", [event]).status_code == 202

    verdict("application_appears_hung")
    session = server.get(session_id)
    assert (session["status"], session["active"], session["hung"]) == ("hung", True, True)
    assert session["events"][0]["name"] == "application_appears_hung"
    hung_ids = [s["id"] for s in server.client.get("/api/sessions", params={"status": "hung"}).json()["sessions"]]
    assert session_id in hung_ids

    verdict("application_crashed")
    assert (server.get(session_id)["status"], server.get(session_id)["active"]) == ("crashed", False)
    verdict("application_recovered")
    assert server.get(session_id)["status"] == "active"


# -- invalid bodies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "raw", "status", "field"),
    [
        pytest.param(
            "/batch",
            b'{"batch_id": "b", "operations": [{"op": "event", "name": "e", "data": '
            + b"[" * 990
            + b"]" * 990
            + b"}]}",
            422,
            "operations[0].data",
            id="batch-990-deep-data",
        ),
        pytest.param(
            "/batch",
            rb'{"batch_id": "nul\u0000id", "operations": []}',
            422,
            "batch_id",
            id="batch-nul-batch-id",
        ),
        pytest.param("/batch", b'{"operations": {}}', 422, "operations", id="batch-operations-object"),
        pytest.param("/batch", b'{"batch_id": "", "operations": []}', 422, "batch_id", id="batch-empty-id"),
        pytest.param("/batch", b'{"operations": [{"op": "nap"}]}', 422, "operations[0].op", id="batch-unknown-op"),
        pytest.param("/batch", b'{"operations": [5]}', 422, "operations[0]", id="batch-op-not-object"),
        pytest.param(
            "/batch",
            b'{"operations": [{"op": "heartbeat"}, {"op": "metric", "name": "m", "value": "x"}]}',
            422,
            "operations[1].value",
            id="batch-bad-value",
        ),
        pytest.param(
            "/batch", b'{"operations": [{"op": "state", "state": 3}]}', 422, "operations[0].state", id="batch-state"
        ),
        pytest.param(
            "/batch",
            b'{"operations": [{"op": "heartbeat", "timestamp": -5}]}',
            422,
            "operations[0].timestamp",
            id="batch-timestamp",
        ),
        pytest.param(
            "/batch", b'{"operations": [{"op": "end"}, {"op": "heartbeat"}]}', 409, "operations[1].op", id="after-end"
        ),
    ],
)
def test_invalid_bodies_are_4xx_naming_the_field_and_store_nothing(
    server: Server, route: str, raw: bytes, status: int, field: str | None
) -> None:
    """A bad /batch body is refused with the documented status and field, and nothing of it is stored."""
    session_id = server.create()
    path = f"/api/sessions/{session_id}{route}"
    events_before = server.rows("SELECT count(*) FROM events")[0][0]
    runs_before = server.rows("SELECT count(*) FROM runs")[0][0]

    response = server.post(path, raw=raw)

    assert response.status_code == status, response.text
    assert error_of(response)["field"] == field
    assert len(response.text) < 2000, "the message must not repr() a huge or deep value"
    assert server.rows("SELECT count(*) FROM events")[0][0] == events_before
    assert server.rows("SELECT count(*) FROM runs")[0][0] == runs_before
    assert server.rows("SELECT last_heartbeat FROM runs WHERE run_id = ?", session_id) == [(None,)]


def test_a_batch_requires_the_json_content_type(server: Server) -> None:
    """A /batch without Content-Type: application/json is 415 (datacat's routes take any)."""
    session_id = server.create()

    response = server.client.post(f"/api/sessions/{session_id}/batch", content=b'{"operations": []}')

    assert response.status_code == 415


# -- lists and pagination -----------------------------------------------------------------------------


def test_list_filters_by_active_status_and_product(server: Server) -> None:
    """active, status and product narrow the list; sessions come newest first without events or metrics."""
    product = f"filters-{time.time_ns()}"
    first = server.create(product=product)
    second = server.create(product=product)
    ended = server.create(product=product)
    server.create(product="someone-else")
    server.post(f"/api/sessions/{ended}/end", {})

    def ids(**params: Any) -> list[str]:
        response = server.client.get("/api/sessions", params={"product": product, **params})
        assert response.status_code == 200, response.text
        return [session["id"] for session in response.json()["sessions"]]

    assert ids() == [ended, second, first]
    assert ids(active="true") == [second, first]
    assert ids(active="false") == [ended]
    assert ids(status="ended") == [ended]
    assert ids(status="active") == [second, first]
    assert ids(status="crashed") == []
    listed = server.client.get("/api/sessions", params={"product": product}).json()["sessions"][0]
    assert not {"events", "metrics", "state_history"} & set(listed)
    assert listed["state"] == {"product": product, "version": "1"}


def test_list_pages_with_a_cursor(server: Server) -> None:
    """limit and next_cursor walk every session exactly once, newest first."""
    product = f"pages-{time.time_ns()}"
    created = [server.create(product=product) for _ in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"product": product, "limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = server.client.get("/api/sessions", params=params).json()
        seen.extend(session["id"] for session in page["sessions"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"status": "sleeping"}, "status", id="status"),
        pytest.param({"limit": 0}, "limit", id="limit"),
        pytest.param({"cursor": "abc"}, "cursor", id="cursor"),
        pytest.param({"active": "maybe"}, "active", id="active"),
    ],
)
def test_list_rejects_bad_parameters_naming_them(server: Server, params: dict[str, Any], field: str) -> None:
    """A bad list parameter is 422 naming it."""
    response = server.client.get("/api/sessions", params=params)

    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_events_and_metrics_page_newest_first_without_gaps(server: Server) -> None:
    """events_limit/events_cursor and metrics_limit/metrics_cursor walk each list exactly once."""
    session_id = server.create()
    operations = []
    for i in range(5):
        operations.append({"op": "event", "name": f"e{i}", "data": {"i": i}})
        operations.append({"op": "metric", "name": "m", "value": i})
    assert server.post(f"/api/sessions/{session_id}/batch", {"operations": operations}).status_code == 200

    def walk(kind: str) -> list[list[Any]]:
        pages: list[list[Any]] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {f"{kind}_limit": 2}
            if cursor is not None:
                params[f"{kind}_cursor"] = cursor
            session = server.get(session_id, **params)
            pages.append([entry["data"]["i"] if kind == "events" else entry["value"] for entry in session[kind]])
            cursor = session[f"{kind}_next_cursor"]
            if cursor is None:
                return pages
        raise AssertionError("pagination did not end")

    assert walk("events") == [[4, 3], [2, 1], [0]]
    assert walk("metrics") == [[4.0, 3.0], [2.0, 1.0], [0.0]]
    bad = server.client.get(f"/api/sessions/{session_id}", params={"metrics_cursor": "-1"})
    assert bad.status_code == 422 and error_of(bad)["field"] == "metrics_cursor"


# -- batches -------------------------------------------------------------------------------------------


def test_batch_applies_every_operation_in_order(server: Server) -> None:
    """A batch applies state, events, metrics, heartbeats and end, with the timestamps it carries."""
    session_id = server.create()
    ts = time.time() - 30
    body = {
        "batch_id": f"all-ops-{session_id}",
        "operations": [
            {"op": "state", "state": {"a": {"b": 1}}, "timestamp": ts},
            {"op": "state", "state": {"a": {"c": 2}}, "timestamp": ts + 1},
            {"op": "event", "name": "clicked", "data": {"x": 1}, "level": "debug", "timestamp": ts + 2},
            {"op": "metric", "name": "latency", "value": 0.25, "tags": ["path:/"], "timestamp": ts + 3},
            {"op": "heartbeat", "timestamp": ts + 4},
            {"op": "end", "timestamp": ts + 5},
        ],
    }

    response = server.post(f"/api/sessions/{session_id}/batch", body)

    assert (response.status_code, response.json()) == (200, {"accepted": 6, "duplicate": False})
    session = server.get(session_id)
    assert session["state"] == {"product": "app", "version": "1", "a": {"b": 1, "c": 2}}
    assert [(e["name"], e["level"], e["data"]) for e in session["events"]] == [("clicked", "debug", {"x": 1})]
    assert [(m["name"], m["value"], m["tags"]) for m in session["metrics"]] == [("latency", 0.25, ["path:/"])]
    assert session["status"] == "ended"
    stored = server.rows("SELECT last_heartbeat, end_time FROM runs WHERE run_id = ?", session_id)[0]
    assert stored == (pytest.approx(ts + 4), pytest.approx(ts + 5))


def test_a_retried_batch_is_applied_once(server: Server) -> None:
    """The same batch_id posted again answers duplicate and stores nothing more."""
    session_id = server.create()
    body = {
        "batch_id": f"retry-{session_id}",
        "operations": [{"op": "event", "name": "once"}, {"op": "metric", "name": "n", "value": 1}],
    }

    answers = [server.post(f"/api/sessions/{session_id}/batch", body).json() for _ in range(3)]

    assert answers == [
        {"accepted": 2, "duplicate": False},
        {"accepted": 0, "duplicate": True},
        {"accepted": 0, "duplicate": True},
    ]
    session = server.get(session_id)
    assert [e["name"] for e in session["events"]] == ["once"]
    assert len(session["metrics"]) == 1


def test_a_retried_batch_that_ended_the_session_is_a_duplicate_not_a_conflict(server: Server) -> None:
    """A retry of the batch that ended its session answers duplicate (200), not 409."""
    session_id = server.create()
    body = {"batch_id": f"last-{session_id}", "operations": [{"op": "event", "name": "bye"}, {"op": "end"}]}

    first = server.post(f"/api/sessions/{session_id}/batch", body)
    again = server.post(f"/api/sessions/{session_id}/batch", body)

    assert first.json() == {"accepted": 2, "duplicate": False}
    assert (again.status_code, again.json()) == (200, {"accepted": 0, "duplicate": True})


def test_too_many_operations_is_413(server: Server) -> None:
    """A batch over the server's event limit is refused whole."""
    session_id = server.create()
    operations = [{"op": "heartbeat"}] * 10_001

    response = server.post(f"/api/sessions/{session_id}/batch", {"operations": operations})

    assert response.status_code == 413
    assert error_of(response)["field"] == "operations"


# -- live -------------------------------------------------------------------------------------------------


async def test_session_writes_reach_websocket_subscribers(server: Server) -> None:
    """An acknowledged session event has been published to /ws subscribers of that session."""
    session_id = await anyio.to_thread.run_sync(server.create)
    url = server.monitor.web_url.replace("http://", "ws://") + f"/ws?runs={session_id}&kinds=log"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await ws.recv())["type"] == "subscribed"
        body = {"name": "live-one", "data": {"k": 1}}
        response = await anyio.to_thread.run_sync(lambda: server.post(f"/api/sessions/{session_id}/events", body))
        assert response.status_code == 200
        with anyio.fail_after(TIMEOUT):
            message = json.loads(await ws.recv())
    assert message["type"] == "batch"
    assert [(e["run_id"], e["type"], e["data"]) for e in message["events"]] == [(session_id, "live-one", {"k": 1})]
