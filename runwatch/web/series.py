"""Deterministic downsampling of metric series for charts (pure numpy code).

W&B samples 1,500 random points and TensorBoard keeps a 1,000-point
reservoir, so a one-step spike may vanish from their charts. Here the range
is cut into ``max_points // 2`` buckets of equal point count and each bucket
keeps its minimum and its maximum point, in time order: the same input always
gives the same output, and an extreme sample always survives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..store.base import Store
from ..wire import json_number

__all__ = ["SeriesCache", "downsample_min_max", "series_payload", "window_payload"]


def downsample_min_max(values: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of the points to keep: each bucket's min and max, sorted.

    NaN values never win a bucket unless the bucket holds nothing else, in
    which case its first point is kept so the gap still shows.

    Args:
        values: the series' values (float64, may hold NaN and ±Inf).
        max_points: the most points to return (at least 2).

    Returns:
        Sorted, unique indices into ``values``.
    """
    count = len(values)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if count <= max_points:
        return np.arange(count)
    buckets = max_points // 2
    size = -(-count // buckets)  # ceil
    padded = buckets * size
    nan = np.isnan(values)
    for_min = np.full(padded, np.inf)
    for_min[:count] = np.where(nan, np.inf, values)
    for_max = np.full(padded, -np.inf)
    for_max[:count] = np.where(nan, -np.inf, values)
    offsets = np.arange(buckets) * size
    low = for_min.reshape(buckets, size).argmin(axis=1) + offsets
    high = for_max.reshape(buckets, size).argmax(axis=1) + offsets
    keep = np.unique(np.concatenate([low, high]))
    return keep[keep < count]


def series_payload(timestamps: np.ndarray, steps: Any, values: np.ndarray, max_points: int) -> dict[str, Any]:
    """The JSON form of one series (see docs/protocol.md), downsampled to ``max_points``."""
    keep = downsample_min_max(values, max_points)
    step_list = [None if step is None or step != step else int(step) for step in np.asarray(steps, dtype=object)[keep]]
    return {
        "t": timestamps[keep].tolist(),
        "step": step_list,
        "v": [json_number(value) for value in values[keep].tolist()],
        "total_points": len(values),
        "downsampled": bool(len(keep) < len(values)),
    }


class SeriesCache:
    """Recently charted metric series, kept as numpy arrays and extended incrementally.

    The first request for a (run, metric) reads the whole series; later ones
    read only rows stored since (the store numbers rows in order). Bounded by
    ``max_points`` in total, least recently used first out.
    """

    def __init__(self, max_points: int = 4_000_000) -> None:
        import threading
        from collections import OrderedDict

        self.max_points = max_points
        self._series: OrderedDict[tuple[str, str, str], dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, run_id: str, name: str) -> dict[str, np.ndarray]:
        """The series' arrays (``row``, ``ts``, ``step``, ``value``), brought up to date.

        Call on a worker thread: it reads the store.
        """
        key = (store.location, run_id, name)
        with self._lock:
            cached = self._series.get(key)
        after = int(cached["row"][-1]) if cached is not None and len(cached["row"]) else None
        fresh = store.metric_series(run_id, name, after_row=after)
        if cached is not None and after is not None:
            if len(fresh["row"]):
                fresh = {field: np.concatenate([cached[field], fresh[field]]) for field in cached}
            else:
                fresh = cached
        with self._lock:
            self._series[key] = fresh
            self._series.move_to_end(key)
            total = sum(len(series["row"]) for series in self._series.values())
            while total > self.max_points and len(self._series) > 1:
                _, evicted = self._series.popitem(last=False)
                total -= len(evicted["row"])
        return fresh


def window_payload(
    series: dict[str, np.ndarray], since: float | None, until: float | None, max_points: int
) -> dict[str, Any]:
    """The JSON form of the part of ``series`` between ``since`` and ``until``."""
    timestamps = series["ts"]
    mask = None
    if since is not None:
        mask = timestamps >= since
    if until is not None:
        mask = (timestamps <= until) if mask is None else (mask & (timestamps <= until))
    if mask is not None:
        series = {field: values[mask] for field, values in series.items()}
    steps = series["step"]
    step_objects = steps
    if len(steps):
        step_objects = steps.astype(object)
        step_objects[np.isnan(steps)] = None
    return series_payload(series["ts"], step_objects, series["value"], max_points)
