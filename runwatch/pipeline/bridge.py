"""The hand-over from synchronous producer threads to the pipeline's event loop.

The training loop's thread appends events to a ``collections.deque`` (an
atomic operation under the GIL, so no lock per event) and returns. The loop
side drains the deque on a short poll interval while events flow, and sleeps
without polling when the producer is idle. The producer wakes the loop only
when the loop sleeps, when the deque passes a high-water mark, or for a flush
— never per event.

The deque is bounded in events and in bytes (the events' estimated memory,
:func:`runwatch.events.event_nbytes`). The producer's cost stays the same for
a metric: a metric counts as :data:`~runwatch.events.METRIC_NBYTES`, so one
precomputed limit on the deque's length stands for both bounds; any other
event adds its weight under a lock (and the limit moves with it). When the
deque is full, the policy decides: ``block`` makes the producer wait (up to
``block_timeout_seconds``, then the event is dropped and counted),
``drop_newest`` drops the new event, ``drop_oldest`` drops the oldest ones
until it fits. An event larger than the byte bound is taken into an empty
deque.
A ``block`` producer waits out the timeout once per stall, not once per
event: after a timeout, later overflowing events are dropped at once
(``block_timeout``) until the loop takes events again, so a stuck consumer
costs the training loop at most one ``block_timeout_seconds``.
The producer never raises because of runwatch's own trouble.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..events import METRIC_NBYTES, Metric, event_nbytes
from .buffer import EventBatch, OverflowPolicy

__all__ = ["DEFAULT_INTAKE_MAX_BYTES", "BridgeStatistics", "ThreadBridge"]

#: The byte bound of the producer hand-off unless configured.
DEFAULT_INTAKE_MAX_BYTES = 64 << 20

logger = logging.getLogger("runwatch.pipeline")


class BridgeStatistics(NamedTuple):
    """Counters of the producer hand-over, in events."""

    max_events: int
    buffered_events: int
    accepted_events: int
    dropped_events: dict[str, int]
    blocked_producers: int
    policy: str
    max_bytes: int
    buffered_bytes: int


class _FlushRequest:
    """A flush request; travels the deque like an event so it keeps its place."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], Any]) -> None:
        self.callback = callback


