"""The client against datacat's contract (the in-test datacat server double): the requests datacat's
daemon sends, the answers datacat gives, and datacat's Python client API (issue 14, client side)."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runwatch.client import (
    AsyncSession,
    DatacatClient,
    DatacatError,
    DatacatHandler,
    HeartbeatMonitor,
    Session,
    create_session,
    machine_id,
)

from ._datacat_stub import DatacatStub, Recorded
from ._doubles import TIMEOUT

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
OK = {"status": "ok"}


def bodies(stub: DatacatStub, suffix: str) -> list[Any]:
    """The JSON bodies posted to routes ending with ``suffix``, timestamps checked and removed."""
    found = []
    for request in stub.posted(suffix):
        document = dict(request.document)
        if "timestamp" in document:
            assert RFC3339.fullmatch(document.pop("timestamp")), document
        found.append(document)
    return found


@pytest.fixture
def open_session(datacat: DatacatStub) -> Iterator[Callable[..., Session]]:
    """Makes sessions registered on the stub by clients with the given options; closes them afterwards."""
    clients: list[DatacatClient] = []

    def make(**options: Any) -> Session:
        client = DatacatClient(datacat.url, **options)
        clients.append(client)
        return Session(client, client.register_session("PyApp", "2.0"), owns_client=True)

    yield make
    for client in clients:
        client.close(0)  # stops the periodic work of sessions a test left open


def test_a_session_is_registered_as_datacats_daemon_registers_it(datacat: DatacatStub) -> None:
    """GET /health finds datacat; the create carries product, version, machine_id and hostname; 200 is accepted."""
    session = create_session(datacat.url, product="PyApp", version="2.0")
    assert isinstance(session, Session)
    (health, create) = datacat.requests[:2]
    assert (health.method, health.path) == ("GET", "/health")
    assert (create.method, create.path, create.headers["Content-Type"]) == ("POST", "/api/sessions", "application/json")
    assert create.document == {
        "product": "PyApp",
        "version": "2.0",
        "hostname": create.document["hostname"],
        "machine_id": machine_id(),
    }
    assert create.document["hostname"]
    assert session.session_id in datacat.sessions
    assert session.end() == OK


def test_create_session_takes_datacats_positional_arguments(datacat: DatacatStub) -> None:
    """create_session(url, daemon_port, product, version) as datacat orders them."""
    session = create_session(datacat.url, "auto", "PyApp", "2.0")
    assert isinstance(session, Session)
    assert datacat.document(session.session_id)["state"] == {"product": "PyApp", "version": "2.0"}
    session.end()


def test_the_seeds_calls_store_their_data_on_datacat(datacat: DatacatStub) -> None:
    """create_session(url) without product or version, log_event(name, data), log_exception(extra_data=) all work."""
    session = create_session(datacat.url)
    session.update_state({"status": "running", "version": "1.0.0"})
    session.update_state({"window_state": {"open": ["w1", "w2"], "active": "w1"}})
    session.update_state({"window_state": {"open": ["w1", "w2", "w3"]}})
    session.log_event("user_action", {"action": "click", "button": "submit"})
    session.log_metric("memory_usage", 1024.5, tags=["app:myapp"])
    try:
        {}["missing"]  # noqa: B018
    except KeyError:
        session.log_exception(extra_data={"context": "user_action"})
    session.end()
    document = datacat.document(session.session_id)
    assert document["state"]["product"] and document["state"]["version"] == "1.0.0"  # the seed set it itself
    assert document["state"]["window_state"] == {"open": ["w1", "w2", "w3"], "active": "w1"}
    action, failure = document["events"]
    assert (action["name"], action["category"], action["data"]) == (
        "user_action",
        "info",
        {"action": "click", "button": "submit"},
    )
    assert (failure["name"], failure["category"], failure["exception_type"], failure["data"]) == (
        "exception",
        "error",
        "KeyError",
        {"context": "user_action"},
    )
    assert [(m["name"], m["type"], m["value"], m["tags"]) for m in document["metrics"]] == [
        ("memory_usage", "gauge", 1024.5, ["app:myapp"])
    ]
    assert "ended_at" in document and document["active"] is False


def test_every_write_answers_the_servers_reply(datacat: DatacatStub, open_session: Callable[..., Session]) -> None:
    """Blocking calls return datacat's {"status": "ok"}, where runwatch's client returned None."""
    session = open_session()
    assert session.update_state({"a": 1}) == OK
    assert session.log_event("e") == OK
    assert session.log_metric("m", 1.0) == OK
    assert session.log_gauge("g", 2.0) == OK
    assert session.log_timer("t", 0.5) == OK
    assert session.log_counter("c") == OK
    assert session.log_histogram("h", 0.1) == OK
    assert session.pause_heartbeat_monitoring() == OK
    assert session.resume_heartbeat_monitoring() == OK
    assert session.end() == OK


def test_requests_have_the_form_datacats_daemon_forwards(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """State wrapped with its time; events with every key; metrics typed; timestamps RFC 3339 (§5.1)."""
    session = open_session()
    session.update_state({"status": "running", "window": {"active": "w1", "open": ["w1"]}})
    session.update_state({"gone": None, "window": {"open": ["w1", "w2"]}})
    session.log_event("user_action", "ui", "grp", ["l1"], "hello", {"k": 1}, ["a", "b"])
    session.log_event("lvl", level="warning")
    session.log_metric("mem", 1024.5, tags=["app:x"])
    session.log_gauge("fps", 60, ["t"], "fps")
    session.log_timer("load", 1.25, 3)
    session.end()
    assert bodies(datacat, "/state") == [
        {"state": {"status": "running", "window": {"active": "w1", "open": ["w1"]}}},
        {"state": {"gone": None, "window": {"open": ["w1", "w2"]}}},
    ]
    assert bodies(datacat, "/events") == [
        {
            "name": "user_action",
            "category": "ui",
            "group": "grp",
            "labels": ["l1"],
            "message": "hello",
            "data": {"k": 1},
            "stacktrace": ["a", "b"],
        },
        {"name": "lvl", "category": "warning", "group": "", "labels": [], "message": "", "data": {}},
    ]
    assert bodies(datacat, "/metrics") == [
        {"name": "mem", "type": "gauge", "value": 1024.5, "tags": ["app:x"]},
        {"name": "fps", "type": "gauge", "value": 60, "unit": "fps", "tags": ["t"]},
        {"name": "load", "type": "timer", "value": 1.25, "count": 3, "unit": "seconds"},
    ]
    assert [request.body for request in datacat.posted("/end")] == [b"{}"]


def test_an_exception_event_has_datacats_fields(datacat: DatacatStub, open_session: Callable[..., Session]) -> None:
    """log_exception(sys.exc_info()) works positionally and sends type, message, stack and innermost frame."""
    session = open_session()
    try:
        raise ValueError("boom")
    except ValueError:
        line = sys.exc_info()[2].tb_lineno  # type: ignore[union-attr]
        assert session.log_exception(sys.exc_info(), {"ctx": "c"}) == OK
    (body,) = bodies(datacat, "/events")
    assert body["stacktrace"][0] == "Traceback (most recent call last):\n"
    assert body["stacktrace"][-1] == "ValueError: boom\n"
    assert {key: value for key, value in body.items() if key != "stacktrace"} == {
        "name": "exception",
        "category": "error",
        "group": "exception",
        "labels": ["exception", "ValueError"],
        "message": "boom",
        "data": {"ctx": "c"},
        "exception_type": "ValueError",
        "exception_msg": "boom",
        "source_file": __file__,
        "source_line": line,
        "source_function": "test_an_exception_event_has_datacats_fields",
    }


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda session, error: session.log_exception(error), id="an-exception"),
        pytest.param(lambda session, error: session.log_exception(extra_data={"ctx": 1}), id="seed-keyword"),
        pytest.param(lambda session, error: session.log_exception({"ctx": 1}), id="a-dict-first"),
    ],
)
def test_log_exception_takes_each_form(datacat: DatacatStub, open_session: Callable[..., Session], call: Any) -> None:
    """An exception object, the seed's extra_data keyword, or a dict first: each logs the exception handled."""
    session = open_session()
    try:
        raise KeyError("k")
    except KeyError as error:
        call(session, error)
    (body,) = bodies(datacat, "/events")
    assert (body["exception_type"], body["data"]) in (("KeyError", {}), ("KeyError", {"ctx": 1}))


