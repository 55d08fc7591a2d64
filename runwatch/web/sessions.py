"""runwatch's own REST routes of application sessions (see docs/sessions.md).

datacat's routes on the same paths are in :mod:`.datacat`; these are the
ones runwatch adds: the listing (``GET /api/sessions``), the paged view of a
session (:func:`session_page`, served by ``GET /api/sessions/{id}`` when a
paging parameter is given) and ``/batch``, exactly once per batch id.

A ``/batch`` write parses and validates its body completely
(:mod:`runwatch.wire.sessions`, errors name the field), checks the session
(404 unknown, 409 ended), hands the events to the pipeline's ``ingest``
source and answers once they are committed, so an acknowledged write is
stored (the websocket subscribers get it from the live hub, which no write
waits for). A ``batch_id`` is scoped to its session: a retry is answered as
a duplicate once the original is stored (waiting for it while it is in
flight), and the same id with other operations is a 409. Reads ask the
store on worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

from fastapi import APIRouter, Query, Request

from .._payload import shown
from ..events import Event
from ..exceptions import UnknownRunError
from ..session_events import RUN_STATUSES_OF, session_status
from ..sources.ingest import INGEST
from ..wire import content_digest, json_number, parse_document
from ..wire.datacat import DATACAT_PROTOCOL
from ..wire.sessions import (
    BATCH_BODY_SCHEMA,
    batch_events,
)
from .http import (
    CURSOR_SCHEMA,
    TIME_SCHEMA,
    ApiError,
    JSONResponse,
    WebContext,
    body_schema,
    cursor_param,
    error_responses,
    iso,
    read,
    time_param,
    web_context,
)

__all__ = ["router", "session_page", "session_view"]

_T = TypeVar("_T")

router = APIRouter(tags=["sessions"])

_SESSION_STATUSES: Final = (*RUN_STATUSES_OF, "suspended")
#: Run statuses after which a session takes no more writes.
_ENDED: Final = frozenset(RUN_STATUSES_OF["ended"])
#: Writes to a session: malformed JSON, unknown session, ended session, too large, invalid field.
_WRITE_ERRORS: Final = error_responses(400, 404, 409, 413, 422)


def session_view(record: dict[str, Any], now: float, timeout_seconds: float) -> dict[str, Any]:
    """A stored session record as the REST API shows it (without its pages).

    A session created through datacat's routes that heartbeated and then fell
    silent for longer than its timeout (its own ``heartbeat_timeout_seconds``,
    else ``timeout_seconds``) is ``suspended`` at ``now``, as datacat computes
    it when read; ``suspended``, ``crashed`` and ``hung`` are datacat's flags.
    """
    metadata = record["metadata"]
    own = metadata.get("metadata")
    shown_status = session_status(record["status"])
    suspend_after = _suspend_after(metadata, timeout_seconds)
    if shown_status == "active" and is_suspended(record, now, timeout_seconds):
        shown_status = "suspended"
    return {
        "id": record["run_id"],
        "created_at": iso(record["start_time"]),
        "updated_at": iso(record["updated_at"]),
        "ended_at": iso(record["end_time"]) if shown_status == "ended" else None,
        "active": shown_status in ("active", "hung"),
        "status": shown_status,
        "suspended": shown_status == "suspended",
        "crashed": shown_status == "crashed",
        "hung": shown_status == "hung",
        "state": record["state"],
        "last_heartbeat": iso(record["last_heartbeat"]),
        "hostname": metadata.get("hostname"),
        "machine_id": metadata.get("machine_id"),
        "product": metadata.get("product"),
        "version": metadata.get("version"),
        "heartbeat_timeout_seconds": metadata.get("heartbeat_timeout_seconds"),
        # The silence after which this session shows suspended (datacat's sessions; None for others),
        # so a live view can tell it between two reads.
        "suspend_after_seconds": suspend_after,
        "metadata": own if isinstance(own, dict) else {},
    }


def _suspend_after(metadata: dict[str, Any], timeout_seconds: float) -> float | None:
    if metadata.get("protocol") != DATACAT_PROTOCOL:
        return None
    own = metadata.get("heartbeat_timeout_seconds")
    if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0:
        return float(own)
    return timeout_seconds


def is_suspended(record: dict[str, Any], now: float, timeout_seconds: float) -> bool:
    """Whether a live session of datacat's is suspended: it heartbeated, then was silent past its timeout."""
    heartbeat = record["last_heartbeat"]
    suspend_after = _suspend_after(record["metadata"], timeout_seconds)
    if suspend_after is None or heartbeat is None or record["end_time"] is not None:
        return False
    return bool(now - heartbeat > suspend_after)


