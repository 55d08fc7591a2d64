"""Tests for runwatch.sessions.SessionMonitor against a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from runwatch.sessions import (
    SYSTEM_RUN_ID,
    SessionConfig,
    SessionEvent,
    SessionMonitor,
    decode_session_tags,
    encode_session_tags,
    get_session_monitor,
)
from runwatch.store.manager import DatabaseManager
from runwatch.store.sqlite import SQLiteStore


@pytest.fixture
def db(tmp_path: Path) -> DatabaseManager:
    """A DatabaseManager for a fresh store file."""
    return DatabaseManager(tmp_path / "sessions.db")


@pytest.fixture
def monitor(db: DatabaseManager) -> Iterator[SessionMonitor]:
    """A SessionMonitor on the store, closed after the test."""
    with SessionMonitor(db) as running:
        yield running


def rows(monitor: SessionMonitor, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Query the store directly, after everything recorded so far is committed."""
    assert monitor.flush()
    connection = sqlite3.connect(monitor.db_path)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


def ended_long_ago(monitor: SessionMonitor, session_id: str, when: float) -> None:
    """Make a stored session look as if it had ended at ``when`` (the API always ends sessions now)."""
    assert monitor.flush()
    connection = sqlite3.connect(monitor.db_path)
    try:
        with connection:
            connection.execute(
                "UPDATE runs SET status = 'completed', end_time = ?, updated_at = ? WHERE run_id = ?",
                (when, when, session_id),
            )
    finally:
        connection.close()


def alert_rules(monitor: SessionMonitor) -> list[tuple[str, str, str]]:
    """(run_id, rule, state) of every stored alert event, in order."""
    found = rows(
        monitor,
        "SELECT r.run_id, e.data FROM events e JOIN runs r ON r.id = e.run WHERE e.kind = 'alert' ORDER BY e.id",
    )
    return [(run_id, orjson.loads(data)["rule"], orjson.loads(data)["state"]) for run_id, data in found]


# -- recording ------------------------------------------------------------------------------------


def test_session_created_is_an_active_session_run_with_user_and_platform(monitor: SessionMonitor) -> None:
    """log_session_created stores a running run of kind session with user and platform in its metadata."""
    monitor.log_session_created("s1", 42, platform_id=7)

    run = rows(monitor, "SELECT kind, status, metadata, state FROM runs WHERE run_id = 's1'")
    assert [(kind, status) for kind, status, _, _ in run] == [("session", "running")]
    metadata = orjson.loads(run[0][2])
    assert metadata["metadata"] == {"user_id": 42, "platform_id": 7}
    assert orjson.loads(run[0][3]) == {"platform_id": 7}
    events = rows(monitor, "SELECT type, data FROM events WHERE kind = 'log'")
    assert [(t, orjson.loads(d)) for t, d in events] == [
        ("session_created", {"user_id": 42, "details": {"platform_id": 7}})
    ]


def test_session_expired_ends_the_session(monitor: SessionMonitor) -> None:
    """log_session_expired records the reason and completes the session run (its metadata kept)."""
    monitor.log_session_created("s1", 1, platform_id=2)
    monitor.log_session_expired("s1", 1, "idle timeout")

    assert rows(
        monitor, "SELECT status, json_extract(metadata, '$.metadata.user_id') FROM runs WHERE run_id = 's1'"
    ) == [("completed", 1)]
    expired = rows(monitor, "SELECT data FROM events WHERE type = 'session_expired'")
    assert orjson.loads(expired[0][0])["details"] == {"reason": "idle timeout"}
    stats = monitor.get_session_statistics()["sessions"]
    assert (stats["active"], stats["ended"], stats["created"], stats["expired"]) == (0, 1, 1, 1)


def test_metric_of_an_unknown_session_creates_the_session(monitor: SessionMonitor) -> None:
    """record_metric for a session never created makes it a session run, with the user in the metadata."""
    monitor.record_metric("session_sync_time", "lone", 9, 0.5, {"source": "cache"})

    assert rows(
        monitor, "SELECT kind, json_extract(metadata, '$.metadata.user_id') FROM runs WHERE run_id = 'lone'"
    ) == [("session", 9)]
    assert monitor.flush()
    series = SQLiteStore(monitor.db_path).read_series("lone", columns=("seq", "tags"))
    (tags,) = series["session_sync_time"].points.tags or [None]
    assert decode_session_tags(tags) == ([], {"user_id": 9, "metadata": {"source": "cache"}})


