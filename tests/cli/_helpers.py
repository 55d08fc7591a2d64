"""Helpers of the command-line tests: a store written by a real monitor, and running ``runwatch`` in process."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from click.testing import Result
from typer.testing import CliRunner

from runwatch import DatabaseManager, MonitorConfig, WebMonitor
from runwatch.cli import app


@dataclass(frozen=True)
class Store:
    """A store written by a real monitor: ``alpha`` completed with metrics, events and state; ``beta`` failed."""

    path: Path
    alpha: str = "alpha"
    beta: str = "beta"


def write_runs(db_path: Path) -> None:
    """Record two runs through a WebMonitor: a rich completed one and a failed one."""
    config = MonitorConfig(db_path=str(db_path), data_dir=str(db_path.parent / "data"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training({"lr": 0.01, "layers": [64, 64]}, run_id="alpha")
        monitor.update_metrics({"loss": 1.0, "accuracy": 0.25})
        monitor.update_metrics({"loss": math.nan, "accuracy": 0.5})  # a logged NaN
        monitor.update_metrics({"loss": math.inf, "step": 3})  # ±Inf; a metric called "step"
        monitor.update_metrics({"loss": 0.5})
        monitor.update_step(1, 0.5, "left", 0.01, {"hp": 3, "pos": [1, 2]})
        monitor.update_episode(1, 2.0, 5, True, {"seed": 7})
        monitor.record_event("checkpoint_saved", {"path": "a.pt"}, level="warning")
        monitor.update_game_state({"hp": None, "mp": 1}, frame_number=2)  # None deletes a key
        monitor.stop_training(final_reward=2.5)
        monitor.start_training(run_id="beta")
        monitor.update_metrics({"loss": 9.0})
        monitor.fail_training("diverged")


def invoke(runner: CliRunner, *args: str | Path, input: str | None = None) -> Result:
    """Run ``runwatch *args`` in process."""
    return runner.invoke(app, [str(arg) for arg in args], input=input)


def assert_one_line_error(result: Result, *, code: int | None = None, mentions: str = "") -> str:
    """The command failed with a single ``error:`` line on stderr (mentioning ``mentions``), no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert mentions in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def run_ids(path: Path) -> list[str]:
    """The run ids in a store, newest first."""
    with DatabaseManager(path) as db:
        return [run["run_id"] for run in db.get_training_runs()]


def export(runner: CliRunner, db: Path, run_id: str, directory: Path) -> Path:
    """``runwatch export`` → the archive's path."""
    result = invoke(runner, "export", run_id, "--db", db, "-o", directory)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.parent == directory and path.suffix == ".zip"
    return path
