"""The signal state alert conditions keep between evaluations: sliding windows and counters (pure: no I/O).

- :class:`MeanWindow` — the finite values of the last ``span`` seconds and their sum
  (a threshold rule's ``for_window_seconds`` mean);
- :class:`Patience` — a stagnation rule's best value and the calls and time since it improved;
- :class:`ZWindow` — an anomaly rule's last N values with shifted running sums, and :func:`z_score`.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections import deque
from typing import Any

__all__ = ["MeanWindow", "Patience", "ZWindow", "z_score"]


class MeanWindow:
    """Finite values within ``span`` seconds of the newest, and their sum.

    Values are kept as one chunk per evaluation: whole chunks leave in O(1)
    and the oldest one is trimmed by bisecting its sorted timestamps, so
    adding and evicting does no per-value work in Python.
    """

    __slots__ = ("chunks", "count", "evicted", "limit", "newest", "span", "total")

    def __init__(self, span: float, limit: int) -> None:
        self.span = span
        self.limit = limit
        self.chunks: deque[list[Any]] = deque()  # [times, values, first kept index, sum of the kept values]
        self.count = 0
        self.total = 0.0
        self.newest = -math.inf
        self.evicted = 0

    def add(self, times: list[float], values: list[float]) -> None:
        if values:
            if times != sorted(times):  # out-of-order events: sort the chunk by event time
                pairs = sorted(zip(times, values, strict=True), key=operator.itemgetter(0))
                times, values = [t for t, _ in pairs], [v for _, v in pairs]
            chunk_sum = math.fsum(values)
            self.chunks.append([times, values, 0, chunk_sum])
            self.count += len(values)
            self.total += chunk_sum
            self.newest = max(self.newest, times[-1])
        cutoff = self.newest - self.span
        chunks = self.chunks
        while chunks:
            chunk = chunks[0]
            chunk_times, chunk_values, start, chunk_sum = chunk
            kept = len(chunk_values) - start
            drop = max(bisect_left(chunk_times, cutoff, start) - start, self.count - self.limit)
            if drop <= 0:
                break
            if drop >= kept:
                chunks.popleft()
                self.count -= kept
                self.total -= chunk_sum
                self.evicted += 1
                continue
            chunk[2] = start + drop
            chunk[3] = math.fsum(chunk_values[start + drop :])
            self.count -= drop
            self.total -= chunk_sum - chunk[3]
            break
        if self.evicted > len(chunks) + 64:  # bound the running sum's rounding drift
            self.total = math.fsum(chunk[3] for chunk in chunks)
            self.evicted = 0

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Patience:
    """Stagnation counters: the best value, and calls/time since it improved."""

    __slots__ = ("best", "calls", "since")

    def __init__(self, best: float, calls: int = 0, since: float | None = None) -> None:
        self.best = best
        self.calls = calls
        self.since = since  # event time of the last improvement (or of the first value)


class ZWindow:
    """The last N finite values with shifted running sums (for mean and variance)."""

    __slots__ = ("pushes", "shift", "sum", "sum_squares", "values")

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.shift = 0.0
        self.sum = 0.0  # of (value - shift): shifting by about the mean keeps the variance accurate
        self.sum_squares = 0.0
        self.pushes = 0

    def recompute(self) -> None:
        """Exact sums again, shifted by the current mean (bounds the running sums' drift)."""
        values = self.values
        self.shift = math.fsum(values) / len(values) if values else 0.0
        deviations = [v - self.shift for v in values]
        self.sum = math.fsum(deviations)
        self.sum_squares = math.fsum(map(operator.mul, deviations, deviations))
        self.pushes = 0


def z_score(deviation: float, variance: float) -> float:
    """How many standard deviations ``deviation`` is (±inf for a change of a constant window)."""
    if variance > 0.0:
        return deviation / math.sqrt(variance)
    return 0.0 if deviation == 0.0 else math.copysign(math.inf, deviation)
