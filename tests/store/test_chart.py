"""Tests for runwatch.store.chart: bucketed min/max from summaries agree with the points."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runwatch.events import Metric
from runwatch.store.chart import chart
from runwatch.store.chunk_reads import read_series
from runwatch.store.chunk_store import SQLiteSeriesStore
from runwatch.store.schema import prepare_database
from runwatch.store.series import SeriesBuilder

TS = 1_700_000_000.0


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    prepare_database(str(tmp_path / "store.db"))
    connection = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    for run_id, start in (("run-1", TS), ("run-2", TS + 1000)):
        connection.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES (?, ?, ?)", (run_id, start, start))
    yield connection
    connection.close()


def write_run(
    connection: sqlite3.Connection, run_id: str, count: int, *, seed: int = 0, start: float = TS, **options: int
) -> None:
    """A noisy decaying loss with NaN now and then; steps jump back once; times with jitter."""
    rng = np.random.default_rng(seed)
    values = 2.5 * np.exp(-np.arange(count) / (count / 3)) + 0.1 * rng.standard_normal(count)
    values[rng.random(count) < 0.01] = np.nan
    times = start + np.cumsum(rng.uniform(0.001, 0.01, count))
    steps = np.arange(count)
    steps[count // 2 :] -= count // 10  # a resumed run re-logs some steps
    store = SQLiteSeriesStore(connection, SeriesBuilder(**options))
    calls = [Metric(run_id, float(t), {"loss": float(v)}, int(s)) for t, v, s in zip(times, values, steps, strict=True)]
    for begin in range(0, count, 5000):
        store.write_batch(calls[begin : begin + 5000])


def brute_force(
    connection: sqlite3.Connection, run_id: str, x: str, buckets: int, start: float | None, end: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bucket every point, in stored units (steps or microseconds) as the chart defines its grid."""
    points = read_series(connection, run_id, ["loss"])["loss"].points
    scale = 1.0 if x == "step" else 1e6
    origin = round(TS * 1e6) if x == "relative" else 0
    axis = (points.step if x == "step" else points.time_us).astype(np.float64)
    low = float(points.step.min() if x == "step" else points.time_us.min() - origin) if start is None else start * scale
    high = float(points.step.max() if x == "step" else points.time_us.max() - origin) if end is None else end * scale
    width = (high - low) / buckets
    inside = (axis >= low + origin) & (axis <= low + origin + width * buckets)
    index = np.minimum(np.floor((axis[inside] - (low + origin)) / width).astype(np.int64), buckets - 1)
    values = points.values[inside]
    count = np.bincount(index, minlength=buckets)
    nan_count = np.bincount(index, weights=np.isnan(values), minlength=buckets).astype(np.int64)
    lows = np.full(buckets, np.nan)
    highs = np.full(buckets, np.nan)
    np.fmin.at(lows, index, values)
    np.fmax.at(highs, index, values)
    return count, nan_count, lows, highs


@pytest.mark.parametrize("x", ["step", "time", "relative"])
@pytest.mark.parametrize(("start", "end"), [pytest.param(None, None, id="all"), pytest.param(0.3, 0.7, id="part")])
def test_exact_chart_equals_bucketing_every_point(
    connection: sqlite3.Connection, x: str, start: float | None, end: float | None
) -> None:
    """With exact=True every bucket's count, NaN count, min and max equal those of its points."""
    write_run(connection, "run-1", 30_000, chunk_points=2048, block_points=64)
    full = chart(connection, ["run-1"], ["loss"], x=x, buckets=137, exact=True)[("run-1", "loss")]  # type: ignore[arg-type]
    if start is not None and end is not None:
        span = full.edges[-1] - full.edges[0]
        start, end = full.edges[0] + start * span, full.edges[0] + end * span
    result = chart(connection, ["run-1"], ["loss"], x=x, buckets=137, start=start, end=end, exact=True)  # type: ignore[arg-type]
    series = result[("run-1", "loss")]
    count, nan_count, low, high = brute_force(connection, "run-1", x, 137, start, end)
    assert series.count.tolist() == count.tolist()
    assert series.nan_count.tolist() == nan_count.tolist()
    assert np.array_equal(series.min, low, equal_nan=True) and np.array_equal(series.max, high, equal_nan=True)


