"""The liveness stage: marks runs and sessions ``hung``, ``crashed`` or back to ``running``.

Purpose: notice producers that stopped talking. Status: beta. Delivery: passes
every batch through unchanged (at-least-once, like its inputs); adds its own
events. Egress: stream. State: stateful (per run: last signal, status).

Example::

    [stages.liveness]
    type = "liveness"
    inputs = ["app", "ingest"]
    heartbeat_timeout_seconds = 60
    crash_timeout_seconds = 300
    signal = "heartbeat"

    [sinks.store]
    type = "sqlite"
    inputs = ["liveness"]

==========================  =======  ========  ===========  ==========================================
option                      type     required  default      meaning
==========================  =======  ========  ===========  ==========================================
heartbeat_timeout_seconds   number   no        60           silence after which a run is ``hung``
                                                            (a run may set its own, see below)
crash_timeout_seconds       number   no        300          silence after which it is ``crashed``
signal                      string   no        heartbeat    ``heartbeat``: only heartbeats count as
                                                            signs of life; ``any_event``: any event
check_interval_seconds      number   no        5            seconds between checks
path                        string   no        the store    the SQLite store the sink writes
watch_store_runs            boolean  no        false        at every check, also watch the live runs
                                                            the store holds that no event brought
                                                            (other processes write them)
==========================  =======  ========  ===========  ==========================================

Rules (the pure :class:`LivenessTracker`):

- A run is watched from its first sign of life: in ``heartbeat`` mode a run
  that never sent a heartbeat is never called hung (clients without a
  heartbeat loop are not flagged); in ``any_event`` mode every event counts.
- Silent longer than its timeout → ``hung`` and a log event
  ``application_appears_hung`` (level warning); silent longer than
  ``max(crash_timeout_seconds, its timeout)`` → ``crashed`` and
  ``application_crashed`` (level error); a hung or crashed run with a fresh
  sign of life → ``running`` and ``application_recovered`` (level info).
  The store sets ``runs.status`` from these three events (see
  :data:`runwatch.store.encode.LIVENESS_STATUS`).
- A run's own timeout is ``heartbeat_timeout_seconds`` in its ``started``
  metadata (sessions set it at creation), and its own signal is
  ``liveness_signal`` there: ``any_event`` makes every event of that run a
  sign of life, its start included (runs that ingest creates for producers
  that sent events without starting a run do this; see docs/protocol.md);
  ``none`` leaves the run unwatched: its protocol judges its liveness itself
  (datacat's sessions are suspended, never hung or crashed, by silence).
- Paused, completed and failed runs are not watched.
- Times are the producers' timestamps (capped at the server's clock), the
  same ones the store keeps, so clocks must agree to well within the timeout.

The I/O shell (:class:`LivenessStage`) also reconciles with the store on
every check, because other processes may write the same store (``runwatch
serve`` beside training scripts): before deciding, it reads the status and
last signs of life the store holds for the watched runs, so a run that is
alive in another process is never flagged, a verdict another process already
wrote is not repeated, and a run that comes back through another process is
seen recovering. On start it watches the runs the store holds as running or
hung, so a run silent past the crash limit (its producer died while no server
watched) is marked crashed at the first check. With ``watch_store_runs``
(``runwatch serve``) it does so at every check, so a run that another process
starts in the store while the server runs is judged like one of its own.

Metrics (in ``statistics()``): ``watched_runs``, ``hung_total``,
``crashed_total``, ``recovered_total``.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, Protocol

import anyio
from pydantic import Field, ValidationInfo, field_validator

from ..events import AlertEvent, Heartbeat, IngestReceipt, LogEvent, RunLifecycle, RunTransition
from ..pipeline.component import ComponentContext, ServiceKey, Stage
from ..pipeline.component import Options as BaseOptions
from ..store.base import Store
from ..store.encode import LIVENESS_STATUS

__all__ = [
    "EVENT_OF_STATUS",
    "RUN_OWNERSHIP",
    "LivenessStage",
    "RunOwnership",
    "LivenessTracker",
    "StoredRun",
    "Transition",
    "read_runs",
    "transition_event",
]

#: The log event written for each status a run is moved to.
EVENT_OF_STATUS: Final = {status: event_type for event_type, status in LIVENESS_STATUS.items()}
_LEVEL_OF_STATUS: Final = {"hung": "warning", "crashed": "error", "running": "info"}
#: Statuses of runs the tracker watches (paused runs are expected to be quiet).
_WATCHED: Final = frozenset({"running", "hung", "crashed"})
#: The most runs remembered as judged by their own protocol.
_MAX_UNWATCHED: Final = 100_000
Signal = Literal["heartbeat", "any_event"]


class RunOwnership(Protocol):
    """Which runs this process judges (a scale-out worker: the runs of the partitions it owns)."""

    @property
    def generation(self) -> int:
        """Changes whenever the owned runs change (partitions taken or given up)."""

    def owns(self, run_id: str) -> bool:
        """Whether this process judges ``run_id`` now."""

    def caught_up(self) -> bool:
        """Whether every owned run's events so far have been seen: silence means something only then."""


