"""WebMonitor in remote mode: the same API, recorded into a real runwatch server on loopback.

The server is a real monitor serving its store (ingest, REST); the producer is a WebMonitor with
``MonitorConfig(server_url=...)`` (or ``MONITOR_SERVER_URL``). What it records must be stored by the
server, and its queries must equal the same queries on the server's file.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.store.manager import DatabaseManager

TOKEN = "remote-mode-token-0123"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """A runwatch server (token required) on a loopback port."""
    tmp = tmp_path_factory.mktemp("server")
    monitor = WebMonitor(
        MonitorConfig(db_path=str(tmp / "server.db"), data_dir=str(tmp / "data"), web_port=0, web_token=TOKEN)
    )
    try:
        yield monitor
    finally:
        monitor.close()


def remote(server: WebMonitor, tmp_path: Path, **settings: object) -> WebMonitor:
    """A producer in remote mode: its spool under tmp_path, its local store path never created."""
    assert server.web_url is not None
    config = MonitorConfig(
        db_path=str(tmp_path / "never.db"),
        data_dir=str(tmp_path / "producer"),
        server_url=server.web_url,
        server_token=TOKEN,
        **settings,  # type: ignore[arg-type]
    )
    return WebMonitor(config)


def test_a_remote_monitor_records_into_the_server_and_reads_the_same_shapes(server: WebMonitor, tmp_path: Path) -> None:
    """Metrics (NaN, ±Inf, steps), state, events and log records reach the server's store; the monitor's
    queries return what a DatabaseManager on the server's file returns, and it creates no store of its own."""
    with remote(server, tmp_path) as producer:
        assert producer.web_url == server.web_url  # the dashboard is the server's
        run_id = producer.start_training({"lr": 0.01}, run_id="remote-shapes")
        for step in range(200):
            producer.update_metrics({"loss": 1.0 / (step + 1), "acc": step / 200})
        producer.update_metrics({"loss": math.nan, "spike": math.inf}, step=250)
        producer.update_game_state({"level": 3})
        producer.record_event("checkpoint", {"path": "a.pt"})
        handler = producer.log_handler()
        logger = logging.getLogger("remote.training")
        logger.addHandler(handler)
        try:
            logger.warning("loss plateaued")
        finally:
            logger.removeHandler(handler)
        producer.stop_training(final_reward=1.5)
        frame = producer.get_run_metrics(run_id)
        summary = producer.get_run_summary(run_id)
        events = producer.get_run_events(run_id)
        runs = producer.get_training_runs()
        archive = producer.export_run_data(run_id, tmp_path / "exports")
    with DatabaseManager(server.config.db_path) as db:
        pd.testing.assert_frame_equal(frame, db.get_run_metrics(run_id))
        assert summary["status"] == "completed" and summary["final_reward"] == 1.5
        assert summary == db.get_run_summary(run_id) | {"metrics": summary["metrics"]}
        assert [e["event_type"] for e in events] == [e["event_type"] for e in db.get_run_events(run_id)]
        assert any(e["event_type"] == "log" and e["event_data"]["message"] == "loss plateaued" for e in events)
        assert db.get_run_state(run_id) == {"game_state": {"level": 3}}
    assert len(frame) == 201 and math.isinf(frame["spike"].iloc[-1]) and math.isnan(frame["loss"].iloc[-1])
    assert run_id in {run["run_id"] for run in runs}
    with zipfile.ZipFile(archive) as zipped:
        assert "run.json" in zipped.namelist()
    assert not (tmp_path / "never.db").exists()


def test_a_resumed_remote_run_continues_from_the_servers_last_step(server: WebMonitor, tmp_path: Path) -> None:
    """start_training(run_id=...) of a run the server has resumes it: the next call is its last step plus one."""
    with remote(server, tmp_path / "first") as first:
        first.start_training(run_id="remote-resumed")
        for _ in range(10):
            first.update_metrics({"x": 1.0})
    with remote(server, tmp_path / "second") as second:
        second.start_training(run_id="remote-resumed")
        second.update_metrics({"x": 2.0})
        frame = second.get_run_metrics("remote-resumed")
    assert frame["step"].tolist() == list(range(11))