def test_snapped_chart_counts_each_point_once_near_its_bucket(connection: sqlite3.Connection) -> None:
    """Without exact, each point counts once, each bucket's extremes are those of the points it reports,
    and no point lies more than a quarter bucket outside its bucket."""
    write_run(connection, "run-1", 60_000, chunk_points=4096, block_points=64)
    series = chart(connection, ["run-1"], ["loss"], x="time", buckets=100)[("run-1", "loss")]
    points = read_series(connection, "run-1", ["loss"])["loss"].points
    axis = points.time_us / 1e6
    assert series.count.sum() == len(axis)
    width = series.edges[1] - series.edges[0]
    for k in range(100):
        members = (axis >= series.x_low[k]) & (axis <= series.x_high[k])
        assert members.sum() == series.count[k]
        assert series.min[k] == np.nanmin(points.values[members])
        assert series.max[k] == np.nanmax(points.values[members])
        assert series.x_low[k] >= series.edges[k] - width / 4 - 1e-6
        assert series.x_high[k] <= series.edges[k + 1] + width / 4 + 1e-6


def test_a_long_series_charts_from_summaries_alone(connection: sqlite3.Connection) -> None:
    """Over the data's own extent, with blocks narrow against buckets, no point is decoded."""
    write_run(connection, "run-1", 100_000, chunk_points=8192, block_points=256)
    series = chart(connection, ["run-1"], ["loss"], x="time", buckets=100)[("run-1", "loss")]
    assert series.decoded_points == 0 and series.count.sum() == 100_000
    means = chart(connection, ["run-1"], ["loss"], x="time", buckets=100, finite=True)[("run-1", "loss")]
    assert means.decoded_points == 0 and means.count.tolist() == series.count.tolist()
    zoomed = chart(connection, ["run-1"], ["loss"], x="time", buckets=100, start=series.edges[3], end=series.edges[4])
    assert 0 < zoomed[("run-1", "loss")].decoded_points <= 2 * 8192


def test_runs_share_bucket_edges(connection: sqlite3.Connection) -> None:
    """Two runs charted together get the same edges; relative time starts at each run's own start."""
    write_run(connection, "run-1", 5000, seed=1)
    write_run(connection, "run-2", 8000, seed=2, start=TS + 1000)
    by_time = chart(connection, ["run-1", "run-2"], ["loss"], x="time", buckets=50)
    assert np.array_equal(by_time[("run-1", "loss")].edges, by_time[("run-2", "loss")].edges)
    assert by_time[("run-1", "loss")].count[-10:].sum() == 0  # run-1 ended long before run-2
    relative = chart(connection, ["run-1", "run-2"], ["loss"], x="relative", buckets=50)
    assert relative[("run-1", "loss")].edges[0] == pytest.approx(0.0, abs=0.02)
    assert relative[("run-2", "loss")].count[:5].sum() > 0


def test_points_without_step_stay_off_a_step_chart(connection: sqlite3.Connection) -> None:
    """Calls logged without a step appear on a time chart but not on a step chart."""
    store = SQLiteSeriesStore(connection)
    calls = [Metric("run-1", TS + i, {"x": float(i)}, i if i % 2 else None) for i in range(100)]
    store.write_batch(calls)
    by_step = chart(connection, ["run-1"], ["x"], x="step", buckets=10)[("run-1", "x")]
    by_time = chart(connection, ["run-1"], ["x"], x="time", buckets=10)[("run-1", "x")]
    assert by_step.count.sum() == 50 and by_time.count.sum() == 100
    assert by_step.min[0] == 1.0


