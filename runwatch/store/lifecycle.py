"""Data lifecycle of the store: retention, downsampling, optimisation and statistics.

Plain functions and resumable passes over a ``sqlite3.Connection``; times are
epoch seconds. :class:`~runwatch.store.manager.DatabaseManager` wraps them for
the public API and :class:`~runwatch.stages.retention.RetentionStage` runs
them on a schedule. Downsampling lives in :mod:`runwatch.store.downsample`,
backups in :mod:`runwatch.store.backup`.

Sharing the store with the writer: the SQLite sink keeps writing while these
passes run. SQLite has one write lock per database, so every pass works in
short ``BEGIN IMMEDIATE`` transactions of at most ``batch_rows`` rows (5,000
by default: a few milliseconds) and, between two of them, pauses about as
long as the last one took, so the sink, whose busy handler retries with
sleeps of 1 to 100 ms, finds the lock free at least half the time instead of
losing every race to a loop that re-locks at once. The other way round, a
pass polls for the lock every millisecond (see :func:`write_transaction`)
rather than through SQLite's busy handler, which almost never catches the
sub-millisecond gaps between the commits of a saturated sink. Memory stays bounded:
a pass holds one run id and one chunk of row numbers at a time; it never
loads the ids of everything it removes.

What "old" means: a run is old when it is not active (``running`` or
``paused``: never touched, whatever its age) and its last sign of life (the
latest of ``end_time``, ``updated_at`` and ``last_heartbeat``) is before the
cutoff. A run is removed with every row that belongs to it: its metric
chunks and series, metric statistics, metric rollups, events, state history,
snapshots, images and histograms. Runs that stay are not touched. An image
content (blob) goes with the last image that names it (blobs are not counted
as records: runs share them).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, Protocol

from ..exceptions import StoreError
from .base import MaintenancePass
from .media import delete_image_chunk
from .queries import ACTIVE_STATUSES
from .schema import current_version

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "LOCK_WAIT_SECONDS",
    "MAX_PAUSE_SECONDS",
    "RUN_TABLES",
    "CleanupPass",
    "CleanupRuns",
    "Pass",
    "cleanup_old_data",
    "count_old_data",
    "database_info",
    "optimize_database",
    "run_pass",
    "write_transaction",
]

#: Rows removed per write transaction.
DEFAULT_BATCH_ROWS: Final = 5_000

#: How long a transaction waits for the write lock by default, in seconds.
LOCK_WAIT_SECONDS: Final = 30.0

# How often a waiting transaction tries to take the write lock.
_LOCK_POLL_SECONDS: Final = 0.001

#: The longest pause between two transactions of a pass, in seconds.
MAX_PAUSE_SECONDS: Final = 0.1

#: The active statuses as a SQL list, for ``status IN (...)``.
ACTIVE_SQL: Final = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)

# A run is old when inactive and its last sign of life is before ?cutoff.
# SQLite's multi-argument MAX() is NULL if any argument is: hence COALESCE.
_OLD_RUN: Final = (
    f"status NOT IN ({ACTIVE_SQL})"
    " AND MAX(COALESCE(end_time, updated_at), updated_at, COALESCE(last_heartbeat, updated_at)) < :cutoff"
)

#: The tables holding a run's rows, in the order every backend's cleanup empties them:
#: metric_stats last, so a run cut short by an error still shows its summary;
#: metric_chunks before metric_series, whose ids they name.
RUN_TABLES: Final = (
    "metric_chunks",
    "metric_series",
    "metric_rollups",
    "events",
    "state_history",
    "images",
    "histograms",
    "media_usage",
    "metric_stats",
    "snapshots",
    "run_annotations",
)
# How a table's rows of run :run / r.id are found (metric_chunks through its run's series).
_OF_RUN: Final = {"metric_chunks": "series IN (SELECT id FROM metric_series WHERE run = {run})"}

# One chunk of a run's rows. Rowid tables go by rowid through their (run, ...)
# index; WITHOUT ROWID tables by their primary key, which starts with run.
_DELETE_CHUNK: Final = {
    "metric_chunks": "DELETE FROM metric_chunks WHERE rowid IN (SELECT c.rowid FROM metric_series AS s"
    " JOIN metric_chunks AS c ON c.series = s.id WHERE s.run = :run LIMIT :limit)",
    "metric_series": "DELETE FROM metric_series WHERE id IN"
    " (SELECT id FROM metric_series WHERE run = :run LIMIT :limit)",
    "metric_rollups": "DELETE FROM metric_rollups WHERE run = :run"
    " AND (name, first_row) IN (SELECT name, first_row FROM metric_rollups WHERE run = :run LIMIT :limit)",
    "events": "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE run = :run LIMIT :limit)",
    "state_history": "DELETE FROM state_history WHERE id IN"
    " (SELECT id FROM state_history WHERE run = :run LIMIT :limit)",
    "metric_stats": "DELETE FROM metric_stats WHERE run = :run"
    " AND name IN (SELECT name FROM metric_stats WHERE run = :run LIMIT :limit)",
    "snapshots": "DELETE FROM snapshots WHERE id IN (SELECT id FROM snapshots WHERE run = :run LIMIT :limit)",
    "histograms": "DELETE FROM histograms WHERE id IN (SELECT id FROM histograms WHERE run = :run LIMIT :limit)",
    "media_usage": "DELETE FROM media_usage WHERE run = :run",
    "run_annotations": "DELETE FROM run_annotations WHERE run = :run",
}


class Pass(Protocol):
    """A long job split into short write transactions (see :func:`run_pass`)."""

    @property
    def done(self) -> bool:
        """Whether nothing is left to do."""

    def step(self, conn: sqlite3.Connection) -> bool:
        """Run one transaction; ``False`` once nothing is left to do."""


# -- helpers ---------------------------------------------------------------------------


def check_cutoff(older_than: float) -> float:
    if isinstance(older_than, bool) or not isinstance(older_than, (int, float)):
        raise TypeError(f"older_than must be epoch seconds (a float), got {type(older_than).__name__}")
    if not math.isfinite(older_than):
        raise ValueError(f"older_than must be finite, got {older_than!r}")
    return float(older_than)


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def table_names(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _begin_immediate(conn: sqlite3.Connection, lock_wait_seconds: float) -> None:
    """``BEGIN IMMEDIATE``, polling for the write lock every millisecond for up to ``lock_wait_seconds``.

    SQLite's own busy handler sleeps 1, 2, 5... then 100 ms between tries,
    and a busy writer (the sink under full load commits back to back, with
    gaps well under a millisecond) is nearly always holding the lock when it
    wakes up: measured, a cleanup beside a saturated sink then failed after
    its 5 s busy timeout without one transaction. Trying every millisecond
    finds a gap within tens of milliseconds.
    """
    saved = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + lock_wait_seconds
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if conn.in_transaction:  # pragma: no cover - SQLite leaves none open on SQLITE_BUSY
                    conn.execute("ROLLBACK")
                if time.monotonic() >= deadline:
                    raise
            time.sleep(_LOCK_POLL_SECONDS)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {saved}")


@contextmanager
def write_transaction(conn: sqlite3.Connection, *, lock_wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error), whatever ``isolation_level`` says.

    Args:
        conn: a connection that may write.
        lock_wait_seconds: how long to wait for the write lock.

    Raises:
        StoreError: ``conn`` is already inside a transaction.
        sqlite3.OperationalError: the write lock stayed taken for ``lock_wait_seconds``.
    """
    if conn.in_transaction:
        raise StoreError("a lifecycle operation needs a connection outside any transaction")
    saved = conn.isolation_level
    conn.isolation_level = None
    try:
        _begin_immediate(conn, lock_wait_seconds)
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.isolation_level = saved


