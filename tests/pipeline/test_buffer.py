"""Tests for runwatch.pipeline.buffer: bounds, overflow policies, markers, exact counters."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from runwatch.events import METRIC_NBYTES, Metric, StatePatch, event_nbytes
from runwatch.pipeline.buffer import EventBuffer, FlushMarker, OverflowPolicy

# Guards every await that could hang; nothing here legitimately takes this long.
TIMEOUT = 5


def assert_counts_exact(buffer: EventBuffer) -> None:
    """received == delivered + buffered + sum(dropped), and the length agrees."""
    stats = buffer.statistics()
    assert stats.received_events == (
        stats.delivered_events + stats.buffered_events + sum(stats.dropped_events.values())
    ), stats
    assert len(buffer) == stats.buffered_events


def drain_nowait(buffer: EventBuffer, max_events: int | None = None) -> list[Any]:
    """Every item currently buffered, batches and markers, in order."""
    items: list[Any] = []
    while (item := buffer.get_nowait(max_events)) is not None:
        items.append(item)
    return items


def events_of(items: list[Any]) -> list[Any]:
    """The events in a list of items, markers left out."""
    return [event for item in items if isinstance(item, list) for event in item]


# -- construction --------------------------------------------------------------------


def test_bound_must_be_positive() -> None:
    """A buffer needs room for at least one event."""
    with pytest.raises(ValueError, match="max_events"):
        EventBuffer(0)


def test_policy_accepts_strings_and_rejects_unknown_names() -> None:
    """The policy may be given by name; an unknown name is a ValueError."""
    assert EventBuffer(1, "drop_oldest").policy is OverflowPolicy.DROP_OLDEST
    with pytest.raises(ValueError):
        EventBuffer(1, "drop_everything")


def test_statistics_start_at_zero() -> None:
    """A new buffer reports its bound and policy and no traffic."""
    stats = EventBuffer(7, "drop_newest").statistics()
    assert stats.max_events == 7
    assert stats.policy == "drop_newest"
    assert (stats.buffered_events, stats.received_events, stats.delivered_events) == (0, 0, 0)
    assert stats.dropped_events == {}
    assert stats.waiting_senders == 0


# -- overflow policies (no waiting involved) --------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [pytest.param(p, id=p.value) for p in OverflowPolicy],
)
def test_batches_that_fit_are_delivered_in_order(policy: OverflowPolicy) -> None:
    """Under every policy, events that fit are delivered whole and in order."""
    buffer = EventBuffer(10, policy)
    buffer.put_nowait([1, 2, 3])
    buffer.put_nowait([4, 5])
    buffer.put_nowait([])
    assert events_of(drain_nowait(buffer)) == [1, 2, 3, 4, 5]
    assert buffer.statistics().dropped_events == {}
    assert_counts_exact(buffer)


def test_drop_newest_keeps_the_oldest_events() -> None:
    """drop_newest keeps what is buffered and drops the part of a batch that does not fit."""
    buffer = EventBuffer(5, OverflowPolicy.DROP_NEWEST)
    buffer.put_nowait([1, 2, 3])
    buffer.put_nowait([4, 5, 6, 7])
    buffer.put_nowait([8])
    assert_counts_exact(buffer)
    assert buffer.statistics().dropped_events == {"overflow": 3}
    assert events_of(drain_nowait(buffer)) == [1, 2, 3, 4, 5]
    assert_counts_exact(buffer)


def test_drop_oldest_keeps_the_newest_events() -> None:
    """drop_oldest discards the oldest buffered events to make room for new ones."""
    buffer = EventBuffer(5, OverflowPolicy.DROP_OLDEST)
    buffer.put_nowait([1, 2, 3])
    buffer.put_nowait([4, 5, 6, 7])
    buffer.put_nowait([8])
    assert_counts_exact(buffer)
    assert buffer.statistics().dropped_events == {"overflow": 3}
    assert events_of(drain_nowait(buffer)) == [4, 5, 6, 7, 8]
    assert_counts_exact(buffer)


def test_block_policy_put_nowait_drops_what_does_not_fit_as_full() -> None:
    """With the block policy, the non-waiting put drops the overflow with reason 'full'."""
    buffer = EventBuffer(3, OverflowPolicy.BLOCK)
    buffer.put_nowait([1, 2])
    buffer.put_nowait([3, 4, 5])
    buffer.put_nowait([6])
    assert buffer.statistics().dropped_events == {"full": 3}
    assert events_of(drain_nowait(buffer)) == [1, 2, 3]
    assert_counts_exact(buffer)


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        pytest.param(OverflowPolicy.DROP_NEWEST, [0, 1, 2, 3], id="drop_newest"),
        pytest.param(OverflowPolicy.DROP_OLDEST, [6, 7, 8, 9], id="drop_oldest"),
        pytest.param(OverflowPolicy.BLOCK, [0, 1, 2, 3], id="block-nowait"),
    ],
)
def test_batch_larger_than_the_bound_without_waiting(policy: OverflowPolicy, kept: list[int]) -> None:
    """A single batch larger than the whole bound keeps max_events events and counts the rest."""
    buffer = EventBuffer(4, policy)
    buffer.put_nowait(list(range(10)))
    assert len(buffer) == 4
    assert sum(buffer.statistics().dropped_events.values()) == 6
    assert events_of(drain_nowait(buffer)) == kept
    assert_counts_exact(buffer)


def test_drop_oldest_with_a_batch_larger_than_the_bound_drops_everything_older() -> None:
    """drop_oldest with an oversized batch drops all buffered events and the batch's head."""
    buffer = EventBuffer(4, OverflowPolicy.DROP_OLDEST)
    buffer.put_nowait(["a", "b"])
    buffer.put_nowait(list(range(6)))
    assert buffer.statistics().dropped_events == {"overflow": 4}
    assert events_of(drain_nowait(buffer)) == [2, 3, 4, 5]
    assert_counts_exact(buffer)


