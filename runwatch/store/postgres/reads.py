"""Reads of a PostgreSQL store: coroutine functions of an asyncpg connection, by entity.

Each is the PostgreSQL form of the SQLite store's read of the same name
(:mod:`runwatch.store.queries`), returning the same shapes: the argument
checks, the decoding of stored values and the shaping of the results are
that module's own functions, so the two stores answer alike. A read that
runs several statements runs them in one read-only repeatable-read
transaction (one snapshot), as the SQLite reads do in one WAL snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from ...exceptions import StoreError, UnknownRunError
from ...wire.annotations import check_note, check_tags
from ..base import RunActivity, SeriesSummary
from ..chunk_reads import summaries_of
from ..dialect import POSTGRES
from ..queries.common import (
    MIN_READ_VERSION,
    NO_ID_LIMIT,
    check_limit,
    check_run_id,
    json_value,
)
from ..queries.events import (
    alert_events_statement,
    alert_records,
    checked_event_filters,
    current_alerts,
    event_records,
    run_events_statement,
)
from ..queries.runs import _metric_summary, list_runs_statement
from .chunks import SUMMARY_SELECT, summary_rows
from .schema import SCHEMA_VERSION, current_version

__all__ = [
    "alert_events",
    "alerts",
    "annotate_run",
    "check_created",
    "has_run",
    "latest_snapshots",
    "list_runs",
    "live_writers",
    "run_annotations",
    "run_activity",
    "run_events",
    "run_keys",
    "read_summaries",
    "run_state",
    "run_statuses",
    "run_summary",
    "snapshot",
    "state_history_page",
    "state_history",
    "stored_batch_digest",
    "stored_runs",
]


@asynccontextmanager
async def snapshot(connection: asyncpg.Connection, *, check_schema: bool = True) -> AsyncIterator[bool]:
    """A read-only transaction on one snapshot; yields whether the store exists (has a schema).

    Raises:
        StoreError: with ``check_schema``, the store does not exist or has a
            schema this runwatch cannot read.
    """
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        version = await current_version(connection)
        if check_schema and not MIN_READ_VERSION <= version <= SCHEMA_VERSION:
            if version == 0:
                raise StoreError("no runwatch store in this database; call init_database() to create it")
            hint = "upgrade runwatch" if version > SCHEMA_VERSION else "call init_database() or migrate_schema()"
            raise StoreError(
                f"the store has schema version {version}, this runwatch reads versions "
                f"{MIN_READ_VERSION} to {SCHEMA_VERSION}; {hint}"
            )
        yield version > 0


async def run_pk(connection: asyncpg.Connection, run_id: str) -> int:
    check_run_id(run_id)
    run = await connection.fetchval("SELECT id FROM runs WHERE run_id = $1", run_id)
    if run is None:
        raise UnknownRunError(run_id)
    return int(run)


async def run_keys(connection: asyncpg.Connection, run_ids: Iterable[str]) -> dict[str, int]:
    """Run id → the run's key in ``runs`` (``UnknownRunError`` for a run the store does not hold)."""
    keys: dict[str, int] = {}
    for run_id in run_ids:
        if run_id not in keys:
            keys[run_id] = await run_pk(connection, run_id)
    return keys


# -- runs ------------------------------------------------------------------------------------------


