"""create_session(): a new session on a server, blocking, queued or asynchronous."""

from __future__ import annotations

from typing import Any

from ._async import AsyncSession
from ._client import DatacatClient
from ._options import is_port
from ._session import Session
from ._wire import DEFAULT_BASE_URL

__all__ = ["create_session"]


def create_session(
    base_url: str = DEFAULT_BASE_URL,
    daemon_port: str | int = "auto",
    product: str | None = None,
    version: str | None = None,
    async_mode: bool = False,
    queue_size: int = 10_000,
    *,
    token: str | None = None,
    blocking: bool = True,
    **meta: Any,
) -> Session | AsyncSession:
    """Create a session on the server at ``base_url`` and return it.

    Args:
        base_url: the server (datacat's default ``http://localhost:9090``).
        daemon_port: accepted for datacat's signature (there is no daemon).
        product: the application (default: the program's name).
        version: its version (default ``"unknown"``).
        async_mode: ``True`` returns an :class:`AsyncSession`: calls are queued
            (at most ``queue_size``, the newest dropped and counted beyond) and
            sent by a background thread.
        queue_size: the queue's bound in non-blocking modes.
        token: a bearer token, when the server requires one.
        blocking: ``False`` returns a :class:`Session` whose calls are queued and
            sent in batches (see the package docs).
        meta: ``hostname``, ``metadata``, ``heartbeat_timeout_seconds``; other
            keywords go into ``metadata``.

    Raises:
        ValueError: ``product`` or ``version`` is an empty string.
        DatacatError: the server refused or is unreachable.
    """
    if not is_port(daemon_port):
        raise TypeError(f"daemon_port must be 'auto' or a port number, got {daemon_port!r}")
    queued = async_mode or not blocking
    client = DatacatClient(base_url, daemon_port, token=token, blocking=not queued, max_queue=queue_size)
    try:
        session_id = client.create_session(product=product, version=version, **meta)
    except BaseException:
        client.close(0)
        raise
    session = Session(client, session_id, owns_client=True)
    return AsyncSession(session, queue_size=queue_size) if async_mode else session
