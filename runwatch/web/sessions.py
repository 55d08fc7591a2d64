"""REST routes of application sessions (see docs/sessions.md).

Each write follows one path: parse and validate the body completely (pure
functions below, errors name the field), check the session (404 unknown,
409 ended), hand the events to the pipeline's ``ingest`` source and answer
once they are committed, so an acknowledged write is stored (the websocket
subscribers get it from the live hub, which no write waits for). A ``/batch``
``batch_id`` is scoped to its session: a retry is answered as a duplicate
once the original is stored (waiting for it while it is in flight), and the
same id with other operations is a 409. Reads run store queries on worker
threads.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import orjson
from fastapi import APIRouter, Query, Request

from .._payload import copy_payload
from ..events import (
    LEVELS,
    MAX_TIMESTAMP,
    Event,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    check_storable,
    json_number,
    shown,
)
from ..exceptions import UnknownRunError
from ..sessions import (
    RUN_STATUSES_OF,
    SESSION_KIND,
    decode_metric_value,
    decode_session_tags,
    encode_session_tags,
    session_metadata,
    session_status,
)
from ..sources.ingest import content_digest
from ..store import queries
from .api import CURSOR_SCHEMA, check_batch_id, loads_json, read
from .app import ApiError, JSONResponse, error_responses, iso, web_context

__all__ = [
    "batch_events",
    "parse_create_body",
    "parse_document",
    "router",
]

router = APIRouter(tags=["sessions"])

_CURSOR: Final = re.compile(r"[0-9]{1,18}")
_OPERATIONS: Final = ("state", "event", "metric", "heartbeat", "end")
_SESSION_STATUSES: Final = tuple(RUN_STATUSES_OF)
#: Run statuses after which a session takes no more writes.
_ENDED: Final = frozenset(RUN_STATUSES_OF["ended"])


# -- parsing and validation (pure) ---------------------------------------------------------


def parse_document(body: bytes, *, empty: Any = None) -> Any:
    """The JSON document of a request body; an empty body is ``empty`` (when allowed).

    Raises:
        ApiError: 400 for malformed JSON or a missing body.
    """
    if not body.strip():
        if empty is None:
            raise ApiError(400, "a JSON body is required")
        return empty
    try:
        return loads_json(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


def _object(document: Any, field: str | None, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise ApiError(422, f"{what} must be a JSON object, got {_json_type(document)}", field)
    return document


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _no_unknown(document: Mapping[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
    for key in document:
        if key not in known:
            field = (prefix + key)[:200]
            raise ApiError(422, f"unknown field {shown(prefix + key)} (known: {', '.join(known)})", field)


def _optional_text(document: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    value = document.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 1000):
        raise ApiError(422, f"{prefix + key} must be a string of at most 1000 characters or null", prefix + key)
    return value


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10 * 365 * 86_400:
        raise ApiError(422, f"{field} must be a positive number of seconds", field)
    return float(value)


_CREATE_FIELDS: Final = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")


def parse_create_body(document: Any) -> dict[str, Any]:
    """The ``runs.metadata`` of a new session from a ``POST /api/sessions`` body.

    Raises:
        ApiError: 422 naming the first bad field.
    """
    document = _object(document, None, "the body")
    _no_unknown(document, _CREATE_FIELDS)
    metadata = document.get("metadata")
    if metadata is not None:
        _object(metadata, "metadata", "metadata")
        try:  # as the session's lifecycle event will check it, one level down in the run's metadata
            metadata = copy_payload("metadata", metadata, depth=1)
        except (TypeError, ValueError) as exc:
            raise ApiError(422, str(exc), "metadata") from None
    timeout = document.get("heartbeat_timeout_seconds")
    return session_metadata(
        product=_optional_text(document, "product"),
        version=_optional_text(document, "version"),
        hostname=_optional_text(document, "hostname"),
        metadata=metadata,
        heartbeat_timeout_seconds=None if timeout is None else _seconds(timeout, "heartbeat_timeout_seconds"),
    )


def _timestamp(document: Mapping[str, Any], now: float, prefix: str) -> float:
    value = document.get("timestamp")
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TIMESTAMP:
        raise ApiError(422, f"{prefix}timestamp must be seconds since the epoch", prefix + "timestamp")
    return float(value)


def _build(fn: Callable[[], Event], field: str) -> Event:
    """Run an event constructor; its TypeError/ValueError (a payload too deep, an
    integer beyond 64 bits) becomes a 422 naming ``field`` (the message names the path)."""
    try:
        return fn()
    except (TypeError, ValueError) as exc:
        raise ApiError(422, f"{field}: {exc}", field) from None


def state_event(session_id: str, patch: Any, now: float, field: str = "state") -> StatePatch:
    """A state patch (objects merge, lists and scalars replace, ``null`` deletes)."""
    patch = _object(patch, field, field)
    event = _build(lambda: StatePatch(session_id, now, patch), field)
    assert isinstance(event, StatePatch)
    return event


def _check_name(name: object, prefix: str) -> str:
    """An event or metric name: 1 to 200 characters the store can keep (no NUL, no lone surrogate)."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ApiError(422, f"{prefix}name must be a non-empty string of at most 200 characters", prefix + "name")
    try:
        check_storable(prefix + "name", name)
    except ValueError as exc:
        raise ApiError(422, str(exc), prefix + "name") from None
    return name


