"""A datacat-compatible HTTP client for runwatch sessions (standard library only).

Two ways to use it (see docs/sessions.md for the REST contract):

* :func:`create_session` returns a :class:`Session`, the seed's high-level API
  (state, events, metrics, exceptions, a heartbeat monitor).
* :class:`DatacatClient` is the low-level API: one method per endpoint.

**Blocking mode** (the default, as in datacat): each call is one HTTP request
on a keep-alive connection of the calling thread; a 4xx answer raises
:class:`DatacatError`, an unreachable server :class:`DatacatConnectionError`.

**Non-blocking mode** (``blocking=False``): a call checks its arguments
(``TypeError``/``ValueError`` at the call), copies them into a bounded queue
and returns in about a microsecond. A sender thread posts them in batches to
``POST /api/sessions/{id}/batch``; each batch has a client-unique ``batch_id``
that it keeps across retries, so the server applies it once. When the server
is unreachable (or answers 5xx/429) the batch is retried with capped
exponential backoff while new calls wait in the queue; when the queue is full
the newest call is dropped and counted. runwatch's own trouble never raises
into the application and never blocks it: see :meth:`DatacatClient.statistics`.
At interpreter exit the queue is flushed with a deadline; what is still
undelivered then is written to ``spool_dir`` (when given) and sent by the next
client that uses the same directory.

Fork safety: a forked child gets an empty queue, a fresh sender thread on its
first call, new connections and new batch ids; it never touches its parent's
sockets or batches.

This module imports nothing but the standard library, so applications can
use it without the server's dependencies.

Exceptions::

    DatacatError                      an answer >= 400 (status, message, field)
     ├── DatacatConnectionError (ConnectionError)   no answer: status is None
     └── ClientClosedError (RuntimeError)           a blocking call after close()
"""

from __future__ import annotations

import atexit
import http.client
import itertools
import json
import logging
import math
import numbers
import os
import random
import socket
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import quote, urlsplit

__all__ = [
    "Batch",
    "ClientClosedError",
    "ClientStatistics",
    "DatacatClient",
    "DatacatConnectionError",
    "DatacatError",
    "HTTPTransport",
    "HeartbeatWatch",
    "Session",
    "Transport",
    "backoff_delay",
    "create_session",
    "encode_batch",
    "exception_data",
    "is_bisectable",
    "is_retryable",
    "plan_batches",
]

logger = logging.getLogger("runwatch.client")

#: ``transport(method, path, body, headers) -> (status, body)``. ``path`` starts
#: with ``/api``; ``body`` is JSON bytes or ``None``. Raises ``OSError`` or
#: ``http.client.HTTPException`` when no answer arrives.
Transport = Callable[[str, str, bytes | None, Mapping[str, str]], tuple[int, bytes]]

#: Log levels the server accepts (runwatch.events.LEVELS).
LEVELS = ("debug", "info", "warning", "error", "critical")
#: The largest batch body; the server's default limit is 1 MiB.
MAX_BATCH_BYTES = 512 * 1024
#: The longest event or metric name the server takes.
MAX_NAME_LENGTH = 200
#: Nesting limit of JSON payloads (runwatch.events.MAX_JSON_DEPTH).
MAX_JSON_DEPTH = 64
#: The first retry waits about this long; later ones double up to retry_max_seconds.
RETRY_BASE_SECONDS = 0.05
#: Session.heartbeat() sends at most one heartbeat to the server per this interval.
HEARTBEAT_SEND_INTERVAL_SECONDS = 1.0
#: Known fields of ``POST /api/sessions``; other keyword arguments go into ``metadata``.
SESSION_FIELDS = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")

_USER_AGENT = "runwatch-client/0.1"
_time = time.time


# -- errors ------------------------------------------------------------------------------