def test_a_session_stored_by_another_monitor_is_not_restarted(db: DatabaseManager) -> None:
    """A second monitor recording for an ended session leaves it ended (no new start)."""
    with SessionMonitor(db) as first:
        first.log_session_created("s1", 1)
        first.log_session_expired("s1", 1, "logout")
    with SessionMonitor(db) as second:
        second.record_metric("late", "s1", 1, 1.0)
        assert rows(second, "SELECT status FROM runs WHERE run_id = 's1'") == [("completed",)]
        assert rows(second, "SELECT count(*) FROM events WHERE type = 'run_started'") == [(1,)]


def test_session_error_is_counted_by_type(monitor: SessionMonitor) -> None:
    """log_session_error stores an error-level event; statistics count errors by type and the rate."""
    for i in range(4):
        monitor.log_session_created(f"s{i}", i)
    monitor.log_session_error("s0", 0, "db_timeout", "pool exhausted")
    monitor.log_session_error("s1", 1, "db_timeout", "again")
    monitor.log_session_error("s2", 2, "csrf", "bad token")

    levels = rows(monitor, "SELECT level FROM events WHERE type = 'session_error'")
    assert levels == [("error",)] * 3
    errors = monitor.get_session_statistics()["errors"]
    assert errors == {"total": 3, "by_type": {"csrf": 1, "db_timeout": 2}, "rate": 0.75}


def test_platform_switch_updates_state_and_records_its_duration(monitor: SessionMonitor) -> None:
    """log_platform_switch records the event, the new platform in the state and a platform_switch_time metric."""
    monitor.log_session_created("s1", 5, platform_id=1)
    monitor.log_platform_switch("s1", 5, 1, 2, 0.4)

    assert orjson.loads(rows(monitor, "SELECT state FROM runs WHERE run_id = 's1'")[0][0]) == {"platform_id": 2}
    assert rows(monitor, "SELECT count(*) FROM events WHERE type = 'platform_switch'") == [(1,)]
    exported = monitor.export_metrics()
    assert [(m["metric_type"], m["value"], m["metadata"]) for m in exported] == [
        ("platform_switch_time", 0.4, {"old_platform_id": 1, "new_platform_id": 2})
    ]


def test_suspicious_activity_is_counted_per_user(monitor: SessionMonitor) -> None:
    """log_suspicious_activity stores a warning event with its details, counted per user."""
    monitor.log_suspicious_activity("s1", 3, "ip_change", {"from": "1.1.1.1"})
    monitor.log_suspicious_activity("s2", 3, "ip_change", {})
    monitor.log_suspicious_activity("s3", 4, "rapid_requests", {})

    stored = rows(monitor, "SELECT level, data FROM events WHERE type = 'suspicious_activity' ORDER BY id")
    assert stored[0][0] == "warning"
    assert orjson.loads(stored[0][1])["details"] == {"activity_type": "ip_change", "from": "1.1.1.1"}
    assert monitor.get_session_statistics()["suspicious_activity"] == {"total": 3, "by_user": {"3": 2, "4": 1}}


def test_system_startup_goes_to_the_monitors_own_run(monitor: SessionMonitor) -> None:
    """log_system_startup writes to the session-monitor run, which is not counted as a session."""
    monitor.log_system_startup()

    assert rows(monitor, "SELECT run_id, kind FROM runs") == [(SYSTEM_RUN_ID, "session_monitor")]
    data = orjson.loads(rows(monitor, "SELECT data FROM events WHERE type = 'system_startup'")[0][0])
    assert {"hostname", "pid", "python", "runwatch", "thresholds"} <= set(data)
    assert monitor.get_session_statistics()["sessions"]["total"] == 0


