"""DatacatClient: the low-level session API, one method per REST endpoint (sent at once or queued)."""

from __future__ import annotations

import atexit
import http.client
import json
import logging
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self
from urllib.parse import quote

from ._aggregate import DEFAULT_BUCKETS, MetricAggregator
from ._checks import (
    LEVELS,
    MAX_NAME_LENGTH,
    check_bounds,
    check_count,
    check_level,
    check_mapping,
    check_name,
    check_session_id,
    check_strings,
    check_tags,
    check_text,
    check_value,
    exception_fields,
)
from ._errors import ClientClosedError, DatacatConnectionError, DatacatError, describe
from ._machine import hostname as host_name
from ._machine import machine_id
from ._sender import ClientStatistics, Sender
from ._ticker import Ticker
from ._transport import HTTPTransport, Transport
from ._wire import (
    DATACAT,
    DEFAULT_BASE_URL,
    PROTOCOLS,
    StateDeduper,
    datacat_request,
    dialect_from_health,
    error_message,
    runwatch_request,
    session_path,
)

if TYPE_CHECKING:
    from ._heartbeat import HeartbeatMonitor

__all__ = ["ACCEPTED", "DEFAULT_VERSION", "SESSION_FIELDS", "DatacatClient", "default_product", "is_port"]

logger = logging.getLogger("runwatch.client")

#: Known fields of ``POST /api/sessions``; other keyword arguments go into ``metadata``.
SESSION_FIELDS: Final = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")
#: The version a session gets when none is given (datacat's server requires one).
DEFAULT_VERSION: Final = "unknown"
#: What datacat's daemon answers a call it accepted; runwatch's client answers it for the
#: calls it handles locally (counters, histograms, repeated states, heartbeat pauses).
ACCEPTED: Final = {"status": "ok"}

_USER_AGENT = "runwatch-client/0.2"
_time = time.time


def default_product() -> str:
    """The product of a session created without one: the program's name (``python`` if none)."""
    main = sys.argv[0] if sys.argv else ""
    name = Path(main).stem if main not in ("", "-c", "-m", "-") else ""
    if name == "__main__":  # python -m package: the package's directory
        name = Path(main).resolve().parent.name
    return name or "python"


def is_port(value: object) -> bool:
    """Whether ``value`` is a ``daemon_port`` datacat takes: ``"auto"`` or a port number."""
    return value == "auto" or (type(value) is int and 0 <= value < 65536) or (type(value) is str and value.isdigit())


