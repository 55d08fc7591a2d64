"""The SQLite store: one file, WAL mode, any number of readers beside one writer.

:class:`SQLiteStore` implements :class:`~runwatch.store.base.Store` over the
modules that hold the SQL: :mod:`.queries` (reads, by entity),
:mod:`.writer` (the one write path), :mod:`.schema` (the only migrator),
:mod:`.lifecycle`, :mod:`.downsample`, :mod:`.backup` and :mod:`.export`.

Connections: every call opens its own short-lived connection
(:mod:`.connections`) and closes it before returning, instead of sharing one
behind a lock. The store is used from several threads at once (REST handlers
in a thread pool, the dashboard, a notebook, the pipeline's stages);
separate connections let their reads run in parallel on their own WAL
snapshots, while a shared connection would serialise them and carry one
thread's transaction state into another's call. Opening, checking the schema
version and closing costs about 0.3 ms (measured on a WAL store), small
beside a REST round trip and any query that reads metrics. The writer is
never blocked by these readers.

Errors: a missing file is a :class:`~runwatch.exceptions.StoreError` (a wrong
path never creates an empty database); a locked or failing store is a
:class:`~runwatch.exceptions.StoreUnavailable`; a file that is not a
database, or of a schema this code cannot read, a ``StoreError``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from ..exceptions import StoreError, StoreUnavailable
from . import backup, connections, downsample, export, lifecycle, queries
from .base import (
    MaintenancePass,
    RunActivity,
    SeriesSummary,
    StoreTail,
    StoreWriter,
    TimeLike,
)
from .chunk_reads import read_summaries
from .chunk_schema import CHUNK_VERSION
from .queries import datacat as datacat_queries
from .queries import media as media_queries
from .queries import runs as run_queries
from .queries import sessions as session_queries
from .queries import snapshots as snapshot_queries
from .queries.annotations import has_annotations, set_run_annotations
from .queries.common import read_snapshot
from .schema import SCHEMA_VERSION, current_version, migrate, prepare_database
from .shared_reads import ChunkReadMethods

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")

#: The most a maintenance slice pauses between two of its transactions.
_MAX_PAUSE_SECONDS: Final = lifecycle.MAX_PAUSE_SECONDS


class SQLiteStore(ChunkReadMethods):
    """A runwatch store in one SQLite file (see the module docs).

    Args:
        path: the store file. Nothing is opened or created here:
            :meth:`prepare` (or the pipeline's writer) creates it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.location = str(path)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.location!r})"

    # -- connections -------------------------------------------------------------------------

    @contextlib.contextmanager
    def connection(self, *, write: bool = False, check_schema: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection to the existing store (read-only unless ``write``), closed on exit.

        Raises:
            StoreError: the store does not exist, is not a database, or has a
                schema this runwatch cannot read (``check_schema``).
            StoreUnavailable: the store stayed locked, or cannot be opened now.
        """
        try:
            conn = connections.open_read_write(self.path) if write else connections.open_reader(self.path)
        except sqlite3.OperationalError as exc:
            if not self.path.exists():
                raise StoreError(
                    f"no runwatch database at {self.location!r}; call init_database() to create it"
                ) from None
            raise StoreUnavailable(f"cannot open the database {self.location!r}: {exc}") from exc
        try:
            if check_schema:
                self._check_schema(conn)
            yield conn
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreUnavailable(f"the database {self.location!r} stayed locked: {exc}") from exc
            raise StoreUnavailable(f"the database {self.location!r} cannot be used: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the database {self.location!r} cannot be used: {exc}") from exc
        finally:
            conn.close()

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        # An older store stays readable as long as it has the tables the
        # queries use: reading must not require a migration (a write).
        version = current_version(conn)
        if not queries.MIN_READ_VERSION <= version <= SCHEMA_VERSION:
            hint = "upgrade runwatch" if version > SCHEMA_VERSION else "call init_database() or migrate_schema()"
            raise StoreError(
                f"the database {self.location!r} has schema version {version}, this runwatch reads versions "
                f"{queries.MIN_READ_VERSION} to {SCHEMA_VERSION}; {hint}"
            )

    def _read(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self.connection() as conn:
            return fn(conn, *args, **kwargs)

    def _read_metrics(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A read of metric series: they live in chunks, from schema version :data:`CHUNK_VERSION` on."""
        with self.connection() as conn:
            self._check_chunks(conn)
            return fn(conn, *args, **kwargs)

    def _check_chunks(self, conn: sqlite3.Connection) -> None:
        version = current_version(conn)
        if version < CHUNK_VERSION:
            raise StoreError(
                f"the database {self.location!r} has schema version {version}: its metrics are read from"
                f" version {CHUNK_VERSION} on; call init_database() or migrate_schema() (runwatch migrate)"
            )

    def _read_if_exists(self, empty: _T, fn: Callable[..., _T], *args: Any) -> _T:
        """A read that finds nothing (``empty``) in a store not created yet, or one nothing was written to."""
        if not self.path.exists():
            return empty
        with self.connection(check_schema=False) as conn:
            return fn(conn, *args)

    # -- the store itself --------------------------------------------------------------------

    def exists(self) -> bool:
        return self.path.exists()

    def identity(self) -> dict[str, str | None]:
        # device:inode: symlinks, relative paths and bind mounts of one file are one store.
        resolved = str(self.path.resolve())
        try:
            stat = self.path.stat()
        except OSError:
            return {"path": resolved, "identity": None}
        return {"path": resolved, "identity": f"{stat.st_dev}:{stat.st_ino}"}

    def prepare(self) -> None:
        try:
            prepare_database(self.location)  # a new store is 0600, a directory it creates 0700
        except (sqlite3.DatabaseError, ValueError, OSError) as exc:
            raise StoreError(f"cannot initialise the database {self.location!r}: {exc}") from exc

    def schema_version(self) -> int:
        with self.connection(check_schema=False) as conn:
            return current_version(conn)

    def migrate(self, target_version: int | None = None) -> list[int]:
        with self.connection(write=True, check_schema=False) as conn:
            version = current_version(conn)
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the database {self.location!r} has schema version {version}, newer than this runwatch "
                    f"({SCHEMA_VERSION}); upgrade runwatch"
                )
            connections.apply_pragmas(conn)
            return migrate(conn, target_version)

    def open_writer(self, *, owner: str, max_image_bytes_per_run: int | None = None) -> StoreWriter:
        from .writer import SQLiteWriter

        return SQLiteWriter(self.location, owner, max_image_bytes_per_run=max_image_bytes_per_run)

    def open_tail(self, *, max_rows: int = 20_000) -> StoreTail:
        from .tail import SQLiteTail

        return SQLiteTail(self.location, max_rows=max_rows)

    # -- runs --------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        limit: int | None = None,
        status: str | None = None,
        kind: str | None = None,
        exclude_kind: str | None = None,
    ) -> list[dict[str, Any]]:
        return self._read(queries.list_runs, limit=limit, status=status, kind=kind, exclude_kind=exclude_kind)

    def run_summary(self, run_id: str) -> dict[str, Any]:
        return self._read(queries.run_summary, run_id)

    def run_state(self, run_id: str) -> dict[str, Any]:
        return self._read(queries.run_state, run_id)

    def state_history(
        self, run_id: str, limit: int | None = None, *, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        return self._read(queries.state_history, run_id, limit, before_id=before_id)

    def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
        return self._read_if_exists({}, run_queries.run_statuses, run_ids)

    def run_activity(self, run_ids: list[str] | None) -> list[RunActivity]:
        return self._read_if_exists([], run_queries.run_activity, run_ids)

    def has_run(self, run_id: str) -> bool:
        return self._read_if_exists(False, run_queries.has_run, run_id)

    def live_writers(self) -> list[dict[str, Any]]:
        return self._read_if_exists([], run_queries.live_writers)

    def mark_crashed_runs(self, *, host: str | None = None) -> list[str]:
        with self.connection(write=True) as conn:
            return queries.mark_crashed_runs(conn, host=host)

    # -- events and alerts -------------------------------------------------------------------

    def run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        *,
        kind: str | None = None,
        level: str | None = None,
        limit: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        return self._read(
            queries.run_events,
            run_id,
            event_type,
            start_time,
            end_time,
            kind=kind,
            level=level,
            limit=limit,
            before_id=before_id,
            newest_first=newest_first,
        )

    def alert_events(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._read(
            queries.alert_events, run_id=run_id, severity=severity, rule=rule, limit=limit, before_id=before_id
        )

    def alerts(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        states: tuple[str, ...] = ("pending", "firing"),
    ) -> list[dict[str, Any]]:
        return self._read(queries.alerts, run_id=run_id, severity=severity, states=states)

    # -- metrics (the chunk reads: ChunkReadMethods) ---------------------------------------

    def read_summaries(self, run_id: str, names: Sequence[str] | None = None) -> dict[str, SeriesSummary]:
        return self._read_metrics(read_summaries, run_id, names)

    # -- what people say about runs ----------------------------------------------------------

    def runs_table_details(self, run_ids: Sequence[str], metric_names: Sequence[str] | None = None) -> dict[str, Any]:
        return self._read(queries.runs_table_details, list(run_ids), list(metric_names or []))

    def annotate_run(
        self, run_id: str, *, tags: Sequence[str] | None = None, note: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        queries.check_run_id(run_id)
        with self.connection(write=True) as conn:
            if not has_annotations(conn):
                raise StoreError(f"the database {self.location!r} predates run annotations; migrate it first")
            return set_run_annotations(conn, run_id, now=time.time() if now is None else now, tags=tags, note=note)

    # -- images and histograms ---------------------------------------------------------------

    def image_names(self, run_id: str) -> list[dict[str, Any]]:
        return self._read(media_queries.image_names, run_id)

    def images(
        self,
        run_id: str,
        name: str | None = None,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._read(
            media_queries.images_of_run, run_id, name, start_step=start_step, end_step=end_step, limit=limit
        )

    def image_at(
        self, run_id: str, name: str, step: int | None = None, *, with_data: bool = False
    ) -> dict[str, Any] | None:
        with self.connection() as conn, read_snapshot(conn):  # the row and its content from one snapshot
            row = media_queries.image_at(conn, run_id, name, step)
            if row is None or not with_data:
                return row
            content = media_queries.image_blob(conn, row["digest"])
        return None if content is None else {**row, "data": content[1]}

    def image_content(self, digest: str) -> tuple[str, bytes] | None:
        return self._read(media_queries.image_blob, digest)

    def histogram_names(self, run_id: str) -> list[dict[str, Any]]:
        return self._read(media_queries.histogram_names, run_id)

    def histograms(
        self,
        run_id: str,
        name: str,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        max_count: int | None = None,
    ) -> list[dict[str, Any]]:
        return self._read(
            media_queries.run_histograms, run_id, name, start_step=start_step, end_step=end_step, max_count=max_count
        )

    def media_usage(self, run_id: str) -> dict[str, int]:
        return self._read(media_queries.media_usage, run_id)

    # -- ingest, snapshots -------------------------------------------------------------------

    def stored_batch_digest(self, run_id: str, batch_id: str) -> str | None:
        return self._read_if_exists(None, run_queries.stored_batch_digest, run_id, batch_id)

    def stored_runs(self, run_ids: Sequence[str]) -> set[str]:
        none: dict[str, int] = {}
        return set(self._read_if_exists(none, snapshot_queries.run_rows, run_ids))

    def save_snapshots(
        self,
        snapshots: Sequence[tuple[str, bytes]],
        taken_at: float,
        max_snapshots: int,
        *,
        busy_timeout_seconds: float = 5.0,
    ) -> tuple[list[str], int]:
        if not snapshots or not self.path.exists():
            return [], 0
        with connections.writing(self.path, timeout=busy_timeout_seconds) as conn:
            return snapshot_queries.save_snapshot_rows(conn, snapshots, taken_at, max_snapshots)

    def latest_snapshots(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        return self._read_if_exists({}, snapshot_queries.latest_snapshots, run_ids)

    # -- sessions ----------------------------------------------------------------------------

    def session_run_status(self, session_id: str) -> str:
        return self._read(session_queries.session_run_status, session_id)

    def read_session(
        self,
        session_id: str,
        *,
        events_limit: int,
        events_before: int | None = None,
        metrics_limit: int,
        metrics_before: int | None = None,
        history_limit: int = 100,
        history_before: int | None = None,
    ) -> dict[str, Any]:
        return self._read_metrics(
            session_queries.read_session,
            session_id,
            events_limit=events_limit,
            events_before=events_before,
            metrics_limit=metrics_limit,
            metrics_before=metrics_before,
            history_limit=history_limit,
            history_before=history_before,
        )

    def list_sessions(
        self,
        *,
        active: bool | None,
        status: str | None,
        product: str | None,
        limit: int,
        before: int | None,
        now: float | None = None,
        timeout_seconds: float = 60.0,
    ) -> list[dict[str, Any]]:
        return self._read(
            session_queries.list_sessions,
            active=active,
            status=status,
            product=product,
            limit=limit,
            before=before,
            now=now,
            timeout_seconds=timeout_seconds,
        )

    def session_statistics(self, since: float | None) -> dict[str, Any]:
        return self._read_metrics(session_queries.session_statistics, since)

    def session_metrics(self, start: float | None, end: float | None) -> list[dict[str, Any]]:
        return self._read_metrics(session_queries.session_metrics, start, end)

    def remove_old_sessions(self, cutoff: float) -> dict[str, int]:
        with self.connection(write=True) as conn:
            self._check_chunks(conn)
            return session_queries.remove_old_sessions(conn, cutoff)

    def whole_sessions(self, session_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        return self._read_metrics(datacat_queries.session_rows, session_ids)

    def suspended_sessions_of_machine(self, machine_id: str, now: float, timeout_seconds: float) -> list[str]:
        return self._read(datacat_queries.suspended_sessions_of_machine, machine_id, now, timeout_seconds)

    # -- lifecycle ---------------------------------------------------------------------------

    def cleanup_pass(self, cutoff: float, *, batch_rows: int, lock_wait_seconds: float) -> MaintenancePass:
        return lifecycle.CleanupPass(cutoff, batch_rows=batch_rows, lock_wait_seconds=lock_wait_seconds)

    def downsample_pass(
        self, cutoff: float, *, bucket_rows: int, batch_rows: int, lock_wait_seconds: float
    ) -> MaintenancePass:
        return downsample.DownsamplePass(
            cutoff, bucket_rows=bucket_rows, batch_rows=batch_rows, lock_wait_seconds=lock_wait_seconds
        )

    def work(self, passes: list[MaintenancePass], *, work_seconds: float) -> tuple[list[MaintenancePass], bool]:
        """See :meth:`Store.work`.

        Between two transactions a pass pauses about as long as the last one
        took (see :mod:`runwatch.store.lifecycle`), so the sink finds the write
        lock free. A store not created yet has nothing to remove: the passes
        end at once. Errors other than a busy store propagate as they are
        (the runner counts them; the pass resumes next time).
        """
        deadline = time.perf_counter() + work_seconds
        try:
            conn = connections.open_read_write(self.path)  # never creates a store: the sink does that
        except sqlite3.OperationalError:
            passes.clear()  # no store (yet): nothing to remove
            return [], False
        finished: list[MaintenancePass] = []
        try:
            while passes:
                started = time.perf_counter()
                try:
                    more = _sqlite_pass(passes[0]).step(conn)
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        return finished, True
                    raise
                if not more:
                    finished.append(passes.pop(0))
                    continue
                elapsed = time.perf_counter() - started
                pause = min(elapsed, _MAX_PAUSE_SECONDS)
                if time.perf_counter() + elapsed + pause >= deadline:
                    return finished, False
                time.sleep(pause)  # let the sink take the write lock (see runwatch.store.lifecycle)
        finally:
            conn.close()
        return finished, False

    def cleanup_old_data(self, older_than: float, *, dry_run: bool = False) -> int:
        with self.connection(write=not dry_run) as conn:
            return lifecycle.cleanup_old_data(conn, older_than, dry_run=dry_run)

    def downsample_metrics(self, older_than: float, *, bucket_rows: int) -> dict[str, int]:
        with self.connection(write=True) as conn:
            return downsample.downsample_metrics(conn, older_than, bucket_rows=bucket_rows)

    def metric_rollups(self, run_id: str, metric_names: list[str] | None = None) -> list[dict[str, Any]]:
        return self._read(downsample.metric_rollups, run_id, metric_names)

    def optimize(self) -> dict[str, Any]:
        with self.connection(write=True) as conn:
            return lifecycle.optimize_database(conn)

    def info(self) -> dict[str, Any]:
        with self.connection(check_schema=False) as conn:
            return lifecycle.database_info(conn)

    def create_backup(self, backup_dir: Path, tag: str | None = None) -> Path:
        with self.connection():  # the store exists and has a schema this runwatch reads
            pass
        return backup.create_backup(self.path, backup_dir, tag)

    def restore_backup(self, backup_path: Path) -> Path | None:
        return backup.restore_backup(self.path, backup_path)

    def export_run(self, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
        with self.connection() as conn:
            self._check_chunks(conn)
        return export.export_run(self.location, run_id, output_dir, include_snapshots=include_snapshots)


def _sqlite_pass(job: MaintenancePass) -> lifecycle.Pass:
    if not isinstance(job, (lifecycle.CleanupPass, downsample.DownsamplePass)):
        raise TypeError(f"{job!r} is not a pass of the SQLite store")
    return job
