"""Application sessions: the storage mapping, and :class:`SessionMonitor` for in-process apps.

An application session is a run of kind ``session`` (``run_id`` = session id)
in the same store, pipeline and dashboard as training runs:

- creation is a ``started`` :class:`~runwatch.events.RunLifecycle` with
  ``run_kind = "session"`` and the metadata of :func:`session_metadata`
  (``product``, ``version``, ``hostname``, ``heartbeat_timeout_seconds`` and
  the caller's own ``metadata``; :class:`SessionMonitor` puts ``user_id`` and
  ``platform_id`` there);
- the end is a ``completed`` lifecycle;
- events are :class:`~runwatch.events.LogEvent` (``type`` = name);
- metrics are :class:`~runwatch.events.Metric` events with one value
  (``{name: value}``) whose tags hold JSON texts: ``tags`` (the REST list of
  strings), ``user_id`` and ``metadata`` (from :class:`SessionMonitor`);
- state changes are :class:`~runwatch.events.StatePatch` events, heartbeats
  :class:`~runwatch.events.Heartbeat` events.

:class:`SessionMonitor` is the synchronous facade of an application that
manages user sessions (login, expiry, errors, platform switches, suspicious
activity). It runs its own pipeline on the store and answers statistics and
health reports from it, so every process writing the same store is counted.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import orjson

from .events import LEVELS, AlertEvent, LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from .store import forksafe

if TYPE_CHECKING:
    from .pipeline.thread import PipelineThread

__all__ = [
    "MONITOR_KIND",
    "SESSION_KIND",
    "SYSTEM_RUN_ID",
    "SessionConfig",
    "SessionEvent",
    "SessionMetric",
    "SessionMonitor",
    "decode_metric_value",
    "decode_session_tags",
    "encode_session_tags",
    "get_session_monitor",
    "session_metadata",
    "session_status",
]

logger = logging.getLogger("runwatch.sessions")

#: ``runs.kind`` of application sessions.
SESSION_KIND: Final = "session"
#: ``runs.kind`` of the run holding a :class:`SessionMonitor`'s own events (startup, error-rate alerts).
MONITOR_KIND: Final = "session_monitor"
#: The run id of that run.
SYSTEM_RUN_ID: Final = "session-monitor"

# -- the storage mapping (pure) ---------------------------------------------------------------

#: Session status (REST) of each run status.
_SESSION_STATUS: Final = {
    "running": "active",
    "paused": "active",
    "hung": "hung",
    "crashed": "crashed",
    "completed": "ended",
    "failed": "ended",
}
#: Run statuses of each session status (for filters).
RUN_STATUSES_OF: Final = {
    "active": ("running", "paused"),
    "hung": ("hung",),
    "crashed": ("crashed",),
    "ended": ("completed", "failed"),
}


def session_status(run_status: str) -> str:
    """The session status (``active``, ``hung``, ``crashed``, ``ended``) of a run status."""
    return _SESSION_STATUS.get(run_status, "active")


def session_metadata(
    *,
    product: str | None = None,
    version: str | None = None,
    hostname: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    heartbeat_timeout_seconds: float | None = None,
) -> dict[str, Any]:
    """The ``runs.metadata`` of a session (what its ``started`` lifecycle carries)."""
    return {
        "product": product,
        "version": version,
        "hostname": hostname,
        "heartbeat_timeout_seconds": heartbeat_timeout_seconds,
        "metadata": dict(metadata or {}),
    }


def encode_session_tags(tags: list[str] | None = None, **fields: Any) -> dict[str, str] | None:
    """The tags of a session metric: each value a JSON text (``None`` values are left out).

    Args:
        tags: the REST list of tag strings, stored under ``tags``.
        fields: more JSON values (``user_id``, ``metadata``).
    """
    out: dict[str, str] = {}
    if tags:
        out["tags"] = orjson.dumps(tags).decode()
    for key, value in fields.items():
        if value is not None:
            out[key] = orjson.dumps(value).decode()
    return out or None


def decode_session_tags(text: str | None) -> tuple[list[str], dict[str, Any]]:
    """Split stored metric tags into the REST tag list and the other decoded fields.

    Tags that are not session tags (a training metric's ``{"action": "left"}``)
    are rendered as ``"key:value"`` strings in the list.

    Returns:
        ``(tags, fields)``: e.g. ``(["app:x"], {"user_id": 7, "metadata": {...}})``.
    """
    if not text:
        return [], {}
    stored = orjson.loads(text)
    tags: list[str] = []
    fields: dict[str, Any] = {}
    if not isinstance(stored, dict):
        return tags, fields
    for key, raw in stored.items():
        try:
            value = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            value = raw
        if key == "tags" and isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            tags[:0] = value
        elif key in ("user_id", "metadata"):
            fields[key] = value
        else:
            tags.append(f"{key}:{raw}")
    return tags, fields


def decode_metric_value(value: Any) -> float:
    """A stored metric value: ``null`` is NaN, ``"inf"``/``"-inf"`` are ±Inf."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return math.inf if value == "inf" else -math.inf
    return float(value)


# -- the seed's records ------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _epoch(value: datetime | float | int, name: str) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a datetime or finite epoch seconds, got {value!r}")
    return float(value)


def _check_user_id(user_id: object) -> None:
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
        raise TypeError(f"user_id must be an int or a string, got {user_id!r}")


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise (TypeError if not isinstance(value, str) else ValueError)(f"{name} must be a non-empty string")


@dataclass
class SessionMetric:
    """One measurement about a session (e.g. ``session_creation_time`` in seconds).

    Attributes:
        metric_type: what was measured.
        session_id: the session.
        user_id: the session's user.
        value: the measurement (units are the metric type's own).
        metadata: JSON-compatible details.
        timestamp: when it was measured (a naive datetime is UTC).
    """

    metric_type: str
    session_id: str
    user_id: int | str
    value: float
    metadata: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=_now)


