"""An in-test double of datacat's server (OriginalDaemon/datacat at 77ab370), on a loopback port.

It answers as datacat's HTTP handlers do (the contract in docs/datacat.md): ``/health``;
``POST /api/sessions`` answering ``200 {"session_id"}`` and requiring ``product`` and
``version``; the session writes (state in its wrapped and plain forms, events, metrics,
heartbeat, end, crash) answering ``{"status":"ok"}``; the reads ``GET /api/sessions/{id}``
and ``GET /api/data/sessions``; plain-text errors; case-insensitive keys, unknown keys
ignored, any Content-Type, gzip bodies; no ``/batch`` (``404 Not found``) and no 409.
Liveness flags are computed at read time from ``heartbeat_timeout_seconds``.

The client's tests run against it for what runwatch's server does not serve yet; the
same tests are meant to run against ``runwatch serve`` once it serves datacat's routes.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT = 20.0
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_OPERATIONS = ("state", "events", "metrics", "heartbeat", "end", "crash")


class _BadBody(Exception):
    """A body Go's decoder would refuse."""


@dataclass
class Recorded:
    """One request as the stub received it (``document`` is the decoded JSON, or ``None``)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    document: Any


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}".rstrip("0") + "Z"


def _lower_keys(document: Any) -> dict[str, Any]:
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise _BadBody("not an object")
    return {key.lower(): value for key, value in document.items()}


def _string(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _BadBody(key)
    return value


def _timestamp(fields: dict[str, Any]) -> str | None:
    value = fields.get("timestamp")
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise _BadBody("timestamp")
    return value


def _strings(fields: dict[str, Any], key: str) -> list[str] | None:
    value = fields.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _BadBody(key)
    return value


def _integer(fields: dict[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadBody(key)
    return value


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """datacat's deep merge (§4.1): null deletes, objects merge into objects, anything else is set as is."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = json.loads(json.dumps(value))