#: Offered by a worker's bus source: the stage then judges only the runs it owns, and only when caught up.
RUN_OWNERSHIP: ServiceKey[RunOwnership] = ServiceKey("run_ownership")


class StoredRun(NamedTuple):
    """What the store says about one run (epoch seconds)."""

    run_id: str
    status: str
    last_heartbeat: float | None
    updated_at: float
    heartbeat_timeout_seconds: float | None = None
    #: False for a run whose protocol judges its liveness itself (``liveness_signal: none``).
    watched: bool = True


class Transition(NamedTuple):
    """A run's status changed; the stage writes it as a log event.

    Attributes:
        event_type: ``application_appears_hung``, ``application_crashed`` or
            ``application_recovered``.
        status: the new status (``hung``, ``crashed`` or ``running``).
        previous_status: the status before.
        last_signal: the last sign of life (epoch seconds).
        silent_seconds: how long the run had been silent when this was decided.
        limit_seconds: the limit that was passed (or, on recovery, the
            timeout the signal arrived within).
    """

    run_id: str
    event_type: str
    status: str
    previous_status: str
    last_signal: float
    silent_seconds: float
    limit_seconds: float


@dataclass
class _Watch:
    status: str = "running"
    last_signal: float | None = None  # None: not armed yet
    timeout: float | None = None  # None: the tracker's default
    learned_at: float | None = None  # when this pipeline last learned the status itself
    any_event: bool = False  # its own signal: every event is a sign of life
    judged_at: float | None = None  # another watcher's verdict weighed the signs of life up to here


def _timeout_of(value: Any) -> float | None:
    """A run's own timeout from its metadata, if it is a usable number."""
    if type(value) in (int, float) and math.isfinite(value) and value > 0:
        return float(value)
    return None