def log_event(session_id: str, document: Mapping[str, Any], now: float, prefix: str = "") -> LogEvent:
    """A session event from ``{"name", "data", "level"}``."""
    name = _check_name(document.get("name"), prefix)
    data = document.get("data")
    if data is not None:
        _object(data, prefix + "data", prefix + "data")
    level = document.get("level", "info")
    if level not in LEVELS:
        raise ApiError(422, f"{prefix}level must be one of {', '.join(LEVELS)}", prefix + "level")
    event = _build(lambda: LogEvent(session_id, now, name, level, data), prefix + "data")
    assert isinstance(event, LogEvent)
    return event


def metric_event(session_id: str, document: Mapping[str, Any], now: float, prefix: str = "") -> Metric:
    """A session metric from ``{"name", "value", "tags"}`` (tags kept as given)."""
    name = _check_name(document.get("name"), prefix)
    value = document.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ApiError(422, f"{prefix}value must be a finite number", prefix + "value")
    tags = document.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ApiError(422, f"{prefix}tags must be an array of strings", prefix + "tags")
    return Metric(session_id, now, {name: float(value)}, tags=encode_session_tags(tags))


def batch_events(session_id: str, document: Any, now: float, max_operations: int) -> tuple[list[Event], str | None]:
    """Validate a ``/batch`` body completely and build its events (nothing is applied otherwise).

    Returns:
        The events in order, and the batch id (``None`` when not given).

    Raises:
        ApiError: 413 for too many operations; 422 naming the first bad
            field (``operations[3].value``); 409 for an operation after ``end``.
    """
    document = _object(document, None, "the body")
    _no_unknown(document, ("batch_id", "operations"))
    batch_id = check_batch_id(document.get("batch_id"))
    operations = document.get("operations")
    if not isinstance(operations, list):
        raise ApiError(422, "operations must be an array", "operations")
    if len(operations) > max_operations:
        raise ApiError(413, f"at most {max_operations} operations per batch, got {len(operations)}", "operations")
    events: list[Event] = []
    ended = False
    for index, operation in enumerate(operations):
        prefix = f"operations[{index}]."
        operation = _object(operation, f"operations[{index}]", f"operations[{index}]")
        op = operation.get("op")
        if op not in _OPERATIONS:
            raise ApiError(422, f"{prefix}op must be one of {', '.join(_OPERATIONS)}", prefix + "op")
        if ended:
            raise ApiError(409, f"{prefix}op: no operation may follow end", prefix + "op")
        ts = _timestamp(operation, now, prefix)
        if op == "state":
            _no_unknown(operation, ("op", "state", "timestamp"), prefix)
            events.append(state_event(session_id, operation.get("state"), ts, prefix + "state"))
        elif op == "event":
            _no_unknown(operation, ("op", "name", "data", "level", "timestamp"), prefix)
            events.append(log_event(session_id, operation, ts, prefix))
        elif op == "metric":
            _no_unknown(operation, ("op", "name", "value", "tags", "timestamp"), prefix)
            events.append(metric_event(session_id, operation, ts, prefix))
        elif op == "heartbeat":
            _no_unknown(operation, ("op", "timestamp"), prefix)
            events.append(Heartbeat(session_id, ts))
        else:
            _no_unknown(operation, ("op", "timestamp"), prefix)
            events.append(RunLifecycle(session_id, ts, RunTransition.COMPLETED))
            ended = True
    return events, batch_id


# -- store reads (blocking; run on worker threads) -----------------------------------------------

_RUN_COLUMNS = "id, run_id, status, start_time, end_time, updated_at, last_heartbeat, metadata, state"


