"""Reads of the chunk store give back what was stored, exactly, whichever read a user picks."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from runwatch.events import Metric, RunLifecycle, RunTransition
from runwatch.store.manager import DatabaseManager
from runwatch.store.sqlite import SQLiteStore

T0 = 1_796_658_235.615_516  # today's epoch: float seconds hold microseconds only to ~0.24 µs
OWNER = "exact-host:1:1.0"


async def write(db: Path, *batches: Sequence[Any]) -> None:
    """Each batch through the store's one write path, in order."""
    writer = SQLiteStore(db).open_writer(owner=OWNER)
    await writer.open()
    try:
        for batch in batches:
            await writer.write(list(batch))
    finally:
        await writer.aclose()


async def test_long_frame_timestamps_are_the_stored_microseconds(tmp_path: Path) -> None:
    """get_runs_metrics gives each value the microsecond timestamp get_run_metrics gives its call."""
    db = tmp_path / "store.db"
    calls = [Metric("r", T0 + i * 0.000_731, {"x": float(i), "y": i}, i) for i in range(200)]
    await write(db, [RunLifecycle("r", T0, RunTransition.STARTED), *calls])
    manager = DatabaseManager(db)
    wide = manager.get_run_metrics("r", align="call")
    long = manager.get_runs_metrics(["r"])
    nanoseconds = long["timestamp"].astype("int64").to_numpy()
    assert (nanoseconds % 1000 == 0).all()  # whole microseconds, as stored
    for name in ("x", "y"):
        assert long[long["metric"] == name]["timestamp"].tolist() == wide["timestamp"].tolist()


async def test_migrating_keeps_the_column_order_when_key_set_ids_follow_no_order(tmp_path: Path) -> None:
    """A schema-9 store whose key set ids are not in first-appearance order migrates with its columns in that order."""
    db = tmp_path / "store.db"
    first = Metric("r", T0, {"loss": 1.0, "ival": 2, "mixed": 3.5, "fint": 4}, 0)
    later = [
        Metric("r", T0 + i, {"loss": float(i), "fint": i} if i % 2 else {"loss": float(i)}, i) for i in range(1, 9)
    ]
    await write(db, [RunLifecycle("r", T0, RunTransition.STARTED), first, *later])
    manager = DatabaseManager(db)
    before = {align: manager.get_run_metrics("r", align=align) for align in ("call", "step")}
    assert list(before["call"].columns) == ["timestamp", "step", "loss", "ival", "mixed", "fint"]
    manager.migrate_schema(9)
    with sqlite3.connect(db) as connection:
        # Schema 9's writer numbered a batch's key sets in the order of their names: the first call's
        # set ("loss", "ival", ...) got a higher id than the later ("loss", "fint").
        ids = [row[0] for row in connection.execute("SELECT id FROM metric_keysets ORDER BY names")]
        connection.execute("UPDATE metric_keysets SET id = -id")
        connection.execute("UPDATE metric_rows SET keyset = -keyset")
        for new_id, old_id in enumerate(ids, start=1):
            connection.execute("UPDATE metric_keysets SET id = ? WHERE id = ?", (new_id, -old_id))
            connection.execute("UPDATE metric_rows SET keyset = ? WHERE keyset = ?", (new_id, -old_id))
        first_keyset = connection.execute("SELECT keyset FROM metric_rows ORDER BY row LIMIT 1").fetchone()[0]
        assert first_keyset > 1  # the first call's key set is not the lowest id
    connection.close()
    manager.migrate_schema()
    for align, frame in before.items():
        pd.testing.assert_frame_equal(manager.get_run_metrics("r", align=align), frame, check_exact=True)


async def test_a_time_window_merged_by_step_keeps_the_step_in_progress_of_its_first_calls(tmp_path: Path) -> None:
    """Calls without a step at a window's start join the step in progress when they were logged, not the next one."""
    db = tmp_path / "store.db"
    readings = [Metric("r", T0 + 1 + i * 0.001, {"cpu": float(i)}, None) for i in range(3000)]  # the sampler's
    await write(
        db,
        [RunLifecycle("r", T0, RunTransition.STARTED), Metric("r", T0 + 0.5, {"loss": 1.0}, 0)],
        readings,
        [Metric("r", T0 + 10, {"loss": 2.0}, 1), Metric("r", T0 + 11, {"cpu": -1.0}, None)],
    )
    manager = DatabaseManager(db)
    whole = manager.get_run_metrics("r", align="step")
    assert whole["step"].tolist() == [0, 1] and whole["cpu"].tolist() == [2999.0, -1.0]
    for start in (T0 + 1 + 2.5, T0 + 1 + 0.5):  # far from the step's call (thousands of calls back), and near
        window = manager.get_run_metrics("r", align="step", start_time=start)
        assert window["step"].tolist() == [0, 1]
        assert window["cpu"].tolist() == [2999.0, -1.0]
        assert window["loss"].isna().tolist() == [True, False]  # step 0's own loss is before the window


async def test_a_metric_named_like_a_renamed_column_keeps_its_own_column(tmp_path: Path) -> None:
    """Metrics "timestamp" and "metric:timestamp" of one run both come back, neither column hiding the other."""
    db = tmp_path / "store.db"
    calls = [
        Metric("r", T0 + 1, {"timestamp": 1.0, "metric:timestamp": 2.0, "step": 3.0}, 0),
        Metric("r", T0 + 2, {"metric:timestamp": 4.0, "timestamp": 5.0}, 1),
    ]
    await write(db, [RunLifecycle("r", T0, RunTransition.STARTED), *calls])
    for align in ("call", "step"):
        frame = DatabaseManager(db).get_run_metrics("r", align=align)
        assert list(frame.columns) == [
            "timestamp",
            "step",
            "metric:metric:timestamp",
            "metric:timestamp",
            "metric:step",
        ]
        assert frame["metric:metric:timestamp"].tolist() == [1.0, 5.0]  # the metric called "timestamp"
        assert frame["metric:timestamp"].tolist() == [2.0, 4.0]
        assert frame["metric:step"].tolist()[0] == 3.0
