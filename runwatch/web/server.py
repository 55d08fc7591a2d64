"""Run the web app with uvicorn on the pipeline's own event loop.

:func:`web_companion` makes a :class:`~runwatch.pipeline.thread.PipelineThread`
companion: the server starts after the pipeline and stops before it, in this
order — intake answers 503, websocket subscribers are closed with 1001 (and
their close frames sent, waiting up to :data:`CLOSE_SUBSCRIBERS_SECONDS`,
before uvicorn's own shutdown would close them with 1012), the listeners
close, open requests finish (up to ``graceful_seconds``), then the pipeline
drains. If the companion is cancelled instead (its event loop stopped under
it), the listening sockets and open connections are closed without waiting.

The server listens and accepts on sockets of its own, within a cap on open
connections and a deadline for request heads (see :mod:`.connections`).

uvicorn's loggers never run below INFO: at DEBUG the websockets protocol
under uvicorn logs raw handshake lines, query string (``?token=``) and
headers included, before any runwatch code could redact them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..config import DEFAULT_WEB_PORT, MonitorConfig
from ..sinks.websocket import LIVE_HUB
from .app import create_app
from .connections import (
    ConnectionGuard,
    accept_connections,
    default_max_connections,
    guarded_protocol,
    open_listeners,
)
from .ports import PortPlan, plan_taken_port, probe_health
from .security import DEFAULT_MAX_IMAGE_BODY_BYTES, LOOPBACK_HOSTS, SecurityPolicy
from .ws import wait_live_sockets_closed

__all__ = [
    "CLOSE_SUBSCRIBERS_SECONDS",
    "WebServer",
    "WebSettings",
    "monitor_web_companion",
    "resolve_policy",
    "web_companion",
    "web_settings_of",
]

logger = logging.getLogger("runwatch.web")

#: At shutdown, the longest wait for websocket subscribers' close frames (1001) to go out.
CLOSE_SUBSCRIBERS_SECONDS = 1.0

#: uvicorn's log levels by name (as its ``log_level`` option takes them).
_LOG_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}


@dataclass(frozen=True)
class WebSettings:
    """Where and how the web app listens.

    Attributes:
        host: the address to bind (loopback by default).
        port: the TCP port; ``0`` picks a free one.
        token: a bearer token required on data endpoints (``None``: none).
        allowed_hosts: extra ``Host`` header names to accept.
        allowed_origins: websocket origins to accept (empty: same origin only).
        max_body_bytes: the largest request body.
        max_image_body_bytes: the largest body of ``POST /api/ingest/image``
            (an image with its raw bytes; default: the largest image, 32 MiB,
            and its line of JSON).
        graceful_seconds: how long open requests may finish at shutdown.
        log_level: uvicorn's log level (a name: ``warning``, ``info``...);
            anything below ``info`` is served at ``info`` (see the module docs).
        max_connections: the most connections (HTTP and websocket) open at
            once; ``None``: half of the process's file-descriptor limit
            (``RLIMIT_NOFILE``, soft), so the host keeps the other half.
        header_timeout_seconds: how long a connection may take to send a
            complete request head before it is closed.
        body_timeout_seconds: the longest wait for the next part of a request
            body before the request is answered 408.
        static_dir: a directory of the user's own static files, served at
            ``/static/`` after the dashboard's own (``None``: none).
        session_heartbeat_timeout_seconds: silence after which a datacat
            session that heartbeated is suspended (datacat's
            ``heartbeat_timeout_seconds``).
        port_fixed: the user chose ``port``: when it is taken, fail (naming
            who holds it) rather than move to a free port. Either way, a port
            held by a runwatch serving the same store is used as it is (see
            :mod:`.ports`).
        ssl_certfile: a PEM certificate (chain) to serve HTTPS and WSS
            directly (uvicorn's ``ssl_certfile``); ``None``: plain HTTP (for
            TLS at a proxy in front, see docs/operations.md).
        ssl_keyfile: its private key (``None``: in ``ssl_certfile``).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_image_body_bytes: int = DEFAULT_MAX_IMAGE_BODY_BYTES
    graceful_seconds: float = 5.0
    log_level: str = "warning"
    max_connections: int | None = None
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    static_dir: str | None = None
    session_heartbeat_timeout_seconds: float = 60.0
    port_fixed: bool = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_connections is not None and (
            isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int)
        ):
            raise TypeError(f"max_connections must be an integer or None, got {self.max_connections!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {self.max_connections}")
        for name in ("header_timeout_seconds", "body_timeout_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")

    @property
    def scheme(self) -> str:
        """``https`` with a certificate, else ``http``."""
        return "https" if self.ssl_certfile else "http"


