"""Tests for remote ingest: POST /api/ingest and /ws/ingest against a real server on loopback."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.pipeline.config import default_pipeline_config

JSON = {"content-type": "application/json"}
MAX_BODY = 1024 * 1024  # the default SecurityPolicy.max_body_bytes
TABLES = ("runs", "events", "metric_chunks", "state_history", "ingest_batches")
# Guards every network wait; nothing here legitimately takes this long.
TIMEOUT = 10


@dataclass
class Server:
    """A running monitor and an HTTP client for its web server."""

    monitor: WebMonitor
    client: httpx.Client
    db_path: Path

    @property
    def ws_url(self) -> str:
        """The websocket base URL."""
        return self.monitor.web_url.replace("http://", "ws://")

    def post(self, body: bytes | str, content_type: str | None = "application/json", **kwargs: Any) -> httpx.Response:
        """POST a raw body to /api/ingest."""
        headers = {"content-type": content_type} if content_type is not None else {}
        return self.client.post("/api/ingest", content=body, headers=headers, **kwargs)

    def counts(self) -> dict[str, int]:
        """Rows in every table ingest can write to."""
        connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            found = {}
            for table in TABLES:
                try:
                    found[table] = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                except sqlite3.OperationalError:  # table not created yet
                    found[table] = 0
            return found
        finally:
            connection.close()


def start_server(tmp: Path) -> Server:
    """A monitor serving on a free loopback port, whose liveness stage judges no run while the tests run.

    The tests' events carry fixed timestamps, long past by now: a run that ingest created is watched
    for silence from them, so a liveness check between a test's two ``counts()`` would store its
    ``application_crashed`` verdict there. (Liveness has tests of its own.)
    """
    db_path = tmp / "m.db"
    pipeline = default_pipeline_config()
    pipeline["stages"]["liveness"].update(check_interval_seconds=3600.0)
    config = MonitorConfig(db_path=str(db_path), data_dir=str(tmp / "d"), web_port=0, pipeline=pipeline)
    monitor = WebMonitor(config)
    client = httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT)
    return Server(monitor, client, db_path)


def stop_server(server: Server) -> None:
    """Close the client and the monitor."""
    server.client.close()
    server.monitor.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by this module's tests (each test uses its own run ids)."""
    running = start_server(tmp_path_factory.mktemp("ingest"))
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server for one test whose input may leave the store unusable."""
    running = start_server(tmp_path)
    # A store stuck on an event it cannot commit would hold teardown for the default 10 s drain.
    running.monitor.pipeline_thread.pipeline.shutdown_timeout_seconds = 2.0
    try:
        yield running
    finally:
        stop_server(running)


def metric(run_id: str, values: dict[str, Any], step: int | None = None, timestamp: float = 1_795_000_000.0) -> dict:
    """A metric EventWire."""
    event: dict[str, Any] = {"kind": "metric", "run_id": run_id, "timestamp": timestamp, "values": values}
    if step is not None:
        event["step"] = step
    return event


def log(run_id: str, type_: str = "note", timestamp: float = 1_795_000_000.0, **data: Any) -> dict:
    """A log EventWire."""
    return {"kind": "log", "run_id": run_id, "timestamp": timestamp, "type": type_, "level": "info", "data": data}


def full_batch(run_id: str) -> list[dict[str, Any]]:
    """One event of each kind a producer usually sends."""
    now = time.time()
    return [
        {
            "kind": "lifecycle",
            "run_id": run_id,
            "timestamp": now,
            "transition": "started",
            "run_kind": "session",
            "config": {"lr": 0.1},
        },
        metric(run_id, {"loss": 0.5, "acc": 0.25}, step=3, timestamp=now),
        log(run_id, "checkpoint", timestamp=now, path="/ckpt/3"),
        {"kind": "state", "run_id": run_id, "timestamp": now, "patch": {"epoch": 1, "game_state": {"score": 4}}},
        {"kind": "heartbeat", "run_id": run_id, "timestamp": now, "counters": {"total_steps": 3}},
    ]


# -- POST /api/ingest: accepted --------------------------------------------------------------------


def test_valid_batch_is_202_and_queryable_right_after(server: Server) -> None:
    """A valid batch answers 202 and every event is already committed when the answer arrives."""
    response = server.post(json.dumps({"batch_id": "valid-1", "events": full_batch("ing-valid")}))
    assert response.status_code == 202
    assert response.json() == {"accepted": 5, "batch_id": "valid-1", "duplicate": False}
    events = server.client.get("/api/runs/ing-valid/events").json()["events"]
    assert [e["event_type"] for e in events] == ["checkpoint", "run_started"]
    assert events[0]["event_data"] == {"path": "/ckpt/3"}
    summary = server.client.get("/api/runs/ing-valid").json()
    assert summary["kind"] == "session"
    assert summary["config"] == {"lr": 0.1}
    assert summary["total_steps"] == 3
    assert summary["state"] == {"epoch": 1, "game_state": {"score": 4}}
    series = server.client.get("/api/runs/ing-valid/metrics").json()["series"]
    assert series["loss"]["v"] == [0.5] and series["loss"]["step"] == [3]
    assert series["acc"]["v"] == [0.25]


def test_retried_batch_id_is_200_duplicate_and_stored_once(server: Server) -> None:
    """Posting the same batch_id again answers 200 duplicate and stores nothing more."""
    body = json.dumps({"batch_id": "retry-1", "events": [log("ing-retry", n=1), metric("ing-retry", {"x": 1.0})]})
    first = server.post(body)
    assert first.status_code == 202
    assert first.json() == {"accepted": 2, "batch_id": "retry-1", "duplicate": False}
    before = server.counts()
    for _ in range(3):
        again = server.post(body)
        assert again.status_code == 200
        assert again.json() == {"accepted": 0, "batch_id": "retry-1", "duplicate": True}
    assert server.counts() == before
    assert len(server.client.get("/api/runs/ing-retry/events?kind=log").json()["events"]) == 1
    assert server.client.get("/api/runs/ing-retry").json()["metrics"]["x"]["count"] == 1


def test_bare_array_is_accepted(server: Server) -> None:
    """A bare JSON array of events is a batch without a batch_id."""
    response = server.post(json.dumps([log("ing-bare", n=1), log("ing-bare", n=2)]))
    assert response.status_code == 202
    assert response.json() == {"accepted": 2, "batch_id": None, "duplicate": False}
    events = server.client.get("/api/runs/ing-bare/events?kind=log").json()["events"]
    assert sorted(e["event_data"]["n"] for e in events) == [1, 2]


def test_json_content_type_with_charset_is_accepted(server: Server) -> None:
    """application/json with parameters is still JSON."""
    response = server.post(json.dumps([log("ing-charset")]), content_type="Application/JSON; charset=utf-8")
    assert response.status_code == 202


def test_empty_batch_is_accepted_and_stores_nothing(server: Server) -> None:
    """An empty events array is valid and accepts zero events."""
    before = server.counts()
    response = server.post(json.dumps({"events": []}))
    assert response.status_code == 202
    assert response.json()["accepted"] == 0
    assert server.counts() == before


def test_non_finite_metric_values_round_trip(server: Server) -> None:
    """ "NaN", null, "Infinity" and "-Infinity" metric values are stored as such and read back the same way."""
    values = {"a": "NaN", "b": "Infinity", "c": "-Infinity", "d": None, "e": 1.5}
    assert server.post(json.dumps([metric("ing-nonfinite", values, step=1)])).status_code == 202
    series = server.client.get("/api/runs/ing-nonfinite/metrics").json()["series"]
    assert {name: s["v"] for name, s in series.items()} == {
        "a": [None],
        "b": ["Infinity"],
        "c": ["-Infinity"],
        "d": [None],
        "e": [1.5],
    }
    stats = server.client.get("/api/runs/ing-nonfinite").json()["metrics"]
    assert stats["a"]["nan_count"] == 1 and stats["d"]["nan_count"] == 1
    assert stats["b"]["max"] == "Infinity" and stats["c"]["min"] == "-Infinity"


def test_an_event_without_a_timestamp_is_stamped_with_the_receive_time(server: Server) -> None:
    """timestamp may be left out: the server stamps such events with the time it received the request."""
    before = time.time()
    response = server.post(json.dumps([{"kind": "log", "run_id": "ing-now", "type": "note"}]))
    after = time.time()

    assert response.status_code == 202
    (event,) = server.client.get("/api/runs/ing-now/events?kind=log").json()["events"]
    stamped = datetime.fromisoformat(event["timestamp"]).timestamp()
    assert before <= stamped <= after


def test_events_of_an_unknown_run_start_it_as_created_by_ingest(server: Server) -> None:
    """A batch for a run nobody started creates it with a run_started event marked created_by ingest; the
    acknowledgement counts only the producer's own events."""
    response = server.post(json.dumps([metric("ing-implicit", {"loss": 1.0}, timestamp=time.time())]))

    assert response.status_code == 202 and response.json()["accepted"] == 1
    summary = server.client.get("/api/runs/ing-implicit").json()
    assert summary["status"] == "running"
    assert summary["metadata"] == {"created_by": "ingest", "liveness_signal": "any_event"}
    kinds = [event["event_type"] for event in server.client.get("/api/runs/ing-implicit/events").json()["events"]]
    assert kinds == ["run_started"]


