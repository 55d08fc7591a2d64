"""Tests for runwatch.store.series: calls become columns, and every commit's writes hold every point.

The builder is pure, so these tests replay its writes into a dictionary that
behaves like the chunk table (deletes, then inserts keyed by series and
first call) and read the points back from there.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.events import Metric
from runwatch.store.chunks import VALUE_FLOAT, VALUE_INT, ChunkColumns, EncodedChunk, decode_chunk
from runwatch.store.series import ChunkWrites, SeriesBuilder, SeriesKey, group_calls, group_rows

TS = 1_700_000_000.0
RUNS = {"run-a": 1, "run-b": 2}


class FakeTable:
    """The chunk table's behaviour: rows keyed by (series, seq_first), deletes before inserts."""

    def __init__(self) -> None:
        self.rows: dict[tuple[SeriesKey, int], tuple[bool, EncodedChunk]] = {}

    def apply(self, writes: ChunkWrites) -> None:
        for delete in writes.deletes:
            for key in [k for k, (sealed, _) in self.rows.items() if k[0] == delete.key and not sealed]:
                if delete.seq_low <= key[1] <= delete.seq_high:
                    del self.rows[key]
        for write in writes.inserts:
            key = (write.key, write.chunk.seq_first)
            assert key not in self.rows, f"primary key collision at {key}"
            self.rows[key] = (write.sealed, write.chunk)

    def series(self) -> dict[SeriesKey, list[tuple[int, Any]]]:
        """Per series, (seq, value) of every stored point, checking chunks are disjoint."""
        out: dict[SeriesKey, list[tuple[int, Any]]] = {}
        for (key, _), (_, chunk) in sorted(self.rows.items(), key=lambda item: (item[0][0], item[0][1])):
            columns = decode_chunk(chunk)
            points = out.setdefault(key, [])
            assert not points or points[-1][0] < int(columns.seq[0]), "chunks overlap"
            points.extend(zip(columns.seq.tolist(), columns.values.tolist(), strict=True))
        return out


def same(stored: Any, logged: Any) -> bool:
    """Whether a stored value is the logged one: floats bit for bit, integers exactly (as int or exact float)."""
    if type(logged) is float:
        return type(stored) is float and struct.pack("<d", stored) == struct.pack("<d", logged)
    if abs(logged) > 2**53:
        return type(stored) is int and stored == logged
    return stored == logged and not (type(stored) is float and math.isnan(stored))


def float_values() -> st.SearchStrategy[float]:
    patterns = st.integers(0, 2**64 - 1).map(lambda bits: struct.unpack("<d", struct.pack("<Q", bits))[0])
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-0.0, math.inf, -math.inf]), patterns
    )


VALUES = st.one_of(float_values(), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 5))
CALL = st.tuples(
    st.sampled_from(sorted(RUNS)),
    st.sampled_from([("loss",), ("loss", "acc"), ("acc", "loss", "lr"), ("count",)]),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    st.one_of(st.none(), st.sampled_from([{"action": "left"}, {"a": "b", "c": "d"}])),
)


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[list[Metric]], dict[str, int]]:
    """Batches of metric calls, each call a Metric event like the producer makes."""
    batches = []
    clock = TS
    for _ in range(draw(st.integers(1, 8))):
        batch = []
        for run_id, names, step, tags in draw(st.lists(CALL, min_size=0, max_size=40)):
            clock += draw(st.sampled_from([0.0, 1e-6, 0.001, 1.0, 7200.0]))
            values = {name: draw(VALUES) for name in names}
            batch.append(Metric(run_id, clock, values, step, tags))
        batches.append(batch)
    options = {
        "chunk_points": draw(st.integers(1, 30)),
        "block_points": draw(st.integers(1, 8)),
        "max_open_segments": draw(st.integers(1, 4)),
        "max_open_points": draw(st.integers(1, 100)),
    }
    return batches, options


