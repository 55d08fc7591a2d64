"""Histograms: the values ``log_histogram`` takes at the call, and their binning off the training thread.

:func:`take_values` runs at the call: it checks the dtype and takes a flat
private copy (a memory copy for an array or a tensor: about a millisecond
for a million float64; a list is converted, which costs more). :func:`bin_values`
runs on the media worker's thread: ``bins`` equal bins from the smallest to
the largest finite value, with NaN and ±Inf counted apart (they have no bin).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

__all__ = ["MAX_BINS", "BinnedValues", "bin_values", "check_bins", "take_values"]

#: The most bins a histogram may have.
MAX_BINS: Final = 1024
#: The largest float64: the edge of a bin range never goes past it.
_FLOAT_MAX: Final = float(np.finfo(np.float64).max)


@dataclass(frozen=True, slots=True)
class BinnedValues:
    """One histogram.

    Attributes:
        size: values given (NaN and ±Inf included).
        nan_count: NaN values.
        posinf_count: +Inf values.
        neginf_count: -Inf values.
        min: the smallest finite value (``None``: no finite value).
        max: the largest finite value (``None``: no finite value).
        sum: the sum of the finite values.
        low: the left edge of the first bin (``None``: no finite value).
        high: the right edge of the last bin.
        counts: values per bin, ``len(counts)`` equal bins from ``low`` to
            ``high`` (the last bin includes ``high``); empty without a finite value.
    """

    size: int
    nan_count: int
    posinf_count: int
    neginf_count: int
    min: float | None
    max: float | None
    sum: float
    low: float | None
    high: float | None
    counts: tuple[int, ...]


def check_bins(bins: object) -> int:
    """``bins`` as an int from 1 to :data:`MAX_BINS`.

    Raises:
        TypeError: not an integer.
        ValueError: out of range.
    """
    if isinstance(bins, bool) or not hasattr(bins, "__index__"):
        raise TypeError(f"bins must be an integer, got {bins!r}")
    number = operator.index(bins)  # an int or a numpy integer
    if not 1 <= number <= MAX_BINS:
        raise ValueError(f"bins must be from 1 to {MAX_BINS}, got {number}")
    return number


def take_values(values: object) -> np.ndarray[Any, Any]:
    """A flat private copy of ``values`` (runs on the caller's thread).

    Accepts numpy arrays, lists and tuples of numbers, and anything with
    ``__array__`` (a CPU tensor); any shape, flattened. Integers and bools
    are kept as they are and converted off the thread.

    Raises:
        TypeError: values that are not numbers (strings, objects, complex).
    """
    if isinstance(values, np.ndarray):
        array = values
    elif isinstance(values, (list, tuple)):
        try:
            array = np.asarray(values)  # a new array: the list's numbers are copied
        except (TypeError, ValueError) as exc:  # ragged nesting
            raise TypeError(f"values must be numbers, got a {type(values).__name__} of others ({exc})") from None
        _check_dtype(array)
        return array.reshape(-1)
    elif hasattr(values, "__array__"):
        try:
            array = np.asarray(values)
        except Exception as exc:
            raise TypeError(f"values: {type(values).__name__} did not convert to an array ({exc})") from None
    elif isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"values must be an array, a list of numbers or a tensor, got {type(values).__name__}")
    else:
        return take_values(list(values))  # any other iterable of numbers
    _check_dtype(array)
    return np.array(array.reshape(-1), copy=True)  # the caller may change its array right after


def _check_dtype(array: np.ndarray[Any, Any]) -> None:
    # An object dtype means something that is no number (None, a string) among them.
    if array.dtype.kind not in "biuf":
        raise TypeError(f"values must be numbers, got an array of dtype {array.dtype}")


def bin_values(values: np.ndarray[Any, Any], bins: int) -> BinnedValues:
    """Bin ``values`` into ``bins`` equal bins over their finite range (pure)."""
    size = int(values.size)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    finite_mask = np.isfinite(values)
    finite = values if finite_mask.all() else values[finite_mask]
    nan_count = int(np.count_nonzero(np.isnan(values))) if finite.size != size else 0
    posinf_count = int(np.count_nonzero(values == np.inf)) if finite.size != size else 0
    neginf_count = size - finite.size - nan_count - posinf_count
    if finite.size == 0:
        return BinnedValues(size, nan_count, posinf_count, neginf_count, None, None, 0.0, None, None, ())
    low, high = float(finite.min()), float(finite.max())
    edge_low, edge_high = low, high
    if low == high:
        # One value: a bin range around it, wide enough to stay a range next to a huge value.
        spread = max(0.5, abs(low) * 2.0**-20)
        edge_low, edge_high = max(low - spread, -_FLOAT_MAX), min(high + spread, _FLOAT_MAX)
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(finite.sum(dtype=np.float64))  # ±Inf when it overflows, as the values add up
        if math.isfinite(edge_high - edge_low):
            counts, _ = np.histogram(finite, bins=bins, range=(edge_low, edge_high))
        else:  # a range wider than the largest float: halving values and edges alike bins them the same
            counts, _ = np.histogram(finite / 2, bins=bins, range=(edge_low / 2, edge_high / 2))
    return BinnedValues(
        size,
        nan_count,
        posinf_count,
        neginf_count,
        low,
        high,
        total,
        edge_low,
        edge_high,
        tuple(int(n) for n in counts),
    )