def test_server_url_comes_from_the_environment(
    server: WebMonitor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MONITOR_SERVER_URL (and RUNWATCH_TOKEN for its token) make WebMonitor() a remote monitor."""
    assert server.web_url is not None
    monkeypatch.setenv("MONITOR_SERVER_URL", server.web_url)
    monkeypatch.setenv("RUNWATCH_TOKEN", TOKEN)
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MONITOR_DB_PATH", str(tmp_path / "never.db"))
    with WebMonitor() as producer:
        assert producer.config.server_url == server.web_url and producer.config.server_token == TOKEN
        producer.start_training(run_id="from-env")
        producer.update_metrics({"x": 1.0})
        producer.stop_training()
        assert producer.wait_delivered(30)
    with DatabaseManager(server.config.db_path) as db:
        assert db.get_run_summary("from-env")["status"] == "completed"
    assert not (tmp_path / "never.db").exists()


def test_the_token_is_in_no_log_and_no_repr(
    server: WebMonitor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server token travels in a header only: no log record, repr or statistics of the monitor holds it."""
    caplog.set_level(logging.DEBUG)
    with remote(server, tmp_path) as producer:
        producer.start_training(run_id="tokened")
        producer.update_metrics({"x": 1.0})
        producer.stop_training()
        assert producer.wait_delivered(30)
        shown = [repr(producer.config), repr(producer), repr(producer.db), str(producer.statistics())]
    assert all(TOKEN not in text for text in shown)
    assert all(TOKEN not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        pytest.param({"server_url": "ftp://box"}, ValueError, "server_url: the server URL must start", id="scheme"),
        pytest.param(
            {"server_url": "http://user:pw@box"}, ValueError, "must not hold a user or password", id="credentials"
        ),
        pytest.param({"server_url": 8080}, TypeError, "server_url must be a string", id="type"),
        pytest.param({"server_token": "abcdefgh"}, ValueError, "server_token needs server_url", id="token-alone"),
        pytest.param(
            {"server_url": "http://box:8080", "pipeline": {"sources": {}}}, ValueError, "cannot both", id="pipeline"
        ),
    ],
)
def test_bad_remote_settings_are_refused_by_name(settings: dict[str, object], error: type, message: str) -> None:
    """A bad server_url or server_token is a TypeError/ValueError naming the setting."""
    with pytest.raises(error, match=message):
        MonitorConfig(**settings)  # type: ignore[arg-type]


def test_an_embedded_script_says_how_to_see_its_run_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When a script's monitor closes, one line on stderr names the command that serves its store again."""
    db = tmp_path / "my runs.db"
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "data"), web_port=0)) as monitor:
        monitor.start_training(run_id="r1")
        monitor.update_metrics({"x": 1.0})
    hints = [line for line in capsys.readouterr().err.splitlines() if "again" in line]
    assert hints == [f"runwatch: run 'r1' is stored in {db}; to see it again: runwatch serve --db '{db}'"]


# -- SessionMonitor in remote mode -------------------------------------------------------------------


def test_a_remote_session_monitor_records_into_the_server_and_reports_from_it(
    server: WebMonitor, tmp_path: Path
) -> None:
    """Sessions, their errors and metrics go to the server; statistics and exports equal a local
    SessionMonitor's on the server's store; cleanup is refused by name (the store is the server's)."""
    from runwatch.sessions import SessionConfig, SessionMonitor

    assert server.web_url is not None
    config = SessionConfig(server_url=server.web_url, server_token=TOKEN, product="remote-app")
    with SessionMonitor(tmp_path / "unused.db", config) as sessions:
        sessions.log_system_startup()
        for n in range(5):
            sessions.log_session_created(f"remote-session-{n}", n)
            sessions.record_metric("sync_time", f"remote-session-{n}", n, 0.5 + n, {"step": n})
        sessions.log_session_error("remote-session-1", 1, "timeout", "upstream")
        sessions.log_session_expired("remote-session-2", 2, "idle")
        stats = sessions.get_session_statistics()
        exported = sessions.export_metrics()
        with pytest.raises(ValueError, match="cleanup_old_data .* remote mode"):
            sessions.cleanup_old_data(1)
        assert "server=" in repr(sessions)
    with SessionMonitor(server.config.db_path) as local:
        expected = local.get_session_statistics()
        expected_metrics = [m for m in local.export_metrics() if m["session_id"].startswith("remote-session")]
    assert {k: v for k, v in stats.items() if k != "timestamp"} == {
        k: v for k, v in expected.items() if k != "timestamp"
    }
    assert [m for m in exported if m["session_id"].startswith("remote-session")] == expected_metrics
    assert [m["value"] for m in expected_metrics] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert not (tmp_path / "unused.db").exists()


def test_a_session_monitor_without_a_config_is_remote_when_the_environment_says_so(
    server: WebMonitor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MONITOR_SERVER_URL and RUNWATCH_TOKEN make SessionMonitor(None) record into that server."""
    from runwatch.sessions import SessionMonitor

    assert server.web_url is not None
    monkeypatch.setenv("MONITOR_SERVER_URL", server.web_url)
    monkeypatch.setenv("RUNWATCH_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # the spool goes to ./monitor_data
    with SessionMonitor(None) as sessions:
        assert sessions.config.server_url == server.web_url
        sessions.log_session_created("env-session", 7)
        assert sessions.wait_delivered(30)
    with DatabaseManager(server.config.db_path) as db:
        assert db.get_run_summary("env-session")["kind"] == "session"
    assert (tmp_path / "monitor_data" / "spool").is_dir()
