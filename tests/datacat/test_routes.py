"""datacat's routes on `runwatch serve`: health, create, routing, Content-Type, gzip and the bearer key,
answered as datacat's server answers them (docs/datacat.md; spec sections 1.0-1.3, 1.10, 1.11, 5.4)."""

from __future__ import annotations

import gzip

import pytest

from ._harness import UUID, Serve, assert_ok, assert_text_error, go_epoch, gzipped
from .conftest import API_KEY

HEALTH = b'{"service":"datacat-server","status":"healthy","version":"1.0.0"}\n'


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "PUT"])
def test_health_answers_datacats_body_for_any_method(serve: Serve, method: str) -> None:
    """/health answers 200 with datacat's exact body (keys service, status, version) whatever the method."""
    answer = serve.send(method, "/health")

    assert (answer.status, answer.headers["content-type"]) == (200, "application/json")
    assert answer.body == (b"" if method == "HEAD" else HEALTH)


def test_create_answers_200_with_only_the_session_id(serve: Serve) -> None:
    """POST /api/sessions answers 200 {"session_id"} and nothing else, so Go decodes it as map[string]string."""
    answer = serve.post("/api/sessions", {"hostname": "vm", "machine_id": "m-a", "product": "PyApp", "version": "2.0"})

    assert (answer.status, answer.headers["content-type"]) == (200, "application/json")
    document = answer.json()
    assert list(document) == ["session_id"] and UUID.fullmatch(document["session_id"])
    assert answer.body == b'{"session_id":"' + document["session_id"].encode() + b'"}\n'


def test_a_new_session_has_product_and_version_in_its_state_and_no_history(serve: Serve) -> None:
    """A new session is active, its state {product, version}, no history entry, no events or metrics."""
    session_id = serve.create("Editor", "3.1", hostname="box", machine_id="m-new")

    session = serve.session(session_id)

    assert session["id"] == session_id
    assert (session["active"], session["suspended"], session["crashed"], session["hung"]) == (True, False, False, False)
    assert "ended_at" not in session and "last_heartbeat" not in session
    assert (session["machine_id"], session["hostname"]) == ("m-new", "box")
    assert session["state"] == {"product": "Editor", "version": "3.1"}
    assert (session["state_history"], session["events"], session["metrics"]) == ([], [], [])
    assert go_epoch(session["updated_at"]) >= go_epoch(session["created_at"])


def test_every_create_makes_a_new_session(serve: Serve) -> None:
    """Create is not idempotent: the same body twice makes two sessions."""
    assert serve.create("Twice", "1") != serve.create("Twice", "1")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"product":"P"}', id="no-version"),
        pytest.param(b'{"version":"1"}', id="no-product"),
        pytest.param(b'{"product":"","version":"1"}', id="empty-product"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"{nope", id="invalid-json"),
        pytest.param(b'[{"product":"P","version":"1"}]', id="array"),
        pytest.param(b'{"product":5,"version":"1"}', id="number-product"),
    ],
)
def test_create_without_product_or_version_is_400(serve: Serve, raw: bytes) -> None:
    """A create without a non-empty product and version is 400 "Product and version are required fields"."""
    assert_text_error(serve.post("/api/sessions", raw=raw), 400, "Product and version are required fields")


def test_create_keys_match_in_any_case_and_decode_errors_are_ignored(serve: Serve) -> None:
    """Keys match case-insensitively and a wrongly typed machine_id is dropped, not refused (as Go decodes)."""
    answer = serve.post("/api/sessions", raw=b'{"Product":"P","VERSION":"2","machine_id":5,"colour":"red"} junk')

    assert answer.status == 200, answer
    session = serve.session(answer.json()["session_id"])
    assert session["state"] == {"product": "P", "version": "2"}
    assert "machine_id" not in session


def test_any_content_type_or_none_is_taken(serve: Serve) -> None:
    """The server never reads the Content-Type: form-encoded (curl -d), text/plain or none all work."""
    session_id = serve.create()
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}):
        assert_ok(serve.send("POST", f"/api/sessions/{session_id}/events", b'{"name":"typed"}', headers))
    created = serve.send("POST", "/api/sessions", b'{"product":"P","version":"1"}', {})
    assert created.status == 200, created


