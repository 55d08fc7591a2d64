"""Reads of application sessions (runs of kind ``session``) in a PostgreSQL store.

The PostgreSQL form of :mod:`runwatch.store.queries.sessions`, with the same
shapes (its record and decoding helpers are used as they are).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Final

import asyncpg
import orjson

from ...exceptions import UnknownRunError
from ..queries.common import NO_ID_LIMIT
from ..queries.sessions import COUNTED_EVENTS, _record
from ..session_layout import RUN_STATUSES_OF, SESSION_KIND, decode_metric_value, decode_session_tags, session_status
from .reads import snapshot, state_history_page

__all__ = ["list_sessions", "read_session", "session_metrics", "session_run_status", "session_statistics"]

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
        metrics = await connection.fetch(
            "SELECT m.row, m.ts, k.names, m.vals, m.tags FROM metric_rows m"
            " JOIN metric_keysets k ON k.id = m.keyset WHERE m.run = $1 AND m.row < $2"
            " ORDER BY m.row DESC LIMIT $3",
            run,
            NO_ID_LIMIT if metrics_before is None else metrics_before,
            metrics_limit + 1,
        )
    metric_rows = []
    for number, ts, names, vals, tags in metrics:
        tag_list, _ = decode_session_tags(tags)
        values = [
            (name, decode_metric_value(value))
            for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False)
        ]
        metric_rows.append({"row": number, "timestamp": ts, "values": values, "tags": tag_list})
    return {
        "session": _record(row),
        "events": [
            {"id": id_, "timestamp": ts, "name": name, "level": level, "data": orjson.loads(data)}
            for id_, ts, name, level, data in events
        ],
        "metrics": metric_rows,
        "state_history": history,
    }


async def list_sessions(
    connection: asyncpg.Connection,
    *,
    active: bool | None,
    status: str | None,
    product: str | None,
    limit: int,
    before: int | None,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.sessions.list_sessions`."""
    params: list[Any] = [SESSION_KIND]
    where = ["kind = $1"]
    if active is not None:
        params.append([*RUN_STATUSES_OF["active"], *RUN_STATUSES_OF["hung"]])
        where.append(f"{'' if active else 'NOT '}(status = ANY(${len(params)}::text[]))")
    if status is not None:
        params.append(list(RUN_STATUSES_OF[status]))
        where.append(f"status = ANY(${len(params)}::text[])")
    if product is not None:
        params.append(product)
        where.append(f"(metadata::jsonb ->> 'product') = ${len(params)}")
    if before is not None:
        params.append(before)
        where.append(f"id < ${len(params)}")
    params.append(limit + 1)
    async with snapshot(connection):
        rows = await connection.fetch(
            f"SELECT {_SESSION_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(params)}",
            *params,
        )
    return [_record(tuple(row)) for row in rows]


async def session_statistics(connection: asyncpg.Connection, since: float | None) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.sessions.session_statistics`."""
    import numpy as np

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
        rows = await connection.fetch(
            "SELECT k.names, m.vals FROM metric_rows m JOIN metric_keysets k ON k.id = m.keyset"
            f" WHERE m.run IN ({_SESSION_RUNS}) AND m.ts >= $1",
            floor,
        )
    values: dict[str, list[float]] = {}
    for names, vals in rows:
        for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False):
            values.setdefault(name, []).append(decode_metric_value(value))
    metrics: dict[str, dict[str, Any]] = {}
    for name, series in sorted(values.items()):
        array = np.asarray(series, dtype=np.float64)
        finite = array[~np.isnan(array)]
        metrics[name] = {
            "count": int(array.size),
            "mean": float(finite.mean()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "p95": float(np.percentile(finite, 95)) if finite.size else None,
        }
    created = counts.get("session_created", 0)
    errors = counts.get("session_error", 0)
    return {
        "sessions": {
            "active": by_status["active"] + by_status["hung"],
            "hung": by_status["hung"],
            "crashed": by_status["crashed"],
            "ended": by_status["ended"],
            "total": sum(by_status.values()),
            "created": created,
            "expired": counts.get("session_expired", 0),
        },
        "errors": {
            "total": errors,
            "by_type": errors_by_type,
            "rate": errors / created if created else (float(errors > 0)),
        },
        "suspicious_activity": {"total": counts.get("suspicious_activity", 0), "by_user": suspicious_by_user},
        "metrics": metrics,
    }


async def session_metrics(
    connection: asyncpg.Connection, start: float | None, end: float | None
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.sessions.session_metrics`."""
    async with snapshot(connection):
        rows = await connection.fetch(
            "SELECT r.run_id, m.ts, k.names, m.vals, m.tags FROM metric_rows m"
            " JOIN runs r ON r.id = m.run JOIN metric_keysets k ON k.id = m.keyset"
            f" WHERE m.run IN ({_SESSION_RUNS}) AND m.ts >= $1 AND m.ts <= $2 ORDER BY m.ts, m.run, m.row",
            -math.inf if start is None else start,
            math.inf if end is None else end,
        )
    out = []
    for session_id, ts, names, vals, tags in rows:
        _, fields = decode_session_tags(tags)
        metadata = fields.get("metadata")
        for name, value in zip(orjson.loads(names), orjson.loads(vals), strict=False):
            out.append(
                {
                    "metric_type": name,
                    "session_id": session_id,
                    "user_id": fields.get("user_id"),
                    "value": decode_metric_value(value),
                    "metadata": dict(metadata) if isinstance(metadata, dict) else {},
                    "timestamp": ts,
                }
            )
    return out