async def session_page(
    context: WebContext,
    session_id: str,
    *,
    events_limit: int = 100,
    events_before: int | None = None,
    metrics_limit: int = 100,
    metrics_before: int | None = None,
    history_limit: int = 100,
    history_before: int | None = None,
) -> dict[str, Any]:
    """One session with a page of its events and one of its metrics, newest first, and a page of its
    state patches (the newest ``history_limit`` before ``history_before``, oldest first)."""
    page = await _read_session(
        context.store.read_session,
        session_id,
        events_limit=events_limit,
        events_before=events_before,
        metrics_limit=metrics_limit,
        metrics_before=metrics_before,
        history_limit=history_limit,
        history_before=history_before,
    )
    session = session_view(page["session"], time.time(), context.session_heartbeat_timeout_seconds)
    history = page["state_history"]
    patches = history[-history_limit:]  # oldest first: the one beyond the page is the first
    session["state_history"] = [{"timestamp": iso(entry["timestamp"]), "patch": entry["patch"]} for entry in patches]
    session["state_history_next_cursor"] = str(patches[0]["id"]) if len(history) > history_limit else None
    events = page["events"]
    shown_events = events[:events_limit]
    session["events"] = [
        {"timestamp": iso(event["timestamp"]), "name": event["name"], "level": event["level"], "data": event["data"]}
        for event in shown_events
    ]
    session["events_next_cursor"] = str(shown_events[-1]["id"]) if len(events) > events_limit else None
    rows = page["metrics"][:metrics_limit]
    session["metrics"] = [
        {"timestamp": iso(row["timestamp"]), "name": name, "value": json_number(value), "tags": row["tags"]}
        for row in rows
        for name, value in row["values"]
    ]
    session["metrics_next_cursor"] = str(rows[-1]["row"]) if len(page["metrics"]) > metrics_limit else None
    return session


# -- routes --------------------------------------------------------------------------------------


async def _read_session(fn: Callable[..., _T], session_id: str, *args: Any, **kwargs: Any) -> _T:
    try:
        return await read(fn, session_id, *args, **kwargs)
    except UnknownRunError:
        raise ApiError(404, f"unknown session {shown(session_id)}", "session_id") from None


async def _submit(
    request: Request, session_id: str, events: list[Event], batch_id: str | None = None, digest: str | None = None
) -> Any:
    """Check the session exists and, unless this is a retry of a stored batch, is not ended;
    then store ``events`` (returns the ingest result)."""
    context = web_context(request)
    source = context.service(INGEST)
    status = await _read_session(context.store.session_run_status, session_id)

    async def admit(events: list[Any]) -> list[Any]:
        if status in _ENDED:
            raise ApiError(409, f"session {shown(session_id)} has ended", "session_id")
        return events

    return await source.submit(events, batch_id, digest=digest, admit=admit)


@router.get("/api/sessions", summary="List sessions, newest first", responses=error_responses(422))
async def get_sessions(
    request: Request,
    active: bool | None = Query(None, description="only active (true) or inactive (false) sessions"),
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    status: Literal[_SESSION_STATUSES] | None = Query(  # type: ignore[valid-type]
        None, description="active, suspended, hung, crashed or ended"
    ),
    product: str | None = Query(None),
    limit: int = Query(50, ge=1, le=1000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    if status is not None and status not in _SESSION_STATUSES:
        raise ApiError(422, f"status must be one of {', '.join(_SESSION_STATUSES)}", "status")
    before = cursor_param(cursor, "cursor")
    context = web_context(request)
    now, timeout = time.time(), context.session_heartbeat_timeout_seconds
    records = await read(
        context.store.list_sessions,
        active=active,
        status=status,
        product=product,
        limit=limit,
        before=before,
        now=now,
        timeout_seconds=timeout,
    )
    page = records[:limit]
    next_cursor = str(page[-1]["pk"]) if len(records) > limit else None
    sessions = [session_view(record, now, timeout) for record in page]
    return JSONResponse({"sessions": sessions, "next_cursor": next_cursor})


@router.get(
    "/api/session-statistics",
    summary="Session counts, event counts and metric statistics (what SessionMonitor reports)",
    responses=error_responses(422),
)
async def get_session_statistics(
    request: Request,
    since: str | None = Query(
        None,
        min_length=1,
        description="events and metrics from then on count (epoch seconds or ISO-8601)",
        json_schema_extra=TIME_SCHEMA,
    ),
) -> JSONResponse:
    stats = await read(web_context(request).store.session_statistics, time_param("since", since))
    for figures in stats.get("metrics", {}).values():
        for name, value in figures.items():
            if isinstance(value, float):
                figures[name] = json_number(value)
    return JSONResponse(stats)


@router.get(
    "/api/session-metrics",
    summary="Every session metric value between two times, in recording order",
    responses=error_responses(422),
)
async def get_session_metrics(
    request: Request,
    since: str | None = Query(
        None, min_length=1, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA
    ),
    until: str | None = Query(
        None, min_length=1, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA
    ),
) -> JSONResponse:
    values = await read(
        web_context(request).store.session_metrics, time_param("since", since), time_param("until", until)
    )
    return JSONResponse({"metrics": [{**value, "value": json_number(value["value"])} for value in values]})


@router.post(
    "/api/sessions/{session_id}/batch",
    summary="Apply a batch of operations exactly once",
    openapi_extra=body_schema(BATCH_BODY_SCHEMA),
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