def test_record_event_stores_any_session_event(monitor: SessionMonitor) -> None:
    """record_event stores a custom event at its severity and time."""
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    monitor.record_event(SessionEvent("cart_abandoned", "s9", "alice", {"items": 3}, "debug", when))

    assert rows(monitor, "SELECT type, level, ts, data FROM events WHERE kind = 'log'") == [
        ("cart_abandoned", "debug", when.timestamp(), '{"user_id":"alice","details":{"items":3}}')
    ]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(lambda m: m.record_metric("", "s", 1, 1.0), ValueError, id="empty-metric-type"),
        pytest.param(lambda m: m.record_metric("t", "s", 1, "fast"), TypeError, id="value-string"),
        pytest.param(lambda m: m.record_metric("t", "s", True, 1.0), TypeError, id="user-bool"),
        pytest.param(lambda m: m.record_metric("t", "s", 1, 1.0, ["x"]), TypeError, id="metadata-list"),
        pytest.param(lambda m: m.record_event(SessionEvent("e", "s", 1, severity="loud")), ValueError, id="severity"),
        pytest.param(lambda m: m.record_event({"event_type": "e"}), TypeError, id="not-an-event"),
        pytest.param(lambda m: m.log_session_error("s", 1, "", "x"), ValueError, id="empty-error-type"),
    ],
)
def test_bad_arguments_raise_before_anything_is_recorded(monitor: SessionMonitor, call: Any, error: type) -> None:
    """Invalid arguments raise TypeError/ValueError and store nothing."""
    with pytest.raises(error):
        call(monitor)
    assert rows(monitor, "SELECT count(*) FROM runs") == [(0,)]


# -- statistics and health ----------------------------------------------------------------------------


def test_statistics_summarise_each_metric_type_with_p95(monitor: SessionMonitor) -> None:
    """Per metric type: count, mean, min, max and the linearly interpolated 95th percentile."""
    for value in range(1, 101):
        monitor.record_metric("session_creation_time", f"s{value % 7}", 1, value / 1000)
    monitor.record_metric("other", "s0", 1, float("nan"))

    metrics = monitor.get_session_statistics()["metrics"]

    creation = metrics["session_creation_time"]
    assert creation["count"] == 100
    assert creation["mean"] == pytest.approx(0.0505)
    assert (creation["min"], creation["max"]) == (pytest.approx(0.001), pytest.approx(0.1))
    assert creation["p95"] == pytest.approx(0.09505)
    assert metrics["other"] == {"count": 1, "mean": None, "min": None, "max": None, "p95": None}


def test_statistics_count_only_the_window_but_sessions_by_current_status(db: DatabaseManager) -> None:
    """Metrics older than statistics_window_seconds are left out; None counts all time."""
    old = datetime.now(UTC) - timedelta(hours=2)
    with SessionMonitor(db, SessionConfig(statistics_window_seconds=3600)) as windowed:
        windowed.record_metric("sync", "s1", 1, 10.0, timestamp=old)
        windowed.record_metric("sync", "s1", 1, 20.0)
        stats = windowed.get_session_statistics()
        assert stats["metrics"]["sync"]["count"] == 1
        assert stats["sessions"]["active"] == 1
        assert stats["window_seconds"] == 3600
    with SessionMonitor(db, SessionConfig(statistics_window_seconds=None)) as everything:
        assert everything.get_session_statistics()["metrics"]["sync"]["count"] == 2


def test_health_is_healthy_without_trouble(monitor: SessionMonitor) -> None:
    """Sessions without errors, suspicious users, slow metrics or stuck sessions are healthy."""
    monitor.log_session_created("s1", 1)
    monitor.record_metric("session_creation_time", "s1", 1, 0.2)

    report = monitor.get_session_health_report()

    assert report["status"] == "healthy"
    assert report["reasons"] == [] and report["recommendations"] == []
    assert {check["status"] for check in report["checks"].values()} == {"healthy"}
    assert report["statistics"]["sessions"]["created"] == 1


