"""The component contract: what a source, stage or sink implements (the guide: docs/components.md).

A component is built from its validated options, started, run by the
pipeline's runner, then closed:

1. ``__init__(id, options, context)`` — record what to build; no I/O.
2. The runner gives it its :class:`Output` (``self.output``: where a source
   or a stage sends; a sink's has no consumers).
3. ``await start()`` — open resources (a database, a socket).
4. The runner drives it:

   - a :class:`Source` runs ``await run(stopping)`` until ``stopping`` is
     set, sending batches with ``await self.output.send(batch)``;
     ``stop()`` wakes it, ``request_flush(callback)`` puts a flush barrier
     behind everything it produced, ``abandon(reason)`` drops (and counts)
     what its intake still holds when nobody will drain it;
   - a stage or a sink (a :class:`Consumer`) gets ``await write(batch)`` per
     input batch (a stage sends whatever it wants downstream),
     ``await flush()`` at every flush barrier (send or commit everything
     held back) and ``await tick(now)`` every ``tick_interval_seconds``
     (when that is set) for time-driven work. A flush barrier
     (``Pipeline.flush``, an ingest acknowledgement) waits only for sinks
     whose ``acknowledges_flush`` is true: a live view (the websocket hub)
     says false, so however slow it is, it can only fall behind (and drop,
     counted) for itself.
5. ``await aclose()`` — release resources; called once, even after errors.

Batches are lists of events shared between consumers: never mutate one.
They hold the public event kinds of :mod:`runwatch.events` only: runwatch's
internal records (ingest receipts) are taken out before a component sees a
batch, unless its class says ``takes_receipts`` (runwatch's own store, stages
and live hub). An exception from ``write`` is caught by the runner, which
counts the batch as dropped with reason ``component_error``, logs it and goes
on; the component stays in the graph. Options are a pydantic model declared
as the class attribute ``Options`` (unknown keys are rejected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

from ..store.backends import open_store as open_store_at
from ..store.base import Store
from .buffer import FlushMarker, as_event_batch

if TYPE_CHECKING:
    import anyio

    from .bridge import ThreadBridge
    from .buffer import EventBuffer

__all__ = [
    "Component",
    "ComponentContext",
    "Consumer",
    "ServiceKey",
    "Services",
    "NoOptions",
    "Options",
    "Output",
    "ReceiptBook",
    "Sink",
    "Source",
    "Stage",
]


class Options(BaseModel):
    """Base for component options: strict types, unknown keys rejected, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoOptions(Options):
    """For components that take no options."""


class ReceiptBook:
    """Where store sinks report the ingest receipts they commit.

    A sink that stores receipts registers as a recorder when it is built and
    reports the ``(run_id, batch_id)`` key of each receipt right after its
    transaction commits; the ingest source listens, so a batch is answered
    "stored" only once it is. Only the pipeline's event loop reports.
    """

    def __init__(self) -> None:
        self.recorders = 0
        self._listeners: list[Callable[[list[tuple[str, str]]], None]] = []

    def add_recorder(self) -> None:
        """A sink that stores receipts (and reports them) is in the graph."""
        self.recorders += 1

    def listen(self, listener: Callable[[list[tuple[str, str]]], None]) -> None:
        """Call ``listener(keys)`` with the keys of every commit's receipts."""
        self._listeners.append(listener)

    def committed(self, keys: list[tuple[str, str]]) -> None:
        """Receipts with these keys were committed, with their batches' events."""
        for listener in self._listeners:
            listener(keys)


_T = TypeVar("_T")