@settings(max_examples=150, deadline=None)
@given(sessions(), st.booleans())
def test_every_commit_stores_every_point_added_before_it(
    session: tuple[list[list[Metric]], dict[str, int]], seal_at_end: bool
) -> None:
    """After each commit the table holds every point added so far, once, exactly as logged."""
    batches, options = session
    builder = SeriesBuilder(max_chunk_seconds=3600.0, **options)
    table = FakeTable()
    logged: dict[SeriesKey, list[tuple[int, Any]]] = {}
    next_call = 0
    for batch in batches:
        builder.add_calls(batch, RUNS)
        for event in batch:
            run = RUNS[event.run_id]
            for name, value in event.values.items():
                logged.setdefault((run, name), []).append((next_call, value))
            next_call += 1
        writes = builder.prepare()
        table.apply(writes)
        builder.confirm(writes)
        stored = table.series()
        assert stored.keys() == logged.keys()
        for key, points in logged.items():
            assert [seq for seq, _ in stored[key]] == [seq for seq, _ in points]
            assert all(same(got, want) for (_, got), (_, want) in zip(stored[key], points, strict=True)), key
    if seal_at_end:
        writes = builder.prepare(seal_all=True)
        table.apply(writes)
        builder.confirm(writes)
        assert all(sealed for sealed, _ in table.rows.values())
        assert builder.statistics().open_points == 0
    assert builder.next_seq == next_call


def calls(count: int, run_id: str = "run-a", start: int = 0) -> list[Metric]:
    return [Metric(run_id, TS + i, {"loss": 1.0 / (i + 1), "n": i}, i) for i in range(start, start + count)]


def commit(builder: SeriesBuilder, table: FakeTable, **options: Any) -> ChunkWrites:
    writes = builder.prepare(**options)
    table.apply(writes)
    builder.confirm(writes)
    return writes


def test_a_chunk_seals_at_its_point_bound_and_replaces_its_segments() -> None:
    """Segments persisted at each commit give way to one sealed chunk when the chunk is full."""
    builder = SeriesBuilder(chunk_points=10, max_open_segments=100)
    table = FakeTable()
    for start in range(0, 9, 3):
        builder.add_calls(calls(3, start=start), RUNS)
        commit(builder, table)
    assert sorted(chunk.count for _, chunk in table.rows.values()) == [3, 3, 6, 6]  # segments of 6 and 3, x2
    builder.add_calls(calls(3, start=9), RUNS)
    writes = commit(builder, table)
    assert len(writes.deletes) == 2
    rows = sorted((key, sealed, chunk.count) for key, (sealed, chunk) in table.rows.items())
    assert rows == [
        (((1, "loss"), 0), True, 10),
        (((1, "loss"), 10), False, 2),
        (((1, "n"), 0), True, 10),
        (((1, "n"), 10), False, 2),
    ]


def segment_sizes(table: FakeTable, key: SeriesKey) -> list[int]:
    return [chunk.count for (k, _), (sealed, chunk) in sorted(table.rows.items()) if k == key and not sealed]


def test_segments_merge_by_size_like_a_binary_counter() -> None:
    """Each commit's segment absorbs trailing segments no larger than itself, so rows stay few."""
    builder = SeriesBuilder(chunk_points=1000)
    table = FakeTable()
    seen = []
    for start in range(0, 24, 3):
        builder.add_calls(calls(3, start=start), RUNS)
        commit(builder, table)
        seen.append(segment_sizes(table, (1, "loss")))
    assert seen == [[3], [6], [6, 3], [12], [12, 3], [12, 6], [12, 6, 3], [24]]
    assert builder.statistics().merges == 2 * 4  # two series, four merging commits


def test_segments_merge_into_one_at_the_bound() -> None:
    """Past max_open_segments rows the whole open part becomes one segment."""
    builder = SeriesBuilder(chunk_points=1000, max_open_segments=2)
    table = FakeTable()
    for start in range(0, 21, 3):
        builder.add_calls(calls(3, start=start), RUNS)
        commit(builder, table)
    assert segment_sizes(table, (1, "loss")) == [21]


