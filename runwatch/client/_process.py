"""Process hooks of the clients: deliver what is queued at interpreter exit, start afresh in a forked child."""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from typing import Protocol

__all__ = ["register_client", "unregister_client"]

logger = logging.getLogger("runwatch.client")


class _Client(Protocol):
    def close(self, timeout: float | None = None) -> None: ...

    def _after_fork_in_child(self) -> None: ...


_open_clients: weakref.WeakSet[_Client] = weakref.WeakSet()


def register_client(client: _Client) -> None:
    """Close ``client`` at interpreter exit and reset it in forked children (until unregistered)."""
    _open_clients.add(client)


def unregister_client(client: _Client) -> None:
    """Forget ``client`` (it closed)."""
    _open_clients.discard(client)


def _close_open_clients() -> None:
    """At interpreter exit: deliver what is queued, each client within its exit_timeout_seconds."""
    for client in list(_open_clients):
        try:
            client.close()
        except Exception:  # one client's trouble must not keep the others from flushing
            logger.exception("runwatch client: closing %r at exit failed", client)


def _reset_clients_in_child() -> None:
    for client in list(_open_clients):
        client._after_fork_in_child()


atexit.register(_close_open_clients)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_clients_in_child)
