"""Tests for runwatch.pipeline.bridge: the hand-over from producer threads to the loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest

from runwatch.events import METRIC_NBYTES, Metric, StatePatch, event_nbytes
from runwatch.pipeline.bridge import ThreadBridge
from runwatch.pipeline.buffer import OverflowPolicy

# Guards every await that could hang; nothing here legitimately takes this long.
TIMEOUT = 10
# Longer than any test: a consumer that polls this slowly only moves when woken.
NEVER = 3600.0


class Consumer:
    """Drives a bridge the way the in-process source does, recording what it takes."""

    def __init__(self, bridge: ThreadBridge, poll_interval: float = 0.001, idle_after_polls: int = 20) -> None:
        self.bridge = bridge
        self.poll_interval = poll_interval
        self.idle_after_polls = idle_after_polls
        self.events: list[Any] = []
        self.flushes = 0
        self.changed = anyio.Event()

    def take(self) -> None:
        """Drain once: keep events, run flush callbacks in their place."""
        for segment in self.bridge.drain():
            if isinstance(segment, list):
                self.events.extend(segment)
            else:
                self.flushes += 1
                segment()
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self) -> None:
        """Loop until the bridge is closed, then take what is left."""
        while True:
            await self.bridge.wait_for_events(self.poll_interval, self.idle_after_polls)
            closed = self.bridge.closed
            self.take()
            if closed:
                self.take()
                return


def assert_counts_exact(bridge: ThreadBridge, emitted: int) -> None:
    """emitted == accepted + buffered + sum(dropped)."""
    stats = bridge.statistics()
    assert emitted == stats.accepted_events + stats.buffered_events + sum(stats.dropped_events.values()), stats


async def run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking producer in a real worker thread, guarded by a timeout."""
    with anyio.fail_after(TIMEOUT):
        return await anyio.to_thread.run_sync(fn)


# -- without a loop: overflow policies and counters ----------------------------------------


def test_defaults() -> None:
    """A new bridge blocks when full and reports no traffic."""
    bridge = ThreadBridge()
    stats = bridge.statistics()
    assert stats.policy == "block"
    assert stats.max_events == 100_000
    assert (stats.buffered_events, stats.accepted_events, stats.blocked_producers) == (0, 0, 0)
    assert stats.dropped_events == {}


def test_emit_many_keeps_order() -> None:
    """emit_many hands events over in order, like repeated emit."""
    bridge = ThreadBridge(max_events=100)
    bridge.emit_many(range(5))
    bridge.emit(5)
    assert bridge.drain() == [[0, 1, 2, 3, 4, 5]]
    assert bridge.statistics().accepted_events == 6


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        pytest.param(OverflowPolicy.DROP_NEWEST, [0, 1, 2, 3], id="drop_newest"),
        pytest.param(OverflowPolicy.DROP_OLDEST, [6, 7, 8, 9], id="drop_oldest"),
    ],
)
def test_drop_policies_keep_the_right_events_and_count_exactly(policy: OverflowPolicy, kept: list[int]) -> None:
    """With a small bound, drop_newest keeps the first events and drop_oldest the last, all counted."""
    bridge = ThreadBridge(max_events=4, policy=policy)
    for event in range(10):
        bridge.emit(event)
    stats = bridge.statistics()
    assert stats.buffered_events == 4
    assert stats.dropped_events == {"overflow": 6}
    assert_counts_exact(bridge, 10)
    assert bridge.drain() == [kept]
    assert bridge.statistics().accepted_events == 4
    assert_counts_exact(bridge, 10)


def test_block_timeout_drops_the_event_with_its_reason() -> None:
    """A block producer that finds no space within block_timeout_seconds drops the event as 'block_timeout'."""
    bridge = ThreadBridge(max_events=2, policy="block", block_timeout_seconds=0.05)
    bridge.emit(1)
    bridge.emit(2)
    started = time.monotonic()
    bridge.emit(3)  # nothing drains: waits out the timeout, then gives up
    assert time.monotonic() - started >= 0.05
    stats = bridge.statistics()
    assert stats.dropped_events == {"block_timeout": 1}
    assert stats.blocked_producers == 0
    assert bridge.drain() == [[1, 2]]
    assert_counts_exact(bridge, 3)


