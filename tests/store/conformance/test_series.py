"""The chunk layout of metrics, through the Store interface, the same way on every backend.

Metrics go in as logging calls through the one write path and come back as
series (arrays decoded from chunks), summaries (from chunk summaries alone)
and charts; nothing here knows how a backend stores its chunk rows.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from runwatch.events import Metric, RunLifecycle, RunTransition
from runwatch.exceptions import UnknownRunError
from runwatch.store.base import Store

from .conftest import OWNER, write

T0 = 1_700_000_000.0
NAN_WITH_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_DEAD_BEEF))[0]
FLOATS = [0.1, -0.0, 0.0, math.inf, -math.inf, math.nan, NAN_WITH_PAYLOAD, 5e-324, 1.7976931348623157e308, -2.5]
INTS = [0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 7, 42, -99, 3, 1]


def bits(values: list[float]) -> list[int]:
    return [struct.unpack("<Q", struct.pack("<d", value))[0] for value in values]


def started(run_id: str, at: float = T0) -> RunLifecycle:
    return RunLifecycle(run_id, at, RunTransition.STARTED)


async def test_values_steps_times_and_tags_read_back_exactly_across_commits(store: Store) -> None:
    """Floats bit for bit (NaN payloads, ±Inf, −0.0), 64-bit integers exactly, missing steps and tags kept."""
    calls = [
        Metric(
            "r", T0 + i * 0.001, {"f": FLOATS[i], "n": INTS[i]}, None if i == 4 else i, {"k": str(i)} if i % 3 else None
        )
        for i in range(10)
    ]
    await write(store, [started("r"), *calls[:3]], calls[3:7], calls[7:])  # three commits: open chunks grow

    series = store.read_series("r", columns=("seq", "step", "time", "value", "tags"))
    assert list(series) == ["f", "n"]
    f, n = series["f"].points, series["n"].points
    assert bits(f.values.tolist()) == bits(FLOATS)
    assert n.values.dtype == np.int64 and n.values.tolist() == INTS
    assert f.seq.tolist() == n.seq.tolist() and len(set(f.seq.tolist())) == 10
    assert f.step_valid is not None and f.step_valid.tolist() == [i != 4 for i in range(10)]
    assert [int(s) for s, ok in zip(f.step, f.step_valid, strict=True) if ok] == [i for i in range(10) if i != 4]
    assert f.time_us.tolist() == [round((T0 + i * 0.001) * 1e6) for i in range(10)]
    assert f.tags == [None if i % 3 == 0 else f'{{"k":"{i}"}}' for i in range(10)]


async def test_series_come_in_order_of_first_appearance_and_ranges_cut_at_points(store: Store) -> None:
    """Without names, metrics come in the order first logged; seq, step and time ranges keep only points inside."""
    calls = [
        Metric("r", T0 + i, {"z": float(i), "a": float(-i)} if i % 2 else {"z": float(i)}, 100 + i) for i in range(20)
    ]
    await write(store, [started("r"), *calls])

    assert list(store.read_series("r")) == ["z", "a"]
    assert list(store.read_series("r", ["a", "z"])) == ["a", "z"]
    assert store.read_series("r", ["never"]) == {}
    seqs = store.read_series("r", ["z"])["z"].points.seq
    by_seq = store.read_series("r", ["z"], start=int(seqs[5]), end=int(seqs[7]))["z"].points
    assert by_seq.values.tolist() == [5.0, 6.0, 7.0]
    by_step = store.read_series("r", ["a"], start=104, end=110, by="step")["a"].points
    assert by_step.step.tolist() == [105, 107, 109]
    by_time = store.read_series("r", ["z"], start=T0 + 18, by="time")["z"].points
    assert by_time.values.tolist() == [18.0, 19.0]
    with pytest.raises(UnknownRunError):
        store.read_series("nope")
    with pytest.raises(ValueError, match="by must be"):
        store.read_series("r", by="rows")  # type: ignore[arg-type]


async def test_summaries_agree_with_the_points(store: Store) -> None:
    """Count, NaN count, min, max, sum and last come from chunk summaries and match the points."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal(3000)
    values[::97] = np.nan
    calls = [Metric("r", T0 + i * 0.01, {"loss": float(v), "count": i}, i) for i, v in enumerate(values)]
    await write(store, [started("r"), *calls[:1000]], calls[1000:2500], calls[2500:])

    summaries = store.read_summaries("r")
    assert list(summaries) == ["loss", "count"]
    loss = summaries["loss"]
    finite = values[~np.isnan(values)]
    assert (loss.count, loss.nan_count) == (3000, int(np.isnan(values).sum()))
    assert (loss.min, loss.max) == (float(finite.min()), float(finite.max()))
    assert loss.sum == pytest.approx(float(finite.sum()))
    assert loss.last == float(values[-1])
    assert (loss.step_first, loss.step_last) == (0, 2999)
    assert (loss.time_first, loss.time_last) == (round(T0 * 1e6), round((T0 + 29.99) * 1e6))
    count = summaries["count"]
    assert (count.min, count.max, count.sum, count.last) == (0, 2999, sum(range(3000)), 2999)


