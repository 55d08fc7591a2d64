"""``runwatch export`` of a store whose metrics are not in chunks names the schema version and what to do."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from runwatch import DatabaseManager

from ._helpers import Store, assert_one_line_error, invoke


def test_export_of_a_store_stepped_down_to_schema_9_names_the_version(
    runner: CliRunner, store: Store, tmp_path: Path
) -> None:
    """A store at schema 9 (one row per call) is refused naming version 10 and `runwatch migrate`, writing nothing."""
    DatabaseManager(store.path).migrate_schema(9)
    result = invoke(runner, "export", store.alpha, "-o", str(tmp_path / "out"), "--db", str(store.path))
    line = assert_one_line_error(result, mentions="schema version 9")
    assert "version 10" in line and "runwatch migrate" in line
    assert not list((tmp_path / "out").glob("*.zip"))
