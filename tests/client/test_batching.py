"""Tests of runwatch.client._batching: batch planning, backoff and status decisions (pure)."""

from __future__ import annotations

import json

import pytest

from runwatch.client import (
    backoff_delay,
    is_bisectable,
    is_retryable,
    plan_batches,
)


def test_plan_batches_groups_by_session_in_call_order_and_bounds_count() -> None:
    """Calls are grouped per session in order, at most max_operations per batch, each with a new id."""
    calls = [("a", {"i": 0}), ("b", {"i": 1}), ("a", {"i": 2}), ("a", {"i": 3}), ("a", {"i": 4})]
    ids = iter(range(100))
    batches, too_large = plan_batches(calls, max_operations=2, max_bytes=10_000, new_batch_id=lambda: f"id{next(ids)}")
    assert [(b.session_id, [op["i"] for op in b.operations]) for b in batches] == [
        ("a", [0, 2]),
        ("a", [3, 4]),
        ("b", [1]),
    ]
    assert len({b.batch_id for b in batches}) == 3
    assert json.loads(batches[0].body) == {"batch_id": batches[0].batch_id, "operations": [{"i": 0}, {"i": 2}]}
    assert too_large == []


def test_plan_batches_splits_by_bytes_and_sets_aside_single_operations_too_large() -> None:
    """A batch over max_bytes is halved until it fits; one operation over the limit is set aside."""
    calls = [("a", {"x": "y" * 100}) for _ in range(8)] + [("a", {"x": "z" * 1000})]
    counter = iter(range(1000))
    batches, too_large = plan_batches(calls, max_operations=100, max_bytes=400, new_batch_id=lambda: str(next(counter)))
    assert all(len(b.body) <= 400 for b in batches)
    assert sum(len(b.operations) for b in batches) == 8
    assert too_large == [{"x": "z" * 1000}]


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    """Retry delays double from the base, stop at the cap, and jitter spreads them over [half, full]."""
    full = [backoff_delay(n, base_seconds=0.1, max_seconds=1.0, jitter=0.999999) for n in range(6)]
    assert full == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5)
    assert backoff_delay(3, base_seconds=0.1, max_seconds=1.0, jitter=0.0) == pytest.approx(0.4)
    assert backoff_delay(10_000, base_seconds=0.1, max_seconds=30.0, jitter=0.0) == 15.0


@pytest.mark.parametrize(
    ("status", "retry", "bisect"),
    [
        pytest.param(500, True, False, id="500"),
        pytest.param(503, True, False, id="503"),
        pytest.param(429, True, False, id="429"),
        pytest.param(404, False, False, id="404"),
        pytest.param(409, False, False, id="409"),
        pytest.param(401, False, False, id="401"),
        pytest.param(422, False, True, id="422"),
        pytest.param(413, False, True, id="413"),
    ],
)
def test_status_classification(status: int, retry: bool, bisect: bool) -> None:
    """5xx and 429 are retried; 400/413/422 are bisected; other 4xx refuse the batch for good."""
    assert is_retryable(status) is retry
    assert is_bisectable(status) is bisect