class DatacatError(Exception):
    """The server refused a request, or could not be reached.

    Attributes:
        status: the HTTP status, or ``None`` when no answer arrived.
        message: the server's message (or the connection error's).
        field: the request field the server named, if any.
    """

    def __init__(self, status: int | None, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(status, message, field)

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"HTTP {self.status}: {self.message}{where}" if self.status is not None else self.message


class DatacatConnectionError(DatacatError, ConnectionError):
    """No answer: the server is unreachable, closed the connection or timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class ClientClosedError(DatacatError, RuntimeError):
    """A blocking call on a closed client."""

    def __init__(self) -> None:
        super().__init__(None, "the client is closed")


# -- pure core: argument checks ----------------------------------------------------------


def _check_session_id(session_id: object) -> None:
    if type(session_id) is not str or not session_id:
        raise TypeError(f"session_id must be a non-empty string, got {session_id!r}")


def _check_name(what: str, name: object) -> None:
    if type(name) is not str:
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    _check_unicode(what, name)


def _is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8: no lone surrogate (what ``os.fsdecode`` gives for a
    file name that is not UTF-8), which the server refuses and JSON cannot carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_unicode(what: str, text: str) -> None:
    if not _is_unicode(text):
        raise ValueError(f"{what} must be valid unicode (no lone surrogates), got {text!r}")


def _check_value(name: str, value: object) -> float | int:
    """A metric value: a finite real number (numpy scalars work); bool is refused."""
    kind = type(value)
    if kind is not float and kind is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metric {name!r} must be a real number, got {type(value).__name__}")
        value = float(value)
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"metric {name!r} must be finite (JSON has no NaN or infinity), got {value!r}")
    return value  # type: ignore[return-value]


def _check_tags(tags: object) -> list[str]:
    if type(tags) is not list and type(tags) is not tuple:
        if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
            raise TypeError(f"tags must be a list of strings, got {type(tags).__name__}")
    for tag in tags:
        if type(tag) is not str:
            raise TypeError(f"tags must be strings, got {type(tag).__name__} {tag!r}")
        _check_unicode("tags", tag)
    return list(tags)


def _check_level(level: object) -> None:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")


_ATOMIC = frozenset({int, bool, type(None)})


class _InvalidJSON(Exception):
    """A value JSON cannot carry; ``path`` is filled in (innermost first) on the way out."""

    def __init__(self, kind: type[Exception], reason: str) -> None:
        self.kind = kind
        self.reason = reason
        self.path: list[str] = []


def _json_copy(what: str, value: Any) -> Any:
    """A copy of ``value`` made of JSON types only, so later changes by the caller do not leak in.

    Raises:
        TypeError: a value JSON cannot carry, or a non-string key (the message names its path).
        ValueError: NaN or infinity, a string with a lone surrogate, or nesting deeper than
            ``MAX_JSON_DEPTH``.
    """
    try:
        return _copy(value, 0)
    except _InvalidJSON as exc:
        raise exc.kind(f"{what}{''.join(reversed(exc.path))} {exc.reason}") from None


def _copy(value: Any, depth: int) -> Any:
    # Hot path of log_event/update_state: atomic values are checked inline and
    # paths are built only for an error, so a small dict costs well under a microsecond.
    kind = type(value)
    if kind in _ATOMIC or (kind is str and value.isascii()):
        return value
    if kind is str:
        if _is_unicode(value):
            return value
        raise _InvalidJSON(ValueError, f"must be valid unicode (no lone surrogates), got {value!r}")
    if kind is float:
        if math.isfinite(value):
            return value
        raise _InvalidJSON(ValueError, f"must be finite (JSON has no NaN or infinity), got {value!r}")
    if depth >= MAX_JSON_DEPTH:
        raise _InvalidJSON(ValueError, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if kind is dict or isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _InvalidJSON(TypeError, f"keys must be strings, got {type(key).__name__} {key!r}")
            if not (key.isascii() or _is_unicode(key)):
                raise _InvalidJSON(ValueError, f"keys must be valid unicode (no lone surrogates), got {key!r}")
            kind = type(item)
            if kind is str:
                if item.isascii():  # constant time: the common string needs no further check
                    copy[key] = item
                    continue
            elif kind in _ATOMIC:
                copy[key] = item
                continue
            try:
                copy[key] = _copy(item, depth + 1)
            except _InvalidJSON as exc:
                exc.path.append(f".{key}")
                raise
        return copy
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str:
                if item.isascii():
                    items.append(item)
                    continue
            elif kind in _ATOMIC:
                items.append(item)
                continue
            try:
                items.append(_copy(item, depth + 1))
            except _InvalidJSON as exc:
                exc.path.append(f"[{index}]")
                raise
        return items
    if kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"):  # numpy bool is no int
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return _copy(float(value), depth)
    if isinstance(value, str):
        return _copy(str(value), depth)
    raise _InvalidJSON(TypeError, f"must hold JSON values only, got {type(value).__name__}")


def _check_mapping(what: str, value: object) -> dict[str, Any]:
    if type(value) is not dict and not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    copy: dict[str, Any] = _json_copy(what, value)
    return copy


def exception_data(exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data of an ``exception`` event: ``type``, ``message``, ``traceback`` and the extra data.

    Args:
        exc_info: a ``(type, value, traceback)`` tuple or an exception; ``None``
            means the exception being handled (``sys.exc_info()``).
        extra_data: more keys for the event; ``type``, ``message`` and
            ``traceback`` are the exception's and win over keys of the same name.

    Raises:
        ValueError: no exception is given and none is being handled.
        TypeError: ``exc_info`` is neither, or ``extra_data`` is not JSON.
    """
    if exc_info is None:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3:
        raise TypeError(f"exc_info must be an exception or a (type, value, traceback) tuple, got {exc_info!r}")
    exc_type, exc_value, exc_tb = exc_info
    if exc_type is None or exc_value is None:
        raise ValueError("log_exception() needs an exception: none is being handled")
    data = _check_mapping("extra_data", extra_data) if extra_data is not None else {}
    try:
        message = str(exc_value)
    except Exception:  # an exception whose __str__ raises must still be logged
        message = f"<unprintable {exc_type.__name__}>"
    # An exception about a file name that is not UTF-8 holds lone surrogates: escaped, never refused.
    data["type"] = _escaped(exc_type.__name__)
    data["message"] = _escaped(message)
    data["traceback"] = _escaped("".join(traceback.format_exception(exc_type, exc_value, exc_tb)))
    return data


def _escaped(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\udcxx``."""
    return text if _is_unicode(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- pure core: batching and backoff -----------------------------------------------------


class Batch:
    """Operations of one session, sent as one ``/batch`` request under one ``batch_id``."""

    __slots__ = ("batch_id", "body", "operations", "session_id")

    def __init__(self, session_id: str, batch_id: str, operations: list[dict[str, Any]], body: bytes) -> None:
        self.session_id = session_id
        self.batch_id = batch_id
        self.operations = operations
        self.body = body

    def __repr__(self) -> str:
        return f"Batch({self.session_id!r}, {self.batch_id!r}, {len(self.operations)} operations)"


def encode_batch(batch_id: str, operations: list[dict[str, Any]]) -> bytes:
    """The JSON body of ``POST /api/sessions/{id}/batch``."""
    document = {"batch_id": batch_id, "operations": operations}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def plan_batches(
    calls: Iterable[tuple[str, dict[str, Any]]],
    *,
    max_operations: int,
    max_bytes: int,
    new_batch_id: Callable[[], str],
) -> tuple[list[Batch], list[dict[str, Any]]]:
    """Group queued calls into batches: per session, in call order, bounded in count and bytes.

    Args:
        calls: ``(session_id, operation)`` pairs in the order they were made.
        max_operations: the most operations in one batch.
        max_bytes: the largest body; a larger batch is split in halves.
        new_batch_id: gives a fresh, client-unique batch id.

    Returns:
        The batches (sessions in order of first appearance), and the
        operations too large to send even alone.
    """
    by_session: dict[str, list[dict[str, Any]]] = {}
    for session_id, operation in calls:
        by_session.setdefault(session_id, []).append(operation)
    batches: list[Batch] = []
    too_large: list[dict[str, Any]] = []
    for session_id, operations in by_session.items():
        for start in range(0, len(operations), max_operations):
            _fit(session_id, operations[start : start + max_operations], max_bytes, new_batch_id, batches, too_large)
    return batches, too_large


def _fit(
    session_id: str,
    operations: list[dict[str, Any]],
    max_bytes: int,
    new_batch_id: Callable[[], str],
    batches: list[Batch],
    too_large: list[dict[str, Any]],
) -> None:
    batch_id = new_batch_id()
    body = encode_batch(batch_id, operations)
    if len(body) <= max_bytes:
        batches.append(Batch(session_id, batch_id, operations, body))
    elif len(operations) == 1:
        too_large.append(operations[0])
    else:
        half = len(operations) // 2
        _fit(session_id, operations[:half], max_bytes, new_batch_id, batches, too_large)
        _fit(session_id, operations[half:], max_bytes, new_batch_id, batches, too_large)


def backoff_delay(attempt: int, *, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """The wait before retry number ``attempt`` (0 first): doubling, capped, with jitter.

    Args:
        attempt: how many retries of this batch came before.
        base_seconds: the first delay before jitter.
        max_seconds: the cap.
        jitter: a number in [0, 1); the delay is between half and all of the
            capped exponential value, so clients that failed together spread out.
    """
    delay = min(max_seconds, base_seconds * 2.0 ** min(attempt, 60))
    return delay * (0.5 + 0.5 * jitter)


def is_retryable(status: int) -> bool:
    """Whether an answer with this status may succeed later (the batch was not applied)."""
    return status >= 500 or status in (408, 425, 429)


def is_bisectable(status: int) -> bool:
    """Whether a refused batch may hold good operations beside a bad one (bad body, too large)."""
    return status in (400, 413, 422)


def _error_message(status: int, body: bytes) -> tuple[str, str | None]:
    """The message and field of an error answer (``{"error": {...}}``), or its text."""
    try:
        document = json.loads(body)
        error = document["error"]
        return str(error.get("message") or error), error.get("field")
    except Exception:  # not our JSON: a proxy's page, an empty body
        text = body[:200].decode("utf-8", "replace").strip()
        return text or http.client.responses.get(status, "error"), None


class HeartbeatWatch:
    """Decides when an application looks hung and when it recovered (pure; time is passed in).

    Args:
        timeout_seconds: no heartbeat for this long means hung.
        now: the current time (any monotonic clock, in seconds).
    """

    def __init__(self, timeout_seconds: float, now: float) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout must be positive, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds
        self.last_beat = now
        self.hung = False

    def beat(self, now: float) -> None:
        """Record a heartbeat at ``now``."""
        self.last_beat = now

    def check(self, now: float) -> str | None:
        """``"hung"`` once when heartbeats stop for the timeout, ``"recovered"`` once when they resume."""
        late = now - self.last_beat >= self.timeout_seconds
        if late and not self.hung:
            self.hung = True
            return "hung"
        if self.hung and not late:
            self.hung = False
            return "recovered"
        return None


# -- the HTTP transport (I/O) ------------------------------------------------------------


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


# -- statistics --------------------------------------------------------------------------


class ClientStatistics(NamedTuple):
    """Counters of a client, in calls (operations).

    Attributes:
        queued: calls accepted and not yet delivered (queue plus the batch in flight).
        max_queue: the bound of ``queued``.
        sent: calls delivered (including ones the server had already stored).
        dropped: calls given up, by reason: ``queue_full``, ``rejected`` (the
            server answered 4xx), ``too_large``, ``session_ended``, ``closed``
            (a call after close), ``shutdown`` (undelivered at close, no spool).
        retries: failed attempts that were retried (a retry that succeeds is not a drop).
        batches: batches delivered.
        duplicate_batches: delivered batches the server already had (a retry
            after a lost answer).
        spooled: calls written to ``spool_dir`` at close.
        replayed: calls read back from ``spool_dir``.
        last_error: the last failure, or ``None``.
    """

    queued: int
    max_queue: int
    sent: int
    dropped: dict[str, int]
    retries: int
    batches: int
    duplicate_batches: int
    spooled: int
    replayed: int
    last_error: str | None


class _Marker:
    """A flush request; travels the queue so it keeps its place among calls."""

    __slots__ = ("delivered", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.delivered = False


class _Aborted(Exception):
    """The sender must stop now (close() deadline passed)."""


# -- the client --------------------------------------------------------------------------


class DatacatClient:
    """The low-level session API: one method per REST endpoint.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        token: a bearer token, when the server requires one.
        timeout: the socket timeout of each request, in seconds.
        blocking: ``True``: each call is one request and raises on failure;
            ``False``: calls are queued and sent in batches by a thread (see
            the module docs).

    Keyword-only options of the non-blocking mode:
        max_queue: the most calls held (queued plus in flight); when full, the
            newest call is dropped and counted.
        batch_size: the most operations in one batch.
        flush_interval: the longest a call waits for more to share its batch, in seconds.
        spool_dir: a directory where calls still undelivered at close are
            written, and from which this client sends what an earlier process
            left (``None``: no spool).
        retry_max_seconds: the longest wait between two retries of a batch.
        exit_timeout_seconds: how long close() at interpreter exit waits for
            delivery.
        transport: sends requests (tests inject one); ``None``: :class:`HTTPTransport`.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        blocking: bool = True,
        # Non-blocking mode
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        spool_dir: str | os.PathLike[str] | None = None,
        retry_max_seconds: float = 30.0,
        exit_timeout_seconds: float = 5.0,
        transport: Transport | None = None,
    ) -> None:
        if token is not None and (type(token) is not str or not token):
            raise TypeError("token must be a non-empty string or None")
        for name, number in (("timeout", timeout), ("flush_interval", flush_interval)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        for name, count in (("max_queue", max_queue), ("batch_size", batch_size)):
            if type(count) is not int or count < 1:
                raise ValueError(f"{name} must be a positive integer, got {count!r}")
        if not retry_max_seconds > 0 or not exit_timeout_seconds >= 0:
            raise ValueError("retry_max_seconds must be positive and exit_timeout_seconds not negative")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.blocking = bool(blocking)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.retry_max_seconds = float(retry_max_seconds)
        self.exit_timeout_seconds = float(exit_timeout_seconds)
        self._transport: Transport = transport if transport is not None else HTTPTransport(base_url, timeout=timeout)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _USER_AGENT}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._closed = False
        self._init_process_state()
        _open_clients.add(self)
        if not self.blocking and self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            if _spool_files(self.spool_dir):
                self._start_sender()  # deliver what an earlier process left

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: queue, sender, locks, counters, batch ids."""
        self._queue: deque[tuple[str, dict[str, Any]] | _Marker] = deque()
        self._held = 0  # calls taken by the sender and not yet resolved
        self._sender: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._sleeping = False
        self._stopping = False
        self._ended: set[str] = set()
        self._batch_prefix = uuid.uuid4().hex
        self._batch_numbers = itertools.count(1)
        self._sent = 0
        self._dropped: dict[str, int] = {}
        self._queue_full_drops = 0  # counted in the app thread: see _drop_full
        self._queue_full_logged = 0
        self._retries = 0
        self._batches = 0
        self._duplicates = 0
        self._spooled = 0
        self._replayed = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None

    def _after_fork_in_child(self) -> None:
        self._init_process_state()
        reset = getattr(self._transport, "reset_after_fork", None)
        if reset is not None:
            reset()

    # -- the endpoints ----------------------------------------------------------------

    def create_session(self, **meta: Any) -> str:
        """Create a session and return its id. Always a blocking request, in both modes.

        Args:
            meta: ``product``, ``version``, ``hostname`` (default: this host's
                name), ``metadata`` (a dict), ``heartbeat_timeout_seconds``;
                any other keyword goes into ``metadata``.

        Raises:
            DatacatError: the server refused (4xx/5xx) or is unreachable.
        """
        body: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in meta.items():
            (body if key in SESSION_FIELDS else extra)[key] = value
        if extra:
            body["metadata"] = {**_check_mapping("metadata", body.get("metadata") or {}), **extra}
        body.setdefault("hostname", socket.gethostname())
        document = self._request("POST", "/api/sessions", _check_mapping("session", body))
        session_id = document.get("session_id") if isinstance(document, dict) else None
        if type(session_id) is not str or not session_id:
            raise DatacatError(201, f"the server's answer has no session_id: {document!r}")
        return session_id

    def update_state(self, session_id: str, state: Mapping[str, Any]) -> None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        _check_session_id(session_id)
        patch = _check_mapping("state", state)
        if self.blocking:
            self._request("POST", _path(session_id, "/state"), patch)
        else:
            self._enqueue(session_id, {"op": "state", "state": patch, "timestamp": _time()})

    def log_event(self, session_id: str, name: str, data: Mapping[str, Any] | None = None, level: str = "info") -> None:
        """Record an event ``name`` with JSON ``data`` at a level (debug, info, warning, error, critical)."""
        if type(session_id) is not str or not session_id:
            _check_session_id(session_id)
        # isascii() is constant time; a name that is not ASCII is checked for lone surrogates.
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii():
            _check_name("name", name)
        if level != "info":
            _check_level(level)
        data = {} if data is None else _check_mapping("data", data)
        if self.blocking:
            self._request("POST", _path(session_id, "/events"), {"name": name, "data": data, "level": level})
        else:
            operation = {"op": "event", "name": name, "data": data, "level": level, "timestamp": _time()}
            self._enqueue(session_id, operation)

    def log_metric(self, session_id: str, name: str, value: float, tags: list[str] | None = None) -> None:
        """Record one value of metric ``name``, with optional string tags."""
        if type(session_id) is not str or not session_id:
            _check_session_id(session_id)
        # isascii() is constant time; a name that is not ASCII is checked for lone surrogates.
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii():
            _check_name("name", name)
        if type(value) is not float or not math.isfinite(value):
            value = _check_value(name, value)
        if self.blocking:
            body: dict[str, Any] = {"name": name, "value": value}
            if tags is not None:
                body["tags"] = _check_tags(tags)
            self._request("POST", _path(session_id, "/metrics"), body)
        elif tags is None:
            self._enqueue(session_id, {"op": "metric", "name": name, "value": value, "timestamp": _time()})
        else:
            operation = {"op": "metric", "name": name, "value": value, "tags": _check_tags(tags), "timestamp": _time()}
            self._enqueue(session_id, operation)

    def log_exception(self, session_id: str, exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> None:
        """Record an ``exception`` event (level error) with type, message, traceback and ``extra_data``.

        Args:
            exc_info: an exception or a ``sys.exc_info()`` tuple; ``None``: the
                exception being handled.

        Raises:
            ValueError: no exception given and none is being handled.
        """
        _check_session_id(session_id)
        self.log_event(session_id, "exception", exception_data(exc_info, extra_data), level="error")

    def heartbeat(self, session_id: str) -> None:
        """Tell the server the session's application is alive."""
        _check_session_id(session_id)
        if self.blocking:
            self._request("POST", _path(session_id, "/heartbeat"), {})
        else:
            self._enqueue(session_id, {"op": "heartbeat", "timestamp": _time()})

    def end_session(self, session_id: str) -> None:
        """End the session; later calls for it are refused (409) or, non-blocking, dropped and counted."""
        _check_session_id(session_id)
        if self.blocking:
            self._request("POST", _path(session_id, "/end"), {})
        else:
            self._enqueue(session_id, {"op": "end", "timestamp": _time()})
            self._ended.add(session_id)

    def get_session(
        self,
        session_id: str,
        *,
        events_limit: int | None = None,
        events_cursor: str | None = None,
        metrics_limit: int | None = None,
        metrics_cursor: str | None = None,
        state_history_limit: int | None = None,
        state_history_cursor: str | None = None,
    ) -> dict[str, Any]:
        """The session as the server has it (see docs/sessions.md); pages of events, metrics and state patches.

        In non-blocking mode the queue is flushed first (up to ``timeout``
        seconds), so the answer includes this client's earlier calls.

        Raises:
            DatacatError: unknown session (404), or the server is unreachable.
        """
        _check_session_id(session_id)
        if not self.blocking:
            self.flush(self.timeout)
        query = {
            "events_limit": events_limit,
            "events_cursor": events_cursor,
            "metrics_limit": metrics_limit,
            "metrics_cursor": metrics_cursor,
            "state_history_limit": state_history_limit,
            "state_history_cursor": state_history_cursor,
        }
        pairs = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in query.items() if value is not None)
        document = self._request("GET", _path(session_id, f"?{pairs}" if pairs else ""), None)
        if not isinstance(document, dict):
            raise DatacatError(200, f"the server's answer is not a session: {document!r}")
        return document

    # -- blocking requests ------------------------------------------------------------

    def _request(self, method: str, path: str, document: Any) -> Any:
        if self._closed:
            raise ClientClosedError()
        body = None
        if document is not None:
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        try:
            status, data = self._transport(method, path, body, self._headers)
        except (OSError, http.client.HTTPException) as exc:
            raise DatacatConnectionError(f"{method} {self.base_url}{path}: {_describe(exc)}") from exc
        if status >= 400:
            message, field = _error_message(status, data)
            raise DatacatError(status, message, field)
        if method == "POST" and path != "/api/sessions":  # sent counts operations, as in non-blocking mode
            with self._count_lock:
                self._sent += 1
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise DatacatError(status, f"the server's answer is not JSON: {data[:200]!r}") from None

    # -- non-blocking: the app-thread side --------------------------------------------

    def _enqueue(self, session_id: str, operation: dict[str, Any]) -> None:
        # The hot path: no lock, no I/O; deque.append is atomic under the GIL.
        if self._closed:
            self._drop("closed")
            return
        if session_id in self._ended:
            self._drop("session_ended")
            return
        queue = self._queue
        if len(queue) + self._held >= self.max_queue:
            self._drop_full()
            return
        queue.append((session_id, operation))
        if self._sender is None:
            self._start_sender()
        elif self._sleeping and len(queue) >= self.batch_size:
            self._wake.set()

    def _drop(self, reason: str, count: int = 1) -> None:
        with self._count_lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop_full(self) -> None:
        with self._count_lock:
            self._queue_full_drops += 1

    def _start_sender(self) -> None:
        with self._start_lock:
            if self._sender is None:
                thread = threading.Thread(target=self._run, name="runwatch-client-sender", daemon=True)
                thread.start()
                self._sender = thread

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call made before this one is delivered (or refused and counted).

        Args:
            timeout: the longest wait in seconds; ``None``: no limit.

        Returns:
            ``True`` when done; ``False`` on timeout, or when the client was
            closed with calls still undelivered. Always ``True`` in blocking mode.
        """
        if self.blocking:
            return True
        sender = self._sender
        if sender is None or not sender.is_alive():
            return not self._queue and self._held == 0
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.delivered

    def statistics(self) -> ClientStatistics:
        """A snapshot of the client's counters (see :class:`ClientStatistics`)."""
        with self._count_lock:
            dropped = dict(self._dropped)
            if self._queue_full_drops:
                dropped["queue_full"] = self._queue_full_drops
        queued = sum(1 for item in list(self._queue) if not isinstance(item, _Marker)) + self._held
        return ClientStatistics(
            queued=queued,
            max_queue=self.max_queue,
            sent=self._sent,
            dropped=dropped,
            retries=self._retries,
            batches=self._batches,
            duplicate_batches=self._duplicates,
            spooled=self._spooled,
            replayed=self._replayed,
            last_error=self._last_error,
        )

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then stop the sender and close connections.

        What is still undelivered at the deadline is written to ``spool_dir``
        when there is one, else dropped and counted as ``shutdown``. Idempotent.

        Args:
            timeout: the longest wait for delivery; ``None``: ``exit_timeout_seconds``.
        """
        if self._closed:
            return
        self._closed = True
        _open_clients.discard(self)
        deadline = self.exit_timeout_seconds if timeout is None else timeout
        sender = self._sender
        if sender is not None and sender is not threading.current_thread():
            self._stopping = True
            self._wake.set()
            sender.join(deadline)
            if sender.is_alive():
                self._abort.set()
                self._wake.set()
                sender.join(self.timeout + 1.0)  # at most one request in flight
        close = getattr(self._transport, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # The seed's examples never close a blocking client: close its sockets quietly.
        if not getattr(self, "_closed", True) and self.blocking:
            close = getattr(self._transport, "close", None)
            if close is not None:
                close()

    def __repr__(self) -> str:
        mode = "blocking" if self.blocking else "non-blocking"
        return f"<DatacatClient {self.base_url} {mode}{' closed' if self._closed else ''}>"

    # -- non-blocking: the sender thread ----------------------------------------------

    def _run(self) -> None:
        try:
            if self.spool_dir is not None:
                self._replay_spool()
            while True:
                queue = self._queue
                if not queue and self._stopping:
                    return
                if len(queue) < self.batch_size and not self._stopping:
                    self._sleeping = True
                    if len(queue) < self.batch_size:
                        self._wake.wait(self.flush_interval)
                    self._sleeping = False
                    self._wake.clear()
                self._report_drops()
                calls, markers = self._take_round()
                if calls:
                    batches, too_large = plan_batches(
                        calls,
                        max_operations=self.batch_size,
                        max_bytes=MAX_BATCH_BYTES,
                        new_batch_id=self._new_batch_id,
                    )
                    if too_large:
                        self._give_up(len(too_large), "too_large", f"an operation over {MAX_BATCH_BYTES} bytes")
                    try:
                        self._deliver(deque(batches))
                    except _Aborted:
                        for marker in markers:
                            marker.done.set()  # delivered stays False
                        raise
                for marker in markers:
                    marker.delivered = True
                    marker.done.set()
        except _Aborted as exc:
            self._save_undelivered(exc.args[0] if exc.args else ())
        except BaseException as exc:  # a bug: never silent, and flush() must not hang
            self._last_error = f"sender failed: {_describe(exc)}"
            logger.exception("runwatch client: the sender thread failed; later calls are not sent")
            self._release_markers()

    def _new_batch_id(self) -> str:
        return f"{self._batch_prefix}-{next(self._batch_numbers)}"

    def _take_round(self) -> tuple[list[tuple[str, dict[str, Any]]], list[_Marker]]:
        """Up to batch_size calls from the queue, stopping after a flush marker."""
        calls: list[tuple[str, dict[str, Any]]] = []
        markers: list[_Marker] = []
        queue = self._queue
        while queue and len(calls) < self.batch_size:
            item = queue[0]
            if isinstance(item, _Marker):
                queue.popleft()
                markers.append(item)
                break
            self._held += 1  # before the pop, so the bound never under-counts
            queue.popleft()
            calls.append(item)
        return calls, markers

    def _deliver(self, work: deque[Batch]) -> None:
        """Send each batch until it is delivered or refused; retry the rest with backoff."""
        attempt = 0
        while work:
            batch = work[0]
            if self._abort.is_set():
                raise _Aborted(work)
            try:
                status, data = self._transport("POST", _path(batch.session_id, "/batch"), batch.body, self._headers)
            except Exception as exc:  # OSError, HTTPException, or anything an injected transport raises
                error = f"{self.base_url} unreachable: {_describe(exc)}"
            else:
                if status < 300:
                    work.popleft()
                    self._delivered(batch, data, attempt)
                    attempt = 0
                    continue
                message, field = _error_message(status, data)
                error = f"HTTP {status}: {message}" + (f" (field {field})" if field else "")
                if not is_retryable(status):
                    work.popleft()
                    if is_bisectable(status) and len(batch.operations) > 1:
                        # Nothing of a refused batch was applied: find the bad operations by halves.
                        half = len(batch.operations) // 2
                        for part in (batch.operations[half:], batch.operations[:half]):
                            work.appendleft(self._rebatch(batch.session_id, part))
                    else:
                        self._give_up(len(batch.operations), "rejected", f"batch {batch.batch_id}: {error}")
                    continue
            self._retries += 1
            self._last_error = error
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                logger.warning("runwatch client: %s; retrying with backoff", error)
            delay = backoff_delay(
                attempt, base_seconds=RETRY_BASE_SECONDS, max_seconds=self.retry_max_seconds, jitter=random.random()
            )
            attempt += 1
            self._report_drops()
            if self._abort.wait(delay):
                raise _Aborted(work)

    def _rebatch(self, session_id: str, operations: list[dict[str, Any]]) -> Batch:
        batch_id = self._new_batch_id()
        return Batch(session_id, batch_id, operations, encode_batch(batch_id, operations))

    def _delivered(self, batch: Batch, data: bytes, attempts: int) -> None:
        duplicate = False
        try:
            duplicate = bool(json.loads(data).get("duplicate"))
        except Exception:  # an answer without a body still means delivered
            pass
        count = len(batch.operations)
        self._held -= count
        self._sent += count
        self._batches += 1
        self._duplicates += duplicate
        if self._failing_since is not None:
            logger.warning(
                "runwatch client: delivering again after %.1f s of failures",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def _give_up(self, count: int, reason: str, error: str) -> None:
        self._held -= count
        self._drop(reason, count)
        self._last_error = error
        logger.warning("runwatch client: dropped %d call(s) (%s): %s", count, reason, error)

    def _report_drops(self) -> None:
        dropped = self._queue_full_drops
        if dropped != self._queue_full_logged:
            logger.warning(
                "runwatch client: the queue is full (max_queue=%d): %d call(s) dropped so far",
                self.max_queue,
                dropped,
            )
            self._queue_full_logged = dropped

    def _release_markers(self) -> None:
        for item in list(self._queue):
            if isinstance(item, _Marker):
                item.done.set()

    # -- the spool --------------------------------------------------------------------

    def _save_undelivered(self, work: Iterable[Batch] = ()) -> None:
        """At an aborted close: spool (or drop) the batches in flight and the queue."""
        pending = list(work)
        calls = [item for item in self._queue if not isinstance(item, _Marker)]
        self._release_markers()
        self._queue.clear()
        batches, too_large = plan_batches(
            calls, max_operations=self.batch_size, max_bytes=MAX_BATCH_BYTES, new_batch_id=self._new_batch_id
        )
        pending += batches
        count = sum(len(batch.operations) for batch in pending)
        if too_large:
            self._drop("too_large", len(too_large))
        if not count:
            return
        if self.spool_dir is not None:
            try:
                _write_spool(self.spool_dir, pending)
            except OSError as exc:
                self._last_error = f"spool: {_describe(exc)}"
                logger.warning("runwatch client: cannot spool %d call(s): %s", count, exc)
            else:
                self._spooled += count
                self._held = 0
                logger.warning("runwatch client: %d undelivered call(s) spooled to %s", count, self.spool_dir)
                return
        self._drop("shutdown", count)
        self._held = 0
        logger.warning("runwatch client: %d undelivered call(s) dropped at close", count)

    def _replay_spool(self) -> None:
        assert self.spool_dir is not None
        for path in _spool_files(self.spool_dir):
            claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
            try:
                path.rename(claimed)  # atomic: one process sends each file
                batches = _read_spool(claimed)
            except OSError:
                continue  # another process took it
            except ValueError as exc:
                logger.warning("runwatch client: ignoring corrupt spool file %s: %s", claimed, exc)
                claimed.rename(claimed.with_suffix(".corrupt"))
                continue
            count = sum(len(batch.operations) for batch in batches)
            self._held += count
            self._replayed += count
            work = deque(batches)
            try:
                self._deliver(work)
            except _Aborted:
                self._held -= sum(len(batch.operations) for batch in work)
                _write_spool(self.spool_dir, work)
                claimed.unlink()
                raise _Aborted(()) from None
            claimed.unlink()


def _path(session_id: str, suffix: str) -> str:
    return f"/api/sessions/{quote(session_id, safe='')}{suffix}"


def _describe(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _spool_files(directory: Path) -> list[Path]:
    """Spool files ready to send: ``*.jsonl``, and files claimed by processes that are gone."""
    ready = sorted(directory.glob("runwatch-client-*.jsonl"))
    for claimed in sorted(directory.glob("runwatch-client-*.jsonl.sending-*")):
        pid = claimed.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            ready.append(claimed)
    return ready


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _write_spool(directory: Path, batches: Iterable[Batch]) -> None:
    """One JSON line per batch, written under a temporary name and renamed when complete."""
    name = f"runwatch-client-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
    temporary = directory / f".{name}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        for batch in batches:
            line = {"session_id": batch.session_id, "batch_id": batch.batch_id, "operations": batch.operations}
            file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / name)


def _read_spool(path: Path) -> list[Batch]:
    batches = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                session_id, batch_id, operations = record["session_id"], record["batch_id"], record["operations"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"line {number}: {exc}") from None
            batches.append(Batch(session_id, batch_id, operations, encode_batch(batch_id, operations)))
    return batches


# -- the seed's high-level API -----------------------------------------------------------


class Session:
    """One application session: the seed's high-level API over a :class:`DatacatClient`.

    Made by :func:`create_session`. Use it as a context manager to end the
    session on exit (an exception leaving the block is logged first).

    Args:
        client: the client that sends the calls.
        session_id: the session's id.
        owns_client: close ``client`` in :meth:`end`.
    """

    def __init__(self, client: DatacatClient, session_id: str, *, owns_client: bool = False) -> None:
        _check_session_id(session_id)
        self._client = client
        self._session_id = session_id
        self._owns_client = owns_client
        self._ended = False
        self._clock: Callable[[], float] = time.monotonic  # tests may drive the monitor's time
        self._last_heartbeat_sent = -math.inf
        self._watch: HeartbeatWatch | None = None
        self._watch_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._monitor_stop = threading.Event()
        self._monitor_wake = threading.Event()

    @property
    def session_id(self) -> str:
        """The session's id (a string)."""
        return self._session_id

    @property
    def client(self) -> DatacatClient:
        """The client this session sends through."""
        return self._client

    def update_state(self, state: Mapping[str, Any]) -> None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        self._client.update_state(self._session_id, state)

    def log_event(self, name: str, data: Mapping[str, Any] | None = None, level: str = "info") -> None:
        """Record an event ``name`` with JSON ``data``."""
        self._client.log_event(self._session_id, name, data, level)

    def log_metric(self, name: str, value: float, tags: list[str] | None = None) -> None:
        """Record one value of metric ``name`` with optional string tags."""
        self._client.log_metric(self._session_id, name, value, tags)

    def log_exception(self, extra_data: Mapping[str, Any] | None = None, exc_info: Any = None) -> None:
        """Record the exception being handled (or ``exc_info``) with its traceback and ``extra_data``."""
        self._client.log_exception(self._session_id, exc_info, extra_data)

    def heartbeat(self) -> None:
        """Signal that the application is alive.

        The heartbeat monitor sees every call; the server gets at most one
        heartbeat per ``HEARTBEAT_SEND_INTERVAL_SECONDS``, so calling this in a
        tight loop costs no request per call.
        """
        now = self._clock()
        watch = self._watch
        if watch is not None:
            with self._watch_lock:
                watch.beat(now)
                hung = watch.hung
            if hung:
                self._monitor_wake.set()  # log the recovery now, not at the next check
        if now - self._last_heartbeat_sent >= HEARTBEAT_SEND_INTERVAL_SECONDS:
            self._last_heartbeat_sent = now
            self._client.heartbeat(self._session_id)

    def start_heartbeat_monitor(self, timeout: float = 60, check_interval: float = 5) -> None:
        """Watch :meth:`heartbeat` from a daemon thread.

        When no heartbeat came for ``timeout`` seconds, an event
        ``application_appears_hung`` (level warning) is logged once; when
        heartbeats resume, ``application_recovered``. A running monitor is
        replaced.

        Args:
            timeout: seconds without a heartbeat that mean hung.
            check_interval: seconds between two checks.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(check_interval, bool) or not isinstance(check_interval, (int, float)) or not check_interval > 0:
            raise ValueError(f"check_interval must be a positive number of seconds, got {check_interval!r}")
        self.stop_heartbeat_monitor()
        self._watch = HeartbeatWatch(float(timeout), self._clock())
        self._monitor_stop = threading.Event()
        self._monitor_wake = threading.Event()
        self._monitor = threading.Thread(
            target=self._run_monitor,
            args=(self._watch, float(check_interval), self._monitor_stop, self._monitor_wake),
            name=f"runwatch-heartbeat-{self._session_id}",
            daemon=True,
        )
        self._monitor.start()

    def stop_heartbeat_monitor(self) -> None:
        """Stop the heartbeat monitor, if one runs."""
        monitor, self._monitor = self._monitor, None
        self._watch = None
        if monitor is not None:
            self._monitor_stop.set()
            self._monitor_wake.set()
            if monitor is not threading.current_thread():
                monitor.join(10.0)

    def _run_monitor(
        self, watch: HeartbeatWatch, check_interval: float, stop: threading.Event, wake: threading.Event
    ) -> None:
        hung_at = 0.0
        while not stop.is_set():
            wake.wait(check_interval)
            wake.clear()
            if stop.is_set():
                return
            now = self._clock()
            with self._watch_lock:
                verdict = watch.check(now)
                silent = now - watch.last_beat
            if verdict == "hung":
                hung_at = now - silent
                data = {"seconds_since_heartbeat": round(silent, 3), "timeout_seconds": watch.timeout_seconds}
                self._log_from_monitor("application_appears_hung", data, "warning")
            elif verdict == "recovered":
                self._log_from_monitor("application_recovered", {"hung_seconds": round(now - hung_at, 3)}, "info")

    def _log_from_monitor(self, name: str, data: dict[str, Any], level: str) -> None:
        try:
            self._client.log_event(self._session_id, name, {**data, "detected_by": "client"}, level)
        except Exception as exc:  # the monitor must outlive a server that is down
            logger.warning("runwatch client: cannot log %s for session %s: %s", name, self._session_id, exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until earlier calls are delivered (non-blocking mode); see :meth:`DatacatClient.flush`."""
        return self._client.flush(timeout)

    def get(self) -> dict[str, Any]:
        """The session as the server has it."""
        return self._client.get_session(self._session_id)

    def end(self) -> None:
        """Stop the heartbeat monitor, end the session and close the client this session made. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self.stop_heartbeat_monitor()
        try:
            self._client.end_session(self._session_id)
        finally:
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, Exception) and not self._ended:
            try:
                self.log_exception(exc_info=(exc_type, exc, tb))
            except Exception as error:  # the original exception matters more
                logger.warning("runwatch client: cannot log the exception: %s", error)
        self.end()

    def __repr__(self) -> str:
        return f"<Session {self._session_id}{' ended' if self._ended else ''}>"


def create_session(base_url: str, *, token: str | None = None, blocking: bool = True, **meta: Any) -> Session:
    """Create a session on the server at ``base_url`` and return it.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        token: a bearer token, when the server requires one.
        blocking: ``False`` queues calls and sends them in batches (see the module docs).
        meta: ``product``, ``version``, ``hostname``, ``metadata``,
            ``heartbeat_timeout_seconds``; other keywords go into ``metadata``.

    Raises:
        DatacatError: the server refused or is unreachable.
    """
    client = DatacatClient(base_url, token, blocking=blocking)
    try:
        session_id = client.create_session(**meta)
    except BaseException:
        client.close(0)
        raise
    return Session(client, session_id, owns_client=True)


# -- process hooks -----------------------------------------------------------------------

_open_clients: weakref.WeakSet[DatacatClient] = weakref.WeakSet()


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
