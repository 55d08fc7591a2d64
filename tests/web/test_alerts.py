"""Alerts read back: /api/alerts, /api/alerts/history, WebMonitor.get_alerts and `runwatch alerts`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from runwatch import AlertEvent, MonitorConfig, WebMonitor
from runwatch.cli import app


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    """A monitor whose run has a firing, a pending and a resolved alert."""
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as running:
        run_id = running.start_training()
        now = time.time()

        def alert(rule: str, state: str, severity: str, offset: float) -> AlertEvent:
            labels = {"metric": "loss"}
            annotations = {"summary": f"{rule} is {state}"}
            return AlertEvent(run_id, now + offset, rule, state, severity, 1.5, labels, annotations, now)

        running.emit_event(alert("nan_loss", "pending", "critical", 0.0))
        running.emit_event(alert("nan_loss", "firing", "critical", 0.1))
        running.emit_event(alert("slow", "pending", "warning", 0.2))
        running.emit_event(alert("plateau", "firing", "warning", 0.3))
        running.emit_event(alert("plateau", "resolved", "warning", 0.4))
        yield running


def test_get_alerts_returns_each_instance_in_its_latest_state(monitor: WebMonitor) -> None:
    """get_alerts() lists pending and firing instances by their latest transition; state= selects one state."""
    active = {(alert["rule"], alert["state"]) for alert in monitor.get_alerts()}
    assert active == {("nan_loss", "firing"), ("slow", "pending")}
    assert [alert["rule"] for alert in monitor.get_alerts(state="resolved")] == ["plateau"]
    assert monitor.get_alerts(run_id="no-such-run") == []
    with pytest.raises(ValueError, match="state"):
        monitor.get_alerts(state="exploded")


def test_api_alerts_filters_by_run_and_severity(monitor: WebMonitor) -> None:
    """/api/alerts answers the active alerts with ISO times and filters by run and severity."""
    assert monitor.flush()
    run_id = monitor.current_run_id
    with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
        everything = client.get("/api/alerts").json()["alerts"]
        critical = client.get("/api/alerts", params={"run_id": run_id, "severity": "critical"}).json()["alerts"]
    assert {alert["rule"] for alert in everything} == {"nan_loss", "slow"}
    assert [(alert["rule"], alert["state"]) for alert in critical] == [("nan_loss", "firing")]
    assert critical[0]["active_since"].endswith("+00:00")
    assert critical[0]["annotations"] == {"summary": "nan_loss is firing"}


def test_api_alert_history_pages_through_every_transition(monitor: WebMonitor) -> None:
    """/api/alerts/history lists every transition newest first, in cursor pages, each exactly once."""
    assert monitor.flush()
    seen: list[tuple[str, str]] = []
    cursor = None
    with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
        for _ in range(10):
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/alerts/history", params=params).json()
            seen.extend((alert["rule"], alert["state"]) for alert in page["alerts"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad = client.get("/api/alerts/history", params={"cursor": "x"})
    assert seen == [
        ("plateau", "resolved"),
        ("plateau", "firing"),
        ("slow", "pending"),
        ("nan_loss", "firing"),
        ("nan_loss", "pending"),
    ]
    assert bad.status_code == 422


def test_cli_alerts_lists_active_alerts_as_a_table_and_as_json(monitor: WebMonitor) -> None:
    """`runwatch alerts` prints the active alerts; --json gives parseable dicts; --state selects."""
    assert monitor.flush()
    db = monitor.config.db_path
    runner = CliRunner()
    table = runner.invoke(app, ["alerts", "--db", db])
    as_json = runner.invoke(app, ["alerts", "--db", db, "--json"])
    resolved = runner.invoke(app, ["alerts", "--db", db, "--state", "resolved", "--json"])
    assert table.exit_code == 0 and "nan_loss" in table.stdout and "plateau" not in table.stdout
    assert {alert["rule"] for alert in orjson.loads(as_json.stdout)} == {"nan_loss", "slow"}
    assert [alert["rule"] for alert in orjson.loads(resolved.stdout)] == ["plateau"]


def test_history_filters_by_the_alert_severity_even_beyond_log_levels(monitor: WebMonitor) -> None:
    """severity=page selects page alerts in /api/alerts/history and /api/alerts (page is no log level)."""
    run_id = monitor.current_run_id
    assert run_id is not None
    now = time.time()
    monitor.emit_event(AlertEvent(run_id, now, "on_call", "firing", "page", 1.0, {}, {"summary": "wake up"}, now))
    assert monitor.flush()
    with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
        history = client.get("/api/alerts/history", params={"severity": "page"}).json()["alerts"]
        active = client.get("/api/alerts", params={"severity": "page"}).json()["alerts"]
    assert [(alert["rule"], alert["state"]) for alert in history] == [("on_call", "firing")]
    assert [alert["rule"] for alert in active] == ["on_call"]
