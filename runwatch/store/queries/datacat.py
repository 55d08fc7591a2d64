"""Reads of sessions whole, as datacat's clients read them (see :mod:`runwatch.wire.datacat`).

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
A datacat read has no pages: a session comes with every event, metric and
state patch it holds, each in the order it arrived (row ids), and the
caller builds datacat's document from them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final

import orjson

from ...exceptions import UnknownRunError
from ..calls import Call, read_calls
from ..dialect import SQLITE
from ..session_layout import SESSION_KIND
from ..session_sql import suspended_of_machine
from .common import read_snapshot

__all__ = [
    "add_calls",
    "details_of_run",
    "has_details",
    "session_entries",
    "session_rows",
    "suspended_sessions_of_machine",
]

_RUN_COLUMNS: Final = "id, run_id, status, start_time, end_time, last_heartbeat, metadata"


def has_details(conn: sqlite3.Connection) -> bool:
    """Whether the store keeps details (schema version 9): an older store read as it is has none."""
    return conn.execute("SELECT 1 FROM pragma_table_info('events') WHERE name = 'detail'").fetchone() is not None


def details_of_run(conn: sqlite3.Connection, run: int) -> tuple[dict[int, Any], dict[int, Any]]:
    """The details of a run's events and state patches, by row id (only the rows that have one)."""
    if not has_details(conn):
        return {}, {}
    events = conn.execute("SELECT id, detail FROM events WHERE run = ? AND detail IS NOT NULL", (run,))
    found_events = {id_: orjson.loads(detail) for id_, detail in events}
    states = conn.execute("SELECT id, detail FROM state_history WHERE run = ? AND detail IS NOT NULL", (run,))
    return found_events, {id_: orjson.loads(detail) for id_, detail in states}


def session_rows(conn: sqlite3.Connection, session_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """Sessions with all their rows, in one snapshot of the store.

    Args:
        session_ids: these sessions (``None``: every session, oldest first).

    Returns:
        One dict per session: ``run`` (``run_id``, ``status``, ``start_time``,
        ``end_time``, ``last_heartbeat``, ``metadata``), ``events`` as
        ``(ts, type, level, data, detail)``, ``metrics`` as ``(ts, names,
        values, tags)`` (each logging call rebuilt from the chunks: lists of
        names and values, NaN and ±Inf as floats) and ``states`` as ``(ts,
        patch, detail)``; the other JSON columns as stored (text), every
        list in arrival order.

    Raises:
        UnknownRunError: one of ``session_ids`` is not a session.
    """
    with read_snapshot(conn):
        if session_ids is None:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE kind = ? ORDER BY id", (SESSION_KIND,)
            ).fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE kind = ? AND run_id IN (SELECT value FROM json_each(?))"
                " ORDER BY id",
                (SESSION_KIND, orjson.dumps(list(session_ids)).decode()),
            ).fetchall()
        sessions = session_entries(rows, session_ids)
        if not sessions:
            return []
        runs = orjson.dumps(list(sessions)).decode()
        scope = "run IN (SELECT value FROM json_each(?))"
        detail = "detail" if has_details(conn) else "NULL"
        for run, ts, name, level, data, event_detail in conn.execute(
            f"SELECT run, ts, type, level, data, {detail} FROM events WHERE {scope} AND kind = 'log' ORDER BY id",
            (runs,),
        ):
            sessions[run]["events"].append((ts, name, level, data, event_detail))
        add_calls(sessions, read_calls(conn, runs=list(sessions)))
        for run, ts, patch, state_detail in conn.execute(
            f"SELECT run, ts, patch, {detail} FROM state_history WHERE {scope} ORDER BY id", (runs,)
        ):
            sessions[run]["states"].append((ts, patch, state_detail))
    return list(sessions.values())


def session_entries(rows: Iterable[Sequence[Any]], session_ids: Sequence[str] | None) -> dict[int, dict[str, Any]]:
    """The entries of :func:`session_rows` by run ``pk``, from the sessions' run rows, for every backend.

    Args:
        rows: ``(id, run_id, status, start_time, end_time, last_heartbeat, metadata)`` of each session.
        session_ids: the sessions asked for (``None``: every session).

    Raises:
        UnknownRunError: one of ``session_ids`` has no row.
    """
    rows = list(rows)
    if session_ids is not None:
        found = {row[1] for row in rows}
        for session_id in session_ids:
            if session_id not in found:
                raise UnknownRunError(session_id)
    sessions: dict[int, dict[str, Any]] = {}
    for pk, run_id, status, start, end, heartbeat, metadata in rows:
        decoded = orjson.loads(metadata) if metadata else {}
        sessions[pk] = {
            "run": {
                "run_id": run_id,
                "status": status,
                "start_time": start,
                "end_time": end,
                "last_heartbeat": heartbeat,
                "metadata": decoded if isinstance(decoded, dict) else {},
            },
            "events": [],
            "metrics": [],
            "states": [],
        }
    return sessions


def add_calls(sessions: dict[int, dict[str, Any]], calls: Iterable[Call]) -> None:
    """Add the sessions' logging calls to their entries (see :func:`session_rows`), in the order given."""
    by_id = {session["run"]["run_id"]: session for session in sessions.values()}
    for call in calls:
        names = [name for name, _ in call.values]
        values = [value for _, value in call.values]
        by_id[call.run_id]["metrics"].append((call.time_us / 1e6, names, values, call.tags))


def suspended_sessions_of_machine(conn: sqlite3.Connection, machine_id: str, now: float, timeout: float) -> list[str]:
    """Sessions of ``machine_id`` that datacat calls suspended and not crashed at ``now``.

    Suspended: heartbeated at least once, silent for more than their
    timeout (their own ``heartbeat_timeout_seconds``, else ``timeout``), not
    ended. Crashed: a crash was reported (which also ends it) or detected
    (a ``session_crashed_detected`` event with its effect is stored).
    """
    params: list[Any] = []
    statement = suspended_of_machine(SQLITE, params, machine_id, now, timeout, with_details=has_details(conn))
    return [row[0] for row in conn.execute(statement, params).fetchall()]
