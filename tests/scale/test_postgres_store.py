"""The PostgreSQL store beyond the shared conformance suite: the public API, the REST API, the command
line, moving runs between stores, retention, downsampling and backups, on a real PostgreSQL server."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from runwatch.cli import app
from runwatch.events import LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from runwatch.store.backends import open_store
from runwatch.store.manager import DatabaseManager
from runwatch.store.postgres import PostgresStore
from runwatch.store.sqlite import SQLiteStore
from runwatch.web.app import create_app
from tests.store.conformance.conftest import write

pytestmark = pytest.mark.timeout(60)

T0 = 1_700_000_000.0


def run_batch(run_id: str, *, ended: bool = True) -> list[object]:
    """A finished run with metrics (NaN, ±Inf, -0.0 among them), events and state."""
    metrics = [Metric(run_id, T0 + i, {"loss": 1.0 / (i + 1), "reward": float(i)}, i) for i in range(50)]
    metrics[7] = Metric(run_id, T0 + 7, {"loss": math.nan, "reward": math.inf}, 7)
    metrics[8] = Metric(run_id, T0 + 8, {"loss": -0.0, "reward": -math.inf}, 8)
    batch: list[object] = [
        RunLifecycle(run_id, T0, RunTransition.STARTED, config={"lr": 0.1}),
        *metrics,
        StatePatch(run_id, T0 + 1, {"level": 3}),
        LogEvent(run_id, T0 + 2, "checkpoint", "info", {"path": "a.pt"}),
    ]
    if ended:
        batch.append(RunLifecycle(run_id, T0 + 60, RunTransition.COMPLETED, final_reward=2.5))
    return batch


async def test_database_manager_reads_maintains_and_backs_up_a_postgresql_store(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """DatabaseManager given a postgresql:// URL: runs, frames, retention, downsampling, info, pg_dump and restore."""
    store = PostgresStore(postgres_dsn)
    await write(store, run_batch("old"), run_batch("live", ended=False))
    with DatabaseManager(postgres_dsn) as db:
        assert db.db_path == postgres_dsn
        assert {run["run_id"] for run in db.get_training_runs()} == {"old", "live"}
        frame = db.get_run_metrics("old")
        assert len(frame) == 50 and math.isnan(frame["loss"][7]) and frame["reward"][7] == math.inf
        assert math.copysign(1.0, frame["loss"][8]) == -1.0  # -0.0 kept
        assert db.get_run_summary("old")["final_reward"] == 2.5
        assert db.get_run_state("old") == {"level": 3}

        backup = db.create_backup(tmp_path / "backups", tag="before")
        assert backup.name.startswith("runwatch-backup-") and backup.stat().st_size > 0

        rolled = db.downsample_metrics(datetime.fromtimestamp(T0 + 1000, tz=UTC), bucket_rows=10)
        assert rolled == {"removed_rows": 50, "written_rollups": 10}  # only the ended run, 5 buckets × 2 metrics
        rollups = db.get_metric_rollups("old")
        assert int(rollups["count"].sum()) == 100 and len(db.get_run_metrics("old")) == 0

        assert db.cleanup_old_data(datetime.fromtimestamp(T0 + 1000, tz=UTC)) > 0
        assert [run["run_id"] for run in db.get_training_runs()] == ["live"]
        assert db.db_info()["tables"]["runs"] == 1

        kept = db.restore_backup(backup)
        assert kept is not None and kept.exists()
        assert {run["run_id"] for run in db.get_training_runs()} == {"old", "live"}
        assert len(db.get_run_metrics("old")) == 50


async def test_a_run_moves_from_sqlite_to_postgresql_and_back_unchanged(postgres_dsn: str, tmp_path: Path) -> None:
    """Export from SQLite, import into PostgreSQL, export from there, import into SQLite: the same run."""
    sqlite = SQLiteStore(tmp_path / "a.db")
    await write(sqlite, run_batch("r"))
    first = sqlite.export_run("r", tmp_path / "out1")
    from runwatch.store.importer import import_run

    assert import_run(postgres_dsn, first) == "r"
    postgres = open_store(postgres_dsn)
    second = postgres.export_run("r", tmp_path / "out2")
    assert import_run(str(tmp_path / "b.db"), second) == "r"
    back = SQLiteStore(tmp_path / "b.db")
    for store in (postgres, back):
        pd.testing.assert_frame_equal(store.run_metrics("r"), sqlite.run_metrics("r"))
        assert store.run_summary("r")["metrics"] == sqlite.run_summary("r")["metrics"]
        assert [e["event_type"] for e in store.run_events("r")] == [e["event_type"] for e in sqlite.run_events("r")]
        assert store.state_history("r")[0]["patch"] == {"level": 3}
    with pytest.raises(ValueError, match="already exists"):
        import_run(postgres_dsn, first)


