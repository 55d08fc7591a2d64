"""The web server's sockets: listeners of its own, a cap on open connections, a deadline for request heads.

uvicorn, left to itself, accepts every connection the kernel hands it and
waits for a request head as long as the client likes. Around a training loop
that is a way to take the process's file descriptors away from it: about
1,100 idle sockets, each with half a request head, exhaust the common 1,024
descriptor limit, and then the training loop's own ``open()`` fails. A token
does not help (the connection is accepted before any header is read). So the
server here:

- binds its listening sockets itself and accepts one connection at a time
  (``loop.sock_accept``), handing each to uvicorn's protocol with
  ``loop.connect_accepted_socket``. Before the hand-over, with
  ``max_connections`` connections open (HTTP and websocket alike), the
  connection that has waited longest for a request head is closed to make
  room (*evicted*); if every open connection is busy (a request in progress,
  a websocket), the new one is closed at once (*refused*). Both are counted.
  The default cap is half of ``RLIMIT_NOFILE``'s soft limit: the other half
  stays the host's.
- closes a connection that has not sent a complete request head within
  ``header_timeout_seconds`` of opening (or of its previous response, on a
  kept-alive connection). uvicorn's own keep-alive timer stops at the first
  byte of a new request, so a partial head would otherwise hold the
  connection for ever.
- after ``os.fork()``, closes the child's copies of every listening and
  accepted socket: a child (a DataLoader worker) holding them would keep the
  port accepting after the parent closed it, keep the next server from
  binding it, and keep closed connections open for their clients.

How a request head is seen complete rests on two names uvicorn's HTTP
protocols (h11, httptools) share: ``cycle``, the request/response cycle
created when a head is parsed, and ``on_response_complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl as ssl_module
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio

__all__ = [
    "ConnectionGuard",
    "ConnectionStatistics",
    "accept_connections",
    "default_max_connections",
    "guarded_protocol",
    "open_listeners",
]

logger = logging.getLogger("runwatch.web")

#: After ``accept()`` failed (no descriptors left, say), the pause before the next try.
ACCEPT_RETRY_SECONDS = 0.5

#: Sockets a forked child must not keep: every listener, every accepted connection.
_inherited_by_children: weakref.WeakSet[socket.socket] = weakref.WeakSet()
_fork_hook_installed = False


def default_max_connections(soft_limit: int | None = None) -> int:
    """Half the process's descriptor limit (``RLIMIT_NOFILE`` soft): the other half is the host's.

    Args:
        soft_limit: the limit to take half of; ``None`` reads the process's own.
    """
    if soft_limit is None:
        try:
            import resource
        except ImportError:  # no resource module (Windows): a conservative fixed cap
            return 512
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit == resource.RLIM_INFINITY:
            return 1 << 16
    return max(1, soft_limit // 2)


class ConnectionStatistics(NamedTuple):
    """The web server's connection counters."""

    open_connections: int
    max_connections: int
    accepted_connections: int
    refused_connections: int
    evicted_connections: int
    header_timeouts: int
    accept_errors: int


class ConnectionGuard:
    """Caps a server's open connections and closes those whose request head is late.

    Args:
        max_connections: the most connections open at once (HTTP and websocket).
        header_timeout_seconds: how long a connection may take to send a
            complete request head.
        open_connections: counts the connections open now (uvicorn's own set,
            which follows a connection from HTTP to websocket).
    """

    def __init__(
        self, max_connections: int, header_timeout_seconds: float, open_connections: Callable[[], int]
    ) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        if not header_timeout_seconds > 0:
            raise ValueError(f"header_timeout_seconds must be positive, got {header_timeout_seconds}")
        self.max_connections = max_connections
        self.header_timeout_seconds = header_timeout_seconds
        self._open_connections = open_connections
        # Connections waiting for a request head, longest first, with the timer that closes them.
        self._waiting: dict[Any, asyncio.TimerHandle] = {}
        self.accepted = 0
        self.refused = 0
        self.evicted = 0
        self.header_timeouts = 0
        self.accept_errors = 0

    def make_room(self) -> bool:
        """Before taking a new connection: whether there is room, evicting the longest-waiting idle one if needed.

        Returns:
            ``False`` when the cap is reached and every open connection is
            busy: the caller closes the new connection (counted as refused).
        """
        if self._open_connections() < self.max_connections:
            self.accepted += 1
            return True
        if self._waiting:
            oldest = next(iter(self._waiting))
            self._close(oldest)
            self.evicted += 1
            _log_at_powers_of_two(
                self.evicted, "closed %d connection(s) waiting for a request head, to stay at %d", self.max_connections
            )
            self.accepted += 1
            return True
        self.refused += 1
        _log_at_powers_of_two(
            self.refused, "refused %d connection(s): %d connections were open, all busy", self.max_connections
        )
        return False

    def wait_for_head(self, protocol: Any) -> None:
        """``protocol``'s connection now waits for a request head: start its deadline."""
        self._cancel_timer(protocol)
        loop = asyncio.get_running_loop()
        self._waiting[protocol] = loop.call_later(self.header_timeout_seconds, self._head_timed_out, protocol)

    def head_received(self, protocol: Any) -> None:
        """A complete request head arrived (or the connection became a websocket)."""
        self._cancel_timer(protocol)

    def forget(self, protocol: Any) -> None:
        """The connection is gone."""
        self._cancel_timer(protocol)

    def waiting_for_head(self, protocol: Any) -> bool:
        """Whether ``protocol``'s connection is waiting for a request head."""
        return protocol in self._waiting

    def accept_failed(self, error: OSError) -> None:
        """``accept()`` failed (out of descriptors, say): counted, logged now and then."""
        self.accept_errors += 1
        if self.accept_errors & (self.accept_errors - 1) == 0:
            logger.error("runwatch: accepting a web connection failed (%d time(s)): %s", self.accept_errors, error)

    def statistics(self) -> ConnectionStatistics:
        """The counters now."""
        return ConnectionStatistics(
            open_connections=self._open_connections(),
            max_connections=self.max_connections,
            accepted_connections=self.accepted,
            refused_connections=self.refused,
            evicted_connections=self.evicted,
            header_timeouts=self.header_timeouts,
            accept_errors=self.accept_errors,
        )

    def _head_timed_out(self, protocol: Any) -> None:
        self._waiting.pop(protocol, None)
        self.header_timeouts += 1
        self._close(protocol)

    def _close(self, protocol: Any) -> None:
        self._cancel_timer(protocol)
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.abort()  # at once: a client that sends nothing would never drain a graceful close

    def _cancel_timer(self, protocol: Any) -> None:
        timer = self._waiting.pop(protocol, None)
        if timer is not None:
            timer.cancel()


