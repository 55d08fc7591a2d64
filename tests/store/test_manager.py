"""Tests for runwatch.store.manager.DatabaseManager over real store files."""

from __future__ import annotations

import math
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runwatch.events import LogEvent, Metric, RunLifecycle, StatePatch
from runwatch.exceptions import StoreError, UnknownRunError
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store.manager import DatabaseManager
from runwatch.store.schema import SCHEMA_VERSION

from ._helpers import write

TS = 1_700_000_000.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


async def write_run(db: Path) -> None:
    await write(
        db,
        RunLifecycle("r", TS, "started", config={"lr": 0.1}),
        Metric("r", TS + 1, {"loss": 1.0, "acc": math.nan}, step=1),
        Metric("r", TS + 2, {"loss": math.inf}, step=2),
        LogEvent("r", TS + 3, "episode_end", data={"reward": 5.0}),
        StatePatch("r", TS + 4, {"level": 2}),
        RunLifecycle("r", TS + 5, "completed", final_reward=5.0),
        RunLifecycle("s", TS + 10, "started", run_kind="session"),
    )


# -- schema -------------------------------------------------------------------------


def test_init_database_creates_the_store_and_directories(tmp_path: Path) -> None:
    """init_database creates missing directories and the file at the current schema version, idempotently."""
    path = tmp_path / "a" / "b" / "store.db"
    manager = DatabaseManager(path)
    assert not path.exists()  # the constructor does no I/O

    manager.init_database()
    manager.init_database()

    assert path.exists()
    assert manager.get_schema_version() == SCHEMA_VERSION
    assert manager.get_training_runs() == []


def test_migrate_down_to_zero_and_up_again(db: Path) -> None:
    """Migrating to 0 drops every table; migrating up again restores an empty, usable store."""
    manager = DatabaseManager(str(db))
    manager.init_database()

    manager.migrate_schema(0)

    assert manager.get_schema_version() == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
    with pytest.raises(StoreError, match="schema version 0"):
        manager.get_training_runs()

    manager.migrate_schema()

    assert manager.get_schema_version() == SCHEMA_VERSION
    assert manager.get_training_runs() == []


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
async def test_older_readable_schema_is_read_without_migrating(db: Path, version: int) -> None:
    """A store at any schema version from 1 up is read as it is; reading never migrates it."""
    await write(db, RunLifecycle("r", TS, "started"))
    manager = DatabaseManager(db)
    manager.migrate_schema(version)

    assert [run["run_id"] for run in manager.get_training_runs()] == ["r"]
    assert manager.get_schema_version() == version


@pytest.mark.parametrize("target", [-1, SCHEMA_VERSION + 1, "1", True])
def test_migrate_schema_rejects_bad_targets(db: Path, target: Any) -> None:
    """A target outside 0..SCHEMA_VERSION (or not an int) is a ValueError and changes nothing."""
    manager = DatabaseManager(db)
    manager.init_database()

    with pytest.raises(ValueError, match="target_version"):
        manager.migrate_schema(target)
    assert manager.get_schema_version() == SCHEMA_VERSION