async def test_a_run_that_ends_keeps_sealed_chunks_only(store: Store) -> None:
    """Commits leave the open chunk in pieces; the run's end seals each series into whole chunks."""
    batches = [
        [Metric("r", T0 + i, {"x": float(i)}, i) for i in range(start, start + 10)] for start in range(0, 50, 10)
    ]
    writer = store.open_writer(owner=OWNER)
    await writer.open()
    try:
        for batch in [[started("r")], *batches]:
            await writer.write(batch)
        assert store.read_summaries("r")["x"].chunks > 1  # one piece per size tier of the open chunk
        await writer.write([RunLifecycle("r", T0 + 100, RunTransition.COMPLETED)])
    finally:
        await writer.aclose()
    summary = store.read_summaries("r")["x"]
    assert (summary.chunks, summary.count) == (1, 50)
    assert store.read_series("r", ["x"])["x"].points.values.tolist() == [float(i) for i in range(50)]


async def test_a_writer_continues_the_open_chunks_another_writer_left(store: Store) -> None:
    """A process that stopped mid-run leaves open chunks; the next writer of the run adopts and seals them."""
    await write(store, [started("r")], *[[Metric("r", T0 + i, {"x": float(i)}, i)] for i in range(5)])
    left = store.read_summaries("r")["x"]
    assert left.chunks > 1 and left.count == 5
    await write(store, [Metric("r", T0 + 5, {"x": 5.0}, 5), RunLifecycle("r", T0 + 6, RunTransition.COMPLETED)])
    summary = store.read_summaries("r")["x"]
    assert (summary.chunks, summary.count) == (1, 6)
    assert store.read_series("r", ["x"])["x"].points.values.tolist() == [float(i) for i in range(6)]


async def test_a_new_writer_numbers_calls_after_the_stored_ones(store: Store) -> None:
    """A run written again by another writer (a resumed process) continues its call numbers."""
    await write(store, [started("r"), *[Metric("r", T0 + i, {"x": float(i)}, i) for i in range(5)]])
    await write(store, [Metric("r", T0 + 5 + i, {"x": float(5 + i), "y": 1.0}, 5 + i) for i in range(5)])
    x = store.read_series("r", ["x"])["x"].points
    assert x.values.tolist() == [float(i) for i in range(10)]
    assert np.all(np.diff(x.seq) > 0)
    y = store.read_series("r", ["y"])["y"].points
    assert y.seq.tolist() == x.seq[5:].tolist()  # one call, one number, whatever it logged


async def test_a_long_series_charts_from_summaries_with_step_ranges(store: Store) -> None:
    """40,000 calls in 50 time buckets: every point counted once, extremes exact, few points decoded."""
    values = np.sin(np.arange(40_000) / 500.0)
    batches = [
        [Metric("r", T0 + i * 0.01, {"s": float(values[i])}, i) for i in range(start, start + 10_000)]
        for start in range(0, 40_000, 10_000)
    ]
    await write(store, [started("r")], *batches)

    chart = store.chart(["r"], ["s"], x="time", buckets=50)[("r", "s")]
    assert int(chart.count.sum()) == 40_000
    assert np.nanmax(chart.max) == values.max() and np.nanmin(chart.min) == values.min()
    assert chart.decoded_points < 40_000 // 2
    filled = chart.count > 0
    assert np.all(chart.step_low[filled] <= chart.step_high[filled])
    assert chart.step_low[filled][0] == 0 and chart.step_high[filled][-1] == 39_999
    by_step = store.chart(["r"], ["s"], x="step", buckets=100, start=0, end=39_999)[("r", "s")]
    assert np.array_equal(by_step.step_low, by_step.x_low, equal_nan=True)


