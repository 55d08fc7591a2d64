"""Tests for runwatch.store.chunks: a chunk's columns round-trip and its summaries match its points."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.store.chunks import (
    INT64_MAX,
    INT64_MIN,
    VALUE_FLOAT,
    VALUE_INT,
    ChunkColumns,
    decode_chunk,
    encode_chunk,
    parse_blocks,
)


@st.composite
def chunk_columns(draw: st.DrawFn) -> ChunkColumns:
    count = draw(st.integers(1, 300))
    seq = np.cumsum(np.array(draw(st.lists(st.integers(1, 5), min_size=count, max_size=count)), dtype=np.int64))
    seq += draw(st.integers(0, 2**40))
    step = np.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=count, max_size=count)), dtype=np.int64)
    valid = None
    if draw(st.booleans()):
        valid = np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=np.bool_)
        step[~valid] = 0
    time_us = np.array(draw(st.lists(st.integers(0, 2**62), min_size=count, max_size=count)), dtype=np.int64)
    if draw(st.booleans()):
        values = np.array(draw(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=count, max_size=count)))
        values = values.astype(np.int64)
    else:
        bits = draw(st.lists(st.integers(0, 2**64 - 1), min_size=count, max_size=count))
        values = np.array(bits, dtype=np.uint64).view(np.float64)
    tags = None
    if draw(st.booleans()):
        tags = draw(st.lists(st.sampled_from([None, '{"a":"b"}', '{"action":"left"}']), min_size=count, max_size=count))
    return ChunkColumns(seq, step, valid, time_us, values, tags)


@settings(max_examples=100, deadline=None)
@given(chunk_columns(), st.integers(1, 120))
def test_chunks_round_trip_bit_for_bit(columns: ChunkColumns, block_points: int) -> None:
    """Every column of a chunk comes back exactly: values bit for bit, missing steps missing."""
    chunk = encode_chunk(columns, block_points=block_points)
    decoded = decode_chunk(chunk)
    assert decoded.seq.tolist() == columns.seq.tolist()
    assert decoded.time_us.tolist() == columns.time_us.tolist()
    assert decoded.values.dtype == columns.values.dtype
    assert decoded.values.view(np.uint64).tolist() == columns.values.view(np.uint64).tolist()
    expected_valid = np.ones(len(columns), dtype=np.bool_) if columns.step_valid is None else columns.step_valid
    got_valid = np.ones(len(columns), dtype=np.bool_) if decoded.step_valid is None else decoded.step_valid
    assert got_valid.tolist() == expected_valid.tolist()
    assert decoded.step[got_valid].tolist() == columns.step[expected_valid].tolist()
    expected_tags = None if columns.tags is None or all(t is None for t in columns.tags) else columns.tags
    assert decoded.tags == expected_tags


@settings(max_examples=100, deadline=None)
@given(chunk_columns(), st.integers(1, 120))
def test_summaries_match_the_points(columns: ChunkColumns, block_points: int) -> None:
    """Chunk and block summaries agree with figures computed from the points themselves."""
    chunk = encode_chunk(columns, block_points=block_points)
    values = columns.values
    assert chunk.count == len(values)
    assert chunk.seq_first == columns.seq[0] and chunk.seq_last == columns.seq[-1]
    assert chunk.time_min == columns.time_us.min() and chunk.time_max == columns.time_us.max()
    assert chunk.time_first == columns.time_us[0] and chunk.time_last == columns.time_us[-1]
    valid = np.ones(len(values), dtype=np.bool_) if columns.step_valid is None else columns.step_valid
    if valid.any():
        assert chunk.step_min == columns.step[valid].min() and chunk.step_max == columns.step[valid].max()
        assert chunk.step_first == columns.step[valid][0] and chunk.step_last == columns.step[valid][-1]
    else:
        assert chunk.step_min is None and chunk.steps is None
    if chunk.value_type == VALUE_INT:
        assert chunk.nan_count == 0
        assert (chunk.min, chunk.max, chunk.last) == (int(values.min()), int(values.max()), int(values[-1]))
        exact = sum(int(v) for v in values)
        assert chunk.sum == (exact if INT64_MIN <= exact <= INT64_MAX else float(exact))
    else:
        nan = np.isnan(values)
        assert chunk.nan_count == int(nan.sum())
        assert struct_bits(chunk.last) == struct_bits(float(values[-1]))
        if nan.all():
            assert chunk.min is None and chunk.max is None and chunk.sum is None
        else:
            assert chunk.min == values[~nan].min() and chunk.max == values[~nan].max()
    blocks = parse_blocks(chunk.blocks, chunk.value_type)
    assert blocks["count"].sum() == len(values)
    for index, block in enumerate(blocks):
        part = slice(index * block_points, (index + 1) * block_points)
        block_values = values[part]
        if chunk.value_type == VALUE_FLOAT:
            finite = block_values[~np.isnan(block_values)]
            assert block["nan_count"] == len(block_values) - len(finite)
            if len(finite):
                assert block["min"] == finite.min() and block["max"] == finite.max()
        else:
            assert block["min"] == block_values.min() and block["max"] == block_values.max()
        assert block["time_min"] == columns.time_us[part].min()
        steps = columns.step[part][valid[part]]
        assert block["step_min"] == (steps.min() if len(steps) else INT64_MAX)
        assert block["step_max"] == (steps.max() if len(steps) else INT64_MIN)


def struct_bits(value: float) -> int:
    return int(np.array([value], dtype=np.float64).view(np.uint64)[0])


def test_negative_zero_is_the_minimum_of_a_chunk_of_negative_zeros() -> None:
    """A chunk of −0.0 reports −0.0 as min, max and last (not 0.0)."""
    columns = ChunkColumns(
        np.arange(3, dtype=np.int64), np.arange(3, dtype=np.int64), None, np.arange(3, dtype=np.int64), np.full(3, -0.0)
    )
    chunk = encode_chunk(columns)
    assert math.copysign(1, chunk.min) == -1 and math.copysign(1, chunk.max) == -1  # type: ignore[arg-type]
    assert math.copysign(1, chunk.last) == -1  # type: ignore[arg-type]


def test_sum_of_opposite_infinities_is_recorded_as_unknown() -> None:
    """+Inf and −Inf in one chunk give a NaN sum, stored as None beside non-NaN values."""
    values = np.array([np.inf, -np.inf, 1.0])
    columns = ChunkColumns(np.arange(3), np.arange(3), None, np.arange(3), values)
    chunk = encode_chunk(columns)
    assert chunk.sum is None and chunk.min == -np.inf and chunk.max == np.inf and chunk.nan_count == 0


def test_large_integer_sums_stay_exact_or_become_float() -> None:
    """An integer chunk's sum is exact while it fits int64, else the nearest float."""
    small = ChunkColumns(np.arange(2), np.arange(2), None, np.arange(2), np.array([2**62, 2**62 - 1], dtype=np.int64))
    assert encode_chunk(small).sum == 2**63 - 1
    large = ChunkColumns(np.arange(2), np.arange(2), None, np.arange(2), np.array([2**62, 2**62], dtype=np.int64))
    assert encode_chunk(large).sum == float(2**63)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        pytest.param(
            ChunkColumns(np.empty(0, np.int64), np.empty(0, np.int64), None, np.empty(0, np.int64), np.empty(0)),
            "at least one point",
            id="empty",
        ),
        pytest.param(
            ChunkColumns(np.array([2, 1]), np.arange(2), None, np.arange(2), np.zeros(2)),
            "strictly increasing",
            id="seq order",
        ),
        pytest.param(
            ChunkColumns(np.arange(2), np.arange(3), None, np.arange(2), np.zeros(2)), "step has 3", id="lengths"
        ),
        pytest.param(
            ChunkColumns(np.arange(2), np.arange(2), None, np.arange(2), np.zeros(2, dtype=np.float32)),
            "float64 or int64",
            id="dtype",
        ),
    ],
)
def test_bad_columns_are_refused(columns: ChunkColumns, message: str) -> None:
    """Columns that cannot form a chunk raise ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        encode_chunk(columns)


def test_only_the_asked_columns_are_decoded() -> None:
    """Decoding a subset of columns leaves the others empty."""
    columns = ChunkColumns(np.arange(10), np.arange(10), None, np.arange(10) * 7, np.linspace(0, 1, 10))
    decoded = decode_chunk(encode_chunk(columns), frozenset({"time", "value"}))
    assert len(decoded.seq) == 0 and len(decoded.step) == 0
    assert decoded.time_us.tolist() == (np.arange(10) * 7).tolist()
    assert decoded.values.tolist() == np.linspace(0, 1, 10).tolist()
    assert decode_chunk(encode_chunk(columns)).value_type == VALUE_FLOAT
