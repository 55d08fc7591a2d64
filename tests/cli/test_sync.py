"""Tests of ``runwatch sync``'s command line (runwatch.cli._transfer): argument errors, a missing path and an
unreachable server, each one line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from runwatch import MonitorConfig, WebMonitor
from runwatch.cli import app

# A loopback port with nothing behind it (the discard service is not run here).
NOWHERE = "http://127.0.0.1:9"


def invoke(*args: str) -> tuple[int, str]:
    """Run ``runwatch`` with ``args``; its exit code and everything it printed."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_bad_server_url_is_a_bad_argument(tmp_path: Path) -> None:
    """--to with another scheme or credentials in it exits 2, naming the option."""
    code, output = invoke("sync", str(tmp_path), "--to", "http://user:pw@host:1")
    assert code == 2 and "--to: the server URL must not hold a user or password" in output
    assert "pw" not in output.replace("password", "")


def test_run_with_a_spool_directory_is_a_bad_argument(tmp_path: Path) -> None:
    """--run picks runs of a store: with a spool directory it exits 2."""
    code, output = invoke("sync", str(tmp_path), "--to", NOWHERE, "--run", "r1")
    assert code == 2 and "a spool directory is sent whole" in output


def test_a_missing_path_fails_in_one_line(tmp_path: Path) -> None:
    """A path that does not exist exits 1 with one error line."""
    code, output = invoke("sync", str(tmp_path / "missing.db"), "--to", NOWHERE)
    assert code == 1 and output.count("error:") == 1 and "no store or spool" in output


def test_an_unreachable_server_says_to_run_it_again(tmp_path: Path) -> None:
    """Past --patience without an answer the sync stops, exits 1, and says that running it again resumes."""
    db = tmp_path / "offline.db"
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0)) as monitor:
        monitor.start_training(run_id="r")
        monitor.update_metrics({"x": 1.0})
    code, output = invoke("sync", str(db), "--to", NOWHERE, "--patience", "0.2")
    assert code == 1 and "could not be reached for 0.2 s; run the same sync again to resume" in output
