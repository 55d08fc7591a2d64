"""Images and histograms of a PostgreSQL store: the reads of :mod:`runwatch.store.queries.media`.

Coroutine functions of an asyncpg connection, each on one read snapshot,
returning the SQLite reads' shapes and orders: the statements are built, and
their rows shaped, by :mod:`runwatch.store.queries.media` (SQLite puts ``NULL``
first in ascending order and last in descending order, PostgreSQL the other
way round, so every ordering by ``step`` there says where its ``NULL`` goes).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from ..dialect import POSTGRES
from ..queries.media import (
    histogram_records,
    histograms_statement,
    histograms_where,
    image_record,
    images_statement,
    latest_image_statement,
    thinned_histograms_where,
)
from .reads import run_pk, snapshot

__all__ = [
    "histogram_names",
    "image_at",
    "image_blob",
    "image_names",
    "images_of_run",
    "media_usage",
    "run_histograms",
]


async def _latest_image(connection: asyncpg.Connection, run: int, name: str, step: int | None) -> dict[str, Any] | None:
    params: list[Any] = []
    row = await connection.fetchrow(latest_image_statement(POSTGRES, params, run, name, step), *params)
    return None if row is None else image_record(row)


async def image_names(connection: asyncpg.Connection, run_id: str) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.media.image_names`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        names = await connection.fetch(
            "SELECT name, count(*), min(step), max(step) FROM images WHERE run = $1 GROUP BY name ORDER BY name", run
        )
        out = []
        for name, count, first_step, last_step in names:
            latest = await _latest_image(connection, run, name, None)
            out.append(
                {"name": name, "count": count, "first_step": first_step, "last_step": last_step, "latest": latest}
            )
    return out


async def images_of_run(
    connection: asyncpg.Connection,
    run_id: str,
    name: str | None = None,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.media.images_of_run`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        params: list[Any] = []
        sql = images_statement(POSTGRES, params, run, name, start_step=start_step, end_step=end_step, limit=limit)
        rows = await connection.fetch(sql, *params)
    return [image_record(row) for row in rows]


async def image_at(
    connection: asyncpg.Connection, run_id: str, name: str, step: int | None = None
) -> dict[str, Any] | None:
    """See :func:`runwatch.store.queries.media.image_at`."""
    async with snapshot(connection):
        return await _latest_image(connection, await run_pk(connection, run_id), name, step)


async def image_with_content(
    connection: asyncpg.Connection, run_id: str, name: str, step: int | None = None
) -> tuple[dict[str, Any], tuple[str, bytes] | None] | None:
    """The metadata of an image (as :func:`image_at`) and its content, on one snapshot."""
    async with snapshot(connection):
        row = await _latest_image(connection, await run_pk(connection, run_id), name, step)
        if row is None:
            return None
        return row, await _blob(connection, row["digest"])


async def image_blob(connection: asyncpg.Connection, digest: str) -> tuple[str, bytes] | None:
    """See :func:`runwatch.store.queries.media.image_blob`."""
    async with snapshot(connection):
        return await _blob(connection, digest)


async def _blob(connection: asyncpg.Connection, digest: str) -> tuple[str, bytes] | None:
    row = await connection.fetchrow("SELECT mime, data FROM media_blobs WHERE digest = $1", digest)
    return None if row is None else (str(row["mime"]), bytes(row["data"]))


async def histogram_names(connection: asyncpg.Connection, run_id: str) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.media.histogram_names`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        rows = await connection.fetch(
            "SELECT name, count(*), min(step), max(step) FROM histograms WHERE run = $1 GROUP BY name ORDER BY name",
            run,
        )
    return [{"name": n, "count": c, "first_step": first, "last_step": last} for n, c, first, last in rows]


async def run_histograms(
    connection: asyncpg.Connection,
    run_id: str,
    name: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    max_count: int | None = None,
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.queries.media.run_histograms` (the same thinning, the same rows)."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        params: list[Any] = []
        where = histograms_where(POSTGRES, params, run, name, start_step=start_step, end_step=end_step)
        if max_count is not None:
            total = int(await connection.fetchval(f"SELECT count(*) FROM histograms WHERE {where}", *params))
            where = thinned_histograms_where(where, total, max_count)
        rows = await connection.fetch(histograms_statement(where), *params)
    return histogram_records(rows)


async def media_usage(connection: asyncpg.Connection, run_id: str) -> dict[str, int]:
    """See :func:`runwatch.store.queries.media.media_usage`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        row = await connection.fetchrow("SELECT image_bytes, images_over_budget FROM media_usage WHERE run = $1", run)
    return {"image_bytes": row[0] if row else 0, "images_over_budget": row[1] if row else 0}