def test_a_repeated_state_is_not_sent(datacat: DatacatStub, open_session: Callable[..., Session]) -> None:
    """As datacat's daemon, an update that changes nothing is answered ok locally and adds no history snapshot."""
    session = open_session()
    assert session.update_state({"status": "running"}) == OK
    assert session.update_state({"status": "running"}) == OK
    assert session.update_state({"status": "done"}) == OK
    assert [body["state"] for body in bodies(datacat, "/state")] == [{"status": "running"}, {"status": "done"}]
    assert len(datacat.document(session.session_id)["state_history"]) == 2


def test_counters_and_histograms_arrive_as_running_totals(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """Counter deltas and histogram samples are sent as totals, periodically and before the end (§4.3)."""
    session = open_session(aggregate_interval_seconds=0.05)
    for _ in range(3):
        session.log_counter("requests")
    session.log_counter("bytes", 1024, tags=["b:1", "a:2"])
    for value in (0.004, 0.2, 99.0):
        session.log_histogram("latency", value, unit="seconds")
    metadata = {"note": "x"}
    session.log_histogram("frame", 0.016, buckets=[1 / 30, 1 / 60, 0.1], metadata=metadata)
    datacat.wait_for(lambda: len(datacat.posted("/metrics")) >= 8)  # two periodic rounds of four series
    session.end()
    assert metadata == {"note": "x"}  # unlike datacat, the caller's dict is left alone
    last = {body["name"]: body for body in bodies(datacat, "/metrics")[-4:]}
    assert last["requests"] == {"name": "requests", "type": "counter", "value": 3}
    assert last["bytes"] == {"name": "bytes", "type": "counter", "value": 1024, "tags": ["a:2", "b:1"]}
    latency = last["latency"]
    assert (latency["type"], latency["unit"], round(latency["value"], 3)) == ("histogram", "seconds", 33.068)
    assert {b["le"]: b["count"] for b in latency["metadata"]["buckets"] if b["count"]} == {0.005: 1, 0.25: 1, 60: 1}
    assert (latency["metadata"]["count"], round(latency["metadata"]["sum"], 3)) == (3, 99.204)
    assert last["frame"]["metadata"] == {
        "note": "x",
        "buckets": [{"le": 1 / 60, "count": 1}, {"le": 1 / 30, "count": 0}, {"le": 0.1, "count": 0}],
        "count": 1,
        "sum": 0.016,
    }
    assert datacat.posted("/end")[0] is datacat.requests[-1]  # the totals went before the end


def test_a_timer_logs_its_duration_count_and_unit(datacat: DatacatStub, open_session: Callable[..., Session]) -> None:
    """timer() times its block; milliseconds multiply by 1000; a count above 0 is sent."""
    session = open_session()
    with session.timer("work", unit="milliseconds") as timer:
        timer.count += 2
    with session.timer("plain"):
        pass
    work, plain = bodies(datacat, "/metrics")
    assert (work["type"], work["count"], work["unit"]) == ("timer", 2, "milliseconds")
    assert work["value"] == pytest.approx(timer.duration) and timer.duration is not None
    assert "count" not in plain and plain["unit"] == "seconds"


def test_reads_use_datacats_routes(datacat: DatacatStub, open_session: Callable[..., Session]) -> None:
    """get_details reads GET /api/sessions/{id}; get_all_sessions reads GET /api/data/sessions."""
    session = open_session()
    session.update_state({"a": 1})
    details = session.get_details()
    assert details["id"] == session.session_id and details["state"]["a"] == 1
    assert details["active"] is True and details["machine_id"] == machine_id() or not machine_id()
    assert [s["id"] for s in session.client.get_all_sessions()] == [session.session_id]
    assert ("GET", "/api/data/sessions") in [(r.method, r.path) for r in datacat.requests]


def test_datacats_errors_raise_with_their_status_and_text(datacat: DatacatStub) -> None:
    """A datacat 404 raises DatacatError with the status and datacat's plain-text message."""
    client = DatacatClient(datacat.url)
    with pytest.raises(DatacatError) as caught:
        client.log_event("nope", "e")
    assert (caught.value.status, caught.value.message) == (404, "session not found")
    with pytest.raises(DatacatError) as caught:
        client.get_session("nope")
    assert (caught.value.status, caught.value.message) == (404, "Session not found")
    with pytest.raises(ValueError, match="Product and version are required"):
        client.register_session("", "1")


def test_the_hang_monitor_sets_and_clears_hung_on_datacat(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """A silent application gets application_appears_hung (datacat's fields); a heartbeat recovers it."""
    session = open_session()
    clock = [100.0]
    session._clock = lambda: clock[0]
    monitor = session.start_heartbeat_monitor(timeout=10, check_interval=0.005)
    assert isinstance(monitor, HeartbeatMonitor) and monitor.is_running()
    clock[0] += 12
    datacat.wait_for(lambda: datacat.sessions[session.session_id]["hung"])
    session.heartbeat()
    datacat.wait_for(lambda: not datacat.sessions[session.session_id]["hung"])
    session.end()
    hung, recovered = (body for body in bodies(datacat, "/events"))
    assert {key: hung[key] for key in ("name", "category", "group", "labels", "message")} == {
        "name": "application_appears_hung",
        "category": "error",
        "group": "runwatch.client",
        "labels": ["heartbeat", "hung"],
        "message": "Application has not sent heartbeat for 12 seconds",
    }
    assert hung["data"]["seconds_since_heartbeat"] == 12 and RFC3339.fullmatch(hung["data"]["last_heartbeat"])
    assert (recovered["name"], recovered["category"], recovered["labels"]) == (
        "application_recovered",
        "info",
        ["heartbeat", "recovery"],
    )
    assert not monitor.is_running()


def test_pausing_the_monitor_stops_hang_verdicts_until_resumed(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """pause_heartbeat_monitoring pauses this session's monitor; resume restarts the silence from now."""
    session = open_session()
    clock = [0.0]
    session._clock = lambda: clock[0]
    monitor = session.start_heartbeat_monitor(timeout=10, check_interval=60)  # checks only when told
    assert session.client.pause_heartbeat_monitoring(session.session_id) == OK
    clock[0] = 50.0
    assert monitor._watch.check(clock[0]) is None  # paused: silence does not count
    session.resume_heartbeat_monitoring()
    assert monitor._watch.check(55.0) is None and monitor._watch.check(61.0) == "hung"
    session.end()


def test_sessions_this_client_created_get_keepalive_heartbeats(datacat: DatacatStub) -> None:
    """As datacat's daemon, the client heartbeats its sessions itself, until they end."""
    client = DatacatClient(datacat.url, keepalive_interval_seconds=0.02)
    session_id = client.register_session("P", "1")
    datacat.wait_for(lambda: len(datacat.posted("/heartbeat")) >= 2)
    assert "last_heartbeat" in datacat.document(session_id)
    client.end_session(session_id)
    assert session_id not in client._periodic.keepalive
    client.close()


def test_async_session_sends_each_call_alone_to_a_server_without_batch(datacat: DatacatStub) -> None:
    """async_mode: calls return None at once; datacat's 404 for /batch switches to one request per call, in order."""
    session = create_session(datacat.url, product="P", version="1", async_mode=True, queue_size=100)
    assert isinstance(session, AsyncSession)
    assert session.update_state({"step": 0}) is None
    for index in range(20):
        assert session.log_event("tick", data={"i": index}) is None
    session.log_counter("done", 20)
    assert session.flush(TIMEOUT) is True
    assert session.get_stats() == {"sent": 21, "dropped": 0, "queued": 0}
    assert session.shutdown(TIMEOUT) == OK
    assert len(datacat.posted("/batch")) == 1
    document = datacat.document(session.session_id)
    assert [event["data"]["i"] for event in document["events"]] == list(range(20))
    assert [(m["name"], m["type"], m["value"]) for m in document["metrics"]] == [("done", "counter", 20)]
    assert document["state"]["step"] == 0 and "ended_at" in document


def test_async_session_drops_the_newest_calls_when_full_and_counts_them(datacat: DatacatStub) -> None:
    """With the server stuck, calls beyond queue_size are dropped and counted; none waits."""
    session = create_session(datacat.url, async_mode=True, queue_size=5)
    assert isinstance(session, AsyncSession)
    datacat.gate = threading.Event()
    for index in range(12):
        session.log_event("e", data={"i": index})
    stats = session.get_stats()
    assert stats["queued"] == 5 and stats["dropped"] == 7 and session.dropped_count == 7
    datacat.gate.set()
    assert session.flush(TIMEOUT)
    assert session.sent_count == 5
    session.end()


def test_async_session_that_may_not_drop_waits_for_room(datacat: DatacatStub) -> None:
    """drop_on_full=False: a call waits while the queue is full and goes through once there is room."""
    client = DatacatClient(datacat.url)
    session = AsyncSession(Session(client, client.register_session("P", "1"), owns_client=True), 2, False)
    datacat.gate = threading.Event()
    session.log_event("a")
    session.log_event("b")
    producer = threading.Thread(target=lambda: [session.log_event(name) for name in "cde"])
    producer.start()
    sender = session.client._sender
    with sender._room:
        assert sender._room.wait_for(lambda: sender._room_waiters == 1, TIMEOUT)  # the producer waits for room
    datacat.gate.set()
    producer.join(TIMEOUT)
    assert not producer.is_alive()
    assert session.flush(TIMEOUT)
    assert [event["name"] for event in datacat.document(session.session_id)["events"]] == list("abcde")
    assert session.get_stats()["dropped"] == 0
    session.end()


def test_async_log_exception_captures_the_exception_at_the_call(datacat: DatacatStub) -> None:
    """The exception handled when log_exception() is called is sent, not whatever the sender thread sees."""
    session = create_session(datacat.url, async_mode=True)
    assert isinstance(session, AsyncSession)
    try:
        raise RuntimeError("at the call")
    except RuntimeError:
        session.log_exception()
    session.end()
    (event,) = datacat.document(session.session_id)["events"]
    assert (event["exception_type"], event["message"]) == ("RuntimeError", "at the call")


def test_the_logging_handler_sends_datacats_log_events(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """DatacatHandler: a warning becomes log.<logger> with category, group, labels, message and data."""
    session = open_session()
    logger = logging.getLogger("app.mod")
    handler = DatacatHandler(session)
    logger.addHandler(handler)
    try:
        logger.warning("careful now")
        try:
            raise OSError("disk")
        except OSError:
            logger.exception("it failed")
    finally:
        logger.removeHandler(handler)
    warning, failure = bodies(datacat, "/events")
    function = "test_the_logging_handler_sends_datacats_log_events"
    assert {key: warning[key] for key in ("name", "category", "group", "labels", "message")} == {
        "name": "log.app.mod",
        "category": "warning",
        "group": "app.mod",
        "labels": ["warning", "app.mod", function],
        "message": "careful now",
    }
    assert warning["data"]["lineno"] > 0 and warning["data"]["level_name"] == "WARNING"
    assert set(warning["data"]) == {"logger", "level_name", "pathname", "lineno", "funcName", "module"}
    assert (failure["name"], failure["exception_type"], failure["data"]["log_message"]) == (
        "exception",
        "OSError",
        "it failed",
    )


def recorded_paths(requests: list[Recorded]) -> list[str]:
    """Method and path of each request."""
    return [f"{request.method} {request.path}" for request in requests]


def test_a_blocking_session_handed_to_async_session_stops_working_itself(
    datacat: DatacatStub, open_session: Callable[..., Session]
) -> None:
    """AsyncSession(session) of a blocking session moves it to a queued client: one end, no double keep-alive."""
    blocking = open_session()
    session = AsyncSession(blocking)
    assert blocking.session_id not in blocking.client._periodic.keepalive
    session.log_event("queued")
    assert session.end() == OK
    assert recorded_paths(datacat.requests).count(f"POST /api/sessions/{session.session_id}/end") == 1
    assert blocking.end() is None  # already handed over: nothing sent