@pytest.mark.parametrize("policy", [pytest.param(p, id=p.value) for p in OverflowPolicy])
def test_emit_after_close_counts_closed(policy: OverflowPolicy) -> None:
    """Events emitted after close are dropped with reason 'closed', never raised."""
    bridge = ThreadBridge(max_events=10, policy=policy)
    bridge.emit(1)
    bridge.close()
    bridge.emit(2)
    bridge.emit_many([3, 4])
    assert bridge.closed
    assert bridge.statistics().dropped_events == {"closed": 3}
    assert bridge.drain() == [[1]]
    assert_counts_exact(bridge, 4)


def test_flush_without_a_running_loop_returns_false_at_once() -> None:
    """flush() on a bridge that no loop drains reports failure instead of waiting."""
    bridge = ThreadBridge()
    bridge.emit(1)
    assert bridge.flush(timeout=NEVER) is False


def test_flush_requests_keep_their_place_in_the_stream() -> None:
    """drain returns each flush callback between the events emitted before and after it."""
    bridge = ThreadBridge(max_events=10)
    calls: list[str] = []

    def callback() -> None:
        calls.append("flushed")

    bridge.emit(1)
    bridge.request_flush(callback)
    bridge.emit(2)
    assert bridge.drain() == [[1], callback, [2]]
    assert calls == []  # the consumer calls it once the events ahead of it are committed


def test_pending_flush_requests_are_not_counted_as_buffered_events() -> None:
    """A queued flush request is not an event, so buffered_events leaves it out."""
    bridge = ThreadBridge(max_events=10)
    bridge.emit_many([1, 2, 3])
    bridge.request_flush(lambda: None)
    assert bridge.statistics().buffered_events == 3
    assert_counts_exact(bridge, 3)


def test_drop_oldest_never_drops_a_flush_request() -> None:
    """With drop_oldest, overflow drops the oldest event, never a queued flush request."""
    bridge = ThreadBridge(max_events=2, policy="drop_oldest")
    calls: list[str] = []
    bridge.emit_many(["a", "b"])
    bridge.request_flush(lambda: calls.append("flushed"))
    bridge.emit_many(["c", "d", "e"])
    segments = bridge.drain()
    callbacks = [segment for segment in segments if not isinstance(segment, list)]
    assert len(callbacks) == 1, segments
    events = [event for segment in segments if isinstance(segment, list) for event in segment]
    assert events == ["d", "e"]
    assert bridge.statistics().dropped_events == {"overflow": 3}


# -- with the loop: hand-over from real threads ------------------------------------------------


async def test_emits_from_a_thread_reach_the_loop_in_order() -> None:
    """Events emitted by a real producer thread all arrive on the loop, in order, and flush() confirms it."""
    bridge = ThreadBridge(max_events=1_000_000)
    bridge.attach()
    consumer = Consumer(bridge)
    count = 5000
    producer_threads: list[threading.Thread] = []

    def produce() -> bool:
        producer_threads.append(threading.current_thread())
        for event in range(count):
            bridge.emit(event)
        return bridge.flush(timeout=TIMEOUT)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        assert await run_in_thread(produce) is True
        # flush() returned: its callback ran after everything emitted before it was taken.
        assert consumer.events == list(range(count))
        assert consumer.flushes == 1
        bridge.close()
    assert producer_threads[0] is not threading.current_thread()
    assert bridge.statistics().accepted_events == count
    assert_counts_exact(bridge, count)