async def test_concurrent_batches_of_a_new_run_start_it_once(tmp_path: Path) -> None:
    """Batches of a new run checked before the store has it (concurrent requests) add one run_started, not one each."""
    from runwatch.events import LogEvent, RunLifecycle
    from runwatch.web.http import WebContext
    from runwatch.web.ingest import with_run_rules

    class StoreWithoutTheRunYet:  # every batch is checked before the first one's start is committed
        def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
            return {}

    context = WebContext(store=StoreWithoutTheRunYet())  # type: ignore[arg-type]
    batches = [[LogEvent("ing-race", time.time(), "note", "info", {"batch": n})] for n in range(3)]
    admitted = [await with_run_rules(context, batch) for batch in batches]

    starts = [event for batch in admitted for event in batch if type(event) is RunLifecycle]
    assert len(starts) == 1 and admitted[0][0] is starts[0]
    assert [len(batch) for batch in admitted] == [2, 1, 1]


def test_a_run_created_by_ingest_that_falls_silent_becomes_hung(tmp_path: Path) -> None:
    """Without a single heartbeat, a run ingest created is marked hung once silent past its timeout."""
    pipeline = default_pipeline_config()
    pipeline["stages"]["liveness"].update(heartbeat_timeout_seconds=0.5, check_interval_seconds=0.1)
    db_path = tmp_path / "m.db"
    config = MonitorConfig(db_path=str(db_path), data_dir=str(tmp_path / "d"), web_port=0, pipeline=pipeline)
    with WebMonitor(config) as monitor, httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT) as client:
        posted = client.post("/api/ingest", json=[metric("ing-silent", {"loss": 1.0}, timestamp=time.time())])
        assert posted.status_code == 202
        deadline = time.monotonic() + TIMEOUT
        # The verdict comes from the stage's periodic check: nothing to await from here but the stored status.
        while client.get("/api/runs/ing-silent").json()["status"] != "hung":
            assert time.monotonic() < deadline, "the silent run was never marked hung"
            time.sleep(0.05)
        hung = client.get("/api/runs/ing-silent/events").json()["events"]
    assert "application_appears_hung" in [event["event_type"] for event in hung]


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_started_for_a_run_that_ended_is_409_and_stores_nothing(server: Server, status: str) -> None:
    """Re-sending started for an ended run is refused (409 naming the transition); resumed continues it."""
    run_id = f"ing-ended-{status}"
    now = time.time()
    lifecycle = {"kind": "lifecycle", "run_id": run_id, "timestamp": now}
    ended = [{**lifecycle, "transition": "started"}, {**lifecycle, "transition": status}]
    assert server.post(json.dumps(ended)).status_code == 202
    before = server.counts()

    again = server.post(json.dumps([log(run_id, n=1), {**lifecycle, "transition": "started"}]))

    assert again.status_code == 409
    assert again.json()["error"]["field"] == "events[1].transition"
    assert "resumed" in again.json()["error"]["message"]
    assert server.counts() == before
    assert server.client.get(f"/api/runs/{run_id}").json()["status"] == status
    resumed = server.post(json.dumps([{**lifecycle, "transition": "resumed"}]))
    assert resumed.status_code == 202
    assert server.client.get(f"/api/runs/{run_id}").json()["status"] == "running"