@pytest.mark.parametrize(
    ("errors", "status"),
    [
        pytest.param(0, "healthy", id="none"),
        pytest.param(1, "degraded", id="10-percent"),
        pytest.param(3, "critical", id="30-percent"),
    ],
)
def test_health_follows_the_error_rate_thresholds(monitor: SessionMonitor, errors: int, status: str) -> None:
    """With 10 sessions, 1 error (10 %) is degraded and 3 errors (30 %) critical under the 5 % / 20 % defaults."""
    for i in range(10):
        monitor.log_session_created(f"s{i}", i)
    for i in range(errors):
        monitor.log_session_error(f"s{i}", i, "db_timeout", "slow")

    report = monitor.get_session_health_report()

    assert report["status"] == status
    assert report["checks"]["error_rate"]["status"] == status
    if errors:
        assert any("error rate" in reason for reason in report["reasons"])
        assert any("db_timeout" in advice for advice in report["recommendations"])


def test_health_is_degraded_by_a_suspicious_user(db: DatabaseManager) -> None:
    """A user reaching max_suspicious_events_per_user degrades the health and is named."""
    with SessionMonitor(db, SessionConfig(max_suspicious_events_per_user=2)) as monitor:
        monitor.log_suspicious_activity("s1", 77, "ip_change", {})
        assert monitor.get_session_health_report()["status"] == "healthy"
        monitor.log_suspicious_activity("s2", 77, "ip_change", {})

        report = monitor.get_session_health_report()

    assert report["status"] == "degraded"
    assert report["checks"]["suspicious_activity"] == {"status": "degraded", "value": 1, "threshold": 2}
    assert any("77" in reason for reason in report["reasons"])


def test_health_is_degraded_by_a_slow_p95(db: DatabaseManager) -> None:
    """A metric type whose p95 exceeds its slow threshold degrades the health."""
    config = SessionConfig(slow_metric_thresholds={"page_load_time": 2.0})
    with SessionMonitor(db, config) as monitor:
        for value in [0.5] * 18 + [3.0, 4.0]:
            monitor.record_metric("page_load_time", "s1", 1, value)

        report = monitor.get_session_health_report()

    assert report["status"] == "degraded"
    check = report["checks"]["slow_page_load_time"]
    assert check["status"] == "degraded" and check["threshold"] == 2.0 and check["value"] > 2.0


def test_health_is_degraded_by_hung_or_crashed_sessions(monitor: SessionMonitor) -> None:
    """Sessions the liveness stage marked hung or crashed degrade the health."""
    monitor.log_session_created("s1", 1)
    monitor.record_event(SessionEvent("application_appears_hung", "s1", 1, severity="warning"))

    report = monitor.get_session_health_report()

    assert report["statistics"]["sessions"]["hung"] == 1
    assert report["checks"]["liveness"]["status"] == "degraded"
    assert report["status"] == "degraded"


# -- alerts ----------------------------------------------------------------------------------------


def test_slow_metric_fires_session_slow_alert(monitor: SessionMonitor) -> None:
    """A value above its type's threshold returns and stores a firing session_slow_<type> alert."""
    assert monitor.record_metric("session_creation_time", "s1", 1, 0.5) == []

    alerts = monitor.record_metric("session_creation_time", "s1", 1, 1.5)

    assert [(a.rule, a.state, a.value) for a in alerts] == [("session_slow_session_creation_time", "firing", 1.5)]
    assert alerts[0].labels == {"session_id": "s1", "user_id": "1", "metric_type": "session_creation_time"}
    assert alert_rules(monitor) == [("s1", "session_slow_session_creation_time", "firing")]


def test_slow_metric_alert_resolves_at_the_next_normal_value_and_at_expiry(monitor: SessionMonitor) -> None:
    """A firing session_slow_<type> alert resolves (stored) at the session's next value at or below the
    threshold, and a session that expires while slow has its alert resolved."""
    monitor.record_metric("session_creation_time", "s1", 1, 1.5)
    resolved = monitor.record_metric("session_creation_time", "s1", 1, 0.5)
    monitor.record_metric("session_creation_time", "s2", 2, 3.0)
    monitor.log_session_expired("s2", 2, "logout")

    assert [(a.rule, a.state) for a in resolved] == [("session_slow_session_creation_time", "resolved")]
    assert alert_rules(monitor) == [
        ("s1", "session_slow_session_creation_time", "firing"),
        ("s1", "session_slow_session_creation_time", "resolved"),
        ("s2", "session_slow_session_creation_time", "firing"),
        ("s2", "session_slow_session_creation_time", "resolved"),
    ]


