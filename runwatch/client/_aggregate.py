"""Counters as running totals and histograms as bucket counts (pure; time is passed in).

datacat's daemon does not forward counter increments or histogram samples: it keeps
them per series and, at every flush and at the session's end, sends one point per
series with the running total. This module does the same in the application's
process; the client sends :meth:`MetricAggregator.snapshot` every
``aggregate_interval_seconds`` and before a session ends.

* counter — a series per (name, sorted tags); the point is ``{"type": "counter",
  "value": total}``; re-sent unchanged while idle, never reset.
* histogram — a series per (name, sorted tags, bucket bounds); a sample counts in the
  first bucket whose bound is >= the value (the last bucket takes the rest); the point
  is ``{"type": "histogram", "value": mean, "metadata": {"buckets": [{"le", "count"}],
  "count", "sum", ...the first sample's other metadata}}``, with the first sample's
  unit and tags. Counts are per bucket, not cumulative.
"""

from __future__ import annotations

import threading
from typing import Any, Final

__all__ = ["DEFAULT_BUCKETS", "MetricAggregator"]

#: datacat's default histogram bucket bounds (seconds).
DEFAULT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Counter:
    __slots__ = ("name", "tags", "total")

    def __init__(self, name: str, tags: list[str]) -> None:
        self.name = name
        self.tags = tags
        self.total: float = 0  # stays an int while the deltas are ints (sent as 3, not 3.0)


class _Histogram:
    __slots__ = ("bounds", "count", "counts", "metadata", "name", "sum", "tags", "unit")

    def __init__(self, name: str, tags: list[str], bounds: tuple[float, ...], unit: str, metadata: dict[str, Any]):
        self.name = name
        self.tags = tags
        self.bounds = bounds
        self.unit = unit
        self.metadata = metadata
        self.counts = [0] * len(bounds)
        self.count = 0
        self.sum = 0.0

    def add(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds) - 1)
        self.counts[index] += 1
        self.count += 1
        self.sum += value


class MetricAggregator:
    """The counter and histogram series of a client's sessions; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, dict[tuple[Any, ...], _Counter | _Histogram]] = {}

    def add_counter(self, session_id: str, name: str, tags: list[str], delta: float) -> None:
        """Add ``delta`` to the counter ``name`` with ``tags``."""
        key = ("counter", name, tuple(sorted(tags)))
        with self._lock:
            series = self._series.setdefault(session_id, {})
            counter = series.get(key)
            if counter is None:
                counter = series[key] = _Counter(name, sorted(tags))
            assert isinstance(counter, _Counter)
            counter.total += delta

    def add_histogram(
        self,
        session_id: str,
        name: str,
        tags: list[str],
        value: float,
        *,
        bounds: tuple[float, ...],
        unit: str,
        metadata: dict[str, Any],
    ) -> None:
        """Count one sample of the histogram ``name`` (``bounds`` sorted, non-empty)."""
        key = ("histogram", name, tuple(sorted(tags)), bounds)
        with self._lock:
            series = self._series.setdefault(session_id, {})
            histogram = series.get(key)
            if histogram is None:
                histogram = series[key] = _Histogram(name, tags, bounds, unit, metadata)
            assert isinstance(histogram, _Histogram)
            histogram.add(value)

    def sessions(self) -> list[str]:
        """The sessions that have series."""
        with self._lock:
            return list(self._series)

    def snapshot(self, session_id: str, now: float) -> list[dict[str, Any]]:
        """One metric operation per series of the session, stamped ``now`` (epoch seconds)."""
        with self._lock:
            series = list(self._series.get(session_id, {}).values())
            return [_point(item, now) for item in series]

    def forget(self, session_id: str) -> None:
        """Drop a session's series (it ended)."""
        with self._lock:
            self._series.pop(session_id, None)


def _point(series: _Counter | _Histogram, now: float) -> dict[str, Any]:
    if isinstance(series, _Counter):
        point: dict[str, Any] = {"op": "metric", "name": series.name, "value": series.total, "timestamp": now}
        point["type"] = "counter"
        if series.tags:
            point["tags"] = list(series.tags)
        return point
    point = {"op": "metric", "name": series.name, "value": series.sum / series.count, "timestamp": now}
    point["type"] = "histogram"
    if series.unit:
        point["unit"] = series.unit
    if series.tags:
        point["tags"] = list(series.tags)
    buckets = [{"le": bound, "count": count} for bound, count in zip(series.bounds, series.counts, strict=True)]
    point["metadata"] = {**series.metadata, "buckets": buckets, "count": series.count, "sum": series.sum}
    return point
