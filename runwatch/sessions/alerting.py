"""A session monitor's alerts: ordinary :class:`~runwatch.alerts.AlertEngine` rules over its events.

The rules, from a :class:`~runwatch.sessions.records.SessionConfig`:

- ``session_slow_<type>`` — a :class:`~runwatch.alerts.ThresholdRule` per
  ``slow_metric_thresholds`` entry: a session's measurement above the
  threshold fires it, the session's next one at or below resolves it;
- ``session_suspicious_activity`` — a :class:`~runwatch.alerts.RateRule`:
  ``max_suspicious_events_per_user`` suspicious events of one user within
  ``statistics_window_seconds`` fire it; it resolves once fewer remain in the
  window;
- ``session_error_rate`` — a :class:`~runwatch.alerts.ThresholdRule` on the
  errors per created session within ``statistics_window_seconds`` (the
  rate the health report judges): above ``max_error_rate`` it fires, with
  severity ``critical`` while the rate is above ``critical_error_rate``;
  it resolves when the rate falls back.

The windows are those of the statistics and the health report, so the
alerts and the report agree. Evaluation is pure (the engine takes ``now``);
:class:`SessionAlerts` feeds it what the monitor records and turns its alert
events into the sessions' own form (a session's run and labels).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Final

from ..alerts import AlertEngine, RateRule, Rule, ThresholdRule
from ..events import AlertEvent, LogEvent, Metric, RunLifecycle
from ..session_events import SYSTEM_RUN_ID
from .records import SessionConfig

__all__ = ["ERROR_RATE", "SUSPICIOUS", "SessionAlerts", "session_rules"]

#: The rule of too many suspicious events of one user.
SUSPICIOUS: Final = "session_suspicious_activity"
#: The rule of too many errors per created session.
ERROR_RATE: Final = "session_error_rate"
_SLOW: Final = "session_slow_"
#: The event type a suspicious activity is recorded as.
_SUSPICIOUS_EVENT: Final = "suspicious_activity"
#: A window standing for "all time" (``statistics_window_seconds = None``).
_ALL_TIME_SECONDS: Final = 100 * 365 * 86_400.0
#: The engine's run of a user's suspicious events (never stored: alerts go to the user's session).
_USER_PREFIX: Final = "user:"
#: Sessions and users remembered for labelling alerts (the least recent go first).
_REMEMBERED: Final = 100_000


def _literal(text: str) -> str:
    """``text`` as an annotation template that renders as itself."""
    return text.replace("{", "{{").replace("}", "}}")


def session_rules(config: SessionConfig) -> list[Rule]:
    """The session alert rules of ``config`` (see the module docs)."""
    window = config.statistics_window_seconds or _ALL_TIME_SECONDS
    rules: list[Rule] = [
        ThresholdRule(
            name=f"{_SLOW}{metric_type}",
            metric=_glob_literal(metric_type),
            op=">",
            threshold=threshold,
            annotations={
                "threshold": _literal(repr(float(threshold))),
                "summary": _literal(f"{metric_type} above {threshold}"),
            },
        )
        for metric_type, threshold in sorted(config.slow_metric_thresholds.items())
    ]
    rules.append(
        RateRule(
            name=SUSPICIOUS,
            window_seconds=window,
            limit=config.max_suspicious_events_per_user,
            op=">=",
            kinds=("log",),
            types=(_SUSPICIOUS_EVENT,),
            annotations={"threshold": str(config.max_suspicious_events_per_user)},
        )
    )
    rules.append(
        ThresholdRule(
            name=ERROR_RATE,
            metric=ERROR_RATE,
            op=">",
            threshold=config.max_error_rate,
            annotations={"threshold": _literal(repr(float(config.max_error_rate)))},
        )
    )
    return rules


def _glob_literal(name: str) -> str:
    """A metric name as a pattern that matches only itself (glob characters bracketed)."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