def test_suspicious_alert_fires_once_when_a_user_reaches_the_threshold(db: DatabaseManager) -> None:
    """session_suspicious_activity fires at the threshold, not before and not again after."""
    with SessionMonitor(db, SessionConfig(max_suspicious_events_per_user=3)) as monitor:
        for _ in range(5):
            monitor.log_suspicious_activity("s1", 8, "brute_force", {})
        assert alert_rules(monitor) == [("s1", "session_suspicious_activity", "firing")]


def test_error_rate_alert_fires_and_resolves(monitor: SessionMonitor) -> None:
    """session_error_rate fires when errors per session pass the limit and resolves when it falls back."""
    monitor.log_session_created("s0", 0)
    monitor.log_session_error("s0", 0, "csrf", "x")  # 1 error / 1 session
    for i in range(1, 40):
        monitor.log_session_created(f"s{i}", i)  # 1 / 40 = 2.5 %: below 5 %

    assert alert_rules(monitor) == [
        (SYSTEM_RUN_ID, "session_error_rate", "firing"),
        (SYSTEM_RUN_ID, "session_error_rate", "resolved"),
    ]
    severity = rows(monitor, "SELECT data ->> '$.severity' FROM events WHERE kind = 'alert' ORDER BY id")
    assert severity == [("critical",), ("warning",)]


# -- export and cleanup --------------------------------------------------------------------------------


def test_export_metrics_filters_by_time_inclusively(monitor: SessionMonitor) -> None:
    """export_metrics returns the metrics between start_time and end_time, both included, in order."""
    base = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    for minute in range(4):
        monitor.record_metric(
            "sync", "s1", 11, float(minute), {"m": minute}, timestamp=base + timedelta(minutes=minute)
        )

    everything = monitor.export_metrics()
    middle = monitor.export_metrics(base + timedelta(minutes=1), base + timedelta(minutes=2))
    naive = monitor.export_metrics(start_time=(base + timedelta(minutes=3)).replace(tzinfo=None))

    assert [m["value"] for m in everything] == [0.0, 1.0, 2.0, 3.0]
    assert everything[0] == {
        "metric_type": "sync",
        "session_id": "s1",
        "user_id": 11,
        "value": 0.0,
        "metadata": {"m": 0},
        "timestamp": base,
    }
    assert [m["value"] for m in middle] == [1.0, 2.0]
    assert [m["value"] for m in naive] == [3.0]


def test_export_rejects_bad_bounds(monitor: SessionMonitor) -> None:
    """A bound that is not a datetime or epoch seconds is a TypeError."""
    with pytest.raises(TypeError, match="start_time"):
        monitor.export_metrics(start_time="yesterday")  # type: ignore[arg-type]


def test_cleanup_removes_old_data_and_old_ended_sessions(monitor: SessionMonitor) -> None:
    """cleanup_old_data drops rows older than the retention and sessions that ended before it."""
    old = datetime.now(UTC) - timedelta(days=40)
    monitor.record_event(SessionEvent("session_created", "ancient", 1, timestamp=old))
    monitor.record_metric("sync", "ancient", 1, 1.0, timestamp=old)
    monitor.record_event(SessionEvent("session_expired", "ancient", 1, timestamp=old))
    ended_long_ago(monitor, "ancient", old.timestamp())
    monitor.log_session_created("recent", 2)
    monitor.record_metric("sync", "recent", 2, 1.0, timestamp=old)
    monitor.record_metric("sync", "recent", 2, 2.0)

    removed = monitor.cleanup_old_data(retention_days=30)

    assert removed == {"metric_rows": 2, "events": 3, "state_history": 0, "sessions": 1}  # events: started too
    assert rows(monitor, "SELECT run_id FROM runs") == [("recent",)]
    assert [m["value"] for m in monitor.export_metrics()] == [2.0]
    assert monitor.cleanup_old_data(retention_days=30) == {
        "metric_rows": 0,
        "events": 0,
        "state_history": 0,
        "sessions": 0,
    }


