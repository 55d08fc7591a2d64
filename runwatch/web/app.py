"""The web app: REST API, websockets and the dashboard, on FastAPI.

FastAPI (on Starlette and uvicorn) because it documents the API at
``/openapi.json`` and validates query parameters for free; the hot ingest
path parses with orjson and validates with the event model itself, so a
request body is checked by exactly the code that checks ``update_metrics``.

The app reads the store through short-lived read-only connections on worker
threads and talks to the pipeline only through services it registered
(``ingest``, ``websocket_hub``) and ``Pipeline.statistics()``.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from ..exceptions import BatchIdConflict, BatchNotStored, PipelineNotRunning, StoreError, UnknownRunError
from ..store import forksafe
from .security import SecurityMiddleware, SecurityPolicy, allowed_methods
from .series import SeriesCache

__all__ = ["ApiError", "JSONResponse", "StoreReader", "WebContext", "create_app", "iso"]

T = TypeVar("T")
#: The body of every error response (see :class:`ApiError`).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "message", "field"],
            "properties": {
                "status": {"type": "integer"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR_DESCRIPTIONS = {
    400: "malformed request, or a Host header that is not allowed",
    401: "missing or invalid bearer token (when one is configured)",
    404: "unknown run or session",
    405: "method not allowed",
    408: "the request body was not received in time (body_timeout_seconds between its parts)",
    409: "the session has ended, or a batch_id was already used for different content",
    413: "request body or batch too large",
    415: "request body is not application/json",
    422: "an invalid parameter or field (named in error.field)",
    503: "the store or a pipeline component is unavailable, or the server is shutting down (Retry-After)",
}
#: Answered by the security middleware or the error handlers on every route.
_COMMON_ERRORS = (400, 401, 503)
_WRITE_ERRORS = (408, 413, 415)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the error body."""
    return {
        status: {"description": _ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


STATIC_DIR = Path(str(resources.files("runwatch.web").joinpath("static")))


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as an ISO-8601 UTC string (``None`` stays ``None``)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class JSONResponse(Response):
    """JSON rendered by orjson (NaN and ±Inf become ``null``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """An error answered as ``{"error": {"status", "message", "field"}}``."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers


class StoreReader:
    """Runs read queries on worker threads, each on its own short-lived connection."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path

    def connect(self) -> sqlite3.Connection:
        """A read-only connection (query_only) with a busy timeout."""
        if not Path(self.db_path).exists():
            raise StoreError(f"no database at {self.db_path!r}")
        connection = forksafe.connect(self.db_path, timeout=5)
        connection.execute("PRAGMA query_only = 1")
        return connection

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(connection, *args, **kwargs)`` on a worker thread."""

        def call() -> T:
            connection = self.connect()
            try:
                return fn(connection, *args, **kwargs)
            finally:
                connection.close()

        return await anyio.to_thread.run_sync(call)


@dataclass
class WebContext:
    """What the routes need: the store, the pipeline (if in process) and settings."""

    reader: StoreReader
    pipeline: Any = None
    services: dict[str, Any] = field(default_factory=dict)
    max_ingest_events: int = 10_000
    shutting_down: bool = False
    previous_stats: dict[str, tuple[float, int]] = field(default_factory=dict)
    series: SeriesCache = field(default_factory=SeriesCache)
    #: The server's connection guard (cap, evictions, header timeouts), when served by :mod:`.server`.
    connections: Any = None
    #: Runs this server started for ingest (see :mod:`.ingest_rules`) and may not see in the store
    #: yet: concurrent batches of a new run then start it once, not once each. Bounded, oldest out.
    ingest_started: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def service(self, name: str) -> Any:
        """A pipeline service, or a 503 when this server has none running."""
        if self.shutting_down:
            raise ApiError(503, "runwatch is shutting down", headers={"Retry-After": "5"})
        found = self.services.get(name)
        if found is None:
            raise ApiError(503, f"this server runs no {name} component", headers={"Retry-After": "5"})
        return found


def create_app(
    *,
    db_path: str,
    pipeline: Any = None,
    policy: SecurityPolicy | None = None,
    max_ingest_events: int = 10_000,
    static_dir: str | None = None,
) -> SecurityMiddleware:
    """Build the ASGI app (wrapped in the security middleware).

    Args:
        db_path: the SQLite store to read.
        pipeline: the running :class:`~runwatch.pipeline.Pipeline` whose
            services take ingest and websocket subscribers (``None``: read-only).
        policy: the security policy (default: loopback only, no token).
        max_ingest_events: the most events one ingest request may carry.
        static_dir: a directory of the user's own static files, served at
            ``/static/<name>`` after the dashboard's own files (a file of the
            same name as one of the dashboard's is never served); ignored
            when it does not exist.
    """
    from . import api, sessions, ws

    services = pipeline.context.services if pipeline is not None else {}
    context = WebContext(StoreReader(db_path), pipeline, services, max_ingest_events)
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
    app.include_router(api.router)
    app.include_router(sessions.router)
    app.include_router(ws.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    static = StaticFiles(directory=STATIC_DIR, follow_symlink=False)
    if static_dir is not None and Path(static_dir).is_dir():
        # Looked up in order: the dashboard's files first, so a stray directory cannot replace them.
        static.all_directories = [*static.all_directories, Path(static_dir)]
    app.mount("/static", static, name="static")
    return SecurityMiddleware(app, policy or SecurityPolicy())


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
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
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


def web_context(request: Any) -> WebContext:
    """The :class:`WebContext` of the app serving ``request`` (HTTP or websocket)."""
    context: WebContext = request.app.state.context
    return context


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

    @app.exception_handler(sqlite3.OperationalError)
    async def busy_store(request: Request, exc: sqlite3.OperationalError) -> Response:
        return _error_response(503, f"the store is unavailable: {exc}", None, {"Retry-After": "1"})