@pytest.mark.parametrize(
    ("method", "path", "status", "text"),
    [
        pytest.param("GET", "/api/sessions/nope", 404, "Session not found", id="get-unknown"),
        pytest.param("POST", "/api/sessions/", 400, "Session ID required", id="empty-id"),
        pytest.param("GET", "/api/sessions/", 400, "Session ID required", id="get-empty-id"),
        pytest.param("POST", "/api/sessions//state", 400, "Session ID required", id="empty-id-with-operation"),
        pytest.param("GET", "/api/sessions/nope/events", 404, "Not found", id="get-an-operation"),
        pytest.param("POST", "/api/sessions/nope", 404, "Not found", id="post-no-operation"),
        pytest.param("PUT", "/api/sessions/nope/state", 404, "Not found", id="put-state"),
        pytest.param("POST", "/api/sessions/nope/end/", 404, "Not found", id="end-slash"),
        pytest.param("POST", "/api/sessions/nope/launch", 404, "Not found", id="unknown-operation"),
        pytest.param("HEAD", "/api/sessions/nope", 404, "", id="head-session"),
        pytest.param("PUT", "/api/sessions", 405, "Method not allowed", id="put-sessions"),
        pytest.param("DELETE", "/api/sessions", 405, "Method not allowed", id="delete-sessions"),
        pytest.param("PUT", "/api/data/sessions", 405, "Method not allowed", id="put-all-sessions"),
        pytest.param("POST", "/api/data/sessions", 405, "Method not allowed", id="post-all-sessions"),
        pytest.param("GET", "/api/data/sessions/", 404, "404 page not found", id="all-sessions-slash"),
        pytest.param("GET", "/api/data/sessions/x", 404, "404 page not found", id="below-all-sessions"),
    ],
)
def test_routing_answers_datacats_texts(serve: Serve, method: str, path: str, status: int, text: str) -> None:
    """What a client could send by mistake answers datacat's status and text (spec table 1.11)."""
    answer = serve.send(method, path, b"" if method in ("POST", "PUT") else None)

    if method == "HEAD":
        assert answer.status == status and answer.body == b""
    else:
        assert_text_error(answer, status, text)


@pytest.mark.parametrize("operation", ["state", "end", "crash", "heartbeat", "events", "metrics"])
def test_a_write_to_an_unknown_session_is_404_session_not_found(serve: Serve, operation: str) -> None:
    """A well-formed write to an unknown session is 404 "session not found" (lowercase s)."""
    body = {"state": {"a": 1}, "events": {"name": "e"}, "metrics": {"name": "m", "value": 1}}.get(operation, {})

    assert_text_error(serve.post(f"/api/sessions/nope/{operation}", body), 404, "session not found")


@pytest.mark.parametrize("operation", ["state", "events", "metrics"])
def test_the_body_is_read_before_the_session_is_looked_up(serve: Serve, operation: str) -> None:
    """An empty body on an unknown session is 400 "Invalid request body", not 404."""
    assert_text_error(serve.post(f"/api/sessions/nope/{operation}", raw=b""), 400, "Invalid request body")


def test_a_training_run_is_not_a_datacat_session(serve: Serve) -> None:
    """A run that is not a session is unknown to datacat's routes."""
    answer = serve.post("/api/ingest", [{"kind": "lifecycle", "run_id": "train-dc", "transition": "started"}])
    assert answer.status == 202, answer

    assert_text_error(serve.get("/api/sessions/train-dc"), 404, "Session not found")
    assert_text_error(serve.post("/api/sessions/train-dc/heartbeat", {}), 404, "session not found")
    assert "train-dc" not in {session["id"] for session in serve.all_sessions()}


# -- gzip --------------------------------------------------------------------------------------------


