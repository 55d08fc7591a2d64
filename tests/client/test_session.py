"""Tests of runwatch.client._session: Session against the in-process double."""

from __future__ import annotations

from typing import Any

import pytest

from runwatch.client import (
    DatacatClient,
    Session,
    create_session,
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


def blocking_session(fake: FakeServer) -> Session:
    """A blocking session on the double (runwatch's strict routes)."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    return Session(client, client.create_session(), owns_client=True)


def test_the_seeds_positional_forms_still_mean_what_they_meant(fake: FakeServer) -> None:
    """log_event(name, data[, level]) and log_exception(extra_data) keep the seed's meaning beside datacat's."""
    session = blocking_session(fake)
    session.log_event("clicked", {"button": "submit"})
    session.log_event("warned", {"n": 1}, "warning")
    session.log_event("categorised", "warning")  # datacat: the second argument is the category
    try:
        raise KeyError("k")
    except KeyError:
        session.log_exception({"context": "c"})
    session.end()
    clicked, warned, categorised, failure, _ = fake.operations[session.session_id]
    assert (clicked["data"], clicked["level"]) == ({"button": "submit"}, "info")
    assert (warned["data"], warned["level"]) == ({"n": 1}, "warning")
    assert (categorised["data"], categorised["level"]) == ({}, "warning")
    assert (failure["level"], failure["data"]["type"], failure["data"]["context"]) == ("error", "KeyError", "c")


def test_calls_return_the_servers_reply(fake: FakeServer) -> None:
    """Blocking calls answer runwatch's reply where the seed's answered None; local ones datacat's ok."""
    session = blocking_session(fake)
    assert session.update_state({"a": 1}) == {"ok": True}
    assert session.log_metric("m", 1.0) == {"ok": True}
    assert session.log_counter("c") == {"status": "ok"}  # kept here until the next round of totals
    assert session.end() == {"ok": True}
    assert session.end() is None  # idempotent: nothing sent the second time


def test_counter_totals_and_histograms_reach_runwatch_as_plain_values(fake: FakeServer) -> None:
    """On runwatch's strict routes a counter arrives as its total and a histogram as its mean, before the end."""
    session = blocking_session(fake)
    session.log_counter("requests")
    session.log_counter("requests", 2)
    session.log_histogram("latency", 1.0)
    session.log_histogram("latency", 3.0)
    session.end()
    operations = fake.operations[session.session_id]
    assert [(op["op"], op.get("name"), op.get("value")) for op in operations] == [
        ("metrics", "requests", 3),
        ("metrics", "latency", 2.0),
        ("end", None, None),
    ]


def test_a_timer_does_not_hide_the_blocks_exception(fake: FakeServer) -> None:
    """An exception in a timed block propagates; a failing send then is logged, not raised over it."""
    session = blocking_session(fake)
    with pytest.raises(ZeroDivisionError), session.timer("work"):
        1 / 0  # noqa: B018
    assert fake.names(session.session_id) == ["work"]
    fake.down = True
    with pytest.raises(ZeroDivisionError), session.timer("unsent"):
        1 / 0  # noqa: B018
    with pytest.raises(ConnectionError), session.timer("unsent"):
        pass  # no exception of its own: the send's failure is raised, as in datacat


def test_log_histogram_leaves_the_callers_metadata_alone(fake: FakeServer) -> None:
    """datacat writes buckets into the caller's metadata; runwatch's client copies it."""
    session = blocking_session(fake)
    metadata = {"note": "x"}
    session.log_histogram("h", 0.5, buckets=[1.0, 2.0], metadata=metadata)
    assert metadata == {"note": "x"}
    session.end()


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        pytest.param({"product": ""}, ValueError, "Product and version are required", id="empty-product"),
        pytest.param({"version": ""}, ValueError, "Product and version are required", id="empty-version"),
        pytest.param({"daemon_port": "secret"}, TypeError, "daemon_port", id="not-a-port"),
        pytest.param({"product": 3}, TypeError, "product must be a string", id="product-not-a-string"),
    ],
)
def test_create_session_refuses_what_datacat_refuses(arguments: dict[str, Any], error: type, match: str) -> None:
    """An empty product or version raises datacat's message at the call, before any request."""
    with pytest.raises(error, match=match):
        create_session("http://127.0.0.1:9", **arguments)  # the discard port: nothing may be sent
