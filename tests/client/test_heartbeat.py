"""Tests of runwatch.client._heartbeat: the hang watch (pure) and the monitor thread."""

from __future__ import annotations

from runwatch.client import (
    DatacatClient,
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