class LivenessTracker:
    """The pure liveness logic: feed it events and store rows, ask it what changed.

    No I/O and no clock: every method takes ``now`` (epoch seconds).

    Args:
        heartbeat_timeout_seconds: the default silence before ``hung``.
        crash_timeout_seconds: the silence before ``crashed`` (at least a run's
            own hung timeout is used).
        signal: ``heartbeat`` or ``any_event`` (what counts as a sign of life).
        settle_seconds: for this long after the tracker learned a run's status
            itself (from the pipeline or its own verdict), the store's status is
            not taken over: the store may not have committed it yet.

    Raises:
        ValueError: a non-positive time, or an unknown signal.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout_seconds: float = 60.0,
        crash_timeout_seconds: float = 300.0,
        signal: Signal = "heartbeat",
        settle_seconds: float = 30.0,
    ) -> None:
        for name, value in (
            ("heartbeat_timeout_seconds", heartbeat_timeout_seconds),
            ("crash_timeout_seconds", crash_timeout_seconds),
            ("settle_seconds", settle_seconds),
        ):
            if not (type(value) in (int, float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if signal not in ("heartbeat", "any_event"):
            raise ValueError(f"signal must be 'heartbeat' or 'any_event', got {signal!r}")
        self.heartbeat_timeout_seconds = float(heartbeat_timeout_seconds)
        self.crash_timeout_seconds = float(crash_timeout_seconds)
        self.signal = signal
        self.settle_seconds = float(settle_seconds)
        self._runs: dict[str, _Watch] = {}
        #: Runs whose liveness is their protocol's (``liveness_signal: none``): never watched.
        #: Bounded (oldest out): a run forgotten here is learned again from the store.
        self._unwatched: OrderedDict[str, None] = OrderedDict()
        self.transitions_total = {"hung": 0, "crashed": 0, "running": 0}

    # -- reading the tracker -----------------------------------------------------------

    @property
    def run_ids(self) -> list[str]:
        """The ids of the watched runs."""
        return list(self._runs)

    def status(self, run_id: str) -> str | None:
        """The status the tracker holds for a run (``None``: not watched)."""
        watch = self._runs.get(run_id)
        return None if watch is None else watch.status

    def last_signal(self, run_id: str) -> float | None:
        """A watched run's last sign of life (``None``: unknown, or never signalled)."""
        watch = self._runs.get(run_id)
        return None if watch is None else watch.last_signal

    # -- input ------------------------------------------------------------------------

    def observe(self, events: Iterable[Any], now: float) -> list[Transition]:
        """Take the events of a batch; return the recoveries they prove.

        Args:
            events: events in pipeline order.
            now: the current time (signs of life later than it are capped at it).

        Returns:
            ``application_recovered`` transitions of hung or crashed runs that
            sent a fresh sign of life.
        """
        out: list[Transition] = []
        any_event = self.signal == "any_event"
        runs = self._runs
        unwatched = self._unwatched
        for event in events:
            kind = type(event)
            if unwatched and event.run_id in unwatched:
                continue
            if kind is Heartbeat:
                self._signal(event.run_id, event.timestamp, now, out)
            elif kind is RunLifecycle:
                self._lifecycle(event, now)
            elif kind is LogEvent and event.type in LIVENESS_STATUS:
                # A verdict from another watcher (or a client's own heartbeat monitor).
                watch = runs.get(event.run_id)
                if watch is None:
                    watch = runs[event.run_id] = _Watch()
                watch.status = LIVENESS_STATUS[event.type]
                watch.learned_at = now
                # It weighed the signs of life up to its last_signal (crash detection's verdict: up to its
                # own time): one of those arriving later (an upload, a slow path) proves nothing new.
                evidence = event.data.get("last_signal", event.timestamp)
                if type(evidence) in (int, float) and math.isfinite(evidence):
                    watch.judged_at = max(watch.judged_at or evidence, evidence)
            elif kind is IngestReceipt or kind is AlertEvent:
                continue  # bookkeeping and server-side verdicts are no sign of the producer's life
            elif any_event or (event.run_id in runs and runs[event.run_id].any_event):
                self._signal(event.run_id, event.timestamp, now, out)
            elif event.run_id not in runs:
                runs[event.run_id] = _Watch()  # watched (unarmed) so the store's status is learned
        return out

    def _lifecycle(self, event: RunLifecycle, now: float) -> None:
        transition = event.transition
        if transition is RunTransition.STARTED and event.metadata is not None:
            if event.metadata.get("liveness_signal") == "none":
                self._leave_unwatched(event.run_id)
                return
            self._unwatched.pop(event.run_id, None)
        if event.run_id in self._unwatched:
            return
        if transition in (RunTransition.STARTED, RunTransition.RESUMED):
            watch = self._runs.get(event.run_id)
            if watch is None or transition is RunTransition.STARTED:
                watch = self._runs[event.run_id] = _Watch()
            watch.status = "running"
            watch.learned_at = now
            if event.metadata is not None:
                own = _timeout_of(event.metadata.get("heartbeat_timeout_seconds"))
                if own is not None:
                    watch.timeout = own
                if event.metadata.get("liveness_signal") == "any_event":
                    watch.any_event = True
            # A resumed run's old signals say nothing about now: wait for a fresh one.
            armed = self.signal == "any_event" or watch.any_event
            watch.last_signal = min(event.timestamp, now) if armed else None
        else:  # paused, completed, failed: quiet on purpose
            self._runs.pop(event.run_id, None)

    def _leave_unwatched(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
        self._unwatched[run_id] = None
        self._unwatched.move_to_end(run_id)
        if len(self._unwatched) > _MAX_UNWATCHED:
            self._unwatched.popitem(last=False)

    def _signal(self, run_id: str, timestamp: float, now: float, out: list[Transition]) -> None:
        watch = self._runs.get(run_id)
        if watch is None:
            watch = self._runs[run_id] = _Watch()
        at = min(timestamp, now)
        if watch.last_signal is None or at > watch.last_signal:
            watch.last_signal = at
        if watch.status != "running":
            self._maybe_recover(run_id, watch, now, out)

    def forget(self, run_ids: Iterable[str]) -> None:
        """Stop watching ``run_ids`` (another process judges them now)."""
        for run_id in run_ids:
            self._runs.pop(run_id, None)

    def refresh(self, rows: Iterable[StoredRun], now: float, *, watch_new: bool = False) -> None:
        """Take what the store says about runs (possibly written by other processes).

        Signs of life merge (the latest wins). The store's status is taken
        over unless the tracker learned the run's status itself within
        ``settle_seconds``; a run the store holds as paused, completed or
        failed is no longer watched.

        Args:
            rows: store rows of watched runs (rows of other runs are ignored
                unless ``watch_new``).
            now: the current time.
            watch_new: also start watching the rows' runs that are running or
                hung (used once, when the stage starts).
        """
        runs = self._runs
        for row in rows:
            if not row.watched:
                self._leave_unwatched(row.run_id)
                continue
            watch = runs.get(row.run_id)
            if watch is None:
                if not watch_new or row.status not in ("running", "hung"):
                    continue
                watch = runs[row.run_id] = _Watch()
            if watch.learned_at is None or now - watch.learned_at >= self.settle_seconds:
                if row.status not in _WATCHED:
                    del runs[row.run_id]
                    continue
                watch.status = row.status
            seen = row.last_heartbeat
            if self.signal == "any_event":
                seen = row.updated_at if seen is None else max(seen, row.updated_at)
            if seen is not None:
                seen = min(seen, now)
                if watch.last_signal is None or seen > watch.last_signal:
                    watch.last_signal = seen
            own = _timeout_of(row.heartbeat_timeout_seconds)
            if own is not None:
                watch.timeout = own

    # -- deciding ------------------------------------------------------------------------

    def check(self, now: float) -> list[Transition]:
        """Decide every watched run's status at ``now``; return the changes.

        Returns:
            ``hung``/``crashed`` transitions of silent runs and ``running``
            transitions of hung or crashed runs whose last sign of life is
            within their timeout (learned from the store).
        """
        out: list[Transition] = []
        for run_id, watch in self._runs.items():
            if watch.last_signal is None:
                continue
            timeout = watch.timeout or self.heartbeat_timeout_seconds
            crash = max(self.crash_timeout_seconds, timeout)
            silent = now - watch.last_signal
            if watch.status in ("running", "hung") and silent > crash:
                out.append(self._move(run_id, watch, "crashed", silent, crash, now))
            elif watch.status == "running" and silent > timeout:
                out.append(self._move(run_id, watch, "hung", silent, timeout, now))
            elif watch.status != "running":
                self._maybe_recover(run_id, watch, now, out)
        return out

    def _maybe_recover(self, run_id: str, watch: _Watch, now: float, out: list[Transition]) -> None:
        assert watch.last_signal is not None
        if watch.judged_at is not None and watch.last_signal <= watch.judged_at:
            return  # no sign of life after the one a verdict already weighed
        timeout = watch.timeout or self.heartbeat_timeout_seconds
        silent = now - watch.last_signal
        if silent <= timeout:
            out.append(self._move(run_id, watch, "running", silent, timeout, now))

    def _move(self, run_id: str, watch: _Watch, status: str, silent: float, limit: float, now: float) -> Transition:
        assert watch.last_signal is not None
        previous = watch.status
        watch.status = status
        watch.learned_at = now
        self.transitions_total[status] += 1
        return Transition(run_id, EVENT_OF_STATUS[status], status, previous, watch.last_signal, silent, limit)

    def statistics(self) -> dict[str, int]:
        """Watched runs and transitions so far."""
        return {
            "watched_runs": len(self._runs),
            "hung_total": self.transitions_total["hung"],
            "crashed_total": self.transitions_total["crashed"],
            "recovered_total": self.transitions_total["running"],
        }


def transition_event(transition: Transition, now: float, signal: str) -> LogEvent:
    """The log event recording ``transition`` at ``now``.

    Its data holds ``status``, ``previous_status``, ``last_signal`` (epoch
    seconds), ``silent_seconds``, ``limit_seconds`` and ``signal``.
    """
    data = {
        "status": transition.status,
        "previous_status": transition.previous_status,
        "last_signal": transition.last_signal,
        "silent_seconds": round(transition.silent_seconds, 3),
        "limit_seconds": transition.limit_seconds,
        "signal": signal,
    }
    level = _LEVEL_OF_STATUS[transition.status]
    return LogEvent(transition.run_id, now, transition.event_type, level, data)


# -- the I/O shell -------------------------------------------------------------------------


def read_runs(store: Store, run_ids: list[str] | None) -> list[StoredRun]:
    """Read runs from the store (blocking; run it on a worker thread).

    Args:
        store: the store.
        run_ids: these runs; ``None`` for every run that is running or hung.

    Returns:
        One :class:`StoredRun` per run found (none when the store does not exist yet).
    """
    out = []
    for run in store.run_activity(run_ids):
        own = _timeout_of(run.metadata.get("heartbeat_timeout_seconds")) if run.metadata else None
        watched = not (run.metadata and run.metadata.get("liveness_signal") == "none")
        out.append(StoredRun(run.run_id, run.status, run.last_heartbeat, run.updated_at, own, watched))
    return out


class LivenessStage(Stage):
    """Passes batches through and writes hung / crashed / recovered verdicts (see the module docs).

    Options:
        heartbeat_timeout_seconds: silence before ``hung`` (a run's own
            ``heartbeat_timeout_seconds`` metadata wins).
        crash_timeout_seconds: silence before ``crashed``; at least
            ``heartbeat_timeout_seconds``.
        signal: ``heartbeat`` or ``any_event``.
        check_interval_seconds: seconds between checks.
        path: the store to reconcile with (default: the pipeline's ``db_path``).
        watch_store_runs: at every check, also start watching the running and
            hung runs of the store (written by other processes).
    """

    takes_receipts = True  # internal ingest receipts: forwarded with their batch (no sign of life)

    class Options(BaseOptions):
        heartbeat_timeout_seconds: float = Field(60.0, gt=0, allow_inf_nan=False)
        crash_timeout_seconds: float = Field(300.0, gt=0, allow_inf_nan=False)
        signal: Literal["heartbeat", "any_event"] = "heartbeat"
        check_interval_seconds: float = Field(5.0, gt=0, allow_inf_nan=False)
        path: str | None = None
        watch_store_runs: bool = False

        @field_validator("crash_timeout_seconds")
        @classmethod
        def _crash_after_hung(cls, value: float, info: ValidationInfo) -> float:
            hung = info.data.get("heartbeat_timeout_seconds")
            if hung is not None and value < hung:
                raise ValueError(f"must be at least heartbeat_timeout_seconds ({hung})")
            return value

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.store = context.store_at(self.path)
        self.tick_interval_seconds = options.check_interval_seconds
        # Our own verdicts reach the store within a commit or two; until then its status is stale.
        settle = max(30.0, 3 * options.check_interval_seconds)
        self.tracker = LivenessTracker(
            heartbeat_timeout_seconds=options.heartbeat_timeout_seconds,
            crash_timeout_seconds=options.crash_timeout_seconds,
            signal=options.signal,
            settle_seconds=settle,
        )
        self._generation = -1  # of the run ownership last followed (a scale-out worker's)

    async def start(self) -> None:
        if self.context.services.get(RUN_OWNERSHIP) is not None:
            return  # nothing is owned yet: the runs are picked up as partitions are (see tick)
        rows = await anyio.to_thread.run_sync(read_runs, self.store, None)
        self.tracker.refresh(rows, time.time(), watch_new=True)

    async def write(self, batch: list[Any]) -> None:
        now = time.time()
        recovered = self.tracker.observe(batch, now)
        await self.output.send(batch)
        if recovered:
            await self.output.send([transition_event(t, now, self.options.signal) for t in recovered])

    async def tick(self, now: float) -> None:
        ownership = self.context.services.get(RUN_OWNERSHIP)
        if ownership is not None:
            if not ownership.caught_up():
                return  # events are still on their way: a run's silence is not known yet
            if ownership.generation != self._generation:
                await self._follow_ownership(ownership, now)
        watch_new = self.options.watch_store_runs and ownership is None  # a worker watches what it owns
        run_ids = self.tracker.run_ids
        if watch_new:  # the watched runs and every live run of the store
            rows = await anyio.to_thread.run_sync(read_runs, self.store, run_ids or None)
            if run_ids:
                rows += await anyio.to_thread.run_sync(read_runs, self.store, None)
        elif run_ids:
            rows = await anyio.to_thread.run_sync(read_runs, self.store, run_ids)
        else:
            return
        self.tracker.refresh(rows, now, watch_new=watch_new)
        changes = self.tracker.check(now)
        if changes:
            await self.output.send([transition_event(t, now, self.options.signal) for t in changes])

    async def _follow_ownership(self, ownership: RunOwnership, now: float) -> None:
        """The owned partitions changed: forget the runs given up, watch the stored live runs taken over."""
        self._generation = ownership.generation
        self.tracker.forget([run_id for run_id in self.tracker.run_ids if not ownership.owns(run_id)])
        rows = await anyio.to_thread.run_sync(read_runs, self.store, None)
        self.tracker.refresh([row for row in rows if ownership.owns(row.run_id)], now, watch_new=True)

    def statistics(self) -> dict[str, Any]:
        return self.tracker.statistics()
