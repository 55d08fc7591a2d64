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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import anyio
import anyio.to_thread
import orjson
from pydantic import Field

from ..events import (
    Heartbeat,
    IngestReceipt,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    check_storable,
    copy_state,
    merge_state_into,
)
from ..pipeline.component import ComponentContext, ServiceKey, Stage
from ..pipeline.component import Options as BaseOptions
from ..store.base import Store
from ..store.encode import LIVENESS_STATUS
from ..wire import event_to_wire, json_number

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
#: The value of ``format`` in every snapshot.
SNAPSHOT_FORMAT: Final = "runwatch-snapshot/1"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# The run part is greedy: the fixed-width stamp anchors the end.
_FILE_NAME = re.compile(r"^snapshot_(.+)_(\d{8}T\d{6}\.\d{6}Z)\.json$")
_ENDED: Final = frozenset({"completed", "failed"})
_FROM_WIRE: Final = {"Infinity": math.inf, "-Infinity": -math.inf}


# -- the pure core -----------------------------------------------------------------------------


class RunView:
    """One run's current view, built from its events (pure: no I/O, no clock).

    Args:
        run_id: the run.
        max_events: the event-log entries kept (the oldest go first).
    """

    __slots__ = (
        "discarded",
        "events",
        "events_by_kind",
        "events_by_type",
        "metrics",
        "run_id",
        "run_kind",
        "saved_version",
        "state",
        "status",
        "total_episodes",
        "total_steps",
        "updated_at",
        "version",
    )

    def __init__(self, run_id: str, max_events: int) -> None:
        self.run_id = run_id
        self.status: str | None = None
        self.run_kind: str | None = None
        self.updated_at: float | None = None
        # name → (value, step, timestamp)
        self.metrics: dict[str, tuple[float, int | None, float]] = {}
        self.state: dict[str, Any] = {}
        self.events_by_kind: dict[str, int] = {}
        self.events_by_type: dict[str, int] = {}
        self.total_steps: int | None = None
        self.total_episodes: int | None = None
        # Events as they came, or wire dicts restored from a snapshot.
        self.events: deque[Any] = deque(maxlen=max_events)
        #: Bumped by every applied event; a view changed since its save when it differs from ``saved_version``.
        self.version = 0
        self.saved_version = 0
        #: Values and events left out because a snapshot could not hold them (see :meth:`discard_unencodable`).
        self.discarded = 0

    @property
    def changed(self) -> bool:
        """Whether events arrived since the last save (or restore)."""
        return self.version != self.saved_version

    @property
    def ended(self) -> bool:
        """Whether the run completed or failed."""
        return self.status in _ENDED

    def apply(self, event: Any) -> None:
        """Take one event of this run into the view."""
        kind = type(event)
        self.events_by_kind[event.kind] = self.events_by_kind.get(event.kind, 0) + 1
        if self.updated_at is None or event.timestamp > self.updated_at:
            self.updated_at = event.timestamp
        if kind is Metric:
            metrics, step, timestamp = self.metrics, event.step, event.timestamp
            for name, value in event.values.items():
                if name not in metrics and not _storable(name):
                    self.discarded += 1  # metric names are not checked at the call (their hot path)
                    continue
                metrics[name] = (value, step, timestamp)
        elif kind is StatePatch:
            merge_state_into(self.state, event.patch)  # the view's own state: linear in the patch
        elif kind is Heartbeat:
            counters = event.counters or {}
            self.total_steps = counters.get("total_steps", self.total_steps)
            self.total_episodes = counters.get("total_episodes", self.total_episodes)
        else:
            self.events.append(event)
            if kind is LogEvent:
                self.events_by_type[event.type] = self.events_by_type.get(event.type, 0) + 1
                self.status = LIVENESS_STATUS.get(event.type, self.status)
            elif kind is RunLifecycle:
                self.status = event.status
                if event.transition is RunTransition.STARTED:
                    self.run_kind = event.run_kind
        self.version += 1

    def to_dict(self) -> dict[str, Any]:
        """The view as JSON-safe data (new containers; ``state`` is shared and changes as patches
        arrive: serialise it at once, or copy it)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "run_id": self.run_id,
            "status": self.status,
            "run_kind": self.run_kind,
            "updated_at": self.updated_at,
            "metrics": {
                name: {"value": json_number(value), "step": step, "timestamp": timestamp}
                for name, (value, step, timestamp) in self.metrics.items()
            },
            "state": self.state,
            "counters": {
                "events_total": sum(self.events_by_kind.values()),
                "events_by_kind": dict(self.events_by_kind),
                "events_by_type": dict(self.events_by_type),
                "total_steps": self.total_steps,
                "total_episodes": self.total_episodes,
            },
            "events": [event if type(event) is dict else event_to_wire(event) for event in self.events],
        }

    def to_json(self, **extra: Any) -> bytes:
        """The snapshot as JSON (the view plus ``extra``); what cannot be serialised is left out.

        Only events built around their constructors' checks (an alert's labels
        hold metric names, which are unchecked) can hold such text; each one is
        dropped alone (counted in ``discarded``), never the view.

        Raises:
            TypeError: the view still cannot be serialised.
        """
        try:
            return orjson.dumps({**self.to_dict(), **extra})
        except TypeError:  # orjson.JSONEncodeError
            self.discard_unencodable()
            return orjson.dumps({**self.to_dict(), **extra})

    def discard_unencodable(self) -> None:
        """Leave out the metrics, events and state entries a snapshot cannot hold."""
        for name in [name for name in self.metrics if not _storable(name)]:
            del self.metrics[name]
            self.discarded += 1
        kept = [event for event in self.events if _serialisable(event if type(event) is dict else event_to_wire(event))]
        self.discarded += len(self.events) - len(kept)
        self.events.clear()
        self.events.extend(kept)
        if not _serialisable(self.state):
            self.state = _without_unencodable(self.state)
            self.discarded += 1
        for name in [name for name in self.events_by_type if not _serialisable(name)]:
            del self.events_by_type[name]

    @classmethod
    def from_dict(cls, data: Any, max_events: int) -> RunView:
        """Rebuild a view from :meth:`to_dict` data (a snapshot); it counts as saved.

        Raises:
            ValueError: ``data`` is not such a snapshot (the message names the key).
        """
        if not isinstance(data, dict):
            raise ValueError(f"snapshot: must be an object, got {type(data).__name__}")
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot.format: expected {SNAPSHOT_FORMAT!r}, got {data.get('format')!r}")
        view = cls(_typed(data, "run_id", str), max_events)
        view.status = _typed(data, "status", str, optional=True)
        view.run_kind = _typed(data, "run_kind", str, optional=True)
        view.updated_at = _number(data.get("updated_at"), "snapshot.updated_at", optional=True)
        for name, entry in _typed(data, "metrics", dict).items():
            where = f"snapshot.metrics[{name!r}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be an object")
            step = entry.get("step")
            if step is not None and type(step) is not int:
                raise ValueError(f"{where}.step: must be an integer or null, got {step!r}")
            raw = entry.get("value")
            if raw is None:
                value = math.nan
            elif type(raw) is str and raw in _FROM_WIRE:
                value = _FROM_WIRE[raw]
            else:
                value = _number(raw, f"{where}.value")
            view.metrics[name] = (value, step, _number(entry.get("timestamp"), f"{where}.timestamp"))
        view.state = copy_state(_typed(data, "state", dict))  # the view merges into it
        counters = _typed(data, "counters", dict)
        for key in ("events_by_kind", "events_by_type"):
            table = counters.get(key)
            if not isinstance(table, dict) or not all(type(n) is int for n in table.values()):
                raise ValueError(f"snapshot.counters.{key}: must map names to integers")
        view.events_by_kind = counters["events_by_kind"]
        view.events_by_type = counters["events_by_type"]
        for key in ("total_steps", "total_episodes"):
            if counters.get(key) is not None and type(counters[key]) is not int:
                raise ValueError(f"snapshot.counters.{key}: must be an integer or null")
        view.total_steps = counters.get("total_steps")
        view.total_episodes = counters.get("total_episodes")
        events = _typed(data, "events", list)
        if not all(isinstance(event, dict) for event in events):
            raise ValueError("snapshot.events: must be a list of objects")
        view.events.extend(events)
        return view


def _storable(text: str) -> bool:
    try:
        check_storable("name", text)
    except ValueError:
        return False
    return True


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _without_unencodable(value: Any) -> Any:
    """A copy of a JSON value without the keys, items and strings JSON cannot hold."""
    if isinstance(value, dict):
        return {
            key: _without_unencodable(item)
            for key, item in value.items()
            if _serialisable(key) and (isinstance(item, (dict, list)) or _serialisable(item))
        }
    if isinstance(value, list):
        return [_without_unencodable(item) for item in value if isinstance(item, (dict, list)) or _serialisable(item)]
    return value


def _typed(data: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise ValueError(f"snapshot.{key}: must be {'null or ' if optional else ''}{kind.__name__}, got {value!r}")


def _number(value: Any, where: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if type(value) not in (int, float):
        raise ValueError(f"{where}: must be a number, got {value!r}")
    return float(value)


class SnapshotBook:
    """The views of every run the stage has seen (pure: no I/O, no clock).

    Args:
        max_events: the event-log entries each view keeps.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._views: dict[str, RunView] = {}
        #: Events of runs whose id the store cannot keep (a lone surrogate, NUL): never held.
        self.refused_events = 0
        self._discarded_by_dropped_views = 0

    def __len__(self) -> int:
        return len(self._views)

    def view(self, run_id: str) -> RunView | None:
        """The run's view (``None``: none held)."""
        return self._views.get(run_id)

    def unknown_runs(self, events: Iterable[Any]) -> list[str]:
        """The runs of ``events`` the book holds no view of, in order of first appearance."""
        views = self._views
        unknown: dict[str, None] = {}
        for event in events:
            run_id = event.run_id
            if run_id not in views and run_id not in unknown and type(event) is not IngestReceipt:
                unknown[run_id] = None
        return [run_id for run_id in unknown if _storable(run_id)]

    def adopt(self, run_id: str, view: RunView | None = None) -> RunView:
        """Hold ``view`` (``None``: an empty one) as the run's view, unless one is held already.

        Returns:
            The run's view now held.
        """
        held = self._views.get(run_id)
        if held is None:
            held = self._views[run_id] = view if view is not None else RunView(run_id, self.max_events)
        return held

    def observe(self, events: Iterable[Any]) -> None:
        """Apply the events of a batch, in order (receipts are bookkeeping and skipped)."""
        views = self._views
        for event in events:
            if type(event) is IngestReceipt:
                continue
            view = views.get(event.run_id)
            if view is None:
                if not _storable(event.run_id):  # metrics leave their run id to the store: refused alone
                    self.refused_events += 1
                    continue
                view = self.adopt(event.run_id)
            view.apply(event)

    def discarded(self) -> int:
        """Metric values, events and state entries the held views left out (see :meth:`RunView.to_json`)."""
        return self._discarded_by_dropped_views + sum(view.discarded for view in self._views.values())

    def changed(self) -> list[RunView]:
        """The views changed since their last save."""
        return [view for view in self._views.values() if view.changed]

    def mark_saved(self, run_id: str, version: int) -> None:
        """Record that the run's view as of ``version`` is saved."""
        view = self._views.get(run_id)
        if view is not None:
            view.saved_version = max(view.saved_version, version)

    def drop_ended(self) -> list[str]:
        """Forget the views of completed and failed runs that hold nothing unsaved.

        Returns:
            Their run ids (a later event of one restores it from its snapshot).
        """
        dropped = [run_id for run_id, view in self._views.items() if view.ended and not view.changed]
        for run_id in dropped:
            self._discarded_by_dropped_views += self._views.pop(run_id).discarded
        return dropped


