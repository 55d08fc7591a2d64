"""datacat's sessions on runwatch's pipeline: its alert rules, its store reads, its own session routes and its
export see what datacat's clients write (docs/datacat.md, "On top")."""

from __future__ import annotations

import json
import time
from pathlib import Path

from runwatch.store.export import export_run
from runwatch.store.importer import import_run
from runwatch.store.sqlite import SQLiteStore
from runwatch.wire.datacat import session_document
from runwatch.wire.gojson import dumps

from ._harness import Serve, assert_ok, wait_until


def test_a_datacat_crash_fires_runwatchs_critical_alert(serve: Serve) -> None:
    """The critical event of a reported crash reaches the alerts stage: the critical_error rule fires."""
    session_id = serve.create("Alerting", "1")

    assert_ok(serve.post(f"/api/sessions/{session_id}/crash", {"reason": "segfault"}))

    def firing() -> list[str]:
        answer = serve.get(f"/api/alerts/history?run_id={session_id}")
        assert answer.status == 200, answer
        return [alert["rule"] for alert in answer.json()["alerts"] if alert["state"] == "firing"]

    assert "critical_error" in wait_until(firing)


def test_datacat_writes_are_runwatch_events_metrics_and_state(serve: Serve) -> None:
    """A datacat session's metric, event and state are a run's metric statistics, events and state, and it
    is listed by runwatch's own session listing with its status."""
    session_id = serve.create("Stored", "4.2", machine_id="m-stored")
    assert_ok(serve.post(f"/api/sessions/{session_id}/metrics", {"name": "mem", "value": 10, "type": "gauge"}))
    assert_ok(serve.post(f"/api/sessions/{session_id}/metrics", {"name": "mem", "value": 30, "type": "gauge"}))
    assert_ok(serve.post(f"/api/sessions/{session_id}/events", {"name": "boom", "category": "error"}))
    assert_ok(serve.post(f"/api/sessions/{session_id}/state", {"state": {"mode": "edit"}}))

    summary = serve.get(f"/api/runs/{session_id}").json()
    assert (summary["metrics"]["mem"]["last"], summary["metrics"]["mem"]["max"]) == (30, 30)
    events = serve.get(f"/api/runs/{session_id}/events?kind=log").json()["events"]
    assert [(event["event_type"], event["level"]) for event in events] == [("boom", "error")]
    assert serve.get(f"/api/runs/{session_id}/state").json()["state"] == {
        "product": "Stored",
        "version": "4.2",
        "mode": "edit",
    }
    listed = serve.get("/api/sessions?product=Stored").json()["sessions"]
    assert [(item["id"], item["status"], item["machine_id"]) for item in listed] == [(session_id, "active", "m-stored")]


def test_an_exported_datacat_session_imports_into_another_store_unchanged(serve: Serve, tmp_path: Path) -> None:
    """runwatch export/import keeps a datacat session's own fields: the imported session's document is the
    same as the original's."""
    session_id = serve.create("Moving", "1", machine_id="m-move", hostname="h")
    path = f"/api/sessions/{session_id}"
    assert_ok(serve.post(f"{path}/state", {"state": {"a": {"x": None}}, "timestamp": "2020-01-02T03:04:05+02:00"}))
    assert_ok(serve.post(f"{path}/events", {"name": "e", "category": "ui", "labels": ["l"], "source_line": 3}))
    assert_ok(serve.post(f"{path}/metrics", {"name": "h", "type": "histogram", "value": 1, "metadata": {"sum": 1}}))
    assert_ok(serve.post(f"{path}/end", {}))
    original = serve.session(session_id)

    archive = export_run(str(serve.db_path), session_id, tmp_path)
    copy = tmp_path / "copy.db"
    import_run(str(copy), archive)

    (rows,) = SQLiteStore(copy).whole_sessions([session_id])
    document = json.loads(dumps(session_document(**rows, now=time.time(), timeout_seconds=60)))
    assert document == original
