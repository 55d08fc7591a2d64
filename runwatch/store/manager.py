"""``DatabaseManager``: the public read and maintenance API over one store.

It is a thin shell around a :class:`~runwatch.store.base.Store` (a SQLite
file, or a PostgreSQL database given a ``postgresql://`` URL; see
:func:`runwatch.store.backends.open_store`), which holds the connections,
the SQL and the decoding: it checks arguments and turns epoch
seconds into timezone-aware ``datetime`` objects (UTC) for the public API.
Every call uses its own short-lived connection (see
:mod:`runwatch.store.sqlite`), so a manager is safe to share between threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..exceptions import StoreError
from . import backup, downsample, queries
from .backends import is_postgres_url, open_store, store_location
from .base import Store
from .media_reads import MediaReads
from .schema import SCHEMA_VERSION

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DatabaseManager"]

_RUN_TIME_KEYS = ("start_time", "end_time", "updated_at", "last_heartbeat")


def _with_datetimes(record: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    for key in keys:
        if key in record:
            record[key] = queries.to_datetime(record[key])
    return record


class DatabaseManager(MediaReads):
    """Reads runs, metrics, events and state from a runwatch store, and manages its schema.

    Args:
        db_path: the SQLite file the monitor writes, or the URL of a
            PostgreSQL store (``postgresql://user@host/database``: scale-out,
            docs/scale.md). Nothing is opened or created here:
            :meth:`init_database` creates the store, and the query methods
            raise :class:`~runwatch.exceptions.StoreError` while it does not
            exist.

    Safe to share between threads: each call uses its own connection. Use it
    as a context manager, or call :meth:`close` when done.

    Example::

        with DatabaseManager("monitoring.db") as db:
            for run in db.get_training_runs(limit=5, status="completed"):
                frame = db.get_run_metrics(run["run_id"], ["loss"])
    """

    def __init__(self, db_path: str | Path = "monitoring.db") -> None:
        if not isinstance(db_path, (str, Path)):
            raise TypeError(f"db_path must be a str or Path, got {type(db_path).__name__}")
        location = store_location(db_path)
        #: The store's file, or its URL (PostgreSQL).
        self.db_path: Path | str = location if is_postgres_url(location) else Path(db_path)
        self._store = open_store(location)
        self._closed = False

    def __repr__(self) -> str:
        return f"DatabaseManager({str(self.db_path)!r})"

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the manager; later calls raise :class:`StoreError`. Idempotent."""
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- connections -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the DatabaseManager for {str(self.db_path)!r} is closed")

    @property
    def store(self) -> Store:
        """The store this manager reads (raises :class:`StoreError` once the manager is closed)."""
        self._check_open()
        return self._store

    def get_alerts(self, run_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Alert instances in a given state, from the stored alert events.

        Args:
            run_id: only this run's alerts; ``None`` for every run.
            state: ``pending``, ``firing`` or ``resolved``; ``None`` means pending
                and firing (what is active now).

        Raises:
            ValueError: an unknown state.
        """
        if state is not None and state not in queries.ALERT_QUERY_STATES:
            raise ValueError(f"state must be one of {', '.join(queries.ALERT_QUERY_STATES)}, or None; got {state!r}")
        states = ("pending", "firing") if state is None else (state,)
        return self.store.alerts(run_id=run_id, states=states)

    # -- schema ------------------------------------------------------------------------

    def init_database(self) -> None:
        """Create the store (and its directory), or upgrade it to the current schema.

        A new store file is created with mode 0600 and a missing directory
        with 0700; an existing directory keeps its mode.

        Safe to call on an existing, current store and while a writer runs.

        Raises:
            StoreError: the file is not a SQLite database, or was written by
                a newer runwatch, or cannot be created.
        """
        self.store.prepare()

    def get_schema_version(self) -> int:
        """The store's schema version.

        Returns:
            The version (0 for an empty database file).

        Raises:
            StoreError: the database does not exist or is not a SQLite database.
        """
        return self.store.schema_version()

    def migrate_schema(self, target_version: int | None = None) -> None:
        """Migrate the store's schema up or down, one transaction per step.

        Migrating down drops the data of the removed tables; version 0 is an
        empty database.

        Args:
            target_version: the version to reach, from 0 to the newest;
                ``None`` for the newest.

        Raises:
            ValueError: ``target_version`` is out of range or not an int.
            StoreError: the database does not exist, is not a SQLite
                database, or was written by a newer runwatch.
        """
        valid = type(target_version) is int and 0 <= target_version <= SCHEMA_VERSION
        if target_version is not None and not valid:
            raise ValueError(f"target_version must be an integer from 0 to {SCHEMA_VERSION}, got {target_version!r}")
        self.store.migrate(target_version)

    # -- runs --------------------------------------------------------------------------

    def get_training_runs(
        self, limit: int | None = None, status: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """List runs, newest first.

        Args:
            limit: at most this many runs; ``None`` for all.
            status: only runs with this status: ``running``, ``paused``,
                ``completed``, ``failed`` or ``crashed``.
            kind: only runs of this kind (``training``, ``session``...);
                ``None`` for every kind.

        Returns:
            One dict per run: ``run_id``, ``kind``, ``status``,
            ``start_time``, ``end_time``, ``updated_at``, ``last_heartbeat``
            (aware UTC ``datetime`` objects; ``end_time`` and
            ``last_heartbeat`` may be ``None``), ``total_steps``,
            ``total_episodes`` and ``final_reward`` (or ``None``).

        Raises:
            ValueError: ``limit`` is not a positive int, or ``status`` is unknown.
            TypeError: ``kind`` is not a non-empty string.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_limit(limit)
        queries.check_status(status)
        if kind is not None and (type(kind) is not str or not kind):
            raise TypeError(f"kind must be a non-empty string or None, got {kind!r}")
        runs = self.store.list_runs(limit=limit, status=status, kind=kind)
        return [_with_datetimes(run, _RUN_TIME_KEYS) for run in runs]

    def get_run_summary(self, run_id: str) -> dict[str, Any]:
        """Summarise one run: status, times, config, state, event counts and metric statistics.

        Args:
            run_id: the run.

        Returns:
            A dict with ``run_id``, ``kind``, ``status``, ``start_time``,
            ``end_time``, ``updated_at``, ``last_heartbeat`` (aware UTC
            ``datetime`` objects or ``None``), ``duration_seconds``,
            ``config``, ``metadata``, ``final_reward``, ``total_steps``,
            ``total_episodes``, ``state``, ``owner``, ``event_counts``
            (event type → count) and ``metrics``: metric name →
            ``{"last", "min", "max", "mean", "count", "nan_count",
            "last_step", "last_timestamp"}`` where ``last_timestamp`` is a
            ``datetime``, ``min``/``max``/``mean`` ignore NaN (``None`` when
            every value was NaN) and ``last`` may be NaN.

        Raises:
            TypeError: ``run_id`` is not a non-empty string.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        summary = _with_datetimes(self.store.run_summary(run_id), _RUN_TIME_KEYS)
        for stats in summary["metrics"].values():
            stats["last_timestamp"] = queries.to_datetime(stats["last_timestamp"])
        return summary

    def get_run_metrics(
        self,
        run_id: str,
        metric_names: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        *,
        align: str = "step",
    ) -> pd.DataFrame:
        """The metrics of a run as a DataFrame: one row per global step, or per logging call.

        Args:
            run_id: the run.
            metric_names: only these metrics, and only the calls that logged
                at least one of them; ``None`` for all.
            start_time: only calls at or after this time; a naive
                ``datetime`` is taken as UTC (epoch seconds are accepted too).
            end_time: only calls at or before this time.
            align: ``"step"`` (the default): one row per global step, in
                step order, merging the calls of that step (as W&B's history
                does): each metric keeps the value of the step's last call
                that logged it, and ``timestamp`` is that of the step's last
                call. A call without a step (the system sampler's readings)
                joins the step in progress when it was stored. A run whose
                calls have no step comes back one row per call.
                ``"call"``: one row per logging call, in the order stored,
                NaN where a call did not log a metric.

        Returns:
            Columns ``timestamp`` (``datetime64[ns, UTC]``), ``step``
            (nullable ``Int64``) and one ``float64`` column per metric
            (NaN where no call logged that metric; logged NaN and ±Inf are
            kept).

        Raises:
            TypeError: a bad ``run_id``, ``metric_names`` or time.
            ValueError: ``align`` is neither ``"step"`` nor ``"call"``.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        queries.check_align(align)
        queries.to_epoch_seconds(start_time, "start_time")
        queries.to_epoch_seconds(end_time, "end_time")
        return self.store.run_metrics(run_id, metric_names, start_time, end_time, align=align)

    def get_runs_metrics(
        self,
        run_ids: list[str],
        metric_names: list[str] | None = None,
    ) -> pd.DataFrame:
        """The metrics of several runs as one long-form DataFrame (for ``groupby`` and ``pivot``).

        Args:
            run_ids: the runs (at most 50).
            metric_names: only these metrics; ``None`` for every metric.

        Returns:
            One row per logged value: ``run_id`` (str), ``step`` (int64, the
            run's global step: that of the logging call; a call stored without
            one takes the step of the call before it), ``timestamp``
            (``datetime64[ns, UTC]``),
            ``metric`` (str) and ``value`` (float64; logged NaN and ±Inf are
            kept), ordered by run (as given), metric, then logging order.
            ``frame.pivot_table(index=["run_id", "step"], columns="metric",
            values="value")`` gives one row per run and step.

        Raises:
            TypeError: a bad run id or ``metric_names``.
            ValueError: no run, or more than 50.
            UnknownRunError: a run id no run has.
            StoreError: the database does not exist or cannot be read.
        """
        return self.store.runs_metrics_frame(run_ids, metric_names)

    def annotate_run(self, run_id: str, *, tags: list[str] | None = None, note: str | None = None) -> dict[str, Any]:
        """Set a run's tags and/or note (``None`` keeps that one); they show in the dashboard and exports.

        Returns:
            ``{"tags": [...], "note": str, "updated_at": datetime}`` after the change.

        Raises:
            TypeError, ValueError: bad tags (a list of one-line strings of at most
                64 characters, at most 50) or note (a string of at most 10,000).
            UnknownRunError: no run has this id.
            StoreError: the database does not exist, is older than schema
                version 8, or stayed locked.
        """
        result = self.store.annotate_run(run_id, tags=tags, note=note)
        result["updated_at"] = queries.to_datetime(result["updated_at"])
        return result

    def get_run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The events of a run, oldest first.

        Args:
            run_id: the run.
            event_type: only events of this type (``episode_end``,
                ``run_started``, ``error``, ``alert``...); ``None`` for all.
            start_time: only events at or after this time; a naive
                ``datetime`` is taken as UTC.
            end_time: only events at or before this time.

        Returns:
            One dict per event: ``id``, ``event_type``, ``event_data``,
            ``timestamp`` (aware UTC ``datetime``), ``level`` and ``kind``.

        Raises:
            TypeError: a bad ``run_id``, ``event_type`` or time.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        if event_type is not None and (type(event_type) is not str or not event_type):
            raise TypeError(f"event_type must be a non-empty string or None, got {event_type!r}")
        queries.to_epoch_seconds(start_time, "start_time")
        queries.to_epoch_seconds(end_time, "end_time")
        events = self.store.run_events(run_id, event_type, start_time, end_time)
        return [_with_datetimes(event, ("timestamp",)) for event in events]

    def get_run_state(self, run_id: str) -> dict[str, Any]:
        """The current state of a run: all its state patches merged.

        Args:
            run_id: the run.

        Returns:
            The state (``{}`` when none was recorded).

        Raises:
            TypeError: ``run_id`` is not a non-empty string.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        return self.store.run_state(run_id)

    # -- maintenance -------------------------------------------------------------------

    def mark_crashed_runs(self) -> list[str]:
        """Mark runs whose producer process on this host died as ``crashed``.

        Only ``running``/``paused`` runs owned by a process on this host that
        no longer exists are changed (a run ingested from a remote producer is
        owned by that producer and left to the liveness stage); their ``end_time`` becomes their last
        sign of life and a ``run_crashed`` event is recorded.

        Returns:
            The ids of the runs marked crashed.

        Raises:
            StoreError: the database does not exist, cannot be written, or
                stayed locked past the busy timeout.
        """
        return self.store.mark_crashed_runs()

    # -- data lifecycle ----------------------------------------------------------------

    def cleanup_old_data(self, older_than: datetime, dry_run: bool = False) -> int:
        """Remove the runs that ended before ``older_than``, with all their data.

        A run goes when it is not active (``running`` and ``paused`` runs are
        never touched, however old) and its last sign of life (the latest of
        its end time, last update and last heartbeat) is before
        ``older_than``. Its metric rows, metric statistics, rollups, events
        and state history go with it; other runs are not touched.

        Rows are removed in short transactions of at most 5,000 rows with a
        pause after each, so a running pipeline keeps committing meanwhile;
        memory stays bounded whatever the amount removed.

        Args:
            older_than: the cutoff; a naive ``datetime`` is taken as UTC. It
                may not be in the future.
            dry_run: only count what would be removed.

        Returns:
            The number of records removed (or, with ``dry_run``, that would
            be): each run and each of its rows counts as one.

        Raises:
            TypeError: ``older_than`` is not a ``datetime``, or ``dry_run``
                not a ``bool``.
            ValueError: ``older_than`` is in the future.
            StoreError: the database does not exist, cannot be written, or
                a writer kept the write lock for 30 s without a gap (what was
                removed until then stays removed; calling again continues).
        """
        cutoff = _check_cutoff(older_than)
        if type(dry_run) is not bool:
            raise TypeError(f"dry_run must be a bool, got {type(dry_run).__name__}")
        return self.store.cleanup_old_data(cutoff, dry_run=dry_run)

    def downsample_metrics(
        self, older_than: datetime, bucket_rows: int = downsample.DEFAULT_BUCKET_ROWS
    ) -> dict[str, int]:
        """Replace the metric rows logged before ``older_than`` by per-bucket rollups.

        Only runs that are not active are touched. Their old logging calls
        are cut into buckets of ``bucket_rows`` consecutive calls; each
        bucket becomes one rollup per metric (row, step and time range,
        count, NaN count, min, max, mean; see :meth:`get_metric_rollups`)
        and its rows leave ``metric_rows``, so :meth:`get_run_metrics`
        returns only the rows that were kept. Runs without old rows are not
        changed; the per-metric summary of :meth:`get_run_summary` stays exact.

        Args:
            older_than: the cutoff; a naive ``datetime`` is taken as UTC; not in the future.
            bucket_rows: logging calls per bucket, at least 2.

        Returns:
            ``{"removed_rows": ..., "written_rollups": ...}``.

        Raises:
            TypeError, ValueError: a bad ``older_than`` or ``bucket_rows``.
            StoreError: the store predates schema version 3 (call
                :meth:`init_database`), does not exist, or stayed locked.
        """
        cutoff = _check_cutoff(older_than)
        if type(bucket_rows) is not int or bucket_rows < 2:
            raise ValueError(f"bucket_rows must be an integer >= 2, got {bucket_rows!r}")
        return self.store.downsample_metrics(cutoff, bucket_rows=bucket_rows)

    def get_metric_rollups(self, run_id: str, metric_names: list[str] | None = None) -> pd.DataFrame:
        """The rollups that replaced a run's downsampled metric rows.

        Args:
            run_id: the run.
            metric_names: only these metrics; ``None`` for all.

        Returns:
            One row per rollup, by metric then row: ``name``, ``first_row``,
            ``last_row``, ``first_step``, ``last_step`` (nullable ``Int64``),
            ``start_time``, ``end_time`` (``datetime64[ns, UTC]``),
            ``count`` (values, NaN included), ``nan_count``, and ``min``,
            ``max``, ``mean`` over the values that were not NaN (NaN when
            there were none). Empty when nothing was downsampled.

        Raises:
            TypeError: a bad ``run_id`` or ``metric_names``.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        return downsample.rollup_frame(self.store.metric_rollups(run_id, metric_names))

    def optimize_database(self) -> dict[str, Any]:
        """Refresh the planner's statistics and give free space back to the file system.

        Runs ``ANALYZE``, a WAL checkpoint, then ``VACUUM`` (or ``PRAGMA
        incremental_vacuum`` on a store created with incremental
        auto-vacuum). ``VACUUM`` rewrites the whole file: it needs free disk
        space for a second copy and holds the write lock throughout, so a
        running pipeline's writes wait (and the sink reports ``degraded`` if
        that lasts past its 5 s busy timeout, then catches up). Run it while
        nothing is logging, e.g. after :meth:`cleanup_old_data`.

        Returns:
            ``size_bytes_before``, ``size_bytes_after``, ``wal_bytes_before``,
            ``wal_bytes_after``, ``freelist_pages_before``,
            ``freelist_pages_after``, ``vacuum`` (``"full"`` or
            ``"incremental"``), ``checkpoint_busy`` and ``seconds``.

        Raises:
            StoreError: the database does not exist, cannot be written, or
                stayed locked past the busy timeout.
        """
        return self.store.optimize()

    def create_backup(self, backup_dir: Path, tag: str | None = None) -> Path:
        """Copy the store into ``backup_dir``, safely while a pipeline writes to it.

        The copy holds everything committed when it started (call the
        monitor's ``flush()`` first to include what was just logged). It is
        written under a temporary name, must pass ``PRAGMA integrity_check``,
        then is renamed atomically, so a ``runwatch-backup-*.db`` file is
        always complete.

        Args:
            backup_dir: the directory (created, mode 0700, if missing).
            tag: an optional label: 1 to 64 letters, digits, ``_`` or ``-``.

        Returns:
            The backup, ``backup_dir/runwatch-backup-<UTC time>[-<tag>].db``
            (time as ``20250131T235959.123Z``), mode 0600.

        Raises:
            TypeError, ValueError: a bad ``backup_dir`` or ``tag``.
            StoreError: the database does not exist or cannot be read, the
                copy failed its integrity check (it is deleted), or the
                directory cannot be written.
        """
        backup.backup_file_name(tag)  # check the tag before any I/O
        if not isinstance(backup_dir, (str, Path)):
            raise TypeError(f"backup_dir must be a str or Path, got {type(backup_dir).__name__}")
        return self.store.create_backup(Path(backup_dir), tag)

    def restore_backup(self, backup_path: Path) -> Path | None:
        """Replace the store by a backup, keeping the current database aside.

        Stop every pipeline, monitor and server using this store first: the
        restore refuses (``StoreError``) while any other connection has the
        database open, since a running writer would go on with ids of the
        replaced database. The backup is checked before anything changes.

        Args:
            backup_path: a file made by :meth:`create_backup` (or any intact
                runwatch database of schema version 1 up to the current one;
                an older one is upgraded when a pipeline next opens it).

        Returns:
            The copy of the replaced database,
            ``<db_path>.pre-restore-<UTC time>.db``; ``None`` when there was
            no database at ``db_path`` yet.

        Raises:
            TypeError: ``backup_path`` is not a str or Path.
            BackupError: the backup is missing, not SQLite, truncated,
                corrupt, or not a runwatch database (nothing was changed).
            StoreError: the store is in use, or cannot be read or copied
                (nothing was changed).
        """
        store = self.store
        if not isinstance(backup_path, (str, Path)):
            raise TypeError(f"backup_path must be a str or Path, got {type(backup_path).__name__}")
        return store.restore_backup(backup_path)

    def db_info(self) -> dict[str, Any]:
        """Sizes, page statistics, schema version and row counts of the store.

        Counting rows reads every table (about a second per few million
        metric rows).

        Returns:
            ``path``, ``size_bytes``, ``wal_bytes``, ``page_size``,
            ``page_count``, ``freelist_pages``, ``auto_vacuum``,
            ``journal_mode``, ``schema_version`` and ``tables`` (table name →
            row count).

        Raises:
            StoreError: the database does not exist or is not a SQLite database.
        """
        return self.store.info()


def _check_cutoff(older_than: object) -> float:
    """``older_than`` as epoch seconds: a ``datetime`` (naive = UTC) not in the future."""
    if not isinstance(older_than, datetime):
        raise TypeError(f"older_than must be a datetime, got {type(older_than).__name__}")
    seconds = queries.to_epoch_seconds(older_than, "older_than")
    assert seconds is not None
    if seconds > time.time():
        raise ValueError(f"older_than must not be in the future, got {older_than.isoformat()}")
    return seconds