class ThreadBridge:
    """Thread-safe intake of events into one in-process source.

    Args:
        max_events: the deque's bound in events.
        policy: what a full deque does (see module docs).
        max_bytes: the deque's bound in bytes (the events' estimated memory).
        block_timeout_seconds: the longest a ``block`` producer waits for space;
            after it the event is dropped with reason ``block_timeout``.
        wake_threshold: buffered events that make the producer wake the loop
            early rather than wait for the next poll.
    """

    def __init__(
        self,
        *,
        max_events: int = 100_000,
        policy: OverflowPolicy | str = OverflowPolicy.BLOCK,
        block_timeout_seconds: float = 30.0,
        wake_threshold: int | None = None,
        max_bytes: int = DEFAULT_INTAKE_MAX_BYTES,
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.policy = OverflowPolicy(policy)
        self.block_timeout_seconds = block_timeout_seconds
        self.wake_threshold = wake_threshold or max(1, min(max_events // 4, 8192))
        self._queue: deque[Any] = deque()
        self._accepted = 0  # counted on the loop side, when drained
        self._dropped: dict[str, int] = {}
        self._drop_lock = threading.Lock()
        self._space = threading.Condition(threading.Lock())
        self._blocked = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        # True while the consumer sleeps without a poll timeout: the next
        # producer must wake it. Read without a lock on the hot path.
        self._consumer_idle = False
        self._idle_polls = 0
        self._pending_flushes = 0  # flush requests in the deque (not events)
        # What the queued events weigh beyond METRIC_NBYTES each (under _drop_lock).
        self._extra_bytes = 0
        # The deque length (events and flush requests) below which a metric fits both bounds;
        # read without a lock on the hot path, recomputed under _drop_lock (see _update_limit).
        self._closed = False
        self._limit = max_events
        self._update_limit()
        # Set when a blocked producer gave up; cleared when the loop takes events again.
        self._shedding = False

    # -- producer side (any thread) ------------------------------------------------

    def emit(self, event: Any) -> None:
        """Hand one event to the pipeline. Never raises for runwatch's own trouble."""
        queue = self._queue
        # One test covers both bounds and a closed intake for a metric; anything else is weighed.
        if type(event) is not Metric or len(queue) >= self._limit:
            self._emit_weighed(event)
            return
        queue.append(event)
        if self._consumer_idle or len(queue) == self.wake_threshold:
            self._wake()

    def _emit_weighed(self, event: Any) -> None:
        """The hand-off of any event that is not a metric with room to spare."""
        extra = (METRIC_NBYTES if type(event) is Metric else event_nbytes(event)) - METRIC_NBYTES
        with self._drop_lock:
            if not self._closed and self._fits(extra):
                self._add_extra(extra)
                self._queue.append(event)  # after its weight: a drain never sees it unweighed
                appended = True
            else:
                appended = False
        if not appended:
            self._overflow(event, extra)
            return
        if self._consumer_idle or len(self._queue) >= self.wake_threshold:
            self._wake()

    def _fits(self, extra: int, held_flushes: int = 0) -> bool:
        """Whether one more event of ``METRIC_NBYTES + extra`` bytes fits (call under _drop_lock).

        ``held_flushes`` flush requests are out of the deque for a moment (still pending).
        An event larger than the byte bound fits an empty deque (alone, it could never fit).
        """
        events = len(self._queue) + held_flushes - self._pending_flushes
        if events <= 0:
            return True
        if events >= self.max_events:
            return False
        return (events + 1) * METRIC_NBYTES + self._extra_bytes + extra <= self.max_bytes

    def _add_extra(self, extra: int) -> None:
        """Account for an event entering (``extra``) or leaving (``-extra``) (call under _drop_lock)."""
        if extra:
            self._extra_bytes += extra
            self._update_limit()

    def _update_limit(self) -> None:
        """The deque length that still leaves room for a metric (call under _drop_lock, or alone)."""
        if self._closed:
            self._limit = 0
            return
        by_bytes = (self.max_bytes - self._extra_bytes) // METRIC_NBYTES - 1
        self._limit = self._pending_flushes + min(self.max_events, max(0, by_bytes))

    def emit_many(self, events: Iterable[Any]) -> None:
        """Hand several events over, in order."""
        for event in events:
            self.emit(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything emitted before the call is committed.

        Returns:
            ``True`` when committed, ``False`` if ``timeout`` seconds passed or
            the pipeline is not running.
        """
        if self._closed or self._loop is None:
            return False
        done = threading.Event()
        self.request_flush(done.set)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not done.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))):
            if self._loop is None:  # the pipeline stopped before reaching this request
                return done.is_set()
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def request_flush(self, callback: Callable[[], Any]) -> None:
        """Queue a flush request; ``callback`` runs on the loop once it is committed."""
        with self._drop_lock:
            self._pending_flushes += 1
            self._update_limit()
            self._queue.append(_FlushRequest(callback))  # never bounded: flushes are not dropped
        self._wake()

    def _overflow(self, event: Any, extra: int) -> None:
        if self._closed:
            self._count_drop("closed")
            return
        if self.policy is OverflowPolicy.DROP_NEWEST:
            self._count_drop("overflow")
        elif self.policy is OverflowPolicy.DROP_OLDEST:
            self._drop_oldest_then_append(event, extra)
        else:
            self._block_then_append(event, extra)

    def _drop_oldest_then_append(self, event: Any, extra: int) -> None:
        """Remove the oldest events, stepping over flush requests (never dropped), until ``event`` fits.

        Only the deque's atomic end operations are used: the loop may be
        draining it from another thread at the same time.
        """
        queue = self._queue
        held: list[Any] = []
        dropped = 0
        with self._drop_lock:
            while not self._fits(extra, len(held)):
                try:
                    item = queue.popleft()
                except IndexError:
                    break
                if type(item) is _FlushRequest:
                    held.append(item)
                    continue
                dropped += 1
                self._add_extra(-_extra_of(item))
            queue.extendleft(reversed(held))
            self._add_extra(extra)
            queue.append(event)
        for _ in range(dropped):
            self._count_drop("overflow")

    def _block_then_append(self, event: Any, extra: int) -> None:
        if asyncio._get_running_loop() is not None:
            # Blocking inside an event loop would stall it (and deadlock the
            # loop that drains us): async producers use the async API instead.
            self._count_drop("full_on_loop_thread")
            return
        if self._shedding:
            # A producer already waited out the timeout and the loop has not taken
            # anything since: waiting again per event would stall the caller indefinitely.
            self._count_drop("block_timeout")
            return
        deadline = time.monotonic() + self.block_timeout_seconds
        with self._space:
            self._blocked += 1
            try:
                while not self._closed:
                    with self._drop_lock:
                        if self._fits(extra):
                            self._add_extra(extra)
                            self._queue.append(event)
                            return
                    self._wake()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._shedding = True
                        self._count_drop("block_timeout")
                        return
                    self._space.wait(min(remaining, 0.1))
            finally:
                self._blocked -= 1
        self._count_drop("closed")

    def _count_drop(self, reason: str) -> None:
        with self._drop_lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + 1
            total = self._dropped[reason]
        if total & (total - 1) == 0:  # log at 1, 2, 4, 8... to avoid a log storm
            logger.warning("runwatch dropped %d event(s) at intake (reason: %s)", total, reason)

    def _wake(self) -> None:
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        self._consumer_idle = False
        try:
            loop.call_soon_threadsafe(wakeup.set)
        except RuntimeError:  # the loop closed under us: nothing to wake
            pass

    # -- consumer side (the pipeline's loop) ----------------------------------------

    def attach(self) -> None:
        """Bind to the running event loop (called by the source that drains us)."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()

    async def wait_for_events(self, poll_interval: float, idle_after_polls: int = 20) -> None:
        """Return when events may be waiting: after a poll interval or a wake-up.

        While events flow, waiting a poll interval lets them gather into one
        batch; past the high-water mark (or on close) it returns at once.
        After ``idle_after_polls`` empty polls it stops polling and sleeps
        until a producer wakes it.
        """
        assert self._wakeup is not None
        wakeup = self._wakeup
        if len(self._queue) >= self.wake_threshold or self._closed:
            await asyncio.sleep(0)  # let other tasks run between large drains
        elif self._queue:
            await self._wait_for(wakeup, poll_interval)
        else:
            self._idle_polls += 1
            if self._idle_polls < idle_after_polls:
                await self._wait_for(wakeup, poll_interval)
            else:
                self._consumer_idle = True
                if self._queue:  # an event raced in before the flag was visible
                    self._consumer_idle = False
                else:
                    await wakeup.wait()
        wakeup.clear()

    @staticmethod
    async def _wait_for(wakeup: asyncio.Event, timeout: float) -> None:
        try:
            await asyncio.wait_for(wakeup.wait(), timeout)
        except TimeoutError:
            pass

    def drain(self) -> list[list[Any] | Callable[[], Any]]:
        """Take everything queued now, in order.

        Returns:
            Segments: lists of events, and for each flush request its callback
            at its place in the stream (call it once the events ahead of it
            are committed).
        """
        queue = self._queue
        count = len(queue)
        if count == 0:
            return []
        self._idle_polls = 0
        popleft = queue.popleft
        segments: list[list[Any] | Callable[[], Any]] = []
        current = EventBatch()
        current_extra = 0  # what the current segment weighs beyond METRIC_NBYTES per event
        extra = 0
        flushes = 0
        for _ in range(count):
            try:
                item = popleft()
            except IndexError:  # a drop_oldest producer took one meanwhile
                break
            kind = type(item)
            if kind is Metric:
                current.append(item)
            elif kind is _FlushRequest:
                flushes += 1
                if current:
                    current.nbytes = len(current) * METRIC_NBYTES + current_extra
                    segments.append(current)
                    self._accepted += len(current)
                    current, current_extra = EventBatch(), 0
                segments.append(item.callback)
            else:
                weight = _extra_of(item)
                current_extra += weight
                extra += weight
                current.append(item)
        if current:
            current.nbytes = len(current) * METRIC_NBYTES + current_extra
            segments.append(current)
            self._accepted += len(current)
        if flushes or extra:
            with self._drop_lock:
                self._pending_flushes -= flushes
                self._extra_bytes -= extra
                self._update_limit()
        self._shedding = False
        if self._blocked:
            with self._space:
                self._space.notify_all()
        return segments

    def close(self) -> None:
        """Stop taking events; blocked producers give up with reason ``closed``."""
        self._closed = True
        with self._drop_lock:
            self._update_limit()
        with self._space:
            self._space.notify_all()
        self._wake()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def discard_remaining(self, reason: str) -> int:
        """Drop (and count with ``reason``) every event still queued, and the flush requests.

        For a consumer that will never drain again (its loop is gone); a
        flush waiting on a dropped request reports ``False`` (never committed).
        Returns how many events were dropped.
        """
        queue = self._queue
        dropped = 0
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            with self._drop_lock:
                if type(item) is _FlushRequest:
                    self._pending_flushes -= 1
                else:
                    dropped += 1
                    self._extra_bytes -= _extra_of(item)
                self._update_limit()
        if dropped:
            with self._drop_lock:
                self._dropped[reason] = self._dropped.get(reason, 0) + dropped
        with self._space:
            self._space.notify_all()
        return dropped

    def detach(self) -> None:
        """Forget the loop (it is stopping); later flushes return at once."""
        self._loop = None
        self._wakeup = None

    def statistics(self) -> BridgeStatistics:
        """The hand-over's counters now."""
        with self._drop_lock:
            dropped = dict(self._dropped)
            events = len(self._queue) - self._pending_flushes
            nbytes = events * METRIC_NBYTES + self._extra_bytes
        return BridgeStatistics(
            max_events=self.max_events,
            buffered_events=events,
            accepted_events=self._accepted,
            dropped_events=dropped,
            blocked_producers=self._blocked,
            policy=self.policy.value,
            max_bytes=self.max_bytes,
            buffered_bytes=max(0, nbytes),
        )


def _extra_of(event: Any) -> int:
    """What ``event`` weighs beyond a metric's :data:`~runwatch.events.METRIC_NBYTES`."""
    return 0 if type(event) is Metric else event_nbytes(event) - METRIC_NBYTES