@dataclass
class SessionEvent:
    """Something that happened to a session (``session_created``, ``session_error``...).

    Attributes:
        event_type: what happened.
        session_id: the session.
        user_id: the session's user.
        details: JSON-compatible details.
        severity: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        timestamp: when it happened (a naive datetime is UTC).
    """

    event_type: str
    session_id: str
    user_id: int | str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"
    timestamp: datetime = field(default_factory=_now)


_DEFAULT_SLOW: Final = MappingProxyType(
    {"session_creation_time": 1.0, "platform_switch_time": 2.0, "session_sync_time": 5.0}
)


@dataclass(frozen=True)
class SessionConfig:
    """Alert thresholds and reporting settings of a :class:`SessionMonitor`.

    Args:
        max_error_rate: session errors per created session above which the
            health is ``degraded`` (and ``session_error_rate`` fires).
        critical_error_rate: the rate above which the health is ``critical``.
        max_suspicious_events_per_user: suspicious events of one user at
            which ``session_suspicious_activity`` fires and health is ``degraded``.
        slow_metric_thresholds: metric type → the value above which a
            measurement is slow (``session_slow_<type>`` fires; a p95 above
            it makes the health ``degraded``), in the metric's own unit.
        statistics_window_seconds: statistics and health count events and
            metrics of this many recent seconds; ``None`` for all time.
            Session counts by status (active, hung...) are always current.
        product: the ``product`` recorded with every session.

    Raises:
        ValueError / TypeError: naming the bad field.
    """

    max_error_rate: float = 0.05
    critical_error_rate: float = 0.20
    max_suspicious_events_per_user: int = 5
    slow_metric_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_SLOW))
    statistics_window_seconds: float | None = 3600.0
    product: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_error_rate", "critical_error_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.critical_error_rate < self.max_error_rate:
            raise ValueError("critical_error_rate must be at least max_error_rate")
        limit = self.max_suspicious_events_per_user
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_suspicious_events_per_user must be a positive integer, got {limit!r}")
        if not isinstance(self.slow_metric_thresholds, Mapping):
            raise TypeError("slow_metric_thresholds must be a mapping of metric type to number")
        for name, threshold in self.slow_metric_thresholds.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"slow_metric_thresholds keys must be non-empty strings, got {name!r}")
            if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
                raise TypeError(f"slow_metric_thresholds.{name} must be a finite number, got {threshold!r}")
        object.__setattr__(self, "slow_metric_thresholds", MappingProxyType(dict(self.slow_metric_thresholds)))
        window = self.statistics_window_seconds
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or not window > 0):
            raise ValueError(f"statistics_window_seconds must be a positive number or None, got {window!r}")
        if self.product is not None and not isinstance(self.product, str):
            raise TypeError(f"product must be a string or None, got {self.product!r}")