@pytest.mark.parametrize(
    "policy",
    [pytest.param(OverflowPolicy.DROP_NEWEST, id="drop_newest"), pytest.param(OverflowPolicy.DROP_OLDEST, id="oldest")],
)
async def test_counts_stay_exact_with_a_concurrent_consumer(policy: OverflowPolicy) -> None:
    """A fast producer thread against a small bound: every event is either taken once or counted dropped."""
    bridge = ThreadBridge(max_events=8, policy=policy)
    bridge.attach()
    consumer = Consumer(bridge)
    count = 20_000

    def produce() -> None:
        for event in range(count):
            bridge.emit(event)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        await run_in_thread(produce)
        bridge.close()
    stats = bridge.statistics()
    assert stats.buffered_events == 0
    assert stats.accepted_events == len(consumer.events)
    assert len(consumer.events) + stats.dropped_events.get("overflow", 0) == count
    assert set(stats.dropped_events) <= {"overflow"}
    assert consumer.events == sorted(set(consumer.events)), "in order, none twice"
    assert_counts_exact(bridge, count)


async def test_block_producer_waits_then_proceeds_once_drained() -> None:
    """A block producer on a full bridge waits (and wakes the loop) until the loop drains, losing nothing."""
    # wake_threshold above the bound: only the blocked producer can wake the loop.
    bridge = ThreadBridge(max_events=3, policy="block", block_timeout_seconds=TIMEOUT, wake_threshold=100)
    bridge.attach()
    returned = anyio.Event()

    def produce() -> None:
        for event in range(4):  # the fourth does not fit
            bridge.emit(event)

    async def producer_task() -> None:
        await run_in_thread(produce)
        returned.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer_task)
            # Polls so slowly it only returns when the blocked producer wakes it.
            await bridge.wait_for_events(NEVER)
            assert bridge.statistics().blocked_producers == 1
            assert not returned.is_set()
            assert bridge.drain() == [[0, 1, 2]]  # makes room and notifies the producer
            await returned.wait()
    assert bridge.drain() == [[3]]
    stats = bridge.statistics()
    assert stats.dropped_events == {}
    assert stats.blocked_producers == 0
    assert_counts_exact(bridge, 4)


async def test_close_releases_a_blocked_producer() -> None:
    """Closing the bridge makes a blocked producer give up at once with reason 'closed'."""
    bridge = ThreadBridge(max_events=1, policy="block", block_timeout_seconds=NEVER, wake_threshold=100)
    bridge.attach()

    def produce() -> None:
        bridge.emit(0)
        bridge.emit(1)  # blocks: only close() can release it within the test's timeout

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_in_thread, produce)
            await bridge.wait_for_events(NEVER)  # the blocked producer wakes us
            bridge.close()
    assert bridge.statistics().dropped_events == {"closed": 1}
    assert_counts_exact(bridge, 2)


async def test_block_on_the_loop_thread_drops_instead_of_deadlocking() -> None:
    """A block-policy emit from the loop's own thread on a full bridge drops with 'full_on_loop_thread'."""
    bridge = ThreadBridge(max_events=1, policy="block", block_timeout_seconds=NEVER)
    bridge.attach()
    bridge.emit(0)
    bridge.emit(1)  # would wait forever for the loop it is blocking
    assert bridge.statistics().dropped_events == {"full_on_loop_thread": 1}
    assert_counts_exact(bridge, 2)


async def test_an_idle_consumer_is_woken_by_the_first_event() -> None:
    """A consumer that stopped polling is woken by the producer's next emit, with no poll to rescue it."""
    bridge = ThreadBridge(max_events=100)
    bridge.attach()
    # Goes idle after a single empty poll; its poll interval never elapses in the test.
    consumer = Consumer(bridge, poll_interval=NEVER, idle_after_polls=1)

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.run)
            for event in ("first", "second"):
                await anyio.wait_all_tasks_blocked()  # the consumer sleeps, idle
                assert event not in consumer.events
                changed = consumer.changed
                await run_in_thread(lambda event=event: bridge.emit(event))
                await changed.wait()
                assert consumer.events[-1] == event
            bridge.close()
    assert consumer.events == ["first", "second"]


async def test_flush_from_a_thread_times_out_when_nothing_drains() -> None:
    """flush(timeout) from a thread returns False when the loop never takes the request."""
    bridge = ThreadBridge()
    bridge.attach()  # attached, but no consumer runs
    bridge.emit(1)
    assert await run_in_thread(lambda: bridge.flush(timeout=0.05)) is False