def uvicorn_log_level(requested: str | int) -> int:
    """The level uvicorn's loggers run at for a requested one: never below INFO.

    Raises:
        ValueError: an unknown level name.
    """
    if isinstance(requested, str):
        level = _LOG_LEVELS.get(requested.lower())
        if level is None:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}; got {requested!r}")
    else:
        level = int(requested)
    return max(level, logging.INFO)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def resolve_policy(settings: WebSettings) -> tuple[SecurityPolicy, str | None]:
    """The security policy for ``settings``, and a token generated for it if one was needed.

    Binding beyond loopback without a token generates one (printed by the
    caller), so the API is never open to the network by accident.
    """
    token = settings.token
    generated = None
    if token is None and not is_loopback(settings.host):
        token = generated = secrets.token_urlsafe(24)
    hosts = set(LOOPBACK_HOSTS) | set(settings.allowed_hosts)
    if not is_loopback(settings.host) and settings.host not in ("0.0.0.0", "::"):
        hosts.add(settings.host)
    if settings.host in ("0.0.0.0", "::") and not settings.allowed_hosts:
        hosts.add("*")  # bound to every interface with a token: names are not knowable up front
    policy = SecurityPolicy(
        token=token,
        allowed_hosts=tuple(sorted(hosts)),
        allowed_origins=settings.allowed_origins,
        max_body_bytes=settings.max_body_bytes,
        max_image_body_bytes=settings.max_image_body_bytes,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    return policy, generated


@dataclass
class WebServer:
    """A running web server.

    Attributes:
        connections: its connection guard (``connections.statistics()``: open,
            refused, evicted, timed out), or ``None``.
        scheme: ``http`` or ``https``.
        shared: another runwatch serving the same store holds the port: this
            process serves nothing, and ``url`` is that server's.
    """

    host: str
    port: int
    token: str | None
    connections: ConnectionGuard | None = None
    scheme: str = "http"
    shared: bool = False

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"


def web_settings_of(config: MonitorConfig) -> WebSettings:
    """The web server's settings for a monitor's ``config``.

    ``debug`` raises uvicorn's own logs to INFO (never DEBUG: see
    :class:`WebSettings`); otherwise WARNING.
    """
    return WebSettings(
        host=config.web_host,
        port=config.web_port,
        token=config.web_token,
        log_level="info" if config.debug else "warning",
        max_connections=config.web_max_connections,
        static_dir=config.static_dir,
        session_heartbeat_timeout_seconds=config.session_heartbeat_timeout_seconds,
        port_fixed=config.web_port not in (0, DEFAULT_WEB_PORT),
        ssl_certfile=config.web_ssl_certfile,
        ssl_keyfile=config.web_ssl_keyfile,
    )


def monitor_web_companion(
    config: MonitorConfig, *, required: bool
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[WebServer | None]]:
    """The web interface of a monitor's ``config`` (see :func:`web_companion`): what the
    composition root (:mod:`runwatch.assemble`) serves beside the pipeline."""
    return web_companion(web_settings_of(config), config.db_path, required=required)


def web_companion(
    settings: WebSettings, db_path: str, *, required: bool = True
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[WebServer | None]]:
    """A companion that serves the web app beside the given pipeline.

    A taken port is handled as :mod:`.ports` says: a runwatch serving the
    same store is used as it is (the companion yields a ``shared``
    :class:`WebServer` with that server's URL and serves nothing); anything
    else moves the server to a free port, unless ``settings.port_fixed``.
    With ``required=False`` a server that cannot listen at all is logged and
    skipped, and the companion yields ``None``: a training loop must not die
    because a dashboard port is busy.
    """

    @contextlib.asynccontextmanager
    async def companion(pipeline: Any) -> AsyncIterator[WebServer | None]:
        import uvicorn

        policy, generated = resolve_policy(settings)
        if generated:
            logger.warning("runwatch: %s is not loopback; generated an access token", settings.host)
        try:
            listeners = await _listen(settings, db_path, policy.token)
        except _PortShared as shared:
            logger.warning("%s", shared.plan.message)
            yield WebServer(settings.host, settings.port, policy.token, scheme=settings.scheme, shared=True)
            return
        except OSError as exc:
            message = str(exc)
            if required:
                raise OSError(message) from exc
            logger.error("runwatch: %s; running without the web interface", message)
            yield None
            return
        app = create_app(
            db_path=db_path,
            pipeline=pipeline,
            policy=policy,
            static_dir=settings.static_dir,
            session_heartbeat_timeout_seconds=settings.session_heartbeat_timeout_seconds,
        )
        config = uvicorn.Config(
            app,
            log_level=uvicorn_log_level(settings.log_level),
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=settings.max_body_bytes,
            # Compression would run once per connection over the same text, undoing the
            # hub's serialise-once fan-out (and costing more CPU than the JSON itself).
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=int(settings.graceful_seconds) or 1,
            server_header=False,
            ssl_certfile=settings.ssl_certfile,
            ssl_keyfile=settings.ssl_keyfile,
        )
        try:
            config.load()  # reads the certificate now: a bad one is an error at start, naming the file
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            _close_listeners(listeners)
            message = f"the web server cannot use its TLS certificate {settings.ssl_certfile!r}: {exc}"
            if required:
                raise OSError(message) from exc
            logger.error("runwatch: %s; running without the web interface", message)
            yield None
            return
        server = uvicorn.Server(config)
        guard = ConnectionGuard(
            settings.max_connections or default_max_connections(),
            settings.header_timeout_seconds,
            lambda: len(server.server_state.connections),
        )
        web_app: Any = app.app  # the FastAPI app inside the security middleware
        web_app.state.context.connections = guard
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_serve, server, name="runwatch web server")
                with anyio.fail_after(30):
                    # uvicorn offers no startup event; startup takes a few ms (nothing to bind: the
                    # listeners are ours).
                    while not server.started:
                        if server.should_exit:
                            raise OSError("the web server stopped while starting")
                        await anyio.sleep(0.005)
                protocol: Any = guarded_protocol(config.http_protocol_class, guard)

                def new_connection() -> Any:
                    return protocol(config=config, server_state=server.server_state, app_state=server.lifespan.state)

                accepting = anyio.CancelScope()

                async def accept_all() -> None:
                    with accepting:
                        async with anyio.create_task_group() as acceptors:
                            for listener in listeners:
                                acceptors.start_soon(
                                    accept_connections,
                                    listener,
                                    guard,
                                    new_connection,
                                    config.ssl,
                                    settings.header_timeout_seconds,
                                )

                tasks.start_soon(accept_all, name="runwatch web accept")
                port = listeners[0].getsockname()[1]
                try:
                    yield WebServer(settings.host, port, policy.token, guard, scheme=settings.scheme)
                except BaseException:
                    # Cancelled (the loop stops under us) or failing: nothing may be awaited here.
                    accepting.cancel()
                    _close_subscribers(app, pipeline)
                    server.should_exit = True
                    _close_connections(server)
                    raise
                _close_subscribers(app, pipeline)
                await _wait_subscribers_closed(app)
                accepting.cancel()
                _close_listeners(listeners)
                server.should_exit = True
        finally:
            _close_listeners(listeners)

    return companion


