"""Tests for runwatch.store.chunk_migration: a store written by today's sink moves into chunks intact."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from runwatch.events import Metric, RunLifecycle
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store import queries
from runwatch.store.chunk_migration import migrate_metric_rows
from runwatch.store.chunk_store import read_series, read_summaries
from runwatch.store.frames import per_call_frame
from runwatch.store.series import SeriesBuilder

TS = 1_700_000_000.0


async def write(db: Path, *events: Any) -> None:
    """Write ``events`` through the default pipeline (in-process source → SQLite sink)."""
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for event in events:
            pipeline.emit(event)
        assert await pipeline.flush(10)


def old_store_events() -> list[Any]:
    events: list[Any] = [RunLifecycle("run-a", TS, "started"), RunLifecycle("run-b", TS, "started")]
    specials = [math.nan, math.inf, -math.inf, -0.0]
    for i in range(3000):
        values: dict[str, float | int] = {"loss": 1.0 / (i + 1), "count": i}
        if i % 7 == 0:
            values["loss"] = specials[(i // 7) % 4]
        events.append(Metric("run-a", TS + i * 0.001, values, i if i % 5 else None))
        if i % 3 == 0:
            events.append(Metric("run-a", TS + i * 0.001, {"eval": i / 3}, i, {"split": "val"}))
        events.append(Metric("run-b", TS + i, {"loss": float(i)}, i))
    return events


async def test_an_old_store_migrates_forward_with_its_data(tmp_path: Path) -> None:
    """Every run's per-call rows become chunks that read back as the same frame, tags included."""
    db = tmp_path / "store.db"
    await write(db, *old_store_events())
    connection = sqlite3.connect(db, isolation_level=None)
    before = {run: queries.run_metrics_frame(connection, run) for run in ("run-a", "run-b")}
    report = migrate_metric_rows(
        connection, calls_per_batch=700, builder_factory=lambda: SeriesBuilder(chunk_points=512)
    )
    assert (report.runs, report.skipped_runs, report.calls) == (2, 0, 3000 + 1000 + 3000)
    assert report.values == 3000 * 2 + 1000 + 3000
    for run_id, old in before.items():
        series = read_series(connection, run_id, columns=("seq", "step", "time", "value", "tags"))
        new = per_call_frame(series, list(old.columns[2:]))
        assert list(new.columns) == list(old.columns)
        for name in old.columns[2:]:
            assert np.array_equal(new[name].to_numpy().view(np.uint64), old[name].to_numpy().view(np.uint64)), name
        assert new["step"].equals(old["step"])
        drift = (new["timestamp"] - old["timestamp"]).abs().max()
        assert drift <= pd.Timedelta(microseconds=1)
    eval_points = read_series(connection, "run-a", ["eval"], columns=("seq", "tags"))["eval"].points
    assert eval_points.tags == ['{"split":"val"}'] * 1000
    assert eval_points.seq.tolist()[:3] == [1, 5, 9]  # calls numbered in row order within the run
    summary = read_summaries(connection, "run-a", ["count"])["count"]
    assert summary.sum == sum(range(3000)) and summary.nan_count == 0
    connection.close()


async def test_migration_skips_runs_already_moved(tmp_path: Path) -> None:
    """A second migration (after an interruption, say) copies nothing twice."""
    db = tmp_path / "store.db"
    await write(db, RunLifecycle("r", TS, "started"), *[Metric("r", TS + i, {"x": float(i)}, i) for i in range(50)])
    connection = sqlite3.connect(db, isolation_level=None)
    assert migrate_metric_rows(connection).runs == 1
    again = migrate_metric_rows(connection)
    assert (again.runs, again.skipped_runs, again.calls) == (0, 1, 0)
    assert read_series(connection, "r", ["x"])["x"].points.values.tolist() == [float(i) for i in range(50)]
    connection.close()