def run_pass(job: Pass, conn: sqlite3.Connection, *, pause_seconds: float | None = None) -> None:
    """Run ``job`` to its end, one transaction at a time, pausing in between.

    Args:
        job: a :class:`CleanupPass` or a
            :class:`~runwatch.store.downsample.DownsamplePass`.
        conn: a connection that may write, outside any transaction.
        pause_seconds: the pause between two transactions; ``None`` pauses
            as long as the last transaction took (at most 0.1 s), so another
            writer gets the lock at least about half the time; ``0`` never pauses.
    """
    while True:
        started = time.perf_counter()
        if not job.step(conn):
            return
        pause = min(time.perf_counter() - started, MAX_PAUSE_SECONDS) if pause_seconds is None else pause_seconds
        if pause > 0:
            time.sleep(pause)


# -- retention -------------------------------------------------------------------------


def count_old_data(conn: sqlite3.Connection, older_than: float) -> int:
    """How many records :func:`cleanup_old_data` would remove now.

    Args:
        conn: a connection to the store.
        older_than: the cutoff, epoch seconds.

    Returns:
        The old runs plus all their rows (metric chunks and series,
        statistics, rollups, events, state history).
    """
    cutoff = check_cutoff(older_than)
    tables = [table for table in RUN_TABLES if table in table_names(conn)]
    per_run = " + ".join(
        f"(SELECT count(*) FROM {table} WHERE {_OF_RUN.get(table, 'run = {run}').format(run='r.id')})"
        for table in tables
    )
    sql = f"SELECT count(*), COALESCE(sum({per_run or '0'}), 0) FROM runs AS r WHERE {_OLD_RUN}"
    runs, rows = conn.execute(sql, {"cutoff": cutoff}).fetchone()
    return int(runs) + int(rows)


