"""datacat's liveness on `runwatch serve`: suspended by silence and back by a heartbeat, crashed by machine_id
when the machine creates a new session, hung by event name; never judged by runwatch's own liveness stage
(docs/datacat.md; spec sections 3 and 5.3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._harness import UNIT, Serve, assert_ok, go_epoch, wait_until

FLAGS = ("active", "suspended", "crashed", "hung")


def flags(serve: Serve, session_id: str) -> tuple[bool, ...]:
    """The session's four liveness flags."""
    session = serve.session(session_id)
    return tuple(session[key] for key in FLAGS)


def test_silence_suspends_a_session_and_a_heartbeat_brings_it_back(quick_serve: Serve) -> None:
    """A session that heartbeated and then fell silent past the timeout is suspended (no event written);
    a heartbeat makes it active again; a session that never heartbeated stays active."""
    serve = quick_serve
    silent = serve.create(machine_id="m-silence")
    never = serve.create(machine_id="m-never")
    assert flags(serve, silent) == (True, False, False, False)
    assert "last_heartbeat" not in serve.session(silent)

    assert_ok(serve.post(f"/api/sessions/{silent}/heartbeat", {}))
    assert "last_heartbeat" in serve.session(silent)
    wait_until(lambda: flags(serve, silent) == (False, True, False, False), timeout=20 * UNIT)

    suspended = serve.session(silent)
    assert suspended["events"] == []
    assert flags(serve, never) == (True, False, False, False)
    assert_ok(serve.post(f"/api/sessions/{silent}/heartbeat", {}))
    assert flags(serve, silent)[:2] == (True, False)
    wait_until(lambda: flags(serve, silent)[:2] == (False, True), timeout=20 * UNIT)


def test_a_new_session_from_the_same_machine_marks_its_suspended_session_crashed(quick_serve: Serve) -> None:
    """Creating a session with a machine_id marks that machine's suspended sessions crashed (no ended_at,
    updated_at unchanged, a session_crashed_detected event with an empty category); its active and ended
    sessions, and other machines' sessions, are left alone."""
    serve = quick_serve
    old = serve.create(machine_id="M")
    ended = serve.create(machine_id="M")
    other = serve.create(machine_id="N")
    for session_id in (old, ended, other):
        assert_ok(serve.post(f"/api/sessions/{session_id}/heartbeat", {}))
    assert_ok(serve.post(f"/api/sessions/{ended}/end", {}))
    wait_until(lambda: serve.session(old)["suspended"] and serve.session(other)["suspended"], timeout=20 * UNIT)
    before = serve.session(old)

    newer = serve.create(machine_id="M")

    crashed = serve.session(old)
    assert tuple(crashed[key] for key in FLAGS) == (False, False, True, False)
    assert "ended_at" not in crashed and crashed["updated_at"] == before["updated_at"]
    (event,) = crashed["events"]
    assert {key: event[key] for key in ("name", "category", "group", "labels", "message", "data")} == {
        "name": "session_crashed_detected",
        "category": "",
        "group": "",
        "labels": None,
        "message": "",
        "data": {"machine_id": "M", "reason": "machine_returned_session_not_resumed"},
    }
    assert flags(serve, newer) == (True, False, False, False)
    assert serve.session(ended)["events"] == [] and serve.session(ended)["crashed"] is False
    assert serve.session(other)["crashed"] is False

    assert_ok(serve.post(f"/api/sessions/{old}/heartbeat", {}))
    again = serve.session(old)
    assert go_epoch(again["last_heartbeat"]) > go_epoch(crashed["last_heartbeat"])
    assert (again["crashed"], again["active"]) == (True, False)
    serve.create(machine_id="M")
    assert len(serve.session(old)["events"]) == 1  # a crashed session is not detected again


def test_a_session_that_never_heartbeated_is_not_crash_detected(quick_serve: Serve) -> None:
    """A session of the same machine that never heartbeated is active, so a new session leaves it alone."""
    serve = quick_serve
    quiet = serve.create(machine_id="m-quiet")

    serve.create(machine_id="m-quiet")

    assert flags(serve, quiet) == (True, False, False, False)


# -- runwatch's own liveness stage -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def watched_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A server whose liveness stage calls runs hung after 0.3 time units and crashed after 0.6."""
    directory = tmp_path_factory.mktemp("watched")
    config = directory / "monitor.toml"
    config.write_text(
        f"""
[pipeline.sources.ingest]
type = "ingest"

[pipeline.stages.liveness]
type = "liveness"
inputs = ["ingest"]
heartbeat_timeout_seconds = {0.3 * UNIT}
crash_timeout_seconds = {0.6 * UNIT}
check_interval_seconds = {0.05 * UNIT}

[pipeline.sinks.store]
type = "sqlite"
inputs = ["liveness"]
"""
    )
    process = Serve(directory / "serve", config=config, heartbeat_timeout=0.3 * UNIT)
    yield process
    process.stop()


def test_runwatchs_liveness_stage_never_judges_a_datacat_session(watched_serve: Path) -> None:
    """While the liveness stage marks a silent runwatch run hung and then crashed, a silent datacat session
    of the same age gets no verdict event: it is only suspended, as datacat computes it."""
    serve = watched_serve
    assert isinstance(serve, Serve)
    session_id = serve.create(machine_id="m-watched")
    run = [
        {"kind": "lifecycle", "run_id": "native-run", "transition": "started"},
        {"kind": "heartbeat", "run_id": "native-run"},
    ]
    assert serve.post("/api/ingest", run).status == 202
    assert_ok(serve.post(f"/api/sessions/{session_id}/heartbeat", {}))

    def native_verdicts() -> list[str]:
        answer = serve.get("/api/runs/native-run/events?type=application_crashed")
        assert answer.status == 200, answer
        return [event["event_type"] for event in answer.json()["events"]]

    wait_until(native_verdicts, timeout=20 * UNIT)  # the stage has judged runs silent for longer than the session

    session = serve.session(session_id)
    assert session["events"] == []
    assert tuple(session[key] for key in FLAGS) == (False, True, False, False)
