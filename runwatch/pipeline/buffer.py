"""Bounded, batch-oriented event buffers: the queue on every edge of the graph.

A buffer holds lists of events (batches) and control markers. It is bounded
twice: in events and in bytes (the events' estimated memory, see
:func:`runwatch.events.event_nbytes`), and it is full when either bound is
reached. What happens then is the buffer's policy:

- ``block``: the sender waits for space (backpressure; nothing is lost);
- ``drop_newest``: the part of the incoming batch that does not fit is dropped;
- ``drop_oldest``: the oldest buffered events are dropped to make room.

A single event larger than the byte bound is taken when the buffer is empty
(alone, it could never fit). Markers (flush barriers) are never dropped and
never count against the bounds, so a flush always completes. Every event is
counted exactly once: ``received == delivered + buffered + sum(dropped.values())``.

Batches travel as :class:`EventBatch` lists that carry their size, computed
once where a batch is made (the producer hand-off, or the first output that
sends a plain list), so a batch passing several buffers is weighed once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any, Final, NamedTuple

import anyio

from ..events import event_nbytes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BufferStatistics",
    "EventBatch",
    "EventBuffer",
    "FlushMarker",
    "OverflowPolicy",
    "as_event_batch",
    "batch_nbytes",
]

#: The byte bound of a buffer unless its config says otherwise.
DEFAULT_MAX_BYTES: Final = 32 << 20


class EventBatch(list[Any]):
    """A list of events that knows its estimated size in bytes (``nbytes``).

    Batches are shared between consumers and never changed once sent.
    """

    __slots__ = ("nbytes",)

    nbytes: int


def as_event_batch(events: Iterable[Any]) -> EventBatch:
    """``events`` as an :class:`EventBatch` (itself when it is one): weighed once."""
    if type(events) is EventBatch:
        return events
    batch = EventBatch(events)
    batch.nbytes = sum(map(event_nbytes, batch))
    return batch


def batch_nbytes(events: list[Any]) -> int:
    """The estimated bytes of a list of events (an :class:`EventBatch` knows its own)."""
    if type(events) is EventBatch:
        return events.nbytes
    return sum(map(event_nbytes, events))


class OverflowPolicy(StrEnum):
    """What a full buffer does with more events."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class FlushMarker:
    """A barrier that travels the graph behind everything emitted before it.

    Each sink that receives it acknowledges once it has committed all events
    ahead of it; ``callback`` runs when ``expected`` acknowledgements arrived.
    Sinks that do not acknowledge flushes (live views) acknowledge it only
    when it is ``live``. Only the pipeline's event loop touches ``remaining``.
    """

    __slots__ = ("callback", "live", "remaining")

    def __init__(self, expected: int, callback: Callable[[], Any], *, live: bool = False) -> None:
        self.remaining = expected
        self.callback = callback
        self.live = live
        if expected <= 0:
            callback()

    def acknowledge(self) -> None:
        """One sink committed everything ahead of this marker."""
        self.remaining -= 1
        if self.remaining == 0:
            self.callback()


class BufferStatistics(NamedTuple):
    """A snapshot of a buffer's counters (events, not batches; bytes are estimates)."""

    max_events: int
    buffered_events: int
    received_events: int
    delivered_events: int
    dropped_events: dict[str, int]
    waiting_senders: int
    policy: str
    max_bytes: int
    buffered_bytes: int


