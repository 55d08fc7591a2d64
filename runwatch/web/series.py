"""Deterministic downsampling of metric series for charts (pure numpy code).

Two shapes: :func:`window_payload` keeps each bucket's min and max *points*
(a run's charts); :func:`bucket_series` gives each bucket's mean with its
min/max band and non-finite marks (the compare view's ``GET /api/compare``).

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

__all__ = ["SeriesCache", "bucket_series", "downsample_min_max", "series_payload", "window_payload"]


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


def bucket_series(
    series: dict[str, np.ndarray],
    *,
    x: str,
    start_time: float,
    x_min: float | None,
    x_max: float | None,
    max_points: int,
) -> dict[str, Any]:
    """The JSON form of one series for a chart: cut to an x range, then bucketed to ``max_points``.

    A series of at most ``max_points`` points comes back whole: ``t``,
    ``step`` and ``v`` (NaN as ``null``, ±Inf as ``"Infinity"``/``"-Infinity"``).
    A longer one is cut into ``max_points`` buckets of consecutive points; each
    bucket gives the time and step of its last point, ``v`` the mean of its
    finite values (``null`` when it has none), ``lo``/``hi`` their min and max
    (the band a chart draws), and ``marks`` lists the buckets holding a NaN,
    +Inf or -Inf (``{"nan": [...], "pinf": [...], "ninf": [...]}``, bucket
    indices), so a spike or a NaN never vanishes in the downsampling.

    Args:
        series: ``ts``, ``step`` and ``value`` arrays.
        x: the x axis ``x_min``/``x_max`` are in (``step``, ``time`` or ``relative``).
        start_time: the run's start (epoch seconds), for ``x="relative"``.
        x_min: keep points at or after this x; ``None`` for no bound.
        x_max: keep points at or before this x; ``None`` for no bound.
        max_points: the most points (or buckets) to return, at least 2.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    ts, steps, values = series["ts"], series["step"], series["value"]
    if x_min is not None or x_max is not None:
        axis = steps if x == "step" else ts - start_time if x == "relative" else ts
        mask = np.ones(len(axis), dtype=bool)
        if x_min is not None:
            mask &= axis >= x_min
        if x_max is not None:
            mask &= axis <= x_max
        ts, steps, values = ts[mask], steps[mask], values[mask]
    total = len(values)
    if total <= max_points:
        return {
            "t": ts.tolist(),
            "step": steps.tolist(),
            "v": [json_number(v) for v in values.tolist()],
            "total_points": total,
            "downsampled": False,
        }
    # Equal-count buckets: bucket b holds points [starts[b], starts[b + 1]).
    starts = (np.arange(max_points, dtype=np.int64) * total) // max_points
    ends = np.append(starts[1:], total)
    finite = np.isfinite(values)
    as_min = np.where(finite, values, np.inf)
    as_max = np.where(finite, values, -np.inf)
    lo = np.minimum.reduceat(as_min, starts)
    hi = np.maximum.reduceat(as_max, starts)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts)
    counts = np.add.reduceat(finite.astype(np.int64), starts)
    has_finite = counts > 0
    mean = np.divide(sums, counts, out=np.full(max_points, np.nan), where=has_finite)
    marks = {
        "nan": np.flatnonzero(np.add.reduceat(np.isnan(values).astype(np.int64), starts)).tolist(),
        "pinf": np.flatnonzero(np.add.reduceat((values == np.inf).astype(np.int64), starts)).tolist(),
        "ninf": np.flatnonzero(np.add.reduceat((values == -np.inf).astype(np.int64), starts)).tolist(),
    }
    last = ends - 1

    def finite_or_none(array: np.ndarray) -> list[float | None]:
        return [float(v) if ok else None for v, ok in zip(array.tolist(), has_finite.tolist(), strict=True)]

    return {
        "t": ts[last].tolist(),
        "step": steps[last].tolist(),
        "v": finite_or_none(mean),
        "lo": finite_or_none(lo),
        "hi": finite_or_none(hi),
        "marks": marks,
        "total_points": total,
        "downsampled": True,
    }