def _session_row(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? AND kind = ?", (session_id, SESSION_KIND))
    found = row.fetchone()
    if found is None:
        raise UnknownRunError(session_id)
    return tuple(found)


def _session(row: tuple[Any, ...]) -> dict[str, Any]:
    _, run_id, status, start, end, updated, heartbeat, metadata_text, state = row
    metadata = orjson.loads(metadata_text) if metadata_text else {}
    if not isinstance(metadata, dict):
        metadata = {}
    own = metadata.get("metadata")
    shown = session_status(status)
    return {
        "id": run_id,
        "created_at": iso(start),
        "updated_at": iso(updated),
        "ended_at": iso(end) if shown == "ended" else None,
        "active": shown in ("active", "hung"),
        "status": shown,
        "state": orjson.loads(state) if state else {},
        "last_heartbeat": iso(heartbeat),
        "hostname": metadata.get("hostname"),
        "product": metadata.get("product"),
        "version": metadata.get("version"),
        "heartbeat_timeout_seconds": metadata.get("heartbeat_timeout_seconds"),
        "metadata": own if isinstance(own, dict) else {},
    }


def read_session(
    conn: sqlite3.Connection,
    session_id: str,
    events_limit: int,
    events_before: int | None,
    metrics_limit: int,
    metrics_before: int | None,
    history_limit: int = 100,
    history_before: int | None = None,
) -> dict[str, Any]:
    """One session with a page of its events and one of its metrics, newest first, and a page of its
    state patches (the newest ``history_limit`` before ``history_before``, oldest first).

    The work is bounded by the pages: the session's state is read from its run
    row (merged as each patch was stored), never rebuilt from its patches.

    Raises:
        UnknownRunError: no session has this id.
    """
    conn.execute("BEGIN")  # one snapshot for the row and its pages
    try:
        row = _session_row(conn, session_id)
        run = row[0]
        history = queries.state_history(conn, session_id, history_limit + 1, before_id=history_before)
        sql = "SELECT id, ts, type, level, data FROM events WHERE run = ? AND kind = 'log'"
        params: list[Any] = [run]
        if events_before is not None:
            sql += " AND id < ?"
            params.append(events_before)
        events = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, events_limit + 1)).fetchall()
        sql = (
            "SELECT m.row, m.ts, k.names, m.vals, m.tags FROM metric_rows m"
            " JOIN metric_keysets k ON k.id = m.keyset WHERE m.run = ?"
        )
        params = [run]
        if metrics_before is not None:
            sql += " AND m.row < ?"
            params.append(metrics_before)
        metrics = conn.execute(sql + " ORDER BY m.row DESC LIMIT ?", (*params, metrics_limit + 1)).fetchall()
    finally:
        conn.execute("COMMIT")
    session = _session(row)
    patches = history[-history_limit:]  # oldest first: the one beyond the page is the first
    session["state_history"] = [{"timestamp": iso(entry["timestamp"]), "patch": entry["patch"]} for entry in patches]
    session["state_history_next_cursor"] = str(patches[0]["id"]) if len(history) > history_limit else None
    page = events[:events_limit]
    session["events"] = [
        {"timestamp": iso(ts), "name": name, "level": level, "data": orjson.loads(data)}
        for _, ts, name, level, data in page
    ]
    session["events_next_cursor"] = str(page[-1][0]) if len(events) > events_limit else None
    rows = metrics[:metrics_limit]
    entries = []
    for _, ts, names, vals, tags in rows:
        tag_list, _ = decode_session_tags(tags)
        for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False):
            entries.append(
                {"timestamp": iso(ts), "name": name, "value": json_number(decode_metric_value(value)), "tags": tag_list}
            )
    session["metrics"] = entries
    session["metrics_next_cursor"] = str(rows[-1][0]) if len(metrics) > metrics_limit else None
    return session


