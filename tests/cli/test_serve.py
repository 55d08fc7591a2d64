"""Tests of ``runwatch demo`` (runwatch.cli._serve); ``serve`` runs as a child process in test_shutdown_signals.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runwatch import DatabaseManager
from runwatch.cli import app


@pytest.mark.timeout(120)
def test_demo_runs_one_episode_and_prints_the_store_path(runner: CliRunner, tmp_path: Path) -> None:
    """demo --episodes 1 runs a completed simulated run into --data-dir and prints where the store is."""
    data_dir = tmp_path / "demo"

    result = runner.invoke(app, ["demo", "--episodes", "1", "--data-dir", str(data_dir), "--port", "0"])

    assert result.exit_code == 0, result.output
    store = (data_dir / "monitoring.db").resolve()
    assert f"store         {store}" in result.stdout
    with DatabaseManager(store) as db:
        (run,) = db.get_training_runs()
    assert (run["status"], run["total_episodes"]) == ("completed", 1)
    assert run["total_steps"] >= 1
    assert run["run_id"] in result.stdout
    lines = result.stdout.splitlines()
    link = next(index for index, line in enumerate(lines) if f"/#/runs/{run['run_id']}" in line)
    finished = next(index for index, line in enumerate(lines) if line.strip().startswith("finished"))
    assert link < finished  # the run's page is announced while it runs, not afterwards
    assert f"runwatch serve --db {data_dir / 'monitoring.db'}" in result.stdout  # how to look again later
    with DatabaseManager(store) as db:  # a frame of the grid at the steps it was logged, Q-value histograms
        frames = db.get_run_images(run["run_id"], "env/frame")
        histograms = db.get_run_histograms(run["run_id"], "q_values")
    assert frames and frames[0]["width"] == 128 and frames[0]["caption"].startswith("episode 0")
    assert len(histograms) >= 1 and histograms["size"].eq(256).all()


@pytest.mark.timeout(120)
def test_a_second_demo_run_differs_and_offers_the_comparison(runner: CliRunner, tmp_path: Path) -> None:
    """Demo runs into one store get seeds of their own; the second prints a compare link with both runs."""
    data_dir = tmp_path / "demo"
    args = ["demo", "--episodes", "1", "--data-dir", str(data_dir), "--port", "0"]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "compare " not in first.stdout
    with DatabaseManager(data_dir / "monitoring.db") as db:
        newer, older = (run["run_id"] for run in db.get_training_runs())
        frame = db.get_runs_metrics([older, newer], ["loss"])
    assert f"/#/compare?runs={newer},{older}" in second.stdout
    losses = {run: list(group["value"]) for run, group in frame.groupby("run_id")}
    assert losses[older] != losses[newer]


def test_demo_refuses_zero_episodes(runner: CliRunner, tmp_path: Path) -> None:
    """demo --episodes 0 is a usage error and creates no store."""
    data_dir = tmp_path / "demo"

    result = runner.invoke(app, ["demo", "--episodes", "0", "--data-dir", str(data_dir), "--port", "0"])

    assert result.exit_code == 2
    assert "--episodes" in result.output
    assert not (data_dir / "monitoring.db").exists()