class DatacatStub:
    """datacat's server, in memory, on ``127.0.0.1`` (a free port).

    Attributes:
        requests: every request received, in order.
        sessions: the stored sessions by id (internal records).
        gate: when set to an Event, session writes wait on it.
    """

    def __init__(self, heartbeat_timeout_seconds: float = 60.0) -> None:
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds
        self.requests: list[Recorded] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.lock = threading.Condition()
        self.gate: threading.Event | None = None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                stub._serve(self, self.rfile.read(length))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(TIMEOUT)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait (bounded) until ``predicate`` holds after some request."""
        with self.lock:
            assert self.lock.wait_for(predicate, timeout), "timed out waiting for the datacat stub"

    def posted(self, suffix: str) -> list[Recorded]:
        """The POST requests whose path ends with ``suffix``, in order."""
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith(suffix)]

    def document(self, session_id: str) -> dict[str, Any]:
        """The session document as ``GET /api/sessions/{id}`` answers it."""
        with self.lock:
            return json.loads(json.dumps(self._document(self.sessions[session_id])))

    # -- HTTP --------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        method, path = handler.command, handler.path.split("?", 1)[0]
        body = raw
        if handler.headers.get("Content-Encoding") == "gzip":
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError):
                self._reply(handler, 400, "Failed to decompress request")
                return
        try:
            document = json.loads(body) if body else None
        except ValueError:
            document = None
        recorded = Recorded(method, path, dict(handler.headers.items()), body, document)
        if self.gate is not None and path.startswith("/api/sessions/") and method == "POST":
            assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        with self.lock:
            self.requests.append(recorded)
            status, answer = self._route(method, path, body)
            self.lock.notify_all()
        self._reply(handler, status, answer)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, answer: Any) -> None:
        if isinstance(answer, str):  # datacat's errors: http.Error, text with a newline
            payload, kind = (answer + "\n").encode(), "text/plain; charset=utf-8"
        else:
            payload, kind = (json.dumps(answer, separators=(",", ":")) + "\n").encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(payload)))
        if isinstance(answer, str):
            handler.send_header("X-Content-Type-Options", "nosniff")
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/health":
            return 200, {"service": "datacat-server", "status": "healthy", "version": "1.0.0"}
        if path == "/api/sessions":
            return self._create(body) if method == "POST" else (405, "Method not allowed")
        if path == "/api/data/sessions":
            if method != "GET":
                return 405, "Method not allowed"
            return 200, [self._document(session) for session in self.sessions.values()]
        if not path.startswith("/api/sessions/"):
            return 404, "404 page not found"
        session_id, _, operation = path[len("/api/sessions/") :].partition("/")
        if not session_id:
            return 400, "Session ID required"
        if operation == "" and method == "GET":
            session = self.sessions.get(session_id)
            return (200, self._document(session)) if session is not None else (404, "Session not found")
        if method != "POST" or operation not in _OPERATIONS:
            return 404, "Not found"
        return getattr(self, f"_{operation}")(session_id, body)

    # -- writes (checks in datacat's order: the body, then the session) ------------------

    def _create(self, body: bytes) -> tuple[int, Any]:
        try:
            fields = _lower_keys(json.JSONDecoder().raw_decode(body.decode())[0])
        except (ValueError, _BadBody):
            fields = {}
        product, version = fields.get("product"), fields.get("version")
        if not isinstance(product, str) or not product or not isinstance(version, str) or not version:
            return 400, "Product and version are required fields"
        session_id = str(uuid.uuid4())
        now = _now()
        self.sessions[session_id] = {
            "id": session_id,
            "created_at": now,
            "updated_at": now,
            "ended_at": None,
            "last_heartbeat": None,
            "last_heartbeat_monotonic": None,
            "crashed": False,
            "hung": False,
            "machine_id": fields.get("machine_id") if isinstance(fields.get("machine_id"), str) else "",
            "hostname": fields.get("hostname") if isinstance(fields.get("hostname"), str) else "",
            "state": {"product": product, "version": version},
            "state_history": [],
            "events": [],
            "metrics": [],
        }
        return 200, {"session_id": session_id}

    def _session(self, session_id: str) -> dict[str, Any] | None:
        session = self.sessions.get(session_id)
        if session is not None:
            session["updated_at"] = _now()
        return session

    def _state(self, session_id: str, body: bytes) -> tuple[int, Any]:
        try:
            document = json.loads(body)
            fields = _lower_keys(document)
            when = _timestamp(fields)
            wrapped = fields.get("state")
            if wrapped is not None and not isinstance(wrapped, dict):
                raise _BadBody("state")
        except (ValueError, _BadBody):
            return 400, "Invalid request body"
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        _merge(session["state"], wrapped if wrapped is not None else (document or {}))
        session["state_history"].append(
            {"timestamp": when or _now(), "state": json.loads(json.dumps(session["state"]))}
        )
        return 200, {"status": "ok"}

    def _events(self, session_id: str, body: bytes) -> tuple[int, Any]:
        try:
            fields = _lower_keys(json.loads(body))
            event: dict[str, Any] = {
                "timestamp": _timestamp(fields) or _now(),
                "name": _string(fields, "name"),
                "category": _string(fields, "category") or "info",
                "group": _string(fields, "group"),
                "labels": _strings(fields, "labels"),
                "message": _string(fields, "message"),
                "data": fields.get("data"),
            }
            if event["data"] is not None and not isinstance(event["data"], dict):
                raise _BadBody("data")
            optional = {
                "stacktrace": _strings(fields, "stacktrace"),
                "exception_type": _string(fields, "exception_type"),
                "exception_msg": _string(fields, "exception_msg"),
                "source_file": _string(fields, "source_file"),
                "source_line": _integer(fields, "source_line"),
                "source_function": _string(fields, "source_function"),
            }
        except (ValueError, _BadBody):
            return 400, "Invalid request body"
        event.update({key: value for key, value in optional.items() if value})
        if event.get("exception_type") and event["category"] == "info":
            event["category"] = "error"
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        session["events"].append(event)
        if event["name"] == "application_appears_hung":
            session["hung"] = True
        elif event["name"] == "application_recovered":
            session["hung"] = False
        return 200, {"status": "ok"}

    def _metrics(self, session_id: str, body: bytes) -> tuple[int, Any]:
        try:
            fields = _lower_keys(json.JSONDecoder().raw_decode(body.decode())[0])
            value = fields.get("value")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise _BadBody("value")
            metric: dict[str, Any] = {
                "timestamp": _timestamp(fields) or _now(),
                "name": _string(fields, "name"),
                "type": _string(fields, "type") or "gauge",
                "value": value or 0,
            }
            count = _integer(fields, "count")
            unit, tags, metadata = _string(fields, "unit"), _strings(fields, "tags"), fields.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise _BadBody("metadata")
        except (ValueError, _BadBody):
            return 400, "Invalid request body"
        if "count" in fields and count is not None:
            metric["count"] = count
        metric.update({key: item for key, item in (("unit", unit), ("tags", tags), ("metadata", metadata)) if item})
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        session["metrics"].append(metric)
        return 200, {"status": "ok"}

    def _heartbeat(self, session_id: str, body: bytes) -> tuple[int, Any]:
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        session["last_heartbeat"] = session["updated_at"]
        session["last_heartbeat_monotonic"] = time.monotonic()
        return 200, {"status": "ok"}

    def _end(self, session_id: str, body: bytes) -> tuple[int, Any]:
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        session["ended_at"] = session["updated_at"]
        return 200, {"status": "ok"}

    def _crash(self, session_id: str, body: bytes) -> tuple[int, Any]:
        try:
            reason = _string(_lower_keys(json.JSONDecoder().raw_decode(body.decode())[0]), "reason")
        except (ValueError, _BadBody):
            reason = "abnormal_termination"
        session = self._session(session_id)
        if session is None:
            return 404, "session not found"
        session.update(ended_at=session["updated_at"], crashed=True, hung=False)
        event = {"timestamp": _now(), "name": "session_crashed_detected", "category": "critical", "group": ""}
        session["events"].append({**event, "labels": None, "message": "", "data": {"reason": reason}})
        return 200, {"status": "ok"}

    # -- reads -------------------------------------------------------------------------

    def _document(self, session: dict[str, Any]) -> dict[str, Any]:
        """The §2 document, liveness computed now (§3.1)."""
        active, suspended = True, False
        if session["crashed"]:
            active = False
        elif session["ended_at"] is not None:
            active = False
        elif session["last_heartbeat_monotonic"] is not None:
            silent = time.monotonic() - session["last_heartbeat_monotonic"]
            active, suspended = silent <= self.heartbeat_timeout_seconds, silent > self.heartbeat_timeout_seconds
        document: dict[str, Any] = {"id": session["id"], "created_at": session["created_at"]}
        document["updated_at"] = session["updated_at"]
        for key in ("ended_at", "last_heartbeat"):
            if session[key] is not None:
                document[key] = session[key]
        document.update(active=active, suspended=suspended, crashed=session["crashed"], hung=session["hung"])
        for key in ("machine_id", "hostname"):
            if session[key]:
                document[key] = session[key]
        for key in ("state", "state_history", "events", "metrics"):
            document[key] = session[key]
        return document
