"""Charts from chunk summaries agree with bucketing every raw point by brute force, whatever the series."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runwatch.events import Metric
from runwatch.store.chart import chart
from runwatch.store.chunk_reads import read_series
from runwatch.store.chunk_store import SQLiteSeriesStore
from runwatch.store.schema import prepare_database
from runwatch.store.series import SeriesBuilder

TS = 1_796_658_235.615_516
SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 1e300, -1e300, 5e-324]


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    prepare_database(str(tmp_path / "store.db"))
    connection = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    connection.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES ('r', ?, ?)", (TS, TS))
    yield connection
    connection.close()


def brute_force(
    axis: np.ndarray, values: np.ndarray, low: float, high: float, buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, min and max of every point with ``low <= x <= high`` in its own bucket of the range."""
    width = (high - low) / buckets or 1.0
    inside = (axis >= low) & (axis <= high)
    index = np.minimum(np.floor((axis[inside] - low) / width).astype(np.int64), buckets - 1)
    lows, highs = np.full(buckets, np.nan), np.full(buckets, np.nan)
    np.fmin.at(lows, index, values[inside])
    np.fmax.at(highs, index, values[inside])
    return np.bincount(index, minlength=buckets), lows, highs


def test_the_points_at_the_end_of_the_range_are_charted(connection: sqlite3.Connection) -> None:
    """A range whose end the bucket width does not reach exactly in floating point still charts its last point."""
    store = SQLiteSeriesStore(connection, SeriesBuilder())
    store.write_batch([Metric("r", TS + i, {"v": float(i)}, step) for i, step in enumerate((-348, 0, 56_408))])
    # -348 + (56_756 / 50) * 50 == 56_407.99999999999: the grid ended short of the last step.
    series = chart(connection, ["r"], ["v"], x="step", buckets=50)[("r", "v")]
    assert series.count.sum() == 3
    assert series.max[-1] == 2.0 and series.edges[-1] == 56_408


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(1, 3000),
    buckets=st.sampled_from([1, 2, 7, 50, 333, 1000]),
    x=st.sampled_from(["step", "time", "relative"]),
    window=st.booleans(),
)
def test_exact_chart_equals_brute_force_with_live_points_after_a_cold_read(
    connection: sqlite3.Connection, seed: int, count: int, buckets: int, x: str, window: bool
) -> None:
    """Per bucket, count, min and max equal brute force over the raw points, before and after more points arrive."""
    connection.execute("DELETE FROM metric_chunks")
    connection.execute("DELETE FROM metric_series")
    rng = np.random.default_rng(seed)
    steps = np.cumsum(rng.integers(0, 4, count)) - int(rng.integers(0, 500))
    if rng.random() < 0.3:
        steps = rng.permutation(steps)
    values = rng.normal(0.0, 1.0, count)
    values[rng.random(count) < 0.02] = rng.choice(SPECIAL)
    times = TS + np.cumsum(rng.exponential(0.01, count))
    calls = [Metric("r", float(t), {"v": float(v)}, int(s)) for t, v, s in zip(times, values, steps, strict=True)]
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=256, block_points=16))
    cold = int(rng.integers(1, count + 1))
    for part in (calls[:cold], calls[cold:]):  # a chart of the first part, then live points on top
        for begin in range(0, len(part), 97):
            store.write_batch(part[begin : begin + 97])
        points = read_series(connection, "r", ["v"])["v"].points
        # Brute force in stored units (steps, microseconds), where the chart defines its grid.
        scale = 1.0 if x == "step" else 1e6
        origin = round(TS * 1e6) if x == "relative" else 0
        stored = (points.step if x == "step" else points.time_us).astype(np.float64)
        start = end = None
        low, high = float(stored.min()), float(stored.max())
        if window:  # a zoom from one point's x to another's, as a chart gives them: both points are in it
            first, last = sorted(int(a) for a in rng.choice(points.step if x == "step" else points.time_us, 2))
            start, end = (first - origin) / scale, (last - origin) / scale
            low, high = float(first), float(last)
        series = chart(connection, ["r"], ["v"], x=x, buckets=buckets, start=start, end=end, exact=True)[("r", "v")]
        counts, lows, highs = brute_force(stored, points.values.astype(np.float64), low, high, buckets)
        assert series.count.tolist() == counts.tolist()
        np.testing.assert_array_equal(series.min, lows)
        np.testing.assert_array_equal(series.max, highs)
        plain = chart(connection, ["r"], ["v"], x=x, buckets=buckets, start=start, end=end)[("r", "v")]
        assert plain.count.sum() == counts.sum()
        if not np.isnan(lows).all():  # the extremes survive the snapping of narrow blocks
            assert (np.nanmin(plain.min), np.nanmax(plain.max)) == (np.nanmin(lows), np.nanmax(highs))


def test_a_window_of_one_x_charts_the_points_at_that_x_only(connection: sqlite3.Connection) -> None:
    """start == end (a zoom onto one step) counts the points at that step, none after it."""
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=256, block_points=16))
    store.write_batch([Metric("r", TS + i, {"v": float(i)}, i // 3) for i in range(3000)])
    for buckets in (1, 2, 500):
        series = chart(connection, ["r"], ["v"], x="step", buckets=buckets, start=5, end=5)[("r", "v")]
        assert series.count.sum() == 3 and (series.min[0], series.max[0]) == (15.0, 17.0)
        assert np.nanmax(series.x_high) == 5 and series.edges[-1] == 5
