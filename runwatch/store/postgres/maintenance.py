"""Maintenance of a PostgreSQL store: retention, downsampling, crash repair, snapshots, sizes.

The same jobs, rules and counters as the SQLite store's
(:mod:`runwatch.store.lifecycle`, :mod:`runwatch.store.downsample`): a run
is old when it is not active and its last sign of life is before the
cutoff, and goes with every row of it; downsampling replaces whole buckets
of an inactive run's old metric rows by rollups. The passes work in short
transactions of at most ``batch_rows`` rows, so a long cleanup never holds
locks long; PostgreSQL locks rows, not the store, so writers of other runs
never wait for them at all.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Final

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from ...exceptions import StoreError, UnknownRunError
from ...session_events import MONITOR_KIND, SESSION_KIND
from ..chunk_edit import REMOVAL_COLUMNS, PointRange, plan_removal
from ..downsample import ROLLUP_COLUMNS, DownsampleBuckets, FirstCalls, rollup_rows
from ..lifecycle import ACTIVE_SQL, RUN_TABLES, CleanupRuns, check_cutoff
from ..queries import check_run_id
from ..queries.runs import _parse_owner, _process_alive
from .chunks import CHUNK_RECORD_COLUMNS, chunk_record
from .schema import current_version

__all__ = [
    "CleanupPass",
    "DownsamplePass",
    "count_old_data",
    "forget_ingested_batches",
    "mark_crashed_runs",
    "metric_rollups",
    "remove_old_sessions",
    "save_snapshots",
    "store_info",
]

# A run is old when inactive and its last sign of life is before $cutoff (GREATEST skips NULLs).
_OLD_RUN: Final = f"status NOT IN ({ACTIVE_SQL}) AND GREATEST(end_time, updated_at, last_heartbeat) < $1"

# One chunk of a run's rows ($1: run, $2: how many).
_DELETE_CHUNK: Final = {
    "metric_chunks": "DELETE FROM metric_chunks WHERE rowid IN (SELECT c.rowid FROM metric_series AS s"
    " JOIN metric_chunks AS c ON c.series = s.id WHERE s.run = $1 LIMIT $2)",
    "metric_series": "DELETE FROM metric_series WHERE id IN (SELECT id FROM metric_series WHERE run = $1 LIMIT $2)",
    "metric_rollups": "DELETE FROM metric_rollups WHERE run = $1 AND (name, first_row) IN"
    " (SELECT name, first_row FROM metric_rollups WHERE run = $1 LIMIT $2)",
    "events": "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE run = $1 LIMIT $2)",
    "state_history": "DELETE FROM state_history WHERE id IN (SELECT id FROM state_history WHERE run = $1 LIMIT $2)",
    "metric_stats": "DELETE FROM metric_stats WHERE run = $1 AND name IN"
    " (SELECT name FROM metric_stats WHERE run = $1 LIMIT $2)",
    "snapshots": "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots WHERE run = $1 LIMIT $2)",
    "images": "DELETE FROM images WHERE id IN (SELECT id FROM images WHERE run = $1 LIMIT $2) RETURNING digest",
    "histograms": "DELETE FROM histograms WHERE id IN (SELECT id FROM histograms WHERE run = $1 LIMIT $2)",
    "media_usage": "DELETE FROM media_usage WHERE run = $1 AND $2 > 0",
    "run_annotations": "DELETE FROM run_annotations WHERE run = $1 AND $2 > 0",
}

# How a table's rows of run r.id are found (metric_chunks through its run's series).
_OF_RUN: Final = {"metric_chunks": "series IN (SELECT id FROM metric_series WHERE run = r.id)"}

#: The contents among $1 that no image names any more (an image content goes with its last image).
_REMOVE_ORPHAN_BLOBS: Final = (
    "DELETE FROM media_blobs WHERE digest = ANY($1::text[])"
    " AND NOT EXISTS (SELECT 1 FROM images WHERE images.digest = media_blobs.digest)"
)


async def _delete_chunk(connection: asyncpg.Connection, table: str, run: int, limit: int) -> int:
    """Remove up to ``limit`` rows of ``run`` from ``table`` (images with the contents no image names now)."""
    if table == "images":
        digests = [row[0] for row in await connection.fetch(_DELETE_CHUNK[table], run, limit)]
        if digests:
            await connection.execute(_REMOVE_ORPHAN_BLOBS, sorted(set(digests)))
        return len(digests)
    return _row_count(await connection.execute(_DELETE_CHUNK[table], run, limit))


def _row_count(status: str) -> int:
    """The row count in a command status (``"DELETE 12"``, ``"INSERT 0 3"``)."""
    return int(status.rsplit(" ", 1)[-1])


async def _existing_tables(connection: asyncpg.Connection, names: tuple[str, ...]) -> tuple[str, ...]:
    present = {
        row[0]
        for row in await connection.fetch(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname = ANY($1::text[])"
            " AND pg_table_is_visible(c.oid)",
            list(names),
        )
    }
    return tuple(name for name in names if name in present)


async def count_old_data(connection: asyncpg.Connection, older_than: float) -> int:
    """How many records a cleanup at ``older_than`` would remove now: the old runs plus all their rows."""
    cutoff = check_cutoff(older_than)
    tables = await _existing_tables(connection, RUN_TABLES)
    per_run = " + ".join(f"(SELECT count(*) FROM {table} WHERE {_OF_RUN.get(table, 'run = r.id')})" for table in tables)
    row = await connection.fetchrow(
        f"SELECT count(*), COALESCE(sum({per_run or '0'}), 0) FROM runs AS r WHERE {_OLD_RUN}", cutoff
    )
    return int(row[0]) + int(row[1])


class CleanupPass(CleanupRuns):
    """Removes the old runs and their rows, one short transaction per :meth:`step` (as the SQLite store's).

    Args:
        older_than: the cutoff, epoch seconds.
        batch_rows: the most rows removed per transaction.
    """

    async def step(self, connection: asyncpg.Connection) -> bool:
        """Remove up to ``batch_rows`` rows in one transaction; ``False`` once no old run is left."""
        if self._done:
            return False
        if self._tables is None:
            self._tables = await _existing_tables(connection, RUN_TABLES)
        if self._run is None:
            found = await connection.fetchval(
                f"SELECT id FROM runs WHERE id > $2 AND {_OLD_RUN} ORDER BY id LIMIT 1", self.older_than, self._after
            )
            if found is None:
                self._done = True
                return False
            self._run = int(found)
        run = self._run
        async with connection.transaction():
            # Locked and re-checked: a run resumed meanwhile keeps what is left of it.
            still_old = await connection.fetchval(
                f"SELECT 1 FROM runs WHERE id = $2 AND {_OLD_RUN} FOR UPDATE", self.older_than, run
            )
            if still_old is None:
                self._next_run(run)
                return True
            budget = self.batch_rows
            for table in self._tables:
                removed = await _delete_chunk(connection, table, run, budget)
                self.removed_records += removed
                budget -= removed
                if budget <= 0:
                    break
            else:  # every table had fewer rows left than allowed: the run is empty
                self.removed_records += _row_count(await connection.execute("DELETE FROM runs WHERE id = $1", run))
                self.removed_runs += 1
                self._next_run(run)
        return True


async def forget_ingested_batches(connection: asyncpg.Connection, older_than: float, *, batch_rows: int) -> int:
    """Delete the ids of batches ingested before ``older_than``, ``batch_rows`` per transaction; how many."""
    forgotten = 0
    while True:
        removed = _row_count(
            await connection.execute(
                "DELETE FROM ingest_batches WHERE (scope, batch_id) IN"
                " (SELECT scope, batch_id FROM ingest_batches WHERE received_at < $1 LIMIT $2)",
                older_than,
                batch_rows,
            )
        )
        forgotten += removed
        if removed < batch_rows:
            return forgotten


class DownsamplePass(DownsampleBuckets):
    """Replaces the old metric rows of inactive runs by rollups (as the SQLite store's, see
    :class:`runwatch.store.downsample.DownsamplePass`), one transaction per :meth:`step`."""

    async def step(self, connection: asyncpg.Connection) -> bool:
        """Replace up to one chunk of old rows of one run in one transaction; ``False`` once done."""
        if self._done:
            return False
        cutoff_us = round(self.older_than * 1e6)
        if self._run is None:
            # Runs whose first remaining call is old: the rest have nothing to do.
            found = await connection.fetchval(
                f"SELECT id FROM runs WHERE id > $2 AND status NOT IN ({ACTIVE_SQL})"
                " AND (SELECT c.time_first FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
                " WHERE s.run = runs.id ORDER BY c.seq_first LIMIT 1) < $1"
                " ORDER BY id LIMIT 1",
                cutoff_us,
                self._after,
            )
            if found is None:
                self._done = True
                return False
            self._run = int(found)
        run = self._run
        async with connection.transaction():
            active = await connection.fetchval(
                f"SELECT 1 FROM runs WHERE id = $1 AND status IN ({ACTIVE_SQL}) FOR UPDATE", run
            )
            calls = None if active else await _first_calls(connection, run, self.chunk_rows + 1)
            taken = None if calls is None else self._old_calls(calls[1])
            if calls is None or not taken:
                self._after, self._run = run, None
                return True
            seqs = calls[0][:taken]
            low, high = int(seqs[0]), int(seqs[-1])
            rows = await connection.fetch(
                "SELECT s.name, c.count, c.value_type, c.seqs, c.steps, c.step_mask, c.times, c.vals, NULL"
                " FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
                " WHERE s.run = $1 AND c.seq_last >= $2 AND c.seq_first <= $3 ORDER BY s.name, c.seq_first",
                run,
                low,
                high,
            )
            rollups = rollup_rows([tuple(row) for row in rows], run, seqs, self.bucket_rows)
            await connection.executemany(
                "INSERT INTO metric_rollups (run, name, first_row, last_row, first_step, last_step, start_ts,"
                " end_ts, count, nan_count, min, max, mean)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                rollups,
            )
            self.written_rollups += len(rollups)
            await remove_points(connection, run, PointRange(seq_low=low, seq_high=high))
            self.removed_rows += taken
        return True


async def _first_calls(
    connection: asyncpg.Connection, run: int, count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """The call numbers and times of the run's first ``count`` calls (fewer at its end), or None if it has none
    (as :func:`runwatch.store.downsample._first_calls`: chunks decoded in call order until they are known)."""
    chunks = await connection.fetch(
        "SELECT c.rowid, c.seq_first, c.count, c.value_type FROM metric_series AS s"
        " JOIN metric_chunks AS c ON c.series = s.id WHERE s.run = $1 ORDER BY c.seq_first",
        run,
    )
    found = FirstCalls(count)
    for rowid, seq_first, chunk_count, value_type in chunks:
        if not found.needs(seq_first):
            break  # every later chunk starts after the first ``count`` calls
        row = await connection.fetchrow("SELECT seqs, times FROM metric_chunks WHERE rowid = $1", rowid)
        found.add(chunk_count, value_type, row[0], row[1])
    return found.result()


async def remove_points(
    connection: asyncpg.Connection, run: int, points: PointRange, *, sealed_only: bool = False
) -> int:
    """Remove the run's points in ``points`` (see :func:`runwatch.store.chunk_edit.remove_points`), inside the
    caller's transaction; how many calls lost a point."""
    where = ["s.run = $1"]
    params: list[Any] = [run]
    for condition, bound in (
        ("c.time_min < ", points.before_us),
        ("c.seq_last >= ", points.seq_low),
        ("c.seq_first <= ", points.seq_high),
    ):
        if bound is not None:
            params.append(bound)
            where.append(f"{condition}${len(params)}")
    if sealed_only:
        where.append("c.sealed = 1")
    rows = await connection.fetch(
        f"SELECT {REMOVAL_COLUMNS} FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
        f" WHERE {' AND '.join(where)}",
        *params,
    )
    removal = plan_removal([tuple(row) for row in rows], run, points)
    if removal.deleted:
        await connection.execute("DELETE FROM metric_chunks WHERE rowid = ANY($1::bigint[])", removal.deleted)
    if removal.rewrites.inserts:
        records = [chunk_record(removal.ids[write.key], True, write.chunk) for write in removal.rewrites.inserts]
        await connection.copy_records_to_table("metric_chunks", records=records, columns=CHUNK_RECORD_COLUMNS)
    return len(removal.removed_seqs())


async def metric_rollups(
    connection: asyncpg.Connection, run_id: str, metric_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """See :func:`runwatch.store.downsample.metric_rollups`."""
    check_run_id(run_id)
    if metric_names is not None and (
        isinstance(metric_names, str) or not all(type(name) is str for name in metric_names)
    ):
        raise TypeError(f"metric_names must be a list of strings or None, got {metric_names!r}")
    run = await connection.fetchval("SELECT id FROM runs WHERE run_id = $1", run_id)
    if run is None:
        raise UnknownRunError(run_id)
    sql = f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM metric_rollups WHERE run = $1"
    params: list[Any] = [run]
    if metric_names is not None:
        sql += " AND name = ANY($2::text[])"
        params.append(metric_names)
    rows = await connection.fetch(sql + " ORDER BY name, first_row", *params)
    return [dict(row) for row in rows]


async def mark_crashed_runs(connection: asyncpg.Connection, host: str | None) -> list[str]:
    """See :func:`runwatch.store.queries.mark_crashed_runs` (one transaction; rows locked and re-checked)."""
    this_host = socket.gethostname() if host is None else host
    crashed: list[str] = []
    async with connection.transaction():
        candidates = await connection.fetch(
            "SELECT id, run_id, status, owner, GREATEST(last_heartbeat, updated_at) AS last_seen FROM runs"
            " WHERE status IN ('running', 'paused') AND owner IS NOT NULL ORDER BY id FOR UPDATE"
        )
        detected_at = time.time()
        events = []
        for run, run_id, status, owner, last_seen in candidates:
            parsed = _parse_owner(owner)
            if parsed is None or parsed[0] != this_host:
                continue
            _, pid, create_time = parsed
            if _process_alive(pid, create_time):
                continue
            await connection.execute("UPDATE runs SET status = 'crashed', end_time = $2 WHERE id = $1", run, last_seen)
            data = {
                "status": "crashed",
                "previous_status": status,
                "reason": f"owner process {pid} on {this_host} is gone",
                "owner": owner,
                "detected_at": detected_at,
            }
            events.append((run, last_seen, "lifecycle", "run_crashed", "error", orjson.dumps(data).decode()))
            crashed.append(run_id)
        if events:
            await connection.executemany(
                "INSERT INTO events (run, ts, kind, type, level, data) VALUES ($1, $2, $3, $4, $5, $6)", events
            )
    return crashed


async def remove_old_sessions(connection: asyncpg.Connection, cutoff: float) -> dict[str, int]:
    """See :func:`runwatch.store.queries.sessions.remove_old_sessions` (one transaction)."""
    runs = f"SELECT id FROM runs WHERE kind IN ('{SESSION_KIND}', '{MONITOR_KIND}')"
    async with connection.transaction():
        ended = [
            row[0]
            for row in await connection.fetch(
                f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}' AND status IN ('completed', 'failed', 'crashed')"
                " AND COALESCE(end_time, updated_at) < $1 AND updated_at < $1",
                cutoff,
            )
        ]
        cutoff_us = round(cutoff * 1e6)
        old = await connection.fetch(
            "SELECT DISTINCT s.run FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
            f" WHERE s.run IN ({runs}) AND c.time_min < $1",
            cutoff_us,
        )
        # Sessions that ended go whole below; the others may still be written: their open chunks stay.
        removed_calls = 0
        for (run,) in old:
            point_range = PointRange(before_us=cutoff_us)
            removed_calls += await remove_points(connection, run, point_range, sealed_only=run not in ended)
        counts = {"metric_rows": removed_calls}
        for table in ("events", "state_history"):
            counts[table] = _row_count(
                await connection.execute(f"DELETE FROM {table} WHERE ts < $1 AND run IN ({runs})", cutoff)
            )
        if ended:
            for table in RUN_TABLES:
                if table == "images":
                    digests = await connection.fetch(
                        "DELETE FROM images WHERE run = ANY($1::bigint[]) RETURNING digest", ended
                    )
                    await connection.execute(_REMOVE_ORPHAN_BLOBS, sorted({row[0] for row in digests}))
                elif table == "metric_chunks":
                    await connection.execute(
                        "DELETE FROM metric_chunks WHERE series IN"
                        " (SELECT id FROM metric_series WHERE run = ANY($1::bigint[]))",
                        ended,
                    )
                else:
                    await connection.execute(f"DELETE FROM {table} WHERE run = ANY($1::bigint[])", ended)
            await connection.execute("DELETE FROM runs WHERE id = ANY($1::bigint[])", ended)
        counts["sessions"] = len(ended)
    return counts


async def save_snapshots(
    connection: asyncpg.Connection, snapshots: list[tuple[str, bytes]], taken_at: float, max_snapshots: int
) -> tuple[list[str], int]:
    """See :func:`runwatch.store.queries.snapshots.save_snapshot_rows` (one transaction)."""
    if await current_version(connection) == 0:
        return [], 0
    async with connection.transaction():
        rows = await connection.fetch(
            "SELECT run_id, id FROM runs WHERE run_id = ANY($1::text[])", [run_id for run_id, _ in snapshots]
        )
        ids = {row["run_id"]: row["id"] for row in rows}
        found = [(run_id, data) for run_id, data in snapshots if run_id in ids]
        if not found:
            return [], 0
        await connection.executemany(
            "INSERT INTO snapshots (run, ts, data) VALUES ($1, $2, $3)",
            [(ids[run_id], taken_at, data.decode()) for run_id, data in found],
        )
        rotated = 0
        for run_id, _ in found:
            rotated += _row_count(
                await connection.execute(
                    "DELETE FROM snapshots WHERE run = $1 AND id NOT IN"
                    " (SELECT id FROM snapshots WHERE run = $1 ORDER BY ts DESC, id DESC LIMIT $2)",
                    ids[run_id],
                    max_snapshots,
                )
            )
    return [run_id for run_id, _ in found], rotated


_TABLES: Final = (
    "runs",
    "metric_series",
    "metric_chunks",
    "metric_stats",
    "events",
    "state_history",
    "meta",
    "ingest_batches",
    "partition_owners",
    "metric_rollups",
    "snapshots",
    "media_blobs",
    "images",
    "media_usage",
    "histograms",
    "run_annotations",
)


async def store_info(connection: asyncpg.Connection, location: str) -> dict[str, Any]:
    """``location``, ``size_bytes`` (the database), ``schema_version``, ``server_version`` and
    ``tables`` (row counts of runwatch's tables)."""
    version = await current_version(connection)
    tables = {
        name: int(await connection.fetchval(f"SELECT count(*) FROM {name}"))
        for name in await _existing_tables(connection, _TABLES)
    }
    return {
        "path": location,
        "size_bytes": int(await connection.fetchval("SELECT pg_database_size(current_database())")),
        "schema_version": version,
        "server_version": await connection.fetchval("SHOW server_version"),
        "tables": tables,
    }


async def optimize(connection: asyncpg.Connection) -> dict[str, Any]:
    """``VACUUM (ANALYZE)`` of runwatch's tables: dead rows' space reused, the planner's statistics fresh.

    Returns the database's size before and after (``size_bytes_before``,
    ``size_bytes_after``; a plain ``VACUUM`` keeps the files' size and marks
    the space reusable) and ``seconds``.
    """
    started = time.perf_counter()
    before = int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    for name in await _existing_tables(connection, _TABLES):
        await connection.execute(f"VACUUM (ANALYZE) {name}")
    return {
        "size_bytes_before": before,
        "size_bytes_after": int(await connection.fetchval("SELECT pg_database_size(current_database())")),
        "vacuum": "vacuum_analyze",
        "seconds": time.perf_counter() - started,
    }


def check_store_created(version: int, location: str) -> None:
    """Raise :class:`StoreError` when the store has no schema."""
    if version == 0:
        raise StoreError(f"no runwatch store in {location!r}; call init_database() to create it")