class CleanupRuns(MaintenancePass):
    """What every backend's cleanup pass shares: its arguments checked, its counters and where it is
    (the run being emptied, the highest run id done); see :class:`CleanupPass` (the backend reads and writes).

    Args:
        older_than: the cutoff, epoch seconds.
        batch_rows: the most rows removed per transaction.
    """

    def __init__(self, older_than: float, *, batch_rows: int) -> None:
        self.older_than = check_cutoff(older_than)
        self.batch_rows = check_positive_int("batch_rows", batch_rows)
        self.removed_records = 0
        self.removed_runs = 0
        self._after = 0  # every old run with an id up to this one is handled
        self._run: int | None = None
        self._tables: tuple[str, ...] | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the pass has nothing left to remove."""
        return self._done

    def counters(self) -> dict[str, int]:
        """``removed_records`` and ``removed_runs`` so far."""
        return {"removed_records": self.removed_records, "removed_runs": self.removed_runs}

    def _next_run(self, run: int) -> None:
        self._after = run
        self._run = None


class CleanupPass(CleanupRuns):
    """Removes the old runs and their rows, one short write transaction per :meth:`step`.

    Resumable: the state between steps is the run being emptied and the
    highest run id done, so a pass can be spread over many calls (the
    retention stage runs a few steps per tick). Each transaction first
    re-checks that its run is still old, so a run resumed meanwhile keeps
    what is left of it; the runs row goes last, in the transaction that
    finds its other rows gone.

    Args:
        older_than: the cutoff, epoch seconds.
        batch_rows: the most rows removed per transaction.
        lock_wait_seconds: how long each transaction waits for the write lock.

    Attributes:
        removed_records: records removed so far (rows of every table, runs included).
        removed_runs: runs removed so far.
    """

    def __init__(
        self, older_than: float, *, batch_rows: int = DEFAULT_BATCH_ROWS, lock_wait_seconds: float = LOCK_WAIT_SECONDS
    ) -> None:
        super().__init__(older_than, batch_rows=batch_rows)
        self.lock_wait_seconds = lock_wait_seconds

    def step(self, conn: sqlite3.Connection) -> bool:
        """Remove up to ``batch_rows`` rows in one transaction.

        Args:
            conn: a connection that may write, outside any transaction.

        Returns:
            ``False`` once no old run is left (nothing was written then).

        Raises:
            sqlite3.OperationalError: the write lock stayed taken for
                ``lock_wait_seconds`` (the pass can be stepped again).
        """
        if self._done:
            return False
        if self._tables is None:
            present = table_names(conn)
            self._tables = tuple(table for table in RUN_TABLES if table in present)
        params: dict[str, Any] = {"cutoff": self.older_than, "after": self._after}
        if self._run is None:
            row = conn.execute(f"SELECT id FROM runs WHERE id > :after AND {_OLD_RUN} ORDER BY id LIMIT 1", params)
            found = row.fetchone()
            if found is None:
                self._done = True
                return False
            self._run = int(found[0])
        run = self._run
        params.update(run=run)
        with write_transaction(conn, lock_wait_seconds=self.lock_wait_seconds):
            still_old = conn.execute(f"SELECT 1 FROM runs WHERE id = :run AND {_OLD_RUN}", params).fetchone()
            if still_old is None:  # resumed (or removed by someone else) since it was picked
                self._next_run(run)
                return True
            budget = self.batch_rows
            for table in self._tables:
                if table == "images":  # with the blobs no image names any more
                    removed = delete_image_chunk(conn, run, budget)
                else:
                    removed = conn.execute(_DELETE_CHUNK[table], {"run": run, "limit": budget}).rowcount
                self.removed_records += removed
                budget -= removed
                if budget <= 0:
                    break
            else:  # every table had fewer rows left than allowed: the run is empty
                self.removed_records += conn.execute("DELETE FROM runs WHERE id = ?", (run,)).rowcount
                self.removed_runs += 1
                self._next_run(run)
        return True


def cleanup_old_data(
    conn: sqlite3.Connection,
    older_than: float,
    *,
    dry_run: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    pause_seconds: float | None = None,
) -> int:
    """Remove the runs that are inactive and older than ``older_than``, with all their rows.

    Args:
        conn: a connection to the store (one that may write unless ``dry_run``),
            outside any transaction.
        older_than: the cutoff, epoch seconds: runs whose last sign of life
            is before it go.
        dry_run: only count what would be removed.
        batch_rows: the most rows removed per write transaction.
        pause_seconds: the pause between transactions (see :func:`run_pass`).

    Ids of ingested batches received before the cutoff are forgotten too
    (not counted as records): a retry of a batch that old would be stored
    again, and the table no longer grows without bound.

    Returns:
        The number of records removed (or that would be): the runs plus all
        their rows. Without concurrent writes, a dry run returns the same
        number as the real run that follows.

    Raises:
        TypeError, ValueError: a bad ``older_than`` or ``batch_rows``.
        sqlite3.OperationalError: the write lock stayed taken for
            :data:`LOCK_WAIT_SECONDS`; what was removed until then stays removed.
    """
    if dry_run:
        return count_old_data(conn, older_than)
    job = CleanupPass(older_than, batch_rows=batch_rows)
    run_pass(job, conn, pause_seconds=pause_seconds)
    forget_ingested_batches(conn, job.older_than, batch_rows=batch_rows)
    return job.removed_records


def forget_ingested_batches(
    conn: sqlite3.Connection, older_than: float, *, batch_rows: int = DEFAULT_BATCH_ROWS
) -> int:
    """Delete the ids of batches ingested before ``older_than``, ``batch_rows`` per transaction; returns how many."""
    if "ingest_batches" not in table_names(conn):
        return 0
    forgotten = 0
    while True:
        with write_transaction(conn):
            # By id and age, not by key: the same statement serves schemas before and after ids were scoped.
            removed = conn.execute(
                "DELETE FROM ingest_batches WHERE received_at < ? AND batch_id IN"
                " (SELECT batch_id FROM ingest_batches WHERE received_at < ? LIMIT ?)",
                (older_than, older_than, batch_rows),
            ).rowcount
        forgotten += removed
        if removed < batch_rows:
            return forgotten


# -- maintenance -----------------------------------------------------------------------


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _main_path(conn: sqlite3.Connection) -> str:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(path)
    raise StoreError("the connection has no main database")  # pragma: no cover - SQLite always has one


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pragma(conn: sqlite3.Connection, name: str) -> Any:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def optimize_database(conn: sqlite3.Connection) -> dict[str, Any]:
    """Refresh the query planner's statistics and give free space back to the file system.

    Runs ``ANALYZE``, checkpoints the write-ahead log into the database
    (``wal_checkpoint(TRUNCATE)``), then ``PRAGMA incremental_vacuum`` when
    the store was created with ``auto_vacuum = INCREMENTAL`` (in short
    transactions, beside a running writer) and ``VACUUM`` otherwise, then
    checkpoints again.

    ``VACUUM`` rewrites the whole file: it needs up to twice the database's
    size in free disk space, holds the write lock for its whole duration
    (seconds per GB; a running SQLite sink keeps its events pending and
    retries meanwhile, and reports ``degraded`` if it takes longer than its
    busy timeout) and cannot run inside a transaction. Run it while nothing
    is logging, e.g. from the CLI.

    Args:
        conn: a connection that may write, outside any transaction.

    Returns:
        ``size_bytes_before``/``size_bytes_after`` (the database file),
        ``wal_bytes_before``/``wal_bytes_after`` (its ``-wal`` file),
        ``freelist_pages_before``/``freelist_pages_after``, ``vacuum``
        (``"full"`` or ``"incremental"``), ``checkpoint_busy`` (true when
        a reader kept the last checkpoint from completing) and ``seconds``.

    Raises:
        StoreError: ``conn`` is inside a transaction.
        sqlite3.OperationalError: the store stayed locked past the busy timeout.
    """
    if conn.in_transaction:
        raise StoreError("optimize_database needs a connection outside any transaction")
    path = _main_path(conn)
    started = time.perf_counter()
    before = (_file_size(path), _file_size(path + "-wal"), int(_pragma(conn, "freelist_count")))
    saved = conn.isolation_level
    conn.isolation_level = None  # VACUUM cannot run inside a transaction
    try:
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        incremental = int(_pragma(conn, "auto_vacuum")) == 2
        if incremental:
            _incremental_vacuum(conn)
        else:
            conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.isolation_level = saved
    return {
        "size_bytes_before": before[0],
        "size_bytes_after": _file_size(path),
        "wal_bytes_before": before[1],
        "wal_bytes_after": _file_size(path + "-wal"),
        "freelist_pages_before": before[2],
        "freelist_pages_after": int(_pragma(conn, "freelist_count")),
        "vacuum": "incremental" if incremental else "full",
        "checkpoint_busy": bool(busy),
        "seconds": time.perf_counter() - started,
    }


def _incremental_vacuum(conn: sqlite3.Connection) -> None:
    """Free every page of the free list, in transactions of DEFAULT_BATCH_ROWS pages.

    Python's ``execute`` runs a statement without result columns for one step
    only, and each step of ``incremental_vacuum`` frees one page: so the pragma
    is executed once per page, many times per transaction, with pauses
    between the transactions so other writers get the lock.
    """
    remaining = int(_pragma(conn, "freelist_count"))
    while remaining > 0:
        started = time.perf_counter()
        with write_transaction(conn):
            for _ in range(min(remaining, DEFAULT_BATCH_ROWS)):
                conn.execute("PRAGMA incremental_vacuum")
        left = int(_pragma(conn, "freelist_count"))
        if left >= remaining:  # no progress: never loop forever
            return
        remaining = left
        time.sleep(min(time.perf_counter() - started, MAX_PAUSE_SECONDS))


def database_info(conn: sqlite3.Connection) -> dict[str, Any]:
    """Sizes, page statistics, schema version and row counts of the store.

    Counting rows reads every table once (``count(*)``): about a second per
    few million metric rows.

    Args:
        conn: a connection to the store.

    Returns:
        ``path``, ``size_bytes`` (the database file), ``wal_bytes`` (its
        ``-wal`` file, 0 when there is none), ``page_size``, ``page_count``,
        ``freelist_pages``, ``auto_vacuum`` (``none``, ``full`` or
        ``incremental``), ``journal_mode``, ``schema_version`` and ``tables``:
        table name → row count, for every table but SQLite's own.
    """
    path = _main_path(conn)
    names = sorted(
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    )
    tables = {name: int(conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]) for name in names}
    return {
        "path": path,
        "size_bytes": _file_size(path),
        "wal_bytes": _file_size(path + "-wal"),
        "page_size": int(_pragma(conn, "page_size")),
        "page_count": int(_pragma(conn, "page_count")),
        "freelist_pages": int(_pragma(conn, "freelist_count")),
        "auto_vacuum": {0: "none", 1: "full", 2: "incremental"}.get(int(_pragma(conn, "auto_vacuum")), "unknown"),
        "journal_mode": str(_pragma(conn, "journal_mode")),
        "schema_version": current_version(conn),
        "tables": tables,
    }