def test_store_of_a_newer_runwatch_is_refused(db: Path) -> None:
    """A schema version above this code's is a StoreError for reads, migrations and init."""
    manager = DatabaseManager(db)
    manager.init_database()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    for call in (manager.get_training_runs, manager.migrate_schema, manager.init_database):
        with pytest.raises(StoreError, match="upgrade runwatch"):
            call()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda m: m.get_training_runs(), id="runs"),
        pytest.param(lambda m: m.get_run_summary("r"), id="summary"),
        pytest.param(lambda m: m.get_run_metrics("r"), id="metrics"),
        pytest.param(lambda m: m.get_run_events("r"), id="events"),
        pytest.param(lambda m: m.get_run_state("r"), id="state"),
        pytest.param(lambda m: m.get_schema_version(), id="version"),
        pytest.param(lambda m: m.migrate_schema(), id="migrate"),
        pytest.param(lambda m: m.mark_crashed_runs(), id="crashed"),
    ],
)
def test_missing_database_raises_store_error_and_creates_nothing(tmp_path: Path, call: Any) -> None:
    """Every method but init_database refuses a missing file, names its path, and leaves no file behind."""
    path = tmp_path / "missing.db"

    with pytest.raises(StoreError, match="missing.db") as caught:
        call(DatabaseManager(path))

    assert "init_database" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    """A file that is not SQLite is a StoreError naming it, for reads and for init."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database" * 100)
    manager = DatabaseManager(path)

    with pytest.raises(StoreError, match="notes.db"):
        manager.get_training_runs()
    with pytest.raises(StoreError, match="notes.db"):
        manager.init_database()


# -- reads --------------------------------------------------------------------------


async def test_get_training_runs_uses_aware_datetimes(db: Path) -> None:
    """Runs come newest first with timezone-aware UTC datetimes and filter by status, kind and limit."""
    await write_run(db)
    manager = DatabaseManager(db)

    runs = manager.get_training_runs()

    assert [r["run_id"] for r in runs] == ["s", "r"]
    run = runs[1]
    assert run["status"] == "completed"
    assert (run["start_time"], run["end_time"], run["updated_at"]) == (at(TS), at(TS + 5), at(TS + 5))
    assert run["start_time"].tzinfo is not None and runs[0]["end_time"] is None
    assert [r["run_id"] for r in manager.get_training_runs(status="completed")] == ["r"]
    assert [r["run_id"] for r in manager.get_training_runs(kind="session")] == ["s"]
    assert [r["run_id"] for r in manager.get_training_runs(limit=1)] == ["s"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"limit": 0}, ValueError, "limit", id="zero-limit"),
        pytest.param({"limit": -5}, ValueError, "limit", id="negative-limit"),
        pytest.param({"limit": 2.0}, ValueError, "limit", id="float-limit"),
        pytest.param({"status": "finished"}, ValueError, "status", id="unknown-status"),
        pytest.param({"kind": ""}, TypeError, "kind", id="empty-kind"),
    ],
)
def test_get_training_runs_validates_arguments(db: Path, kwargs: dict[str, Any], error: type, match: str) -> None:
    """Bad arguments raise before any I/O, even when the database is missing."""
    with pytest.raises(error, match=match):
        DatabaseManager(db).get_training_runs(**kwargs)


@pytest.mark.parametrize("run_id", [None, "", 7])
@pytest.mark.parametrize("method", ["get_run_summary", "get_run_metrics", "get_run_events", "get_run_state"])
def test_run_id_must_be_a_non_empty_string(db: Path, method: str, run_id: Any) -> None:
    """A run id that is not a non-empty string is a TypeError, checked before the database is opened."""
    with pytest.raises(TypeError, match="run_id"):
        getattr(DatabaseManager(db), method)(run_id)


@pytest.mark.parametrize("method", ["get_run_summary", "get_run_metrics", "get_run_events", "get_run_state"])
async def test_unknown_run_raises_unknown_run_error(db: Path, method: str) -> None:
    """Per-run reads of an id the store does not know raise UnknownRunError."""
    await write_run(db)

    with pytest.raises(UnknownRunError, match="'nope'"):
        getattr(DatabaseManager(db), method)("nope")


async def test_a_nan_final_reward_keeps_the_earlier_one_within_a_batch_as_across_batches(db: Path) -> None:
    """A NaN final reward reads back as no reward (the earlier one stays), whether it comes in the
    same committed batch as the earlier one or in a later one."""
    await write(
        db,
        RunLifecycle("same-batch", TS, "completed", final_reward=0.0),
        RunLifecycle("same-batch", TS + 1, "completed", final_reward=math.nan),
    )
    await write(db, RunLifecycle("two-batches", TS, "completed", final_reward=0.0))
    await write(db, RunLifecycle("two-batches", TS + 1, "completed", final_reward=math.nan))

    manager = DatabaseManager(db)
    assert manager.get_run_summary("same-batch")["final_reward"] == 0.0
    assert manager.get_run_summary("two-batches")["final_reward"] == 0.0


async def test_get_run_summary_converts_times(db: Path) -> None:
    """The summary's run and metric times are aware datetimes; statistics keep NaN and Inf semantics."""
    await write_run(db)

    summary = DatabaseManager(db).get_run_summary("r")

    assert (summary["start_time"], summary["end_time"]) == (at(TS), at(TS + 5))
    assert summary["duration_seconds"] == 5.0 and summary["config"] == {"lr": 0.1} and summary["final_reward"] == 5.0
    assert summary["state"] == {"level": 2}
    assert summary["metrics"]["loss"]["last"] == math.inf
    assert summary["metrics"]["loss"]["last_timestamp"] == at(TS + 2)
    acc = summary["metrics"]["acc"]
    assert acc["mean"] is None and math.isnan(acc["last"]) and acc["nan_count"] == 1