def list_sessions(
    conn: sqlite3.Connection,
    *,
    active: bool | None,
    status: str | None,
    product: str | None,
    limit: int,
    before: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Sessions, newest first, without their events, metrics and state history; and the next page's cursor."""
    where = ["kind = ?"]
    params: list[Any] = [SESSION_KIND]
    if active is not None:
        statuses = (*RUN_STATUSES_OF["active"], *RUN_STATUSES_OF["hung"])
        where.append(f"status {'' if active else 'NOT '}IN (SELECT value FROM json_each(?))")
        params.append(orjson.dumps(statuses).decode())
    if status is not None:
        where.append("status IN (SELECT value FROM json_each(?))")
        params.append(orjson.dumps(RUN_STATUSES_OF[status]).decode())
    if product is not None:
        where.append("metadata ->> '$.product' = ?")
        params.append(product)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    page = rows[:limit]
    sessions = [_session(tuple(row)) for row in page]
    return sessions, str(page[-1][0]) if len(rows) > limit else None


def _session_status(conn: sqlite3.Connection, session_id: str) -> str:
    """The session's run status (``UnknownRunError`` when there is no such session)."""
    status: str = _session_row(conn, session_id)[2]
    return status


# -- documentation of the bodies (/openapi.json) ----------------------------------------------

_TEXT: Final = {"anyOf": [{"type": "string", "maxLength": 1000}, {"type": "null"}]}
_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000]*$"}
_WHEN: Final = {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP}
_EMPTY: Final = {"type": "object", "additionalProperties": False}
_CREATE: Final = {
    "type": "object",
    "properties": {
        "product": _TEXT,
        "version": _TEXT,
        "hostname": _TEXT,
        "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "heartbeat_timeout_seconds": {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 10 * 365 * 86_400}, {"type": "null"}]
        },
    },
    "additionalProperties": False,
}
_EVENT_FIELDS: Final = {
    "name": _NAME,
    "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
    "level": {"enum": list(LEVELS)},
}
_METRIC_FIELDS: Final = {
    "name": _NAME,
    "value": {"type": "number"},
    "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
}


def _operation(op: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["op", *required],
        "properties": {"op": {"const": op}, "timestamp": _WHEN, **properties},
        "additionalProperties": False,
    }


