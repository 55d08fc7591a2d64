"""Tests of runwatch.client._async: AsyncSession on runwatch's batched, exactly-once sender (the double)."""

from __future__ import annotations

import pytest

from runwatch.client import AsyncSession, DatacatClient, Session

from ._doubles import TIMEOUT, FakeServer, open_client


def test_a_matching_non_blocking_client_is_used_as_it_is(fake: FakeServer) -> None:
    """An AsyncSession over a queued session of the same bound sends through that very client."""
    client = open_client(fake, max_queue=50)
    inner = Session(client, client.create_session(), owns_client=True)
    session = AsyncSession(inner, queue_size=50)
    assert session.session is inner and session.client is client
    for index in range(10):
        assert session.log_metric("m", index) is None
    assert session.shutdown(TIMEOUT) == {"ok": True}
    assert [op.get("value") for op in fake.operations[session.session_id]] == [*range(10), None]
    assert all(path.endswith(("/batch", "/end", "/api/sessions", "/health")) for _, path, _ in fake.requests)


def test_async_calls_are_checked_at_the_call(fake: FakeServer) -> None:
    """A caller's mistake raises at the call, even though the call itself never waits."""
    session = AsyncSession(Session(open_client(fake), "s", owns_client=True))
    with pytest.raises(TypeError, match="tags"):
        session.log_gauge("g", 1.0, tags="a")
    with pytest.raises(ValueError, match="finite"):
        session.log_metric("m", float("nan"))
    assert session.get_stats() == {"sent": 0, "dropped": 0, "queued": 0}
    session.client.close(0)


def test_stats_count_drops_after_the_end(fake: FakeServer) -> None:
    """Calls after the end are dropped and counted, never raised; running turns False."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    session = AsyncSession(Session(client, client.create_session(), owns_client=True), queue_size=10)
    session.log_event("before")
    assert session.running
    session.end()
    assert not session.running
    session.log_event("after")
    assert session.dropped_count == 1
    assert fake.names(session.session_id) == ["before", "end"]
