"""Downsampling: old metric rows of finished runs replaced by per-bucket rollups.

A rollup (table ``metric_rollups``, schema version 3) summarises one metric
over a bucket of consecutive logging calls of one run: the calls' row,
step and time ranges, how many values were logged (NaN included), how many
were NaN, and min, max and mean of the others. The bucket's rows leave
``metric_rows`` in the same transaction, so a downsampled call is counted
exactly once. ``metric_stats`` (every value ever logged, summarised) is not
touched, and runs without old rows keep every row as it was.

Same concurrency rules as :mod:`runwatch.store.lifecycle`: short write
transactions, a pause after each, bounded memory.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from ..exceptions import StoreError, UnknownRunError
from .base import MaintenancePass
from .lifecycle import (
    ACTIVE_SQL,
    DEFAULT_BATCH_ROWS,
    LOCK_WAIT_SECONDS,
    check_cutoff,
    check_positive_int,
    run_pass,
    table_names,
    write_transaction,
)
from .queries import check_run_id
from .schema import current_version

__all__ = ["DEFAULT_BUCKET_ROWS", "ROLLUP_COLUMNS", "DownsamplePass", "downsample_metrics", "metric_rollups"]

#: Logging calls summarised by one rollup row.
DEFAULT_BUCKET_ROWS: Final = 100

# JSON-carried metric value → REAL: null is NaN (NULL here, so min/max/avg skip
# it), "inf"/"-inf" are ±Inf (see encode.py).
_VALUE: Final = (
    "CASE v.type WHEN 'null' THEN NULL"
    " WHEN 'text' THEN (CASE v.value WHEN 'inf' THEN 9e999 WHEN '-inf' THEN -9e999 END)"
    " ELSE v.value END"
)

# One rollup row per (bucket, metric) of the calls :run logged in rows :lo..:hi.
# Buckets count calls from :lo, :bucket calls each. avg() of +Inf and -Inf is
# NaN, which SQLite stores as NULL.
_INSERT_ROLLUPS: Final = f"""
INSERT INTO metric_rollups
    (run, name, first_row, last_row, first_step, last_step, start_ts, end_ts, count, nan_count, min, max, mean)
SELECT :run, name, min(row), max(row), min(step), max(step), min(ts), max(ts),
       count(*), count(*) - count(x), min(x), max(x), avg(x)
FROM (
    SELECT c.bucket, c.row, c.step, c.ts, k.value AS name, {_VALUE} AS x
    FROM (
        SELECT row, step, ts, keyset, vals, (row_number() OVER (ORDER BY row) - 1) / :bucket AS bucket
        FROM metric_rows WHERE run = :run AND row BETWEEN :lo AND :hi
    ) AS c
    JOIN metric_keysets AS ks ON ks.id = c.keyset
    JOIN json_each(ks.names) AS k
    JOIN json_each(c.vals) AS v ON v.key = k.key
)
GROUP BY bucket, name
"""


class DownsamplePass(MaintenancePass):
    """Replaces the old metric rows of inactive runs by rollups, one transaction per :meth:`step`.

    A metric row is old when its timestamp is before the cutoff; only runs
    that are not active are touched. Each run's old rows, in storage order,
    are cut into buckets of ``bucket_rows`` logging calls; every bucket
    becomes one ``metric_rollups`` row per metric it holds (row, step and
    time range, count, NaN count, min, max, mean), in the same transaction
    that deletes the bucket's rows. Only whole buckets are taken while newer
    rows follow; a shorter last bucket only at the end of a run. Rows logged
    after a newer one (a timestamp going back) stay until that one is old.

    ``metric_stats`` (the summary of all values ever logged) is not changed,
    and runs without old rows keep every row.

    Args:
        older_than: the cutoff, epoch seconds.
        bucket_rows: logging calls per rollup bucket (at least 2).
        batch_rows: about the most rows replaced per transaction (rounded
            down to whole buckets, at least one bucket).
        lock_wait_seconds: how long each transaction waits for the write lock.

    Attributes:
        removed_rows: metric rows replaced so far.
        written_rollups: rollup rows written so far.

    Raises:
        StoreError: (from :meth:`step`) the store predates schema version 3.
    """

    def __init__(
        self,
        older_than: float,
        *,
        bucket_rows: int = DEFAULT_BUCKET_ROWS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    ) -> None:
        self.older_than = check_cutoff(older_than)
        self.lock_wait_seconds = lock_wait_seconds
        self.bucket_rows = check_positive_int("bucket_rows", bucket_rows, 2)
        check_positive_int("batch_rows", batch_rows)
        self.chunk_rows = max(1, batch_rows // bucket_rows) * bucket_rows
        self.removed_rows = 0
        self.written_rollups = 0
        self._after = 0
        self._run: int | None = None
        self._checked = False
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the pass has nothing left to downsample."""
        return self._done

    def counters(self) -> dict[str, int]:
        """``downsampled_rows`` and ``written_rollups`` so far."""
        return {"downsampled_rows": self.removed_rows, "written_rollups": self.written_rollups}

    def step(self, conn: sqlite3.Connection) -> bool:
        """Replace up to one chunk of old rows of one run in one transaction.

        Returns:
            ``False`` once nothing is left to do.
        """
        if self._done:
            return False
        if not self._checked:
            if "metric_rollups" not in table_names(conn):
                raise StoreError(
                    f"downsampling needs schema version 3 or later (this store has {current_version(conn)});"
                    " call init_database() or migrate_schema()"
                )
            self._checked = True
        params: dict[str, Any] = {"cutoff": self.older_than, "after": self._after}
        if self._run is None:
            # Runs whose first remaining row is old: the rest have nothing to do.
            found = conn.execute(
                f"SELECT id FROM runs WHERE id > :after AND status NOT IN ({ACTIVE_SQL})"
                " AND (SELECT ts FROM metric_rows WHERE run = runs.id ORDER BY row LIMIT 1) < :cutoff"
                " ORDER BY id LIMIT 1",
                params,
            ).fetchone()
            if found is None:
                self._done = True
                return False
            self._run = int(found[0])
        run = self._run
        with write_transaction(conn, lock_wait_seconds=self.lock_wait_seconds):
            active = conn.execute(f"SELECT 1 FROM runs WHERE id = ? AND status IN ({ACTIVE_SQL})", (run,)).fetchone()
            taken = None if active else self._old_chunk(conn, run)
            if taken is None:
                self._after, self._run = run, None
                return True
            lo, hi = taken
            bounds = {"run": run, "lo": lo, "hi": hi, "bucket": self.bucket_rows}
            self.written_rollups += conn.execute(_INSERT_ROLLUPS, bounds).rowcount
            self.removed_rows += conn.execute(
                "DELETE FROM metric_rows WHERE run = :run AND row BETWEEN :lo AND :hi", bounds
            ).rowcount
        return True

    def _old_chunk(self, conn: sqlite3.Connection, run: int) -> tuple[int, int] | None:
        """The first and last row number of the next chunk to replace, or ``None``."""
        rows = conn.execute(
            "SELECT row, ts FROM metric_rows WHERE run = ? ORDER BY row LIMIT ?", (run, self.chunk_rows + 1)
        ).fetchall()
        old = 0
        for _, ts in rows:
            if ts >= self.older_than:
                break
            old += 1
        if old == len(rows) and old <= self.chunk_rows:
            taken = old  # the run's last rows: a short last bucket is fine
        else:
            taken = min(old, self.chunk_rows) // self.bucket_rows * self.bucket_rows
        if taken == 0:
            return None
        return int(rows[0][0]), int(rows[taken - 1][0])


