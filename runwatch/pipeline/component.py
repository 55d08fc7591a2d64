"""The component contract: what a source, stage or sink implements.

A component is built from its validated options, started, run by the
pipeline's runner, then closed:

1. ``__init__(id, options, context)`` — record what to build; no I/O.
2. ``await start()`` — open resources (a database, a socket).
3. The runner drives it:

   - a :class:`Source` runs ``await run(output, stopping)`` until
     ``stopping`` is set, sending batches with ``await output.send(batch)``;
   - a :class:`Stage` gets ``await process(batch, output)`` per input batch
     and sends whatever it wants downstream;
   - a :class:`Sink` gets ``await write(batch)`` per input batch.

   ``await flush(...)`` is called at every flush barrier: send or commit
   everything held back. A flush barrier (``Pipeline.flush``, an ingest
   acknowledgement) waits only for sinks whose ``acknowledges_flush`` is true:
   a live view (the websocket hub) says false, so however slow it is, it can
   only fall behind (and drop, counted) for itself. ``await tick(..., now)``
   is called every ``tick_interval_seconds`` (when that is set) for
   time-driven work.
4. ``await aclose()`` — release resources; called once, even after errors.

Batches are lists of events shared between consumers: never mutate one.
An exception from ``process``/``write`` is caught by the runner, which counts
the batch as dropped with reason ``component_error``, logs it and goes on;
the component stays in the graph. Options are a pydantic model declared as
the class attribute ``Options`` (unknown keys are rejected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..store.base import Store
from .buffer import as_event_batch

if TYPE_CHECKING:
    import anyio

    from .buffer import EventBuffer

__all__ = [
    "Component",
    "ComponentContext",
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


def open_sqlite_store(path: str) -> Store:
    """The SQLite store at ``path`` (the default backend)."""
    from ..store.sqlite import SQLiteStore

    return SQLiteStore(path)


@dataclass
class ComponentContext:
    """What the pipeline shares with its components.

    Attributes:
        db_path: the store's path.
        data_dir: where components may write files (snapshots, spools).
        services: named objects shared at run time (e.g. the websocket hub).
        receipts: where store sinks report committed ingest receipts.
        open_store: the store backend: the :class:`~runwatch.store.base.Store` at a path.
    """

    db_path: str = "monitoring.db"
    data_dir: Path = field(default_factory=lambda: Path("monitor_data"))
    services: dict[str, Any] = field(default_factory=dict)
    receipts: ReceiptBook = field(default_factory=ReceiptBook)
    open_store: Callable[[str], Store] = open_sqlite_store

    @property
    def store(self) -> Store:
        """The pipeline's store (at :attr:`db_path`): components ask it, never run SQL themselves."""
        return self.open_store(self.db_path)

    def store_at(self, path: str | None) -> Store:
        """The store at ``path`` (a component's own ``path`` option), or the pipeline's for ``None``."""
        return self.open_store(path or self.db_path)


class Output:
    """The send side of a component: fans each batch out to every consumer."""

    def __init__(self, buffers: list[EventBuffer]) -> None:
        self._buffers = buffers
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

    def __init__(self, id: str, options: Any, context: ComponentContext) -> None:
        self.id = id
        self.options = options
        self.context = context

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
    """Produces events."""

    role: ClassVar[str] = "source"

    @abstractmethod
    async def run(self, output: Output, stopping: anyio.Event) -> None:
        """Send batches until ``stopping`` is set, then return."""

    def stop(self) -> None:
        """Called on the loop when the pipeline stops, before ``stopping`` is awaited.

        Sources that wait on something other than ``stopping`` wake it here.
        """

    def request_flush(self, callback: Callable[[], Any], output: Any) -> None:
        """Put a flush barrier behind everything this source has produced.

        ``output.flush_marker(callback)`` does that for sources whose sends are
        already in the graph; sources with their own intake queue override it.
        """
        output.flush_marker(callback)


class Stage(Component):
    """Transforms, routes or observes events on their way to sinks."""

    role: ClassVar[str] = "stage"

    @abstractmethod
    async def process(self, batch: list[Any], output: Output) -> None:
        """Handle one batch; send what continues downstream."""

    async def flush(self, output: Output) -> None:
        """Send anything held back. The default does nothing."""

    async def tick(self, output: Output, now: float) -> None:
        """Time-driven work; ``now`` is seconds since the epoch."""


class Sink(Component):
    """Ends a path: stores, publishes or notifies."""

    role: ClassVar[str] = "sink"
    #: ``True`` when ``write`` keeps every event it takes until it is done with it, and counts
    #: those it loses in :meth:`lost_events`: the runner never counts a cut-off write again.
    counts_own_losses: ClassVar[bool] = False
    #: Whether flush barriers wait for this sink (durable sinks: yes; live views: no).
    acknowledges_flush: ClassVar[bool] = True

    @abstractmethod
    async def write(self, batch: list[Any]) -> None:
        """Take one batch (it may be held until ``flush``)."""

    async def flush(self) -> None:
        """Commit everything taken so far. The default does nothing."""

    async def tick(self, now: float) -> None:
        """Time-driven work; ``now`` is seconds since the epoch."""