def test_cleanup_leaves_a_live_sessions_open_chunk_until_it_seals(monitor: SessionMonitor) -> None:
    """Old values still in a live session's open chunk stay (its writer rewrites it); once sealed they go."""
    old = datetime.now(UTC) - timedelta(days=40)
    monitor.log_session_created("live", 3)
    monitor.record_metric("sync", "live", 3, 1.0, timestamp=old)

    first = monitor.cleanup_old_data(retention_days=30)

    assert first["metric_rows"] == 0
    assert [m["value"] for m in monitor.export_metrics()] == [1.0]
    monitor.log_session_expired("live", 3, "logout")  # its end seals the chunk
    second = monitor.cleanup_old_data(retention_days=30)
    assert second["metric_rows"] == 1 and second["sessions"] == 0  # it ended now, after the cutoff
    assert monitor.export_metrics() == []
    assert rows(monitor, "SELECT run_id FROM runs WHERE run_id = 'live'") == [("live",)]


@pytest.mark.parametrize("days", [0, -1, float("inf"), True, "30"])
def test_cleanup_rejects_a_bad_retention(monitor: SessionMonitor, days: Any) -> None:
    """retention_days must be a positive number."""
    with pytest.raises(ValueError, match="retention_days"):
        monitor.cleanup_old_data(days)


# -- config, tags, shared instance ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        pytest.param({"max_error_rate": -0.1}, "max_error_rate", id="negative-rate"),
        pytest.param({"max_error_rate": 0.5, "critical_error_rate": 0.1}, "critical_error_rate", id="critical-below"),
        pytest.param({"max_suspicious_events_per_user": 0}, "max_suspicious_events_per_user", id="zero-suspicious"),
        pytest.param({"slow_metric_thresholds": {"x": "slow"}}, "slow_metric_thresholds.x", id="threshold-text"),
        pytest.param({"statistics_window_seconds": 0}, "statistics_window_seconds", id="zero-window"),
    ],
)
def test_session_config_names_the_bad_field(options: dict[str, Any], name: str) -> None:
    """An invalid SessionConfig value raises naming the field."""
    with pytest.raises((ValueError, TypeError), match=name):
        SessionConfig(**options)


def test_session_config_thresholds_are_read_only() -> None:
    """The thresholds mapping of a frozen config cannot be changed afterwards."""
    config = SessionConfig(slow_metric_thresholds={"x": 1.0})
    with pytest.raises(TypeError):
        config.slow_metric_thresholds["x"] = 5.0  # type: ignore[index]


def test_session_tags_round_trip() -> None:
    """REST tags and monitor fields survive encoding; foreign tags read back as key:value strings."""
    encoded = encode_session_tags(["a:1", "b"], user_id=5, metadata={"k": [1]})
    assert encoded is not None
    assert decode_session_tags(orjson.dumps(encoded).decode()) == (["a:1", "b"], {"user_id": 5, "metadata": {"k": [1]}})
    assert decode_session_tags('{"action": "left"}') == (["action:left"], {})
    assert encode_session_tags() is None


def test_get_session_monitor_shares_one_instance(tmp_path: Path) -> None:
    """The same store gives the same monitor; another store is refused; a closed one is replaced."""
    db = DatabaseManager(tmp_path / "shared.db")
    first = get_session_monitor(db)
    try:
        assert get_session_monitor(db) is first
        assert get_session_monitor(str(tmp_path / "shared.db"), first.config) is first
        with pytest.raises(ValueError, match="writes"):
            get_session_monitor(DatabaseManager(tmp_path / "other.db"))
        with pytest.raises(ValueError, match="SessionConfig"):
            get_session_monitor(db, SessionConfig(max_error_rate=0.01))
    finally:
        first.close()
    second = get_session_monitor(db)
    try:
        assert second is not first and not second.closed
    finally:
        second.close()


def test_a_closed_monitor_refuses_to_record(db: DatabaseManager) -> None:
    """Recording after close raises ValueError; closing twice is harmless."""
    monitor = SessionMonitor(db)
    monitor.close()
    monitor.close()

    with pytest.raises(ValueError, match="closed"):
        monitor.log_session_created("s1", 1)