# -- POST /api/ingest: refused -----------------------------------------------------------------------


def test_malformed_json_is_400(server: Server) -> None:
    """A body that is not JSON answers 400 with the error body and stores nothing."""
    before = server.counts()
    response = server.post(b'{"events": [{"kind": "log",')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400 and "malformed JSON" in error["message"]
    assert server.counts() == before


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param(None, id="missing"),
        pytest.param("text/plain", id="text-plain"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/jsonp", id="json-lookalike"),
    ],
)
def test_wrong_content_type_is_415(server: Server, content_type: str | None) -> None:
    """A write that is not application/json answers 415 and stores nothing, however valid the body."""
    before = server.counts()
    response = server.post(json.dumps([log("ing-415")]), content_type=content_type)
    assert response.status_code == 415
    assert response.json()["error"]["status"] == 415
    assert server.counts() == before
    assert server.client.get("/api/runs/ing-415").status_code == 404


def oversized_events(run_id: str) -> list[bytes]:
    """Valid events whose JSON array is a little over the body limit."""
    event = json.dumps(log(run_id, pad="p" * 1000)).encode()
    count = MAX_BODY // len(event) + 50
    return [event] * count


def test_oversized_body_with_content_length_is_413(server: Server) -> None:
    """A body announced larger than the limit answers 413 and stores nothing."""
    body = b"[" + b",".join(oversized_events("ing-413")) + b"]"
    assert MAX_BODY < len(body) < 2 * MAX_BODY
    before = server.counts()
    response = server.post(body)
    assert response.status_code == 413
    assert response.json()["error"]["status"] == 413
    assert server.counts() == before
    assert server.client.get("/api/runs/ing-413").status_code == 404