def test_drop_oldest_splits_a_buffered_batch() -> None:
    """drop_oldest drops only as many events of the oldest batch as needed."""
    buffer = EventBuffer(4, OverflowPolicy.DROP_OLDEST)
    buffer.put_nowait([1, 2, 3, 4])
    buffer.put_nowait([5])
    assert buffer.statistics().dropped_events == {"overflow": 1}
    assert events_of(drain_nowait(buffer)) == [2, 3, 4, 5]
    assert_counts_exact(buffer)


@pytest.mark.parametrize("policy", [pytest.param(p, id=p.value) for p in OverflowPolicy])
def test_counts_stay_exact_over_a_long_mixed_run(policy: OverflowPolicy) -> None:
    """Over many puts and gets of assorted sizes, every event is counted exactly once."""
    buffer = EventBuffer(7, policy)
    delivered: list[int] = []
    sent = 0
    for round_ in range(200):
        size = (round_ * 5) % 11
        buffer.put_nowait(list(range(sent, sent + size)))
        sent += size
        assert_counts_exact(buffer)
        if round_ % 3 == 0:
            item = buffer.get_nowait(max_events=4)
            if isinstance(item, list):
                delivered.extend(item)
            assert_counts_exact(buffer)
    delivered.extend(events_of(drain_nowait(buffer)))
    stats = buffer.statistics()
    assert stats.received_events == sent
    assert stats.delivered_events == len(delivered)
    assert len(delivered) + sum(stats.dropped_events.values()) == sent
    assert delivered == sorted(delivered), "events keep their order"
    assert len(set(delivered)) == len(delivered), "no event is delivered twice"


# -- markers -------------------------------------------------------------------------------


def test_flush_marker_callback_runs_after_expected_acknowledgements() -> None:
    """A marker calls back once, when the last expected acknowledgement arrives."""
    calls: list[str] = []
    marker = FlushMarker(2, lambda: calls.append("done"))
    marker.acknowledge()
    assert calls == []
    marker.acknowledge()
    assert calls == ["done"]


def test_flush_marker_expecting_nobody_calls_back_at_once() -> None:
    """A marker with no sink paths behind it completes at construction."""
    calls: list[str] = []
    FlushMarker(0, lambda: calls.append("done"))
    assert calls == ["done"]


