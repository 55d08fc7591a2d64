"""Histograms: values taken at the call, binned off the thread."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runwatch.media.histograms import MAX_BINS, bin_values, check_bins, take_values


def test_bins_match_numpy_over_the_finite_range() -> None:
    """Counts are numpy's over [min, max], with the summary of the values."""
    values = np.random.default_rng(3).normal(size=10_000)
    binned = bin_values(take_values(values), 64)
    expected, edges = np.histogram(values, bins=64)
    assert binned.counts == tuple(expected.tolist())
    assert (binned.low, binned.high) == (edges[0], edges[-1])
    assert (binned.min, binned.max) == (values.min(), values.max())
    assert binned.sum == pytest.approx(values.sum())
    assert binned.size == 10_000 and binned.nan_count == binned.posinf_count == binned.neginf_count == 0


def test_non_finite_values_are_counted_apart() -> None:
    """NaN and ±Inf have no bin; each kind is counted and the bins cover the finite values."""
    binned = bin_values(take_values([1.0, 2.0, math.nan, math.inf, -math.inf, -math.inf, 3.0]), 2)
    assert (binned.size, binned.nan_count, binned.posinf_count, binned.neginf_count) == (7, 1, 1, 2)
    assert binned.counts == (1, 2)
    assert (binned.min, binned.max, binned.sum) == (1.0, 3.0, 6.0)


def test_equal_values_get_a_unit_wide_range() -> None:
    """All values equal: the bins span value ± 0.5, as numpy does."""
    binned = bin_values(take_values([5, 5, 5]), 4)
    assert (binned.low, binned.high) == (4.5, 5.5)
    assert sum(binned.counts) == 3


def test_values_at_the_float_limits_get_finite_bin_ranges() -> None:
    """Equal huge values, or a range wider than the largest float, still bin without a numpy warning."""
    largest = float(np.finfo(np.float64).max)
    with np.errstate(all="raise"):
        equal = bin_values(take_values([largest, largest]), 4)
        wide = bin_values(take_values([-largest, largest]), 4)
    assert equal.low is not None and equal.high == largest and equal.low < largest and equal.counts == (0, 0, 0, 2)
    assert (wide.low, wide.high, wide.counts, wide.sum) == (-largest, largest, (1, 0, 0, 1), 0.0)


@pytest.mark.parametrize("values", [pytest.param([], id="empty"), pytest.param([math.nan], id="only NaN")])
def test_no_finite_value_means_no_bins(values: list[float]) -> None:
    """Without a finite value there are no bins and no range."""
    binned = bin_values(take_values(values), 8)
    assert binned.counts == () and binned.low is None and binned.min is None and binned.sum == 0.0


def test_the_copy_is_taken_at_the_call() -> None:
    """Changing the array after the call does not change the histogram."""
    values = np.arange(10.0)
    taken = take_values(values)
    values[:] = 100.0
    assert bin_values(taken, 1).max == 9.0


def test_any_shape_and_number_dtype_is_flattened() -> None:
    """A 2-D int array and a bool array are binned as their flat values."""
    assert bin_values(take_values(np.arange(6).reshape(2, 3)), 3).counts == (2, 2, 2)
    assert bin_values(take_values(np.array([True, False, True])), 2).counts == (1, 2)


def test_objects_with_array_and_iterables_are_accepted() -> None:
    """A tensor-like object (``__array__``), a tuple and a generator are read as numbers."""

    class Tensorish:
        def __array__(self, dtype=None, copy=None):
            return np.array([1.0, 2.0], dtype=np.float32)

    assert bin_values(take_values(Tensorish()), 2).counts == (1, 1)
    assert bin_values(take_values((1, 2)), 2).counts == (1, 1)
    assert bin_values(take_values(x for x in (1, 2)), 2).counts == (1, 1)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["a", "b"], id="strings in a list"),
        pytest.param(np.array(["a"]), id="a string array"),
        pytest.param(np.array([1j]), id="complex"),
        pytest.param("123", id="a string"),
        pytest.param(3.0, id="a number"),
        pytest.param([1.0, None], id="None in a list"),
    ],
)
def test_values_that_are_not_numbers_are_refused_at_the_call(values: object) -> None:
    """Non-numbers are a TypeError at the call."""
    with pytest.raises(TypeError, match="values"):
        take_values(values)


@pytest.mark.parametrize(
    ("bins", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(MAX_BINS + 1, ValueError, id="too many"),
        pytest.param(2.5, TypeError, id="a float"),
        pytest.param(True, TypeError, id="a bool"),
    ],
)
def test_bins_are_checked(bins: object, error: type[Exception]) -> None:
    """bins is an integer from 1 to MAX_BINS."""
    with pytest.raises(error, match="bins"):
        check_bins(bins)
    assert check_bins(np.int64(8)) == 8
