"""Tests for the data lifecycle: cleanup, downsampling, optimize, info, backup, restore, migrations."""

from __future__ import annotations

import math
import os
import random
import re
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pytest
from chunk_helpers import RUN_TABLES, orphan_rows, rows_of_run

from runwatch import MonitorConfig, WebMonitor
from runwatch.events import LogEvent, Metric, RunLifecycle, StatePatch
from runwatch.exceptions import BackupError, StoreError
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store import backup as backup_module
from runwatch.store import lifecycle
from runwatch.store.chunk_schema import CHUNK_COLUMNS
from runwatch.store.chunk_store import chunk_row
from runwatch.store.chunks import ChunkColumns, encode_chunk
from runwatch.store.manager import DatabaseManager
from runwatch.store.schema import SCHEMA_VERSION, migrate

TS = 1_700_000_000.0
DAY = 86_400.0
CUTOFF = TS + 5 * DAY  # between the old runs and the new one


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def write(db: Path, *events: Any) -> None:
    """Write ``events`` through the default pipeline (in-process source → SQLite sink)."""
    anyio.run(_write, db, *events)


async def _write(db: Path, *events: Any) -> None:
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for event in events:
            pipeline.emit(event)
        assert await pipeline.flush(30)


def run_events(run_id: str, start: float, metrics: int, end: str | None) -> list[Any]:
    """A run with ``metrics`` logging calls, an event and a state patch, ended by ``end`` (or still running)."""
    events: list[Any] = [RunLifecycle(run_id, start, "started")]
    events += [Metric(run_id, start + 1 + i, {"loss": float(i), "acc": 0.5}, step=i) for i in range(metrics)]
    events += [LogEvent(run_id, start + metrics + 2, "episode_end"), StatePatch(run_id, start + metrics + 3, {"k": 1})]
    if end is not None:
        events.append(RunLifecycle(run_id, start + metrics + 4, end))
    return events


def noisy_run(run_id: str, start: float, metrics: int) -> list[Any]:
    """A finished run of noisy values, which its chunks cannot compress much."""
    rng = random.Random(run_id)
    events: list[Any] = [RunLifecycle(run_id, start, "started")]
    events += [Metric(run_id, start + 1 + i, {"noise": rng.random()}, step=i) for i in range(metrics)]
    return [*events, RunLifecycle(run_id, start + metrics + 2, "completed")]


def seed(db: Path, metrics: int = 30) -> None:
    """Two old finished runs, an old running and an old paused run, and a new finished run."""
    write(
        db,
        *run_events("old-done", TS, metrics, "completed"),
        *run_events("old-failed", TS + DAY, metrics, "failed"),
        *run_events("old-running", TS, metrics, None),
        *run_events("old-paused", TS, metrics, "paused"),
        *run_events("new-done", TS + 10 * DAY, metrics, "completed"),
    )


def records_of(db: Path, run_ids: list[str]) -> int:
    """The runs rows plus every row of theirs, counted independently of the code under test."""
    with sqlite3.connect(db) as conn:
        total = 0
        for run_id in run_ids:
            (run,) = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            total += 1 + sum(rows_of_run(conn, table, run) for table in RUN_TABLES)
    return total


def run_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT run_id FROM runs")}


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    config = MonitorConfig(db_path=str(tmp_path / "live.db"), data_dir=str(tmp_path / "data"), web_port=0)
    with WebMonitor(config) as live:
        yield live


# -- cleanup ---------------------------------------------------------------------------


def test_cleanup_dry_run_counts_exactly_what_the_real_cleanup_removes(db: Path) -> None:
    """A dry run removes nothing and returns the same count as the cleanup that follows."""
    seed(db)
    expected = records_of(db, ["old-done", "old-failed"])
    manager = DatabaseManager(db)

    dry = manager.cleanup_old_data(at(CUTOFF), dry_run=True)
    assert run_ids(db) == {"old-done", "old-failed", "old-running", "old-paused", "new-done"}
    real = manager.cleanup_old_data(at(CUTOFF))

    assert dry == real == expected
    assert run_ids(db) == {"old-running", "old-paused", "new-done"}
    assert manager.cleanup_old_data(at(CUTOFF), dry_run=True) == 0