async def test_flush_after_detach_returns_false() -> None:
    """Once the loop has detached, flush() returns False at once."""
    bridge = ThreadBridge()
    bridge.attach()
    bridge.detach()
    assert await run_in_thread(lambda: bridge.flush(timeout=NEVER)) is False


# -- byte bounds -------------------------------------------------------------------------------------


def heavy(n: int, size: int = 100_000) -> StatePatch:
    """A state patch that weighs about ``size`` bytes, numbered ``n``."""
    return StatePatch("r", 1.0, {"n": n, "blob": "x" * size})


def metric(n: int) -> Metric:
    return Metric("r", 1.0, {"n": float(n)})


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        pytest.param(OverflowPolicy.DROP_NEWEST, [0, 1, 2], id="drop_newest"),
        pytest.param(OverflowPolicy.DROP_OLDEST, [7, 8, 9], id="drop_oldest"),
    ],
)
def test_heavy_events_meet_the_byte_bound_first_and_the_policy_decides(policy: OverflowPolicy, kept: list[int]) -> None:
    """Events of ~100 KB against a 350 KB bound: three are held, the policy picks which, the rest are counted."""
    bridge = ThreadBridge(max_events=1_000, policy=policy, max_bytes=350_000)
    bridge.emit_many([heavy(n) for n in range(10)])
    stats = bridge.statistics()
    assert stats.buffered_events == 3 and stats.buffered_bytes <= stats.max_bytes == 350_000
    assert stats.dropped_events == {"overflow": 7}
    events = [event for segment in bridge.drain() for event in segment]  # type: ignore[union-attr]
    assert [event.patch["n"] for event in events] == kept
    assert bridge.statistics().buffered_bytes == 0
    assert_counts_exact(bridge, 10)


def test_metrics_share_the_byte_bound_with_heavy_events_without_a_look_inside() -> None:
    """A metric counts METRIC_NBYTES: fewer fit beside a heavy event, and all fit again once it is drained."""
    bound = 64 * METRIC_NBYTES
    bridge = ThreadBridge(max_events=1_000, policy="drop_newest", max_bytes=bound)
    bridge.emit(heavy(0, 20_000))
    bridge.emit_many([metric(n) for n in range(100)])
    room = bound - event_nbytes(heavy(0, 20_000))
    assert bridge.statistics().buffered_events == 1 + room // METRIC_NBYTES
    first = bridge.drain()
    assert sum(len(segment) for segment in first) == 1 + room // METRIC_NBYTES  # type: ignore[arg-type]
    assert first[0].nbytes == bound - room % METRIC_NBYTES  # type: ignore[union-attr]  # weighed once, at the drain
    bridge.emit_many([metric(n) for n in range(100)])
    assert bridge.statistics().buffered_events == 64
    assert_counts_exact(bridge, 200 + 1)


def test_a_heavy_event_larger_than_the_bound_passes_an_empty_bridge() -> None:
    """An event heavier than max_bytes is taken when nothing is queued (alone it could never fit)."""
    bridge = ThreadBridge(max_events=10, policy="drop_newest", max_bytes=64 << 10)
    bridge.emit(heavy(0))
    bridge.emit(heavy(1))
    bridge.emit(metric(0))
    assert bridge.statistics().buffered_events == 1 and bridge.statistics().dropped_events == {"overflow": 2}


async def test_a_block_producer_waits_for_bytes_then_sheds_once_per_stall() -> None:
    """A block producer facing a byte-full bridge waits block_timeout_seconds once, then drops at once."""
    bridge = ThreadBridge(max_events=1_000, policy="block", block_timeout_seconds=0.2, max_bytes=250_000)
    bridge.attach()

    def produce() -> float:
        started = time.monotonic()
        bridge.emit_many([heavy(n) for n in range(10)])
        return time.monotonic() - started

    waited = await run_in_thread(produce)
    stats = bridge.statistics()
    assert stats.buffered_events == 2 and stats.dropped_events == {"block_timeout": 8}
    assert 0.2 <= waited < 5
    bridge.close()
