"""Security policy of the web app, as one pure ASGI middleware.

In order, for every HTTP request and websocket handshake:

1. **Host allowlist** (against DNS rebinding): the ``Host`` header must name
   an allowed host (loopback names by default).
2. **Websocket Origin allowlist**: a browser handshake must come from an
   allowed origin (by default the same host and port it connects to).
   Programs that send no ``Origin`` are not browsers and pass on to 3.
3. **Bearer token**, when one is configured: ``Authorization: Bearer <token>``
   or ``?token=<token>``, compared in constant time. The dashboard's page and
   static files are served without it (they hold no data).
4. **Writes** (POST, PUT, PATCH, DELETE) to a route that takes them must be
   ``application/json`` (415) and their bodies are read up to
   ``max_body_bytes`` (413 past it, whether announced by ``Content-Length``
   or streamed), each part within ``body_timeout_seconds`` of the last (408
   otherwise: a body that trickles in must not hold a connection for ever).
   The one exception is ``POST /api/ingest/image`` (an image too large for a
   batch, with its raw bytes): its body must be
   ``application/vnd.runwatch.image`` and is read up to
   ``max_image_body_bytes`` (an image of up to 32 MiB and its line of JSON),
   under the same rules otherwise.
   A write to a path whose routes take other methods only goes on to the app
   unread (405 naming them).

On the paths of datacat's contract (:func:`is_datacat_path`: ``/health``,
``/api/sessions`` and below but runwatch's ``/batch``, ``/api/data/sessions``)
writes take any Content-Type, as datacat's server does, rejections are plain
text as datacat's are (``401 Unauthorized``), and ``/health`` needs no token
for any method.

Rejections are JSON ``{"error": {...}}`` bodies elsewhere; the token never appears in
logs or responses: every query parameter whose decoded name is ``token`` (in
any case or percent-encoding) is removed from the request's scope before
anything else (uvicorn's access and websocket logs print the scope's query
string).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import anyio
import orjson
from starlette.routing import Match

from ..media.images import MAX_IMAGE_BYTES
from ..wire.ingest import IMAGE_BODY_TYPE, IMAGE_INGEST_PATH, MAX_IMAGE_HEADER_BYTES

__all__ = [
    "DEFAULT_MAX_IMAGE_BODY_BYTES",
    "LOOPBACK_HOSTS",
    "SecurityMiddleware",
    "SecurityPolicy",
    "allowed_methods",
    "is_datacat_path",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: The largest body of ``POST /api/ingest/image`` by default: the largest image and its line of JSON.
DEFAULT_MAX_IMAGE_BODY_BYTES = MAX_IMAGE_BYTES + MAX_IMAGE_HEADER_BYTES + 1
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PUBLIC_PATHS = ("/", "/index.html", "/favicon.ico")
_PUBLIC_PREFIXES = ("/static/",)


def is_datacat_path(path: str) -> bool:
    """Whether ``path`` belongs to datacat's contract (its rules for bodies and errors apply)."""
    if path == "/health" or path == "/api/data/sessions" or path.startswith("/api/data/sessions/"):
        return True
    if path == "/api/sessions":
        return True
    if not path.startswith("/api/sessions/"):
        return False
    session_id, _, operation = path[len("/api/sessions/") :].partition("/")
    return operation != "batch"  # runwatch's own exactly-once route


@dataclass(frozen=True)
class SecurityPolicy:
    """What the middleware enforces.

    Attributes:
        token: the bearer token required on data endpoints, or ``None``.
        allowed_hosts: acceptable ``Host`` header names (without port);
            ``"*"`` allows any.
        allowed_origins: acceptable websocket ``Origin`` values
            (``scheme://host[:port]``); empty means "same as the Host header".
        max_body_bytes: the largest request body accepted.
        max_image_body_bytes: the largest body of ``POST /api/ingest/image``
            (an image with its raw bytes); every other write stays within
            ``max_body_bytes``.
        body_timeout_seconds: the longest wait for the next part of a request body.
    """

    token: str | None = None
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_image_body_bytes: int = DEFAULT_MAX_IMAGE_BODY_BYTES
    body_timeout_seconds: float = 10.0
    extra_public_paths: tuple[str, ...] = field(default=())


def _headers(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}