class ServiceKey(Generic[_T]):
    """The typed key of a service: what a component offers the others (and the web app) at run time.

    Each key is one module-level constant next to the component that provides
    it (``ALERT_ENGINE: ServiceKey[AlertEngine]``); whoever needs the service
    imports the key, and gets back a value of the key's type.

    Args:
        name: what the service is called in messages ("this server runs no ingest component").
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


class Services:
    """The services a pipeline's components offer, by :class:`ServiceKey`.

    A component provides its service in ``start`` and withdraws it in
    ``aclose``; the first one to provide a key keeps it. Only the pipeline's
    loop changes it.
    """

    def __init__(self) -> None:
        self._by_key: dict[ServiceKey[Any], Any] = {}

    def provide(self, key: ServiceKey[_T], value: _T) -> _T:
        """Offer ``value`` under ``key`` unless something already is; returns what ``key`` now holds."""
        return cast(_T, self._by_key.setdefault(key, value))

    def withdraw(self, key: ServiceKey[_T], value: _T) -> None:
        """Stop offering ``value`` under ``key`` (nothing happens when ``key`` holds something else)."""
        if self._by_key.get(key) is value:
            del self._by_key[key]

    def get(self, key: ServiceKey[_T]) -> _T | None:
        """The service under ``key``, or ``None``."""
        return cast("_T | None", self._by_key.get(key))

    def __getitem__(self, key: ServiceKey[_T]) -> _T:
        """The service under ``key`` (``KeyError`` when none is offered)."""
        return cast(_T, self._by_key[key])

    def __contains__(self, key: object) -> bool:
        return key in self._by_key


@dataclass
class ComponentContext:
    """What the pipeline shares with its components.

    Attributes:
        db_path: the store's path (or a PostgreSQL store's URL).
        data_dir: where components may write files (snapshots, spools).
        services: what components offer each other at run time, by typed key (the live hub...).
        receipts: where store sinks report committed ingest receipts.
        active_runs: the runs whose producers in this process are active (a monitor's current
            run): what the ``system`` sampler attributes its readings to.
        open_store: the store backend: the :class:`~runwatch.store.base.Store` at a path
            (default: a SQLite file, or a PostgreSQL store for a ``postgresql://`` URL).
    """

    db_path: str = "monitoring.db"
    data_dir: Path = field(default_factory=lambda: Path("monitor_data"))
    services: Services = field(default_factory=Services)
    receipts: ReceiptBook = field(default_factory=ReceiptBook)
    active_runs: set[str] = field(default_factory=set)
    open_store: Callable[[str], Store] = open_store_at

    @property
    def store(self) -> Store:
        """The pipeline's store (at :attr:`db_path`): components ask it, never run SQL themselves."""
        return self.open_store(self.db_path)

    def store_at(self, path: str | None) -> Store:
        """The store at ``path`` (a component's own ``path`` option), or the pipeline's for ``None``."""
        return self.open_store(path or self.db_path)


class Output:
    """The send side of a component: fans each batch out to every consumer.

    Args:
        buffers: the input buffers of the consumers.
        flush_paths: how many paths lead from here to sinks that acknowledge
            flushes (a barrier sent here is done once each has it).
    """

    def __init__(self, buffers: list[EventBuffer] | None = None, flush_paths: int = 0) -> None:
        self._buffers = list(buffers or ())
        self.flush_paths = flush_paths
        #: Events handed to :meth:`send` (counted at once: from then on the consumers' buffers
        #: account for them, as delivered, buffered or dropped).
        self.sent_events = 0
        #: The batch a :meth:`send` is still putting into a consumer's buffer (waiting for room).
        self.sending_events = 0

    async def send(self, batch: list[Any]) -> None:
        """Send a batch to every consumer; waits where a consumer's policy blocks."""
        if not batch:
            return
        batch = as_event_batch(batch)  # weighed once for every consumer's byte bound
        self.sent_events += len(batch)
        self.sending_events = len(batch)
        buffers = self._buffers
        try:
            for index, buffer in enumerate(buffers):
                try:
                    await buffer.put(batch)
                except BaseException:  # cancelled: the consumers not reached yet never get the batch
                    for later in buffers[index + 1 :]:
                        later.count_lost(len(batch), "cancelled")
                    raise
        finally:
            self.sending_events = 0

    def send_nowait(self, batch: list[Any]) -> None:
        """Send without waiting; a full ``block`` consumer drops with reason ``full``."""
        if not batch:
            return
        batch = as_event_batch(batch)
        self.sent_events += len(batch)
        for buffer in self._buffers:
            buffer.put_nowait(batch)

    def send_flush_barrier(self, callback: Callable[[], Any]) -> None:
        """Put a flush barrier behind everything sent so far: ``callback()`` runs (on the loop) once
        every sink that acknowledges flushes has committed what is ahead of it."""
        self.forward_barrier(FlushMarker(self.flush_paths, callback))

    def forward_barrier(self, marker: FlushMarker) -> None:
        """Pass a barrier that arrived from upstream on to every consumer (the runner does this)."""
        for buffer in self._buffers:
            buffer.put_marker(marker)

    @property
    def consumers(self) -> int:
        """How many buffers this output feeds."""
        return len(self._buffers)


class Component(ABC):
    """Base of every pipeline component (see the module docs for the contract)."""

    role: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: Seconds between ``tick`` calls, or ``None`` for no ticks.
    tick_interval_seconds: float | None = None
    #: Whether batches reach this component with runwatch's internal ingest receipts in them.
    #: Only runwatch's own components that store or pass them say ``True``; for every other
    #: component the runner takes them out (a stage's go on behind what it sent for that batch).
    takes_receipts: ClassVar[bool] = False

    def __init__(self, id: str, options: Any, context: ComponentContext) -> None:
        self.id = id
        self.options = options
        self.context = context
        #: Where this component sends (set by the runner before :meth:`start`).
        self.output = Output()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources. The default does nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources. The default does nothing."""

    def statistics(self) -> dict[str, Any]:
        """Component-specific counters for ``/api/pipeline``. The default is empty."""
        return {}

    def lost_events(self) -> dict[str, int]:
        """Events this component took and lost itself, by reason (the default: none).

        The runner counts its input buffer and any batch it cut off; this is
        what the component holds beyond those (an intake queue, a sink's
        uncommitted events).
        """
        return {}


class Source(Component):
    """Produces events, sending them with ``await self.output.send(batch)``."""

    role: ClassVar[str] = "source"
    #: Whether this source sends internal ingest receipts (the runner then takes them out
    #: before components that do not take them).
    emits_receipts: ClassVar[bool] = False
    #: The hand-over from threads of this process (``Pipeline.emit``), for a source fed by them.
    bridge: ThreadBridge | None = None

    @abstractmethod
    async def run(self, stopping: anyio.Event) -> None:
        """Send batches until ``stopping`` is set, then return."""

    def stop(self) -> None:
        """Called on the loop when the pipeline stops, before ``stopping`` is awaited.

        A source that waits on something other than ``stopping`` wakes it
        here; one with a :attr:`bridge` closes it (later events are refused,
        counted).
        """
        if self.bridge is not None:
            self.bridge.close()

    def request_flush(self, callback: Callable[[], Any]) -> None:
        """Put a flush barrier behind everything this source has produced.

        The default sends it behind what was sent so far; a source with its
        own intake queue puts it at the end of that queue instead (the
        bridge's, for a source with a :attr:`bridge`).
        """
        if self.bridge is not None:
            self.bridge.request_flush(callback)
        else:
            self.output.send_flush_barrier(callback)

    def abandon(self, reason: str) -> int:
        """Nobody will run this source again (the shutdown deadline passed, or its loop is gone).

        Refuse later input, and drop what the intake still holds, counted with
        ``reason`` in :meth:`lost_events`. The default does that for a
        :attr:`bridge`; a source with an intake of its own overrides it.

        Returns:
            How many events were dropped.
        """
        if self.bridge is None:
            return 0
        self.bridge.close()
        self.bridge.detach()
        return self.bridge.discard_remaining(reason)

    def unsent_events(self) -> int:
        """Events this source took from its intake but never sent on (after :meth:`abandon`)."""
        if self.bridge is None:
            return 0
        return max(0, self.bridge.statistics().accepted_events - self.output.sent_events)


class Consumer(Component):
    """A component fed by the runner: stages and sinks share these hooks."""

    @abstractmethod
    async def write(self, batch: list[Any]) -> None:
        """Take one batch (a stage sends what continues downstream; a sink may hold it until ``flush``)."""

    async def flush(self) -> None:  # noqa: B027 - optional hook
        """Send or commit everything taken so far. The default does nothing."""

    async def tick(self, now: float) -> None:  # noqa: B027 - optional hook
        """Time-driven work; ``now`` is seconds since the epoch. The default does nothing."""


class Stage(Consumer):
    """Transforms, routes or observes events on their way to sinks (sends with ``self.output``)."""

    role: ClassVar[str] = "stage"


class Sink(Consumer):
    """Ends a path: stores, publishes or notifies."""

    role: ClassVar[str] = "sink"
    #: ``True`` when ``write`` keeps every event it takes until it is done with it, and counts
    #: those it loses in :meth:`lost_events`: the runner never counts a cut-off write again.
    counts_own_losses: ClassVar[bool] = False
    #: Whether flush barriers wait for this sink (durable sinks: yes; live views: no).
    acknowledges_flush: ClassVar[bool] = True
