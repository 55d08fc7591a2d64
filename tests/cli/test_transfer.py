"""Tests of ``runwatch export`` and ``runwatch import`` (runwatch.cli._transfer) and the run importer.

The importer (runwatch.store.importer) is tested through the command: archives round-trip, damaged ones are
refused whole.
"""

from __future__ import annotations

import io
import sqlite3
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from chunk_helpers import shift_metric_times
from typer.testing import CliRunner

from runwatch import DatabaseManager

from ._helpers import Store, assert_one_line_error, export, invoke, run_ids


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


def test_a_downsampled_run_round_trips_with_its_rollups(runner: CliRunner, store: Store, tmp_path: Path) -> None:
    """A run whose oldest rows became rollups imports with the same rows, rollups and exact statistics."""
    shift_metric_times(store.path, "alpha", -40 * 86400, calls=3)
    with DatabaseManager(store.path) as db:
        assert db.downsample_metrics(datetime.now(UTC) - timedelta(days=30), bucket_rows=2)["removed_rows"] == 2
    archive = export(runner, store.path, "alpha", tmp_path / "first")
    first = read_archive(archive)
    other = tmp_path / "other.db"
    # A first copy takes the target's first call numbers, so the second one is renumbered past it.
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
    # The rollups still come before the calls that were kept, in the target store's numbering.
    kept = [row["row"] for row in again["metrics_long.jsonl"]]
    earlier = read_archive(export(runner, other, "earlier", tmp_path / "earlier"))
    assert (rollups["last_row"] < min(kept)).all()
    assert min(kept) > max(row["row"] for row in earlier["metrics_long.jsonl"])
    assert len(kept) == len(first["metrics_long.jsonl"])


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