def test_rewrite_policy_keeps_one_row_per_open_chunk() -> None:
    """max_open_segments=1 rewrites the whole open chunk at every commit (one row, growing)."""
    builder = SeriesBuilder(chunk_points=1000, max_open_segments=1)
    table = FakeTable()
    for start in range(0, 12, 3):
        builder.add_calls(calls(3, start=start), RUNS)
        commit(builder, table)
        counts = [chunk.count for key, (_, chunk) in table.rows.items() if key[0] == (1, "n")]
        assert counts == [start + 3]
    stats = builder.statistics()
    assert stats.new_points == 24 and stats.encoded_points == 2 * (3 + 6 + 9 + 12)


def test_time_bound_seals_a_slow_series() -> None:
    """A chunk spanning more than max_chunk_seconds of event time seals at the next commit."""
    builder = SeriesBuilder(chunk_points=1000, max_chunk_seconds=10.0)
    table = FakeTable()
    builder.add_calls([Metric("run-a", TS, {"x": 1.0}), Metric("run-a", TS + 11, {"x": 2.0})], RUNS)
    commit(builder, table)
    assert [(sealed, chunk.count) for sealed, chunk in table.rows.values()] == [(True, 2)]


def test_memory_bound_seals_the_largest_open_chunks() -> None:
    """Past max_open_points the largest open chunks seal early, so open points stay bounded."""
    builder = SeriesBuilder(chunk_points=1000, max_open_points=50)
    table = FakeTable()
    builder.add_calls([Metric("run-a", TS + i, {"big": float(i)}) for i in range(40)], RUNS)
    builder.add_calls([Metric("run-a", TS + 40 + i, {"small": float(i)}) for i in range(20)], RUNS)
    commit(builder, table)
    sealed = {key[0][1] for key, (is_sealed, _) in table.rows.items() if is_sealed}
    assert sealed == {"big"}
    assert builder.statistics().open_points == 20


def test_integers_beyond_float_precision_never_round() -> None:
    """A metric mixing floats and integers beyond 2**53 gets separate chunks and stays exact."""
    builder = SeriesBuilder()
    table = FakeTable()
    values = [0.5, 2**53 + 1, 2**63 - 1, 1.25, 7, -(2**62) - 3]
    builder.add_calls([Metric("run-a", TS + i, {"x": v}) for i, v in enumerate(values)], RUNS)
    commit(builder, table, seal_all=True)
    stored = [value for _, value in table.series()[(1, "x")]]
    assert all(same(got, want) for got, want in zip(stored, values, strict=True))
    types = [chunk.value_type for _, chunk in sorted(table.rows.values(), key=lambda row: row[1].seq_first)]
    assert types == [VALUE_FLOAT, VALUE_INT, VALUE_FLOAT, VALUE_INT]


def test_an_integer_series_turns_float_when_a_float_arrives() -> None:
    """A counter logged as integers, then once as a float, becomes one float chunk (exact)."""
    builder = SeriesBuilder()
    table = FakeTable()
    builder.add_calls([Metric("run-a", TS + i, {"x": i}) for i in range(5)], RUNS)
    builder.add_calls([Metric("run-a", TS + 5, {"x": math.nan})], RUNS)
    commit(builder, table)
    (chunk,) = [chunk for _, chunk in table.rows.values()]
    assert chunk.value_type == VALUE_FLOAT and chunk.count == 6 and chunk.nan_count == 1


