"""Stored rows of a PostgreSQL store back as typed events: what the live tail and ``runwatch sync`` read.

The PostgreSQL form of :mod:`runwatch.store.replay`, with its decoders: the
same streams (``metric_rows`` by store-wide row number, ``events`` and
``state_history`` by id), the same events back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import orjson

from ..base import RunPage, StoredRow
from ..replay import decode_event_row, decode_metric_row, decode_state_row
from .reads import run_pk, snapshot

__all__ = ["KeysetNames", "run_row_count", "run_rows"]


class KeysetNames:
    """The metric names of each key set, loaded as rows name key sets it has not seen."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, ...]] = {}

    async def names(self, connection: asyncpg.Connection, keyset: int) -> tuple[str, ...]:
        """The ordered names of ``keyset`` (read from the store the first time).

        Raises:
            KeyError: the store has no such key set.
        """
        found = self._names.get(keyset)
        if found is None:
            for key, names in await connection.fetch("SELECT id, names FROM metric_keysets WHERE id >= $1", keyset):
                self._names[key] = tuple(orjson.loads(names))
            found = self._names[keyset]
        return found


_RUN_ROW_QUERIES: Final[Mapping[str, str]] = {
    "metric_rows": "SELECT row, step, ts, keyset, vals, tags FROM metric_rows WHERE run = $1 AND row >= $2"
    " ORDER BY row LIMIT $3",
    "events": "SELECT id, ts, kind, type, level, data FROM events WHERE run = $1 AND id >= $2 ORDER BY id LIMIT $3",
    "state_history": "SELECT id, ts, patch FROM state_history WHERE run = $1 AND id >= $2 ORDER BY id LIMIT $3",
}


async def decode_row(connection: asyncpg.Connection, keysets: KeysetNames, table: str, run_id: str, row: Any) -> Any:
    """The event of one row of ``table`` (its columns after the position, as :data:`_RUN_ROW_QUERIES` select them).

    Raises:
        ValueError / TypeError / KeyError: the row does not decode.
    """
    if table == "metric_rows":
        step, ts, keyset, vals, tags = row
        return decode_metric_row(run_id, step, ts, await keysets.names(connection, keyset), vals, tags)
    if table == "events":
        return decode_event_row(run_id, *row)
    return decode_state_row(run_id, *row)


async def run_rows(connection: asyncpg.Connection, run_id: str, table: str, start: int, limit: int) -> RunPage:
    """See :func:`runwatch.store.replay.run_rows`."""
    query = _RUN_ROW_QUERIES.get(table)
    if query is None:
        raise ValueError(f"stream must be one of {', '.join(_RUN_ROW_QUERIES)}, got {table!r}")
    keysets = KeysetNames()
    out: list[StoredRow] = []
    undecodable = 0
    async with snapshot(connection):
        rows = await connection.fetch(query, await run_pk(connection, run_id), start, limit)
        for row in rows:
            try:
                event = await decode_row(connection, keysets, table, run_id, tuple(row)[1:])
            except (ValueError, TypeError, KeyError):
                undecodable += 1
                continue
            out.append(StoredRow(table, row[0], event))
    return RunPage(out, len(rows), undecodable, rows[-1][0] + 1 if rows else start)


async def run_row_count(connection: asyncpg.Connection, run_id: str) -> int:
    """See :func:`runwatch.store.replay.run_row_count`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        total = 0
        for table in _RUN_ROW_QUERIES:
            total += int(await connection.fetchval(f"SELECT count(*) FROM {table} WHERE run = $1", run))
    return total