_BATCH: Final = {
    "type": "object",
    "required": ["operations"],
    "properties": {
        "batch_id": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "null"}]},
        "operations": {
            "type": "array",
            "items": {
                "oneOf": [
                    _operation("state", {"state": {"type": "object"}}, ("state",)),
                    _operation("event", _EVENT_FIELDS, ("name",)),
                    _operation("metric", _METRIC_FIELDS, ("name", "value")),
                    _operation("heartbeat", {}),
                    _operation("end", {}),
                ]
            },
        },
    },
    "additionalProperties": False,
}


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself.

    Documented as required even where an empty body is taken: every write must
    be sent as ``application/json`` (415 otherwise), which keeps browsers from
    posting to the API cross-site without a CORS preflight.
    """
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


#: Writes to a session: malformed JSON, unknown session, ended session, too large, invalid field.
_WRITE_ERRORS: Final = error_responses(400, 404, 409, 413, 422)


# -- routes --------------------------------------------------------------------------------------


def _cursor(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    if not _CURSOR.fullmatch(value):
        raise ApiError(422, f"{name} is not one this server returned", name)
    return int(value)


async def _read_session(request: Request, fn: Callable[..., Any], session_id: str, *args: Any) -> Any:
    try:
        return await read(request, fn, session_id, *args)
    except UnknownRunError:
        raise ApiError(404, f"unknown session {shown(session_id)}", "session_id") from None


async def _submit(
    request: Request, session_id: str, events: list[Event], batch_id: str | None = None, digest: str | None = None
) -> Any:
    """Check the session exists and, unless this is a retry of a stored batch, is not ended;
    then store ``events`` (returns the ingest result)."""
    source = web_context(request).service("ingest")
    status = await _read_session(request, _session_status, session_id)

    async def admit(events: list[Any]) -> list[Any]:
        if status in _ENDED:
            raise ApiError(409, f"session {shown(session_id)} has ended", "session_id")
        return events

    return await source.submit(events, batch_id, digest=digest, admit=admit)


_OK: Final = {"ok": True}


@router.post(
    "/api/sessions",
    status_code=201,
    summary="Create a session",
    openapi_extra=_body(_CREATE),
    responses=error_responses(400, 413, 422),
)
async def create_session(request: Request) -> JSONResponse:
    source = web_context(request).service("ingest")
    metadata = parse_create_body(parse_document(await request.body(), empty={}))
    session_id = str(uuid.uuid4())
    started = _build(
        lambda: RunLifecycle(session_id, time.time(), RunTransition.STARTED, run_kind=SESSION_KIND, metadata=metadata),
        "metadata",
    )
    await source.submit([started])
    session = await _read_session(request, read_session, session_id, 100, None, 100, None)
    return JSONResponse({"session_id": session_id, "session": session}, status_code=201)


@router.get("/api/sessions", summary="List sessions, newest first", responses=error_responses(422))
async def get_sessions(
    request: Request,
    active: bool | None = Query(None, description="only active (true) or inactive (false) sessions"),
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    status: Literal[_SESSION_STATUSES] | None = Query(  # type: ignore[valid-type]
        None, description="active, hung, crashed or ended"
    ),
    product: str | None = Query(None),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    if status is not None and status not in _SESSION_STATUSES:
        raise ApiError(422, f"status must be one of {', '.join(_SESSION_STATUSES)}", "status")
    before = _cursor(cursor, "cursor")
    sessions, next_cursor = await read(
        request, list_sessions, active=active, status=status, product=product, limit=limit, before=before
    )
    return JSONResponse({"sessions": sessions, "next_cursor": next_cursor})


@router.get(
    "/api/sessions/{session_id}",
    summary="A session with pages of its events, metrics and state patches",
    responses=error_responses(404, 422),
)
async def get_session(
    request: Request,
    session_id: str,
    events_limit: int = Query(100, ge=1, le=10_000),
    events_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
    metrics_limit: int = Query(100, ge=1, le=10_000),
    metrics_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
    state_history_limit: int = Query(100, ge=1, le=10_000),
    state_history_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    events_before = _cursor(events_cursor, "events_cursor")
    metrics_before = _cursor(metrics_cursor, "metrics_cursor")
    history_before = _cursor(state_history_cursor, "state_history_cursor")
    session = await _read_session(
        request,
        read_session,
        session_id,
        events_limit,
        events_before,
        metrics_limit,
        metrics_before,
        state_history_limit,
        history_before,
    )
    return JSONResponse(session)


@router.post(
    "/api/sessions/{session_id}/state",
    summary="Deep-merge a patch into the session's state",
    openapi_extra=_body({"type": "object"}),
    responses=_WRITE_ERRORS,
)
async def post_state(request: Request, session_id: str) -> JSONResponse:
    patch = parse_document(await request.body())
    await _submit(request, session_id, [state_event(session_id, patch, time.time())])
    return JSONResponse(_OK)


@router.post(
    "/api/sessions/{session_id}/events",
    summary="Record a session event",
    openapi_extra=_body(
        {"type": "object", "required": ["name"], "properties": _EVENT_FIELDS, "additionalProperties": False}
    ),
    responses=_WRITE_ERRORS,
)
async def post_event(request: Request, session_id: str) -> JSONResponse:
    document = _object(parse_document(await request.body()), None, "the body")
    _no_unknown(document, ("name", "data", "level"))
    await _submit(request, session_id, [log_event(session_id, document, time.time())])
    return JSONResponse(_OK)


@router.post(
    "/api/sessions/{session_id}/metrics",
    summary="Record one metric value",
    openapi_extra=_body(
        {"type": "object", "required": ["name", "value"], "properties": _METRIC_FIELDS, "additionalProperties": False}
    ),
    responses=_WRITE_ERRORS,
)
async def post_metric(request: Request, session_id: str) -> JSONResponse:
    document = _object(parse_document(await request.body()), None, "the body")
    _no_unknown(document, ("name", "value", "tags"))
    await _submit(request, session_id, [metric_event(session_id, document, time.time())])
    return JSONResponse(_OK)


@router.post(
    "/api/sessions/{session_id}/heartbeat",
    summary="The session's application is alive",
    openapi_extra=_body(_EMPTY),
    responses=_WRITE_ERRORS,
)
async def post_heartbeat(request: Request, session_id: str) -> JSONResponse:
    _no_unknown(_object(parse_document(await request.body(), empty={}), None, "the body"), ())
    await _submit(request, session_id, [Heartbeat(session_id, time.time())])
    return JSONResponse(_OK)


@router.post(
    "/api/sessions/{session_id}/end",
    summary="End the session",
    openapi_extra=_body(_EMPTY),
    responses=_WRITE_ERRORS,
)
async def post_end(request: Request, session_id: str) -> JSONResponse:
    _no_unknown(_object(parse_document(await request.body(), empty={}), None, "the body"), ())
    await _submit(request, session_id, [RunLifecycle(session_id, time.time(), RunTransition.COMPLETED)])
    session = await _read_session(request, read_session, session_id, 100, None, 100, None)
    return JSONResponse({"ok": True, "session": session})


@router.post(
    "/api/sessions/{session_id}/batch",
    summary="Apply a batch of operations exactly once",
    openapi_extra=_body(_BATCH),
    responses=_WRITE_ERRORS,
)
async def post_batch(request: Request, session_id: str) -> JSONResponse:
    context = web_context(request)
    document = parse_document(await request.body())
    events, batch_id = batch_events(session_id, document, time.time(), context.max_ingest_events)
    # The digest covers what the client sent (operations without a timestamp take the server's clock).
    digest = content_digest(document["operations"]) if batch_id is not None and events else None
    result = await _submit(request, session_id, events, batch_id, digest)
    if result.duplicate:
        return JSONResponse({"accepted": 0, "duplicate": True})
    return JSONResponse({"accepted": result.accepted, "duplicate": False})