def test_cleanup_forgets_ingested_batch_ids_older_than_the_cutoff(db: Path) -> None:
    """Batch ids received before the cutoff are deleted (in small transactions); newer ones stay."""
    seed(db)
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO ingest_batches (scope, batch_id, received_at, events) VALUES ('r', ?, ?, 1)",
            [
                (
                    f"old-{i}",
                    CUTOFF - 1 - i,
                )
                for i in range(25)
            ]
            + [("new", CUTOFF + 1)],
        )
    conn.close()
    with sqlite3.connect(db) as conn:
        assert lifecycle.forget_ingested_batches(conn, CUTOFF, batch_rows=10) == 25
        assert [row[0] for row in conn.execute("SELECT batch_id FROM ingest_batches")] == ["new"]
        conn.execute(
            "INSERT INTO ingest_batches (scope, batch_id, received_at, events) VALUES ('r', 'old-again', 0, 1)"
        )
        conn.commit()
    conn.close()
    DatabaseManager(db).cleanup_old_data(at(CUTOFF))
    with sqlite3.connect(db) as conn:
        assert [row[0] for row in conn.execute("SELECT batch_id FROM ingest_batches")] == ["new"]
    conn.close()


def test_cleanup_never_removes_active_runs_and_leaves_other_runs_untouched(db: Path) -> None:
    """Running and paused runs keep every row however old they are, and so do runs newer than the cutoff."""
    seed(db)
    kept = ["old-running", "old-paused", "new-done"]
    before = {run_id: records_of(db, [run_id]) for run_id in kept}
    manager = DatabaseManager(db)
    frame_before = manager.get_run_metrics("new-done")

    manager.cleanup_old_data(at(TS + 100 * DAY))  # after every run's end

    assert run_ids(db) == {"old-running", "old-paused"}
    assert {run_id: records_of(db, [run_id]) for run_id in kept[:2]} == {k: before[k] for k in kept[:2]}
    with pytest.raises(Exception, match="new-done"):
        manager.get_run_metrics("new-done")
    assert len(frame_before) == 30


def test_cleanup_leaves_no_orphan_rows(db: Path) -> None:
    """After a cleanup, no row of any run table points at a removed run."""
    seed(db)
    DatabaseManager(db).cleanup_old_data(at(CUTOFF))

    with sqlite3.connect(db) as conn:
        for table in RUN_TABLES:
            assert orphan_rows(conn, table) == 0, table


def test_cleanup_pass_works_in_transactions_of_at_most_batch_rows(db: Path) -> None:
    """Each step removes at most batch_rows rows (plus the run row), and the steps add up to the whole."""
    seed(db)
    expected = records_of(db, ["old-done", "old-failed"])
    job = lifecycle.CleanupPass(CUTOFF, batch_rows=7)
    removed_per_step: list[int] = []
    with sqlite3.connect(db) as conn:
        for _ in range(1000):
            before = job.removed_records
            if not job.step(conn):
                break
            removed_per_step.append(job.removed_records - before)
            assert not conn.in_transaction  # every step commits

    assert job.done
    assert sum(removed_per_step) == job.removed_records == expected
    assert max(removed_per_step) <= 7 + 1
    assert len(removed_per_step) >= expected // 8
    assert job.removed_runs == 2


def test_cleanup_pass_spares_a_run_resumed_while_it_is_being_emptied(db: Path) -> None:
    """A run that becomes active between two steps keeps its row and what is left of its data."""
    seed(db)
    job = lifecycle.CleanupPass(CUTOFF, batch_rows=10)
    with sqlite3.connect(db) as conn:
        assert job.step(conn)  # starts emptying old-done (the lowest id)
        conn.execute("UPDATE runs SET status = 'running', end_time = NULL WHERE run_id = 'old-done'")
        conn.commit()
        lifecycle.run_pass(job, conn, pause_seconds=0)

    assert "old-done" in run_ids(db)
    assert "old-failed" not in run_ids(db)
    assert 0 < records_of(db, ["old-done"])