class _Window:
    """Event times within the last ``seconds`` (a count that falls as time passes)."""

    __slots__ = ("seconds", "times")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.times: deque[float] = deque()

    def add(self, at: float) -> None:
        self.times.append(at)

    def count(self, now: float) -> int:
        cutoff = now - self.seconds
        while self.times and self.times[0] < cutoff:
            self.times.popleft()
        return len(self.times)


class SessionAlerts:
    """Evaluates the session rules on what a monitor records (not thread-safe: the monitor's lock holds).

    Every method takes ``now`` (seconds since the epoch) and returns the
    alert events of the transitions it caused, in the sessions' form: a
    session's alerts belong to its run and are labelled with ``session_id``,
    ``user_id`` and ``metric_type`` or ``activity_type``; the error rate's
    belong to the monitor's own run.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.engine = AlertEngine(session_rules(config))
        window = config.statistics_window_seconds or _ALL_TIME_SECONDS
        self._created = _Window(window)
        self._errors = _Window(window)
        self._users: OrderedDict[str, str] = OrderedDict()  # session → its user
        self._last_of_user: OrderedDict[str, tuple[str, str]] = OrderedDict()  # user → (session, activity)

    def metric(self, metric: Metric, user_id: int | str, now: float) -> list[AlertEvent]:
        """A session's measurement was recorded."""
        self._remember(self._users, metric.run_id, str(user_id))
        return self._shaped(self.engine.observe([metric], now))

    def suspicious(self, event: LogEvent, user_id: int | str, activity: str, now: float) -> list[AlertEvent]:
        """A session recorded suspicious activity of ``user_id``: counted for the user, whatever the session."""
        user = str(user_id)
        self._remember(self._last_of_user, user, (event.run_id, activity))
        counted = LogEvent(f"{_USER_PREFIX}{user}", event.timestamp, event.type, event.level)
        return self._shaped(self.engine.observe([counted], now))

    def created(self, at: float, now: float) -> list[AlertEvent]:
        """A session was created: the error rate falls."""
        self._created.add(at)
        return self._error_rate(at, now)

    def error(self, at: float, now: float) -> list[AlertEvent]:
        """A session error was recorded: the error rate rises."""
        self._errors.add(at)
        return self._error_rate(at, now)

    def ended(self, lifecycle: RunLifecycle, now: float) -> list[AlertEvent]:
        """A session ended: its alerts resolve."""
        return self._shaped(self.engine.observe([lifecycle], now))

    def tick(self, now: float) -> list[AlertEvent]:
        """Time passed: windows lose what fell out of them, and the alerts follow."""
        return self._shaped(self.engine.tick(now))

    def error_rate(self, now: float) -> float:
        """Errors per created session within the window (1.0 with errors and no session created)."""
        created, errors = self._created.count(now), self._errors.count(now)
        return errors / created if created else float(errors > 0)

    def _error_rate(self, at: float, now: float) -> list[AlertEvent]:
        rate = Metric(SYSTEM_RUN_ID, at, {ERROR_RATE: self.error_rate(now)})
        return self._shaped(self.engine.observe([rate], now))

    def _shaped(self, alerts: list[AlertEvent]) -> list[AlertEvent]:
        """The engine's alert events in the sessions' form (see the class docs)."""
        out = []
        for alert in alerts:
            if alert.rule == ERROR_RATE:
                critical = alert.value is not None and alert.value > self.config.critical_error_rate
                out.append(alert._replace(severity="critical" if critical else alert.severity, labels={}))
            elif alert.rule == SUSPICIOUS:
                user = alert.run_id.removeprefix(_USER_PREFIX)
                session, activity = self._last_of_user.get(user, (alert.run_id, "unknown"))
                labels = {"session_id": session, "user_id": user, "activity_type": activity}
                out.append(alert._replace(run_id=session, labels=labels))
            else:
                labels = {
                    "session_id": alert.run_id,
                    "user_id": self._users.get(alert.run_id, ""),
                    "metric_type": alert.labels.get("metric", ""),
                }
                out.append(alert._replace(labels=labels))
        return out

    @staticmethod
    def _remember(table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > _REMEMBERED:
            table.popitem(last=False)
