"""Schema version 10: a store written by schema 6 (one row per logging call) migrates into chunks and back.

``tests/data/store-v6.db.gz`` was written by runwatch's own schema-6 sink
(``tests/data/make_store_v6.py``, run against that version), and
``store-v6.expected.json.gz`` holds what that version read back from it:
per-call and per-step frames, run summaries, rollups and session pages.
After the migration, today's reads must give the same answers: values bit
for bit, steps, timestamps to the microsecond (chunks keep integer
microseconds), statistics and rollups exactly.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from runwatch.events import Metric, RunLifecycle, RunTransition
from runwatch.exceptions import StoreError
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store.chunk_schema import CHUNK_VERSION
from runwatch.store.manager import DatabaseManager
from runwatch.store.schema import SCHEMA_VERSION
from runwatch.store.sqlite import SQLiteStore

DATA = Path(__file__).parent.parent / "data"
TS = 1_700_000_000.0


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the schema-6 store."""
    target = tmp_path / "store.db"
    with gzip.open(DATA / "store-v6.db.gz", "rb") as source, target.open("wb") as out:
        shutil.copyfileobj(source, out)
    return target


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    with gzip.open(DATA / "store-v6.expected.json.gz", "rt") as source:
        loaded: dict[str, Any] = json.load(source)
    return loaded


