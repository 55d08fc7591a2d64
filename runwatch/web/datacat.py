"""datacat's REST routes, answered as datacat's server answers them (see docs/datacat.md).

The contract is datacat's server code at OriginalDaemon/datacat ``77ab370``:
``/health``; ``POST /api/sessions`` (``200 {"session_id"}``);
``GET /api/sessions/{id}``; ``POST /api/sessions/{id}/`` ``state``,
``events``, ``metrics``, ``heartbeat``, ``end``, ``crash``;
``GET /api/data/sessions``. Bodies are read as Go reads them, in any
Content-Type, gzipped or not (:mod:`runwatch.wire.datacat`); answers are
written as Go writes them; errors are datacat's plain-text answers, with
its statuses (400, 404, 405; never 201, 409 or 422). Writes after a
session's end are taken, as datacat takes them.

Each route reads its request (:mod:`runwatch.wire.datacat`), has
:class:`~runwatch.sessions.datacat.DatacatSessions` do what datacat's server
does (crash detection, storing through the pipeline's ``ingest`` source
before answering, reading whole sessions) and answers. runwatch's own
session routes share these paths where datacat has none: ``GET
/api/sessions`` (the listing), ``GET /api/sessions/{id}`` with a paging
parameter (runwatch's paged view), ``POST .../batch`` (:mod:`.sessions`).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ..exceptions import (
    BatchNotStored,
    PipelineNotRunning,
    StoreError,
    UnknownRunError,
    WireError,
)
from ..sessions.datacat import DatacatSessions
from ..sources.ingest import INGEST
from ..wire import gojson
from ..wire.datacat import (
    HEALTH,
    OK,
    crash_events,
    end_event,
    event_from_body,
    gunzip,
    heartbeat_event,
    metric_from_body,
    parse_crash_reason,
    parse_create_body,
    state_from_body,
)
from .http import (
    CURSOR_SCHEMA,
    ERROR_SCHEMA,
    ApiError,
    JSONResponse,
    WebContext,
    cursor_param,
    web_context,
)
from .sessions import session_page

__all__ = ["router"]

router = APIRouter(tags=["datacat"])

_TEXT_HEADERS: Final = {"X-Content-Type-Options": "nosniff"}
#: Every method a route answers for datacat's "any method" paths.
_ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def text_response(status: int, message: str) -> Response:
    """A datacat error: ``text/plain; charset=utf-8``, the message and a newline (Go's ``http.Error``)."""
    return Response(message + "\n", status, headers=_TEXT_HEADERS, media_type="text/plain")


def go_json_response(document: Any) -> Response:
    """A datacat success: 200, ``application/json``, written as Go writes it."""
    return Response(gojson.dumps(document), 200, media_type="application/json")


def _datacat(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Answer the route's errors in datacat's plain-text form (runwatch's own trouble keeps its status)."""

    @functools.wraps(fn)
    async def route(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except WireError as exc:
            return text_response(exc.status, exc.message)
        except ApiError as exc:
            response = text_response(exc.status, exc.message)
            response.headers.update(exc.headers or {})
            return response
        except (PipelineNotRunning, BatchNotStored, StoreError) as exc:
            response = text_response(503, str(exc))
            response.headers["Retry-After"] = "1"
            return response

    return route


async def _body(request: Request) -> tuple[bytes, bool]:
    """The request body (gunzipped when ``Content-Encoding`` is exactly ``gzip``) and whether it is whole.

    Raises:
        WireError: 400 ``Failed to decompress request`` (an unreadable gzip header).
    """
    raw = await request.body()
    if request.headers.get("content-encoding") != "gzip":
        return raw, True
    return gunzip(raw, web_context(request).max_body_bytes)


def _sessions(context: WebContext) -> DatacatSessions:
    """datacat's sessions on this server's store, written through its ingest source."""
    return DatacatSessions(
        context.store,
        lambda events: context.service(INGEST).submit(events),
        heartbeat_timeout_seconds=context.session_heartbeat_timeout_seconds,
    )


async def _write(context: WebContext, session_id: str, events: list[Any]) -> Response:
    """Store a write of a session: datacat's ok, or 404 ``session not found`` (lowercase s)."""
    try:
        await _sessions(context).write(session_id, events)
    except UnknownRunError:
        raise WireError(404, "session not found") from None
    return go_json_response(OK)


# -- routes ----------------------------------------------------------------------------------------

_ANY_BODY: Final = {"requestBody": {"required": False, "content": {"*/*": {"schema": {}}}}}
_OK_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"description": "accepted", "content": {"application/json": {"schema": {"type": "object"}}}},
}


def _text_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "a body datacat refuses, or no session id (text)",
        404: "no such session, or no such operation (text)",
        405: "method not allowed (text)",
    }
    return {
        status: {"description": descriptions[status], "content": {"text/plain": {"schema": {"type": "string"}}}}
        for status in statuses
    }


@_datacat
async def health(request: Request) -> Response:
    await _body(request)  # a gzip header that cannot be read is refused before routing, as datacat does
    return go_json_response(HEALTH)


for _method in _ALL_METHODS:  # any method, as datacat's mux takes it: one documented operation each
    router.add_api_route(
        "/health",
        health,
        methods=[_method],
        summary="datacat's health check (any method, no token)",
        operation_id=f"datacat_health_{_method.lower()}",
        responses={200: {"description": "healthy", "content": {"application/json": {"schema": {"type": "object"}}}}},
    )


@router.post(
    "/api/sessions",
    summary="Create a session (datacat)",
    openapi_extra=_ANY_BODY,
    responses={
        200: {
            "description": "the new session's id",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["session_id"],
                        "properties": {"session_id": {"type": "string"}},
                    }
                }
            },
        },
        **_text_errors(400),
    },
)
@_datacat
async def create_session(request: Request) -> Response:
    body, _ = await _body(request)
    created = parse_create_body(body)
    session_id = str(uuid.uuid4())
    await _sessions(web_context(request)).create(session_id, created, time.time())
    return go_json_response({"session_id": session_id})


