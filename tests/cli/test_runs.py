"""Tests of ``runwatch runs`` and ``runwatch show`` (runwatch.cli._runs) on a store written by a real monitor."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from runwatch import DatabaseManager, MonitorConfig, WebMonitor

from ._helpers import Store, assert_one_line_error, invoke


def test_runs_prints_a_table_of_every_run_with_its_status(runner: CliRunner, template: Store) -> None:
    """runs lists each run id with its kind and status in a table."""
    result = invoke(runner, "runs", "--db", template.path)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    alpha = next(line for line in lines if "alpha" in line)
    beta = next(line for line in lines if "beta" in line)
    assert "training" in alpha and "completed" in alpha and "2.5" in alpha
    assert "failed" in beta
    assert lines.index(beta) < lines.index(alpha)  # newest first


def test_runs_json_parses_and_matches_the_store(runner: CliRunner, template: Store) -> None:
    """runs --json prints a JSON array with the DatabaseManager's fields and ISO times."""
    result = invoke(runner, "runs", "--db", template.path, "--json")

    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.stdout)
    assert [row["run_id"] for row in rows] == ["beta", "alpha"]
    alpha = rows[1]
    assert (alpha["status"], alpha["kind"], alpha["final_reward"], alpha["total_episodes"]) == (
        "completed",
        "training",
        2.5,
        1,
    )
    assert datetime.fromisoformat(alpha["start_time"]).tzinfo is not None


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(["--status", "failed"], ["beta"], id="status"),
        pytest.param(["--kind", "training"], ["beta", "alpha"], id="kind"),
        pytest.param(["--kind", "session"], [], id="kind-none"),
        pytest.param(["--limit", "1"], ["beta"], id="limit"),
    ],
)
def test_runs_filters(runner: CliRunner, template: Store, options: list[str], expected: list[str]) -> None:
    """--status, --kind and --limit narrow the list."""
    result = invoke(runner, "runs", "--db", template.path, "--json", *options)

    assert result.exit_code == 0, result.output
    assert [row["run_id"] for row in orjson.loads(result.stdout)] == expected


def test_runs_reads_the_store_named_by_runwatch_db(
    runner: CliRunner, template: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --db, the RUNWATCH_DB environment variable names the store."""
    monkeypatch.setenv("RUNWATCH_DB", str(template.path))

    result = invoke(runner, "runs", "--json")

    assert result.exit_code == 0, result.output
    assert len(orjson.loads(result.stdout)) == 2


def test_runs_on_a_missing_store_fails_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """runs on a path with no database exits 1 with one line naming the path, and creates nothing."""
    path = tmp_path / "absent.db"

    result = invoke(runner, "runs", "--db", path)

    assert_one_line_error(result, code=1, mentions="absent.db")
    assert not path.exists()


def test_runs_with_an_unknown_status_fails_in_one_line(runner: CliRunner, template: Store) -> None:
    """An unknown --status is a bad argument: exit 2 with one line listing the statuses."""
    result = invoke(runner, "runs", "--db", template.path, "--status", "sleeping")

    assert_one_line_error(result, code=2, mentions="completed")


def test_show_prints_the_summary_and_a_table_of_metrics(runner: CliRunner, template: Store) -> None:
    """show prints status, config, event counts and one table row per metric."""
    result = invoke(runner, "show", "alpha", "--db", template.path)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "completed" in out and '{"lr":0.01,"layers":[64,64]}' in out
    assert "checkpoint_saved 1" in out
    for name in ("loss", "accuracy", "step", "reward", "episode/total_reward"):
        assert any(line.split()[:1] == [name] or f" {name} " in line for line in out.splitlines()), name
    loss = next(line for line in out.splitlines() if line.strip("│ ").startswith("loss "))
    assert loss.split("│")[2].strip() == "4"  # count, NaN included


def test_show_json_is_the_run_summary(runner: CliRunner, template: Store) -> None:
    """show --json prints the DatabaseManager summary, with NaN as null and ±Inf as "Infinity"."""
    result = invoke(runner, "show", "alpha", "--db", template.path, "--json")

    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    with DatabaseManager(template.path) as db:
        expected = db.get_run_summary("alpha")
    assert summary["config"] == expected["config"] == {"lr": 0.01, "layers": [64, 64]}
    assert summary["event_counts"] == expected["event_counts"]
    assert summary["metrics"]["loss"]["count"] == 4 and summary["metrics"]["loss"]["nan_count"] == 1
    assert summary["metrics"]["loss"]["max"] == "Infinity"
    assert summary["metrics"]["loss"]["mean"] == "Infinity"


def test_show_an_unknown_run_fails_in_one_line(runner: CliRunner, template: Store) -> None:
    """show with a run id the store does not have exits 1 with one line naming it."""
    result = invoke(runner, "show", "nope", "--db", template.path)

    assert_one_line_error(result, code=1, mentions="'nope'")


def test_show_takes_the_start_of_a_run_id(runner: CliRunner, template: Store) -> None:
    """show with the start of exactly one run's id shows that run."""
    result = invoke(runner, "show", "alp", "--db", template.path, "--json")

    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["run_id"] == "alpha"


def test_show_suggests_close_run_ids_for_a_near_miss(runner: CliRunner, template: Store) -> None:
    """A mistyped run id fails in one line that suggests the close one."""
    result = invoke(runner, "show", "alpah", "--db", template.path)

    assert_one_line_error(result, code=1, mentions="did you mean 'alpha'?")


def test_show_with_a_prefix_of_several_runs_lists_them(runner: CliRunner, tmp_path: Path) -> None:
    """A prefix that several run ids start with fails in one line listing them."""
    path = tmp_path / "several.db"
    with WebMonitor(MonitorConfig(db_path=str(path), data_dir=str(tmp_path / "data"), web_port=0)) as monitor:
        for run_id in ("exp-1", "exp-2"):
            monitor.start_training(run_id=run_id)
            monitor.stop_training()

    result = invoke(runner, "show", "exp-", "--db", path)

    assert_one_line_error(result, code=1, mentions="2 runs start with 'exp-': exp-1, exp-2")
