"""Snapshot rows: saved views of runs (one JSON document per row, table ``snapshots``, schema version 4).

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
The snapshot stage (:mod:`runwatch.stages.snapshot`) writes the files beside them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

import orjson

from ..schema import migrate

__all__ = ["latest_snapshots", "run_rows", "save_snapshot_rows"]

_PRUNE: Final = (
    "DELETE FROM snapshots WHERE run = ?1 AND id NOT IN "
    "(SELECT id FROM snapshots WHERE run = ?1 ORDER BY ts DESC, id DESC LIMIT ?2)"
)
_LATEST: Final = """
SELECT r.run_id, s.data FROM runs AS r
JOIN snapshots AS s ON s.id = (SELECT id FROM snapshots WHERE run = r.id ORDER BY ts DESC, id DESC LIMIT 1)
WHERE r.run_id IN (SELECT value FROM json_each(?))
"""


def latest_snapshots(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """The latest stored snapshot (JSON text) of each of ``run_ids`` that has one (none without the table)."""
    try:
        rows = conn.execute(_LATEST, (orjson.dumps(list(run_ids)).decode(),)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return {run_id: data for run_id, data in rows}


def run_rows(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, int]:
    """Run id → row id of the runs the store holds (none in an empty store)."""
    try:
        rows = conn.execute(
            "SELECT run_id, id FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(run_ids)).decode(),),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return dict(rows)


def save_snapshot_rows(
    conn: sqlite3.Connection, snapshots: Sequence[tuple[str, bytes]], taken_at: float, max_snapshots: int
) -> tuple[list[str], int]:
    """Insert one row per snapshot of a run the store holds, then keep the newest ``max_snapshots`` per run.

    One write transaction. A store that no sink of this version opened yet is
    migrated first (it lacks the ``snapshots`` table).

    Args:
        conn: a connection that may write, in autocommit mode.
        snapshots: (run id, JSON bytes) pairs.
        taken_at: the rows' ``ts`` (epoch seconds).
        max_snapshots: rows kept per run.

    Returns:
        The runs whose snapshot was stored, and how many older rows were removed.
    """
    ids = run_rows(conn, [run_id for run_id, _ in snapshots])
    found = [(run_id, data) for run_id, data in snapshots if run_id in ids]
    if not found:
        return [], 0
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'").fetchone() is None:
        migrate(conn)
    rotated = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO snapshots (run, ts, data) VALUES (?, ?, ?)",
            [(ids[run_id], taken_at, data.decode()) for run_id, data in found],
        )
        for run_id, _ in found:
            rotated += conn.execute(_PRUNE, (ids[run_id], max_snapshots)).rowcount
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [run_id for run_id, _ in found], rotated
