"""Tests of runwatch.client._session: Session against the in-process double."""

from __future__ import annotations

import pytest

from runwatch.client import (
    DatacatClient,
    Session,
)

from ._doubles import FakeServer


def test_session_heartbeats_reach_the_server_at_most_once_per_interval(fake: FakeServer) -> None:
    """Calling heartbeat() in a tight loop sends one heartbeat per interval, not one per call."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        clock = [0.0]
        session._clock = lambda: clock[0]
        for _ in range(100):
            session.heartbeat()
        clock[0] += 1.0
        session.heartbeat()
    assert fake.names(session.session_id) == ["heartbeat", "heartbeat"]


def test_session_context_manager_logs_the_exception_then_ends(fake: FakeServer) -> None:
    """An exception leaving `with session:` is logged as an exception event, then the session ends."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    with pytest.raises(ZeroDivisionError), Session(client, client.create_session(), owns_client=True) as session:
        1 / 0  # noqa: B018
    assert fake.names(session.session_id) == ["exception", "end"]
    session.end()  # idempotent
    assert fake.names(session.session_id) == ["exception", "end"]
