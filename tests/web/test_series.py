"""Tests for runwatch.web.series: deterministic min/max downsampling of chart series (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from runwatch.web.series import downsample_min_max, series_payload


def assert_valid_indices(keep: np.ndarray, count: int, max_points: int) -> None:
    """Indices are sorted, unique, in range and at most ``max_points`` of them."""
    assert keep.ndim == 1
    assert len(keep) <= max_points
    assert np.all(np.diff(keep) > 0), "indices must be strictly increasing"
    if len(keep):
        assert 0 <= keep[0] and keep[-1] < count


# -- downsample_min_max ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "max_points"),
    [
        pytest.param(0, 2, id="empty"),
        pytest.param(1, 2, id="one"),
        pytest.param(2, 2, id="equal-minimum"),
        pytest.param(999, 1000, id="just-under"),
        pytest.param(1000, 1000, id="exactly-max"),
    ],
)
def test_series_at_or_under_max_points_is_returned_whole(count: int, max_points: int) -> None:
    """A series no longer than max_points keeps every index, in order."""
    values = np.linspace(0.0, 1.0, count)
    keep = downsample_min_max(values, max_points)
    assert keep.tolist() == list(range(count))


def test_same_input_gives_same_output() -> None:
    """Downsampling is deterministic: two calls on equal data return equal indices."""
    rng = np.random.default_rng(1234)
    values = rng.normal(size=50_000)
    first = downsample_min_max(values, 500)
    second = downsample_min_max(values.copy(), 500)
    assert np.array_equal(first, second)
    assert len(first) < len(values)


def test_single_sample_spikes_survive_a_million_points() -> None:
    """A one-sample maximum spike and a one-sample minimum dip in 1M points both survive reduction to 2000."""
    rng = np.random.default_rng(7)
    values = rng.uniform(-1.0, 1.0, size=1_000_000)
    values[123_457] = 1e9
    values[876_543] = -1e9
    keep = downsample_min_max(values, 2000)
    assert_valid_indices(keep, len(values), 2000)
    assert 123_457 in keep
    assert 876_543 in keep
    assert values[keep].max() == 1e9
    assert values[keep].min() == -1e9


def test_each_bucket_keeps_its_min_and_max() -> None:
    """Every bucket of max_points // 2 equal-count buckets contributes its extreme points."""
    values = np.array([5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 0.0, 4.0])
    keep = downsample_min_max(values, 4)  # 2 buckets of 4
    assert keep.tolist() == [1, 2, 5, 6]


def test_nan_only_bucket_keeps_one_point() -> None:
    """A bucket holding nothing but NaN keeps its first point, so the gap still shows."""
    values = np.arange(100, dtype=float)
    values[10:20] = np.nan  # exactly bucket 1 of 10 buckets of 10 points
    keep = downsample_min_max(values, 20)
    assert_valid_indices(keep, 100, 20)
    in_gap = [int(i) for i in keep if 10 <= i < 20]
    assert in_gap == [10]


def test_nan_never_wins_a_bucket_with_real_values() -> None:
    """NaN values are skipped when a bucket also holds numbers."""
    values = np.array([np.nan, 1.0, 5.0, np.nan, np.nan, 2.0, 3.0, np.nan])
    keep = downsample_min_max(values, 4)
    assert not np.isnan(values[keep]).any()
    assert keep.tolist() == [1, 2, 5, 6]


def test_infinities_are_extremes() -> None:
    """+Inf and -Inf are kept as a bucket's maximum and minimum."""
    values = np.zeros(10_000)
    values[4_321] = math.inf
    values[9_999] = -math.inf
    keep = downsample_min_max(values, 10)
    assert 4_321 in keep and 9_999 in keep


@pytest.mark.parametrize(
    ("count", "max_points"),
    [
        pytest.param(1001, 10, id="uneven-last-bucket"),
        pytest.param(2001, 2000, id="just-over"),
        pytest.param(10_000, 3, id="odd-max"),
        pytest.param(12_345, 2, id="minimum"),
    ],
)
def test_result_is_sorted_unique_and_bounded(count: int, max_points: int) -> None:
    """Indices are strictly increasing, in range and never more than max_points."""
    values = np.sin(np.arange(count, dtype=float))
    keep = downsample_min_max(values, max_points)
    assert_valid_indices(keep, count, max_points)
    assert len(keep) >= 1


@settings(max_examples=150, deadline=None)
@given(
    values=hnp.arrays(
        np.float64,
        st.integers(0, 3000),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    max_points=st.integers(2, 400),
)
def test_global_extremes_always_survive(values: np.ndarray, max_points: int) -> None:
    """For any series the result is bounded and sorted and contains the global min and max values."""
    keep = downsample_min_max(values, max_points)
    assert_valid_indices(keep, len(values), max_points)
    finite_or_inf = values[~np.isnan(values)]
    if finite_or_inf.size:
        kept = values[keep]
        assert np.nanmax(kept) == finite_or_inf.max()
        assert np.nanmin(kept) == finite_or_inf.min()


@pytest.mark.parametrize(
    "max_points", [pytest.param(1, id="one"), pytest.param(0, id="zero"), pytest.param(-5, id="neg")]
)
def test_max_points_below_two_raises(max_points: int) -> None:
    """max_points < 2 is refused with a ValueError naming the value."""
    with pytest.raises(ValueError, match="max_points"):
        downsample_min_max(np.arange(10, dtype=float), max_points)


# -- series_payload ----------------------------------------------------------------------


def test_payload_encodes_non_finite_values_for_json() -> None:
    """NaN becomes null and ±Inf become the strings "Infinity"/"-Infinity"; steps stay ints or None."""
    timestamps = np.array([1.0, 2.0, 3.0, 4.0])
    steps = [0, None, float("nan"), 3]
    values = np.array([0.5, math.nan, math.inf, -math.inf])
    payload = series_payload(timestamps, steps, values, 2000)
    assert payload == {
        "t": [1.0, 2.0, 3.0, 4.0],
        "step": [0, None, None, 3],
        "v": [0.5, None, "Infinity", "-Infinity"],
        "total_points": 4,
        "downsampled": False,
    }


def test_payload_reports_downsampling() -> None:
    """A reduced series says so and keeps total_points as the original length."""
    count = 10_000
    values = np.zeros(count)
    values[5_000] = 42.0
    payload = series_payload(np.arange(count, dtype=float), list(range(count)), values, 100)
    assert payload["downsampled"] is True
    assert payload["total_points"] == count
    assert len(payload["t"]) == len(payload["v"]) == len(payload["step"]) <= 100
    assert 42.0 in payload["v"]
    assert payload["t"] == sorted(payload["t"])