class _PortShared(Exception):
    """The port is held by a runwatch serving the same store: use that one."""

    def __init__(self, plan: PortPlan) -> None:
        super().__init__(plan.message)
        self.plan = plan


async def _listen(settings: WebSettings, db_path: str, token: str | None) -> list[socket.socket]:
    """The listening sockets for ``settings``, after deciding what a taken port means (see :mod:`.ports`).

    Raises:
        _PortShared: a runwatch serving the same store holds the port.
        OSError: the port cannot be used (naming who holds it), or nothing can be bound.
    """
    host, port = settings.host, settings.port
    try:
        return open_listeners(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port == 0:
            raise OSError(f"the web server could not listen on {host}:{port}: {exc}") from exc
    health = await anyio.to_thread.run_sync(functools.partial(probe_health, host, port, token=token))
    plan = plan_taken_port(host, port, db_path, health, fixed=settings.port_fixed, scheme=settings.scheme)
    if plan.action == "use_existing":
        raise _PortShared(plan)
    if plan.action == "fail":
        raise OSError(plan.message)
    logger.warning("%s", plan.message)
    return open_listeners(host, plan.port)


async def _serve(server: Any) -> None:
    """uvicorn on no listeners of its own: connections come from :func:`.connections.accept_connections`."""
    await server.serve(sockets=[])


def _close_subscribers(app: Any, pipeline: Any) -> None:
    """Refuse new work and ask every live subscriber's connection to close with 1001."""
    context = app.app.state.context
    context.shutting_down = True
    hub = pipeline.context.services.get(LIVE_HUB)
    if hub is not None:
        for subscriber in hub.subscribers:
            subscriber.close("server shutting down")


async def _wait_subscribers_closed(app: Any) -> None:
    """Wait, bounded, until every ``/ws`` connection has sent its close frame.

    uvicorn's shutdown closes whatever websocket the app has not closed yet
    with 1012 (about 100 ms after ``should_exit``); runwatch promises 1001.
    """
    if not await wait_live_sockets_closed(app.app.state, CLOSE_SUBSCRIBERS_SECONDS):
        logger.warning(
            "runwatch: websocket subscribers did not close within %.1f s; uvicorn closes them",
            CLOSE_SUBSCRIBERS_SECONDS,
        )


def _close_connections(server: Any) -> None:
    """Close the open connections' transports at once (the server will not shut down by itself)."""
    state = getattr(server, "server_state", None)
    for connection in list(state.connections if state is not None else ()):
        transport = getattr(connection, "transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()


def _close_listeners(listeners: list[socket.socket]) -> None:
    """Stop listening: later connection attempts are refused by the kernel. Idempotent."""
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.close()
