"""Test helpers over the chunk layout: counting stored calls and rows, and moving stored metric times.

Tests that checked the store with SQL on per-call rows use these instead: a
logging call is one ``seq`` shared by the points of every series it logged.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from runwatch.store.chunk_store import chunk_statements
from runwatch.store.chunks import ChunkColumns, ChunkRow, decode_chunk, encode_chunk
from runwatch.store.series import ChunkWrite, ChunkWrites
from runwatch.store.sqlite import SQLiteStore

#: The tables holding a run's rows (metric chunks through the run's series).
RUN_TABLES = ("metric_series", "metric_chunks", "metric_rollups", "events", "state_history", "metric_stats")
_OF_RUN = {"metric_chunks": "series IN (SELECT id FROM metric_series WHERE run = ?)"}
_ALL = frozenset({"seq", "step", "time", "value", "tags"})


def rows_of_run(connection: sqlite3.Connection, table: str, run: int) -> int:
    """Rows of ``table`` that belong to the run with key ``run``."""
    condition = _OF_RUN.get(table, "run = ?")
    return int(connection.execute(f"SELECT count(*) FROM {table} WHERE {condition}", (run,)).fetchone()[0])


def orphan_rows(connection: sqlite3.Connection, table: str) -> int:
    """Rows of ``table`` whose run is gone."""
    if table == "metric_chunks":
        sql = "SELECT count(*) FROM metric_chunks WHERE series NOT IN (SELECT id FROM metric_series)"
    else:
        sql = f"SELECT count(*) FROM {table} WHERE run NOT IN (SELECT id FROM runs)"
    return int(connection.execute(sql).fetchone()[0])


def stored_calls(db: Path | str, run_id: str | None = None) -> int:
    """How many logging calls the store holds (of one run, or of all runs)."""
    store = SQLiteStore(db)
    if run_id is None:
        with sqlite3.connect(db) as connection:
            run_ids = [row[0] for row in connection.execute("SELECT run_id FROM runs")]
        connection.close()
    else:
        run_ids = [run_id]
    total = 0
    for run in run_ids:
        series = store.read_series(run, columns=("seq",))
        if series:
            total += len(np.unique(np.concatenate([found.points.seq for found in series.values()])))
    return total


def stored_steps(db: Path | str, run_id: str) -> list[int | None]:
    """The step of each of a run's logging calls, in call order (None: the call gave none)."""
    series = SQLiteStore(db).read_series(run_id, columns=("seq", "step"))
    steps: dict[int, int | None] = {}
    for found in series.values():
        points = found.points
        valid = [True] * len(points.seq) if points.step_valid is None else points.step_valid.tolist()
        for seq, step, ok in zip(points.seq.tolist(), points.step.tolist(), valid, strict=True):
            steps[seq] = step if ok else None
    return [steps[seq] for seq in sorted(steps)]


def shift_metric_times(db: Path | str, run_id: str, seconds: float, *, calls: int | None = None) -> None:
    """Move the times of a run's first ``calls`` logging calls (all: None) by ``seconds``, rewriting their chunks."""
    shift = round(seconds * 1e6)
    with sqlite3.connect(db, isolation_level=None) as connection:
        connection.execute("BEGIN IMMEDIATE")
        (run,) = connection.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        rows = connection.execute(
            "SELECT c.rowid, s.id, s.name, c.sealed, c.block_points, c.count, c.value_type, c.seqs, c.steps,"
            " c.step_mask, c.times, c.vals, c.tags FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
            " WHERE s.run = ?",
            (run,),
        ).fetchall()
        decoded = [(row, decode_chunk(ChunkRow(*row[5:]), _ALL)) for row in rows]
        all_calls = np.unique(np.concatenate([points.seq for _, points in decoded])) if decoded else []
        moved = set((all_calls if calls is None else all_calls[:calls]).tolist())
        writes = ChunkWrites()
        ids = {}
        for (rowid, series, name, sealed, block_points, *_), points in decoded:
            hit = np.array([seq in moved for seq in points.seq.tolist()], dtype=np.bool_)
            if not hit.any():
                continue
            times = points.time_us.copy()
            times[hit] += shift
            changed = ChunkColumns(points.seq, points.step, points.step_valid, times, points.values, points.tags)
            connection.execute("DELETE FROM metric_chunks WHERE rowid = ?", (rowid,))
            ids[(run, name)] = series
            writes.inserts.append(
                ChunkWrite((run, name), bool(sealed), encode_chunk(changed, block_points=block_points))
            )
        for sql, params in chunk_statements(writes, ids):
            connection.execute(sql, params)
        connection.execute("COMMIT")
    connection.close()


def metric_values(db: Path | str, run_id: str, name: str) -> list[float | int]:
    """One metric's stored values, in call order (empty when the run never logged it)."""
    found = SQLiteStore(db).read_series(run_id, [name], columns=("seq", "value")).get(name)
    return [] if found is None else found.points.values.tolist()
