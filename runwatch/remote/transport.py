"""HTTP to a runwatch server: its URL checked and shown safely, keep-alive connections (one per
thread), and when to try again.

Remote mode's own transport: the standard-library client (:mod:`runwatch.client`)
stands apart from the package (nothing imports it), so the producer side
keeps this small one.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["HTTPTransport", "check_server_url", "display_url", "is_retryable", "retry_delay"]

#: Failures of a kept-alive connection the server closed while it was idle: sent once more on a new one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class HTTPTransport:
    """Keep-alive HTTP(S) connections to one server, one per thread (and per process).

    Calling it sends one request and reads the whole answer:
    ``transport(method, path, body, headers) -> (status, body)``; it raises
    ``OSError`` or ``http.client.HTTPException`` when no answer arrives.

    Args:
        base_url: ``http(s)://host[:port]`` with an optional path prefix.
        timeout: the socket timeout in seconds (connect, send, each read).
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http:// or https:// URL")
        self._kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port, self._prefix = parts.hostname, parts.port, parts.path.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()
        self._pid = os.getpid()

    def __call__(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, bytes]:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._local.pid != os.getpid():  # a forked child never shares a socket
            connection = self._connect()
        reused = connection.sock is not None
        try:
            return self._exchange(connection, method, path, body, headers)
        except _STALE:
            self._drop(connection)
            if not reused:
                raise
        except BaseException:
            self._drop(connection)
            raise
        connection = self._connect()
        try:
            return self._exchange(connection, method, path, body, headers)
        except BaseException:
            self._drop(connection)
            raise

    def _connect(self) -> http.client.HTTPConnection:
        connection = self._kind(self._host, self._port, timeout=self.timeout)
        with self._lock:
            self._open.add(connection)
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

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
        return response.status, response.read()

    def _drop(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        with self._lock:
            self._open.discard(connection)
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None

    def close(self) -> None:
        """Close every connection (of every thread); a request under way fails."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()


def retry_delay(attempt: int, *, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """The wait before retry number ``attempt`` (0 first): doubling from ``base_seconds`` up to
    ``max_seconds``, times a factor between 0.5 and 1 from ``jitter`` in [0, 1) (producers that
    failed together spread out)."""
    return min(max_seconds, base_seconds * 2.0 ** min(attempt, 60)) * (0.5 + 0.5 * jitter)


def is_retryable(status: int) -> bool:
    """Whether an answer with this status may succeed later (the request was not applied)."""
    return status >= 500 or status in (408, 425, 429)


def check_server_url(url: str) -> str:
    """``url`` without a trailing slash, once it is an ``http(s)://host[:port][/prefix]`` URL without credentials.

    Raises:
        ValueError: another scheme, no host, a query or fragment, or a user or
            password in it (a token goes in the ``token`` setting, never in a URL).
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # parses it: a bad port raises here
    except ValueError:
        raise ValueError("the server URL is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the server URL must start with http:// or https:// and name a host, got {parts.scheme}://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the server URL must not hold a user or password: pass the token as the token setting")
    if parts.query or parts.fragment:
        raise ValueError("the server URL must not have a query or fragment")
    del port
    return url.rstrip("/")


def display_url(url: str) -> str:
    """The URL as it may be shown: scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