# -- store reads (plain functions of a connection) ------------------------------------------

_SESSION_RUNS = f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}'"
_COUNTED_EVENTS: Final = ("session_created", "session_expired", "session_error", "suspicious_activity")


def _statistics(conn: sqlite3.Connection, since: float | None) -> dict[str, Any]:
    """Session counts, event counts and metric statistics (epoch seconds in, plain values out)."""
    import numpy as np

    floor = -math.inf if since is None else since
    conn.execute("BEGIN")  # one snapshot for every count
    try:
        by_status: Counter[str] = Counter()
        for status, count in conn.execute(
            f"SELECT status, count(*) FROM runs WHERE kind = '{SESSION_KIND}' GROUP BY status"
        ):
            by_status[session_status(status)] += count
        events = f"FROM events WHERE run IN ({_SESSION_RUNS}) AND kind = 'log' AND ts >= ?"
        counts = dict(
            conn.execute(
                f"SELECT type, count(*) {events} AND type IN (SELECT value FROM json_each(?)) GROUP BY type",
                (floor, orjson.dumps(_COUNTED_EVENTS).decode()),
            ).fetchall()
        )
        errors_by_type = {
            str(kind if kind is not None else "unknown"): count
            for kind, count in conn.execute(
                f"SELECT data ->> '$.details.error_type', count(*) {events} AND type = 'session_error' GROUP BY 1",
                (floor,),
            )
        }
        suspicious_by_user = {
            str(user): count
            for user, count in conn.execute(
                f"SELECT data ->> '$.user_id', count(*) {events} AND type = 'suspicious_activity' GROUP BY 1",
                (floor,),
            )
        }
        rows = conn.execute(
            "SELECT k.names, m.vals FROM metric_rows m JOIN metric_keysets k ON k.id = m.keyset"
            f" WHERE m.run IN ({_SESSION_RUNS}) AND m.ts >= ?",
            (floor,),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    values: dict[str, list[float]] = {}
    for names, vals in rows:
        for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False):
            values.setdefault(name, []).append(decode_metric_value(value))
    metrics: dict[str, dict[str, Any]] = {}
    for name, series in sorted(values.items()):
        array = np.asarray(series, dtype=np.float64)
        finite = array[~np.isnan(array)]
        metrics[name] = {
            "count": int(array.size),
            "mean": float(finite.mean()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "p95": float(np.percentile(finite, 95)) if finite.size else None,
        }
    created = counts.get("session_created", 0)
    errors = counts.get("session_error", 0)
    return {
        "sessions": {
            "active": by_status["active"] + by_status["hung"],
            "hung": by_status["hung"],
            "crashed": by_status["crashed"],
            "ended": by_status["ended"],
            "total": sum(by_status.values()),
            "created": created,
            "expired": counts.get("session_expired", 0),
        },
        "errors": {
            "total": errors,
            "by_type": errors_by_type,
            "rate": errors / created if created else (float(errors > 0)),
        },
        "suspicious_activity": {"total": counts.get("suspicious_activity", 0), "by_user": suspicious_by_user},
        "metrics": metrics,
    }


def _export(conn: sqlite3.Connection, start: float | None, end: float | None) -> list[dict[str, Any]]:
    where = [f"m.run IN ({_SESSION_RUNS})"]
    params: list[Any] = []
    if start is not None:
        where.append("m.ts >= ?")
        params.append(start)
    if end is not None:
        where.append("m.ts <= ?")
        params.append(end)
    rows = conn.execute(
        "SELECT r.run_id, m.ts, k.names, m.vals, m.tags FROM metric_rows m"
        " JOIN runs r ON r.id = m.run JOIN metric_keysets k ON k.id = m.keyset"
        f" WHERE {' AND '.join(where)} ORDER BY m.row",
        params,
    ).fetchall()
    out = []
    for session_id, ts, names, vals, tags in rows:
        _, fields = decode_session_tags(tags)
        metadata = fields.get("metadata")
        for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False):
            out.append(
                {
                    "metric_type": name,
                    "session_id": session_id,
                    "user_id": fields.get("user_id"),
                    "value": decode_metric_value(value),
                    "metadata": dict(metadata) if isinstance(metadata, dict) else {},
                    "timestamp": datetime.fromtimestamp(ts, UTC),
                }
            )
    return out


