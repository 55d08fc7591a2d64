"""Deterministic downsampling of metric series for charts (pure numpy code).

Three shapes: :func:`series_payload` keeps each bucket of equal point count's
min and max *points*, and :func:`chart_payload` each bucket of equal time's
min and max from a chart the store computed from its chunk summaries
(:meth:`runwatch.store.base.Store.chart`, no point read), both for a run's
charts (``GET /api/runs/{id}/metrics``); :func:`bucket_series` gives each
bucket's mean with its min/max band and non-finite marks (the compare view's
``GET /api/compare``), and :func:`finite_bucket_payload` the same from a
chart the store bucketed with ``finite=True`` (a long series).

W&B samples 1,500 random points and TensorBoard keeps a 1,000-point
reservoir, so a one-step spike may vanish from their charts. Here every
bucket keeps its minimum and its maximum: the same input always gives the
same output, and an extreme sample always survives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..store.base import ChartSeries
from ..wire import json_number

__all__ = ["bucket_series", "chart_payload", "downsample_min_max", "finite_bucket_payload", "series_payload"]


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


def chart_payload(chart: ChartSeries) -> dict[str, Any]:
    """The JSON form of a bucketed series (see docs/protocol.md).

    Each bucket with points gives its min at the earliest time (and step) of
    its points and its max at the latest: at a chart's resolution (a bucket
    per pixel column) the two share a column. A bucket of NaN only gives one
    NaN point, so the gap still shows.
    """
    times: list[float] = []
    steps: list[int | None] = []
    values: list[Any] = []
    for index in np.flatnonzero(chart.count).tolist():
        low, high = float(chart.min[index]), float(chart.max[index])
        t_low, t_high = float(chart.x_low[index]), float(chart.x_high[index])
        s_low, s_high = chart.step_low[index], chart.step_high[index]
        times.append(t_low)
        steps.append(None if s_low != s_low else int(s_low))
        values.append(json_number(low))  # NaN when the bucket holds nothing else
        if low == low and (t_high != t_low or high != low):
            times.append(t_high)
            steps.append(None if s_high != s_high else int(s_high))
            values.append(json_number(high))
    return {
        "t": times,
        "step": steps,
        "v": values,
        "total_points": int(chart.count.sum()),
        "downsampled": True,
    }


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


def finite_bucket_payload(chart: ChartSeries) -> dict[str, Any]:
    """The :func:`bucket_series` form of a chart the store bucketed with ``finite=True``.

    Buckets are equal x intervals; those without points are left out. Each
    gives the time and step of its latest point, the mean of its finite
    values and their min and max (``null`` when none); ``marks`` index the
    buckets given.
    """
    if chart.sum is None or chart.pinf is None or chart.ninf is None:
        raise ValueError("the chart was not made with finite=True")
    kept = np.flatnonzero(chart.count)
    count, nan, pinf, ninf = chart.count[kept], chart.nan_count[kept], chart.pinf[kept], chart.ninf[kept]
    finite = count - nan - pinf - ninf
    has_finite = finite > 0
    mean = np.divide(chart.sum[kept], finite, out=np.full(len(kept), np.nan), where=has_finite)

    def finite_or_none(array: np.ndarray) -> list[float | None]:
        return [float(v) if ok else None for v, ok in zip(array.tolist(), has_finite.tolist(), strict=True)]

    steps = chart.step_high[kept]
    return {
        "t": chart.time_high[kept].tolist(),
        "step": [None if step != step else int(step) for step in steps.tolist()],
        "v": finite_or_none(mean),
        "lo": finite_or_none(chart.min[kept]),
        "hi": finite_or_none(chart.max[kept]),
        "marks": {
            "nan": np.flatnonzero(nan).tolist(),
            "pinf": np.flatnonzero(pinf).tolist(),
            "ninf": np.flatnonzero(ninf).tolist(),
        },
        "total_points": int(count.sum()),
        "downsampled": True,
    }