def table_names(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def assert_frame_matches(frame: pd.DataFrame, record: dict[str, Any]) -> None:
    """A frame read today equals one schema 6 read: values bit for bit, steps, times within a microsecond."""
    assert list(frame.columns[2:]) == list(record["columns"])
    for name, hexed in record["columns"].items():
        assert [float(value).hex() for value in frame[name].tolist()] == hexed, name
    steps = [None if pd.isna(step) else int(step) for step in frame["step"]]
    assert steps == record["step"]
    nanoseconds = frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    assert np.abs(nanoseconds - np.array(record["timestamp"], dtype=np.int64)).max(initial=0) <= 1000


def test_the_old_store_is_schema_6_and_its_metrics_need_the_migration(old_store: Path) -> None:
    """Before migrating, runs and summaries read as they are; metric series are refused naming version 10."""
    manager = DatabaseManager(old_store)
    assert manager.get_schema_version() == 6 and CHUNK_VERSION == 10
    assert {run["run_id"] for run in manager.get_training_runs()} == {"train", "old", "sess"}
    assert manager.get_run_summary("train")["metrics"]["loss"]["count"] == 1600
    with pytest.raises(StoreError, match="version 10"):
        manager.get_run_metrics("train")
    assert "metric_rows" in table_names(old_store)


def test_an_old_store_migrates_forward_with_its_data(old_store: Path, expected: dict[str, Any]) -> None:
    """init_database() moves every run's rows into chunks; every read gives what schema 6 gave."""
    manager = DatabaseManager(old_store)
    manager.init_database()

    assert manager.get_schema_version() == SCHEMA_VERSION == CHUNK_VERSION
    tables = table_names(old_store)
    assert {"metric_series", "metric_chunks"} <= tables and not {"metric_rows", "metric_keysets"} & tables
    for run_id, record in expected["runs"].items():
        assert_frame_matches(manager.get_run_metrics(run_id, align="call"), record["call"])
        assert_frame_matches(manager.get_run_metrics(run_id, align="step"), record["step"])
        summary = manager.get_run_summary(run_id)["metrics"]
        assert {
            name: {
                key: value.hex()
                if isinstance(value, float)
                else (value.timestamp() if key == "last_timestamp" else value)
                for key, value in stats.items()
            }
            for name, stats in summary.items()
        } == record["summary"]
        rollups = manager.get_metric_rollups(run_id).to_dict(orient="records")
        for rollup in rollups:  # the record holds times as epoch milliseconds, missing steps as None
            for key in ("start_time", "end_time"):
                rollup[key] = rollup[key].value // 1_000_000
            for key in ("first_step", "last_step"):
                rollup[key] = None if pd.isna(rollup[key]) else int(rollup[key])
        assert rollups == record["rollups"]
    store = SQLiteStore(old_store)
    page = store.read_session("sess", events_limit=10, metrics_limit=5)
    assert [
        {
            "row": m["row"],
            "timestamp": m["timestamp"],
            "values": [[n, v.hex()] for n, v in m["values"]],
            "tags": m["tags"],
        }
        for m in page["metrics"]
    ] == expected["session_page"]
    assert [{**m, "value": m["value"].hex()} for m in store.session_metrics(None, None)] == expected["session_metrics"]


def test_migrating_keeps_call_numbers_and_exact_integers(old_store: Path) -> None:
    """A call keeps its row number as its call number (rollups still name their calls); 2**63 - 1 stays exact."""
    with sqlite3.connect(old_store) as connection:
        rows = [row for (row,) in connection.execute("SELECT row FROM metric_rows WHERE run = 1 ORDER BY row")]
    DatabaseManager(old_store).init_database()
    store = SQLiteStore(old_store)
    series = store.read_series("train")
    calls = np.unique(np.concatenate([found.points.seq for found in series.values()]))
    assert calls.tolist() == rows
    samples = series["samples"].points.values
    assert samples.dtype == np.int64 and int(samples.max()) == 2**63 - 1


def test_migrate_schema_goes_down_a_version_with_the_data_and_up_again(
    old_store: Path, expected: dict[str, Any]
) -> None:
    """Stepping down rebuilds one row per call (same rows, key sets, counter); stepping up again reads the same."""
    with sqlite3.connect(old_store) as connection:
        before = connection.execute(
            "SELECT run, row, step, ts, vals, tags, k.names FROM metric_rows JOIN metric_keysets AS k"
            " ON k.id = keyset ORDER BY run, row"
        ).fetchall()
        next_row = connection.execute("SELECT value FROM meta WHERE key = 'next_metric_row'").fetchone()[0]
    manager = DatabaseManager(old_store)
    manager.init_database()
    manager.migrate_schema(CHUNK_VERSION - 1)  # one version down: per-call rows again

    assert manager.get_schema_version() == CHUNK_VERSION - 1
    with sqlite3.connect(old_store) as connection:
        after = connection.execute(
            "SELECT run, row, step, ts, vals, tags, k.names FROM metric_rows JOIN metric_keysets AS k"
            " ON k.id = keyset ORDER BY run, row"
        ).fetchall()
        assert connection.execute("SELECT value FROM meta WHERE key = 'next_metric_row'").fetchone()[0] == next_row
    assert [row[:3] for row in after] == [row[:3] for row in before]
    assert all(abs(new[3] - old[3]) <= 1e-6 for new, old in zip(after, before, strict=True))
    # Each call's names and values (a row lists them in the run's order of first appearance).
    assert [dict(zip(json.loads(row[6]), json.loads(row[4]), strict=True)) for row in after] == [
        dict(zip(json.loads(row[6]), json.loads(row[4]), strict=True)) for row in before
    ]
    assert [None if row[5] is None else json.loads(row[5]) for row in after] == [
        None if row[5] is None else json.loads(row[5]) for row in before
    ]
    manager.migrate_schema()
    assert_frame_matches(manager.get_run_metrics("train", align="call"), expected["runs"]["train"]["call"])


def test_a_monitor_on_an_old_store_migrates_it_and_writes_on(old_store: Path) -> None:
    """The pipeline's writer opens a schema-6 store, migrates it, and numbers a run's new calls after its old ones."""

    async def log() -> None:
        async with Pipeline(None, context=ComponentContext(db_path=str(old_store))) as pipeline:
            for i in range(3):
                pipeline.emit(Metric("train", TS + 100 + i, {"loss": float(i)}, 2000 + i))
            pipeline.emit(RunLifecycle("train", TS + 200, RunTransition.COMPLETED))
            assert await pipeline.flush(10)

    asyncio.run(log())
    manager = DatabaseManager(old_store)
    assert manager.get_schema_version() == SCHEMA_VERSION
    frame = manager.get_run_metrics("train", ["loss"], align="call")
    assert frame["loss"].tolist()[-3:] == [0.0, 1.0, 2.0]
    assert frame["step"].tolist()[-3:] == [2000, 2001, 2002]
    assert manager.get_run_summary("train")["metrics"]["loss"]["count"] == 1603
