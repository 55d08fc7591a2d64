"""DatacatClient: the low-level session API, one method per REST endpoint (blocking or queued)."""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import math
import os
import socket
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from ._checks import (
    MAX_NAME_LENGTH,
    check_level,
    check_mapping,
    check_name,
    check_session_id,
    check_tags,
    check_value,
    exception_data,
)
from ._errors import ClientClosedError, DatacatConnectionError, DatacatError, describe
from ._sender import ClientStatistics, Sender
from ._transport import HTTPTransport, Transport
from ._wire import error_message, session_path

__all__ = ["SESSION_FIELDS", "DatacatClient"]

logger = logging.getLogger("runwatch.client")

#: Known fields of ``POST /api/sessions``; other keyword arguments go into ``metadata``.
SESSION_FIELDS = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")

_USER_AGENT = "runwatch-client/0.1"
_time = time.time


class DatacatClient:
    """The low-level session API: one method per REST endpoint.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        token: a bearer token, when the server requires one.
        timeout: the socket timeout of each request, in seconds.
        blocking: ``True``: each call is one request and raises on failure;
            ``False``: calls are queued and sent in batches by a thread (see
            the package docs).

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
        self._sender.resume_spooled()

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: the queue and its sender thread."""
        self._sender = Sender(
            self._transport,
            self._headers,
            self.base_url,
            max_queue=self.max_queue,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            spool_dir=None if self.blocking else self.spool_dir,
            retry_max_seconds=self.retry_max_seconds,
        )
        self._sender.closed = self._closed
        self._enqueue = self._sender.enqueue  # bound once: the hot path saves a lookup

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
            body["metadata"] = {**check_mapping("metadata", body.get("metadata") or {}), **extra}
        body.setdefault("hostname", socket.gethostname())
        document = self._request("POST", "/api/sessions", check_mapping("session", body))
        session_id = document.get("session_id") if isinstance(document, dict) else None
        if type(session_id) is not str or not session_id:
            raise DatacatError(201, f"the server's answer has no session_id: {document!r}")
        return session_id

    def update_state(self, session_id: str, state: Mapping[str, Any]) -> None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        check_session_id(session_id)
        patch = check_mapping("state", state)
        if self.blocking:
            self._request("POST", session_path(session_id, "/state"), patch)
        else:
            self._enqueue(session_id, {"op": "state", "state": patch, "timestamp": _time()})

    def log_event(self, session_id: str, name: str, data: Mapping[str, Any] | None = None, level: str = "info") -> None:
        """Record an event ``name`` with JSON ``data`` at a level (debug, info, warning, error, critical)."""
        if type(session_id) is not str or not session_id:
            check_session_id(session_id)
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            check_name("name", name)
        if level != "info":
            check_level(level)
        data = {} if data is None else check_mapping("data", data)
        if self.blocking:
            self._request("POST", session_path(session_id, "/events"), {"name": name, "data": data, "level": level})
        else:
            operation = {"op": "event", "name": name, "data": data, "level": level, "timestamp": _time()}
            self._enqueue(session_id, operation)

    def log_metric(self, session_id: str, name: str, value: float, tags: list[str] | None = None) -> None:
        """Record one value of metric ``name``, with optional string tags."""
        if type(session_id) is not str or not session_id:
            check_session_id(session_id)
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            check_name("name", name)
        if type(value) is not float or not math.isfinite(value):
            value = check_value(name, value)
        if self.blocking:
            body: dict[str, Any] = {"name": name, "value": value}
            if tags is not None:
                body["tags"] = check_tags(tags)
            self._request("POST", session_path(session_id, "/metrics"), body)
        elif tags is None:
            self._enqueue(session_id, {"op": "metric", "name": name, "value": value, "timestamp": _time()})
        else:
            operation = {"op": "metric", "name": name, "value": value, "tags": check_tags(tags), "timestamp": _time()}
            self._enqueue(session_id, operation)

    def log_exception(self, session_id: str, exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> None:
        """Record an ``exception`` event (level error) with type, message, traceback and ``extra_data``.

        Args:
            exc_info: an exception or a ``sys.exc_info()`` tuple; ``None``: the
                exception being handled.

        Raises:
            ValueError: no exception given and none is being handled.
        """
        check_session_id(session_id)
        self.log_event(session_id, "exception", exception_data(exc_info, extra_data), level="error")

    def heartbeat(self, session_id: str) -> None:
        """Tell the server the session's application is alive."""
        check_session_id(session_id)
        if self.blocking:
            self._request("POST", session_path(session_id, "/heartbeat"), {})
        else:
            self._enqueue(session_id, {"op": "heartbeat", "timestamp": _time()})

    def end_session(self, session_id: str) -> None:
        """End the session; later calls for it are refused (409) or, non-blocking, dropped and counted."""
        check_session_id(session_id)
        if self.blocking:
            self._request("POST", session_path(session_id, "/end"), {})
        else:
            self._enqueue(session_id, {"op": "end", "timestamp": _time()})
            self._sender.mark_ended(session_id)

    def get_session(
        self,
        session_id: str,
        *,
        events_limit: int | None = None,
        events_cursor: str | None = None,
        metrics_limit: int | None = None,
        metrics_cursor: str | None = None,
    ) -> dict[str, Any]:
        """The session as the server has it (see docs/sessions.md); pages of events and metrics.

        In non-blocking mode the queue is flushed first (up to ``timeout``
        seconds), so the answer includes this client's earlier calls.

        Raises:
            DatacatError: unknown session (404), or the server is unreachable.
        """
        check_session_id(session_id)
        if not self.blocking:
            self.flush(self.timeout)
        query = {
            "events_limit": events_limit,
            "events_cursor": events_cursor,
            "metrics_limit": metrics_limit,
            "metrics_cursor": metrics_cursor,
        }
        pairs = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in query.items() if value is not None)
        document = self._request("GET", session_path(session_id, f"?{pairs}" if pairs else ""), None)
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
            raise DatacatConnectionError(f"{method} {self.base_url}{path}: {describe(exc)}") from exc
        if status >= 400:
            message, field = error_message(status, data)
            raise DatacatError(status, message, field)
        if method == "POST" and path != "/api/sessions":  # sent counts operations, as in non-blocking mode
            self._sender.count_sent()
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise DatacatError(status, f"the server's answer is not JSON: {data[:200]!r}") from None

    # -- the queue ----------------------------------------------------------------------

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
        return self._sender.flush(timeout)

    def statistics(self) -> ClientStatistics:
        """A snapshot of the client's counters (see :class:`ClientStatistics`)."""
        return self._sender.statistics()

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
        self._sender.close(self.exit_timeout_seconds if timeout is None else timeout, self.timeout)
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
