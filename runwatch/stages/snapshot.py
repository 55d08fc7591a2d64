"""The snapshot stage: each run's current view in memory, saved now and then to files and the store.

Purpose: answer "where is this run now?" without replaying its history, and
bring that answer back after a restart. Status: beta. Delivery: passes every
batch through unchanged (at-least-once, like its inputs). Egress: stream.
State: stateful (one view per run, saved as snapshots).

Example::

    [stages.snapshots]
    type = "snapshot"
    inputs = ["app", "ingest"]
    snapshot_interval_seconds = 300
    max_snapshots = 100
    max_events = 1000

==========================  =======  ========  =============  ============================================
option                      type     required  default        meaning
==========================  =======  ========  =============  ============================================
snapshot_interval_seconds   number   no        300            seconds between saves of the changed views
max_snapshots               integer  no        100            snapshots kept per run (files and rows)
max_events                  integer  no        1000           event-log entries kept per view
directory                   string   no        the data dir   where the snapshot files go
path                        string   no        the store      the SQLite store the ``sqlite`` sink writes
==========================  =======  ========  =============  ============================================

A run's view (the pure :class:`RunView`) holds:

- ``metrics``: the latest value of every metric with its step and timestamp
  (latest in pipeline order, as the store's ``metric_stats.last``; NaN is
  ``null`` and ±Inf ``"Infinity"``/``"-Infinity"``, as on the wire);
- ``state``: every state patch merged with :func:`runwatch.events.merge_state`;
- ``counters``: events by kind, log events by type, and ``total_steps`` /
  ``total_episodes`` from the latest heartbeat that carried them;
- ``events``: the run's last ``max_events`` log, lifecycle, exception and
  alert events in wire form (the kinds the store's ``events`` table holds;
  metrics, state patches and heartbeats arrive at every step and are
  summarised above instead of crowding the log out);
- ``status`` (from lifecycle events and the liveness verdicts, as the store
  sets it), ``run_kind`` and ``updated_at`` (the newest event timestamp).

Every ``snapshot_interval_seconds``, and once more when the pipeline closes,
each view that changed since its last save is written as
``<directory>/snapshot_<run>_<YYYYmmddTHHMMSS.ffffffZ>.json`` (UTC; written
to a temporary file in the same directory, fsynced, then renamed, so a crash
leaves the old files or the new one, never half of one; ``<run>`` is the run
id with characters other than letters, digits, ``_.-`` replaced, plus a hash
of the id when anything was replaced) and as a row of the store's
``snapshots`` table. Only the newest ``max_snapshots`` of a run are kept.
A run the store does not hold yet (its first events are not committed) is
saved at the next interval instead. Views of completed and failed runs leave
memory once saved.

The first time the stage sees events of a run it holds no view of (after a
restart, or a run that ended and is resumed), it first adopts the run's
latest stored snapshot, so the view continues where it was saved; what
happened between that save and a crash is not in it.

The stage offers itself as the service :data:`SNAPSHOTS`: other
components call :meth:`SnapshotStage.current_view` and
:meth:`SnapshotStage.restore`.

Metrics (in ``statistics()``): ``views``, ``snapshots_written_total``,
``snapshots_deferred_total``, ``snapshots_rotated_total``,
``views_restored_total``, ``restore_errors_total``, ``unencodable_items_total``
(events of runs whose id the store cannot keep, and metric values, events or
state entries a snapshot cannot hold: each left out alone, never its batch or
view), ``unsavable_views_total``, ``last_snapshot_at``.

The views are :mod:`runwatch.stages.run_view` (pure); the files and rows
:mod:`runwatch.stages.snapshot_files`. This module re-exports both.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
from pydantic import Field

from ..events import copy_state
from ..pipeline.component import ComponentContext, ServiceKey, Stage
from ..pipeline.component import Options as BaseOptions
from .run_view import SNAPSHOT_FORMAT, RunView, SnapshotBook
from .snapshot_files import SavedSnapshots, save_snapshots, snapshot_file_name

__all__ = [
    "SNAPSHOTS",
    "SNAPSHOT_FORMAT",
    "RunView",
    "SavedSnapshots",
    "SnapshotBook",
    "SnapshotStage",
    "save_snapshots",
    "snapshot_file_name",
]

logger = logging.getLogger("runwatch.snapshots")

#: The stage, offered to the other components and the web app while it runs.
SNAPSHOTS: ServiceKey[SnapshotStage] = ServiceKey("snapshots")


class SnapshotStage(Stage):
    """Passes batches through, keeps each run's view and saves the changed ones (see the module docs).

    Options:
        snapshot_interval_seconds: seconds between saves.
        max_snapshots: snapshots kept per run, files and rows alike.
        max_events: event-log entries kept per view.
        directory: where snapshot files go (default: the pipeline's ``data_dir``).
        path: the store (default: the pipeline's ``db_path``).
    """

    takes_receipts = True  # internal ingest receipts: forwarded with their batch (no part of a view)

    class Options(BaseOptions):
        snapshot_interval_seconds: float = Field(300.0, gt=0, allow_inf_nan=False)
        max_snapshots: int = Field(100, ge=1)
        max_events: int = Field(1000, ge=1)
        directory: str | None = None
        path: str | None = None

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.store = context.store_at(self.path)
        self.directory = Path(options.directory) if options.directory else Path(context.data_dir)
        self.tick_interval_seconds = options.snapshot_interval_seconds
        self.book = SnapshotBook(options.max_events)
        self.snapshots_written = 0
        self.snapshots_deferred = 0
        self.snapshots_rotated = 0
        self.views_restored = 0
        self.restore_errors = 0
        self.unsavable_views = 0
        self.last_snapshot_at: float | None = None

    async def start(self) -> None:
        self.context.services.provide(SNAPSHOTS, self)

    async def aclose(self) -> None:
        try:
            # A restart then resumes from the views as they ended: within the pipeline's shutdown deadline
            # (the store's lock is waited for in a worker thread, which no cancellation reaches).
            remaining = anyio.current_effective_deadline() - anyio.current_time()
            if remaining > 0:
                await self.save_changed(time.time(), busy_timeout_seconds=min(5.0, remaining))
            elif self.book.changed():
                logger.warning("runwatch: %s: the shutdown deadline passed; the last views are not saved", self.id)
        finally:
            self.context.services.withdraw(SNAPSHOTS, self)

    async def write(self, batch: list[Any]) -> None:
        # Downstream first: a store that cannot be read for a restore must not hold events back.
        await self.output.send(batch)
        unknown = self.book.unknown_runs(batch)
        if unknown:
            # If this raises, no view changes; the runner counts and logs it, the next batch retries.
            stored = await anyio.to_thread.run_sync(self.store.latest_snapshots, unknown)
            for run_id in unknown:
                self._adopt(run_id, self._parse(run_id, stored.get(run_id)))
                self.book.adopt(run_id)  # none stored: the view starts empty
        self.book.observe(batch)

    async def tick(self, now: float) -> None:
        await self.save_changed(now)

    async def save_changed(self, now: float, busy_timeout_seconds: float = 5.0) -> int:
        """Save every view changed since its last save, stamped ``now`` (epoch seconds).

        Args:
            now: the snapshots' time.
            busy_timeout_seconds: the longest wait for another writer's lock.

        Returns:
            How many snapshots were written (runs the store does not hold yet
            stay changed and are tried again next time).

        Raises:
            StoreError, OSError: the store or the directory failed; the
                views stay changed.
        """
        self.book.drop_ended()
        due = self.book.changed()
        if not due:
            return 0
        versions = {view.run_id: view.version for view in due}
        payloads = []
        for view in due:
            try:
                payloads.append((view.run_id, view.to_json(taken_at=now)))
            except TypeError as exc:  # one view that cannot be saved never holds the others back
                self.unsavable_views += 1
                self.book.mark_saved(view.run_id, view.version)
                logger.error("runwatch: %s: the view of run %r cannot be saved: %s", self.id, view.run_id, exc)
        if not payloads:
            return 0
        saved = await anyio.to_thread.run_sync(
            save_snapshots, self.store, self.directory, payloads, now, self.options.max_snapshots, busy_timeout_seconds
        )
        for run_id in saved.written:
            self.book.mark_saved(run_id, versions[run_id])
        self.snapshots_written += len(saved.written)
        self.snapshots_deferred += len(saved.deferred)
        self.snapshots_rotated += saved.rotated
        if saved.written:
            self.last_snapshot_at = now
        if saved.deferred:
            logger.debug("runwatch: %s: %d run(s) not in the store yet; saved later", self.id, len(saved.deferred))
        return len(saved.written)

    # -- the service others use --------------------------------------------------------------------

    def current_view(self, run_id: str) -> dict[str, Any] | None:
        """The run's current view (see the module docs), or ``None`` when the stage holds none.

        Its ``state`` is a copy: later patches do not change it. Nested values
        are shared with the stage: treat them as read-only.
        """
        view = self.book.view(run_id)
        if view is None:
            return None
        data = view.to_dict()
        data["state"] = copy_state(view.state)
        return data

    async def restore(self, run_id: str) -> dict[str, Any] | None:
        """Load the run's latest stored snapshot; it becomes the run's view if the stage holds none.

        A resumed run's view continues from it. (The stage does this by itself
        for a run whose events arrive while it holds no view; an ended run's
        view leaves memory again at the next save.)

        Returns:
            The snapshot (the view's data plus ``taken_at``), or ``None`` when
            the store has none (an unusable one is logged and counted).

        Raises:
            StoreError: the store cannot be read.
        """
        stored = await anyio.to_thread.run_sync(self.store.latest_snapshots, [run_id])
        view = self._parse(run_id, stored.get(run_id))
        if view is None:
            return None
        self._adopt(run_id, view)
        snapshot: dict[str, Any] = orjson.loads(stored[run_id])
        return snapshot

    def _adopt(self, run_id: str, view: RunView | None) -> None:
        if view is not None and self.book.view(run_id) is None:
            self.book.adopt(run_id, view)
            self.views_restored += 1

    def _parse(self, run_id: str, text: str | None) -> RunView | None:
        """The view in a stored snapshot; ``None`` when there is none or it is unusable (logged, counted)."""
        if text is None:
            return None
        try:
            view = RunView.from_dict(orjson.loads(text), self.options.max_events)
            if view.run_id != run_id:
                raise ValueError(f"snapshot.run_id: {view.run_id!r} is not {run_id!r}")
        except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
            self.restore_errors += 1
            logger.error(
                "runwatch: %s: run %r has an unusable snapshot (%s); its view starts afresh", self.id, run_id, exc
            )
            return None
        return view

    def statistics(self) -> dict[str, Any]:
        return {
            "views": len(self.book),
            "snapshots_written_total": self.snapshots_written,
            "snapshots_deferred_total": self.snapshots_deferred,
            "snapshots_rotated_total": self.snapshots_rotated,
            "views_restored_total": self.views_restored,
            "restore_errors_total": self.restore_errors,
            "unencodable_items_total": self.book.refused_events + self.book.discarded(),
            "unsavable_views_total": self.unsavable_views,
            "last_snapshot_at": self.last_snapshot_at,
        }