def _log_at_powers_of_two(count: int, message: str, limit: int) -> None:
    # 1, 2, 4, 8...: a flood of connections must not become a flood of log lines.
    if count & (count - 1) == 0:
        logger.warning("runwatch: " + message, count, limit)


def guarded_protocol(base: type[asyncio.Protocol], guard: ConnectionGuard) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol class) reporting to ``guard`` when a connection waits for a request head."""

    # A class built on a base chosen at run time (uvicorn's h11 or httptools protocol): mypy cannot check it.
    class GuardedProtocol(base):  # type: ignore[valid-type,misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            guard.wait_for_head(self)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if guard.waiting_for_head(self) and self._request_started():
                guard.head_received(self)

        def on_response_complete(self) -> None:
            finished = self.cycle
            super().on_response_complete()
            # A pipelined request may have started at once; otherwise the next head is awaited.
            if self.cycle is finished and not self.transport.is_closing():
                guard.wait_for_head(self)

        def connection_lost(self, exc: Exception | None) -> None:
            guard.forget(self)
            super().connection_lost(exc)

        def _request_started(self) -> bool:
            if self.transport.get_protocol() is not self:  # upgraded: a websocket now
                return True
            cycle = self.cycle
            return cycle is not None and not cycle.response_complete

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def open_listeners(host: str, port: int, backlog: int = 2048) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host``:``port`` (one per address it resolves to).

    Raises:
        OSError: the address cannot be resolved or bound (the port is taken).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise
    for sock in listeners:
        _keep_from_children(sock)
    return listeners


async def accept_connections(
    listener: socket.socket,
    guard: ConnectionGuard,
    protocol_factory: Callable[[], asyncio.Protocol],
    ssl: ssl_module.SSLContext | None = None,
    handshake_timeout_seconds: float = 10.0,
) -> None:
    """Accept connections on ``listener`` until cancelled, each within ``guard``'s cap.

    With ``ssl``, each connection's TLS handshake runs in its own task (a
    client that never finishes it must not hold up the next accept), bounded
    by ``handshake_timeout_seconds``; handshakes under way count against the cap.
    """
    loop = asyncio.get_running_loop()
    handshaking = 0

    async def hand_over(connection: socket.socket) -> None:
        nonlocal handshaking
        try:
            await loop.connect_accepted_socket(
                protocol_factory, connection, ssl=ssl, ssl_handshake_timeout=handshake_timeout_seconds
            )
        except (OSError, TimeoutError):  # the client left, failed or stalled the handshake
            connection.close()
        finally:
            handshaking -= 1

    async with anyio.create_task_group() as handshakes:
        while True:
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS...: try again shortly, never spin
                guard.accept_failed(exc)
                await anyio.sleep(ACCEPT_RETRY_SECONDS)
                continue
            _keep_from_children(connection)
            if handshaking >= guard.max_connections or not guard.make_room():
                connection.close()
                continue
            if ssl is None:
                try:
                    await loop.connect_accepted_socket(protocol_factory, connection)
                except OSError:  # the client left before the hand-over
                    connection.close()
                continue
            handshaking += 1
            handshakes.start_soon(hand_over, connection)


def _keep_from_children(sock: socket.socket) -> None:
    """Close ``sock`` in any child this process forks from now on."""
    global _fork_hook_installed
    _inherited_by_children.add(sock)
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_close_inherited_sockets)


def _close_inherited_sockets() -> None:
    """In a forked child: close its copies of the web server's sockets (the parent's stay open)."""
    for sock in list(_inherited_by_children):
        with contextlib.suppress(OSError):
            sock.close()
    _inherited_by_children.clear()