async def test_the_rest_api_reads_a_postgresql_store(postgres_dsn: str) -> None:
    """The web app over a PostgreSQL store answers the run list, a run, its metrics and its events."""
    await write(PostgresStore(postgres_dsn), run_batch("r"))
    app = create_app(db_path=postgres_dsn)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        runs = (await client.get("/api/runs")).json()["runs"]
        assert [run["run_id"] for run in runs] == ["r"]
        summary = (await client.get("/api/runs/r")).json()
        assert summary["status"] == "completed" and summary["metrics"]["loss"]["count"] == 50
        series = (await client.get("/api/runs/r/metrics", params={"names": "reward"})).json()["series"]
        assert len(series["reward"]["step"]) == 50
        events = (await client.get("/api/runs/r/events")).json()
        assert "checkpoint" in {event["event_type"] for event in events["events"]}
        assert (await client.get("/api/runs/nope")).status_code == 404


async def test_the_command_line_takes_a_postgresql_url_as_its_store(postgres_dsn: str, tmp_path: Path) -> None:
    """runwatch runs/export/import/db-info/backup with --db postgresql://… work as on a file."""
    await write(PostgresStore(postgres_dsn), run_batch("r"))
    runner = CliRunner()
    listed = runner.invoke(app, ["runs", "--db", postgres_dsn, "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"run_id": "r"' in listed.stdout
    exported = runner.invoke(app, ["export", "r", "--db", postgres_dsn, "-o", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    archive = Path(exported.stdout.strip())
    imported = runner.invoke(app, ["import", str(archive), "--rename", "r2", "--db", postgres_dsn])
    assert imported.exit_code == 0, imported.output
    assert PostgresStore(postgres_dsn).run_summary("r2")["metrics"]["loss"]["count"] == 50
    info = runner.invoke(app, ["db-info", "--db", postgres_dsn])
    assert info.exit_code == 0 and "metric_chunks" in info.stdout
    backup = runner.invoke(app, ["backup", str(tmp_path / "backups"), "--db", postgres_dsn])
    assert backup.exit_code == 0, backup.output
    assert [path.suffix for path in (tmp_path / "backups").iterdir()] == [".pgdump"]


async def test_a_single_serve_node_keeps_its_store_in_postgresql(postgres_dsn: str, tmp_path: Path) -> None:
    """runwatch serve --store postgresql://… without a bus: today's graph with a postgres sink; ingest is
    answered once PostgreSQL committed the batch."""
    from runwatch.assemble import monitor_pipeline_config
    from runwatch.config import MonitorConfig
    from runwatch.pipeline.component import ComponentContext
    from runwatch.pipeline.runtime import Pipeline
    from runwatch.sinks.postgres import PostgresSink
    from runwatch.sources.ingest import INGEST

    config = MonitorConfig(db_path=postgres_dsn, data_dir=str(tmp_path / "data"))
    context = ComponentContext(db_path=postgres_dsn, data_dir=tmp_path / "data")
    pipeline = Pipeline(monitor_pipeline_config(config, serve=True), context=context)
    assert isinstance(pipeline.component("store"), PostgresSink)
    async with pipeline:
        events = [Metric("r", T0 + i, {"loss": float(i)}, i) for i in range(5)]
        result = await pipeline.context.services[INGEST].submit(events, "b1", digest="d1")
        assert result.accepted == 5
        assert PostgresStore(postgres_dsn).run_summary("r")["metrics"]["loss"]["count"] == 5


async def test_the_tail_waits_for_a_transaction_that_took_positions_before_it_reads_past_them(
    postgres_dsn: str,
) -> None:
    """Positions are taken before commit, in any order: a row of a transaction still open is not passed by the
    tail's cursor while a later transaction's rows are committed; once it commits, both come back."""
    import anyio.to_thread
    import asyncpg

    store = PostgresStore(postgres_dsn)
    await write(store, [RunLifecycle("slow", T0, RunTransition.STARTED)])
    tail = store.open_tail()
    await anyio.to_thread.run_sync(tail.open)
    slow = await asyncpg.connect(postgres_dsn)
    try:
        transaction = slow.transaction()
        await transaction.start()
        position = await slow.fetchval("SELECT runwatch_take_positions('events_positions', 1)")
        await write(store, [LogEvent("fast", T0 + 1, "note", "info", {})])  # a higher id, committed first
        held = await anyio.to_thread.run_sync(tail.read)
        assert held.rows["events"] == [] and held.ends == tail.positions  # nothing read past the open one
        assert tail.changed()
        run = await slow.fetchval("SELECT id FROM runs WHERE run_id = 'slow'")
        await slow.execute(
            "INSERT INTO events (id, run, ts, kind, type, level, data)"
            " VALUES ($1, $2, $3, 'log', 'note', 'info', '{}')",
            position,
            run,
            T0 + 2,
        )
        await transaction.commit()
        read = await anyio.to_thread.run_sync(tail.read)
        assert [(row.position, row.event.run_id) for row in read.rows["events"]] == [
            (position, "slow"),
            (position + 1, "fast"),
        ]
    finally:
        await slow.close()
        await anyio.to_thread.run_sync(tail.close)