class EventBuffer:
    """A bounded single-consumer buffer of event batches.

    Args:
        max_events: the bound in events (at least 1).
        policy: the :class:`OverflowPolicy` when full.
        max_bytes: the bound in bytes of the events' estimated memory (at least 1).
    """

    def __init__(
        self,
        max_events: int = 10_000,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.policy = OverflowPolicy(policy)
        self._items: deque[EventBatch | FlushMarker] = deque()
        self._buffered = 0
        self._buffered_bytes = 0
        self._received = 0
        self._delivered = 0
        self._dropped: dict[str, int] = {}
        self._waiting_senders = 0
        self._closed = False
        self._closed_reason = "closed"  # what a batch sent after close() is counted as
        self._data_ready = anyio.Event()
        self._space_ready = anyio.Event()

    # -- producer side -----------------------------------------------------------

    def put_nowait(self, batch: list[Any]) -> None:
        """Add a batch without waiting; what does not fit is dropped per policy.

        With the ``block`` policy, a batch that does not fit is dropped with
        reason ``full``; callers that may wait use :meth:`put`.
        """
        if not batch:
            return
        batch = as_event_batch(batch)
        self._received += len(batch)
        if self._closed:
            self._drop(self._closed_reason, len(batch))
            return
        if not self._fits(len(batch), batch.nbytes):
            if self.policy is OverflowPolicy.DROP_OLDEST:
                kept = self._newest_that_fit_alone(batch)
                self._drop("overflow", len(batch) - len(kept))
                self._drop_oldest_until_fits(len(kept), kept.nbytes)
                batch = kept
            else:
                reason = "overflow" if self.policy is OverflowPolicy.DROP_NEWEST else "full"
                kept = self._first_that_fit(batch, 0)
                self._drop(reason, len(batch) - len(kept))
                if not kept:
                    return
                batch = kept
        self._append(batch)

    async def put(self, batch: list[Any]) -> None:
        """Add a batch; with the ``block`` policy, wait until it fits.

        A batch that fits the bounds goes in whole (never interleaved with
        other senders' events); a larger one is taken in parts that fit.
        """
        if self.policy is not OverflowPolicy.BLOCK:
            self.put_nowait(batch)
            return
        batch = as_event_batch(batch)
        self._received += len(batch)
        start = 0
        while start < len(batch):
            if self._closed:
                self._drop(self._closed_reason, len(batch) - start)
                return
            if start == 0 and self._fits_alone(len(batch), batch.nbytes):
                part = batch
            else:
                part = self._first_that_fit(batch, start, alone=True)
            if not self._fits(len(part), part.nbytes):
                self._waiting_senders += 1
                try:
                    await self._space_ready.wait()
                except anyio.get_cancelled_exc_class():
                    self._drop("cancelled", len(batch) - start)  # counted: never taken, never lost silently
                    raise
                finally:
                    self._waiting_senders -= 1
                continue
            start += len(part)
            self._append(part)

    def count_lost(self, count: int, reason: str) -> None:
        """Count ``count`` events sent to this buffer that never reached it (the sender was cut off)."""
        self._received += count
        self._drop(reason, count)

    def put_marker(self, marker: FlushMarker) -> None:
        """Queue a flush marker behind everything buffered (never dropped)."""
        self._items.append(marker)
        self._wake_consumer()

    def close(self) -> None:
        """No more batches will come; the consumer drains what is buffered."""
        self._closed = True
        self._wake_consumer()
        self._space_ready.set()

    # -- consumer side -----------------------------------------------------------

    async def get(self, max_events: int | None = None) -> list[Any] | FlushMarker:
        """The next item: buffered batches joined up to ``max_events``, or a marker.

        Raises:
            anyio.EndOfStream: the buffer is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            await self._data_ready.wait()
            self._data_ready = anyio.Event()
        return self._take(max_events)

    def get_nowait(self, max_events: int | None = None) -> list[Any] | FlushMarker | None:
        """Like :meth:`get` but returns ``None`` when nothing is buffered."""
        return self._take(max_events) if self._items else None

    def _take(self, max_events: int | None) -> list[Any] | FlushMarker:
        first = self._items.popleft()
        if isinstance(first, FlushMarker):
            return first
        batch = first
        limit = max_events or self.max_events
        # Join following batches (never across a marker) to cut per-batch overhead.
        while self._items and len(batch) < limit:
            following = self._items[0]
            if isinstance(following, FlushMarker) or len(batch) + len(following) > limit:
                break
            self._items.popleft()
            if batch is first:
                batch = EventBatch(first)
                batch.nbytes = first.nbytes
            batch.extend(following)
            batch.nbytes += following.nbytes
        self._buffered -= len(batch)
        self._buffered_bytes -= batch.nbytes
        self._delivered += len(batch)
        if self._waiting_senders:
            self._space_ready.set()
            self._space_ready = anyio.Event()
        return batch

    # -- helpers -----------------------------------------------------------------

    def _fits(self, events: int, nbytes: int) -> bool:
        """Whether ``events`` of ``nbytes`` fit now (one event heavier than the bound fits an empty buffer)."""
        if self._buffered + events > self.max_events:
            return False
        return self._buffered_bytes + nbytes <= self.max_bytes or (self._buffered == 0 and events == 1)

    def _fits_alone(self, events: int, nbytes: int) -> bool:
        """Whether ``events`` of ``nbytes`` fit an empty buffer within both bounds."""
        return events <= self.max_events and nbytes <= self.max_bytes

    def _first_that_fit(self, batch: EventBatch, start: int, *, alone: bool = False) -> EventBatch:
        """The longest run of ``batch`` from ``start`` that fits now (``alone``: in an empty buffer).

        At least one event when the space is empty (``alone`` or an empty
        buffer): an event larger than the byte bound still passes on its own.
        """
        free_events = self.max_events - (0 if alone else self._buffered)
        free_bytes = self.max_bytes - (0 if alone else self._buffered_bytes)
        empty = alone or self._buffered == 0
        part = EventBatch()
        part.nbytes = 0
        for event in batch[start : start + max(0, free_events)]:
            size = event_nbytes(event)
            if part.nbytes + size > free_bytes and not (empty and not part):
                break
            part.append(event)
            part.nbytes += size
        return part

    def _newest_that_fit_alone(self, batch: EventBatch) -> EventBatch:
        """The longest tail of ``batch`` that fits an empty buffer (at least its last event)."""
        if self._fits_alone(len(batch), batch.nbytes):
            return batch
        kept: list[Any] = []
        nbytes = 0
        for event in reversed(batch[-self.max_events :]):
            size = event_nbytes(event)
            if kept and nbytes + size > self.max_bytes:
                break
            kept.append(event)
            nbytes += size
        kept.reverse()
        part = EventBatch(kept)
        part.nbytes = nbytes
        return part

    def _append(self, batch: EventBatch) -> None:
        self._items.append(batch)
        self._buffered += len(batch)
        self._buffered_bytes += batch.nbytes
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        self._data_ready.set()

    def _drop(self, reason: str, count: int) -> None:
        if count > 0:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop_oldest_until_fits(self, events: int, nbytes: int) -> None:
        """Drop the oldest buffered events (markers stay) until ``events`` of ``nbytes`` fit."""
        kept: deque[EventBatch | FlushMarker] = deque()
        while self._items and not self._fits(events, nbytes):
            item = self._items.popleft()
            if isinstance(item, FlushMarker):
                kept.append(item)
                continue
            over_events = self._buffered + events - self.max_events
            over_bytes = self._buffered_bytes + nbytes - self.max_bytes
            cut, cut_bytes = 0, 0
            for event in item:  # the oldest events of this batch, as many as it takes
                if cut >= over_events and cut_bytes >= over_bytes:
                    break
                cut += 1
                cut_bytes += event_nbytes(event)
            self._buffered -= cut
            self._buffered_bytes -= cut_bytes
            self._drop("overflow", cut)
            if cut < len(item):
                rest = EventBatch(item[cut:])
                rest.nbytes = item.nbytes - cut_bytes
                self._items.appendleft(rest)
        self._items.extendleft(reversed(kept))

    def drop_all(self, reason: str) -> None:
        """Discard everything buffered (markers stay), counting it as dropped."""
        markers = [item for item in self._items if isinstance(item, FlushMarker)]
        self._drop(reason, self._buffered)
        self._buffered = 0
        self._buffered_bytes = 0
        self._items = deque(markers)
        self._space_ready.set()
        self._space_ready = anyio.Event()

    def abandon(self, reason: str) -> None:
        """Nobody will consume this buffer any more: drop what it holds and, from now on, every batch sent.

        Both are counted with ``reason``; senders waiting for space wake and
        count the rest of their batch the same way.
        """
        self._closed_reason = reason
        self._closed = True
        self.drop_all(reason)
        self._wake_consumer()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __len__(self) -> int:
        return self._buffered

    def statistics(self) -> BufferStatistics:
        """The buffer's counters now."""
        return BufferStatistics(
            max_events=self.max_events,
            buffered_events=self._buffered,
            received_events=self._received,
            delivered_events=self._delivered,
            dropped_events=dict(self._dropped),
            waiting_senders=self._waiting_senders,
            policy=self.policy.value,
            max_bytes=self.max_bytes,
            buffered_bytes=self._buffered_bytes,
        )