def test_oversized_chunked_body_is_413(server: Server) -> None:
    """A streamed (chunked, no Content-Length) body growing past the limit answers 413 and stores nothing."""
    events = oversized_events("ing-413-chunked")

    def chunks() -> Iterator[bytes]:
        yield b"["
        for index, event in enumerate(events):
            yield (b"," if index else b"") + event
        yield b"]"

    before = server.counts()
    response = server.post(chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert server.counts() == before
    assert server.client.get("/api/runs/ing-413-chunked").status_code == 404


def test_a_streamed_body_under_the_limit_is_accepted(server: Server) -> None:
    """A chunked body under the limit is read whole and accepted."""

    def chunks() -> Iterator[bytes]:
        yield b"["
        for n in range(50):
            yield (b"," if n else b"") + json.dumps(log("ing-chunked-ok", n=n)).encode()
        yield b"]"

    response = server.post(chunks())
    assert response.status_code == 202
    assert response.json()["accepted"] == 50


def test_too_many_events_is_413(server: Server) -> None:
    """More than max_ingest_events events in one request answers 413 and stores nothing."""
    tiny = {"kind": "heartbeat", "run_id": "ing-many", "timestamp": 1.0}
    body = json.dumps({"events": [tiny] * 10_001}, separators=(",", ":"))
    assert len(body) < MAX_BODY
    before = server.counts()
    response = server.post(body)
    assert response.status_code == 413
    assert "10000" in response.json()["error"]["message"]
    assert server.counts() == before


def test_invalid_event_is_422_naming_it_and_nothing_is_stored(server: Server) -> None:
    """One bad event refuses the whole request: 422 naming events[1], and not even events[0] is stored."""
    before = server.counts()
    body = {
        "batch_id": "bad-1",
        "events": [log("ing-422", n=1), metric("ing-422", {"loss": "not a number"}), log("ing-422", n=3)],
    }
    response = server.post(json.dumps(body))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == 422
    assert error["field"].startswith("events[1]")
    assert "loss" in error["message"]
    assert server.counts() == before
    assert server.client.get("/api/runs/ing-422").status_code == 404
    # The refused batch_id was not used up: a corrected retry is taken.
    body["events"][1] = metric("ing-422", {"loss": 1.0})
    retry = server.post(json.dumps(body))
    assert retry.status_code == 202 and retry.json()["accepted"] == 3


def ingest_event_schemas(server: Server) -> dict[str, Any]:
    """The published (/openapi.json) schema of each wire event of POST /api/ingest, by title, and the envelope's."""
    document = server.client.get("/openapi.json").json()
    body = document["paths"]["/api/ingest"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    array, envelope = body["oneOf"]
    return {**{event["title"]: event for event in array["items"]["oneOf"]}, "envelope": envelope}


@pytest.mark.parametrize(
    ("document", "schema_path"),
    [
        pytest.param([log("a\x00b")], ("log", "properties", "run_id"), id="run-id"),
        pytest.param([log("ing-nul") | {"type": "a\x00b"}], ("log", "properties", "type"), id="log-type"),
        pytest.param(
            [metric("ing-nul", {"a\x00b": 1.0})], ("metric", "properties", "values", "propertyNames"), id="metric-name"
        ),
        pytest.param(
            [{"kind": "lifecycle", "run_id": "ing-nul", "transition": "started", "run_kind": "a\x00b"}],
            ("lifecycle", "properties", "run_kind"),
            id="run-kind",
        ),
        pytest.param(
            {"batch_id": "a\x00b", "events": []},
            ("envelope", "properties", "batch_id", "anyOf", 0),
            id="batch-id",
        ),
    ],
)
def test_text_with_nul_is_refused_and_the_published_schema_says_so(
    server: Server, document: Any, schema_path: tuple[str | int, ...]
) -> None:
    """A NUL in a name the store keeps is refused with 422, and /openapi.json's pattern for that field excludes it
    (a client generating schema-valid bodies never sends one)."""
    before = server.counts()
    response = server.post(json.dumps(document))
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["error"]["message"]
    assert server.counts() == before
    schema: Any = ingest_event_schemas(server)
    for key in schema_path:
        schema = schema[key]
    assert re.search(schema["pattern"], "a\x00b") is None
    assert re.search(schema["pattern"], "ab") is not None


def test_invalid_metric_value_field_names_the_value(server: Server) -> None:
    """The 422 field names the bad value itself, like docs/protocol.md's `events[3].values.loss`."""
    events = [log("ing-field"), log("ing-field"), log("ing-field"), metric("ing-field", {"loss": "bad"})]
    response = server.post(json.dumps({"events": events}))
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "events[3].values.loss"


@pytest.mark.parametrize(
    ("document", "field_prefix", "words"),
    [
        pytest.param([{"kind": "bogus", "run_id": "r", "timestamp": 1.0}], "[0]", "kind", id="unknown-kind"),
        pytest.param({"events": [{"run_id": "r", "timestamp": 1.0}]}, "events[0]", "kind", id="kind-missing"),
        pytest.param(
            {"events": [{"kind": "log", "timestamp": 1.0, "type": "x"}]}, "events[0]", "run_id", id="run-id-missing"
        ),
        pytest.param(
            [{"kind": "log", "run_id": "", "timestamp": 1.0, "type": "x"}], "[0]", "run_id", id="run-id-empty"
        ),
        pytest.param(
            [{"kind": "log", "run_id": 7, "timestamp": 1.0, "type": "x"}], "[0]", "run_id", id="run-id-number"
        ),
        pytest.param(
            [{"kind": "log", "run_id": "r", "timestamp": "now", "type": "x"}], "[0]", "timestamp", id="timestamp-string"
        ),
        pytest.param(
            [{"kind": "log", "run_id": "r", "timestamp": 1.0, "type": "x", "level": "loud"}],
            "[0]",
            "level",
            id="bad-level",
        ),
        pytest.param(
            [{"kind": "log", "run_id": "r", "timestamp": 1.0, "type": "x", "extra": 1}],
            "[0]",
            "extra",
            id="unknown-event-field",
        ),
        pytest.param([metric("r", {"a": 1.0}, step=True)], "[0]", "step", id="bool-step"),
        pytest.param([metric("r", {"a": 1.0}) | {"step": 1.5}], "[0]", "step", id="float-step"),
        pytest.param([metric("r", {})], "[0]", "metrics", id="no-values"),
        pytest.param([metric("r", {"a": "Inf"})], "[0]", "a", id="non-protocol-infinity-string"),
        pytest.param({"batch_id": "", "events": []}, "batch_id", "batch_id", id="batch-id-empty"),
        pytest.param({"batch_id": "b" * 201, "events": []}, "batch_id", "batch_id", id="batch-id-too-long"),
        pytest.param({"batch_id": 5, "events": []}, "batch_id", "batch_id", id="batch-id-number"),
        pytest.param({"events": [], "token": "x"}, "token", "token", id="unknown-top-field"),
        pytest.param({"events": {"kind": "log"}}, "events", "array", id="events-not-array"),
        pytest.param({"batch_id": "b"}, "events", "array", id="events-missing"),
        pytest.param([[]], "[0]", "object", id="event-not-object"),
    ],
)
def test_invalid_documents_are_422_and_store_nothing(
    server: Server, document: Any, field_prefix: str, words: str
) -> None:
    """Each kind of invalid event or envelope answers 422 naming where it is wrong, and stores nothing."""
    before = server.counts()
    response = server.post(json.dumps(document))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] is not None and error["field"].startswith(field_prefix), error
    assert words in error["message"], error
    assert server.counts() == before


def _hostile_corpus() -> list[Any]:
    deep_array = b"[" * 10_000 + b"]" * 10_000
    deep_object = b'{"a":' * 10_000 + b"1" + b"}" * 10_000
    deep_data = json.dumps([log("hostile")]).replace('"data": {}', '"data": ' + '{"a":' * 500 + "1" + "}" * 500)
    many_keys = "{" + ",".join(f'"{i:x}":0' for i in range(100_000)) + "}"
    many_event_keys = (
        '[{"kind":"log","run_id":"hostile","timestamp":1.0,"type":"x",'
        + ",".join(f'"{i:x}":0' for i in range(100_000))
        + "}]"
    )
    huge = "h" * (MAX_BODY - 100)
    return [
        pytest.param(b'{"events": [', id="truncated"),
        pytest.param(b'[{"kind": "log", "run_id": "hostile", "timestamp": 1.0, "type": "x"}', id="truncated-array"),
        pytest.param(b'[{"kind":"log","run_id":"\xff\xfe\xc0","timestamp":1.0,"type":"x"}]', id="invalid-utf8"),
        pytest.param(b"\xef\xbb\xbf[]", id="utf8-bom"),
        pytest.param("[]".encode("utf-16"), id="utf16"),
        pytest.param(deep_array, id="nesting-10000-arrays"),
        pytest.param(deep_object, id="nesting-10000-objects"),
        pytest.param(deep_data.encode(), id="nesting-500-in-event-data"),
        pytest.param(json.dumps([metric("hostile", {"a": 1.0}, step=2**64)]).encode(), id="step-2**64"),
        pytest.param(json.dumps([metric("hostile", {"a": 1.0}, step=2**100)]).encode(), id="step-2**100"),
        pytest.param(
            json.dumps(
                [{"kind": "heartbeat", "run_id": "hostile", "timestamp": 1.0, "counters": {"total_steps": 2**64}}]
            ).encode(),
            id="counter-2**64",
        ),
        pytest.param(str(2**64).encode(), id="bare-integer-2**64"),
        pytest.param(b'[{"kind":"log","run_id":"\\ud800","timestamp":1.0,"type":"x"}]', id="lone-surrogate"),
        pytest.param(
            b'[{"kind":"log","run_id":"hostile","timestamp":1.0,"type":"\\udfff\\ud800"}]', id="reversed-surrogates"
        ),
        pytest.param(many_keys.encode(), id="100k-keys-envelope"),
        pytest.param(many_event_keys.encode(), id="100k-keys-event"),
        pytest.param(json.dumps(huge).encode(), id="huge-string-document"),
        pytest.param(
            json.dumps([{"kind": huge, "run_id": "hostile", "timestamp": 1.0}]).encode(), id="huge-string-kind"
        ),
        pytest.param(b'[{"kind":"metric","run_id":"hostile","timestamp":1.0,"values":{"a":NaN}}]', id="nan-literal"),
        pytest.param(
            b'[{"kind":"metric","run_id":"hostile","timestamp":NaN,"values":{"a":1}}]', id="nan-timestamp-literal"
        ),
        pytest.param(
            b'[{"kind":"metric","run_id":"hostile","timestamp":1e999,"values":{"a":1}}]',
            id="overflowing-float-timestamp",
        ),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"null", id="null"),
        pytest.param(b"\x00" * 1000, id="nul-bytes"),
        pytest.param(b"[" + b"{}," * 1000 + b"{}]", id="empty-objects"),
        pytest.param(b'{"events": [], "events": "x"}', id="duplicate-keys"),
    ]


