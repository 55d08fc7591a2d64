"""Reads of application sessions (runs of kind ``session``) in a PostgreSQL store.

The PostgreSQL form of :mod:`runwatch.store.queries.sessions` and
:mod:`runwatch.store.queries.datacat`: the statements are PostgreSQL's, the
answers are shaped by those modules' helpers (one snapshot's rows in, the
answer out), so both backends answer alike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import asyncpg
import numpy as np

from ...exceptions import UnknownRunError
from ...session_events import SESSION_KIND, session_status
from ..base import Series
from ..dialect import POSTGRES
from ..queries.common import NO_ID_LIMIT
from ..queries.datacat import add_calls, session_entries
from ..queries.sessions import COUNTED_EVENTS, metric_values_of, session_page, session_record, statistics_of
from ..session_sql import session_list_where, suspended_of_machine
from .chunks import fetch_calls, fetch_series
from .reads import snapshot, state_history_page

__all__ = [
    "list_sessions",
    "read_session",
    "session_metrics",
    "session_rows",
    "session_run_status",
    "session_statistics",
    "suspended_sessions_of_machine",
]

_SESSION_RUNS: Final = f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}'"
_SESSION_COLUMNS: Final = "id, run_id, status, start_time, end_time, updated_at, last_heartbeat, metadata, state"


async def _session_row(connection: asyncpg.Connection, session_id: str) -> tuple[Any, ...]:
    row = await connection.fetchrow(
        f"SELECT {_SESSION_COLUMNS} FROM runs WHERE run_id = $1 AND kind = $2", session_id, SESSION_KIND
    )
    if row is None:
        raise UnknownRunError(session_id)
    return tuple(row)


async def session_run_status(connection: asyncpg.Connection, session_id: str) -> str:
    """See :func:`runwatch.store.queries.sessions.session_run_status`."""
    async with snapshot(connection):
        status: str = (await _session_row(connection, session_id))[2]
    return status


async def read_session(
    connection: asyncpg.Connection,
    session_id: str,
    *,
    events_limit: int,
    events_before: int | None,
    metrics_limit: int,
    metrics_before: int | None,
    history_limit: int,
    history_before: int | None,
) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.sessions.read_session`."""
    async with snapshot(connection):
        row = await _session_row(connection, session_id)
        run = row[0]
        history = await state_history_page(connection, session_id, history_limit + 1, history_before)
        events = await connection.fetch(
            "SELECT id, ts, type, level, data FROM events WHERE run = $1 AND kind = 'log' AND id < $2"
            " ORDER BY id DESC LIMIT $3",
            run,
            NO_ID_LIMIT if events_before is None else events_before,
            events_limit + 1,
        )
        series = {found.name: found for found in await fetch_series(connection, "r.id = $1", run)}
    if metrics_before is not None:  # calls numbered before the cursor
        cut = {name: int(np.searchsorted(found.points.seq, metrics_before)) for name, found in series.items()}
        series = {name: Series(found.run_id, name, found.points.slice(0, cut[name])) for name, found in series.items()}
    return session_page(row, events, series, history, metrics_limit=metrics_limit)


async def list_sessions(
    connection: asyncpg.Connection,
    *,
    active: bool | None,
    status: str | None,
    product: str | None,
    limit: int,
    before: int | None,
    now: float | None = None,
    timeout_seconds: float = 60.0,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.sessions.list_sessions`."""
    params: list[Any] = []
    where = session_list_where(
        POSTGRES,
        params,
        active=active,
        status=status,
        product=product,
        before=before,
        now=now,
        timeout_seconds=timeout_seconds,
    )
    limit_param = POSTGRES.param(params, limit + 1)
    async with snapshot(connection):
        rows = await connection.fetch(
            f"SELECT {_SESSION_COLUMNS} FROM runs WHERE {where} ORDER BY id DESC LIMIT {limit_param}",
            *params,
        )
    return [session_record(tuple(row)) for row in rows]


async def session_rows(connection: asyncpg.Connection, session_ids: Sequence[str] | None) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.datacat.session_rows`."""
    columns = "id, run_id, status, start_time, end_time, last_heartbeat, metadata"
    async with snapshot(connection):
        if session_ids is None:
            rows = await connection.fetch(f"SELECT {columns} FROM runs WHERE kind = $1 ORDER BY id", SESSION_KIND)
        else:
            rows = await connection.fetch(
                f"SELECT {columns} FROM runs WHERE kind = $1 AND run_id = ANY($2::text[]) ORDER BY id",
                SESSION_KIND,
                list(session_ids),
            )
        sessions = session_entries(rows, session_ids)
        if not sessions:
            return []
        runs = list(sessions)
        for run, ts, name, level, data, detail in await connection.fetch(
            "SELECT run, ts, type, level, data, detail FROM events WHERE run = ANY($1::bigint[]) AND kind = 'log'"
            " ORDER BY id",
            runs,
        ):
            sessions[run]["events"].append((ts, name, level, data, detail))
        add_calls(sessions, await fetch_calls(connection, runs))
        for run, ts, patch, detail in await connection.fetch(
            "SELECT run, ts, patch, detail FROM state_history WHERE run = ANY($1::bigint[]) ORDER BY id", runs
        ):
            sessions[run]["states"].append((ts, patch, detail))
    return list(sessions.values())


async def suspended_sessions_of_machine(
    connection: asyncpg.Connection, machine_id: str, now: float, timeout: float
) -> list[str]:
    """See :func:`runwatch.store.queries.datacat.suspended_sessions_of_machine`."""
    params: list[Any] = []
    statement = suspended_of_machine(POSTGRES, params, machine_id, now, timeout)
    async with snapshot(connection):
        rows = await connection.fetch(statement, *params)
    return [row[0] for row in rows]


async def session_statistics(connection: asyncpg.Connection, since: float | None) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.sessions.session_statistics`."""
    floor = -math.inf if since is None else since
    events = f"FROM events WHERE run IN ({_SESSION_RUNS}) AND kind = 'log' AND ts >= $1"
    async with snapshot(connection):
        by_status: Counter[str] = Counter()
        for status, count in await connection.fetch(
            f"SELECT status, count(*) FROM runs WHERE kind = '{SESSION_KIND}' GROUP BY status"
        ):
            by_status[session_status(status)] += count
        counts = {
            row[0]: row[1]
            for row in await connection.fetch(
                f"SELECT type, count(*) {events} AND type = ANY($2::text[]) GROUP BY type", floor, list(COUNTED_EVENTS)
            )
        }
        errors_by_type = {
            str(kind if kind is not None else "unknown"): count
            for kind, count in await connection.fetch(
                f"SELECT data::jsonb #>> '{{details,error_type}}', count(*) {events} AND type = 'session_error'"
                " GROUP BY 1",
                floor,
            )
        }
        suspicious_by_user = {
            str(user): count
            for user, count in await connection.fetch(
                f"SELECT data::jsonb ->> 'user_id', count(*) {events} AND type = 'suspicious_activity' GROUP BY 1",
                floor,
            )
        }
        found = await fetch_series(
            connection, f"r.kind = '{SESSION_KIND}'", time_low=since, columns=frozenset({"value"})
        )
    return statistics_of(by_status, counts, errors_by_type, suspicious_by_user, found)


async def session_metrics(
    connection: asyncpg.Connection, start: float | None, end: float | None
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.sessions.session_metrics`."""
    async with snapshot(connection):
        found = await fetch_series(connection, f"r.kind = '{SESSION_KIND}'", time_low=start, time_high=end)
    return metric_values_of(found)