def test_gzip_bodies_are_decompressed_on_every_route(serve: Serve) -> None:
    """Content-Encoding: gzip bodies are read (create, state, events, metrics, crash; multi-member too)."""
    created = serve.post(
        "/api/sessions", raw=gzipped({"product": "Z", "version": "9", "machine_id": "m-gz"}), content_encoding="gzip"
    )
    assert created.status == 200, created
    session_id = created.json()["session_id"]
    path = f"/api/sessions/{session_id}"
    two_members = gzip.compress(b'{"state":{"a":') + gzip.compress(b'{"b":1}}}')

    assert_ok(serve.post(f"{path}/state", raw=two_members, content_encoding="gzip"))
    assert_ok(serve.post(f"{path}/events", raw=gzipped({"name": "zipped"}), content_encoding="gzip"))
    assert_ok(serve.post(f"{path}/metrics", raw=gzipped({"name": "m", "value": 2}), content_encoding="gzip"))
    assert_ok(serve.post(f"{path}/heartbeat", raw=gzipped({}), content_encoding="gzip"))
    assert_ok(serve.post(f"{path}/crash", raw=gzipped({"reason": "zip"}), content_encoding="gzip"))

    session = serve.session(session_id)
    assert session["state"] == {"a": {"b": 1}, "product": "Z", "version": "9"}
    assert [(e["name"], e["data"]) for e in session["events"]] == [
        ("zipped", None),
        ("session_crashed_detected", {"reason": "zip"}),
    ]
    assert [(m["name"], m["value"]) for m in session["metrics"]] == [("m", 2)]


@pytest.mark.parametrize("path", ["/api/sessions", "/api/sessions/nope/end", "/api/sessions/nope/heartbeat"])
@pytest.mark.parametrize("raw", [pytest.param(b"", id="empty"), pytest.param(b'{"not":"gzip"}', id="plain")])
def test_an_unreadable_gzip_header_is_400_before_routing(serve: Serve, path: str, raw: bytes) -> None:
    """A gzip body whose header cannot be read is 400 "Failed to decompress request", even where the body is
    never read and even for an unknown session."""
    assert_text_error(serve.post(path, raw=raw, content_encoding="gzip"), 400, "Failed to decompress request")


def test_only_the_exact_gzip_encoding_is_decompressed(serve: Serve) -> None:
    """Content-Encoding: GZIP is not decompressed: the gzip bytes are then the route's bad body."""
    answer = serve.post("/api/sessions", raw=gzipped({"product": "P", "version": "1"}), content_encoding="GZIP")

    assert_text_error(answer, 400, "Product and version are required fields")


# -- the bearer key ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        pytest.param("POST", "/api/sessions", {}, id="no-header"),
        pytest.param("POST", "/api/sessions", {"Authorization": "Bearer wrong-key"}, id="wrong-key"),
        pytest.param("GET", "/api/data/sessions", {}, id="read"),
        pytest.param("POST", "/api/sessions/x/end", {}, id="end"),
    ],
)
def test_without_the_key_datacats_routes_answer_401_unauthorized(
    keyed_serve: Serve, method: str, path: str, headers: dict[str, str]
) -> None:
    """A server that requires a key answers 401 "Unauthorized" (text) to requests without it."""
    body = b'{"product":"P","version":"1"}' if method == "POST" else None

    assert_text_error(keyed_serve.send(method, path, body, headers), 401, "Unauthorized")


def test_with_the_key_everything_works_and_health_needs_none(keyed_serve: Serve) -> None:
    """Authorization: Bearer <key> opens every route (a gzipped create too); /health needs no key."""
    key = {"Authorization": f"Bearer {API_KEY}"}
    assert keyed_serve.send("POST", "/health").status == 200
    created = keyed_serve.send(
        "POST", "/api/sessions", gzipped({"product": "P", "version": "1"}), {**key, "Content-Encoding": "gzip"}
    )
    assert created.status == 200, created
    session_id = created.json()["session_id"]
    assert_ok(keyed_serve.send("POST", f"/api/sessions/{session_id}/heartbeat", b"{}", key))
    read = keyed_serve.send("GET", f"/api/sessions/{session_id}", None, key)
    assert read.status == 200 and read.json()["id"] == session_id
