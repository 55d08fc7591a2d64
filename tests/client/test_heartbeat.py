"""Tests of runwatch.client._heartbeat: the hang watch (pure) and the monitor thread."""

from __future__ import annotations

import pytest

from runwatch.client import (
    DatacatClient,
    HeartbeatMonitor,
    HeartbeatWatch,
    Session,
)

from ._doubles import FakeServer


def test_heartbeat_watch_reports_hung_once_and_recovered_once() -> None:
    """The watch says hung once after the timeout, stays quiet, then says recovered once after a beat."""
    watch = HeartbeatWatch(10.0, now=100.0)
    assert watch.check(105.0) is None
    assert watch.check(110.0) == "hung"
    assert watch.check(120.0) is None
    assert watch.check(500.0) is None
    watch.beat(501.0)
    assert watch.check(502.0) == "recovered"
    assert watch.check(503.0) is None
    assert watch.check(511.0) == "hung"


def test_heartbeat_monitor_logs_hung_once_then_recovered(fake: FakeServer) -> None:
    """With an injected clock, silence past the timeout logs application_appears_hung once, a heartbeat recovers."""
    clock = [1000.0]
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        session._clock = lambda: clock[0]
        session.start_heartbeat_monitor(timeout=10, check_interval=0.005)
        clock[0] += 11
        fake.wait_for(lambda: "application_appears_hung" in fake.names(session.session_id))
        session.heartbeat()
        fake.wait_for(lambda: "application_recovered" in fake.names(session.session_id))
        session.stop_heartbeat_monitor()
        names = fake.names(session.session_id)
    hung = [op for op in fake.operations[session.session_id] if op.get("name") == "application_appears_hung"]
    assert names.count("application_appears_hung") == 1
    assert names.index("application_appears_hung") < names.index("application_recovered")
    assert hung[0]["level"] == "warning"
    assert hung[0]["data"]["detected_by"] == "client"
    assert hung[0]["data"]["seconds_since_heartbeat"] >= 10


def test_monitor_survives_a_server_that_is_down(fake: FakeServer) -> None:
    """A failed hung-event request is logged by the monitor, which keeps running and logs recovery later."""
    clock = [0.0]
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        session._clock = lambda: clock[0]
        session.start_heartbeat_monitor(timeout=5, check_interval=0.005)
        with fake.lock:
            fake.down = True
        clock[0] = 6.0
        fake.wait_for(lambda: (fake.requests[-1][2] or {}).get("name") == "application_appears_hung")
        with fake.lock:
            fake.down = False
        clock[0] = 7.0
        session._last_heartbeat_sent = 7.0  # keep heartbeat() local: only the monitor talks
        session.heartbeat()
        fake.wait_for(lambda: "application_recovered" in fake.names(session.session_id))
        session.stop_heartbeat_monitor()


def test_a_paused_watch_says_nothing_until_resumed_or_beaten() -> None:
    """pause() stops verdicts; resume() counts the silence from then; a beat also ends a pause."""
    watch = HeartbeatWatch(10.0, now=0.0)
    watch.pause()
    assert watch.check(100.0) is None
    watch.resume(100.0)
    assert watch.check(105.0) is None
    assert watch.check(110.0) == "hung"
    watch.pause()
    assert watch.check(200.0) is None  # paused: no verdict either way
    watch.beat(300.0)
    assert watch.check(301.0) == "recovered"
    assert not watch.paused and watch.check(311.0) == "hung"


def test_a_standalone_monitor_has_datacats_lifecycle(fake: FakeServer) -> None:
    """HeartbeatMonitor(client, session_id): start() returns it running, heartbeat() tells the server, stop()."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session_id = client.create_session()
        monitor = HeartbeatMonitor(client, session_id, timeout=30, check_interval=0.01)
        assert (monitor.client, monitor.session_id, monitor.timeout, monitor.check_interval) == (
            client,
            session_id,
            30.0,
            0.01,
        )
        assert monitor.start() is monitor and monitor.is_running()
        monitor.heartbeat()
        monitor.heartbeat()  # within the send interval: recorded, not sent
        assert client.pause_heartbeat_monitoring(session_id) == {"status": "ok"} and monitor._watch.paused
        monitor.stop()
        monitor.stop()  # idempotent
        assert not monitor.is_running()
        assert session_id not in client._monitors
    assert fake.names(session_id) == ["heartbeat"]


def test_a_monitor_heartbeat_never_raises(fake: FakeServer) -> None:
    """With the server down, HeartbeatMonitor.heartbeat() logs and returns (as datacat swallows errors)."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        monitor = HeartbeatMonitor(client, client.create_session())
        fake.down = True
        monitor.heartbeat()
    assert fake.requests[-1][1].endswith("/heartbeat")


def test_monitor_arguments_are_checked() -> None:
    """A timeout or check interval that is not a positive number raises ValueError."""
    with DatacatClient("http://fake.invalid", transport=FakeServer()) as client:
        for bad in ({"timeout": 0}, {"check_interval": -1}, {"timeout": True}):
            with pytest.raises(ValueError):
                HeartbeatMonitor(client, "s", **bad)
