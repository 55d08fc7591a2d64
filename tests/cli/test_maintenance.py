"""Tests of the store maintenance commands (runwatch.cli._maintenance).

backup, restore, cleanup (and its cutoffs), optimize, migrate and db-info, on copies of a store written by a
real monitor.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from chunk_helpers import rows_of_run, shift_metric_times
from typer.testing import CliRunner

from runwatch import DatabaseManager
from runwatch.cli import parse_cutoff
from runwatch.store.schema import SCHEMA_VERSION

from ._helpers import Store, assert_one_line_error, export, invoke, run_ids


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
        for table in ("events", "state_history"):
            connection.execute(f"UPDATE {table} SET ts = ts - ? WHERE run = ?", (shift, run))
    connection.close()
    shift_metric_times(path, run_id, -shift)


def test_cleanup_dry_run_counts_and_cleanup_deletes_old_runs(runner: CliRunner, store: Store) -> None:
    """cleanup --dry-run reports the runs older than the cutoff and keeps them; without it they are deleted."""
    age_run(store.path, "beta", days=40)

    with sqlite3.connect(store.path) as connection:  # the run and each of its rows count as one record
        (run,) = connection.execute("SELECT id FROM runs WHERE run_id = 'beta'").fetchone()
        records = 1 + sum(
            rows_of_run(connection, table, run)
            for table in ("metric_series", "metric_chunks", "metric_stats", "events", "state_history", "snapshots")
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


def test_optimize_succeeds_and_keeps_the_data(runner: CliRunner, store: Store) -> None:
    """optimize exits 0, prints its report, and every run is still readable."""
    result = invoke(runner, "optimize", "--db", store.path)

    assert result.exit_code == 0, result.output
    assert "optimized" in result.stdout
    assert run_ids(store.path) == ["beta", "alpha"]


def test_optimize_on_a_locked_store_fails_in_one_line(
    runner: CliRunner, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, optimize gives up after the busy timeout in one line."""
    import runwatch.store.connections as connections

    # migrate and cleanup are not tested so: their lock waits (5 s in connections.apply_pragmas, 30 s per
    # transaction in lifecycle.LOCK_WAIT_SECONDS) are fixed and too slow for this suite.
    monkeypatch.setattr(connections, "BUSY_TIMEOUT_SECONDS", 0.05)
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = invoke(runner, "optimize", "--db", store.path)
    finally:
        holder.close()

    assert_one_line_error(result, code=1, mentions="locked")
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