def _cleanup(conn: sqlite3.Connection, cutoff: float) -> dict[str, int]:
    """Delete session data older than ``cutoff`` in one write transaction."""
    runs = f"SELECT id FROM runs WHERE kind IN ('{SESSION_KIND}', '{MONITOR_KIND}')"
    conn.isolation_level = None
    conn.execute("BEGIN IMMEDIATE")
    try:
        ended = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}' AND status IN ('completed', 'failed', 'crashed')"
                " AND COALESCE(end_time, updated_at) < ? AND updated_at < ?",
                (cutoff, cutoff),
            )
        ]
        counts = {
            "metric_rows": conn.execute(
                f"DELETE FROM metric_rows WHERE ts < ? AND run IN ({runs})", (cutoff,)
            ).rowcount,
            "events": conn.execute(f"DELETE FROM events WHERE ts < ? AND run IN ({runs})", (cutoff,)).rowcount,
            "state_history": conn.execute(
                f"DELETE FROM state_history WHERE ts < ? AND run IN ({runs})", (cutoff,)
            ).rowcount,
        }
        if ended:
            ids = orjson.dumps(ended).decode()
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in ("metric_rows", "metric_stats", "events", "state_history", "metric_rollups", "snapshots"):
                if table in tables:
                    conn.execute(f"DELETE FROM {table} WHERE run IN (SELECT value FROM json_each(?))", (ids,))
            conn.execute("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))", (ids,))
        counts["sessions"] = len(ended)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return counts


# -- the facade --------------------------------------------------------------------------------


def _without_web(config: Mapping[str, Any]) -> dict[str, Any]:
    """A pipeline config minus the web's components (remote ingest, the websocket hub) and
    the snapshot stage (application sessions keep no snapshot files)."""
    removed = {
        component_id
        for section in ("sources", "stages", "sinks")
        for component_id, body in config.get(section, {}).items()
        if body.get("type") in ("ingest", "websocket_hub", "snapshot")
    }
    out: dict[str, Any] = {}
    for section, table in config.items():
        out[section] = {}
        for component_id, body in table.items():
            if component_id in removed:
                continue
            body = dict(body)
            if "inputs" in body:
                body["inputs"] = [i for i in body["inputs"] if i not in removed]
            out[section][component_id] = body
    return out