def _host_name(host_header: str) -> str:
    """The host part of a ``Host`` header, lowercased (the whole header when it is malformed)."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        end = host.find("]")
        rest = host[end + 1 :] if end != -1 else ""
        if end != -1 and (not rest or (rest[0] == ":" and rest[1:].isdigit())):
            return host[: end + 1]
        return host
    if host.count(":") == 1:
        name, port = host.split(":")
        return name if port.isdigit() else host
    return host


class SecurityMiddleware:
    """Applies a :class:`SecurityPolicy` in front of an ASGI app."""

    def __init__(self, app: ASGIApp, policy: SecurityPolicy) -> None:
        self.app = app
        self.policy = policy
        self._token = policy.token.encode() if policy.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        query_token = _pop_query_token(scope)
        datacat = kind == "http" and is_datacat_path(scope.get("path", ""))
        problem = self._check(scope, headers, kind, query_token)
        if problem is not None:
            status, message = problem
            if datacat and status == 401:
                message = "Unauthorized"
            await _reject(kind, send, status, message, text=datacat)
            return
        if kind == "http" and scope["method"] in _WRITE_METHODS and self._routes_write(scope):
            await self._guard_write(scope, receive, send, headers, datacat=datacat)
            return
        await self.app(scope, receive, send)

    def _routes_write(self, scope: Scope) -> bool:
        """Whether to guard this write: unless routes take this path but not this method (then 405, unread).

        Fails closed: an app or a path whose routes cannot be seen is guarded.
        """
        router = getattr(self.app, "router", None)
        if router is None:
            return True
        allowed = allowed_methods(router.routes, scope)
        return not allowed or scope["method"] in allowed

    def _check(
        self, scope: Scope, headers: dict[str, str], kind: str, query_token: str | None
    ) -> tuple[int, str] | None:
        policy = self.policy
        host = _host_name(headers.get("host", ""))
        if "*" not in policy.allowed_hosts and host not in policy.allowed_hosts:
            return 400, "invalid Host header"
        if kind == "websocket" and "origin" in headers:
            origin = headers["origin"].rstrip("/").lower()
            allowed = policy.allowed_origins or (
                f"http://{headers.get('host', '')}",
                f"https://{headers.get('host', '')}",
            )
            if origin not in {o.lower() for o in allowed}:
                return 403, "origin not allowed"
        if self._token is not None and not self._is_public(scope) and not self._token_ok(headers, query_token):
            return 401, "missing or invalid bearer token"
        return None

    def _is_public(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == "/health":
            return True  # datacat's health check needs no key, whatever the method
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            return False
        return path in _PUBLIC_PATHS or path in self.policy.extra_public_paths or path.startswith(_PUBLIC_PREFIXES)

    def _token_ok(self, headers: dict[str, str], query_token: str | None) -> bool:
        assert self._token is not None
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            supplied = authorization[7:].strip()
        else:
            supplied = query_token or ""
        # Constant time: how much of a guess matches must not show in the response time.
        return hmac.compare_digest(supplied.encode(), self._token)

    async def _guard_write(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], *, datacat: bool = False
    ) -> None:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        expected, limit = "application/json", self.policy.max_body_bytes
        if scope.get("path") == IMAGE_INGEST_PATH:  # the one route for media: its own type and bound
            expected, limit = IMAGE_BODY_TYPE, self.policy.max_image_body_bytes
        if content_type != expected and not datacat:
            await _reject("http", send, 415, f"request body must be {expected}")
            return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _reject("http", send, 413, f"request body larger than {limit} bytes", text=datacat)
            return
        # Read the whole body (bounded) before the app sees it, so a body that
        # grows past the limit mid-stream is refused before anything is stored.
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message | None = None
            with anyio.move_on_after(self.policy.body_timeout_seconds):
                message = await receive()
            if message is None:
                timeout = self.policy.body_timeout_seconds
                late = f"request body not received within {timeout} s"
                await _reject("http", send, 408, late, close=True, text=datacat)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reject("http", send, 413, f"request body larger than {limit} bytes", text=datacat)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def allowed_methods(routes: Any, scope: Scope) -> set[str]:
    """The HTTP methods the routes (searched through included routers) take at the scope's path."""
    found: set[str] = set()
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        methods = getattr(route, "methods", None)
        # FastAPI wraps an included router (its routes are the original router's).
        nested = getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", None)
        if methods:
            found |= set(methods)
        elif nested:
            found |= allowed_methods(nested, {**scope, **child})
    return found


def _pop_query_token(scope: Scope) -> str | None:
    """Remove every ``token`` parameter from the scope's query string (so no log prints it); return the first value.

    A parameter is the token's when its name, percent-decoded (however many
    times) and lowercased, is ``token``: ``%74oken``, ``TOKEN`` and
    ``t%256Fken`` are all removed. Only a name that decodes once to exactly
    ``token`` (what the app's own query parsing would see) carries a token.
    """
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return None
    kept: list[bytes] = []
    tokens: list[str] = []
    for part in raw.split(b"&"):
        name, _, value = part.partition(b"=")
        decoded = unquote_plus(name.decode("latin-1"))
        if decoded == "token":
            tokens.append(unquote_plus(value.decode("latin-1")))
        elif _names_token(decoded):
            pass  # never logged, never a credential
        else:
            kept.append(part)
    if len(kept) == raw.count(b"&") + 1:
        return None
    scope["query_string"] = b"&".join(kept)
    return tokens[0] if tokens else None


def _names_token(name: str) -> bool:
    """Whether a (once-decoded) parameter name is ``token`` in any case or further percent-encoding."""
    while True:
        if name.lower() == "token":
            return True
        decoded = unquote_plus(name)
        if decoded == name:
            return False
        name = decoded


async def _reject(kind: str, send: Send, status: int, message: str, *, close: bool = False, text: bool = False) -> None:
    """Refuse a request (an error body: JSON, or datacat's plain ``text``) or a handshake (close 1008);
    ``close`` ends the connection after it."""
    if kind == "websocket":
        # Closing before accepting makes the server answer the handshake with 403.
        await send({"type": "websocket.close", "code": 1008, "reason": message})
        return
    if text:
        body = (message + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-length", str(len(body)).encode()),
        ]
    else:
        body = orjson.dumps({"error": {"status": status, "message": message, "field": None}})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the request will not be read: the connection cannot serve another
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
