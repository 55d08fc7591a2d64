"""Tests for the operating commands of ``runwatch`` (runwatch.cli) and the run importer (runwatch.store.importer).

Every command runs through typer's CliRunner against a store written by a
real WebMonitor; ``tail`` also runs as a subprocess against a live monitor.
"""

from __future__ import annotations

import io
import math
import os
import queue
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from runwatch import DatabaseManager, MonitorConfig, WebMonitor
from runwatch.cli import app, parse_cutoff
from runwatch.store.schema import SCHEMA_VERSION

# Guards every wait on another process or thread; nothing here legitimately takes this long.
TIMEOUT = 30
TOKEN = "cli-ops-token"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the variables the commands and MonitorConfig read, so the host's settings cannot leak in."""
    for name in list(os.environ):
        if name.startswith("MONITOR_") or name in ("RUNWATCH_TOKEN", "RUNWATCH_DB", "RUNWATCH_URL"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


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


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The module's store, written once; tests that change a store use ``store`` (a copy)."""
    path = tmp_path_factory.mktemp("template") / "monitoring.db"
    write_runs(path)
    return Store(path)


@pytest.fixture
def store(template: Store, tmp_path: Path) -> Store:
    """A private copy of the template store (SQLite's backup API copies it consistently)."""
    target = tmp_path / "store" / "monitoring.db"
    target.parent.mkdir()
    source, destination = sqlite3.connect(template.path), sqlite3.connect(target)
    try:
        source.backup(destination)
    finally:
        source.close()
        destination.close()
    return Store(target)


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


# -- runs -----------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        pytest.param(["runs", "--kind", "robot"], "--kind: must be one of training, session", id="runs-kind"),
        pytest.param(["alerts", "--state", "bogus"], "--state: must be one of pending, firing, resolved", id="state"),
        pytest.param(["show", ""], "RUN", id="show-empty-run"),
        pytest.param(["cleanup", "--older-than", "soon"], "--older-than", id="cleanup-cutoff"),
        pytest.param(["migrate", "--to", "99"], "--to", id="migrate-version"),
        pytest.param(["tail", "-n", "-1"], "-n", id="tail-lines"),
    ],
)
def test_every_bad_argument_exits_2(runner: CliRunner, template: Store, args: list[str], mentions: str) -> None:
    """A bad argument to any command exits 2 with one line naming it, never Python's None or a traceback."""
    result = invoke(runner, *args, "--db", template.path) if args[0] != "tail" else invoke(runner, *args)

    assert result.exit_code == 2, result.output
    assert mentions in result.stderr
    assert "None" not in result.stderr and "Traceback" not in result.output


