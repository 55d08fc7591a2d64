"""Tags and a free-text note per run: what a user says about a run, kept beside it.

The reads here, and the one write a person makes through the API
(:func:`set_run_annotations`); the pipeline never writes them.

They live in ``run_annotations`` (schema version 8), written by the
dashboard or ``PATCH /api/runs/{run_id}``, read with the runs, exported in
``run.json`` and imported back. Stores older than version 8 read as having no
annotations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from ...wire.annotations import check_note, check_tags
from .common import check_run_id, run_pk

__all__ = [
    "has_annotations",
    "run_annotations",
    "set_run_annotations",
]


def has_annotations(conn: sqlite3.Connection) -> bool:
    """Whether the store has the ``run_annotations`` table (schema version 8 and later)."""
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'run_annotations'").fetchone()
    return row is not None


def run_annotations(conn: sqlite3.Connection, run_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The tags and note of annotated runs: ``{run_id: {"tags": [...], "note": str, "updated_at": float}}``.

    Args:
        conn: a connection to the store.
        run_ids: only these runs; ``None`` for every annotated run.
    """
    if not has_annotations(conn):
        return {}
    sql = "SELECT r.run_id, a.tags, a.note, a.updated_at FROM run_annotations a JOIN runs r ON r.id = a.run"
    params: list[Any] = []
    if run_ids is not None:
        ids = [check_run_id(run_id) for run_id in run_ids]
        sql += " WHERE r.run_id IN (SELECT value FROM json_each(?))"
        params.append(orjson.dumps(ids).decode())
    return {
        run_id: {"tags": orjson.loads(tags), "note": note, "updated_at": updated}
        for run_id, tags, note, updated in conn.execute(sql, params)
    }


def set_run_annotations(
    conn: sqlite3.Connection, run_id: str, *, now: float, tags: object = None, note: object = None
) -> dict[str, Any]:
    """Replace a run's tags and/or note (``None`` leaves that one as it is); commits.

    Args:
        conn: a connection that may write.
        run_id: the run.
        now: the time of the change (epoch seconds).
        tags: the new tags (see :func:`check_tags`), or ``None``.
        note: the new note (see :func:`check_note`), or ``None``.

    Returns:
        The run's annotations after the change: ``tags``, ``note``, ``updated_at``.

    Raises:
        TypeError, ValueError: bad tags or note (nothing is written).
        UnknownRunError: no run has this id.
    """
    new_tags = None if tags is None else check_tags(tags)
    new_note = None if note is None else check_note(note)
    conn.execute("BEGIN IMMEDIATE")
    try:
        run = run_pk(conn, run_id)
        current = conn.execute("SELECT tags, note FROM run_annotations WHERE run = ?", (run,)).fetchone()
        stored_tags = orjson.loads(current[0]) if current else []
        stored_note = current[1] if current else ""
        final_tags = stored_tags if new_tags is None else new_tags
        final_note = stored_note if new_note is None else new_note
        conn.execute(
            "INSERT INTO run_annotations (run, tags, note, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (run) DO UPDATE SET tags = excluded.tags, note = excluded.note,"
            " updated_at = excluded.updated_at",
            (run, orjson.dumps(final_tags).decode(), final_note, now),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return {"tags": final_tags, "note": final_note, "updated_at": now}
