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

from ..events import json_number

__all__ = ["downsample_min_max", "series_payload"]


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