def test_every_help_shows_its_defaults_and_no_bool_metavar(runner: CliRunner) -> None:
    """Each command's --help keeps bracketed defaults verbatim and shows no <bool> placeholder on flags."""
    from typer.main import get_command

    from runwatch.cli import app as cli_app

    commands = sorted(get_command(cli_app).commands)  # type: ignore[attr-defined]
    assert {"serve", "runs", "alerts", "show", "tail"} <= set(commands)
    for command in commands:
        result = invoke(runner, command, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.stdout, command
    serve = " ".join(invoke(runner, "serve", "--help").stdout.split())  # help wraps at the terminal's width
    assert "[default: 127.0.0.1]" in serve and "[default: 8080]" in serve and "[pipeline]" in serve
    assert "[default: pending and firing]" in " ".join(invoke(runner, "alerts", "--help").stdout.split())


def test_version_prints_the_package_version(runner: CliRunner) -> None:
    """runwatch --version prints the version and exits 0."""
    import runwatch

    result = invoke(runner, "--version")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"runwatch {runwatch.__version__}"


# -- show ---------------------------------------------------------------------------------------


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


# -- export and import ----------------------------------------------------------------------------


def read_archive(path: Path) -> dict[str, Any]:
    """The parsed content of an export archive."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        lines = {
            name: [orjson.loads(line) for line in archive.read(name).splitlines() if line]
            for name in (
                "metrics_long.jsonl",
                "metric_stats.jsonl",
                "metric_rollups.jsonl",
                "events.jsonl",
                "state_history.jsonl",
            )
        }
        return {
            "names": names,
            "run": orjson.loads(archive.read("run.json")),
            "frame": pd.read_parquet(io.BytesIO(archive.read("metrics.parquet"))),
            **lines,
        }


def comparable(content: dict[str, Any]) -> dict[str, Any]:
    """An archive's data without what legitimately differs between stores: ids, row numbers, owner, run id."""

    def without(records: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
        return [{key: value for key, value in record.items() if key not in keys} for record in records]

    return {
        "run": {key: value for key, value in content["run"].items() if key not in ("owner", "run_id")},
        "metrics": without(content["metrics_long.jsonl"], "row"),
        "stats": content["metric_stats.jsonl"],
        "rollups": without(content["metric_rollups.jsonl"], "first_row", "last_row"),
        "events": without(content["events.jsonl"], "id"),
        "state": without(content["state_history.jsonl"], "id"),
    }


def export(runner: CliRunner, db: Path, run_id: str, directory: Path) -> Path:
    """``runwatch export`` → the archive's path."""
    result = invoke(runner, "export", run_id, "--db", db, "-o", directory)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.parent == directory and path.suffix == ".zip"
    return path


def test_export_writes_an_archive_with_every_part(runner: CliRunner, template: Store, tmp_path: Path) -> None:
    """export prints the path of a zip holding run.json, both metric forms, events and state history."""
    content = read_archive(export(runner, template.path, "alpha", tmp_path / "out"))

    assert {"run.json", "metrics_long.jsonl", "metrics.parquet", "events.jsonl", "state_history.jsonl"} <= content[
        "names"
    ]
    assert content["run"]["format"] == "runwatch-export/1"
    assert content["run"]["metrics"]["loss"]["max"] == "Infinity"  # not null: the wire form of docs/protocol.md
    assert [row["values"] for row in content["metrics_long.jsonl"][:3]] == [
        {"loss": 1.0, "accuracy": 0.25},
        {"loss": None, "accuracy": 0.5},
        {"loss": "Infinity", "step": 3.0},
    ]
    assert content["metrics_long.jsonl"][4]["tags"] == {"action": "left"}


def test_export_import_export_gives_the_same_data(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """A run exported, imported into a new store and under a new id, and exported again carries the same data."""
    first = read_archive(export(runner, store.path, "alpha", tmp_path / "first"))
    archive = next((tmp_path / "first").glob("*.zip"))
    other = tmp_path / "other" / "new.db"

    imported = invoke(runner, "import", archive, "--db", other)
    renamed = invoke(runner, "import", archive, "--db", store.path, "--rename", "alpha-copy")

    assert imported.exit_code == 0, imported.output
    assert imported.stdout.strip() == f"imported alpha into {other}"
    assert renamed.exit_code == 0, renamed.output
    again = read_archive(export(runner, other, "alpha", tmp_path / "again"))
    copy = read_archive(export(runner, store.path, "alpha-copy", tmp_path / "copy"))
    for content in (again, copy):
        assert comparable(content) == comparable(first)
        pd.testing.assert_frame_equal(content["frame"], first["frame"])
    assert copy["run"]["run_id"] == "alpha-copy" and again["run"]["run_id"] == "alpha"


def age_first_metric_rows(path: Path, run_id: str, rows: int, days: float) -> None:
    """Move the first ``rows`` metric rows of a run ``days`` into the past."""
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE metric_rows SET ts = ts - ?1 WHERE run = (SELECT id FROM runs WHERE run_id = ?2) AND row IN"
            " (SELECT row FROM metric_rows WHERE run = (SELECT id FROM runs WHERE run_id = ?2) ORDER BY row LIMIT ?3)",
            (days * 86400, run_id, rows),
        )
    connection.close()


def test_a_downsampled_run_round_trips_with_its_rollups(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """A run whose oldest rows became rollups imports with the same rows, rollups and exact statistics."""
    age_first_metric_rows(store.path, "alpha", rows=3, days=40)
    with DatabaseManager(store.path) as db:
        assert db.downsample_metrics(datetime.now(UTC) - timedelta(days=30), bucket_rows=2)["removed_rows"] == 2
    archive = export(runner, store.path, "alpha", tmp_path / "first")
    first = read_archive(archive)
    other = tmp_path / "other.db"
    # A first copy takes the target's first row numbers, so the second one is renumbered past it.
    assert invoke(runner, "import", archive, "--db", other, "--rename", "earlier").exit_code == 0
    assert invoke(runner, "import", archive, "--db", other).exit_code == 0

    again = read_archive(export(runner, other, "alpha", tmp_path / "again"))

    assert first["metric_rollups.jsonl"], "nothing was downsampled"
    assert comparable(again) == comparable(first)
    with DatabaseManager(store.path) as source, DatabaseManager(other) as target:
        assert target.get_run_summary("alpha")["metrics"] == source.get_run_summary("alpha")["metrics"]
        pd.testing.assert_frame_equal(target.get_run_metrics("alpha"), source.get_run_metrics("alpha"))
        rollups = target.get_metric_rollups("alpha")
        pd.testing.assert_frame_equal(
            rollups.drop(columns=["first_row", "last_row"]),
            source.get_metric_rollups("alpha").drop(columns=["first_row", "last_row"]),
        )
    # The rollups still come before the rows that were kept, in the target store's numbering.
    with sqlite3.connect(other) as connection:
        (first_kept,) = connection.execute(
            "SELECT min(row) FROM metric_rows WHERE run = (SELECT id FROM runs WHERE run_id = 'alpha')"
        ).fetchone()
    connection.close()
    assert (rollups["last_row"] < first_kept).all()


def test_import_refuses_a_run_id_that_exists(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """Importing a run into a store that has its id exits 1 with one line, and writes nothing."""
    archive = export(runner, store.path, "alpha", tmp_path)

    result = invoke(runner, "import", archive, "--db", store.path)

    assert_one_line_error(result, code=1, mentions="'alpha' already exists")
    assert run_ids(store.path) == ["beta", "alpha"]


def rewrite_archive(
    source: Path, target: Path, *, drop: tuple[str, ...] = (), add: dict[str, bytes] | None = None
) -> Path:
    """A copy of an archive without the members in ``drop`` and with the members in ``add`` (replacing)."""
    add = add or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in drop and name not in add:
                new.writestr(name, old.read(name))
        for name, data in add.items():
            new.writestr(name, data)
    return target


@pytest.mark.parametrize(
    ("damage", "mentions"),
    [
        pytest.param("not-a-zip", "not a zip archive", id="not-a-zip"),
        pytest.param("no-run-json", "no run.json", id="no-run-json"),
        pytest.param("foreign-format", "format", id="foreign-format"),
        pytest.param("path-traversal", "unsafe member name '../evil'", id="path-traversal"),
        pytest.param("absolute-path", "unsafe member name", id="absolute-path"),
        pytest.param("bad-event", "events.jsonl line 2: level", id="bad-event"),
        pytest.param("truncated-events", "events.jsonl holds", id="truncated-events"),
        pytest.param("bad-metric-line", "metrics_long.jsonl line 1", id="bad-metric-line"),
        pytest.param("truncated-metrics", "do not add up", id="truncated-metrics"),
    ],
)
def test_import_refuses_a_damaged_archive_and_writes_nothing(
    runner: CliRunner, store: Store, tmp_path: Path, damage: str, mentions: str
) -> None:
    """An archive that is not a valid runwatch export is refused in one line; the store keeps its runs only."""
    good = export(runner, store.path, "alpha", tmp_path / "good")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as archive:
        run = orjson.loads(archive.read("run.json"))
        events = archive.read("events.jsonl").splitlines(keepends=True)
    if damage == "not-a-zip":
        bad.write_bytes(b"PK\x03\x04 but not really a zip")
    elif damage == "no-run-json":
        rewrite_archive(good, bad, drop=("run.json",))
    elif damage == "foreign-format":
        rewrite_archive(good, bad, add={"run.json": orjson.dumps({**run, "format": "other/9"})})
    elif damage == "path-traversal":
        rewrite_archive(good, bad, add={"../evil": b"x"})
    elif damage == "absolute-path":
        rewrite_archive(good, bad, add={"/etc/evil": b"x"})
    elif damage == "bad-event":
        event = orjson.loads(events[1])
        events[1] = orjson.dumps({**event, "level": "loud"}) + b"\n"
        rewrite_archive(good, bad, add={"events.jsonl": b"".join(events)})
    elif damage == "truncated-events":
        rewrite_archive(good, bad, add={"events.jsonl": b"".join(events[:-1])})
    elif damage == "truncated-metrics":
        with zipfile.ZipFile(good) as archive:
            rows = archive.read("metrics_long.jsonl").splitlines(keepends=True)
        rewrite_archive(good, bad, add={"metrics_long.jsonl": b"".join(rows[:-1])})
    elif damage == "bad-metric-line":
        rewrite_archive(good, bad, add={"metrics_long.jsonl": b'{"row": 0, "ts": -5, "values": {"x": 1}}\n'})

    result = invoke(runner, "import", bad, "--db", store.path, "--rename", "damaged")

    assert_one_line_error(result, code=1, mentions=mentions)
    assert run_ids(store.path) == ["beta", "alpha"]
    with sqlite3.connect(store.path) as connection:  # nothing of the rolled-back transaction is left
        assert connection.execute("SELECT count(*) FROM runs").fetchone() == (2,)


def test_import_of_a_missing_file_fails_in_one_line(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """import of a path that does not exist exits 1 with one line naming it."""
    result = invoke(runner, "import", tmp_path / "absent.zip", "--db", store.path)

    assert_one_line_error(result, code=1, mentions="absent.zip")


def test_import_without_the_long_form_reads_nan_cells_as_not_logged(
    runner: CliRunner, template: Store, tmp_path: Path
) -> None:
    """An archive with only the wide metrics table imports every call, reading a NaN cell as not logged."""
    archive = rewrite_archive(
        export(runner, template.path, "alpha", tmp_path),
        tmp_path / "wide.zip",
        drop=("metrics_long.jsonl", "metric_stats.jsonl", "metric_rollups.jsonl"),
    )
    target = tmp_path / "wide.db"

    result = invoke(runner, "import", archive, "--db", target)

    assert result.exit_code == 0, result.output
    with DatabaseManager(target) as db, DatabaseManager(template.path) as source:
        frame, original = db.get_run_metrics("alpha"), source.get_run_metrics("alpha")
        stats = db.get_run_summary("alpha")["metrics"]
    pd.testing.assert_frame_equal(frame, original)
    assert (stats["loss"]["count"], stats["loss"]["nan_count"]) == (3, 0)  # the logged NaN is lost


def test_import_waits_for_a_locked_store_then_fails_in_one_line(
    runner: CliRunner, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, import gives up after its busy timeout with one line."""
    import runwatch.store.importer as importer

    archive = export(runner, store.path, "alpha", tmp_path)
    monkeypatch.setattr(importer, "_BUSY_TIMEOUT_SECONDS", 0.05)
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = invoke(runner, "import", archive, "--db", store.path, "--rename", "late")
    finally:
        holder.close()

    assert_one_line_error(result, code=1, mentions="locked")
    assert run_ids(store.path) == ["beta", "alpha"]


def test_optimize_on_a_locked_store_fails_in_one_line(
    runner: CliRunner, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, optimize gives up after the busy timeout in one line."""
    import runwatch.store.manager as manager

    # migrate and cleanup are not tested so: their lock waits (5 s in schema.apply_pragmas, 30 s per
    # transaction in lifecycle.LOCK_WAIT_SECONDS) are fixed and too slow for this suite.
    monkeypatch.setattr(manager, "_BUSY_TIMEOUT_SECONDS", 0.05)
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = invoke(runner, "optimize", "--db", store.path)
    finally:
        holder.close()

    assert_one_line_error(result, code=1, mentions="locked")
    assert run_ids(store.path) == ["beta", "alpha"]


# -- backup and restore -----------------------------------------------------------------------


def test_backup_then_restore_brings_the_store_back(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """backup writes a file; after a change, restore --yes returns the store to the backup and keeps a copy."""
    backups = tmp_path / "backups"
    result = invoke(runner, "backup", backups, "--tag", "before-import", "--db", store.path)
    assert result.exit_code == 0, result.output
    backup = Path(result.stdout.strip())
    assert backup.is_file() and backup.parent == backups and "before-import" in backup.name
    archive = export(runner, store.path, "alpha", tmp_path / "exports")
    assert invoke(runner, "import", archive, "--rename", "extra", "--db", store.path).exit_code == 0

    restored = invoke(runner, "restore", backup, "--yes", "--db", store.path)

    assert restored.exit_code == 0, restored.output
    assert run_ids(store.path) == ["beta", "alpha"]
    kept = Path(restored.stdout.splitlines()[-1].rsplit(" ", 1)[1])
    assert "extra" in run_ids(kept)


def test_restore_asks_first_and_a_no_changes_nothing(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """Without --yes, restore asks; answering no exits non-zero and leaves the store as it was."""
    backup = Path(invoke(runner, "backup", tmp_path / "b", "--db", store.path).stdout.strip())
    archive = export(runner, store.path, "alpha", tmp_path / "exports")
    assert invoke(runner, "import", archive, "--rename", "extra", "--db", store.path).exit_code == 0

    result = invoke(runner, "restore", backup, "--db", store.path, input="n\n")

    assert result.exit_code != 0
    assert "Replace" in result.stderr
    assert "extra" in run_ids(store.path)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a database at all" * 100, id="garbage"),
        pytest.param(b"SQLite format 3\x00" + b"\x00" * 100, id="truncated-sqlite"),
    ],
)
def test_restore_of_a_corrupt_backup_fails_in_one_line(
    runner: CliRunner, store: Store, tmp_path: Path, content: bytes
) -> None:
    """A file that is not a valid backup is refused with one line and the store stays as it was."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)

    result = invoke(runner, "restore", bad, "--yes", "--db", store.path)

    assert_one_line_error(result, code=1, mentions="bad.db")
    assert run_ids(store.path) == ["beta", "alpha"]


def test_restore_into_a_path_without_a_store_creates_it(runner: CliRunner, template: Store, tmp_path: Path) -> None:
    """restore to a --db that does not exist yet writes the backup's runs there and reports no kept copy."""
    backup = Path(invoke(runner, "backup", tmp_path / "b", "--db", template.path).stdout.strip())
    target = tmp_path / "fresh" / "monitoring.db"

    result = invoke(runner, "restore", backup, "--yes", "--db", target)

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"restored {target} from {backup}"
    assert run_ids(target) == ["beta", "alpha"]


def test_restore_refuses_while_the_store_is_in_use(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """restore refuses in one line while another connection has the store open, and changes nothing."""
    backup = Path(invoke(runner, "backup", tmp_path / "b", "--db", store.path).stdout.strip())
    archive = export(runner, store.path, "alpha", tmp_path / "exports")
    assert invoke(runner, "import", archive, "--rename", "extra", "--db", store.path).exit_code == 0
    reader = sqlite3.connect(store.path)
    try:
        reader.execute("SELECT count(*) FROM runs").fetchone()
        result = invoke(runner, "restore", backup, "--yes", "--db", store.path)
    finally:
        reader.close()

    assert_one_line_error(result, code=1)
    assert "extra" in run_ids(store.path)


def test_restore_of_a_missing_file_fails_in_one_line(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """restore of a path that does not exist exits 1 with one line, before asking anything."""
    result = invoke(runner, "restore", tmp_path / "absent.db", "--db", store.path)

    assert_one_line_error(result, code=1, mentions="absent.db")


# -- cleanup --------------------------------------------------------------------------------


def age_run(path: Path, run_id: str, days: float) -> None:
    """Move a run and everything it recorded ``days`` into the past."""
    shift = days * 86400
    with sqlite3.connect(path) as connection:
        (run,) = connection.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        connection.execute(
            "UPDATE runs SET start_time = start_time - ?1, end_time = end_time - ?1, updated_at = updated_at - ?1,"
            " last_heartbeat = last_heartbeat - ?1 WHERE id = ?2",
            (shift, run),
        )
        for table in ("metric_rows", "events", "state_history"):
            connection.execute(f"UPDATE {table} SET ts = ts - ? WHERE run = ?", (shift, run))
    connection.close()


def test_cleanup_dry_run_counts_and_cleanup_deletes_old_runs(runner: CliRunner, store: Store) -> None:
    """cleanup --dry-run reports the runs older than the cutoff and keeps them; without it they are deleted."""
    age_run(store.path, "beta", days=40)

    with sqlite3.connect(store.path) as connection:  # the run and each of its rows count as one record
        records = 1 + sum(
            connection.execute(
                f"SELECT count(*) FROM {table} WHERE run = (SELECT id FROM runs WHERE run_id = 'beta')"
            ).fetchone()[0]
            for table in ("metric_rows", "metric_stats", "events", "state_history", "snapshots")
        )
    connection.close()

    dry = invoke(runner, "cleanup", "--older-than", "30d", "--dry-run", "--db", store.path)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith(f"would delete {records} record(s) (runs and their rows) of runs last active before ")
    assert run_ids(store.path) == ["alpha", "beta"]

    real = invoke(runner, "cleanup", "--older-than", "30d", "--db", store.path)

    assert real.exit_code == 0, real.output
    assert real.stdout.startswith(f"deleted {records} record(s)")
    assert run_ids(store.path) == ["alpha"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("30x", id="unknown-unit"),
        pytest.param("thirty days", id="words"),
        pytest.param("0d", id="zero"),
        pytest.param("", id="empty"),
        pytest.param("2999-01-01", id="future-date"),
    ],
)
def test_cleanup_with_a_bad_cutoff_fails_in_one_line(runner: CliRunner, store: Store, value: str) -> None:
    """A cutoff that is neither a duration nor a past ISO date is a bad argument (exit 2, one line); nothing goes."""
    result = invoke(runner, "cleanup", "--older-than", value, "--db", store.path)

    assert_one_line_error(result, code=2, mentions="--older-than")
    assert run_ids(store.path) == ["beta", "alpha"]


NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30d", NOW - timedelta(days=30), id="days"),
        pytest.param("12h", NOW - timedelta(hours=12), id="hours"),
        pytest.param("90m", NOW - timedelta(minutes=90), id="minutes"),
        pytest.param("2w", NOW - timedelta(weeks=2), id="weeks"),
        pytest.param("45s", NOW - timedelta(seconds=45), id="seconds"),
        pytest.param("1d12h", NOW - timedelta(hours=36), id="combined"),
        pytest.param(" 7D ", NOW - timedelta(days=7), id="spaces-and-case"),
        pytest.param("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC), id="iso-date-is-utc"),
        pytest.param("2026-01-31T10:00:00+02:00", datetime(2026, 1, 31, 8, tzinfo=UTC), id="iso-with-offset"),
    ],
)
def test_parse_cutoff_reads_durations_and_iso_dates(text: str, expected: datetime) -> None:
    """parse_cutoff turns a duration into now minus it, and reads ISO dates (naive as UTC)."""
    assert parse_cutoff(text, NOW) == expected


# -- optimize, migrate, db-info -------------------------------------------------------------------


def test_optimize_succeeds_and_keeps_the_data(runner: CliRunner, store: Store) -> None:
    """optimize exits 0, prints its report, and every run is still readable."""
    result = invoke(runner, "optimize", "--db", store.path)

    assert result.exit_code == 0, result.output
    assert "optimized" in result.stdout
    assert run_ids(store.path) == ["beta", "alpha"]


def test_migrate_down_and_up_again(runner: CliRunner, store: Store) -> None:
    """migrate --to 1 --yes steps down, migrate steps back up, and a second migrate has nothing to do."""
    down = invoke(runner, "migrate", "--to", "1", "--yes", "--db", store.path)
    up = invoke(runner, "migrate", "--db", store.path)
    again = invoke(runner, "migrate", "--db", store.path)

    assert down.exit_code == 0 and down.stdout.strip().endswith(f"schema version {SCHEMA_VERSION} -> 1"), down.output
    assert up.exit_code == 0 and up.stdout.strip().endswith(f"schema version 1 -> {SCHEMA_VERSION}"), up.output
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert run_ids(store.path) == ["beta", "alpha"]


def test_migrate_down_asks_first(runner: CliRunner, store: Store) -> None:
    """Migrating down without --yes asks; answering no leaves the schema version unchanged."""
    result = invoke(runner, "migrate", "--to", "0", "--db", store.path, input="n\n")

    assert result.exit_code != 0
    assert "drops" in result.stderr
    with DatabaseManager(store.path) as db:
        assert db.get_schema_version() == SCHEMA_VERSION


def test_migrate_to_an_unknown_version_fails_in_one_line(runner: CliRunner, store: Store) -> None:
    """--to beyond the newest schema version is a bad argument (exit 2, one line)."""
    result = invoke(runner, "migrate", "--to", str(SCHEMA_VERSION + 1), "--db", store.path)

    assert_one_line_error(result, code=2, mentions="--to")


def test_db_info_prints_a_table_and_json(runner: CliRunner, template: Store) -> None:
    """db-info prints the store's facts; --json parses and holds the schema version and rows per table."""
    table = invoke(runner, "db-info", "--db", template.path)
    as_json = invoke(runner, "db-info", "--db", template.path, "--json")

    assert table.exit_code == 0, table.output
    assert str(template.path) in table.stdout
    assert as_json.exit_code == 0, as_json.output
    info = orjson.loads(as_json.stdout)
    text = orjson.dumps(info).decode()
    assert str(SCHEMA_VERSION) in text and "runs" in text


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["db-info"], id="db-info"),
        pytest.param(["optimize"], id="optimize"),
        pytest.param(["migrate"], id="migrate"),
        pytest.param(["cleanup", "--older-than", "1d"], id="cleanup"),
        pytest.param(["backup", "backups"], id="backup"),
        pytest.param(["export", "alpha"], id="export"),
        pytest.param(["show", "alpha"], id="show"),
    ],
)
def test_store_commands_on_a_missing_store_fail_in_one_line(
    runner: CliRunner, tmp_path: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every store command pointed at a missing database exits 1 with one line and creates no database."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "absent.db"

    result = invoke(runner, *command, "--db", path)

    assert_one_line_error(result, code=1, mentions="absent.db")
    assert not path.exists()


def test_store_commands_on_a_file_that_is_not_a_database_fail_in_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """A --db that is some other file gives one line, not a traceback."""
    path = tmp_path / "notes.txt"
    path.write_text("hello " * 1000)

    for command in (["runs"], ["show", "alpha"], ["db-info"], ["export", "alpha", "-o", str(tmp_path)]):
        assert_one_line_error(invoke(runner, *command, "--db", path), code=1)


# -- tail -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """A monitor serving its web app with a token on a free loopback port (each test uses its own run)."""
    directory = tmp_path_factory.mktemp("live")
    config = MonitorConfig(
        db_path=str(directory / "live.db"), data_dir=str(directory / "data"), web_port=0, web_token=TOKEN
    )
    with WebMonitor(config) as monitor:
        assert monitor.web_url is not None
        yield monitor


class Tail:
    """``runwatch tail`` in a subprocess, with its output lines readable as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={key: value for key, value in os.environ.items() if not key.startswith("RUNWATCH_")},
        )
        self.stdout: queue.Queue[bytes] = queue.Queue()
        self.stderr: queue.Queue[bytes] = queue.Queue()
        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[bytes]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(b"")  # end of stream

    def wait_for(self, lines: queue.Queue[bytes], text: str) -> list[bytes]:
        """Lines up to the first containing ``text`` (fails at end of stream or after TIMEOUT)."""
        seen: list[bytes] = []
        while True:
            line = lines.get(timeout=TIMEOUT)
            assert line, f"stream ended before {text!r}: {seen!r}"
            seen.append(line)
            if text.encode() in line:
                return seen

    def rest(self, lines: queue.Queue[bytes]) -> list[bytes]:
        """Every remaining line, once the process has exited."""
        out: list[bytes] = []
        while (line := lines.get(timeout=TIMEOUT)) != b"":
            out.append(line)
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    """Tail processes started by a test; any still running at the end are killed."""
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


@pytest.mark.timeout(60)
def test_tail_json_prints_events_emitted_after_it_subscribed(live: WebMonitor, tails: list[Tail]) -> None:
    """tail --json --count 3 prints, as JSON lines, the first three matching events emitted after it subscribed."""
    run_id = live.start_training(run_id="tail-json")
    try:
        tail = Tail(
            "--url",
            live.web_url,
            "--token",
            TOKEN,
            "--run",
            run_id,
            "--kinds",
            "metric",
            "--metrics",
            "loss",
            "--count",
            "3",
            "--json",  # (the system sampler's readings of the run are metrics too)
        )
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        for value in (1.0, math.nan, 3.0):
            live.update_metrics({"loss": value})
        assert tail.process.wait(timeout=TIMEOUT) == 0
        events = [orjson.loads(line) for line in tail.rest(tail.stdout)]
    finally:
        live.stop_training()

    assert [event["kind"] for event in events] == ["metric"] * 3
    assert [event["run_id"] for event in events] == [run_id] * 3
    assert [event["values"]["loss"] for event in events] == [1.0, None, 3.0]


@pytest.mark.timeout(60)
def test_tail_n_prints_the_latest_events_then_the_live_ones_without_a_gap(live: WebMonitor, tails: list[Tail]) -> None:
    """tail -n 3 first prints the last three matching events the server kept, then live ones, none twice."""
    run_id = live.start_training(run_id="tail-replay")
    try:
        for value in range(5):
            live.update_metrics({"loss": float(value)})
        live.record_event("checkpoint_saved", {"path": "c.pt"})  # another kind: filtered out of the replay
        tail = Tail(
            "--url",
            live.web_url,
            "--token",
            TOKEN,
            "--run",
            run_id,
            "--kinds",
            "metric",
            "--metrics",
            "loss",  # the system sampler's readings of the run are metrics too
            "-n",
            "3",
            "--count",
            "5",
            "--json",
        )
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        for value in (5.0, 6.0):
            live.update_metrics({"loss": value})
        assert tail.process.wait(timeout=TIMEOUT) == 0
        events = [orjson.loads(line) for line in tail.rest(tail.stdout)]
    finally:
        live.stop_training()

    assert [event["values"]["loss"] for event in events] == [2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.timeout(60)
def test_tail_prints_one_line_per_event_and_stops_on_ctrl_c(live: WebMonitor, tails: list[Tail]) -> None:
    """Without --json each event is one readable line; SIGINT ends tail with status 0 and no traceback."""
    run_id = live.start_training(run_id="tail-pretty")
    try:
        tail = Tail("--url", live.web_url, "--token", TOKEN, "--run", run_id, "--kinds", "metric,log")
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        live.update_metrics({"loss": 0.25, "accuracy": 0.5})
        live.record_event("checkpoint_saved", {"path": "b.pt"})
        lines = tail.wait_for(tail.stdout, "checkpoint_saved")
        tail.process.send_signal(signal.SIGINT)
        assert tail.process.wait(timeout=TIMEOUT) == 0
        errors = b"".join(tail.rest(tail.stderr))
    finally:
        live.stop_training()

    text = [line.decode() for line in lines]
    assert len(text) == 2
    assert f"{run_id} metric" in text[0] and "loss=0.25 accuracy=0.5" in text[0]
    assert "log" in text[1] and 'info checkpoint_saved {"path":"b.pt"}' in text[1]
    assert b"Traceback" not in errors


def test_tail_without_the_token_fails_in_one_line(runner: CliRunner, live: WebMonitor) -> None:
    """A server that requires a token refuses tail without one: exit 1 and one line that says to pass --token."""
    result = invoke(runner, "tail", "--url", live.web_url, "--count", "1")

    assert_one_line_error(result, code=1, mentions="--token")


def test_tail_to_a_closed_port_fails_in_one_line(runner: CliRunner) -> None:
    """tail to a port nobody listens on exits 1 with one line saying it cannot connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again: nothing listens there (a race with another process is harmless here).

    result = invoke(runner, "tail", "--url", f"http://127.0.0.1:{port}", "--count", "1")

    assert_one_line_error(result, code=1, mentions="cannot connect")


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        pytest.param(["--kinds", "metric,bogus"], "unknown kind 'bogus'", id="unknown-kind"),
        pytest.param(["--url", "ftp://example.org"], "--url", id="bad-scheme"),
        pytest.param(["--url", "127.0.0.1:8080"], "--url", id="no-scheme"),
    ],
)
def test_tail_with_bad_options_fails_in_one_line(runner: CliRunner, options: list[str], mentions: str) -> None:
    """Unknown kinds and unusable URLs are bad arguments (exit 2, one line), found before connecting."""
    result = invoke(runner, "tail", *options)

    assert_one_line_error(result, code=2, mentions=mentions)
