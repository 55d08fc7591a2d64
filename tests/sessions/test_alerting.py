"""The session alerts as alert-engine rules: windowed like the health report, and they resolve."""

from __future__ import annotations

from runwatch.events import AlertEvent, LogEvent, Metric, RunLifecycle, RunTransition
from runwatch.session_events import SYSTEM_RUN_ID
from runwatch.sessions.alerting import ERROR_RATE, SUSPICIOUS, SessionAlerts, session_rules
from runwatch.sessions.records import SessionConfig

T0 = 1_700_000_000.0


def states(alerts: list[AlertEvent]) -> list[tuple[str, str, str]]:
    """(run_id, rule, state) of each alert event."""
    return [(alert.run_id, alert.rule, alert.state) for alert in alerts]


def suspicious(alerts: SessionAlerts, session: str, user: int, at: float) -> list[AlertEvent]:
    """Feed one suspicious activity of ``user`` in ``session`` at ``at``."""
    event = LogEvent(session, at, "suspicious_activity", "warning")
    return alerts.suspicious(event, user, "brute_force", at)


def test_the_rules_are_ordinary_engine_rules_named_as_before() -> None:
    """Every configured threshold becomes one rule, with the names the monitor always used."""
    config = SessionConfig(slow_metric_thresholds={"login_time": 2.0, "odd*name": 1.0})
    names = [rule.name for rule in session_rules(config)]
    assert names == ["session_slow_login_time", "session_slow_odd*name", SUSPICIOUS, ERROR_RATE]


def test_a_slow_metric_fires_then_resolves_on_the_next_normal_value() -> None:
    """session_slow_<type> fires above the threshold, once, and resolves at the session's next value at or below."""
    alerts = SessionAlerts(SessionConfig(slow_metric_thresholds={"login_time": 2.0}))

    def login(value: float, at: float) -> list[AlertEvent]:
        return alerts.metric(Metric("s1", at, {"login_time": value}), 7, at)

    fired = login(3.0, T0)
    again = login(4.0, T0 + 1)
    resolved = login(1.0, T0 + 2)

    assert states(fired) == [("s1", "session_slow_login_time", "firing")]
    assert fired[0].labels == {"session_id": "s1", "user_id": "7", "metric_type": "login_time"}
    assert again == []
    assert states(resolved) == [("s1", "session_slow_login_time", "resolved")]


def test_a_metric_whose_name_has_glob_characters_matches_only_itself() -> None:
    """A threshold for ``odd*name`` does not fire on ``oddXname``."""
    alerts = SessionAlerts(SessionConfig(slow_metric_thresholds={"odd*name": 1.0}))
    assert alerts.metric(Metric("s1", T0, {"oddXname": 5.0}), 1, T0) == []
    assert states(alerts.metric(Metric("s1", T0, {"odd*name": 5.0}), 1, T0)) == [
        ("s1", "session_slow_odd*name", "firing")
    ]


def test_the_end_of_a_session_resolves_its_alerts() -> None:
    """An expired session's firing slow-metric alert resolves."""
    alerts = SessionAlerts(SessionConfig(slow_metric_thresholds={"login_time": 2.0}))
    alerts.metric(Metric("s1", T0, {"login_time": 3.0}), 7, T0)

    ended = alerts.ended(RunLifecycle("s1", T0 + 5, RunTransition.COMPLETED), T0 + 5)

    assert states(ended) == [("s1", "session_slow_login_time", "resolved")]


def test_suspicious_activity_counts_per_user_across_sessions_within_the_window() -> None:
    """A user's suspicious events in any of their sessions count together; the alert goes to the latest session."""
    alerts = SessionAlerts(SessionConfig(max_suspicious_events_per_user=3, statistics_window_seconds=60))

    assert suspicious(alerts, "a", 8, T0) == []
    assert suspicious(alerts, "b", 8, T0 + 1) == []
    assert suspicious(alerts, "x", 9, T0 + 1) == []  # another user
    fired = suspicious(alerts, "c", 8, T0 + 2)

    assert states(fired) == [("c", SUSPICIOUS, "firing")]
    assert fired[0].labels == {"session_id": "c", "user_id": "8", "activity_type": "brute_force"}
    assert suspicious(alerts, "c", 8, T0 + 3) == []  # still firing: not raised again


def test_suspicious_activity_resolves_once_the_events_leave_the_window() -> None:
    """The alert resolves when fewer than the limit remain within statistics_window_seconds."""
    alerts = SessionAlerts(SessionConfig(max_suspicious_events_per_user=2, statistics_window_seconds=60))
    suspicious(alerts, "a", 8, T0)
    assert states(suspicious(alerts, "a", 8, T0 + 1)) == [("a", SUSPICIOUS, "firing")]

    assert alerts.tick(T0 + 30) == []
    assert states(alerts.tick(T0 + 61)) == [("a", SUSPICIOUS, "resolved")]


def test_the_error_rate_is_windowed_like_the_health_report() -> None:
    """Errors per created session count only the window: old errors stop counting, and the alert resolves."""
    config = SessionConfig(max_error_rate=0.05, critical_error_rate=0.2, statistics_window_seconds=60)
    alerts = SessionAlerts(config)
    alerts.created(T0, T0)
    fired = alerts.error(T0, T0)

    assert states(fired) == [(SYSTEM_RUN_ID, ERROR_RATE, "firing")]
    assert fired[0].severity == "critical" and fired[0].labels == {}
    assert alerts.error_rate(T0 + 30) == 1.0

    resolved = alerts.created(T0 + 100, T0 + 100)  # the error fell out of the window
    assert alerts.error_rate(T0 + 100) == 0.0
    assert states(resolved) == [(SYSTEM_RUN_ID, ERROR_RATE, "resolved")]
    assert resolved[0].severity == "warning"


def test_without_a_window_everything_since_start_counts() -> None:
    """statistics_window_seconds=None counts all time: an old error still counts a day later."""
    alerts = SessionAlerts(SessionConfig(statistics_window_seconds=None))
    alerts.created(T0, T0)
    alerts.error(T0, T0)
    assert alerts.error_rate(T0 + 86_400) == 1.0
