"""The client against a real `runwatch serve` subprocess: every endpoint, delivery, restarts, fork,
the seed's examples, interpreter exit. runwatch serve answers GET /health as datacat does, so the client
speaks datacat's contract to it (blocking calls on datacat's routes, queued ones on /batch); reads without
paging parameters answer datacat's session document, with them runwatch's paged view."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from runwatch.client import (
    AsyncSession,
    DatacatClient,
    DatacatError,
    DatacatHandler,
    Session,
    create_session,
)
from runwatch.client._options import default_product

from ._doubles import (
    EXAMPLE_PRELUDE,
    SEED,
    TIMEOUT,
    ServerProcess,
    all_events,
    all_metrics,
    seed_examples,
    wait_for_child,
    wait_until,
)


def test_every_endpoint_against_the_server(server: ServerProcess) -> None:
    """create, state, event, metric, heartbeat, get and end round-trip through a real server, in datacat's
    contract; the session's own metadata shows in runwatch's paged view."""
    with DatacatClient(server.url) as client:
        session_id = client.create_session(product="app", version="1.2", metadata={"a": 1}, user="alice")
        created = client.get_session(session_id)
        assert created["id"] == session_id
        assert created["state"] == {"product": "app", "version": "1.2"}
        assert created["hostname"] and created["machine_id"] and created["active"] is True
        view = client.get_session(session_id, events_limit=10)
        assert (view["product"], view["version"], view["metadata"]) == ("app", "1.2", {"a": 1, "user": "alice"})
        assert client.update_state(session_id, {"status": "running"}) == {"status": "ok"}
        client.log_event(session_id, "user_login", {"user": "alice"}, level="warning")
        client.log_metric(session_id, "cpu_usage", 45.2, tags=["app:myapp"])
        client.log_metric(session_id, "plain", 3)
        client.heartbeat(session_id)
        session = client.get_session(session_id)
        assert session["state"] == {"product": "app", "version": "1.2", "status": "running"}
        assert [(e["name"], e["category"], e["data"]) for e in session["events"]] == [
            ("user_login", "warning", {"user": "alice"})
        ]
        assert [(m["name"], m["value"], m.get("tags")) for m in session["metrics"]] == [
            ("cpu_usage", 45.2, ["app:myapp"]),
            ("plain", 3, None),
        ]
        assert "last_heartbeat" in session
        assert client.end_session(session_id) == {"status": "ok"}
        ended = client.get_session(session_id)
        assert ended["active"] is False and ended["ended_at"]
        client.log_event(session_id, "late")  # datacat takes writes after the end
        assert [e["name"] for e in client.get_session(session_id)["events"]] == ["user_login", "late"]
        with pytest.raises(DatacatError) as caught:
            client.get_session("no-such-session")
        assert caught.value.status == 404
        assert len(client._transport._connections) == 1  # type: ignore[attr-defined]  # one keep-alive connection


@pytest.mark.parametrize(
    ("patches", "expected"),
    [
        pytest.param(
            [{"window_state": {"open": ["w1", "w2"], "active": "w1"}}, {"window_state": {"open": ["w1", "w2", "w3"]}}],
            {"window_state": {"open": ["w1", "w2", "w3"], "active": "w1"}},
            id="nested-objects-merge-lists-replace",
        ),
        pytest.param([{"a": 1, "b": 2}, {"b": None}], {"a": 1}, id="null-deletes"),
        pytest.param([{"a": {"x": 1}}, {"a": 5}], {"a": 5}, id="scalar-replaces-object"),
        pytest.param([{"a": 5}, {"a": {"x": 1}}], {"a": {"x": 1}}, id="object-replaces-scalar"),
        pytest.param(
            [{"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": None, "e": 3}}}],
            {"a": {"b": {"c": 1, "e": 3}}},
            id="deep-delete-and-add",
        ),
        pytest.param([{"a": 1}, {}], {"a": 1}, id="empty-patch"),
        pytest.param([{"gone": None}], {}, id="delete-missing-key"),
    ],
)
@pytest.mark.parametrize("blocking", [pytest.param(True, id="blocking"), pytest.param(False, id="non-blocking")])
def test_state_deep_merge(server: ServerProcess, blocking: bool, patches: list[dict[str, Any]], expected: Any) -> None:
    """State patches merge as the contract says: objects merge, lists and scalars replace, null deletes."""
    with DatacatClient(server.url, blocking=blocking, flush_interval=0.01) as client:
        session_id = client.create_session(product="merge", version="1")
        for patch in patches:
            client.update_state(session_id, patch)
        session = client.get_session(session_id)
    assert session["state"] == {"product": "merge", "version": "1", **expected}
    # A blocking update that changes nothing is not sent (as datacat's daemon drops it): no history entry.
    sent = [patch for patch in patches if patch] if blocking else patches
    assert len(session["state_history"]) == len(sent)


def test_get_session_pages_the_state_history(server: ServerProcess) -> None:
    """get_session passes state_history_limit and state_history_cursor; the pages hold every patch once."""
    with DatacatClient(server.url) as client:
        session_id = client.create_session(product="pages", version="1")
        for n in range(3):
            client.update_state(session_id, {"n": n})
        newest = client.get_session(session_id, state_history_limit=2)
        older = client.get_session(
            session_id, state_history_limit=2, state_history_cursor=newest["state_history_next_cursor"]
        )
    first = {"product": "pages", "version": "1"}  # the session's first state, a patch in runwatch's view
    assert [entry["patch"] for entry in newest["state_history"]] == [{"n": 1}, {"n": 2}]
    assert [entry["patch"] for entry in older["state_history"]] == [first, {"n": 0}]
    assert older["state_history_next_cursor"] is None and newest["state"] == {**first, "n": 2}


def test_exception_logging_against_the_server(server: ServerProcess) -> None:
    """log_exception stores an error-level `exception` event with type, message, traceback and extra data."""
    session = create_session(server.url)
    try:
        {}["missing"]  # noqa: B018
    except KeyError:
        session.log_exception(extra_data={"context": "user_action"})
    (event,) = session.get()["events"]
    session.end()
    assert (event["name"], event["category"], event["group"]) == ("exception", "error", "exception")
    assert (event["exception_type"], event["exception_msg"]) == ("KeyError", "'missing'")
    assert "KeyError: 'missing'" in "".join(event["stacktrace"])
    assert event["data"] == {"context": "user_action"}
    assert event["source_function"] == "test_exception_logging_against_the_server"


def test_heartbeat_monitor_against_the_server(server: ServerProcess) -> None:
    """A silent application gets one application_appears_hung event, then application_recovered after a heartbeat."""
    session = create_session(server.url)
    session.start_heartbeat_monitor(timeout=0.3, check_interval=0.02)

    def names() -> list[str]:
        return [e["name"] for e in session.get()["events"] if e["data"].get("detected_by") == "client"]

    wait_until(lambda: "application_appears_hung" in names())
    session.heartbeat()
    wait_until(lambda: "application_recovered" in names())
    session.stop_heartbeat_monitor()
    assert names() == ["application_appears_hung", "application_recovered"]  # in arrival order
    assert session.get()["hung"] is False
    session.end()


def test_non_blocking_delivers_everything_to_the_server(server: ServerProcess) -> None:
    """Thousands of non-blocking calls are all stored, once each, and the session ends last."""
    with DatacatClient(server.url, blocking=False, batch_size=200) as client:
        session_id = client.create_session()
        for index in range(3000):
            client.log_event(session_id, "tick", {"i": index})
            if index % 3 == 0:
                client.log_metric(session_id, "value", index, tags=["t:1"])
        client.update_state(session_id, {"done": True})
        client.end_session(session_id)
        assert client.flush(TIMEOUT)
        events = all_events(client, session_id)
        metrics = all_metrics(client, session_id)
        session = client.get_session(session_id)
        stats = client.statistics()
    assert [e["data"]["i"] for e in events if e["name"] == "tick"] == list(range(3000))
    assert [m["value"] for m in metrics] == [float(i) for i in range(0, 3000, 3)]
    assert session["state"]["done"] is True and session["active"] is False and "ended_at" in session
    assert stats.sent == 3000 + 1000 + 2 and stats.dropped == {} and stats.queued == 0


def test_non_blocking_session_survives_a_server_restart(tmp_path: Path) -> None:
    """Calls made while the server restarts are retried and stored once each: none lost, none duplicated."""
    first = ServerProcess(tmp_path / "server")
    client = DatacatClient(first.url, blocking=False, flush_interval=0.01, retry_max_seconds=0.2, max_queue=100_000)
    try:
        session_id = client.create_session()
        for index in range(2000):
            client.log_event(session_id, "tick", {"i": index})
        first.stop()  # SIGTERM while batches are (probably) in flight
        for index in range(2000, 4000):
            client.log_event(session_id, "tick", {"i": index})
        started = time.monotonic()
        while client.statistics().retries == 0:  # the server is gone: the client is retrying
            assert time.monotonic() - started < TIMEOUT
            time.sleep(0.01)  # polling interval of a bounded wait
        second = ServerProcess(tmp_path / "server", port=first.port)
        try:
            assert client.flush(TIMEOUT)
            ticks = [e["data"]["i"] for e in all_events(client, session_id) if e["name"] == "tick"]
            stats = client.statistics()
        finally:
            second.stop()
    finally:
        client.close(0)
    assert len(ticks) == 4000
    assert sorted(ticks) == list(range(4000))
    assert stats.sent == 4000 and stats.dropped == {} and stats.retries > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_gives_the_child_its_own_queue_and_connection(server: ServerProcess) -> None:
    """A forked child starts with an empty queue and its own sender; parent and child calls are stored once each."""
    with DatacatClient(server.url, blocking=False, flush_interval=5.0) as client:
        session_id = client.create_session()
        for index in range(100):
            client.log_event(session_id, "parent", {"i": index})  # still queued at the fork (flush_interval)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                empty = client.statistics().queued == 0
                for index in range(50):
                    client.log_event(session_id, "child", {"i": index})
                delivered = client.flush(TIMEOUT)
                code = 0 if empty and delivered and client.statistics().sent == 50 else 2
            finally:
                os._exit(code)
        for index in range(100, 200):
            client.log_event(session_id, "parent", {"i": index})
        assert wait_for_child(pid) == 0
        assert client.flush(TIMEOUT)
        events = all_events(client, session_id)
    assert sorted(e["data"]["i"] for e in events if e["name"] == "parent") == list(range(200))
    assert sorted(e["data"]["i"] for e in events if e["name"] == "child") == list(range(50))


@pytest.mark.skipif(not SEED.exists(), reason="the seed documents are not checked out beside the project")
def test_seed_examples_run_unchanged(server: ServerProcess, tmp_path: Path) -> None:
    """Each example of the datacat seed runs with only its import swapped (and the server's URL)."""
    examples = seed_examples()
    assert len(examples) == 4
    for number, example in enumerate(examples):
        code = re.sub(r"from datacat import .*", "from runwatch.client import create_session, DatacatClient", example)
        code = code.replace("http://localhost:8080", server.url)
        script = tmp_path / f"example_{number}.py"
        script.write_text(EXAMPLE_PRELUDE + code)
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, f"example {number} failed:\n{result.stderr}"
        if number == 0:
            session_id = result.stdout.split("Session ID:")[1].split()[0]
            with DatacatClient(server.url) as client:
                session = client.get_session(session_id)
            assert session["state"] == {
                "product": "example_0",  # the program's name: the seed's create_session gives no product
                "status": "running",
                "version": "1.0.0",
                "window_state": {"open": ["w1", "w2", "w3"], "active": "w1"},
            }
            assert [(e["name"], e["data"]) for e in session["events"]] == [
                ("user_action", {"action": "click", "button": "submit"})
            ]
            assert [(m["name"], m["value"], m["tags"]) for m in session["metrics"]] == [
                ("memory_usage", 1024.5, ["app:myapp"])
            ]
            assert session["active"] is False and "ended_at" in session


def test_interpreter_exit_flushes_what_is_queued(server: ServerProcess, tmp_path: Path) -> None:
    """A program that exits without flush() or close() still delivers its queued calls (atexit)."""
    script = tmp_path / "app.py"
    script.write_text(
        "from runwatch.client import DatacatClient\n"
        f"client = DatacatClient({server.url!r}, blocking=False, flush_interval=5.0)\n"
        "session_id = client.create_session()\n"
        "print(session_id, flush=True)\n"
        "for index in range(1000):\n"
        "    client.log_event(session_id, 'tick', {'i': index})\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    with DatacatClient(server.url) as client:
        events = all_events(client, result.stdout.strip())
    assert [e["data"]["i"] for e in events] == list(range(1000))


def test_datacats_client_api_is_stored_as_datacat_stores_it(server: ServerProcess) -> None:
    """datacat's calls against runwatch serve: events with their category, group, labels, message and
    exception fields, metrics with their type, count, unit and tags, counters and histograms as totals,
    the replies datacat's daemon gives, and get_all_sessions() from GET /api/data/sessions."""
    session = create_session(server.url)
    assert isinstance(session, Session)
    assert session.log_event("ui_event", "ui", "grp", ["l1"], "hello", {"k": 1}) == {"status": "ok"}
    assert session.log_event("lvl", level="warning") == {"status": "ok"}
    session.log_gauge("fps", 60, ["t"], "fps")
    session.log_timer("load", 1.25, 3)
    for _ in range(3):
        session.log_counter("requests")
    session.log_histogram("latency", 1.0)
    session.log_histogram("latency", 2.0)
    try:
        raise ValueError("boom")
    except ValueError:
        session.log_exception(sys.exc_info(), {"ctx": "c"})
    logger = logging.getLogger("app.mod")
    handler = DatacatHandler(session)
    logger.addHandler(handler)
    try:
        logger.warning("careful now")
    finally:
        logger.removeHandler(handler)
    details = session.get_details()
    assert session.end() == {"status": "ok"}
    with DatacatClient(server.url) as reader:
        stored = reader.get_session(session.session_id)
        listed = {item["id"]: item for item in reader.get_all_sessions()}
    events = {event["name"]: event for event in stored["events"]}
    metrics = [(m["name"], m["type"], m["value"], m.get("count"), m.get("unit")) for m in stored["metrics"]]
    assert (details["state"]["product"], details["state"]["version"]) == (default_product(), "unknown")
    assert {key: events["ui_event"][key] for key in ("category", "group", "labels", "message", "data")} == {
        "category": "ui",
        "group": "grp",
        "labels": ["l1"],
        "message": "hello",
        "data": {"k": 1},
    }
    assert events["lvl"]["category"] == "warning"
    assert (events["exception"]["category"], events["exception"]["exception_type"]) == ("error", "ValueError")
    assert events["exception"]["data"] == {"ctx": "c"} and "boom" in "".join(events["exception"]["stacktrace"])
    assert (events["log.app.mod"]["category"], events["log.app.mod"]["message"]) == ("warning", "careful now")
    assert metrics[:2] == [("fps", "gauge", 60, None, "fps"), ("load", "timer", 1.25, 3, "seconds")]
    totals = {name: (kind, value) for name, kind, value, _, _ in metrics[2:]}
    assert totals == {"requests": ("counter", 3), "latency": ("histogram", 1.5)}
    latency = [m for m in stored["metrics"] if m["name"] == "latency"][-1]
    assert (latency["metadata"]["count"], latency["metadata"]["sum"]) == (2, 3)
    assert listed[session.session_id] == stored


def test_async_mode_is_a_queued_session_not_metadata(server: ServerProcess) -> None:
    """create_session(async_mode=True) returns an AsyncSession delivering through /batch once each."""
    session = create_session(server.url, async_mode=True, queue_size=5000)
    assert isinstance(session, AsyncSession)
    for index in range(500):
        assert session.log_event("tick", data={"i": index}) is None
    session.log_counter("ticks", 500)
    assert session.flush(TIMEOUT)
    details = session.get_details()
    reply = session.shutdown(TIMEOUT)
    assert reply == {"status": "ok"}
    assert details["active"] is True
    with DatacatClient(server.url) as reader:
        view = reader.get_session(session.session_id, events_limit=1)
        assert view["metadata"] == {}  # async_mode and queue_size are not stored as metadata
        assert view["status"] == "ended"
        ticks = [e["data"]["i"] for e in all_events(reader, session.session_id) if e["name"] == "tick"]
        metrics = [(m["name"], m["value"]) for m in all_metrics(reader, session.session_id)]
    assert ticks == list(range(500))
    assert metrics == [("ticks", 500.0)]
    stats = session.client.statistics()
    assert stats.batches >= 1 and stats.dropped == {} and not session.client._sender._per_operation