def test_cleanup_takes_a_naive_datetime_as_utc(db: Path) -> None:
    """A naive cutoff counts the same as the aware UTC one."""
    seed(db)
    manager = DatabaseManager(db)
    naive = at(CUTOFF).replace(tzinfo=None)

    assert manager.cleanup_old_data(naive, dry_run=True) == manager.cleanup_old_data(at(CUTOFF), dry_run=True) > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        pytest.param({"older_than": "2024-01-01"}, TypeError, "older_than", id="string-date"),
        pytest.param({"older_than": TS}, TypeError, "older_than", id="epoch-number"),
        pytest.param({"older_than": datetime.now(UTC) + timedelta(days=1)}, ValueError, "older_than", id="future"),
        pytest.param({"older_than": at(CUTOFF), "dry_run": "yes"}, TypeError, "dry_run", id="dry-run-not-bool"),
    ],
)
def test_cleanup_rejects_bad_arguments_naming_the_field(
    db: Path, kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    """Bad arguments raise TypeError or ValueError naming the argument, and remove nothing."""
    seed(db)
    with pytest.raises(error, match=field):
        DatabaseManager(db).cleanup_old_data(**kwargs)
    assert len(run_ids(db)) == 5


def test_cleanup_keeps_a_concurrent_writer_flowing(monitor: WebMonitor, tmp_path: Path) -> None:
    """While a cleanup removes many rows in batches, a live monitor's logging commits with no failed commit."""
    db = Path(monitor.config.db_path)
    write(db, *run_events("big-old", TS, 12_000, "completed"))
    expected = records_of(db, ["big-old"])
    run_id = monitor.start_training()
    stop = threading.Event()
    logged = [0]

    def log() -> None:
        for i in range(10_000_000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            monitor.update_metrics({"loss": float(i)})
            logged[0] = i + 1

    writer = threading.Thread(target=log)
    writer.start()
    try:
        removed = DatabaseManager(db).cleanup_old_data(at(CUTOFF))
    finally:
        stop.set()
        writer.join(30)
    assert monitor.flush(30)

    assert removed == expected
    assert monitor.get_run_summary(run_id)["metrics"]["loss"]["count"] == logged[0]
    store = monitor.statistics()["components"]["store"]
    assert store["commit_errors"] == 0


# -- downsampling ------------------------------------------------------------------------


def test_downsampling_replaces_old_rows_by_exact_bucket_statistics(db: Path) -> None:
    """Old rows of a finished run become per-bucket min/max/mean/count rollups that match the raw values."""
    values = [float(i) for i in range(250)]
    values[3] = math.nan
    values[120] = math.inf
    events: list[Any] = [RunLifecycle("done", TS, "started")]
    events += [Metric("done", TS + 1 + i, {"loss": v, "acc": 1.0 / (i + 1)}, step=i) for i, v in enumerate(values)]
    events.append(RunLifecycle("done", TS + 300, "completed"))
    write(db, *events)
    manager = DatabaseManager(db)
    raw = manager.get_run_metrics("done")
    summary_before = manager.get_run_summary("done")["metrics"]

    result = manager.downsample_metrics(at(CUTOFF), bucket_rows=100)
    rollups = manager.get_metric_rollups("done")

    assert result == {"removed_rows": 250, "written_rollups": 6}
    assert manager.get_run_metrics("done").empty
    assert manager.get_run_summary("done")["metrics"] == summary_before
    loss = rollups[rollups["name"] == "loss"].reset_index(drop=True)
    assert loss["count"].tolist() == [100, 100, 50]
    assert loss["nan_count"].tolist() == [1, 0, 0]
    assert loss["first_step"].tolist() == [0, 100, 200]
    assert loss["last_step"].tolist() == [99, 199, 249]
    for bucket, (lo, hi) in enumerate([(0, 100), (100, 200), (200, 250)]):
        chunk = raw["loss"].iloc[lo:hi].to_numpy()
        assert loss["min"][bucket] == np.nanmin(chunk)
        assert loss["max"][bucket] == np.nanmax(chunk)
        assert loss["mean"][bucket] == pytest.approx(np.nanmean(chunk))
        assert loss["start_time"][bucket] == raw["timestamp"][lo]
        assert loss["end_time"][bucket] == raw["timestamp"][hi - 1]
    acc = rollups[rollups["name"] == "acc"]
    assert acc["mean"].iloc[0] == pytest.approx(raw["acc"].iloc[:100].mean())


def test_downsampling_leaves_active_and_recent_runs_exactly_as_they_were(db: Path) -> None:
    """get_run_metrics of a running run and of a run newer than the cutoff is unchanged by downsampling."""
    seed(db, metrics=150)
    manager = DatabaseManager(db)
    before = {run_id: manager.get_run_metrics(run_id) for run_id in ("old-running", "old-paused", "new-done")}

    result = manager.downsample_metrics(at(CUTOFF), bucket_rows=50)

    assert result["removed_rows"] == 2 * 150  # old-done and old-failed only
    for run_id, frame in before.items():
        pd.testing.assert_frame_equal(manager.get_run_metrics(run_id), frame)
        assert manager.get_metric_rollups(run_id).empty


def test_downsampling_takes_only_whole_buckets_of_rows_older_than_the_cutoff(db: Path) -> None:
    """Rows newer than the cutoff stay, and so do the old rows before them that do not fill a bucket."""
    events: list[Any] = [RunLifecycle("r", TS, "started")]
    events += [Metric("r", TS + i, {"x": float(i)}, step=i) for i in range(150)]  # old
    events += [Metric("r", CUTOFF + i, {"x": float(i)}, step=150 + i) for i in range(50)]  # new
    events.append(RunLifecycle("r", CUTOFF + 100, "completed"))
    write(db, *events)
    manager = DatabaseManager(db)

    result = manager.downsample_metrics(at(CUTOFF), bucket_rows=100)

    assert result == {"removed_rows": 100, "written_rollups": 1}
    assert manager.get_run_metrics("r")["step"].tolist() == list(range(100, 200))


def test_downsampling_needs_the_chunk_layout(db: Path) -> None:
    """A store before schema version 10 is refused with a StoreError naming the version, and keeps its rows."""
    seed(db)
    manager = DatabaseManager(db)
    manager.migrate_schema(9)

    with pytest.raises(StoreError, match="schema version 10"):
        manager.downsample_metrics(at(CUTOFF))
    manager.migrate_schema()
    assert manager.get_run_metrics("old-done").shape[0] == 30


def orphans(db: Path) -> dict[str, int]:
    """Rows of each run table whose run no longer exists."""
    with sqlite3.connect(db) as conn:
        return {table: orphan_rows(conn, table) for table in RUN_TABLES}


@pytest.mark.parametrize("newer_run", [pytest.param(False, id="id-gone"), pytest.param(True, id="id-reused")])
async def test_a_run_id_written_again_after_cleanup_removed_it_is_a_run_again(db: Path, newer_run: bool) -> None:
    """A running writer whose cached run was removed by cleanup (another connection) creates the run anew.

    With ``newer_run`` another writer took the removed row's id for a different run in between: the
    cached id must not send the events into that run.
    """
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for event in run_events("reused", TS, 3, "completed"):
            pipeline.emit(event)
        assert await pipeline.flush(30)
        removed = await anyio.to_thread.run_sync(lambda: DatabaseManager(db).cleanup_old_data(at(CUTOFF)))
        assert removed > 0 and "reused" not in run_ids(db)
        if newer_run:  # the freed row id goes to a run of another writer
            await anyio.to_thread.run_sync(lambda: write(db, RunLifecycle("other", TS + 9 * DAY, "started")))
        for event in run_events("reused", TS + 10 * DAY, 2, None):
            pipeline.emit(event)
        assert await pipeline.flush(30)

    manager = DatabaseManager(db)
    summary = manager.get_run_summary("reused")
    assert summary["status"] == "running" and summary["metrics"]["loss"]["count"] == 2
    assert len(manager.get_run_metrics("reused")) == 2
    assert orphans(db) == dict.fromkeys(RUN_TABLES, 0)
    if newer_run:
        other = manager.get_run_summary("other")
        assert other["metrics"] == {} and other["event_counts"] == {"run_started": 1}


def test_cleanup_removes_the_rollups_of_an_old_run_and_counts_them(db: Path) -> None:
    """Rollups belong to their run: they are counted and removed with it."""
    seed(db)
    manager = DatabaseManager(db)
    manager.downsample_metrics(at(CUTOFF), bucket_rows=10)
    expected = records_of(db, ["old-done", "old-failed"])

    assert manager.cleanup_old_data(at(CUTOFF), dry_run=True) == expected
    assert manager.cleanup_old_data(at(CUTOFF)) == expected
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM metric_rollups").fetchone()[0] == 0


# -- optimize and info ---------------------------------------------------------------------


def test_optimize_gives_the_space_of_removed_runs_back(db: Path) -> None:
    """After a cleanup, VACUUM empties the free list and shrinks the file."""
    seed(db, metrics=3000)
    write(db, *noisy_run("old-noisy", TS, 20_000))  # chunks compress: noise fills the pages a cleanup frees
    manager = DatabaseManager(db)
    manager.cleanup_old_data(at(CUTOFF))

    report = manager.optimize_database()

    assert report["vacuum"] == "full"
    assert report["freelist_pages_before"] > 0
    assert report["freelist_pages_after"] == 0
    assert report["size_bytes_after"] < report["size_bytes_before"] or report["wal_bytes_before"] > 0
    assert report["wal_bytes_after"] == 0
    assert manager.db_info()["freelist_pages"] == 0
    assert manager.get_run_metrics("new-done").shape[0] == 3000


def test_optimize_uses_incremental_vacuum_when_the_store_was_made_for_it(db: Path) -> None:
    """A store created with auto_vacuum=INCREMENTAL is compacted with incremental_vacuum, not VACUUM."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        migrate(conn)
    seed(db, metrics=2000)
    write(db, *noisy_run("old-noisy", TS, 20_000))
    manager = DatabaseManager(db)
    manager.cleanup_old_data(at(CUTOFF))

    report = manager.optimize_database()

    assert report["vacuum"] == "incremental"
    assert report["freelist_pages_before"] > 0 and report["freelist_pages_after"] == 0


def test_db_info_reports_sizes_version_and_rows_per_table(db: Path) -> None:
    """db_info gives the file size, page statistics, schema version and exact rows per table."""
    seed(db)

    info = DatabaseManager(db).db_info()

    assert info["schema_version"] == SCHEMA_VERSION
    assert info["size_bytes"] == db.stat().st_size
    assert info["journal_mode"] == "wal"
    assert info["page_count"] * info["page_size"] >= 4096
    assert info["tables"]["runs"] == 5
    assert info["tables"]["metric_series"] == 5 * 2
    assert info["tables"]["metric_chunks"] >= 5 * 2  # finished runs: one sealed chunk per series
    assert info["tables"]["metric_rollups"] == 0
    assert set(info["tables"]) >= {"events", "state_history", "metric_stats", "meta", "ingest_batches"}


# -- backup --------------------------------------------------------------------------------

BACKUP_NAME = re.compile(r"runwatch-backup-\d{8}T\d{6}\.\d{3}Z(-[A-Za-z0-9_-]+)?\.db")


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_backup_during_continuous_logging_restores_a_consistent_store(monitor: WebMonitor, tmp_path: Path) -> None:
    """A backup taken while a thread logs holds everything flushed before it, as a consistent prefix."""
    run_id = monitor.start_training()
    stop, started = threading.Event(), threading.Event()
    logged = [0]

    def log() -> None:
        for i in range(10_000_000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            monitor.update_metrics({"loss": float(i)})
            logged[0] = i + 1
            if i == 2_000:
                started.set()

    writer = threading.Thread(target=log)
    writer.start()
    try:
        assert started.wait(30)
        flushed = logged[0]
        assert monitor.flush(30)
        path = monitor.db.create_backup(tmp_path / "backups", tag="live")
        logged_after = logged[0]
    finally:
        stop.set()
        writer.join(30)

    assert BACKUP_NAME.fullmatch(path.name) and path.name.endswith("-live.db")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert integrity(path) == "ok"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    restored = DatabaseManager(tmp_path / "fresh" / "restored.db")
    assert restored.restore_backup(path) is None  # nothing to keep at a fresh path
    assert integrity(restored.db_path) == "ok"
    loss = restored.get_run_summary(run_id)["metrics"]["loss"]
    rows = restored.get_run_metrics(run_id, ["loss"])
    assert flushed <= loss["count"] <= logged_after
    # A consistent snapshot: the statistics agree with the rows, which are a gap-free prefix.
    assert len(rows) == loss["count"]
    assert rows["loss"].tolist() == [float(i) for i in range(loss["count"])]
    assert restored.get_training_runs()[0]["status"] == "running"
    assert stat.S_IMODE(restored.db_path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="too-long"),
        pytest.param("../x", id="path"),
        pytest.param("a b", id="space"),
        pytest.param("é", id="non-ascii"),
    ],
)
def test_backup_refuses_a_bad_tag_before_writing_anything(db: Path, tmp_path: Path, tag: str) -> None:
    """A tag other than 1-64 letters, digits, '_' or '-' is a ValueError naming the tag; no file is made."""
    seed(db)
    with pytest.raises(ValueError, match="tag"):
        DatabaseManager(db).create_backup(tmp_path / "backups", tag=tag)
    assert not (tmp_path / "backups").exists()


def test_backup_failing_its_integrity_check_is_deleted(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails the integrity check raises StoreError and leaves no file behind."""
    seed(db)
    monkeypatch.setattr(backup_module, "_integrity_problems", lambda path: ["row 3 missing from index x"])

    with pytest.raises(StoreError, match="integrity"):
        DatabaseManager(db).create_backup(tmp_path / "backups")
    assert list((tmp_path / "backups").iterdir()) == []


# -- restore -------------------------------------------------------------------------------


def test_restore_replaces_the_store_and_keeps_the_previous_one(db: Path, tmp_path: Path) -> None:
    """Restoring brings back the backed-up runs, and the replaced database is kept intact beside it."""
    write(db, *run_events("before", TS, 10, "completed"))
    manager = DatabaseManager(db)
    path = manager.create_backup(tmp_path / "backups")
    write(db, *run_events("after", TS + DAY, 10, "completed"))

    kept = manager.restore_backup(path)

    assert run_ids(db) == {"before"}
    assert manager.get_run_metrics("before").shape[0] == 10
    assert kept is not None and kept.parent == db.parent
    assert re.fullmatch(r"store\.db\.pre-restore-\d{8}T\d{6}\.\d{3}Z\.db", kept.name)
    assert run_ids(kept) == {"before", "after"}
    assert integrity(kept) == "ok"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _sqlite_with(path: Path, *statements: str) -> Path:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    return path


def _truncated(source: Path, target: Path, size: int) -> Path:
    target.write_bytes(source.read_bytes()[:size])
    return target


def _corrupted(source: Path, target: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[-4096:] = b"\xff" * 4096  # the last page: part of a table or index b-tree
    target.write_bytes(bytes(data))
    return target


BAD_BACKUPS = [
    pytest.param(lambda good, d: d / "missing.db", "no such file", id="missing"),
    pytest.param(
        lambda good, d: (d / "random.db").write_bytes(os.urandom(16_384)) and d / "random.db",
        "header",
        id="random-bytes",
    ),
    pytest.param(
        lambda good, d: _truncated(good, d / "cut.db", good.stat().st_size - 4096),
        "truncated",
        id="truncated-at-a-page",
    ),
    pytest.param(
        lambda good, d: _truncated(good, d / "cut2.db", good.stat().st_size // 2 + 10),
        "truncated",
        id="truncated-mid-page",
    ),
    pytest.param(lambda good, d: _corrupted(good, d / "corrupt.db"), "integrity|cannot be read", id="corrupt-page"),
    pytest.param(
        lambda good, d: _sqlite_with(d / "foreign.db", "CREATE TABLE t (x)"),
        "not a runwatch database",
        id="foreign-sqlite",
    ),
    pytest.param(
        lambda good, d: _sqlite_with(d / "foreign1.db", "CREATE TABLE t (x)", "PRAGMA user_version = 1"),
        "not a runwatch database",
        id="foreign-sqlite-with-a-version",
    ),
    pytest.param(
        lambda good, d: _sqlite_with(
            d / "newer.db", "CREATE TABLE runs (x)", f"PRAGMA user_version = {SCHEMA_VERSION + 1}"
        ),
        "newer runwatch",
        id="newer-schema",
    ),
]


@pytest.mark.parametrize(("make", "reason"), BAD_BACKUPS)
def test_restore_refuses_an_unusable_backup_naming_the_file(db: Path, tmp_path: Path, make: Any, reason: str) -> None:
    """A missing, random, truncated, corrupt or foreign file is a BackupError naming it; the store is unchanged."""
    seed(db)
    manager = DatabaseManager(db)
    good = manager.create_backup(tmp_path / "backups")
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = make(good, bad_dir)

    with pytest.raises(BackupError, match=reason) as caught:
        manager.restore_backup(bad)

    assert caught.value.path == str(bad)
    assert str(bad) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert len(run_ids(db)) == 5
    assert [p.name for p in db.parent.iterdir() if "pre-restore" in p.name] == []


def test_restore_refuses_while_a_pipeline_has_the_store_open(monitor: WebMonitor, tmp_path: Path) -> None:
    """With a running monitor on the store, restore raises StoreError and changes nothing."""
    run_id = monitor.start_training()
    monitor.update_metrics({"loss": 1.0})
    assert monitor.flush(30)
    manager = DatabaseManager(monitor.config.db_path)
    path = manager.create_backup(tmp_path / "backups")

    with pytest.raises(StoreError, match="open in another connection"):
        manager.restore_backup(path)

    assert [run["run_id"] for run in manager.get_training_runs()] == [run_id]
    assert not any("pre-restore" in p.name for p in Path(monitor.config.db_path).parent.iterdir())


def test_restore_of_a_backup_with_another_page_size_into_a_wal_store(db: Path, tmp_path: Path) -> None:
    """A backup whose page size differs from the live WAL store's is restored whole, and the store stays WAL."""
    seed(db)
    other = tmp_path / "big-pages.db"
    with sqlite3.connect(other) as conn:
        conn.execute("PRAGMA page_size = 8192")
        migrate(conn)
        conn.execute("INSERT INTO runs (run_id, status, start_time, updated_at) VALUES ('x', 'completed', 1, 1)")

    DatabaseManager(db).restore_backup(other)

    assert run_ids(db) == {"x"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert integrity(db) == "ok"


# -- migrations --------------------------------------------------------------------------------

V1_TABLES = {"runs", "metric_keysets", "metric_rows", "metric_stats", "events", "state_history", "meta"}
V6_TABLES = V1_TABLES | {"ingest_batches", "metric_rollups", "snapshots"}
TABLES_AT = {
    0: set(),
    1: V1_TABLES,
    2: V1_TABLES | {"ingest_batches"},
    3: V1_TABLES | {"ingest_batches", "metric_rollups"},
    4: V1_TABLES | {"ingest_batches", "metric_rollups", "snapshots"},
    5: V1_TABLES | {"ingest_batches", "metric_rollups", "snapshots"},  # metric_stats rebuilt without REAL
    6: V6_TABLES,  # ingest_batches scoped per run
    7: V6_TABLES | {"media_blobs", "images", "media_usage", "histograms"},
    8: V6_TABLES | {"media_blobs", "images", "media_usage", "histograms", "run_annotations"},
    9: V6_TABLES | {"media_blobs", "images", "media_usage", "histograms", "run_annotations"},  # events gain detail
    10: V6_TABLES - {"metric_keysets", "metric_rows"}  # metrics in chunks
    | {"media_blobs", "images", "media_usage", "histograms", "run_annotations", "metric_series", "metric_chunks"},
}
ROWS = {
    "runs": "INSERT INTO runs (run_id, start_time, updated_at) VALUES ('r', 1, 1)",
    "metric_keysets": "INSERT INTO metric_keysets (names) VALUES ('[\"loss\"]')",
    "metric_rows": "INSERT INTO metric_rows (run, row, step, ts, keyset, vals) VALUES (1, 0, 0, 1, 1, '[0.5]')",
    "metric_stats": "INSERT INTO metric_stats (run, name, count, nan_count) VALUES (1, 'loss', 1, 0)",
    "run_annotations": "INSERT INTO run_annotations (run, tags, note, updated_at) VALUES (1, '[\"x\"]', 'n', 1)",
    "events": "INSERT INTO events (run, ts, kind, type, level, data) VALUES (1, 1, 'log', 'x', 'info', '{}')",
    "state_history": "INSERT INTO state_history (run, ts, patch) VALUES (1, 1, '{}')",
    "meta": "INSERT INTO meta (key, value) VALUES ('k', 'v')",
    "ingest_batches": "INSERT INTO ingest_batches (batch_id, received_at, events) VALUES ('b', 1, 1)",
    "metric_rollups": "INSERT INTO metric_rollups (run, name, first_row, last_row, start_ts, end_ts, count, nan_count)"
    " VALUES (1, 'loss', 0, 9, 1, 2, 10, 0)",
    "snapshots": "INSERT INTO snapshots (run, ts, data) VALUES (1, 1, '{}')",
    "media_blobs": "INSERT INTO media_blobs (digest, mime, size, data) VALUES ('d', 'image/png', 1, x'00')",
    "images": "INSERT INTO images (run, name, step, ts, digest, width, height) VALUES (1, 'f', 0, 1, 'd', 1, 1)",
    "media_usage": "INSERT INTO media_usage (run, image_bytes) VALUES (1, 1)",
    "histograms": "INSERT INTO histograms (run, name, step, ts, size, nan_count, posinf_count, neginf_count, counts)"
    " VALUES (1, 'q', 0, 1, 0, 0, 0, 0, '[]')",
}


def sql_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"x'{value.hex()}'"
    return repr(value)


#: Rows whose insert changed with a version (from that version on).
ROWS_FROM = {
    6: {"ingest_batches": "INSERT INTO ingest_batches (scope, batch_id, received_at, events) VALUES ('r', 'b', 1, 1)"},
    10: {
        "metric_series": "INSERT INTO metric_series (run, name) VALUES (1, 'loss')",
        "metric_chunks": "INSERT INTO metric_chunks (series, {}) VALUES (1, {})".format(
            ", ".join(CHUNK_COLUMNS),
            ", ".join(
                sql_literal(value)
                for value in chunk_row(
                    1,
                    True,
                    encode_chunk(
                        ChunkColumns(np.array([0]), np.array([0]), None, np.array([1_000_000]), np.array([0.5]))
                    ),
                )[1:]
            ),
        ),
    },
}
#: Steps that move rows between tables: the rows each table has after the step (one logging call moved).
MOVED = {
    (9, 10): {"metric_series": 1, "metric_chunks": 1},
    (10, 9): {"metric_rows": 1, "metric_keysets": 1},
}


def row_insert(table: str, version: int) -> str:
    """The statement inserting one row of ``table`` into a store at ``version``."""
    changed = [rows[table] for since, rows in sorted(ROWS_FROM.items()) if since <= version and table in rows]
    return changed[-1] if changed else ROWS[table]


def tables_and_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}


def store_at(db: Path, version: int) -> dict[str, int]:
    """A store created at ``version`` with one row in each of its tables; returns the counts."""
    with sqlite3.connect(db) as conn:
        migrate(conn, version)
        for table in TABLES_AT[version]:
            conn.execute(row_insert(table, version))
    return tables_and_counts(db)


def test_schema_version_5_keeps_negative_zero_in_metric_statistics_and_its_down_step_restores_real(db: Path) -> None:
    """Version 5 stores -0.0 in metric_stats as -0.0 (a REAL column writes it as 0); stepping down keeps the rows."""
    with sqlite3.connect(db) as conn:
        migrate(conn, 4)
        conn.execute("INSERT INTO metric_stats VALUES (1, 'a', 1, 0, -0.0, -0.0, -0.0, -0.0, 1, NULL)")
        migrate(conn, 5)
        conn.execute("INSERT INTO metric_stats VALUES (1, 'b', 1, 0, -0.0, -0.0, -0.0, -0.0, 1, NULL)")
        rows = conn.execute("SELECT name, min, last FROM metric_stats ORDER BY name").fetchall()
        migrate(conn, 4)
        types = conn.execute("SELECT type FROM pragma_table_info('metric_stats') WHERE name = 'last'").fetchone()
        kept = conn.execute("SELECT count(*) FROM metric_stats").fetchone()
    assert [(name, math.copysign(1, low), math.copysign(1, last)) for name, low, last in rows] == [
        ("a", 1.0, 1.0),  # written at version 4: the sign was lost then
        ("b", -1.0, -1.0),
    ]
    assert types == ("REAL",) and kept == (2,)


def test_schema_version_9_adds_a_detail_to_events_and_state_patches_and_its_down_step_drops_it(db: Path) -> None:
    """Version 9 gives events and state_history a detail column (rows kept, NULL for them); stepping down
    drops the columns and keeps the rows."""
    with sqlite3.connect(db) as conn:
        migrate(conn, 8)
        conn.execute(ROWS["runs"])
        conn.execute(ROWS["events"])
        conn.execute(ROWS["state_history"])
        migrate(conn, 9)
        conn.execute(
            "INSERT INTO events (run, ts, kind, type, level, data, detail)"
            " VALUES (1, 2, 'log', 'y', 'info', '{}', '{}')"
        )
        details = conn.execute("SELECT detail FROM events ORDER BY id").fetchall()
        migrate(conn, 8)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        kept = conn.execute("SELECT count(*) FROM events").fetchone()
    assert details == [(None,), ("{}",)]
    assert "detail" not in columns and kept == (2,)


def test_migration_steps_cover_every_schema_version() -> None:
    """The migration tests know the tables of every version this code has."""
    assert set(TABLES_AT) == set(range(SCHEMA_VERSION + 1))


@pytest.mark.parametrize(
    ("start", "target"),
    [pytest.param(v, v + 1, id=f"up-v{v}-v{v + 1}") for v in range(SCHEMA_VERSION)]
    + [pytest.param(v, v - 1, id=f"down-v{v}-v{v - 1}") for v in range(SCHEMA_VERSION, 0, -1)],
)
def test_one_migration_step_adds_or_drops_its_tables_and_keeps_the_others_data(
    db: Path, start: int, target: int
) -> None:
    """Each step from a store created at the previous version changes exactly its tables; kept rows survive."""
    before = store_at(db, start)
    manager = DatabaseManager(db)

    manager.migrate_schema(target)

    after = tables_and_counts(db)
    assert manager.get_schema_version() == target
    assert set(after) == TABLES_AT[target]
    moved = MOVED.get((start, target), {})
    kept = (TABLES_AT[start] & TABLES_AT[target]) - moved.keys()
    assert {table: after[table] for table in kept} == {table: before[table] for table in kept}
    new = TABLES_AT[target] - TABLES_AT[start] - moved.keys()
    assert all(after[table] == 0 for table in new if table != "meta")
    assert {table: after[table] for table in moved} == moved


def test_cleanup_empties_every_table_that_holds_a_runs_rows(db: Path) -> None:
    """Every table of the newest schema with a ``run`` column is emptied of a removed run's rows (a table
    added without its cleanup fails here), and no image content is left that no image names."""
    store_at(db, SCHEMA_VERSION)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET status = 'completed', end_time = 1, updated_at = 1")
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if conn.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = 'run'", (name,)).fetchone()
        ]
    assert {"metric_series", "images", "histograms", "media_usage"} <= set(tables)

    DatabaseManager(db).cleanup_old_data(at(CUTOFF))

    left = tables_and_counts(db)
    assert {table: left[table] for table in tables} == dict.fromkeys(tables, 0)
    assert left["runs"] == 0 and left["media_blobs"] == 0
    assert left["metric_chunks"] == 0  # named by the run's series, not by the run