@pytest.mark.parametrize("body", _hostile_corpus())
def test_hostile_bodies_are_4xx_and_store_nothing(server: Server, body: bytes) -> None:
    """Hostile JSON is refused with a 4xx JSON error (never 5xx), stores nothing, and the server stays healthy."""
    assert len(body) <= MAX_BODY
    before = server.counts()
    response = server.post(body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert response.json()["error"]["status"] == response.status_code
    assert server.counts() == before
    assert server.client.get("/api/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(metric("edge", {"a": 1.0}, step=2**63), id="step-2**63"),
        pytest.param(metric("edge", {"a": 1.0}, step=2**64 - 1), id="step-2**64-1"),
        pytest.param(metric("edge", {"a": 1.0}, step=-(2**63) - 1), id="step-below-int64"),
        pytest.param(metric("edge", {"a": 1.0}, timestamp=2**64 - 1), id="timestamp-2**64-1"),
        pytest.param(metric("edge", {"a": 1.0}, timestamp=-1e300), id="timestamp-minus-1e300"),
        pytest.param(log("edge", timestamp=1e300), id="log-timestamp-1e300"),
        pytest.param(
            {"kind": "heartbeat", "run_id": "edge", "timestamp": 1.0, "counters": {"total_steps": 2**63}},
            id="counter-2**63",
        ),
    ],
)
def test_out_of_range_numbers_never_break_the_store_or_reads(own_server: Server, event: dict[str, Any]) -> None:
    """A number the store cannot hold is refused with 4xx, or, if accepted, every read still answers without 5xx."""
    before = own_server.counts()
    try:
        response = own_server.post(json.dumps([event]), timeout=3)
    except httpx.TimeoutException:
        pytest.fail("the ingest request was never answered: the store cannot commit the accepted event")
    if 400 <= response.status_code < 500:
        assert own_server.counts() == before
        return
    assert response.status_code == 202, response.text
    for path in (
        "/api/runs",
        "/api/runs/edge",
        "/api/runs/edge/metrics",
        "/api/runs/edge/events",
        "/api/status",
        "/api/stats",
        "/api/metrics/summary",
        "/api/health",
    ):
        with httpx.Client(base_url=own_server.monitor.web_url, timeout=TIMEOUT) as fresh:
            read = fresh.get(path)
        if read.status_code >= 500:
            # Let the server finish logging its traceback before pytest formats ours: with
            # CPython 3.11.7 the two at once have raised "AST constructor recursion depth
            # mismatch" (see python/cpython gh-106905) and aborted the session.
            with httpx.Client(base_url=own_server.monitor.web_url, timeout=TIMEOUT) as fresh:
                fresh.get("/api/health")
        assert read.status_code < 500, (path, read.status_code, read.text[:200])
    health = own_server.client.get("/api/health").json()
    assert health["status"] == "ok", health


