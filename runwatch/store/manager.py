"""``DatabaseManager``: the public read and maintenance API over one store file.

It is a thin shell around :mod:`runwatch.store.queries` (the SQL and the
decoding) and :mod:`runwatch.store.schema` (migrations): it checks arguments,
opens connections, and turns epoch seconds into timezone-aware ``datetime``
objects (UTC) for the public API.

Connections: every call opens its own short-lived connection and closes it
before returning, instead of sharing one connection behind a lock. The
manager is used from several threads at once (REST handlers in a thread
pool, the dashboard, a user's notebook); separate connections let their
reads run in parallel on their own WAL snapshots, while a shared connection
would serialise them and carry one thread's transaction state into another's
call. Opening, checking the schema version and closing costs about 0.3 ms
(measured here on a WAL store), small beside a REST round trip and any query
that reads metrics. The writer (the SQLite sink) is never blocked by these
readers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from ..exceptions import StoreError
from . import queries
from .schema import SCHEMA_VERSION, apply_pragmas, current_version, migrate, prepare_database

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DatabaseManager"]

_T = TypeVar("_T")

# How long a connection waits for a lock held by a writer before failing.
_BUSY_TIMEOUT_SECONDS = 5.0

_RUN_TIME_KEYS = ("start_time", "end_time", "updated_at", "last_heartbeat")


def _to_datetime(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _with_datetimes(record: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    for key in keys:
        if key in record:
            record[key] = _to_datetime(record[key])
    return record


class DatabaseManager:
    """Reads runs, metrics, events and state from a runwatch store, and manages its schema.

    Args:
        db_path: the SQLite file the monitor writes. Nothing is opened or
            created here: :meth:`init_database` creates the store, and the
            query methods raise :class:`~runwatch.exceptions.StoreError` while
            it does not exist.

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
        self.db_path = Path(db_path)
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

    @contextmanager
    def _connect(self, *, write: bool = False, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection to the existing store, closed on exit.

        ``mode=rw`` makes SQLite fail on a missing file instead of creating an
        empty database that would hide a wrong path.
        """
        self._check_open()
        uri = self.db_path.absolute().as_uri() + "?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_SECONDS)
        except sqlite3.OperationalError as exc:
            if not self.db_path.exists():
                raise StoreError(
                    f"no runwatch database at {str(self.db_path)!r}; call init_database() to create it"
                ) from None
            raise StoreError(f"cannot open the database {str(self.db_path)!r}: {exc}") from exc
        try:
            if not write:
                conn.execute("PRAGMA query_only = ON")
            if check_schema:
                self._check_schema(conn)
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreError(f"the database {str(self.db_path)!r} stayed locked: {exc}") from exc
            raise StoreError(f"the database {str(self.db_path)!r} cannot be used: {exc}") from exc
        finally:
            conn.close()

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        # An older store stays readable as long as it has the tables the
        # queries use: reading must not require a migration (a write).
        version = current_version(conn)
        if not queries.MIN_READ_VERSION <= version <= SCHEMA_VERSION:
            hint = "upgrade runwatch" if version > SCHEMA_VERSION else "call init_database() or migrate_schema()"
            raise StoreError(
                f"the database {str(self.db_path)!r} has schema version {version}, this runwatch reads versions "
                f"{queries.MIN_READ_VERSION} to {SCHEMA_VERSION}; {hint}"
            )

    def _read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self._connect() as conn:
            return fn(conn, *args, **kwargs)

    # -- schema ------------------------------------------------------------------------

    def init_database(self) -> None:
        """Create the store (and its directory), or upgrade it to the current schema.

        Safe to call on an existing, current store and while a writer runs.

        Raises:
            StoreError: the file is not a SQLite database, or was written by
                a newer runwatch, or cannot be created.
        """
        self._check_open()
        try:
            self.db_path.absolute().parent.mkdir(parents=True, exist_ok=True)
            prepare_database(str(self.db_path))
        except (sqlite3.DatabaseError, ValueError, OSError) as exc:
            raise StoreError(f"cannot initialise the database {str(self.db_path)!r}: {exc}") from exc

    def get_schema_version(self) -> int:
        """The store's schema version.

        Returns:
            The version (0 for an empty database file).

        Raises:
            StoreError: the database does not exist or is not a SQLite database.
        """
        with self._connect(check_schema=False) as conn:
            return current_version(conn)

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
        with self._connect(write=True, check_schema=False) as conn:
            version = current_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {str(self.db_path)!r} has schema version {version}, newer than this runwatch "
                    f"({SCHEMA_VERSION}); upgrade runwatch"
                )
            apply_pragmas(conn)
            migrate(conn, target_version)

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
        runs = self._read(queries.list_runs, limit=limit, status=status, kind=kind)
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
        summary = _with_datetimes(self._read(queries.run_summary, run_id), _RUN_TIME_KEYS)
        for stats in summary["metrics"].values():
            stats["last_timestamp"] = _to_datetime(stats["last_timestamp"])
        return summary

    def get_run_metrics(
        self,
        run_id: str,
        metric_names: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> pd.DataFrame:
        """The metrics of a run as a DataFrame with one row per logging call.

        Args:
            run_id: the run.
            metric_names: only these metrics, and only the calls that logged
                at least one of them; ``None`` for all.
            start_time: only calls at or after this time; a naive
                ``datetime`` is taken as UTC (epoch seconds are accepted too).
            end_time: only calls at or before this time.

        Returns:
            Columns ``timestamp`` (``datetime64[ns, UTC]``), ``step``
            (nullable ``Int64``) and one ``float64`` column per metric
            (NaN where a call did not log that metric; logged NaN and ±Inf
            are kept). Rows are in the order the calls were stored.

        Raises:
            TypeError: a bad ``run_id``, ``metric_names`` or time.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        queries.to_epoch_seconds(start_time, "start_time")
        queries.to_epoch_seconds(end_time, "end_time")
        return self._read(queries.run_metrics_frame, run_id, metric_names, start_time, end_time)

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
        events = self._read(queries.run_events, run_id, event_type, start_time, end_time)
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
        return self._read(queries.run_state, run_id)

    # -- maintenance -------------------------------------------------------------------

    def mark_crashed_runs(self) -> list[str]:
        """Mark runs whose writer process on this host died as ``crashed``.

        Only ``running``/``paused`` runs owned by a process on this host that
        no longer exists are changed; their ``end_time`` becomes their last
        sign of life and a ``run_crashed`` event is recorded.

        Returns:
            The ids of the runs marked crashed.

        Raises:
            StoreError: the database does not exist, cannot be written, or
                stayed locked past the busy timeout.
        """
        with self._connect(write=True) as conn:
            return queries.mark_crashed_runs(conn)
