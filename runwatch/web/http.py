"""What every route of the web app shares: its context, errors, JSON responses, store reads, parameters.

Each REST endpoint follows one path: parse and validate (query parameters
here, bodies in :mod:`runwatch.wire`), ask the store or the pipeline's
services, serialise. Route modules import from here and from nothing else of
``runwatch.web`` but :mod:`.series` and :mod:`.security` (and :mod:`.datacat`
from :mod:`.sessions`: they share the ``/api/sessions`` paths); :mod:`.app`
assembles them.
"""

from __future__ import annotations

import functools
import math
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import anyio
import orjson
from fastapi.responses import Response

from ..events import to_epoch_seconds
from ..exceptions import UnknownRunError, WireError
from ..pipeline.component import ServiceKey, Services
from ..store.base import Store

__all__ = [
    "CURSOR_SCHEMA",
    "ERROR_SCHEMA",
    "TIME_SCHEMA",
    "ApiError",
    "JSONResponse",
    "WebContext",
    "body_schema",
    "cursor_param",
    "error_responses",
    "iso",
    "read",
    "time_param",
    "web_context",
]

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
ERROR_DESCRIPTIONS: Final = {
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
_CURSOR: Final = re.compile(r"[0-9]{1,18}")  # event ids; ASCII digits only, within 64 bits
#: How /openapi.json describes a cursor and a time (validated by the routes, with their own messages).
CURSOR_SCHEMA: dict[str, Any] = {"pattern": "^[0-9]{0,18}$"}
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,6})?$"}, {"format": "date-time"}],
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all with the error body."""
    return {
        status: {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


def body_schema(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads its JSON body itself.

    Documented as required even where an empty body is taken: every write must
    be sent as ``application/json`` (415 otherwise), which keeps browsers from
    posting to the API cross-site without a CORS preflight.
    """
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


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


@dataclass
class WebContext:
    """What the routes need: the store, the pipeline (if in process) and settings."""

    store: Store
    pipeline: Any = None
    services: Services = field(default_factory=Services)
    max_ingest_events: int = 10_000
    shutting_down: bool = False
    previous_stats: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: The server's connection guard (cap, evictions, header timeouts), when served by :mod:`.server`.
    connections: Any = None
    #: Runs this server started for ingest (see :mod:`.ingest`) and may not see in the store
    #: yet: concurrent batches of a new run then start it once, not once each. Bounded, oldest out.
    ingest_started: OrderedDict[str, None] = field(default_factory=OrderedDict)
    #: The largest request body, also once a gzip body is decompressed.
    max_body_bytes: int = 1024 * 1024
    #: Silence after which a datacat session that heartbeated is suspended (its own timeout wins).
    session_heartbeat_timeout_seconds: float = 60.0

    def service(self, key: ServiceKey[T]) -> T:
        """A pipeline service, or a 503 when this server has none running."""
        if self.shutting_down:
            raise ApiError(503, "runwatch is shutting down", headers={"Retry-After": "5"})
        found = self.services.get(key)
        if found is None:
            raise ApiError(503, f"this server runs no {key.name} component", headers={"Retry-After": "5"})
        return found


def web_context(request: Any) -> WebContext:
    """The :class:`WebContext` of the app serving ``request`` (HTTP or websocket)."""
    context: WebContext = request.app.state.context
    return context


async def read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store read on a worker thread; argument errors become 422 (unknown runs stay 404)."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
    except (UnknownRunError, WireError):
        raise
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc)) from None


def time_param(name: str, value: str | None) -> float | None:
    """A time query parameter: epoch seconds or ISO-8601 (``None`` or empty: none).

    Raises:
        ApiError: 422 naming the parameter.
    """
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ApiError(422, f"{name} must be a finite time, got {value!r}", name)
        return number
    try:
        parsed = datetime.fromisoformat(value)
        return to_epoch_seconds(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), name)
    except ValueError:
        raise ApiError(
            422, f"{name} must be seconds since the epoch or an ISO-8601 time, got {value!r}", name
        ) from None


def cursor_param(value: str | None, name: str) -> int | None:
    """A cursor query parameter (a ``next_cursor`` this server returned), or ``None``.

    Raises:
        ApiError: 422 naming the parameter.
    """
    if value is None or value == "":
        return None
    if not _CURSOR.fullmatch(value):
        raise ApiError(422, f"{name} is not one this server returned", name)
    return int(value)
