"""Bounded, batch-oriented event buffers: the queue on every edge of the graph.

A buffer holds lists of events (batches) and control markers. Its bound is in
events. What happens when it is full is the buffer's policy:

- ``block``: the sender waits for space (backpressure; nothing is lost);
- ``drop_newest``: the part of the incoming batch that does not fit is dropped;
- ``drop_oldest``: the oldest buffered events are dropped to make room.

Markers (flush barriers) are never dropped and never count against the bound,
so a flush always completes. Every event is counted exactly once:
``received == delivered + buffered + sum(dropped.values())``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any, NamedTuple

import anyio

__all__ = ["BufferStatistics", "EventBuffer", "FlushMarker", "OverflowPolicy"]


class OverflowPolicy(StrEnum):
    """What a full buffer does with more events."""

    BLOCK = "block"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class FlushMarker:
    """A barrier that travels the graph behind everything emitted before it.

    Each sink that receives it acknowledges once it has committed all events
    ahead of it; ``callback`` runs when ``expected`` acknowledgements arrived.
    Only the pipeline's event loop touches ``remaining``.
    """

    __slots__ = ("callback", "remaining")

    def __init__(self, expected: int, callback: Callable[[], Any]) -> None:
        self.remaining = expected
        self.callback = callback
        if expected <= 0:
            callback()

    def acknowledge(self) -> None:
        """One sink committed everything ahead of this marker."""
        self.remaining -= 1
        if self.remaining == 0:
            self.callback()


class BufferStatistics(NamedTuple):
    """A snapshot of a buffer's counters (events, not batches)."""

    max_events: int
    buffered_events: int
    received_events: int
    delivered_events: int
    dropped_events: dict[str, int]
    waiting_senders: int
    policy: str


class EventBuffer:
    """A bounded single-consumer buffer of event batches.

    Args:
        max_events: the bound, in events (at least 1).
        policy: the :class:`OverflowPolicy` when full.
    """

    def __init__(self, max_events: int = 10_000, policy: OverflowPolicy | str = OverflowPolicy.BLOCK) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self.max_events = max_events
        self.policy = OverflowPolicy(policy)
        self._items: deque[list[Any] | FlushMarker] = deque()
        self._buffered = 0
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
        self._received += len(batch)
        if self._closed:
            self._drop(self._closed_reason, len(batch))
            return
        free = self.max_events - self._buffered
        if len(batch) > free:
            if self.policy is OverflowPolicy.DROP_OLDEST:
                self._drop_oldest(len(batch) - free)
                if len(batch) > self.max_events:
                    self._drop("overflow", len(batch) - self.max_events)
                    batch = batch[len(batch) - self.max_events :]
            else:
                reason = "overflow" if self.policy is OverflowPolicy.DROP_NEWEST else "full"
                self._drop(reason, len(batch) - max(free, 0))
                batch = batch[: max(free, 0)]
                if not batch:
                    return
        self._append(batch)

    async def put(self, batch: list[Any]) -> None:
        """Add a batch; with the ``block`` policy, wait until it fits.

        A batch that fits the bound goes in whole (never interleaved with
        other senders' events); a larger one is taken in bound-sized parts.
        """
        if self.policy is not OverflowPolicy.BLOCK:
            self.put_nowait(batch)
            return
        self._received += len(batch)
        start = 0
        while start < len(batch):
            if self._closed:
                self._drop(self._closed_reason, len(batch) - start)
                return
            part_size = min(len(batch) - start, self.max_events)
            if self.max_events - self._buffered < part_size:
                self._waiting_senders += 1
                try:
                    await self._space_ready.wait()
                except anyio.get_cancelled_exc_class():
                    self._drop("cancelled", len(batch) - start)  # counted: never taken, never lost silently
                    raise
                finally:
                    self._waiting_senders -= 1
                continue
            part = batch if part_size == len(batch) else batch[start : start + part_size]
            start += part_size
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
                batch = list(first)
            batch.extend(following)
        self._buffered -= len(batch)
        self._delivered += len(batch)
        if self._waiting_senders:
            self._space_ready.set()
            self._space_ready = anyio.Event()
        return batch

    # -- helpers -----------------------------------------------------------------

    def _append(self, batch: list[Any]) -> None:
        self._items.append(batch)
        self._buffered += len(batch)
        self._wake_consumer()

    def _wake_consumer(self) -> None:
        self._data_ready.set()

    def _drop(self, reason: str, count: int) -> None:
        if count > 0:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop_oldest(self, count: int) -> None:
        kept: deque[list[Any] | FlushMarker] = deque()
        while count > 0 and self._items:
            item = self._items.popleft()
            if isinstance(item, FlushMarker):
                kept.append(item)
                continue
            if len(item) <= count:
                count -= len(item)
                self._buffered -= len(item)
                self._drop("overflow", len(item))
            else:
                self._buffered -= count
                self._drop("overflow", count)
                self._items.appendleft(item[count:])
                count = 0
        self._items.extendleft(reversed(kept))

    def drop_all(self, reason: str) -> None:
        """Discard everything buffered (markers stay), counting it as dropped."""
        markers = [item for item in self._items if isinstance(item, FlushMarker)]
        self._drop(reason, self._buffered)
        self._buffered = 0
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
        )
