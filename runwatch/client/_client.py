"""DatacatClient: the low-level session API, one method per REST endpoint (sent at once or queued)."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

from ._checks import (
    LEVELS,
    MAX_NAME_LENGTH,
    check_level,
    check_mapping,
    check_name,
    check_session_id,
    check_tags,
    check_value,
    exception_fields,
)
from ._errors import DatacatError
from ._heartbeat import HeartbeatMonitor
from ._machine import hostname as host_name
from ._machine import machine_id
from ._operations import Aggregated, add_event_fields, seed_event_arguments, typed_metric
from ._options import DEFAULT_VERSION, ClientOptions, default_product, is_port
from ._periodic import PeriodicWork
from ._process import register_client, unregister_client
from ._requests import ACCEPTED, Requester
from ._sender import ClientStatistics, Sender
from ._transport import HTTPTransport, Transport
from ._wire import DATACAT, DEFAULT_BASE_URL

__all__ = ["SESSION_FIELDS", "DatacatClient"]

logger = logging.getLogger("runwatch.client")

#: Known fields of ``POST /api/sessions``; other keyword arguments go into ``metadata``.
SESSION_FIELDS: Final = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")

_USER_AGENT = "runwatch-client/0.2"
_time = time.time


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
            token, daemon_port = daemon_port, "auto"
        self.options = options = ClientOptions(
            base_url,
            token,
            timeout,
            protocol,
            blocking,
            max_queue,
            when_full,
            batch_size,
            flush_interval,
            None if spool_dir is None else Path(spool_dir),
            retry_max_seconds,
            exit_timeout_seconds,
            aggregate_interval_seconds,
            keepalive_interval_seconds,
        )
        self.daemon_port = daemon_port
        # Read on every call (and by earlier versions' users): plain attributes.
        self.base_url, self.timeout, self.blocking = options.base_url, options.timeout, options.blocking
        self.max_queue, self.batch_size, self.spool_dir = options.max_queue, options.batch_size, options.spool_dir
        self.exit_timeout_seconds = options.exit_timeout_seconds
        self._injected_transport = transport
        self._transport: Transport = transport if transport is not None else HTTPTransport(base_url, timeout=timeout)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": _USER_AGENT}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        dialect = None if protocol == "auto" else protocol
        self._requests = Requester(self._transport, self._headers, self.base_url, dialect)
        self._closed = False
        self._init_process_state()
        register_client(self)
        self._sender.resume_spooled()

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: the queue, its sender, the periodic work."""
        options = self.options
        self._sender = Sender(
            self._transport,
            self._headers,
            self.base_url,
            max_queue=options.max_queue,
            block_when_full=options.when_full == "block",
            batch_size=options.batch_size,
            flush_interval=options.flush_interval,
            spool_dir=None if options.blocking else options.spool_dir,
            retry_max_seconds=options.retry_max_seconds,
            state_changes=self._requests.state_changes,
        )
        self._sender.closed = self._closed
        self._enqueue = self._sender.enqueue  # bound once: the hot path saves a lookup
        self._periodic = PeriodicWork(
            self._send_in_background, options.aggregate_interval_seconds, options.keepalive_interval_seconds
        )
        self._monitors: dict[str, HeartbeatMonitor] = {}

    def _after_fork_in_child(self) -> None:
        # The parent's totals, keep-alives and monitors stay the parent's: the child starts empty.
        self._requests.reset_after_fork()
        self._init_process_state()
        reset = getattr(self._transport, "reset_after_fork", None)
        if reset is not None:
            reset()

    def _derive(self, **changes: Any) -> DatacatClient:
        """A client to the same server with the same options except ``changes`` (a new queue)."""
        options = replace(self.options, protocol=self._requests.known_dialect or self.options.protocol, **changes)
        settings = {field.name: getattr(options, field.name) for field in fields(options) if field.name != "base_url"}
        return DatacatClient(options.base_url, self.daemon_port, transport=self._injected_transport, **settings)

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
        known = {key: meta.pop(key) for key in SESSION_FIELDS if key in meta}
        if meta:
            known["metadata"] = {**check_mapping("metadata", known.get("metadata") or {}), **meta}
        return self._create(**known)

    def register_session(self, product: str, version: str) -> str:
        """Create a session of ``product`` at ``version`` (datacat's name for it); returns its id.

        Raises:
            ValueError: either is empty or ``None`` (datacat's server requires both).
            TypeError: either is not a string.
            DatacatError: the server refused or is unreachable.
        """
        if product is None or version is None:
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
            if type(value) is not str:
                raise TypeError(f"{key} must be a string, got {type(value).__name__}")
            if not value:
                raise ValueError("Product and version are required to create a session")
            body[key] = value
        body["hostname"] = hostname if hostname is not None else host_name()
        dialect = self._requests.dialect()
        if dialect == DATACAT:
            body["machine_id"] = machine_id()
        if metadata is not None:
            body["metadata"] = metadata
        if heartbeat_timeout_seconds is not None:
            body["heartbeat_timeout_seconds"] = heartbeat_timeout_seconds
        document = self._requests.request("POST", "/api/sessions", check_mapping("session", body))
        session_id = document.get("session_id") if isinstance(document, dict) else None
        if type(session_id) is not str or not session_id:
            raise DatacatError(None, f"the server's answer has no session_id: {document!r}")
        if dialect == DATACAT and self.options.keepalive_interval_seconds is not None:
            self._periodic.keep_alive(session_id)  # heartbeats as datacat's daemon sends them
        return session_id

    # -- writes -------------------------------------------------------------------------

    def update_state(self, session_id: str, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        check_session_id(session_id)
        patch = check_mapping("state", state)
        operation = {"op": "state", "state": patch, "timestamp": _time()}
        if self.blocking:
            return self._requests.send(session_id, operation)
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
            if type(category) is dict and data is None and group is None:
                data, category = category, None  # the seed's log_event(id, name, data): the common call
            else:
                category, group, data, level = seed_event_arguments(category, group, data, level)
        if type(session_id) is not str or not session_id:
            check_session_id(session_id)
        # isascii() is constant time; a name that is not ASCII is checked for lone surrogates.
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii():
            check_name("name", name)
        if level is None:  # `None in LEVELS` would cost a tuple scan on the common call
            level = "info" if category is None or category not in LEVELS else category
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
            add_event_fields(
                operation,
                group,
                labels,
                message,
                stacktrace,
                exception_type,
                exception_msg,
                source_file,
                source_line,
                source_function,
            )
        if self.blocking:
            return self._requests.send(session_id, operation)
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
        # isascii() is constant time; a name that is not ASCII is checked for lone surrogates.
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isascii():
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
            typed = typed_metric(name, value, tags, metric_type, count, unit, metadata, delta, _time())
            if isinstance(typed, Aggregated):
                self._periodic.add(session_id, name, typed)
                return dict(ACCEPTED) if self.blocking else None
            operation = typed
        if self.blocking:
            return self._requests.send(session_id, operation)
        self._enqueue(session_id, operation)
        return None

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
            return self._requests.send(session_id, operation)
        self._enqueue(session_id, operation)
        return None

    def heartbeat(self, session_id: str) -> dict[str, Any] | None:
        """Tell the server the session's application is alive."""
        check_session_id(session_id)
        operation = {"op": "heartbeat", "timestamp": _time()}
        if self.blocking:
            return self._requests.send(session_id, operation)
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
            return self._requests.send(session_id, operation)
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
                return self._requests.send(session_id, operation), True
            except DatacatError as exc:  # never raises in non-blocking mode: queue the end, retried
                logger.warning("runwatch client: ending session %s failed, queued for retry: %s", session_id, exc)
        self._enqueue(session_id, operation)
        self._sender.mark_ended(session_id)
        return None, delivered

    def _release_session(self, session_id: str, *, raise_errors: bool = False) -> None:
        """This client stops working for the session: last totals queued or sent, keep-alives stopped."""
        self._periodic.release(session_id, raise_errors=raise_errors)
        self._requests.forget_state(session_id)

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
        state_history_limit: int | None = None,
        state_history_cursor: str | None = None,
    ) -> dict[str, Any]:
        """The session document as the server has it.

        In non-blocking mode the queue is flushed first (up to ``timeout``
        seconds), so the answer includes this client's earlier calls. The
        keyword arguments page runwatch's reading of events, metrics and state patches.

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
            "state_history_limit": state_history_limit,
            "state_history_cursor": state_history_cursor,
        }
        return self._requests.read_session(
            session_id, {key: value for key, value in query.items() if value is not None}
        )

    def get_all_sessions(self) -> list[dict[str, Any]]:
        """Every session: ``GET /api/data/sessions`` (datacat), or runwatch's session listing page by page.

        Raises:
            DatacatError: the server refused or is unreachable.
        """
        if not self.blocking:
            self.flush(self.timeout)
        return self._requests.read_all_sessions()

    # -- periodic work ------------------------------------------------------------------

    def _send_in_background(self, session_id: str, operation: dict[str, Any], raise_errors: bool) -> None:
        """The periodic work's sending: queued in non-blocking mode, else sent (failures logged unless raise_errors)."""
        if not self.blocking:
            self._enqueue(session_id, operation)
            return
        try:
            self._requests.send(session_id, operation)
        except Exception as exc:
            if raise_errors:
                raise
            # Totals are sent again next time, a heartbeat is replaced by the next one: log, lose nothing.
            logger.warning("runwatch client: periodic %s for %s failed: %s", operation["op"], session_id, exc)

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
        self._periodic.stop(self.timeout)
        self._periodic.send_totals()
        self._closed = True
        self._requests.closed = True
        unregister_client(self)
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