async def test_a_finite_chart_gives_means_bands_and_infinity_counts(store: Store) -> None:
    """finite=True: per bucket the finite values' sum, min and max, ±Inf and NaN counts, times; stepless flagged."""
    values = [float(i % 7) for i in range(4000)]
    values[100], values[1100], values[2100] = math.inf, -math.inf, math.nan
    calls = [Metric("r", T0 + i, {"v": values[i]}, i) for i in range(4000)]
    await write(store, [started("r")], calls, [Metric("r", T0 + 5000, {"w": 1.0})])

    chart = store.chart(["r"], ["v"], x="step", buckets=4, start=0, end=3999, finite=True)[("r", "v")]
    assert chart.sum is not None and chart.pinf is not None and chart.ninf is not None and not chart.stepless
    assert int(chart.count.sum()) == 4000 and chart.nan_count.tolist()[2] == 1
    assert chart.pinf.tolist()[0] == 1 and chart.ninf.tolist()[1] == 1 and int(chart.pinf.sum() + chart.ninf.sum()) == 2
    finite = np.array(values)
    finite[~np.isfinite(finite)] = 0.0
    assert float(chart.sum.sum()) == float(finite.sum())
    assert chart.min.tolist() == [0.0] * 4 and chart.max.tolist() == [6.0] * 4  # ±Inf left out of the band
    assert chart.time_low[0] == T0 and chart.time_high[-1] == T0 + 3999
    plain = store.chart(["r"], ["v"], x="step", buckets=4, start=0, end=3999)[("r", "v")]
    assert plain.sum is None and plain.max[0] == math.inf and plain.min[1] == -math.inf
    stepless = store.chart(["r"], ["w"], x="time", buckets=4, finite=True)[("r", "w")]
    assert stepless.stepless and int(stepless.count.sum()) == 1


async def test_a_failed_batch_stores_nothing_and_the_writer_goes_on(store: Store) -> None:
    """A batch refused whole (a name no store can take) leaves no point behind; the next batch numbers on."""
    writer = store.open_writer(owner=OWNER)
    await writer.open()
    try:
        await writer.write([started("r"), Metric("r", T0, {"x": 1.0}, 0)])
        with pytest.raises(Exception):  # noqa: B017 - the backend's own refusal, whatever its type
            await writer.write([Metric("r", T0 + 1, {"x": 2.0}, 1), Metric("r", T0 + 1, {"bad\ud800": 1.0})])
        await writer.write([Metric("r", T0 + 2, {"x": 3.0}, 2)])
    finally:
        await writer.aclose()
    x = store.read_series("r", ["x"])["x"].points
    assert x.values.tolist() == [1.0, 3.0]
    assert store.run_summary("r")["metrics"]["x"]["count"] == 2


async def test_logging_calls_come_back_whole_by_number_through_the_tail_and_stored_rows(store: Store) -> None:
    """Calls of two interleaved runs are numbered store-wide in commit order; the tail and stored_rows
    give each call back whole (values bit for bit, 64-bit integers, step or none, tags), once."""
    store.prepare()
    tail = store.open_tail()
    tail.open()
    try:
        logged = []
        for i in range(300):
            run_id = "a" if i % 3 else "b"
            values: dict[str, float | int] = {"f": FLOATS[i % len(FLOATS)], "n": INTS[i % len(INTS)]}
            if i % 7 == 0:
                values = {"only": float(i)}
            logged.append(
                Metric(run_id, T0 + i * 0.001, values, None if i % 5 == 0 else i, {"k": str(i)} if i % 4 else None)
            )
        await write(store, [started("a"), started("b")], logged[:120], logged[120:])
        read = tail.read()
        tailed = [row.event for row in read.rows["metric_rows"]]
        positions = [row.position for row in read.rows["metric_rows"]]
        assert positions == sorted(positions) and len(set(positions)) == 300
        for run_id in ("a", "b"):
            mine = [event for event in logged if event.run_id == run_id]
            pages, start = [], 0
            while True:
                page = store.stored_rows(run_id, "metric_rows", start, 17)
                pages += [row.event for row in page.rows]
                if page.read < 17:
                    break
                start = page.next_start
            for got in (pages, [event for event in tailed if event.run_id == run_id]):
                assert len(got) == len(mine)
                for want, event in zip(mine, got, strict=True):
                    assert (event.step, event.tags, sorted(event.values)) == (want.step, want.tags, sorted(want.values))
                    assert event.timestamp == pytest.approx(want.timestamp, abs=1e-6)
                    for name, value in want.values.items():
                        got_value = event.values[name]
                        assert type(got_value) is type(value)
                        assert bits([got_value]) == bits([value]) if type(value) is float else got_value == value
        assert store.stored_row_count("a") == 200 + 1  # its calls and its start event
    finally:
        tail.close()