async def list_runs(
    connection: asyncpg.Connection,
    *,
    limit: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    exclude_kind: str | None = None,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.list_runs`."""
    params: list[Any] = []
    sql = list_runs_statement(POSTGRES, params, limit=limit, status=status, kind=kind, exclude_kind=exclude_kind)
    async with snapshot(connection):
        rows = await connection.fetch(sql, *params)
    return [dict(row) for row in rows]


async def run_summary(connection: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.run_summary`."""
    check_run_id(run_id)
    async with snapshot(connection):
        row = await connection.fetchrow(
            "SELECT id, run_id, kind, status, start_time, end_time, updated_at, last_heartbeat, config, metadata,"
            " final_reward, total_steps, total_episodes, state, owner FROM runs WHERE run_id = $1",
            run_id,
        )
        if row is None:
            raise UnknownRunError(run_id)
        counts = await connection.fetch(
            "SELECT type, count(*) AS n FROM events WHERE run = $1 GROUP BY type ORDER BY type", row["id"]
        )
        stats = await connection.fetch(
            "SELECT name, count, nan_count, sum, min, max, last, last_ts, last_step"
            " FROM metric_stats WHERE run = $1 ORDER BY name",
            row["id"],
        )
        annotation = await connection.fetchrow("SELECT tags, note FROM run_annotations WHERE run = $1", row["id"])
    end, start, updated = row["end_time"], row["start_time"], row["updated_at"]
    return {
        "run_id": row["run_id"],
        "kind": row["kind"],
        "status": row["status"],
        "start_time": start,
        "end_time": end,
        "updated_at": updated,
        "last_heartbeat": row["last_heartbeat"],
        "duration_seconds": max(0.0, (end if end is not None else updated) - start),
        "config": json_value(row["config"], {}),
        "metadata": json_value(row["metadata"]),
        "final_reward": row["final_reward"],
        "total_steps": row["total_steps"],
        "total_episodes": row["total_episodes"],
        "state": json_value(row["state"], {}),
        "owner": row["owner"],
        "tags": json_value(annotation["tags"], []) if annotation else [],
        "note": annotation["note"] if annotation else "",
        "event_counts": {count["type"]: count["n"] for count in counts},
        "metrics": {stat[0]: _metric_summary(*stat[1:]) for stat in stats},
    }


async def run_state(connection: asyncpg.Connection, run_id: str) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.run_state`."""
    check_run_id(run_id)
    async with snapshot(connection):
        state = await connection.fetchval("SELECT state FROM runs WHERE run_id = $1", run_id)
    if state is None:
        raise UnknownRunError(run_id)
    found: dict[str, Any] = json_value(state, {})
    return found


async def state_history(
    connection: asyncpg.Connection, run_id: str, limit: int | None = None, *, before_id: int | None = None
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.state_history`."""
    check_limit(limit)
    if before_id is not None and (type(before_id) is not int or before_id < 0):
        raise ValueError(f"before_id must be a non-negative integer or None, got {before_id!r}")
    async with snapshot(connection):
        return await state_history_page(connection, run_id, limit, before_id)


async def state_history_page(
    connection: asyncpg.Connection, run_id: str, limit: int | None, before_id: int | None
) -> list[dict[str, Any]]:
    run = await run_pk(connection, run_id)
    rows = await connection.fetch(
        "SELECT id, ts, patch FROM (SELECT id, ts, patch FROM state_history WHERE run = $1 AND id < $2"
        " ORDER BY id DESC LIMIT $3) AS page ORDER BY id",
        run,
        NO_ID_LIMIT if before_id is None else before_id,
        limit,
    )
    return [{"id": row["id"], "timestamp": row["ts"], "patch": orjson.loads(row["patch"])} for row in rows]


async def run_statuses(connection: asyncpg.Connection, run_ids: list[str]) -> dict[str, str]:
    """The stored status of each of ``run_ids`` the store has (none in a store not created yet)."""
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return {}
        rows = await connection.fetch("SELECT run_id, status FROM runs WHERE run_id = ANY($1::text[])", run_ids)
    return {row["run_id"]: row["status"] for row in rows}


async def run_activity(connection: asyncpg.Connection, run_ids: list[str] | None) -> list[RunActivity]:
    """The activity of ``run_ids`` (``None``: of every run that is running or hung)."""
    columns = "run_id, status, last_heartbeat, updated_at, metadata"
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return []
        if run_ids is None:
            rows = await connection.fetch(f"SELECT {columns} FROM runs WHERE status IN ('running', 'hung')")
        else:
            rows = await connection.fetch(f"SELECT {columns} FROM runs WHERE run_id = ANY($1::text[])", run_ids)
    out = []
    for run_id, status, heartbeat, updated_at, metadata in rows:
        parsed = orjson.loads(metadata) if metadata else None
        out.append(RunActivity(run_id, status, heartbeat, updated_at, parsed if isinstance(parsed, dict) else None))
    return out


async def has_run(connection: asyncpg.Connection, run_id: str) -> bool:
    """Whether the store holds a run with this id."""
    async with snapshot(connection, check_schema=False) as exists:
        return exists and await connection.fetchval("SELECT 1 FROM runs WHERE run_id = $1", run_id) is not None


async def stored_batch_digest(connection: asyncpg.Connection, run_id: str, batch_id: str) -> str | None:
    """See :func:`runwatch.store.queries.runs.stored_batch_digest`."""
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return None
        row = await connection.fetchrow(
            "SELECT digest FROM ingest_batches WHERE batch_id = $1 AND scope IN ($2, '') ORDER BY scope DESC LIMIT 1",
            batch_id,
            run_id,
        )
    return None if row is None else (row["digest"] or "")


async def stored_runs(connection: asyncpg.Connection, run_ids: Sequence[str]) -> set[str]:
    """Which of ``run_ids`` the store holds."""
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return set()
        rows = await connection.fetch("SELECT run_id FROM runs WHERE run_id = ANY($1::text[])", list(run_ids))
    return {row["run_id"] for row in rows}


async def live_writers(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.runs.live_writers`."""
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return []
        rows = await connection.fetch(
            "SELECT owner, run_id, GREATEST(updated_at, COALESCE(last_heartbeat, 0)) AS active FROM runs"
            " WHERE status IN ('running', 'paused', 'hung') ORDER BY id"
        )
    writers: dict[str | None, dict[str, Any]] = {}
    for owner, run_id, active in rows:
        entry = writers.setdefault(owner, {"owner": owner, "runs": [], "last_activity": active})
        entry["runs"].append(run_id)
        entry["last_activity"] = max(entry["last_activity"], active)
    return sorted(writers.values(), key=lambda entry: -entry["last_activity"])


async def run_annotations(connection: asyncpg.Connection, runs: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The tags and note of those of ``runs`` (keys of ``runs``) that have any, by key."""
    rows = await connection.fetch(
        "SELECT run, tags, note, updated_at FROM run_annotations WHERE run = ANY($1::bigint[])", list(runs)
    )
    return {
        row["run"]: {"tags": orjson.loads(row["tags"]), "note": row["note"], "updated_at": row["updated_at"]}
        for row in rows
    }


async def annotate_run(
    connection: asyncpg.Connection, run_id: str, *, now: float, tags: object = None, note: object = None
) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.annotations.set_run_annotations`."""
    new_tags = None if tags is None else check_tags(tags)
    new_note = None if note is None else check_note(note)
    await check_created(connection)
    async with connection.transaction():
        run = await run_pk(connection, run_id)
        current = await connection.fetchrow("SELECT tags, note FROM run_annotations WHERE run = $1 FOR UPDATE", run)
        final_tags = (orjson.loads(current["tags"]) if current else []) if new_tags is None else new_tags
        final_note = (current["note"] if current else "") if new_note is None else new_note
        await connection.execute(
            "INSERT INTO run_annotations (run, tags, note, updated_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (run) DO UPDATE SET tags = excluded.tags, note = excluded.note,"
            " updated_at = excluded.updated_at",
            run,
            orjson.dumps(final_tags).decode(),
            final_note,
            now,
        )
    return {"tags": final_tags, "note": final_note, "updated_at": now}


# -- events and alerts -----------------------------------------------------------------------------


async def run_events(
    connection: asyncpg.Connection,
    run_id: str,
    event_type: str | None = None,
    start_time: Any = None,
    end_time: Any = None,
    *,
    kind: str | None = None,
    level: str | None = None,
    limit: int | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.run_events`."""
    start, end = checked_event_filters(
        limit=limit,
        event_type=event_type,
        kind=kind,
        level=level,
        after_id=after_id,
        before_id=before_id,
        start_time=start_time,
        end_time=end_time,
    )
    async with snapshot(connection):
        params: list[Any] = []
        sql = run_events_statement(
            POSTGRES,
            params,
            await run_pk(connection, run_id),
            event_type=event_type,
            kind=kind,
            level=level,
            start=start,
            end=end,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
            limit=limit,
        )
        rows = await connection.fetch(sql, *params)
    return event_records(rows)


async def alert_events(
    connection: asyncpg.Connection,
    *,
    run_id: str | None = None,
    severity: str | None = None,
    rule: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.alert_events`."""
    params: list[Any] = []
    sql = alert_events_statement(
        POSTGRES, params, run_id=run_id, severity=severity, rule=rule, before_id=before_id, limit=limit
    )
    async with snapshot(connection):
        rows = await connection.fetch(sql, *params)
    return alert_records(rows)


async def alerts(
    connection: asyncpg.Connection,
    *,
    run_id: str | None = None,
    severity: str | None = None,
    states: tuple[str, ...] = ("pending", "firing"),
    limit: int = 100_000,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.alerts` (the latest transition of each instance is its state)."""
    transitions = await alert_events(connection, run_id=run_id, severity=severity, limit=limit)  # newest first
    return current_alerts(transitions, states)


# -- metrics ---------------------------------------------------------------------------------------


async def read_summaries(
    connection: asyncpg.Connection, run_id: str, names: Sequence[str] | None = None
) -> dict[str, SeriesSummary]:
    """See :func:`runwatch.store.chunk_store.read_summaries` (integer chunks' exact figures from their twins)."""
    wanted = None if names is None else _checked_names(names)
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        rows = await connection.fetch(
            f"{SUMMARY_SELECT} FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
            " WHERE s.run = $1 AND ($2::text[] IS NULL OR s.name = ANY($2::text[])) ORDER BY s.id, c.seq_first",
            run,
            wanted,
        )
    return summaries_of(summary_rows(rows), wanted)


def _checked_names(names: object) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of metric names or None, got {names!r}")
    checked = list(names)
    for name in checked:
        if type(name) is not str or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
    return checked


async def latest_snapshots(connection: asyncpg.Connection, run_ids: Sequence[str]) -> dict[str, str]:
    """The latest stored snapshot (JSON text) of each of ``run_ids`` that has one."""
    async with snapshot(connection, check_schema=False) as exists:
        if not exists:
            return {}
        rows = await connection.fetch(
            "SELECT r.run_id, s.data FROM runs AS r"
            " JOIN LATERAL (SELECT data FROM snapshots WHERE run = r.id ORDER BY ts DESC, id DESC LIMIT 1) AS s"
            " ON true WHERE r.run_id = ANY($1::text[])",
            list(run_ids),
        )
    return {row["run_id"]: row["data"] for row in rows}


async def check_created(connection: asyncpg.Connection) -> None:
    """Raise :class:`StoreError` unless the store exists with a schema this runwatch reads."""
    async with snapshot(connection):
        pass