# -- /ws/ingest --------------------------------------------------------------------------------------


async def exchange(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    """Send one message and return the server's JSON answer."""
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    with anyio.fail_after(TIMEOUT):
        answer = json.loads(await ws.recv())
    assert isinstance(answer, dict)
    return answer


def test_a_producer_clock_far_ahead_cannot_stay_the_current_run_and_cleanup_ages_it_out(own_server: Server) -> None:
    """A run whose producer's clock is ten years ahead is dated by the server's commits: a run started
    later becomes the current one, and once both ended, cleanup removes it like any other run."""
    ahead = time.time() + 10 * 365 * 86_400
    started = {"kind": "lifecycle", "run_id": "ahead", "timestamp": ahead, "transition": "started"}
    heartbeat = {"kind": "heartbeat", "run_id": "ahead", "timestamp": ahead + 1}
    body = json.dumps([started, metric("ahead", {"loss": 1.0}, timestamp=ahead), heartbeat])
    assert own_server.post(body).status_code == 202
    monitor = own_server.monitor
    later = monitor.start_training(run_id="later")
    monitor.update_metrics({"loss": 0.5})
    assert monitor.flush(TIMEOUT)

    for route in ("/api/status", "/api/stats", "/api/state", "/api/events"):
        assert own_server.client.get(route).json()["run_id"] == later, route
    dated = monitor.db.get_run_summary("ahead")
    now = datetime.now(UTC)
    assert dated["start_time"] <= dated["updated_at"] <= dated["last_heartbeat"] <= now
    assert abs(monitor.db.get_run_metrics("ahead")["timestamp"][0].timestamp() - ahead) < 1e-3  # events keep theirs

    monitor.stop_training()
    ended = {"kind": "lifecycle", "run_id": "ahead", "timestamp": ahead + 2, "transition": "completed"}
    assert own_server.post(json.dumps([ended])).status_code == 202
    assert monitor.flush(TIMEOUT)
    assert monitor.db.get_run_summary("ahead")["end_time"] <= datetime.now(UTC)
    monitor.db.cleanup_old_data(datetime.now(UTC))
    assert own_server.client.get("/api/runs/ahead").status_code == 404
    assert own_server.client.get("/api/status").json()["run_id"] is None


async def test_ws_ingest_acks_with_the_accepted_count_once_committed(server: Server) -> None:
    """A batch sent on /ws/ingest is acknowledged with its accepted count, and is committed by then."""
    async with connect(server.ws_url + "/ws/ingest", open_timeout=TIMEOUT) as ws:
        ack = await exchange(ws, {"batch_id": "ws-1", "events": [log("ws-ing", n=1), log("ws-ing", n=2)]})
        assert ack == {"type": "ack", "batch_id": "ws-1", "accepted": 2, "duplicate": False}
        events = await anyio.to_thread.run_sync(lambda: server.client.get("/api/runs/ws-ing/events?kind=log").json())
        assert sorted(e["event_data"]["n"] for e in events["events"]) == [1, 2]


async def test_ws_ingest_duplicate_batch_is_acked_as_duplicate(server: Server) -> None:
    """A batch_id already stored (over HTTP or websocket) is acknowledged as a duplicate and stored once."""
    batch = {"batch_id": "ws-dup", "events": [log("ws-dup")]}
    async with connect(server.ws_url + "/ws/ingest", open_timeout=TIMEOUT) as ws:
        assert (await exchange(ws, batch))["accepted"] == 1
        again = await exchange(ws, batch)
        assert again == {"type": "ack", "batch_id": "ws-dup", "accepted": 0, "duplicate": True}
    posted = await anyio.to_thread.run_sync(lambda: server.post(json.dumps(batch)))
    assert posted.status_code == 200 and posted.json()["duplicate"] is True
    events = await anyio.to_thread.run_sync(lambda: server.client.get("/api/runs/ws-dup/events?kind=log").json())
    assert len(events["events"]) == 1


async def test_ws_ingest_invalid_message_is_an_error_and_the_socket_stays_usable(server: Server) -> None:
    """Malformed or invalid batches get an error message naming the field; the next valid batch is acked."""
    before = await anyio.to_thread.run_sync(server.counts)
    async with connect(server.ws_url + "/ws/ingest", open_timeout=TIMEOUT) as ws:
        error = await exchange(ws, "{{{ not json")
        assert error["type"] == "error" and "malformed JSON" in error["message"]
        error = await exchange(ws, {"batch_id": "ws-bad", "events": [log("ws-bad"), {"kind": "bogus"}]})
        assert error["type"] == "error"
        assert error["field"].startswith("events[1]")
        assert await anyio.to_thread.run_sync(server.counts) == before
        ack = await exchange(ws, {"batch_id": "ws-bad", "events": [log("ws-bad")]})
        assert ack == {"type": "ack", "batch_id": "ws-bad", "accepted": 1, "duplicate": False}


async def test_ws_ingest_error_names_the_batch(server: Server) -> None:
    """An error answer carries the batch_id of the refused batch, as docs/protocol.md shows."""
    async with connect(server.ws_url + "/ws/ingest", open_timeout=TIMEOUT) as ws:
        error = await exchange(ws, {"batch_id": "ws-named", "events": [{"kind": "bogus"}]})
        assert error["type"] == "error"
        assert error["batch_id"] == "ws-named"


# -- all or nothing; hostile nesting -------------------------------------------------------------------


def test_a_nul_in_one_metric_name_or_run_id_refuses_the_whole_batch(server: Server) -> None:
    """A batch of 4 with a NUL in one metric name and in one run id is a 422 naming the first (index and
    field); nothing of it is stored and its batch_id stays free for the corrected batch."""
    before = server.counts()
    events = [
        metric("ing-nul", {"a": 1.0}, step=0),
        metric("ing-nul", {"b\x00c": 1.0}, step=1),
        metric("ing\x00nul", {"a": 1.0}, step=2),
        metric("ing-nul", {"d": 1.0}, step=3),
    ]
    response = server.post(json.dumps({"batch_id": "nul-1", "events": events}))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "events[1].values.b\x00c"
    assert "NUL" in error["message"] and error["message"].startswith("events[1]")
    assert server.counts() == before
    events[1] = metric("ing-nul", {"b": 1.0}, step=1)
    events[2] = metric("ing-nul", {"a": 1.0}, step=2)
    retry = server.post(json.dumps({"batch_id": "nul-1", "events": events}))
    assert retry.status_code == 202 and retry.json()["accepted"] == 4
    assert server.client.get("/api/runs/ing-nul").json()["metrics"].keys() == {"a", "b", "d"}


def test_a_nul_run_id_in_the_first_event_is_422_and_leaves_the_batch_id_free(server: Server) -> None:
    """The first event's run id (which scopes the batch id) with a NUL is a 422 naming events[0].run_id;
    the corrected retry under the same batch_id is stored."""
    bad = server.post(json.dumps({"batch_id": "first-nul", "events": [metric("first\x00nul", {"a": 1.0})]}))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "events[0].run_id"
    good = server.post(json.dumps({"batch_id": "first-nul", "events": [metric("first-nul", {"a": 1.0})]}))
    assert good.status_code == 202 and good.json()["duplicate"] is False
    assert server.client.get("/api/runs/first-nul").status_code == 200


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON text of ``depth`` nested objects around ``leaf``."""
    return '{"a":' * depth + leaf + "}" * depth


def deep_arrays(depth: int) -> str:
    """A JSON text of ``depth`` nested arrays."""
    return "[" * depth + "]" * depth


def _deep_fields() -> list[Any]:
    """Event texts with one field nested deeply (objects or arrays), for every field of the wire kinds."""
    metric_text = (
        '{{"kind":"metric","run_id":{run_id},"timestamp":{timestamp},"values":{values},"step":{step},"tags":{tags}}}'
    )
    defaults = {"run_id": '"deep"', "timestamp": "1.0", "values": '{"a":1}', "step": "1", "tags": "null"}
    cases = []
    for field in ("run_id", "timestamp", "values", "step", "tags"):
        cases.append((f"metric.{field}", metric_text, defaults, field))
    log_text = '{{"kind":"log","run_id":"deep","timestamp":1.0,"type":{type},"level":{level},"data":{data}}}'
    for field in ("type", "level", "data"):
        cases.append((f"log.{field}", log_text, {"type": '"t"', "level": '"info"', "data": "{}"}, field))
    cases.append(("state.patch", '{{"kind":"state","run_id":"deep","timestamp":1.0,"patch":{patch}}}', {}, "patch"))
    cases.append(
        (
            "heartbeat.counters",
            '{{"kind":"heartbeat","run_id":"deep","timestamp":1.0,"counters":{counters}}}',
            {},
            "counters",
        )
    )
    lifecycle = (
        '{{"kind":"lifecycle","run_id":"deep","timestamp":1.0,"transition":{transition},'
        '"config":{config},"metadata":{metadata},"final_reward":{final_reward}}}'
    )
    lifecycle_defaults = {"transition": '"started"', "config": "null", "metadata": "null", "final_reward": "null"}
    for field in ("transition", "config", "metadata", "final_reward"):
        cases.append((f"lifecycle.{field}", lifecycle, lifecycle_defaults, field))
    exception = '{{"kind":"exception","run_id":"deep","timestamp":1.0,"error_type":{error_type},"message":{message}}}'
    for field in ("error_type", "message"):
        cases.append((f"exception.{field}", exception, {"error_type": '"E"', "message": '"m"'}, field))
    cases.append(("kind", '{{"kind":{kind},"run_id":"deep","timestamp":1.0}}', {}, "kind"))
    params = []
    for name, template, fields, field in cases:
        for depth in (990, 1020):
            for shape, text in (("objects", nested(depth)), ("arrays", deep_arrays(depth))):
                event = template.format(**{**fields, field: text})
                params.append(pytest.param(event, id=f"{name}-{shape}-{depth}"))
    return params


@pytest.mark.parametrize("event", _deep_fields())
def test_deep_nesting_in_any_field_is_4xx_with_a_short_message(server: Server, event: str) -> None:
    """990 to 1,024 levels in any field of any kind (bare or in an envelope) are refused with a 4xx whose
    message stays short (the value is never repr()'d whole), storing nothing; the server keeps answering."""
    before = server.counts()
    for body in (f"[{event}]", f'{{"batch_id":"deep","events":[{event}]}}'):
        response = server.post(body)
        assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
        assert len(response.text) < 2000, response.text[:300]
    assert server.counts() == before
    assert server.client.get("/api/health").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"batch_id":' + deep_arrays(990) + ',"events":[]}', id="batch-id"),
        pytest.param('{"events":' + deep_arrays(990) + "}", id="events"),
        pytest.param('{"events":[],' + '"' + "k" * 500_000 + '":1}', id="huge-unknown-key"),
        pytest.param(json.dumps([metric("x" * 500_000, {"a": 1.0})]), id="huge-run-id-accepted-or-refused"),
        pytest.param(json.dumps([metric("huge-name", {"\x00" + "n" * 500_000: 1.0})]), id="huge-nul-metric-name"),
    ],
)
def test_hostile_envelopes_and_huge_values_get_short_answers(server: Server, body: str) -> None:
    """Deep or huge values in the envelope (or a huge refused name) never give a 5xx or a huge message."""
    response = server.post(body)
    assert response.status_code < 500, response.text[:300]
    assert len(response.text) < 2000, len(response.text)


async def test_ws_ingest_answers_hostile_messages_with_errors_and_stays_open(server: Server) -> None:
    """/ws/ingest answers deep nesting in any field, a NUL first run id and a 1,024-deep document with an
    error message (never closes with 1006); the next valid batch on the same socket is acknowledged."""
    hostile = [param.values[0] for param in _deep_fields()[::7]]
    async with connect(server.ws_url + "/ws/ingest", open_timeout=TIMEOUT, max_size=2**22) as ws:
        for event in hostile:
            answer = await exchange(ws, f'{{"batch_id":"ws-deep","events":[{event}]}}')
            assert answer["type"] == "error" and answer["batch_id"] == "ws-deep", answer
            assert len(json.dumps(answer)) < 2000
        answer = await exchange(ws, deep_arrays(1024))
        assert answer["type"] == "error"
        answer = await exchange(ws, {"batch_id": "ws-nul", "events": [metric("ws\x00nul", {"a": 1.0})]})
        assert answer["type"] == "error" and answer["field"] == "events[0].run_id"
        ack = await exchange(ws, {"batch_id": "ws-nul", "events": [metric("ws-nul", {"a": 1.0})]})
        assert ack == {"type": "ack", "batch_id": "ws-nul", "accepted": 1, "duplicate": False}
