""":class:`SessionMonitor`: the synchronous facade of an application that manages user sessions.

Logins, expiries, errors, platform switches and suspicious activity are
recorded as session runs in the store (the layout is
:mod:`runwatch.session_events`), through a pipeline that the
composition root builds (:func:`runwatch.assemble.assemble_sessions`).
Statistics and the health report are read from the store, so every process
writing it is counted; the alerts are ordinary alert-engine rules
(:mod:`.alerting`) over the same windows. With ``SessionConfig.server_url``
(or ``MONITOR_SERVER_URL``) it records into a ``runwatch serve`` instead
(remote mode, as for :class:`~runwatch.WebMonitor`): through a spool to the
server's ingest, and its reports come from the server's store.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._version import __version__
from ..events import LEVELS, AlertEvent, LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from ..exceptions import StoreError
from ..remote.server_url import display_url
from ..session_events import MONITOR_KIND, SESSION_KIND, SYSTEM_RUN_ID, encode_session_tags, session_metadata
from .alerting import ERROR_RATE, SessionAlerts
from .health import health_report
from .records import SessionConfig, SessionEvent, SessionMetric, check_text, check_user_id, epoch_seconds

if TYPE_CHECKING:
    from ..assemble import Assembly
    from ..remote.reader import RestReader
    from ..store.base import Store

__all__ = ["SessionMonitor", "get_session_monitor"]

logger = logging.getLogger("runwatch.sessions")


class SessionMonitor:
    """Record application sessions, their events and metrics; report statistics and health.

    Args:
        db_manager: the store to write (a :class:`~runwatch.store.manager.DatabaseManager`,
            or anything with a ``db_path``; a path works too). In remote mode
            it is not written (``None`` is fine); its directory holds the spool.
        config: thresholds and settings (default :meth:`SessionConfig.load`:
            remote mode when ``MONITOR_SERVER_URL`` is set).

    Recording never waits on I/O (events go to this monitor's own pipeline,
    running in a background thread on the same store); the reading methods
    first wait until everything recorded before them is committed. Close it
    with :meth:`close` (or ``with``); open monitors are closed at exit.

    In remote mode (``config.server_url``) events go to the server through an
    on-disk spool (``monitor_data/spool`` beside the store path, or in the
    working directory), and the reports come from the server's store; a
    session not seen before by this process is looked up on the server once.

    Raises:
        TypeError: a ``db_manager`` without a usable path, or a bad ``config``.
    """

    def __init__(self, db_manager: Any, config: SessionConfig | None = None) -> None:
        if config is not None and not isinstance(config, SessionConfig):
            raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
        self.config = config or SessionConfig.load()
        path = getattr(db_manager, "db_path", db_manager)
        if path is None and self.config.server_url is not None:
            path = "."  # remote mode without a local store: the spool goes to ./monitor_data
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"db_manager must have a db_path, got {type(db_manager).__name__}")
        self.db_path = str(Path(path))
        self._reader: RestReader | None = None
        self._lock = threading.RLock()
        self._known: OrderedDict[str, None] = OrderedDict()  # session runs known to exist
        self._hostname = socket.gethostname()
        self._system_started = False
        self._alerts = SessionAlerts(self.config)
        self._closed = False
        self._assembly: Assembly = self._initialize_monitoring()
        self._emit_many = self._assembly.pipeline.bridge.emit_many
        _open_monitors.add(self)

    def _initialize_monitoring(self) -> Assembly:
        """Start this monitor's pipeline (the sessions profile of the composition root) on the store."""
        from ..assemble import assemble_sessions

        assembly = assemble_sessions(
            self.db_path, server_url=self.config.server_url, server_token=self.config.server_token
        )
        assembly.start()
        _install_exit_hook()
        return assembly

    # -- recording ---------------------------------------------------------------------------

    def _emit(self, *events: Any) -> None:
        if self._closed:
            raise ValueError("this SessionMonitor is closed")
        self._emit_many(events)

    def _ensure_session(self, session_id: str, user_id: int | str, now: float) -> None:
        """Make sure the session's run exists as a ``session`` run (created implicitly if not)."""
        if session_id in self._known:
            self._known.move_to_end(session_id)
            return
        if not self._stored(session_id):
            self._start_session(session_id, user_id, None, now)
        self._remember(session_id)

    def _stored(self, session_id: str) -> bool:
        try:
            return self._reads().has_run(session_id)
        except StoreError as exc:
            if self.config.server_url is None:
                raise
            # The server is away: start the session (a start of a session it has refreshes it).
            logger.warning("runwatch: cannot ask the server about session %r: %s", session_id, exc)
            return False

    def _reads(self) -> Store | RestReader:
        """Where the reports come from: the store, or in remote mode the server's REST API."""
        if self.config.server_url is None:
            return self._assembly.store
        if self._reader is None:
            from ..remote.reader import RestReader

            self._reader = RestReader(self.config.server_url, token=self.config.server_token, timeout=10.0)
        return self._reader

    def _start_session(self, session_id: str, user_id: int | str, platform_id: int | None, now: float) -> None:
        metadata = session_metadata(
            product=self.config.product,
            hostname=self._hostname,
            metadata={"user_id": user_id, "platform_id": platform_id},
        )
        self._emit(RunLifecycle(session_id, now, RunTransition.STARTED, run_kind=SESSION_KIND, metadata=metadata))
        self._remember(session_id)

    def _remember(self, session_id: str) -> None:
        self._known[session_id] = None
        while len(self._known) > 100_000:
            self._known.popitem(last=False)

    def _ensure_system_run(self, now: float) -> None:
        if not self._system_started:
            metadata = {"hostname": self._hostname, "pid": os.getpid()}
            self._emit(
                RunLifecycle(SYSTEM_RUN_ID, now, RunTransition.STARTED, run_kind=MONITOR_KIND, metadata=metadata)
            )
            self._system_started = True

    def _raise_alerts(self, alerts: list[AlertEvent], now: float) -> list[AlertEvent]:
        """Store the alert events of the rules' transitions (the error rate's in this monitor's own run)."""
        if alerts:
            if any(alert.rule == ERROR_RATE for alert in alerts):
                self._ensure_system_run(now)
            self._emit(*alerts)
        return alerts

    def log_system_startup(self) -> None:
        """Record that the application (and this monitor) started, with host and version details."""
        with self._lock:
            now = time.time()
            self._ensure_system_run(now)
            data = {
                "hostname": self._hostname,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "runwatch": __version__,
                "db_path": None if self.config.server_url is not None else self.db_path,
                "server": None if self.config.server_url is None else display_url(self.config.server_url),
                "thresholds": {
                    "max_error_rate": self.config.max_error_rate,
                    "critical_error_rate": self.config.critical_error_rate,
                    "max_suspicious_events_per_user": self.config.max_suspicious_events_per_user,
                    "slow_metric_thresholds": dict(self.config.slow_metric_thresholds),
                },
            }
            self._emit(LogEvent(SYSTEM_RUN_ID, now, "system_startup", "info", data))

    def record_metric(
        self,
        metric_type: str,
        session_id: str,
        user_id: int | str,
        value: float,
        metadata: dict[str, Any] | None = None,
        *,
        timestamp: datetime | None = None,
    ) -> list[AlertEvent]:
        """Record a session metric (an unknown session is created implicitly).

        Args:
            metric_type: what was measured (e.g. ``session_creation_time``).
            session_id: the session.
            user_id: the session's user.
            value: the measurement.
            metadata: JSON-compatible details, returned by :meth:`export_metrics`.
            timestamp: when it was measured (default: now; a naive datetime is UTC).

        Returns:
            The alert events it caused (see :meth:`_check_metric_alerts`).

        Raises:
            TypeError / ValueError: naming the bad argument.
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        metric = SessionMetric(metric_type, session_id, user_id, value, dict(metadata or {}))
        if timestamp is not None:
            metric.timestamp = timestamp
        check_text("metric_type", metric_type)
        check_text("session_id", session_id)
        check_user_id(user_id)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be a number, got {value!r}")
        with self._lock:
            now = epoch_seconds(metric.timestamp, "timestamp")
            self._ensure_session(session_id, user_id, now)
            self._emit(_metric_event(metric))
            return self._check_metric_alerts(metric)

    def record_event(self, event: SessionEvent) -> list[AlertEvent]:
        """Record a session event (an unknown session is created implicitly).

        The event is stored as a log event of type ``event.event_type`` whose
        data is ``{"user_id": ..., "details": {...}}``.

        Returns:
            The alert events it caused (see :meth:`_check_event_alerts`).

        Raises:
            TypeError / ValueError: naming the bad field.
        """
        if not isinstance(event, SessionEvent):
            raise TypeError(f"event must be a SessionEvent, got {type(event).__name__}")
        check_text("event_type", event.event_type)
        check_text("session_id", event.session_id)
        check_user_id(event.user_id)
        if event.severity not in LEVELS:
            raise ValueError(f"severity must be one of {', '.join(LEVELS)}; got {event.severity!r}")
        with self._lock:
            now = epoch_seconds(event.timestamp, "timestamp")
            self._ensure_session(event.session_id, event.user_id, now)
            self._emit(_log_event(event))
            return self._check_event_alerts(event)

    def log_session_created(self, session_id: str, user_id: int | str, platform_id: int | None = None) -> None:
        """Record a new session (status ``active``) of ``user_id`` on ``platform_id``."""
        check_text("session_id", session_id)
        check_user_id(user_id)
        with self._lock:
            event = SessionEvent("session_created", session_id, user_id, {"platform_id": platform_id})
            self._start_session(session_id, user_id, platform_id, epoch_seconds(event.timestamp, "timestamp"))
            self._emit(
                StatePatch(session_id, epoch_seconds(event.timestamp, "timestamp"), {"platform_id": platform_id})
            )
            self.record_event(event)

    def log_session_expired(self, session_id: str, user_id: int | str, reason: str) -> None:
        """Record that a session expired (status ``ended``), and why; its alerts resolve."""
        with self._lock:
            event = SessionEvent("session_expired", session_id, user_id, {"reason": reason})
            self.record_event(event)
            now = epoch_seconds(event.timestamp, "timestamp")
            ended = RunLifecycle(session_id, now, RunTransition.COMPLETED)
            self._emit(ended)
            self._raise_alerts(self._alerts.ended(ended, time.time()), now)

    def log_session_error(self, session_id: str, user_id: int | str, error_type: str, error_details: str) -> None:
        """Record a session error (level ``error``), counted by ``error_type``."""
        check_text("error_type", error_type)
        details = {"error_type": error_type, "error_details": error_details}
        self.record_event(SessionEvent("session_error", session_id, user_id, details, severity="error"))

    def log_platform_switch(
        self,
        session_id: str,
        user_id: int | str,
        old_platform_id: int | None,
        new_platform_id: int,
        switch_duration: float,
    ) -> None:
        """Record a platform switch: an event, the new ``platform_id`` in the state and a
        ``platform_switch_time`` metric (seconds)."""
        with self._lock:
            details = {"old_platform_id": old_platform_id, "new_platform_id": new_platform_id}
            event = SessionEvent("platform_switch", session_id, user_id, details)
            self.record_event(event)
            self._emit(
                StatePatch(session_id, epoch_seconds(event.timestamp, "timestamp"), {"platform_id": new_platform_id})
            )
            self.record_metric("platform_switch_time", session_id, user_id, switch_duration, details)

    def log_suspicious_activity(
        self, session_id: str, user_id: int | str, activity_type: str, details: dict[str, Any]
    ) -> None:
        """Record suspicious activity (level ``warning``), counted per user."""
        check_text("activity_type", activity_type)
        if not isinstance(details, Mapping):
            raise TypeError(f"details must be a dict, got {type(details).__name__}")
        payload = {"activity_type": activity_type, **details}
        self.record_event(SessionEvent("suspicious_activity", session_id, user_id, payload, severity="warning"))

    # -- alert checks (the session rules, evaluated by the alert engine) -----------------------

    def _check_metric_alerts(self, metric: SessionMetric) -> list[AlertEvent]:
        """A value above its type's ``slow_metric_thresholds`` fires ``session_slow_<type>``
        (the session's next value at or below it resolves the alert).

        Returns:
            The alert events emitted (empty when nothing changed).
        """
        clock = time.time()
        alerts = [*self._alerts.tick(clock), *self._alerts.metric(_metric_event(metric), metric.user_id, clock)]
        return self._raise_alerts(alerts, epoch_seconds(metric.timestamp, "timestamp"))

    def _check_event_alerts(self, event: SessionEvent) -> list[AlertEvent]:
        """Store the event and evaluate the windowed rules on it (see :mod:`runwatch.sessions.alerting`).

        ``session_suspicious_activity`` fires when a user has
        ``max_suspicious_events_per_user`` suspicious events within
        ``statistics_window_seconds``; ``session_error_rate`` fires when
        errors per created session within the window rise above
        ``max_error_rate`` (severity ``critical`` above ``critical_error_rate``).
        Both resolve when their count falls back.

        Returns:
            The alert events emitted.
        """
        now = epoch_seconds(event.timestamp, "timestamp")
        clock = time.time()
        alerts = self._alerts.tick(clock)
        if event.event_type == "suspicious_activity":
            activity = str(event.details.get("activity_type", "unknown"))
            alerts += self._alerts.suspicious(_log_event(event), event.user_id, activity, clock)
        elif event.event_type == "session_created":
            alerts += self._alerts.created(now, clock)
        elif event.event_type == "session_error":
            alerts += self._alerts.error(now, clock)
        return self._raise_alerts(alerts, now)

    # -- reading -------------------------------------------------------------------------------

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before the call is committed.

        Returns:
            ``True`` once committed; ``False`` on timeout or when closed.
        """
        return self._assembly.thread.flush(timeout)

    def wait_delivered(self, timeout: float | None = 30.0) -> bool:
        """Remote mode: wait until the server has acknowledged everything recorded before the call
        (embedded mode: the same as :meth:`flush`).

        Returns:
            ``False`` when ``timeout`` seconds passed first (what is recorded waits in the spool).
        """
        if not self.flush(timeout):
            return False
        from ..remote.sink import REMOTE_SINK

        sink = self._assembly.services.get(REMOTE_SINK)
        return True if sink is None else sink.wait_delivered(timeout)

    def _before_reading(self) -> None:
        """Wait until what this monitor recorded is in the store it reads (bounded)."""
        if self.config.server_url is None:
            self.flush()
        elif not self.wait_delivered(30.0):
            logger.warning("runwatch: the server has not acknowledged every session event yet; reporting what it has")

    def get_session_statistics(self) -> dict[str, Any]:
        """Session statistics from the store (every process writing it is counted).

        Returns:
            ``{"timestamp": datetime, "window_seconds", "sessions": {"active",
            "hung", "crashed", "ended", "total", "created", "expired"},
            "errors": {"total", "by_type", "rate"}, "suspicious_activity":
            {"total", "by_user"}, "metrics": {type: {"count", "mean", "min",
            "max", "p95"}}}``. ``active``/``hung``/``crashed``/``ended``/``total``
            are current (``active`` includes hung sessions); ``created``,
            ``expired``, errors, suspicious events and metrics count the last
            ``statistics_window_seconds``. ``rate`` is errors per created
            session (1.0 when errors happened but no session was created).
            Metric figures ignore NaN; ``p95`` interpolates linearly.
        """
        self._before_reading()
        now = time.time()
        window = self.config.statistics_window_seconds
        stats = self._reads().session_statistics(None if window is None else now - window)
        return {"timestamp": datetime.fromtimestamp(now, UTC), "window_seconds": window, **stats}

    def get_session_health_report(self) -> dict[str, Any]:
        """Judge the statistics against the configured thresholds (see :func:`runwatch.sessions.health.health_report`).

        Returns:
            ``{"status": "healthy" | "degraded" | "critical", "timestamp",
            "reasons": [...], "recommendations": [...], "checks": {name:
            {"status", "value", "threshold"}}, "statistics": {...}}``. The
            error rate above ``critical_error_rate`` is critical; above
            ``max_error_rate``, a user at ``max_suspicious_events_per_user``,
            a metric's p95 above its slow threshold, or hung or crashed
            sessions are degraded.
        """
        return health_report(self.get_session_statistics(), self.config)

    def export_metrics(
        self, start_time: datetime | None = None, end_time: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Every session metric measured between ``start_time`` and ``end_time`` (inclusive).

        Args:
            start_time: the earliest (a naive datetime is UTC); ``None``: no bound.
            end_time: the latest; ``None``: no bound.

        Returns:
            One dict per value, in recording order: ``metric_type``,
            ``session_id``, ``user_id`` (``None`` for metrics not recorded by a
            SessionMonitor), ``value``, ``metadata`` (a dict) and ``timestamp``
            (an aware UTC datetime).

        Raises:
            TypeError: a bound that is not a datetime or epoch seconds.
        """
        start = None if start_time is None else epoch_seconds(start_time, "start_time")
        end = None if end_time is None else epoch_seconds(end_time, "end_time")
        self._before_reading()
        rows = self._reads().session_metrics(start, end)
        for row in rows:
            row["timestamp"] = datetime.fromtimestamp(row["timestamp"], UTC)
        return rows

    def cleanup_old_data(self, retention_days: int | float = 30) -> dict[str, int]:
        """Delete session data older than ``retention_days`` days from the store.

        Removes session (and this monitor's own) metric rows, events and state
        patches older than the cutoff, and sessions ended before it entirely.
        Per-metric summaries of sessions that are kept still count the removed
        values.

        Returns:
            Rows removed: ``{"metric_rows", "events", "state_history", "sessions"}``.

        Raises:
            ValueError: ``retention_days`` is not a positive number.
        """
        valid = isinstance(retention_days, (int, float)) and not isinstance(retention_days, bool)
        if not valid or not 0 < retention_days < math.inf:
            raise ValueError(f"retention_days must be a positive number, got {retention_days!r}")
        if self.config.server_url is not None:
            raise ValueError(
                "cleanup_old_data removes rows of a local store; in remote mode clean the server's store there"
                " (runwatch cleanup --db ... on the server)"
            )
        self.flush()
        cutoff = time.time() - retention_days * 86_400
        with self._lock:
            counts = self._assembly.store.remove_old_sessions(cutoff)
            self._known.clear()  # removed sessions must be created again when they reappear
        return counts

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Mark this monitor's own run completed, drain the pipeline and stop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._system_started:
                    self._emit(RunLifecycle(SYSTEM_RUN_ID, time.time(), RunTransition.COMPLETED))
            finally:
                self._closed = True
                self._assembly.close()
                if self._reader is not None:
                    self._reader.close()
                _open_monitors.discard(self)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        closed = " closed" if self._closed else ""
        if self.config.server_url is not None:
            return f"<SessionMonitor server={display_url(self.config.server_url)!r}{closed}>"
        return f"<SessionMonitor db={self.db_path!r}{closed}>"


def _metric_event(metric: SessionMetric) -> Metric:
    """How a session metric is stored: one value, its user and metadata in the tags."""
    tags = encode_session_tags(user_id=metric.user_id, metadata=metric.metadata or None)
    at = epoch_seconds(metric.timestamp, "timestamp")
    return Metric(metric.session_id, at, {metric.metric_type: float(metric.value)}, tags=tags)


def _log_event(event: SessionEvent) -> LogEvent:
    """How a session event is stored: a log event with the user and the details."""
    data = {"user_id": event.user_id, "details": event.details}
    return LogEvent(
        event.session_id, epoch_seconds(event.timestamp, "timestamp"), event.event_type, event.severity, data
    )


_open_monitors: weakref.WeakSet[SessionMonitor] = weakref.WeakSet()
_shared: SessionMonitor | None = None
_shared_lock = threading.Lock()
_hook_installed = False


def _install_exit_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        _hook_installed = True
        atexit.register(_close_open_monitors)


def _close_open_monitors() -> None:
    for monitor in list(_open_monitors):
        try:
            monitor.close()
        except Exception:
            logger.exception("runwatch: closing %r at exit failed", monitor)


def get_session_monitor(db_manager: Any, config: SessionConfig | None = None) -> SessionMonitor:
    """The process-wide :class:`SessionMonitor`, created on the first call.

    Later calls return the same instance (a closed one is replaced).

    Args:
        db_manager: the store (see :class:`SessionMonitor`).
        config: used when the instance is created; ``None`` or the config it
            was created with afterwards.

    Raises:
        ValueError: the shared monitor writes another store, or was created
            with another config.
    """
    global _shared
    given = getattr(db_manager, "db_path", db_manager)
    path = str(Path("." if given is None else given))
    with _shared_lock:
        monitor = _shared
        if monitor is not None and not monitor.closed:
            if monitor.db_path != path:
                raise ValueError(f"the shared SessionMonitor writes {monitor.db_path!r}, not {path!r}")
            if config is not None and config != monitor.config:
                raise ValueError("the shared SessionMonitor was created with another SessionConfig")
            return monitor
        _shared = SessionMonitor(db_manager, config)
        return _shared