def snapshot_file_name(run_id: str, taken_at: float) -> str:
    """``snapshot_<run>_<UTC time>.json``: safe on every file system, sortable by time.

    ``<run>`` is the run id with characters other than letters, digits and
    ``_.-`` replaced by ``_`` (cut to 100), plus ``-`` and 8 hex digits of its
    hash when anything was changed, so two ids never share a name.
    """
    stamp = datetime.fromtimestamp(taken_at, UTC).strftime(_STAMP_FORMAT)
    return f"snapshot_{_file_run_part(run_id)}_{stamp}.json"


def _file_run_part(run_id: str) -> str:
    safe = _UNSAFE.sub("_", run_id)[:100]
    if safe != run_id:
        safe = f"{safe[:91]}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return safe


# -- file and store I/O (blocking: run on a worker thread) --------------------------------------------


class SavedSnapshots(NamedTuple):
    """What :func:`save_snapshots` did.

    Attributes:
        written: runs whose snapshot is now a file and a row.
        deferred: runs the store does not hold yet (nothing written for them).
        rotated: older snapshots removed (rows; their files go with them).
    """

    written: list[str]
    deferred: list[str]
    rotated: int


def save_snapshots(
    store: Store,
    directory: Path,
    snapshots: Sequence[tuple[str, bytes]],
    taken_at: float,
    max_snapshots: int,
    busy_timeout_seconds: float = 5.0,
) -> SavedSnapshots:
    """Write snapshots as files and store rows, then keep only the newest ``max_snapshots`` of each run.

    Args:
        store: the store; runs it does not hold (or a store not created yet) are deferred.
        directory: where the files go (created when missing).
        snapshots: (run id, JSON bytes) pairs.
        taken_at: epoch seconds; the rows' time and the files'.
        max_snapshots: snapshots kept per run.
        busy_timeout_seconds: the longest wait for another writer's lock.

    Raises:
        StoreError, OSError: the store or the directory failed; files
            already renamed into place stay and are rotated out later.
    """
    run_ids = [run_id for run_id, _ in snapshots]
    held = store.stored_runs(run_ids)
    found = [(run_id, data) for run_id, data in snapshots if run_id in held]
    deferred = [run_id for run_id in run_ids if run_id not in held]
    if not found:
        return SavedSnapshots([], deferred, 0)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # snapshots hold run state: private
    for run_id, data in found:
        _write_atomically(directory, snapshot_file_name(run_id, taken_at), data)
    _sync_directory(directory)
    written, rotated = store.save_snapshots(found, taken_at, max_snapshots, busy_timeout_seconds=busy_timeout_seconds)
    deferred += [run_id for run_id, _ in found if run_id not in written]
    _rotate_files(directory, written, max_snapshots)
    return SavedSnapshots(written, deferred, rotated)


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` so that a crash leaves the old state or the new file, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".snapshot-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _sync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX; elsewhere a rename is as durable as it gets)."""
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _rotate_files(directory: Path, run_ids: list[str], max_snapshots: int) -> None:
    """Remove all but the newest ``max_snapshots`` files of each run.

    Goes by the files present (not the rows removed), so files whose row never
    committed are cleaned up too.
    """
    wanted = {_file_run_part(run_id) for run_id in run_ids}
    by_run: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _FILE_NAME.match(entry.name)
            if match is not None and match[1] in wanted:
                by_run.setdefault(match[1], []).append(entry.name)
    for names in by_run.values():
        names.sort()  # the fixed-width UTC stamp sorts by time
        for name in names[:-max_snapshots]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)


# -- the stage ----------------------------------------------------------------------------------


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