def test_group_calls_numbers_calls_store_wide_in_batch_order() -> None:
    """Calls of interleaved runs get consecutive numbers in batch order, from the number given."""
    batch = [Metric("run-a", TS, {"x": 1.0}), Metric("run-b", TS, {"x": 1.0}), Metric("run-a", TS, {"y": 2})]
    groups = group_calls(batch, RUNS, 10)
    seen = {(g.run, g.names): g.seq.tolist() for g in groups}
    assert seen == {(1, ("x",)): [10], (2, ("x",)): [11], (1, ("y",)): [12]}
    (group,) = [g for g in groups if g.names == ("y",)]
    assert group.columns[0].dtype == np.int64


def test_group_calls_keeps_missing_steps_and_tags() -> None:
    """A call without a step is marked invalid; tags become canonical JSON text."""
    batch = [Metric("run-a", TS, {"x": 1.0}, 5, {"b": "2", "a": "1"}), Metric("run-a", TS + 0.5, {"x": 2.0})]
    (group,) = group_calls(batch, RUNS, 0)
    assert group.step_valid is not None and group.step_valid.tolist() == [True, False]
    assert group.tags == ['{"a":"1","b":"2"}', None]
    assert group.time_us.tolist() == [1_700_000_000_000_000, 1_700_000_000_500_000]


def test_group_rows_types_columns_like_calls() -> None:
    """Rows from the old layout become the same typed columns as calls."""
    seq = np.arange(3, dtype=np.int64)
    group = group_rows(1, ("a", "b"), seq, seq, None, seq, [[1, 0.5], [2, math.inf], [3, -0.0]])
    assert group.columns[0].dtype == np.int64 and group.columns[1].dtype == np.float64


def test_add_between_prepare_and_confirm_is_refused() -> None:
    """The builder refuses new points while a prepared commit is outstanding; abort lets it retry."""
    builder = SeriesBuilder()
    builder.add_calls(calls(2), RUNS)
    writes = builder.prepare()
    with pytest.raises(RuntimeError, match="outstanding"):
        builder.add_calls(calls(1, start=2), RUNS)
    builder.abort(writes)
    again = builder.prepare()
    assert again.new_points == writes.new_points == 4


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"chunk_points": 0}, id="chunk_points"),
        pytest.param({"max_open_segments": 0}, id="segments"),
        pytest.param({"max_chunk_seconds": -1.0}, id="seconds"),
    ],
)
def test_bad_builder_options_raise(options: dict[str, Any]) -> None:
    """Nonsensical options are refused at construction."""
    with pytest.raises(ValueError):
        SeriesBuilder(**options)


def test_columns_come_straight_from_the_calls_as_arrays() -> None:
    """A group's value columns are numpy arrays made from the calls, one per name, float or exact int."""
    (group,) = group_calls(calls(4), RUNS, 0)
    assert isinstance(group.columns[0], np.ndarray) and group.columns[0].dtype == np.float64
    assert group.columns[1].tolist() == [0, 1, 2, 3]
    empty = ChunkColumns(group.seq[:0], group.step[:0], None, group.time_us[:0], group.columns[0][:0])
    assert len(empty) == 0


def test_calls_with_the_same_names_in_another_order_form_one_group() -> None:
    """Name order within a call does not split a batch: each column is taken by name."""
    batch = [Metric("run-a", TS, {"a": 1.0, "b": 2.0}, 0), Metric("run-a", TS + 1, {"b": 4.0, "a": 3.0}, 1)]
    (group,) = group_calls(batch, RUNS, 0)
    assert group.names == ("a", "b")
    assert [column.tolist() for column in group.columns] == [[1.0, 3.0], [2.0, 4.0]]


def test_calls_with_as_many_but_other_names_are_grouped_apart() -> None:
    """Calls logging the same number of different names are told apart (the fast path falls back)."""
    batch = [Metric("run-a", TS, {"a": 1.0}, 0), Metric("run-a", TS + 1, {"b": 2.0}, 1)]
    groups = group_calls(batch, RUNS, 0)
    assert sorted((g.names, g.seq.tolist()) for g in groups) == [(("a",), [0]), (("b",), [1])]