def test_integer_series_and_unknown_names(connection: sqlite3.Connection) -> None:
    """Integer values chart as floats; a metric the run never logged is absent from the result."""
    store = SQLiteSeriesStore(connection)
    store.write_batch([Metric("run-1", TS + i, {"n": i * 3}, i) for i in range(1000)])
    result = chart(connection, ["run-1"], ["n", "missing"], x="step", buckets=10)
    assert list(result) == [("run-1", "n")]
    assert result[("run-1", "n")].max[-1] == 2997.0 and result[("run-1", "n")].min[0] == 0.0


def write_spiky_run(connection: sqlite3.Connection, count: int) -> np.ndarray:
    """A run whose loss holds NaN, +Inf and −Inf now and then, and half its calls without a step."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal(count)
    values[rng.random(count) < 0.01] = np.nan
    values[rng.random(count) < 0.003] = np.inf
    values[rng.random(count) < 0.003] = -np.inf
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=2048, block_points=64))
    calls = [Metric("run-1", TS + i / 100, {"loss": float(v)}, i) for i, v in enumerate(values)]
    calls += [Metric("run-1", TS + count / 100 + i, {"other": 1.0}, None) for i in range(10)]
    for begin in range(0, len(calls), 5000):
        store.write_batch(calls[begin : begin + 5000])
    return values


@pytest.mark.parametrize("exact", [True, False])
def test_finite_chart_sums_and_counts_infinities(connection: sqlite3.Connection, exact: bool) -> None:
    """finite=True: per bucket, the finite values' sum, min and max and the ±Inf counts of the points it reports."""
    values = write_spiky_run(connection, 40_000)
    series = chart(connection, ["run-1"], ["loss"], x="step", buckets=97, exact=exact, finite=True)[("run-1", "loss")]
    plain = chart(connection, ["run-1"], ["loss"], x="step", buckets=97, exact=exact)[("run-1", "loss")]
    assert plain.sum is None and plain.pinf is None and plain.ninf is None
    assert series.sum is not None and series.pinf is not None and series.ninf is not None
    assert not series.stepless and series.count.sum() == len(values)
    steps = np.arange(len(values))
    for k in range(97):
        members = (steps >= series.step_low[k]) & (steps <= series.step_high[k])
        kept = values[members]
        finite = kept[np.isfinite(kept)]
        assert members.sum() == series.count[k]
        assert series.pinf[k] == (kept == np.inf).sum() and series.ninf[k] == (kept == -np.inf).sum()
        assert series.sum[k] == pytest.approx(finite.sum(), rel=1e-12, abs=1e-9)
        assert series.min[k] == finite.min() and series.max[k] == finite.max()
        assert series.time_low[k] == pytest.approx(TS + series.step_low[k] / 100, abs=1e-6)
        assert series.time_high[k] == pytest.approx(TS + series.step_high[k] / 100, abs=1e-6)
    if exact:
        width = series.edges[1] - series.edges[0]
        assert np.all(series.step_low >= series.edges[:-1] - 1e-9)
        assert np.all(series.step_high < series.edges[1:] + width * 1e-9 + 1)
    other = chart(connection, ["run-1"], ["other"], x="time", buckets=5, finite=True)[("run-1", "other")]
    assert other.stepless and other.count.sum() == 10 and other.sum is not None and other.sum.sum() == 10.0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"x": "seq"}, ValueError, id="axis"),
        pytest.param({"buckets": 0}, ValueError, id="buckets"),
        pytest.param({"buckets": True}, ValueError, id="bool buckets"),
        pytest.param({"start": "0"}, TypeError, id="start type"),
        pytest.param({"start": math.inf}, ValueError, id="start infinite"),
        pytest.param({"start": 10, "end": 5}, ValueError, id="reversed"),
    ],
)
def test_bad_chart_arguments_raise(connection: sqlite3.Connection, options: dict[str, object], error: type) -> None:
    """Bad chart arguments raise errors that name them."""
    write_run(connection, "run-1", 100)
    with pytest.raises(error):
        chart(connection, ["run-1"], ["loss"], **options)  # type: ignore[arg-type]
