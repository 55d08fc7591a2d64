"""The web app: REST API, websockets and the dashboard, on FastAPI.

FastAPI (on Starlette and uvicorn) because it documents the API at
``/openapi.json`` and validates query parameters for free; the hot ingest
path parses with orjson and validates with the event model itself, so a
request body is checked by exactly the code that checks ``update_metrics``.

This module assembles the app: the routes (by resource: :mod:`.runs`,
:mod:`.current`, :mod:`.alerts`, :mod:`.operations`, :mod:`.ingest`,
:mod:`.sessions`, :mod:`.datacat`, :mod:`.ws`; what they share is in :mod:`.http`), the error
handlers, the documentation and the dashboard's static files. The app asks
the store (:class:`~runwatch.store.base.Store`) on worker threads and talks to
the pipeline only through services it registered (``ingest``,
``websocket_hub``) and ``Pipeline.statistics()``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..exceptions import (
    BatchIdConflict,
    BatchNotStored,
    PipelineNotRunning,
    StoreError,
    StoreUnavailable,
    UnknownRunError,
    WireError,
)
from ..pipeline.component import Services
from ..store.base import Store
from . import alerts, compare, current, datacat, ingest, media, operations, runs, sessions, ws
from .http import ERROR_SCHEMA, ApiError, JSONResponse, WebContext, error_responses
from .security import SecurityMiddleware, SecurityPolicy, allowed_methods

__all__ = ["STATIC_DIR", "create_app"]

#: Answered by the security middleware or the error handlers on every route.
_COMMON_ERRORS = (400, 401, 503)
_WRITE_ERRORS = (408, 413, 415)

STATIC_DIR = Path(str(resources.files("runwatch.web").joinpath("static")))


def create_app(
    *,
    db_path: str | None = None,
    store: Store | None = None,
    pipeline: Any = None,
    policy: SecurityPolicy | None = None,
    max_ingest_events: int = 10_000,
    static_dir: str | None = None,
    session_heartbeat_timeout_seconds: float = 60.0,
) -> SecurityMiddleware:
    """Build the ASGI app (wrapped in the security middleware).

    Args:
        db_path: the store to read (when no ``store`` is given): a SQLite file, or a PostgreSQL URL.
        store: the store to read.
        pipeline: the running :class:`~runwatch.pipeline.Pipeline` whose
            services take ingest and websocket subscribers (``None``: read-only).
        policy: the security policy (default: loopback only, no token).
        max_ingest_events: the most events one ingest request may carry.
        static_dir: a directory of the user's own static files, served at
            ``/static/<name>`` after the dashboard's own files (a file of the
            same name as one of the dashboard's is never served); ignored
            when it does not exist.
        session_heartbeat_timeout_seconds: silence after which a datacat
            session that heartbeated is suspended (a session's own
            ``heartbeat_timeout_seconds`` wins).
    """
    if store is None:
        if db_path is None:
            raise TypeError("create_app needs a store or a db_path")
        from ..store.backends import open_store

        store = open_store(db_path)
    services = pipeline.context.services if pipeline is not None else Services()
    policy = policy or SecurityPolicy()
    context = WebContext(
        store,
        pipeline,
        services,
        max_ingest_events,
        max_body_bytes=policy.max_body_bytes,
        session_heartbeat_timeout_seconds=session_heartbeat_timeout_seconds,
    )
    app = FastAPI(
        title="runwatch",
        version="0.1.0",
        description="Live monitoring of ML training runs and application sessions. See docs/protocol.md.",
        default_response_class=JSONResponse,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = context
    _document(app)
    _install_error_handlers(app)
    # datacat's routes after runwatch's own sessions routes: its catch-all answers what they do not take.
    for routes in (runs, compare, media, current, alerts, operations, ingest, sessions, datacat, ws):
        app.include_router(routes.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    static = StaticFiles(directory=STATIC_DIR, follow_symlink=False)
    if static_dir is not None and Path(static_dir).is_dir():
        # Looked up in order: the dashboard's files first, so a stray directory cannot replace them.
        static.all_directories = [*static.all_directories, Path(static_dir)]
    app.mount("/static", static, name="static")
    return SecurityMiddleware(app, policy)


def _document(app: FastAPI) -> None:
    """Make ``/openapi.json`` say what the app really answers.

    Every operation documents the error body and the statuses the security
    middleware and the error handlers answer on any route; JSON success
    bodies are objects; 422 has runwatch's error body (not FastAPI's);
    optional query parameters are optional strings, never ``null``.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        for path_item in document.get("paths", {}).values():
            for method, operation in path_item.items():
                _refine_operation(method, operation)
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        if "components" in document and not schemas:
            document["components"].pop("schemas", None)
            if not document["components"]:
                del document["components"]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def _refine_operation(method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, response in responses.items():
        content = response.get("content", {})
        json_body = content.get("application/json")
        if json_body is None:
            continue
        if status.startswith("2") and json_body.get("schema") in (None, {}, {"type": "string"}):
            json_body["schema"] = {"type": "object"}
        elif not status.startswith("2"):
            json_body["schema"] = ERROR_SCHEMA
    statuses = [*_COMMON_ERRORS, *(_WRITE_ERRORS if method.upper() in ("POST", "PUT", "PATCH", "DELETE") else ())]
    for status, entry in error_responses(*statuses).items():
        responses.setdefault(str(status), entry)
    for status, response in responses.items():
        if not status.startswith("2") and not response.get("content"):
            response["content"] = {"application/json": {"schema": ERROR_SCHEMA}}
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        options = schema.get("anyOf")
        if options and {"type": "null"} in options:
            rest = [option for option in options if option != {"type": "null"}]
            schema.pop("anyOf")
            if len(rest) == 1:
                schema.update(rest[0])
            else:
                schema["anyOf"] = rest


def _error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "field": field}}, status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc.status, exc.message, exc.field, exc.headers)

    @app.exception_handler(UnknownRunError)
    async def unknown_run(request: Request, exc: UnknownRunError) -> Response:
        return _error_response(404, str(exc), "run_id")

    @app.exception_handler(WireError)
    async def wire_error(request: Request, exc: WireError) -> Response:
        return _error_response(exc.status, exc.message, exc.field)

    @app.exception_handler(StoreUnavailable)
    async def busy_store(request: Request, exc: StoreUnavailable) -> Response:
        return _error_response(503, f"the store is unavailable: {exc}", None, {"Retry-After": "1"})

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        return _error_response(503, str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(PipelineNotRunning)
    async def not_running(request: Request, exc: PipelineNotRunning) -> Response:
        return _error_response(503, str(exc), None, {"Retry-After": "5"})

    @app.exception_handler(BatchIdConflict)
    async def batch_id_conflict(request: Request, exc: BatchIdConflict) -> Response:
        return _error_response(409, str(exc), "batch_id")

    @app.exception_handler(BatchNotStored)
    async def batch_not_stored(request: Request, exc: BatchNotStored) -> Response:
        return _error_response(503, str(exc), None, {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("query", "path", "body")]
        return _error_response(422, first.get("msg", "invalid request"), ".".join(location) or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names the methods of the first route on this path; a path
            # can have several (GET and POST /api/sessions): name them all.
            allowed = allowed_methods(request.app.router.routes, request.scope)
            headers = {**(headers or {}), "Allow": ", ".join(sorted(allowed))}
        return _error_response(exc.status_code, str(exc.detail), None, headers)
