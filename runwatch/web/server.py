"""Run the web app with uvicorn on the pipeline's own event loop.

:func:`web_companion` makes a :class:`~runwatch.pipeline.thread.PipelineThread`
companion: the server starts after the pipeline and stops before it, in this
order — intake answers 503, websocket subscribers are closed with 1001, open
requests finish (up to ``graceful_seconds``), then the pipeline drains.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..sinks.websocket import SERVICE_NAME as HUB
from .security import LOOPBACK_HOSTS, SecurityPolicy

__all__ = ["WebServer", "WebSettings", "resolve_policy", "web_companion"]

logger = logging.getLogger("runwatch.web")


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
        graceful_seconds: how long open requests may finish at shutdown.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    graceful_seconds: float = 5.0
    log_level: str = "warning"
    extra: dict[str, Any] = field(default_factory=dict)


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
    )
    return policy, generated


@dataclass
class WebServer:
    """A running web server."""

    host: str
    port: int
    token: str | None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"


def web_companion(
    settings: WebSettings, db_path: str, *, required: bool = True
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[WebServer | None]]:
    """A companion that serves the web app beside the given pipeline.

    With ``required=False`` a server that cannot listen (the port is taken)
    is logged and skipped, and the companion yields ``None``: a training
    loop must not die because a dashboard port is busy.
    """

    @contextlib.asynccontextmanager
    async def companion(pipeline: Any) -> AsyncIterator[WebServer | None]:
        import uvicorn

        from .app import create_app

        policy, generated = resolve_policy(settings)
        if generated:
            logger.warning("runwatch: %s is not loopback; generated an access token", settings.host)
        app = create_app(db_path=db_path, pipeline=pipeline, policy=policy)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=settings.max_body_bytes,
            # Compression would run once per connection over the same text, undoing the
            # hub's serialise-once fan-out (and costing more CPU than the JSON itself).
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=int(settings.graceful_seconds) or 1,
            server_header=False,
        )
        server = uvicorn.Server(config)
        async with anyio.create_task_group() as tasks:
            failed: list[BaseException] = []

            async def serve() -> None:
                try:
                    await server.serve()
                except SystemExit as exc:  # uvicorn exits the process when it cannot bind
                    failed.append(exc)

            tasks.start_soon(serve, name="runwatch web server")
            with anyio.fail_after(30):
                # uvicorn offers no startup event; startup takes a few ms.
                while not server.started:
                    if failed or server.should_exit:
                        break
                    await anyio.sleep(0.005)
            if not server.started:
                message = f"the web server could not listen on {settings.host}:{settings.port}"
                if required:
                    raise OSError(message)
                logger.error("runwatch: %s; running without the web interface", message)
                yield None
                return
            port = server.servers[0].sockets[0].getsockname()[1]
            try:
                yield WebServer(settings.host, port, policy.token)
            finally:
                context = app.app.state.context  # type: ignore[attr-defined]
                context.shutting_down = True
                hub = pipeline.context.services.get(HUB)
                if hub is not None:
                    for subscriber in hub.subscribers:
                        subscriber.close("server shutting down")
                server.should_exit = True

    return companion