@pytest.mark.parametrize("policy", [pytest.param(p, id=p.value) for p in OverflowPolicy])
def test_markers_are_never_dropped_and_never_counted(policy: OverflowPolicy) -> None:
    """A marker survives any overflow, keeps its place, and is not an event in the counters."""
    buffer = EventBuffer(2, policy)
    first, second = FlushMarker(1, lambda: None), FlushMarker(1, lambda: None)
    buffer.put_marker(first)
    buffer.put_nowait([1, 2])
    buffer.put_marker(second)
    buffer.put_nowait([3, 4, 5])  # full: some events are dropped, markers must stay
    stats = buffer.statistics()
    assert stats.received_events == 5
    assert stats.buffered_events == 2
    assert_counts_exact(buffer)
    items = drain_nowait(buffer)
    markers = [item for item in items if isinstance(item, FlushMarker)]
    assert markers == [first, second]
    assert items[0] is first
    if policy is OverflowPolicy.DROP_OLDEST:
        assert items[1:] == [second, [4, 5]]
    else:
        assert items[1:] == [[1, 2], second]
    assert buffer.statistics().delivered_events == 2


def test_drop_all_keeps_markers_and_counts_events() -> None:
    """drop_all discards every buffered event with the reason given and keeps markers."""
    buffer = EventBuffer(10)
    marker = FlushMarker(1, lambda: None)
    buffer.put_nowait([1, 2])
    buffer.put_marker(marker)
    buffer.put_nowait([3])
    buffer.drop_all("shutdown_timeout")
    assert buffer.statistics().dropped_events == {"shutdown_timeout": 3}
    assert drain_nowait(buffer) == [marker]
    assert_counts_exact(buffer)


# -- joining batches on get -----------------------------------------------------------------


def test_get_joins_batches_up_to_max_events() -> None:
    """Consecutive small batches come out joined, never past max_events."""
    buffer = EventBuffer(100)
    for start in range(0, 10, 2):
        buffer.put_nowait([start, start + 1])
    assert drain_nowait(buffer, max_events=5) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert_counts_exact(buffer)


def test_get_joins_up_to_the_bound_by_default() -> None:
    """Without max_events, get joins everything buffered (it all fits the bound)."""
    buffer = EventBuffer(6)
    for event in range(6):
        buffer.put_nowait([event])
    assert drain_nowait(buffer) == [[0, 1, 2, 3, 4, 5]]


def test_get_never_joins_across_a_marker() -> None:
    """Batches on either side of a marker come out separately, with the marker between."""
    buffer = EventBuffer(100)
    marker = FlushMarker(1, lambda: None)
    buffer.put_nowait([1])
    buffer.put_nowait([2])
    buffer.put_marker(marker)
    buffer.put_nowait([3])
    buffer.put_nowait([4])
    assert drain_nowait(buffer) == [[1, 2], marker, [3, 4]]


def test_joining_does_not_mutate_shared_batches() -> None:
    """A batch fanned out to two buffers is not modified when one buffer joins it."""
    shared = [1, 2]
    left, right = EventBuffer(10), EventBuffer(10)
    for buffer in (left, right):
        buffer.put_nowait(shared)
        buffer.put_nowait([3])
    assert left.get_nowait() == [1, 2, 3]
    assert shared == [1, 2]
    assert right.get_nowait() == [1, 2, 3]


def test_get_nowait_on_an_empty_buffer_returns_none() -> None:
    """get_nowait returns None when nothing is buffered."""
    assert EventBuffer(3).get_nowait() is None


# -- waiting: get, close --------------------------------------------------------------------------


async def test_get_waits_for_the_first_batch() -> None:
    """A consumer waiting on an empty buffer wakes when a batch arrives."""
    buffer = EventBuffer(10)
    received: list[Any] = []
    got = anyio.Event()

    async def consume() -> None:
        received.append(await buffer.get())
        got.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert received == []
            buffer.put_nowait(["a"])
            await got.wait()
    assert received == [["a"]]


async def test_close_delivers_what_is_buffered_then_end_of_stream() -> None:
    """After close, get drains the buffered items in order, then raises EndOfStream."""
    buffer = EventBuffer(10)
    marker = FlushMarker(1, lambda: None)
    buffer.put_nowait([1])
    buffer.put_marker(marker)
    buffer.put_nowait([2])
    buffer.close()
    assert buffer.closed
    with anyio.fail_after(TIMEOUT):
        assert await buffer.get() == [1]
        assert await buffer.get() is marker
        assert await buffer.get() == [2]
        with pytest.raises(anyio.EndOfStream):
            await buffer.get()
        with pytest.raises(anyio.EndOfStream):
            await buffer.get()


