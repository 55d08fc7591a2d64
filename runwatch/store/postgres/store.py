"""The PostgreSQL store: :class:`~runwatch.store.base.Store` on a shared PostgreSQL database.

The same tables, versions and answers as the SQLite store
(:mod:`.schema`, :mod:`.reads`), so ``DatabaseManager``, the REST API, the
dashboard, the CLI and the pipeline's stages work on either unchanged. What
differs is where the data lives and who may write it: any number of
processes on any number of machines (serve nodes, workers, notebooks) share
the database; each pipeline sink writes through its own connection
(:mod:`.writer`), every other call borrows one of the process's pool
(:mod:`.connection`).

Methods block, as the interface says: call them from a worker thread, never
on an event loop thread that asyncpg would need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ...exceptions import StoreUnavailable
from ..base import (
    MaintenancePass,
    RunActivity,
    SeriesSummary,
    StoreTail,
    StoreWriter,
    TimeLike,
)
from ..lifecycle import DEFAULT_BATCH_ROWS, check_cutoff
from ..queries.common import check_run_id
from ..shared_reads import ChunkReadMethods
from . import compare, maintenance, media, partitions, reads, sessions, transfer
from .blocking import blocking_connection
from .connection import portal_for, redact_dsn
from .schema import current_version, migrate
from .tail import PostgresTail
from .writer import FenceProvider, PostgresWriter

__all__ = ["PostgresStore"]

_T = TypeVar("_T")


class PostgresStore(ChunkReadMethods):
    """A runwatch store in a PostgreSQL database (see the module docs).

    Args:
        dsn: ``postgresql://user[:password]@host[:port]/database`` (libpq's URL
            form; the database must exist, :meth:`prepare` creates the tables).
            Nothing is opened here.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.location = redact_dsn(dsn)

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    @property
    def _portal(self) -> Any:
        return portal_for(self.dsn)

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._portal.run(fn, *args, **kwargs)

    def _read_metrics(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """One of the shared metric reads (written for a ``sqlite3`` connection) on a held connection."""
        with blocking_connection(self._portal) as connection:
            return fn(connection, *args, **kwargs)

    # -- the store itself ----------------------------------------------------------------

    def exists(self) -> bool:
        return int(self._run(current_version)) > 0

    def identity(self) -> dict[str, str | None]:
        """The URL without its password, and the database's system identifier with its name (``None`` while
        the store does not exist): equal for two URLs of one database."""
        try:
            found: str | None = self._run(_database_identity)
        except StoreUnavailable:
            found = None
        return {"path": self.location, "identity": found}

    def prepare(self) -> None:
        self._run(migrate)

    def schema_version(self) -> int:
        return int(self._run(current_version))

    def migrate(self, target_version: int | None = None) -> list[int]:
        passed: list[int] = self._run(migrate, target_version)
        return passed

    def open_writer(
        self, *, owner: str, max_image_bytes_per_run: int | None = None, fences: FenceProvider | None = None
    ) -> StoreWriter:
        """The write path for one pipeline sink (see :class:`~runwatch.store.postgres.writer.PostgresWriter`).

        Args:
            owner: ``host:pid:start-time`` of the writing process.
            max_image_bytes_per_run: a run's image budget in bytes (``None``: none).
            fences: the bus fences of each batch (a worker's bus source), or ``None``.
        """
        return PostgresWriter(self.dsn, owner, max_image_bytes_per_run=max_image_bytes_per_run, fences=fences)

    def open_tail(self, *, max_rows: int = 20_000) -> StoreTail:
        return PostgresTail(self.dsn, max_rows=max_rows)

    # -- the scale-out bus's partitions ------------------------------------------------------

    def claim_partition(self, partition: int, token: int, owner: str) -> int | None:
        """Record a new owner's fencing token for a bus partition (see :mod:`.partitions`).

        Returns:
            The partition's last committed stream sequence, or ``None`` when a newer token is stored.
        """
        claimed: int | None = self._run(partitions.claim_partition, partition, token, owner)
        return claimed

    def partition_owners(self) -> list[dict[str, Any]]:
        """Every bus partition's owner, token and last committed stream sequence."""
        found: list[dict[str, Any]] = self._run(partitions.partition_owners)
        return found

    # -- runs --------------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        limit: int | None = None,
        status: str | None = None,
        kind: str | None = None,
        exclude_kind: str | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(
            reads.list_runs, limit=limit, status=status, kind=kind, exclude_kind=exclude_kind
        )
        return found

    def run_summary(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._run(reads.run_summary, run_id)
        return found

    def run_state(self, run_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self._run(reads.run_state, run_id)
        return found

    def state_history(
        self, run_id: str, limit: int | None = None, *, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(reads.state_history, run_id, limit, before_id=before_id)
        return found

    def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = self._run(reads.run_statuses, list(run_ids))
        return found

    def run_activity(self, run_ids: list[str] | None) -> list[RunActivity]:
        found: list[RunActivity] = self._run(reads.run_activity, None if run_ids is None else list(run_ids))
        return found

    def has_run(self, run_id: str) -> bool:
        return bool(self._run(reads.has_run, run_id))

    def live_writers(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(reads.live_writers)
        return found

    def mark_crashed_runs(self, *, host: str | None = None) -> list[str]:
        found: list[str] = self._run(maintenance.mark_crashed_runs, host)
        return found

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
        found: list[dict[str, Any]] = self._run(
            reads.run_events,
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
        return found

    def alert_events(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(
            reads.alert_events, run_id=run_id, severity=severity, rule=rule, limit=limit, before_id=before_id
        )
        return found

    def alerts(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        states: tuple[str, ...] = ("pending", "firing"),
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(reads.alerts, run_id=run_id, severity=severity, states=states)
        return found

    # -- metrics (the chunk reads: ChunkReadMethods) ---------------------------------------

    def read_summaries(self, run_id: str, names: Sequence[str] | None = None) -> dict[str, SeriesSummary]:
        found: dict[str, SeriesSummary] = self._run(reads.read_summaries, run_id, names)
        return found

    # -- what people say about runs ----------------------------------------------------------

    def runs_table_details(self, run_ids: Sequence[str], metric_names: Sequence[str] | None = None) -> dict[str, Any]:
        found: dict[str, Any] = self._run(compare.runs_table_details, list(run_ids), list(metric_names or []))
        return found

    def annotate_run(
        self, run_id: str, *, tags: Sequence[str] | None = None, note: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        check_run_id(run_id)
        found: dict[str, Any] = self._run(
            reads.annotate_run, run_id, now=time.time() if now is None else now, tags=tags, note=note
        )
        return found

    # -- images and histograms ---------------------------------------------------------------

    def image_names(self, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(media.image_names, run_id)
        return found

    def images(
        self,
        run_id: str,
        name: str | None = None,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(
            media.images_of_run, run_id, name, start_step=start_step, end_step=end_step, limit=limit
        )
        return found

    def image_at(
        self, run_id: str, name: str, step: int | None = None, *, with_data: bool = False
    ) -> dict[str, Any] | None:
        if not with_data:
            row: dict[str, Any] | None = self._run(media.image_at, run_id, name, step)
            return row
        found = self._run(media.image_with_content, run_id, name, step)  # the row and its content on one snapshot
        if found is None or found[1] is None:
            return None
        return {**found[0], "data": found[1][1]}

    def image_content(self, digest: str) -> tuple[str, bytes] | None:
        found: tuple[str, bytes] | None = self._run(media.image_blob, digest)
        return found

    def histogram_names(self, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(media.histogram_names, run_id)
        return found

    def histograms(
        self,
        run_id: str,
        name: str,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        max_count: int | None = None,
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(
            media.run_histograms, run_id, name, start_step=start_step, end_step=end_step, max_count=max_count
        )
        return found

    def media_usage(self, run_id: str) -> dict[str, int]:
        found: dict[str, int] = self._run(media.media_usage, run_id)
        return found

    # -- ingest, snapshots -------------------------------------------------------------------

    def stored_batch_digest(self, run_id: str, batch_id: str) -> str | None:
        found: str | None = self._run(reads.stored_batch_digest, run_id, batch_id)
        return found

    def stored_runs(self, run_ids: Sequence[str]) -> set[str]:
        found: set[str] = self._run(reads.stored_runs, list(run_ids))
        return found

    def save_snapshots(
        self,
        snapshots: Sequence[tuple[str, bytes]],
        taken_at: float,
        max_snapshots: int,
        *,
        busy_timeout_seconds: float = 5.0,
    ) -> tuple[list[str], int]:
        if not snapshots:
            return [], 0
        saved: tuple[list[str], int] = self._run(maintenance.save_snapshots, list(snapshots), taken_at, max_snapshots)
        return saved

    def latest_snapshots(self, run_ids: Sequence[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        found: dict[str, str] = self._run(reads.latest_snapshots, list(run_ids))
        return found

    # -- sessions ----------------------------------------------------------------------------

    def session_run_status(self, session_id: str) -> str:
        return str(self._run(sessions.session_run_status, session_id))

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
        found: dict[str, Any] = self._run(
            sessions.read_session,
            session_id,
            events_limit=events_limit,
            events_before=events_before,
            metrics_limit=metrics_limit,
            metrics_before=metrics_before,
            history_limit=history_limit,
            history_before=history_before,
        )
        return found

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
        found: list[dict[str, Any]] = self._run(
            sessions.list_sessions,
            active=active,
            status=status,
            product=product,
            limit=limit,
            before=before,
            now=now,
            timeout_seconds=timeout_seconds,
        )
        return found

    def session_statistics(self, since: float | None) -> dict[str, Any]:
        found: dict[str, Any] = self._run(sessions.session_statistics, since)
        return found

    def session_metrics(self, start: float | None, end: float | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(sessions.session_metrics, start, end)
        return found

    def remove_old_sessions(self, cutoff: float) -> dict[str, int]:
        found: dict[str, int] = self._run(maintenance.remove_old_sessions, cutoff)
        return found

    def whole_sessions(self, session_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(sessions.session_rows, session_ids)
        return found

    def suspended_sessions_of_machine(self, machine_id: str, now: float, timeout_seconds: float) -> list[str]:
        found: list[str] = self._run(sessions.suspended_sessions_of_machine, machine_id, now, timeout_seconds)
        return found

    # -- lifecycle ---------------------------------------------------------------------------

    def cleanup_pass(self, cutoff: float, *, batch_rows: int, lock_wait_seconds: float) -> MaintenancePass:
        return maintenance.CleanupPass(cutoff, batch_rows=batch_rows)

    def downsample_pass(
        self, cutoff: float, *, bucket_rows: int, batch_rows: int, lock_wait_seconds: float
    ) -> MaintenancePass:
        return maintenance.DownsamplePass(cutoff, bucket_rows=bucket_rows, batch_rows=batch_rows)

    def work(self, passes: list[MaintenancePass], *, work_seconds: float) -> tuple[list[MaintenancePass], bool]:
        """See :meth:`Store.work`. PostgreSQL locks rows, so a pass never waits for the write lock:
        the second value is always false. A store not created yet has nothing to remove."""
        if not self.exists():
            passes.clear()
            return [], False
        deadline = time.perf_counter() + work_seconds
        finished: list[MaintenancePass] = []
        while passes:
            job = passes[0]
            if not isinstance(job, (maintenance.CleanupPass, maintenance.DownsamplePass)):
                raise TypeError(f"{job!r} is not a pass of the PostgreSQL store")
            if not self._run(job.step):
                finished.append(passes.pop(0))
                continue
            if time.perf_counter() >= deadline:
                break
        return finished, False

    def cleanup_old_data(self, older_than: float, *, dry_run: bool = False) -> int:
        cutoff = check_cutoff(older_than)
        self._run(reads.check_created)
        if dry_run:
            return int(self._run(maintenance.count_old_data, cutoff))
        job = maintenance.CleanupPass(cutoff, batch_rows=DEFAULT_BATCH_ROWS)
        while self._run(job.step):
            pass
        self._run(maintenance.forget_ingested_batches, cutoff, batch_rows=DEFAULT_BATCH_ROWS)
        return job.removed_records

    def downsample_metrics(self, older_than: float, *, bucket_rows: int) -> dict[str, int]:
        job = maintenance.DownsamplePass(older_than, bucket_rows=bucket_rows, batch_rows=DEFAULT_BATCH_ROWS)
        self._run(reads.check_created)
        while self._run(job.step):
            pass
        return {"removed_rows": job.removed_rows, "written_rollups": job.written_rollups}

    def metric_rollups(self, run_id: str, metric_names: list[str] | None = None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(maintenance.metric_rollups, run_id, metric_names)
        return found

    def optimize(self) -> dict[str, Any]:
        found: dict[str, Any] = self._run(maintenance.optimize)
        return found

    def info(self) -> dict[str, Any]:
        found: dict[str, Any] = self._run(maintenance.store_info, self.location)
        return found

    def create_backup(self, backup_dir: Path, tag: str | None = None) -> Path:
        """A ``pg_dump --format=custom`` file in ``backup_dir`` (see :mod:`.transfer`)."""
        self._run(reads.check_created)
        return transfer.create_backup(self.dsn, backup_dir, tag)

    def restore_backup(self, backup_path: Path) -> Path | None:
        """Restore a ``pg_dump`` file, keeping a dump of the store as it was (see :mod:`.transfer`)."""
        return transfer.restore_backup(self.dsn, backup_path)

    def export_run(self, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
        return transfer.export_run(self.dsn, run_id, output_dir, include_snapshots=include_snapshots)


async def _database_identity(connection: Any) -> str | None:
    """The server's system identifier and the database's name (``None`` while runwatch has no schema there)."""
    if await current_version(connection) == 0:
        return None
    row = await connection.fetchrow("SELECT system_identifier FROM pg_control_system()")
    return f"{row[0]}:{await connection.fetchval('SELECT current_database()')}"