async def test_get_run_metrics_returns_the_frame_and_filters_with_datetimes(db: Path) -> None:
    """Metrics come back as the wide frame; naive datetime filters are taken as UTC."""
    await write_run(db)
    manager = DatabaseManager(db)

    frame = manager.get_run_metrics("r")
    assert list(frame.columns) == ["timestamp", "step", "loss", "acc"]
    assert frame["loss"].tolist() == [1.0, math.inf]

    later = manager.get_run_metrics("r", ["loss"], start_time=datetime(2023, 11, 14, 22, 13, 22))
    assert later["step"].tolist() == [2]
    assert manager.get_run_metrics("r", end_time=at(TS + 1))["step"].tolist() == [1]


async def test_get_run_events_uses_aware_datetimes_and_filters(db: Path) -> None:
    """Events carry event_type, parsed event_data and an aware timestamp, and filter by type and time."""
    await write_run(db)
    manager = DatabaseManager(db)

    events = manager.get_run_events("r")
    assert [e["event_type"] for e in events] == ["run_started", "episode_end", "run_completed"]
    assert events[1]["timestamp"] == at(TS + 3) and events[1]["event_data"] == {"reward": 5.0}
    assert {"id", "level", "kind"} <= set(events[1])

    assert [e["timestamp"] for e in manager.get_run_events("r", "episode_end")] == [at(TS + 3)]
    window = manager.get_run_events("r", start_time=at(TS + 1), end_time=at(TS + 4))
    assert [e["event_type"] for e in window] == ["episode_end"]
    with pytest.raises(TypeError, match="event_type"):
        manager.get_run_events("r", 5)  # type: ignore[arg-type]


async def test_get_run_state(db: Path) -> None:
    """The state is the merge of the run's patches."""
    await write_run(db)

    assert DatabaseManager(db).get_run_state("r") == {"level": 2}
    assert DatabaseManager(db).get_run_state("s") == {}


async def test_reads_see_commits_while_the_writer_is_open(db: Path) -> None:
    """With the sink's connection still open, reads see everything flushed, and never block it."""
    manager = DatabaseManager(db)
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        pipeline.emit(Metric("r", TS, {"x": 1.0}))
        assert await pipeline.flush(10)
        assert manager.get_run_metrics("r")["x"].tolist() == [1.0]
        pipeline.emit(Metric("r", TS + 1, {"x": 2.0}))
        assert await pipeline.flush(10)
        assert manager.get_run_metrics("r")["x"].tolist() == [1.0, 2.0]


async def test_one_manager_serves_several_threads(db: Path) -> None:
    """Concurrent calls from several threads on one manager all succeed with the same answer."""
    await write_run(db)
    manager = DatabaseManager(db)

    def read(_: int) -> tuple[str, int]:
        return manager.get_run_summary("r")["status"], len(manager.get_run_metrics("r"))

    # Future.result() re-raises whatever a thread raised.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [future.result(timeout=30) for future in [pool.submit(read, i) for i in range(80)]]

    assert results == [("completed", 2)] * 80


# -- crash marking, lifecycle ---------------------------------------------------------


async def test_mark_crashed_runs_marks_a_dead_owner_and_spares_a_live_one(db: Path, dead_owner: str) -> None:
    """A running run of a dead process becomes crashed with an end time; this live process's run stays running."""
    await write(db, RunLifecycle("dead", TS, "started"), Metric("dead", TS + 3, {"x": 1.0}))
    await write(db, RunLifecycle("live", TS, "started"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET owner = ? WHERE run_id = 'dead'", (dead_owner,))
    manager = DatabaseManager(db)

    assert manager.mark_crashed_runs() == ["dead"]

    statuses = {r["run_id"]: (r["status"], r["end_time"]) for r in manager.get_training_runs()}
    assert statuses == {"dead": ("crashed", at(TS + 3)), "live": ("running", None)}
    assert [e["event_type"] for e in manager.get_run_events("dead", "run_crashed")] == ["run_crashed"]
    assert manager.get_run_summary("dead")["event_counts"]["run_crashed"] == 1


def test_close_and_context_manager(db: Path) -> None:
    """After close (also on leaving a with block) every call raises StoreError; close is idempotent."""
    with DatabaseManager(db) as manager:
        manager.init_database()
        assert manager.get_schema_version() == SCHEMA_VERSION

    with pytest.raises(StoreError, match="closed"):
        manager.get_training_runs()
    with pytest.raises(StoreError, match="closed"):
        manager.init_database()
    manager.close()
    assert repr(manager) == f"DatabaseManager({str(db)!r})"


def test_db_path_must_be_a_path(tmp_path: Path) -> None:
    """A db_path that is neither str nor Path is a TypeError at construction."""
    with pytest.raises(TypeError, match="db_path"):
        DatabaseManager(3)  # type: ignore[arg-type]