def downsample_metrics(
    conn: sqlite3.Connection,
    older_than: float,
    *,
    bucket_rows: int = DEFAULT_BUCKET_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    pause_seconds: float | None = None,
) -> dict[str, int]:
    """Replace the metric rows older than ``older_than`` of inactive runs by rollups.

    See :class:`DownsamplePass`.

    Returns:
        ``{"removed_rows": ..., "written_rollups": ...}``.

    Raises:
        StoreError: the store predates schema version 3.
        sqlite3.OperationalError: the write lock stayed taken for ``LOCK_WAIT_SECONDS``.
    """
    job = DownsamplePass(older_than, bucket_rows=bucket_rows, batch_rows=batch_rows)
    run_pass(job, conn, pause_seconds=pause_seconds)
    return {"removed_rows": job.removed_rows, "written_rollups": job.written_rollups}


#: The keys of a rollup returned by :func:`metric_rollups`.
ROLLUP_COLUMNS: Final = (
    "name",
    "first_row",
    "last_row",
    "first_step",
    "last_step",
    "start_ts",
    "end_ts",
    "count",
    "nan_count",
    "min",
    "max",
    "mean",
)


def metric_rollups(
    conn: sqlite3.Connection, run_id: str, metric_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """The rollups of a run's downsampled metric rows, by metric then row.

    Args:
        conn: a connection to the store.
        run_id: the run.
        metric_names: only these metrics; ``None`` for all.

    Returns:
        One dict per rollup with the keys ``name``, ``first_row``,
        ``last_row``, ``first_step``, ``last_step``, ``start_ts``,
        ``end_ts`` (epoch seconds), ``count`` (values, NaN included),
        ``nan_count``, ``min``, ``max`` and ``mean`` (over the values that
        are not NaN; ``None`` when there are none, and ``mean`` also when
        both +Inf and -Inf were logged). Empty for a store before version 3.

    Raises:
        TypeError: a bad ``run_id`` or ``metric_names``.
        UnknownRunError: no run has this id.
    """
    check_run_id(run_id)
    if metric_names is not None and (
        isinstance(metric_names, str) or not all(type(name) is str for name in metric_names)
    ):
        raise TypeError(f"metric_names must be a list of strings or None, got {metric_names!r}")
    found = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if found is None:
        raise UnknownRunError(run_id)
    run = int(found[0])
    if "metric_rollups" not in table_names(conn):
        return []
    sql = f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM metric_rollups WHERE run = ?"
    params: list[Any] = [run]
    if metric_names is not None:
        sql += f" AND name IN ({', '.join('?' * len(metric_names))})"
        params.extend(metric_names)
    rows = conn.execute(sql + " ORDER BY name, first_row", params).fetchall()
    return [dict(zip(ROLLUP_COLUMNS, row, strict=True)) for row in rows]