class DatacatClient:
    """The low-level session API: one method per REST endpoint of datacat's contract.

    The server's dialect is found once, by ``GET /health`` before the first call
    whose body differs between them: datacat's contract (datacat, and runwatch
    once it serves it) or runwatch's strict session routes (see
    ``runwatch/client/_wire.py``). Calls answer the server's reply (a dict) in
    blocking mode and ``None`` when queued.

    Args:
        base_url: the server (datacat's default ``http://localhost:9090``).
        daemon_port: accepted for datacat's signature; there is no daemon (this
            client does its work in-process). A string that is not a port is taken
            as ``token`` (runwatch's earlier second argument), with a DeprecationWarning.
        timeout: the socket timeout of each request, in seconds.
        token: a bearer token, when the server requires one.
        protocol: ``"auto"`` (ask ``/health``), ``"datacat"`` or ``"runwatch"``.
        blocking: ``True``: each call is one request and raises on failure;
            ``False``: calls are queued and sent in batches by a thread (see
            the package docs).

    Keyword-only options of the non-blocking mode:
        max_queue: the most calls held (queued plus in flight).
        when_full: ``"drop_newest"`` (drop and count the call) or ``"block"``
            (wait for room, as datacat's ``AsyncSession(drop_on_full=False)``).
        batch_size: the most operations in one batch.
        flush_interval: the longest a call waits for more to share its batch, in seconds.
        spool_dir: a directory where calls still undelivered at close are
            written, and from which this client sends what an earlier process
            left (``None``: no spool).
        retry_max_seconds: the longest wait between two retries of a batch.
        exit_timeout_seconds: how long close() at interpreter exit waits for
            delivery.

    Keyword-only options of the periodic work:
        aggregate_interval_seconds: how often counter totals and histograms are sent.
        keepalive_interval_seconds: how often a datacat server gets a heartbeat for
            each session this client created (as datacat's daemon sends); ``None``: never.
        transport: sends requests (tests inject one); ``None``: :class:`HTTPTransport`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        daemon_port: str | int = "auto",
        timeout: float = 10.0,
        *,
        token: str | None = None,
        protocol: Literal["auto", "datacat", "runwatch"] = "auto",
        blocking: bool = True,
        # Non-blocking mode
        max_queue: int = 10_000,
        when_full: Literal["drop_newest", "block"] = "drop_newest",
        batch_size: int = 500,
        flush_interval: float = 0.5,
        spool_dir: str | os.PathLike[str] | None = None,
        retry_max_seconds: float = 30.0,
        exit_timeout_seconds: float = 5.0,
        # Periodic work
        aggregate_interval_seconds: float = 5.0,
        keepalive_interval_seconds: float | None = 15.0,
        transport: Transport | None = None,
    ) -> None:
        if not is_port(daemon_port):
            if type(daemon_port) is not str or token is not None:
                raise TypeError(f"daemon_port must be 'auto' or a port number, got {daemon_port!r}")
            warnings.warn(
                "DatacatClient's second argument is daemon_port (as in datacat); pass the token as token=",
                DeprecationWarning,
                stacklevel=2,
            )
            token = daemon_port
        if token is not None and (type(token) is not str or not token):
            raise TypeError("token must be a non-empty string or None")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if when_full not in ("drop_newest", "block"):
            raise ValueError(f"when_full must be 'drop_newest' or 'block', got {when_full!r}")
        seconds = {"timeout": timeout, "flush_interval": flush_interval}
        seconds["aggregate_interval_seconds"] = aggregate_interval_seconds
        if keepalive_interval_seconds is not None:
            seconds["keepalive_interval_seconds"] = keepalive_interval_seconds
        for name, number in seconds.items():
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {number!r}")
        for name, count in (("max_queue", max_queue), ("batch_size", batch_size)):
            if type(count) is not int or count < 1:
                raise ValueError(f"{name} must be a positive integer, got {count!r}")
        if not retry_max_seconds > 0 or not exit_timeout_seconds >= 0:
            raise ValueError("retry_max_seconds must be positive and exit_timeout_seconds not negative")
        self.base_url = base_url.rstrip("/")
        self.daemon_port = daemon_port if is_port(daemon_port) else "auto"
        self.timeout = float(timeout)
        self.protocol = protocol
        self.blocking = bool(blocking)
        self.max_queue = max_queue
        self.when_full = when_full
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.retry_max_seconds = float(retry_max_seconds)
        self.exit_timeout_seconds = float(exit_timeout_seconds)
        self.aggregate_interval_seconds = float(aggregate_interval_seconds)
        self.keepalive_interval_seconds = keepalive_interval_seconds
        self._token = token
        self._injected_transport = transport
        self._transport: Transport = transport if transport is not None else HTTPTransport(base_url, timeout=timeout)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _USER_AGENT}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._dialect_found: str | None = None if protocol == "auto" else protocol
        self._dialect_lock = threading.Lock()
        self._closed = False
        self._init_process_state()
        _open_clients.add(self)
        self._sender.resume_spooled()

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: the queue, its sender, the periodic work."""
        self._states = StateDeduper()
        self._states_lock = threading.Lock()
        self._sender = Sender(
            self._transport,
            self._headers,
            self.base_url,
            max_queue=self.max_queue,
            block_when_full=self.when_full == "block",
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            spool_dir=None if self.blocking else self.spool_dir,
            retry_max_seconds=self.retry_max_seconds,
            state_changes=self._state_changes,
        )
        self._sender.closed = self._closed
        self._enqueue = self._sender.enqueue  # bound once: the hot path saves a lookup
        self._aggregates = MetricAggregator()
        # A round of totals is sent whole, never interleaved with a session's final round at its end.
        self._aggregates_lock = threading.Lock()
        self._keepalive: set[str] = set()
        self._monitors: dict[str, HeartbeatMonitor] = {}
        tasks: list[tuple[float, Any]] = [(self.aggregate_interval_seconds, self._send_aggregates)]
        if self.keepalive_interval_seconds is not None:
            tasks.append((self.keepalive_interval_seconds, self._send_keepalives))
        self._ticker = Ticker(tasks, name="runwatch-client-periodic")

    def _after_fork_in_child(self) -> None:
        # The parent's totals, keep-alives and monitors stay the parent's: the child starts empty.
        self._init_process_state()
        reset = getattr(self._transport, "reset_after_fork", None)
        if reset is not None:
            reset()

    def _derive(self, **changes: Any) -> DatacatClient:
        """A client to the same server with the same options except ``changes`` (a new queue)."""
        options: dict[str, Any] = {
            "token": self._token,
            "protocol": self._dialect_found or self.protocol,
            "blocking": self.blocking,
            "max_queue": self.max_queue,
            "when_full": self.when_full,
            "batch_size": self.batch_size,
            "flush_interval": self.flush_interval,
            "spool_dir": self.spool_dir,
            "retry_max_seconds": self.retry_max_seconds,
            "exit_timeout_seconds": self.exit_timeout_seconds,
            "aggregate_interval_seconds": self.aggregate_interval_seconds,
            "keepalive_interval_seconds": self.keepalive_interval_seconds,
            "transport": self._injected_transport,
        }
        return DatacatClient(self.base_url, self.daemon_port, self.timeout, **{**options, **changes})

    # -- the server's dialect -----------------------------------------------------------

    def _dialect(self) -> str:
        """``"datacat"`` or ``"runwatch"``: asked once of ``GET /health`` (a blocking request)."""
        dialect = self._dialect_found
        if dialect is None:
            with self._dialect_lock:
                if self._dialect_found is None:
                    self._dialect_found = self._probe()
                dialect = self._dialect_found
        return dialect

    def _probe(self) -> str:
        try:
            status, data = self._transport("GET", "/health", None, self._headers)
        except (OSError, http.client.HTTPException) as exc:
            raise DatacatConnectionError(f"GET {self.base_url}/health: {describe(exc)}") from exc
        dialect = dialect_from_health(status, data)
        if dialect is None:
            raise DatacatError(status, error_message(status, data)[0])
        return dialect

    # -- sessions -----------------------------------------------------------------------

    def create_session(self, **meta: Any) -> str:
        """Create a session and return its id. Always a blocking request, in both modes.

        Args:
            meta: ``product`` (default: the program's name), ``version``
                (default ``"unknown"``), ``hostname`` (default: this host's
                name), ``metadata`` (a dict), ``heartbeat_timeout_seconds``;
                any other keyword goes into ``metadata``.

        Raises:
            ValueError: ``product`` or ``version`` is an empty string.
            DatacatError: the server refused (4xx/5xx) or is unreachable.
        """
        fields = {key: meta.pop(key) for key in SESSION_FIELDS if key in meta}
        if meta:
            fields["metadata"] = {**check_mapping("metadata", fields.get("metadata") or {}), **meta}
        return self._create(**fields)

    def register_session(self, product: str, version: str) -> str:
        """Create a session of ``product`` at ``version`` (datacat's name for it); returns its id.

        Raises:
            ValueError: either is empty (datacat's server requires both).
            DatacatError: the server refused or is unreachable.
        """
        if not product or not version:
            raise ValueError("Product and version are required to create a session")
        return self._create(product=product, version=version)

    def _create(
        self,
        product: str | None = None,
        version: str | None = None,
        hostname: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        heartbeat_timeout_seconds: float | None = None,
    ) -> str:
        body: dict[str, Any] = {}
        for key, value, default in (("product", product, default_product), ("version", version, None)):
            if value is None:
                value = default() if default is not None else DEFAULT_VERSION
            if type(value) is not str or not value:
                raise ValueError("Product and version are required to create a session")
            body[key] = value
        body["hostname"] = hostname if hostname is not None else host_name()
        dialect = self._dialect()
        if dialect == DATACAT:
            body["machine_id"] = machine_id()
        if metadata is not None:
            body["metadata"] = metadata
        if heartbeat_timeout_seconds is not None:
            body["heartbeat_timeout_seconds"] = heartbeat_timeout_seconds
        document = self._request("POST", "/api/sessions", check_mapping("session", body))
        session_id = document.get("session_id") if isinstance(document, dict) else None
        if type(session_id) is not str or not session_id:
            raise DatacatError(None, f"the server's answer has no session_id: {document!r}")
        if dialect == DATACAT and self.keepalive_interval_seconds is not None:
            self._keepalive.add(session_id)  # heartbeats as datacat's daemon sends them
            self._ticker.start()
        return session_id

    # -- writes -------------------------------------------------------------------------

    def update_state(self, session_id: str, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        check_session_id(session_id)
        patch = check_mapping("state", state)
        operation = {"op": "state", "state": patch, "timestamp": _time()}
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def log_event(
        self,
        session_id: str,
        name: str,
        category: str | Mapping[str, Any] | None = None,
        group: str | None = None,
        labels: list[str] | None = None,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
        stacktrace: list[str] | None = None,
        exception_type: str | None = None,
        exception_msg: str | None = None,
        source_file: str | None = None,
        source_line: int | None = None,
        source_function: str | None = None,
        *,
        level: str | None = None,
    ) -> dict[str, Any] | None:
        """Record an event ``name``, with datacat's fields.

        The third argument is ``category`` (a string, as in datacat) or, when it is
        a dict, ``data`` (as in the seed: ``log_event(id, "user_login", {...})``,
        then a fourth positional argument is the level).

        Args:
            category: any string (default: ``level``, else ``"info"``).
            group, message: strings; labels, stacktrace: lists of strings.
            data: a dict of JSON values (copied at the call).
            exception_type, exception_msg, source_file, source_line, source_function:
                where an error came from.
            level: one of debug, info, warning, error, critical (runwatch's
                level); by default the category when it is one of those, else info.

        Raises:
            TypeError, ValueError: an argument the server would refuse.
        """
        if category is not None and type(category) is not str:
            category, group, data, level = _seed_event_arguments(category, group, data, level)
        if type(session_id) is not str or not session_id:
            check_session_id(session_id)
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            check_name("name", name)
        if level is None:
            level = category if category in LEVELS else "info"
        elif level != "info":
            check_level(level)
        data = {} if data is None else check_mapping("data", data)
        operation = {"op": "event", "name": name, "data": data, "level": level, "timestamp": _time()}
        if category is not None and category != level:
            operation["category"] = category
        if not (
            group is None
            and labels is None
            and message is None
            and stacktrace is None
            and exception_type is None
            and exception_msg is None
            and source_file is None
            and source_line is None
            and source_function is None
        ):
            _add_event_fields(operation, group, labels, message, stacktrace, exception_type, exception_msg)
            _add_source_fields(operation, source_file, source_line, source_function)
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def log_metric(
        self,
        session_id: str,
        name: str,
        value: float,
        tags: list[str] | None = None,
        metric_type: str = "gauge",
        count: int | None = None,
        unit: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delta: float | None = None,
    ) -> dict[str, Any] | None:
        """Record one value of metric ``name``.

        Args:
            tags: a list of strings.
            metric_type: ``gauge`` (one point per call), ``timer``, ``counter``,
                ``histogram`` or any other string. A ``counter`` with ``delta``
                adds to a running total and a ``histogram`` counts ``value`` in
                buckets (``metadata["buckets"]``, else datacat's defaults): both are
                sent every ``aggregate_interval_seconds`` and before the session ends.
            count: an integer (e.g. a timer's iterations).
            unit: e.g. ``"seconds"``.
            metadata: a dict of JSON values.
            delta: the increment of a ``counter``.

        Returns:
            The server's reply (blocking), ``{"status": "ok"}`` for a counter or
            histogram (kept locally), ``None`` when queued.

        Raises:
            TypeError, ValueError: an argument the server would refuse.
        """
        if type(session_id) is not str or not session_id:
            check_session_id(session_id)
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            check_name("name", name)
        if type(value) is not float or not math.isfinite(value):
            value = check_value(name, value)
        if metric_type == "gauge" and count is None and unit is None and metadata is None and delta is None:
            if tags is None:
                operation = {"op": "metric", "name": name, "value": value, "timestamp": _time()}
            else:
                operation = {
                    "op": "metric",
                    "name": name,
                    "value": value,
                    "tags": check_tags(tags),
                    "timestamp": _time(),
                }
        else:
            typed = self._typed_metric(session_id, name, value, tags, metric_type, count, unit, metadata, delta)
            if typed is None:  # aggregated here
                return dict(ACCEPTED) if self.blocking else None
            operation = typed
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def _typed_metric(
        self,
        session_id: str,
        name: str,
        value: float,
        tags: list[str] | None,
        metric_type: str,
        count: int | None,
        unit: str | None,
        metadata: Mapping[str, Any] | None,
        delta: float | None,
    ) -> dict[str, Any] | None:
        """The operation of a metric with datacat's fields; ``None`` when it is aggregated instead."""
        metric_type = check_text("metric_type", metric_type) or "gauge"
        tag_list = check_tags(tags) if tags is not None else []
        if unit is not None:
            check_text("unit", unit)
        extra = check_mapping("metadata", metadata) if metadata is not None else {}
        if delta is not None:
            if metric_type != "counter":
                raise ValueError(f"delta is for metric_type 'counter', not {metric_type!r}")
            self._aggregates.add_counter(session_id, name, tag_list, check_value(name, delta))
            self._ticker.start()
            return None
        if metric_type == "histogram":
            bounds = check_bounds(extra.pop("buckets")) if "buckets" in extra else DEFAULT_BUCKETS
            self._aggregates.add_histogram(
                session_id, name, tag_list, value, bounds=bounds, unit=unit or "", metadata=extra
            )
            self._ticker.start()
            return None
        operation: dict[str, Any] = {"op": "metric", "name": name, "value": value, "timestamp": _time()}
        if tags is not None:
            operation["tags"] = tag_list
        if metric_type != "gauge":
            operation["type"] = metric_type
        if count is not None:
            operation["count"] = check_count("count", count)
        if unit:
            operation["unit"] = unit
        if extra:
            operation["metadata"] = extra
        return operation

    def log_exception(
        self, session_id: str, exc_info: Any = None, extra_data: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Record an ``exception`` event (category error) with type, message, stack trace and ``extra_data``.

        Args:
            exc_info: an exception or a ``sys.exc_info()`` tuple; ``None``: the
                exception being handled (captured at the call, also when queued).
                A dict here is taken as ``extra_data``.

        Raises:
            ValueError: no exception given and none is being handled.
        """
        check_session_id(session_id)
        if isinstance(exc_info, Mapping) and extra_data is None:
            exc_info, extra_data = None, exc_info
        fields = exception_fields(exc_info, extra_data)
        operation = {"op": "event", "timestamp": _time(), **fields}
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def heartbeat(self, session_id: str) -> dict[str, Any] | None:
        """Tell the server the session's application is alive."""
        check_session_id(session_id)
        operation = {"op": "heartbeat", "timestamp": _time()}
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def end_session(self, session_id: str) -> dict[str, Any] | None:
        """Send the session's counter and histogram totals, then end it.

        Non-blocking, later calls for the session are dropped and counted
        (runwatch's server refuses them with 409; datacat would store them).
        """
        check_session_id(session_id)
        self._release_session(session_id, raise_errors=self.blocking)
        operation = {"op": "end", "timestamp": _time()}
        if self.blocking:
            return self._send_now(session_id, operation)
        self._enqueue(session_id, operation)
        self._sender.mark_ended(session_id)
        return None

    def _end_after_flush(self, session_id: str, timeout: float) -> tuple[dict[str, Any] | None, bool]:
        """Non-blocking: deliver what is queued, then end the session at once; ``(reply, delivered)``.

        When the queue is not delivered within ``timeout`` seconds (or the end
        request fails), the end is queued behind it instead and the reply is ``None``.
        """
        self._release_session(session_id)
        operation = {"op": "end", "timestamp": _time()}
        delivered = self.flush(timeout)
        if delivered:
            try:
                return self._send_now(session_id, operation), True
            except DatacatError as exc:  # never raises in non-blocking mode: queue the end, retried
                logger.warning("runwatch client: ending session %s failed, queued for retry: %s", session_id, exc)
        self._enqueue(session_id, operation)
        self._sender.mark_ended(session_id)
        return None, delivered

    def _release_session(self, session_id: str, *, raise_errors: bool = False) -> None:
        """This client stops working for the session: last totals queued or sent, keep-alives stopped."""
        with self._aggregates_lock:
            self._send_aggregates_of(session_id, raise_errors=raise_errors)  # kept if this raises: end again
            self._aggregates.forget(session_id)
        self._keepalive.discard(session_id)
        with self._states_lock:
            self._states.forget(session_id)

    def pause_heartbeat_monitoring(self, session_id: str) -> dict[str, Any]:
        """Pause hang detection of the session's monitor in this process (a long blocking step ahead)."""
        monitor = self._monitors.get(session_id)
        if monitor is not None:
            monitor.pause()
        return dict(ACCEPTED)

    def resume_heartbeat_monitoring(self, session_id: str) -> dict[str, Any]:
        """Resume hang detection; the silence counts from now."""
        monitor = self._monitors.get(session_id)
        if monitor is not None:
            monitor.resume()
        return dict(ACCEPTED)

    # -- reads --------------------------------------------------------------------------

    def get_session(
        self,
        session_id: str,
        *,
        events_limit: int | None = None,
        events_cursor: str | None = None,
        metrics_limit: int | None = None,
        metrics_cursor: str | None = None,
    ) -> dict[str, Any]:
        """The session document as the server has it.

        In non-blocking mode the queue is flushed first (up to ``timeout``
        seconds), so the answer includes this client's earlier calls. The
        keyword arguments page runwatch's reading of events and metrics.

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

    def get_all_sessions(self) -> list[dict[str, Any]]:
        """Every session: ``GET /api/data/sessions`` (datacat), or runwatch's session listing page by page.

        Raises:
            DatacatError: the server refused or is unreachable.
        """
        if not self.blocking:
            self.flush(self.timeout)
        if self._dialect() == DATACAT:
            sessions = self._request("GET", "/api/data/sessions", None)
            if not isinstance(sessions, list):
                raise DatacatError(200, f"the server's answer is not a list of sessions: {sessions!r}")
            return sessions
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(100_000):  # bounded: a server that never ends its pages is a bug
            query = "?limit=1000" + (f"&cursor={quote(cursor, safe='')}" if cursor else "")
            page = self._request("GET", "/api/sessions" + query, None)
            found += page["sessions"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found
        raise DatacatError(200, "the server's session listing does not end")

    # -- periodic work ------------------------------------------------------------------

    def _send_aggregates(self) -> None:
        """Send every session's counter totals and histograms (the periodic task)."""
        for session_id in self._aggregates.sessions():
            with self._aggregates_lock:
                self._send_aggregates_of(session_id, raise_errors=False)

    def _send_aggregates_of(self, session_id: str, *, raise_errors: bool) -> None:
        for operation in self._aggregates.snapshot(session_id, _time()):
            self._send_in_background(session_id, operation, raise_errors=raise_errors)

    def _send_keepalives(self) -> None:
        """A heartbeat for each session this client created, as datacat's daemon sends every 15 s."""
        for session_id in list(self._keepalive):
            self._send_in_background(session_id, {"op": "heartbeat", "timestamp": _time()}, raise_errors=False)

    def _send_in_background(self, session_id: str, operation: dict[str, Any], *, raise_errors: bool) -> None:
        if not self.blocking:
            self._enqueue(session_id, operation)
            return
        try:
            self._send_now(session_id, operation)
        except Exception as exc:
            if raise_errors:
                raise
            # Totals are sent again next time, a heartbeat is replaced by the next one: log, lose nothing.
            logger.warning("runwatch client: periodic %s for %s failed: %s", operation["op"], session_id, exc)

    # -- sending at once ----------------------------------------------------------------

    def _state_changes(self, session_id: str, patch: dict[str, Any]) -> bool:
        with self._states_lock:
            return self._states.changes(session_id, patch)

    def _send_now(self, session_id: str, operation: dict[str, Any]) -> dict[str, Any] | None:
        """One operation as one request, in the server's dialect; the server's reply."""
        kind = operation["op"]
        if kind == "heartbeat" or kind == "end":  # the same request in both dialects
            suffix, body = runwatch_request(operation)
        elif self._dialect() == DATACAT:
            if kind == "state" and not self._state_changes(session_id, operation["state"]):
                return dict(ACCEPTED)  # a repeated state: datacat's daemon drops it too
            suffix, body = datacat_request(operation)
        else:
            suffix, body = runwatch_request(operation)
        try:
            reply = self._request("POST", session_path(session_id, suffix), body)
        except BaseException:
            if kind == "state":  # not applied: the next update must not be taken for a repeat
                with self._states_lock:
                    self._states.forget(session_id)
            raise
        self._sender.count_sent()  # sent counts operations, as in non-blocking mode
        return reply if isinstance(reply, dict) else None

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
        """Send the last totals, deliver what is queued (up to ``timeout`` seconds), then stop and close.

        What is still undelivered at the deadline is written to ``spool_dir``
        when there is one, else dropped and counted as ``shutdown``. Idempotent.

        Args:
            timeout: the longest wait for delivery; ``None``: ``exit_timeout_seconds``.
        """
        if self._closed:
            return
        self._ticker.stop(self.timeout)
        self._send_aggregates()
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


def _seed_event_arguments(
    category: object, group: str | None, data: Mapping[str, Any] | None, level: str | None
) -> tuple[None, None, Mapping[str, Any], str | None]:
    """The seed's ``log_event(name, data[, level])``: a dict where datacat has ``category``."""
    if not isinstance(category, Mapping):
        raise TypeError(f"data must be a dict (or category a string), got {type(category).__name__}")
    if data is not None:
        raise TypeError("data given twice: as the third argument (a dict) and as data=")
    if group is not None:  # the seed's positional level
        if level is not None:
            raise TypeError("level given twice: as the fourth argument and as level=")
        level = group
    return None, None, category, level


def _add_event_fields(
    operation: dict[str, Any],
    group: str | None,
    labels: list[str] | None,
    message: str | None,
    stacktrace: list[str] | None,
    exception_type: str | None,
    exception_msg: str | None,
) -> None:
    """datacat's optional event fields; like datacat's client, only those given (and non-empty)."""
    for key, text in (("group", group), ("message", message), ("exception_type", exception_type)):
        if text is not None and check_text(key, text):
            operation[key] = text
    if exception_msg is not None and check_text("exception_msg", exception_msg):
        operation["exception_msg"] = exception_msg
    if labels is not None:
        operation["labels"] = check_strings("labels", labels)
    if stacktrace is not None and check_strings("stacktrace", stacktrace):
        operation["stacktrace"] = list(stacktrace)


def _add_source_fields(
    operation: dict[str, Any], source_file: str | None, source_line: int | None, source_function: str | None
) -> None:
    if source_file is not None and check_text("source_file", source_file):
        operation["source_file"] = source_file
    if source_line is not None:
        operation["source_line"] = check_count("source_line", source_line)
    if source_function is not None and check_text("source_function", source_function):
        operation["source_function"] = source_function


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
