"""A rate limit per key (a token bucket each), with time passed in (pure)."""

from __future__ import annotations

from typing import Final

__all__ = ["RateLimiter"]

# Keys remembered at most; past it the least recently refilled half is forgotten (they start full again).
_MAX_KEYS: Final = 4096


class RateLimiter:
    """Allows ``rate_per_second`` events per key on average, in bursts of up to one second's worth.

    A loop that calls at the allowed rate with some jitter is never refused;
    a faster one is thinned to the rate. Each key starts with a full bucket.

    Args:
        rate_per_second: the sustained rate per key (> 0).
    """

    __slots__ = ("_buckets", "burst", "rate_per_second")

    def __init__(self, rate_per_second: float) -> None:
        if not rate_per_second > 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second!r}")
        self.rate_per_second = float(rate_per_second)
        self.burst = max(1.0, self.rate_per_second)
        self._buckets: dict[object, tuple[float, float]] = {}  # key → (tokens, at)

    def allow(self, key: object, now: float) -> bool:
        """Whether an event of ``key`` at ``now`` (seconds, monotonic) is within the rate; takes a token if so."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _MAX_KEYS:
                self._forget_oldest()
            tokens = self.burst
        else:
            tokens, at = bucket
            tokens = min(self.burst, tokens + (now - at) * self.rate_per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _forget_oldest(self) -> None:
        by_age = sorted(self._buckets.items(), key=lambda item: item[1][1])
        for key, _ in by_age[: len(by_age) // 2]:
            del self._buckets[key]
