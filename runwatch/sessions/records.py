"""The seed's session records: :class:`SessionMetric`, :class:`SessionEvent`, and :class:`SessionConfig`.

Plain data with argument checks (pure: no I/O).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

__all__ = ["SessionConfig", "SessionEvent", "SessionMetric", "check_text", "check_user_id", "epoch_seconds"]


def _now() -> datetime:
    return datetime.now(UTC)


def epoch_seconds(value: datetime | float | int, name: str) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a datetime or finite epoch seconds, got {value!r}")
    return float(value)


def check_user_id(user_id: object) -> None:
    if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
        raise TypeError(f"user_id must be an int or a string, got {user_id!r}")


def check_text(name: str, value: object) -> None:
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
        statistics_window_seconds: statistics, health and the alerts count
            events and metrics of this many recent seconds; ``None`` for all
            time. Session counts by status (active, hung...) are always current.
        product: the ``product`` recorded with every session.
        server_url: remote mode: the ``runwatch serve`` to record into (see
            :class:`~runwatch.MonitorConfig`); ``None``: the local store.
        server_token: the server's bearer token (sent in a header only, never
            shown in a ``repr`` or a log).

    :meth:`load` takes ``server_url`` and ``server_token`` from
    ``MONITOR_SERVER_URL`` and ``MONITOR_SERVER_TOKEN`` (or ``RUNWATCH_TOKEN``);
    a :class:`SessionMonitor` without a config uses it.

    Raises:
        ValueError / TypeError: naming the bad field.
    """

    max_error_rate: float = 0.05
    critical_error_rate: float = 0.20
    max_suspicious_events_per_user: int = 5
    slow_metric_thresholds: Mapping[str, float] = field(default_factory=lambda: dict(_DEFAULT_SLOW))
    statistics_window_seconds: float | None = 3600.0
    product: str | None = None
    server_url: str | None = None
    server_token: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, **settings: Any) -> SessionConfig:
        """A config whose ``server_url`` and ``server_token`` not given here come from the environment."""
        url = settings.get("server_url", os.environ.get("MONITOR_SERVER_URL") or None)
        if url is not None and "server_token" not in settings:
            token = os.environ.get("MONITOR_SERVER_TOKEN") or os.environ.get("RUNWATCH_TOKEN") or None
            settings = {**settings, "server_token": token}
        return cls(**{**settings, "server_url": url})

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
        if self.server_url is not None:
            if not isinstance(self.server_url, str):
                raise TypeError(f"server_url must be a string or None, got {type(self.server_url).__name__}")
            from ..remote.server_url import check_server_url

            try:
                object.__setattr__(self, "server_url", check_server_url(self.server_url))
            except ValueError as exc:
                raise ValueError(f"server_url: {exc}") from None
        if self.server_token is not None:
            if not isinstance(self.server_token, str) or not self.server_token:
                raise TypeError("server_token must be a non-empty string or None")
            if self.server_url is None:
                raise ValueError("server_token needs server_url")
