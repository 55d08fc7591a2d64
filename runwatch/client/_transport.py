"""The HTTP transport (I/O): keep-alive connections, one per thread and per process."""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

__all__ = ["HTTPTransport", "Transport"]

#: ``transport(method, path, body, headers) -> (status, body)``. ``path`` starts
#: with ``/``; ``body`` is bytes or ``None``. Raises ``OSError`` or
#: ``http.client.HTTPException`` when no answer arrives.
Transport = Callable[[str, str, bytes | None, Mapping[str, str]], tuple[int, bytes]]


class HTTPTransport:
    """Keep-alive HTTP(S) connections to one server, one per thread (and per process).

    A request that fails on a connection that was reused (the server closed it
    while idle) is sent once more on a new connection.

    Args:
        base_url: ``http://host:port`` with an optional path prefix.
        timeout: the socket timeout in seconds (connect, send, each read).
    """

    _STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        self.base_url = base_url
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[http.client.HTTPConnection] = set()
        self._pid = os.getpid()

    def _new_connection(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        connection = kind(self._host, self._port, timeout=self.timeout)
        with self._lock:
            self._connections.add(connection)
        self._local.connection = connection
        self._local.pid = self._pid
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        with self._lock:
            self._connections.discard(connection)
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def __call__(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """Send one request and read the whole answer; returns ``(status, body)``."""
        if os.getpid() != self._pid:  # a forked child must not share its parent's sockets
            self.reset_after_fork()
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "pid", None) != self._pid:
            connection = None
        reused = connection is not None and connection.sock is not None
        if connection is None:
            connection = self._new_connection()
        try:
            return self._exchange(connection, method, path, body, headers)
        except self._STALE:
            self._drop(connection)
            if not reused:
                raise
        except BaseException:
            self._drop(connection)
            raise
        connection = self._new_connection()
        try:
            return self._exchange(connection, method, path, body, headers)
        except BaseException:
            self._drop(connection)
            raise

    def _exchange(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> tuple[int, bytes]:
        connection.request(method, self._prefix + path, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read()
        return response.status, data

    def close(self) -> None:
        """Close every connection (of every thread)."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            connection.close()

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's connections (closing only this process's copies)."""
        self._lock = threading.Lock()
        connections, self._connections = self._connections, set()
        self._local = threading.local()
        self._pid = os.getpid()
        for connection in connections:
            # Closing the child's copy of the descriptor sends nothing: the parent still holds it.
            connection.close()