@router.api_route("/api/sessions", methods=["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"], include_in_schema=False)
@_datacat
async def sessions_other_methods(request: Request) -> Response:
    await _body(request)
    return _not_allowed("GET, POST")


def _not_allowed(allowed: str) -> Response:
    """datacat's 405, naming the allowed methods (datacat sends no ``Allow``; HTTP asks for one)."""
    response = text_response(405, "Method not allowed")
    response.headers["Allow"] = allowed
    return response


_PAGING: Final = (
    "events_limit",
    "events_cursor",
    "metrics_limit",
    "metrics_cursor",
    "state_history_limit",
    "state_history_cursor",
)


@router.get(
    "/api/sessions/{session_id}",
    summary="A session: datacat's document, or runwatch's paged view with a paging parameter",
    responses={
        200: {"description": "the session"},
        404: {
            "description": "no such session (text; runwatch's JSON error with a paging parameter)",
            "content": {"text/plain": {"schema": {"type": "string"}}, "application/json": {"schema": ERROR_SCHEMA}},
        },
    },
)
async def get_session(
    request: Request,
    session_id: str,
    events_limit: int | None = Query(None, ge=1, le=10_000),
    events_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
    metrics_limit: int | None = Query(None, ge=1, le=10_000),
    metrics_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
    state_history_limit: int | None = Query(None, ge=1, le=10_000),
    state_history_cursor: str | None = Query(None, json_schema_extra=CURSOR_SCHEMA),
) -> Response:
    context = web_context(request)
    if any(name in request.query_params for name in _PAGING):
        # runwatch's paged view (its JSON errors): the dashboard and runwatch's client ask for it.
        page = await session_page(
            context,
            session_id,
            events_limit=events_limit or 100,
            events_before=cursor_param(events_cursor, "events_cursor"),
            metrics_limit=metrics_limit or 100,
            metrics_before=cursor_param(metrics_cursor, "metrics_cursor"),
            history_limit=state_history_limit or 100,
            history_before=cursor_param(state_history_cursor, "state_history_cursor"),
        )
        return JSONResponse(page)
    return await _datacat_document(context, session_id)