async def test_close_wakes_a_waiting_consumer_with_end_of_stream() -> None:
    """A consumer blocked in get on an empty buffer gets EndOfStream when it is closed."""
    buffer = EventBuffer(10)
    outcome: list[str] = []

    async def consume() -> None:
        try:
            await buffer.get()
        except anyio.EndOfStream:
            outcome.append("end")

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            buffer.close()
    assert outcome == ["end"]


@pytest.mark.parametrize("policy", [pytest.param(p, id=p.value) for p in OverflowPolicy])
async def test_put_after_close_is_counted_as_closed(policy: OverflowPolicy) -> None:
    """Batches put after close are dropped with reason 'closed' and counted."""
    buffer = EventBuffer(10, policy)
    buffer.close()
    with anyio.fail_after(TIMEOUT):
        await buffer.put([1, 2])
    buffer.put_nowait([3])
    assert buffer.statistics().dropped_events == {"closed": 3}
    assert_counts_exact(buffer)


# -- waiting: the block policy -------------------------------------------------------------------------


async def test_block_waits_until_space_then_proceeds() -> None:
    """A block-policy sender waits while the buffer is full and completes once there is room."""
    buffer = EventBuffer(3, OverflowPolicy.BLOCK)
    done = anyio.Event()

    async def produce() -> None:
        await buffer.put([4, 5])
        done.set()

    with anyio.fail_after(TIMEOUT):
        await buffer.put([1, 2, 3])
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            assert buffer.statistics().waiting_senders == 1
            assert await buffer.get() == [1, 2, 3]
            await done.wait()
        assert buffer.statistics().waiting_senders == 0
        assert await buffer.get() == [4, 5]
    assert buffer.statistics().dropped_events == {}
    assert_counts_exact(buffer)


async def test_block_takes_a_batch_larger_than_the_bound_in_parts() -> None:
    """With block, a batch larger than the bound goes in bound-sized parts as the consumer drains."""
    buffer = EventBuffer(3, OverflowPolicy.BLOCK)
    received: list[list[int]] = []

    async def produce() -> None:
        await buffer.put(list(range(8)))
        buffer.close()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            while True:
                try:
                    item = await buffer.get()
                except anyio.EndOfStream:
                    break
                assert isinstance(item, list)
                assert len(item) <= 3
                received.append(item)
    assert [event for batch in received for event in batch] == list(range(8))
    assert buffer.statistics().dropped_events == {}
    assert_counts_exact(buffer)


async def test_close_releases_a_blocked_sender_and_counts_the_rest_as_closed() -> None:
    """Closing a full block-policy buffer wakes its sender, whose remaining events count as 'closed'."""
    buffer = EventBuffer(2, OverflowPolicy.BLOCK)
    returned = anyio.Event()

    async def produce() -> None:
        await buffer.put([1, 2, 3, 4, 5])
        returned.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            assert buffer.statistics().waiting_senders == 1
            buffer.close()
            await returned.wait()
    assert buffer.statistics().dropped_events == {"closed": 3}
    assert_counts_exact(buffer)
    with anyio.fail_after(TIMEOUT):
        assert await buffer.get() == [1, 2]


async def test_drop_all_releases_a_blocked_sender() -> None:
    """drop_all makes room, so a block-policy sender waiting for space proceeds."""
    buffer = EventBuffer(2, OverflowPolicy.BLOCK)
    buffer.put_nowait([1, 2])
    done = anyio.Event()

    async def produce() -> None:
        await buffer.put([3])
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            await anyio.wait_all_tasks_blocked()
            buffer.drop_all("shutdown_timeout")
            await done.wait()
    assert buffer.statistics().dropped_events == {"shutdown_timeout": 2}
    assert drain_nowait(buffer) == [[3]]
    assert_counts_exact(buffer)


