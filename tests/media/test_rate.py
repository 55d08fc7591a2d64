"""The per-key rate limit (a token bucket, time passed in)."""

from __future__ import annotations

import pytest

from runwatch.media.rate import RateLimiter


def test_a_call_rate_at_the_limit_is_never_refused() -> None:
    """60 calls a second with jitter, under a limit of 60 a second: all pass."""
    limiter = RateLimiter(60)
    times = [i / 60 + (0.004 if i % 2 else -0.004) for i in range(600)]
    assert all(limiter.allow("frame", max(now, 0.0)) for now in times)


def test_a_faster_rate_is_thinned_to_the_limit() -> None:
    """240 calls a second for 10 s under a limit of 30: about 30 a second pass (plus the first burst)."""
    limiter = RateLimiter(30)
    allowed = sum(limiter.allow("frame", i / 240) for i in range(2400))
    assert 300 <= allowed <= 300 + 30 + 1


def test_keys_have_their_own_buckets() -> None:
    """A key that used up its bucket does not hold back another."""
    limiter = RateLimiter(1)
    assert limiter.allow("a", 0.0) and not limiter.allow("a", 0.1)
    assert limiter.allow("b", 0.1)


def test_many_keys_stay_bounded() -> None:
    """Past the key bound the oldest buckets are forgotten; the limiter keeps working."""
    limiter = RateLimiter(1)
    for key in range(10_000):
        assert limiter.allow(key, float(key))
    assert len(limiter._buckets) <= 4096


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_the_rate_must_be_positive(rate: float) -> None:
    """A rate that is not positive is a ValueError."""
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(rate)
