"""Tests of runwatch.sinks.notify.outbox: ordered, bounded webhook deliveries with backoff (pure)."""

from __future__ import annotations

import pytest

from runwatch.sinks.notify import AlertGroup, Delivery, Outbox


def delivery(group: str = "g") -> Delivery:
    """A delivery for a group named after a rule."""
    return Delivery(AlertGroup(group, "r1", ()), b"{}")


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [
        pytest.param(1, 0.5, id="first"),
        pytest.param(2, 1.0, id="doubles"),
        pytest.param(4, 4.0, id="doubles-again"),
        pytest.param(7, 10.0, id="capped"),
        pytest.param(500, 10.0, id="huge-attempts-capped"),
    ],
)
def test_backoff_doubles_up_to_its_cap(attempts: int, seconds: float) -> None:
    """The wait after the n-th failure is initial × 2^(n-1), capped at backoff_max_seconds."""
    outbox = Outbox(backoff_initial_seconds=0.5, backoff_max_seconds=10.0)

    assert outbox.backoff_seconds(attempts) == seconds


def test_a_failed_delivery_is_retried_after_its_backoff_then_dropped_when_retries_run_out() -> None:
    """Each retryable failure reschedules; past max_retries the delivery is dropped as retries_exhausted."""
    outbox = Outbox(max_retries=2, backoff_initial_seconds=1.0, backoff_max_seconds=60.0)
    outbox.put(delivery(), 0.0)
    [d] = outbox.take_due(0.0, 10)
    assert outbox.failed(d, 0.0, retryable=True) is None

    assert outbox.take_due(0.9, 10) == []
    assert outbox.take_due(1.0, 10) == [d]
    assert outbox.failed(d, 1.0, retryable=True) is None
    assert outbox.take_due(3.0, 10) == [d]
    assert outbox.failed(d, 3.0, retryable=True) == "retries_exhausted"
    assert len(outbox) == 0


def test_a_non_retryable_failure_is_dropped_at_once_with_its_reason() -> None:
    """retryable=False drops the delivery with the reason given."""
    outbox = Outbox()
    outbox.put(delivery(), 0.0)
    [d] = outbox.take_due(0.0, 1)

    assert outbox.failed(d, 0.0, retryable=False, reason="rejected") == "rejected"
    assert len(outbox) == 0


def test_deliveries_of_one_group_leave_in_order_and_other_groups_are_not_held_up() -> None:
    """A group's second delivery waits for its first; another group's delivery goes meanwhile."""
    outbox = Outbox(backoff_initial_seconds=5.0)
    first, second, other = delivery("a"), delivery("a"), delivery("b")
    for d in (first, second, other):
        outbox.put(d, 0.0)

    assert outbox.take_due(0.0, 10) == [first, other]
    outbox.failed(first, 0.0, retryable=True)
    outbox.succeeded(other)
    assert outbox.take_due(1.0, 10) == []
    assert outbox.take_due(5.0, 10) == [first]
    outbox.succeeded(first)
    assert outbox.take_due(5.0, 10) == [second]


def test_take_due_respects_its_limit() -> None:
    """At most ``limit`` deliveries are put in flight at once."""
    outbox = Outbox()
    for name in "abcde":
        outbox.put(delivery(name), 0.0)

    assert len(outbox.take_due(0.0, 3)) == 3
    assert outbox.in_flight == 3
    assert len(outbox.take_due(0.0, 3)) == 2


def test_a_full_outbox_drops_its_oldest_waiting_delivery() -> None:
    """When full, the oldest delivery not in flight makes room; if all are in flight the new one is dropped."""
    outbox = Outbox(max_notifications=2)
    a, b, c, d = delivery("a"), delivery("b"), delivery("c"), delivery("d")
    outbox.put(a, 0.0)
    outbox.put(b, 0.0)
    outbox.take_due(0.0, 1)  # a is in flight

    assert outbox.put(c, 0.0) is b
    outbox.take_due(0.0, 5)  # c too
    assert outbox.put(d, 0.0) is d
    assert len(outbox) == 2