async def test_several_blocked_senders_all_get_through_in_turn() -> None:
    """Several senders waiting on a full buffer all complete, with nothing lost."""
    buffer = EventBuffer(2, OverflowPolicy.BLOCK)
    received: list[int] = []

    async def produce(base: int) -> None:
        await buffer.put([base, base + 1, base + 2])

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as producers:
            for base in (0, 10, 20):
                producers.start_soon(produce, base)
            while len(received) < 9:
                item = await buffer.get()
                assert isinstance(item, list)
                received.extend(item)
    assert sorted(received) == [0, 1, 2, 10, 11, 12, 20, 21, 22]
    assert buffer.statistics().dropped_events == {}
    assert_counts_exact(buffer)


async def test_a_cancelled_blocked_sender_keeps_the_counts_exact() -> None:
    """A block-policy put cancelled while waiting counts its unsent events as dropped."""
    buffer = EventBuffer(2, OverflowPolicy.BLOCK)
    with anyio.fail_after(TIMEOUT):
        with anyio.move_on_after(0) as scope:  # cancelled at its first wait
            await buffer.put([1, 2, 3, 4, 5])
    assert scope.cancelled_caught
    assert len(buffer) == 2
    assert_counts_exact(buffer)


# -- byte bounds ---------------------------------------------------------------------


def big(n: int, size: int = 100_000) -> Any:
    """A state patch that weighs about ``size`` bytes (a string payload), numbered ``n``."""
    return StatePatch("r", 1.0, {"n": n, "blob": "x" * size})


def test_drop_newest_stops_at_the_byte_bound_and_counts_the_rest() -> None:
    """Large events fill the byte bound long before the event bound; what does not fit is dropped (overflow)."""
    buffer = EventBuffer(10_000, "drop_newest", max_bytes=350_000)
    buffer.put_nowait([big(n) for n in range(10)])
    stats = buffer.statistics()
    assert stats.buffered_events == 3 and stats.dropped_events == {"overflow": 7}
    assert stats.buffered_bytes == sum(event_nbytes(event) for event in events_of(drain_nowait(buffer)[:1]))
    assert stats.buffered_bytes <= stats.max_bytes == 350_000
    assert_counts_exact(buffer)


def test_drop_oldest_drops_as_many_old_events_as_the_new_ones_weigh() -> None:
    """A heavy batch pushes out the oldest events until it fits the byte bound; the newest are kept."""
    metrics = [Metric("r", 1.0, {"x": float(n)}) for n in range(100)]
    heavy = [big(0), big(1)]
    bound = sum(map(event_nbytes, metrics + heavy)) - 2 * METRIC_NBYTES - 1  # three metrics too many
    buffer = EventBuffer(10_000, "drop_oldest", max_bytes=bound)
    buffer.put_nowait(metrics)
    buffer.put_nowait(heavy)
    assert events_of(drain_nowait(buffer)) == metrics[3:] + heavy
    assert buffer.statistics().dropped_events == {"overflow": 3}
    assert_counts_exact(buffer)


def test_an_event_larger_than_the_byte_bound_passes_an_empty_buffer_alone() -> None:
    """An event heavier than the whole byte bound goes in when the buffer is empty (it could never fit otherwise)."""
    buffer = EventBuffer(100, "drop_newest", max_bytes=64 << 10)
    buffer.put_nowait([big(0, 200_000)])
    buffer.put_nowait([big(1, 200_000)])
    assert events_of(drain_nowait(buffer)) == [big(0, 200_000)]
    assert buffer.statistics().dropped_events == {"overflow": 1}


async def test_block_waits_for_bytes_and_takes_a_heavy_batch_in_parts() -> None:
    """With block, a batch heavier than the byte bound goes in parts that fit; each part waits for room."""
    buffer = EventBuffer(10_000, "block", max_bytes=250_000)
    batch = [big(n) for n in range(5)]
    received: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(buffer.put, batch)
            while len(received) < 5:
                await anyio.wait_all_tasks_blocked()
                assert buffer.statistics().buffered_bytes <= 250_000
                item = await buffer.get()
                assert isinstance(item, list)
                received.extend(item)
    assert received == batch
    assert buffer.statistics().dropped_events == {}
    assert_counts_exact(buffer)


def test_the_byte_bound_must_be_positive() -> None:
    """A byte bound below 1 is refused."""
    with pytest.raises(ValueError, match="max_bytes"):
        EventBuffer(10, max_bytes=0)
