"""Images and histograms of a PostgreSQL store: the reads of :mod:`runwatch.store.queries.media`.

Coroutine functions of an asyncpg connection, each on one read snapshot,
returning the SQLite reads' shapes and orders. SQLite puts ``NULL`` first
in ascending order and last in descending order; PostgreSQL the other way
round, so every ordering by ``step`` here says where its ``NULL`` goes.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from ..queries.media import HISTOGRAM_COLUMNS, IMAGE_COLUMNS, IMAGE_SELECT
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


def _image(row: asyncpg.Record) -> dict[str, Any]:
    return dict(zip(IMAGE_COLUMNS, row, strict=True))


async def _latest_image(connection: asyncpg.Connection, run: int, name: str, step: int | None) -> dict[str, Any] | None:
    where = "i.run = $1 AND i.name = $2" + ("" if step is None else " AND i.step <= $3")
    params: tuple[Any, ...] = (run, name) if step is None else (run, name, step)
    row = await connection.fetchrow(
        f"{IMAGE_SELECT} WHERE {where} ORDER BY i.step DESC NULLS LAST, i.id DESC LIMIT 1", *params
    )
    return None if row is None else _image(row)


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
        clauses, params = ["i.run = $1"], [run]
        for clause, value in (("i.name =", name), ("i.step >=", start_step), ("i.step <=", end_step)):
            if value is not None:
                params.append(value)  # type: ignore[arg-type]  # names and steps alike are bound
                clauses.append(f"{clause} ${len(params)}")
        sql = f"{IMAGE_SELECT} WHERE {' AND '.join(clauses)} ORDER BY i.name, i.step NULLS FIRST, i.id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = await connection.fetch(sql, *params)
    return [_image(row) for row in rows]


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
    columns = ", ".join(HISTOGRAM_COLUMNS)
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        clauses, params = ["run = $1 AND name = $2"], [run, name]
        for clause, value in (("step >=", start_step), ("step <=", end_step)):
            if value is not None:
                params.append(value)
                clauses.append(f"{clause} ${len(params)}")
        where = " AND ".join(clauses)
        order = "ORDER BY step NULLS FIRST, id"
        if max_count is not None:
            total = int(await connection.fetchval(f"SELECT count(*) FROM histograms WHERE {where}", *params))
            if total > max_count:
                # Every stride-th row in order, and the last; a stride that gives at most max_count of them.
                last = total - 1
                keep = f"n = {last}"
                if max_count > 1:
                    keep += f" OR n % {-(-last // (max_count - 1))} = 0"
                where = (
                    f"id IN (SELECT id FROM (SELECT id, row_number() OVER ({order}) - 1 AS n"
                    f" FROM histograms WHERE {where}) AS numbered WHERE {keep})"
                )
        rows = await connection.fetch(f"SELECT {columns} FROM histograms WHERE {where} {order}", *params)
    out = []
    for row in rows:
        record = dict(zip(HISTOGRAM_COLUMNS, row, strict=True))
        record["counts"] = orjson.loads(record["counts"])
        out.append(record)
    return out


async def media_usage(connection: asyncpg.Connection, run_id: str) -> dict[str, int]:
    """See :func:`runwatch.store.queries.media.media_usage`."""
    async with snapshot(connection):
        run = await run_pk(connection, run_id)
        row = await connection.fetchrow("SELECT image_bytes, images_over_budget FROM media_usage WHERE run = $1", run)
    return {"image_bytes": row[0] if row else 0, "images_over_budget": row[1] if row else 0}