@_datacat
async def _datacat_document(context: WebContext, session_id: str) -> Response:
    return go_json_response(await _document(context, session_id))


async def _document(context: WebContext, session_id: str) -> gojson.Struct:
    try:
        return await _sessions(context).document(session_id, time.time())
    except UnknownRunError:
        raise WireError(404, "Session not found") from None


def _write_route(path: str, summary: str) -> Callable[[Callable[..., Awaitable[Response]]], Any]:
    return router.post(
        "/api/sessions/{session_id}/" + path,
        summary=summary,
        openapi_extra=_ANY_BODY,
        responses={**_OK_RESPONSE, **_text_errors(400, 404)},
    )


@_write_route("state", "Deep-merge a state update (datacat: the wrapped form or the state itself)")
@_datacat
async def post_state(request: Request, session_id: str) -> Response:
    context = web_context(request)
    body, whole = await _body(request)
    if not whole:
        raise WireError(400, "Invalid request body")
    return await _write(context, session_id, [state_from_body(session_id, body, time.time())])


@_write_route("events", "Record an event (datacat's fields)")
@_datacat
async def post_event(request: Request, session_id: str) -> Response:
    context = web_context(request)
    body, whole = await _body(request)
    if not whole:
        raise WireError(400, "Invalid request body")
    return await _write(context, session_id, [event_from_body(session_id, body, time.time())])


@_write_route("metrics", "Record a metric (datacat's fields: type, count, unit, tags, metadata)")
@_datacat
async def post_metric(request: Request, session_id: str) -> Response:
    context = web_context(request)
    body, _ = await _body(request)
    return await _write(context, session_id, [metric_from_body(session_id, body, time.time())])


@_write_route("heartbeat", "The session's application is alive (the body is not read)")
@_datacat
async def post_heartbeat(request: Request, session_id: str) -> Response:
    context = web_context(request)
    await _body(request)
    return await _write(context, session_id, [heartbeat_event(session_id, time.time())])


@_write_route("end", "End the session (repeatable; the body is not read)")
@_datacat
async def post_end(request: Request, session_id: str) -> Response:
    context = web_context(request)
    await _body(request)
    return await _write(context, session_id, [end_event(session_id, time.time())])


@_write_route("crash", "The session crashed (datacat's daemon reports it; a reason)")
@_datacat
async def post_crash(request: Request, session_id: str) -> Response:
    context = web_context(request)
    body, _ = await _body(request)
    return await _write(context, session_id, crash_events(session_id, parse_crash_reason(body), time.time()))


@router.get(
    "/api/data/sessions",
    summary="Every session in full (datacat)",
    responses={200: {"description": "every session", "content": {"application/json": {"schema": {"type": "array"}}}}},
)
@_datacat
async def all_sessions(request: Request) -> Response:
    await _body(request)
    return go_json_response(await _sessions(web_context(request)).documents(time.time()))


@router.api_route(
    "/api/data/sessions", methods=["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], include_in_schema=False
)
@_datacat
async def all_sessions_other_methods(request: Request) -> Response:
    await _body(request)
    return _not_allowed("GET")


@router.api_route("/api/data/sessions/{rest:path}", methods=_ALL_METHODS, include_in_schema=False)
@_datacat
async def below_all_sessions(request: Request, rest: str) -> Response:
    await _body(request)
    return text_response(404, "404 page not found")


@router.api_route("/api/sessions/{rest:path}", methods=_ALL_METHODS, include_in_schema=False)
@_datacat
async def other_session_paths(request: Request, rest: str) -> Response:
    """What datacat answers on its session prefix for everything the routes above do not take."""
    await _body(request)
    session_id, _, operation = rest.partition("/")
    if not session_id:
        return text_response(400, "Session ID required")
    if operation == "" and request.method == "GET":  # /api/sessions/{id}/
        return go_json_response(await _document(web_context(request), session_id))
    return text_response(404, "Not found")