class SessionMonitor:
    """Record application sessions, their events and metrics; report statistics and health.

    Args:
        db_manager: the store to write (a :class:`~runwatch.store.manager.DatabaseManager`,
            or anything with a ``db_path``; a path works too).
        config: thresholds and settings (default :class:`SessionConfig`).

    Recording never waits on I/O (events go to this monitor's own pipeline,
    running in a background thread on the same store); the reading methods
    first wait until everything recorded before them is committed. Close it
    with :meth:`close` (or ``with``); open monitors are closed at exit.

    Raises:
        TypeError: a ``db_manager`` without a usable path, or a bad ``config``.
    """

    def __init__(self, db_manager: Any, config: SessionConfig | None = None) -> None:
        path = getattr(db_manager, "db_path", db_manager)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"db_manager must have a db_path, got {type(db_manager).__name__}")
        if config is not None and not isinstance(config, SessionConfig):
            raise TypeError(f"config must be a SessionConfig, got {type(config).__name__}")
        self.db_path = str(Path(path))
        self.config = config or SessionConfig()
        self._lock = threading.RLock()
        self._known: OrderedDict[str, None] = OrderedDict()  # session runs known to exist
        self._hostname = socket.gethostname()
        self._system_started = False
        self._created = 0
        self._errors = 0
        self._suspicious: Counter[str] = Counter()
        self._error_rate_firing = False
        self._closed = False
        self._thread: PipelineThread = self._initialize_monitoring()
        _open_monitors.add(self)

    def _initialize_monitoring(self) -> PipelineThread:
        """Start this monitor's pipeline (the default graph minus the web) on the store."""
        from .pipeline.component import ComponentContext
        from .pipeline.config import default_pipeline_config
        from .pipeline.runtime import Pipeline
        from .pipeline.thread import PipelineThread

        context = ComponentContext(db_path=self.db_path, data_dir=Path(self.db_path).parent / "monitor_data")
        pipeline = Pipeline(_without_web(default_pipeline_config()), context=context)
        thread = PipelineThread(pipeline, name="runwatch-sessions")
        thread.start()
        _install_exit_hook()
        return thread

    # -- recording ---------------------------------------------------------------------------

    def _emit(self, *events: Any) -> None:
        if self._closed:
            raise ValueError("this SessionMonitor is closed")
        self._thread.pipeline.bridge.emit_many(events)

    def _ensure_session(self, session_id: str, user_id: int | str, now: float) -> None:
        """Make sure the session's run exists as a ``session`` run (created implicitly if not)."""
        if session_id in self._known:
            self._known.move_to_end(session_id)
            return
        if not self._stored(session_id):
            self._start_session(session_id, user_id, None, now)
        self._remember(session_id)

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

    def _stored(self, session_id: str) -> bool:
        with self._connect() as conn:
            return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (session_id,)).fetchone() is not None

    def _ensure_system_run(self, now: float) -> None:
        if not self._system_started:
            metadata = {"hostname": self._hostname, "pid": os.getpid()}
            self._emit(
                RunLifecycle(SYSTEM_RUN_ID, now, RunTransition.STARTED, run_kind=MONITOR_KIND, metadata=metadata)
            )
            self._system_started = True

    def log_system_startup(self) -> None:
        """Record that the application (and this monitor) started, with host and version details."""
        from ._version import __version__

        with self._lock:
            now = time.time()
            self._ensure_system_run(now)
            data = {
                "hostname": self._hostname,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "runwatch": __version__,
                "db_path": self.db_path,
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
            The alerts it raised (see :meth:`_check_metric_alerts`).

        Raises:
            TypeError / ValueError: naming the bad argument.
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        metric = SessionMetric(metric_type, session_id, user_id, value, dict(metadata or {}))
        if timestamp is not None:
            metric.timestamp = timestamp
        _check_text("metric_type", metric_type)
        _check_text("session_id", session_id)
        _check_user_id(user_id)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"value must be a number, got {value!r}")
        with self._lock:
            now = _epoch(metric.timestamp, "timestamp")
            self._ensure_session(session_id, user_id, now)
            tags = encode_session_tags(user_id=user_id, metadata=metric.metadata or None)
            self._emit(Metric(session_id, now, {metric_type: float(value)}, tags=tags))
            return self._check_metric_alerts(metric)

    def record_event(self, event: SessionEvent) -> list[AlertEvent]:
        """Record a session event (an unknown session is created implicitly).

        The event is stored as a log event of type ``event.event_type`` whose
        data is ``{"user_id": ..., "details": {...}}``.

        Returns:
            The alerts it raised (see :meth:`_check_event_alerts`).

        Raises:
            TypeError / ValueError: naming the bad field.
        """
        if not isinstance(event, SessionEvent):
            raise TypeError(f"event must be a SessionEvent, got {type(event).__name__}")
        _check_text("event_type", event.event_type)
        _check_text("session_id", event.session_id)
        _check_user_id(event.user_id)
        if event.severity not in LEVELS:
            raise ValueError(f"severity must be one of {', '.join(LEVELS)}; got {event.severity!r}")
        with self._lock:
            now = _epoch(event.timestamp, "timestamp")
            self._ensure_session(event.session_id, event.user_id, now)
            data = {"user_id": event.user_id, "details": event.details}
            self._emit(LogEvent(event.session_id, now, event.event_type, event.severity, data))
            return self._check_event_alerts(event)

    def log_session_created(self, session_id: str, user_id: int | str, platform_id: int | None = None) -> None:
        """Record a new session (status ``active``) of ``user_id`` on ``platform_id``."""
        _check_text("session_id", session_id)
        _check_user_id(user_id)
        with self._lock:
            event = SessionEvent("session_created", session_id, user_id, {"platform_id": platform_id})
            self._start_session(session_id, user_id, platform_id, _epoch(event.timestamp, "timestamp"))
            self._emit(StatePatch(session_id, _epoch(event.timestamp, "timestamp"), {"platform_id": platform_id}))
            self.record_event(event)

    def log_session_expired(self, session_id: str, user_id: int | str, reason: str) -> None:
        """Record that a session expired (status ``ended``), and why."""
        with self._lock:
            event = SessionEvent("session_expired", session_id, user_id, {"reason": reason})
            self.record_event(event)
            now = _epoch(event.timestamp, "timestamp")
            self._emit(RunLifecycle(session_id, now, RunTransition.COMPLETED))

    def log_session_error(self, session_id: str, user_id: int | str, error_type: str, error_details: str) -> None:
        """Record a session error (level ``error``), counted by ``error_type``."""
        _check_text("error_type", error_type)
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
            self._emit(StatePatch(session_id, _epoch(event.timestamp, "timestamp"), {"platform_id": new_platform_id}))
            self.record_metric("platform_switch_time", session_id, user_id, switch_duration, details)

    def log_suspicious_activity(
        self, session_id: str, user_id: int | str, activity_type: str, details: dict[str, Any]
    ) -> None:
        """Record suspicious activity (level ``warning``), counted per user."""
        _check_text("activity_type", activity_type)
        if not isinstance(details, Mapping):
            raise TypeError(f"details must be a dict, got {type(details).__name__}")
        payload = {"activity_type": activity_type, **details}
        self.record_event(SessionEvent("suspicious_activity", session_id, user_id, payload, severity="warning"))

    # -- alert checks (pure decisions, emitted as alert events) -----------------------------

    def _check_metric_alerts(self, metric: SessionMetric) -> list[AlertEvent]:
        """A value above its type's ``slow_metric_thresholds`` fires ``session_slow_<type>``.

        Returns:
            The alert events emitted (empty when nothing fired).
        """
        threshold = self.config.slow_metric_thresholds.get(metric.metric_type)
        if threshold is None or not metric.value > threshold:
            return []
        alert = AlertEvent(
            metric.session_id,
            _epoch(metric.timestamp, "timestamp"),
            f"session_slow_{metric.metric_type}",
            "firing",
            severity="warning",
            value=metric.value,
            labels={"session_id": metric.session_id, "user_id": str(metric.user_id), "metric_type": metric.metric_type},
            annotations={"threshold": repr(float(threshold)), "summary": f"{metric.metric_type} above {threshold}"},
        )
        self._emit(alert)
        return [alert]

    def _check_event_alerts(self, event: SessionEvent) -> list[AlertEvent]:
        """Count created sessions, errors and suspicious events (since this monitor started).

        ``session_suspicious_activity`` fires when a user reaches
        ``max_suspicious_events_per_user``; ``session_error_rate`` fires when
        errors per created session rise above ``max_error_rate`` (severity
        ``critical`` above ``critical_error_rate``) and resolves when the rate
        falls back.

        Returns:
            The alert events emitted.
        """
        now = _epoch(event.timestamp, "timestamp")
        alerts: list[AlertEvent] = []
        if event.event_type == "suspicious_activity":
            user = str(event.user_id)
            self._suspicious[user] += 1
            if self._suspicious[user] == self.config.max_suspicious_events_per_user:
                activity = str(event.details.get("activity_type", "unknown"))
                alerts.append(
                    AlertEvent(
                        event.session_id,
                        now,
                        "session_suspicious_activity",
                        "firing",
                        severity="warning",
                        value=float(self._suspicious[user]),
                        labels={"session_id": event.session_id, "user_id": user, "activity_type": activity},
                        annotations={"threshold": str(self.config.max_suspicious_events_per_user)},
                    )
                )
        if event.event_type in ("session_created", "session_error"):
            if event.event_type == "session_created":
                self._created += 1
            else:
                self._errors += 1
            rate = self._errors / self._created if self._created else float(self._errors > 0)
            firing = rate > self.config.max_error_rate
            if firing != self._error_rate_firing:
                self._error_rate_firing = firing
                self._ensure_system_run(now)
                critical = rate > self.config.critical_error_rate
                alerts.append(
                    AlertEvent(
                        SYSTEM_RUN_ID,
                        now,
                        "session_error_rate",
                        "firing" if firing else "resolved",
                        severity="critical" if critical else "warning",
                        value=rate,
                        annotations={"threshold": repr(float(self.config.max_error_rate))},
                    )
                )
        if alerts:
            self._emit(*alerts)
        return alerts

    # -- reading -------------------------------------------------------------------------------

    def _connect(self, *, write: bool = False) -> Any:
        return _Connection(self.db_path, write)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before the call is committed.

        Returns:
            ``True`` once committed; ``False`` on timeout or when closed.
        """
        return self._thread.flush(timeout)

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
        self.flush()
        now = time.time()
        window = self.config.statistics_window_seconds
        with self._connect() as conn:
            stats = _statistics(conn, None if window is None else now - window)
        return {"timestamp": datetime.fromtimestamp(now, UTC), "window_seconds": window, **stats}

    def get_session_health_report(self) -> dict[str, Any]:
        """Judge the statistics against the configured thresholds.

        Returns:
            ``{"status": "healthy" | "degraded" | "critical", "timestamp",
            "reasons": [...], "recommendations": [...], "checks": {name:
            {"status", "value", "threshold"}}, "statistics": {...}}``. The
            error rate above ``critical_error_rate`` is critical; above
            ``max_error_rate``, a user at ``max_suspicious_events_per_user``,
            a metric's p95 above its slow threshold, or hung or crashed
            sessions are degraded.
        """
        stats = self.get_session_statistics()
        config = self.config
        checks: dict[str, dict[str, Any]] = {}
        reasons: list[str] = []
        advice: list[str] = []

        def judge(name: str, status: str, value: Any, threshold: Any, reason: str, recommendation: str) -> None:
            checks[name] = {"status": status, "value": value, "threshold": threshold}
            if status != "healthy":
                reasons.append(reason)
                advice.append(recommendation)

        rate = stats["errors"]["rate"]
        status = "healthy"
        if rate > config.critical_error_rate:
            status = "critical"
        elif rate > config.max_error_rate:
            status = "degraded"
        worst = max(stats["errors"]["by_type"].items(), key=lambda item: item[1], default=("none", 0))[0]
        judge(
            "error_rate",
            status,
            rate,
            config.critical_error_rate if status == "critical" else config.max_error_rate,
            f"session error rate {rate:.1%} is above {config.max_error_rate:.1%}",
            f"investigate session errors, most of them {worst!r}",
        )
        limit = config.max_suspicious_events_per_user
        flagged = sorted(user for user, count in stats["suspicious_activity"]["by_user"].items() if count >= limit)
        judge(
            "suspicious_activity",
            "degraded" if flagged else "healthy",
            len(flagged),
            limit,
            f"{len(flagged)} user(s) with at least {limit} suspicious events: {', '.join(flagged)}",
            "review the flagged users' sessions; consider locking their accounts",
        )
        for metric_type, threshold in sorted(config.slow_metric_thresholds.items()):
            p95 = stats["metrics"].get(metric_type, {}).get("p95")
            slow = p95 is not None and p95 > threshold
            judge(
                f"slow_{metric_type}",
                "degraded" if slow else "healthy",
                p95,
                threshold,
                f"{metric_type} p95 {p95} is above {threshold}",
                f"find what makes {metric_type} slow (database, network, platform APIs)",
            )
        stuck = stats["sessions"]["hung"] + stats["sessions"]["crashed"]
        judge(
            "liveness",
            "degraded" if stuck else "healthy",
            stuck,
            0,
            f"{stats['sessions']['hung']} hung and {stats['sessions']['crashed']} crashed session(s)",
            "check the clients of the hung or crashed sessions",
        )
        order = {"healthy": 0, "degraded": 1, "critical": 2}
        overall = max((check["status"] for check in checks.values()), key=order.__getitem__)
        return {
            "status": overall,
            "timestamp": stats["timestamp"],
            "reasons": reasons,
            "recommendations": advice,
            "checks": checks,
            "statistics": stats,
        }

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
        start = None if start_time is None else _epoch(start_time, "start_time")
        end = None if end_time is None else _epoch(end_time, "end_time")
        self.flush()
        with self._connect() as conn:
            return _export(conn, start, end)

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
        self.flush()
        cutoff = time.time() - retention_days * 86_400
        with self._lock, self._connect(write=True) as conn:
            counts = _cleanup(conn, cutoff)
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
                self._thread.close()
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
        return f"<SessionMonitor db={self.db_path!r}{' closed' if self._closed else ''}>"


class _Connection:
    """A short-lived connection to the store (read-only unless ``write``), closed on exit."""

    def __init__(self, path: str, write: bool) -> None:
        self.path = path
        self.write = write
        self.conn: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        self.conn = forksafe.connect(Path(self.path).absolute().as_uri() + "?mode=rw", uri=True, timeout=5)
        if not self.write:
            self.conn.execute("PRAGMA query_only = ON")
        return self.conn

    def __exit__(self, *exc_info: object) -> None:
        assert self.conn is not None
        self.conn.close()


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
    path = str(Path(getattr(db_manager, "db_path", db_manager)))
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
