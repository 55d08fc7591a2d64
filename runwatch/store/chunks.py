"""Metric chunks: the points of one series over a range of logging calls, as columns.

Pure code (numpy and zlib; no database, no clock). A chunk holds, for
``count`` consecutive points of one (run, metric) series:

- ``seq``: the run's logging-call number of each point (strictly increasing);
- ``step``: the training step (int64), with a validity mask when some
  call gave none;
- ``time_us``: the call's time as integer microseconds since the epoch
  (PostgreSQL's ``timestamptz`` precision; ``round(seconds * 1e6)``);
- ``values``: float64 bit for bit, or int64 when every value of the chunk
  is an integer;
- ``tags``: the call's tags as canonical JSON text, or None (optional).

Its summary (count, NaN count, min, max, sum, last value, first/last/min/max
of step and time, first/last call) is kept beside the encoded columns, and
so are *block summaries*: count, NaN count, min, max and the step and time
ranges of every ``block_points`` consecutive points. A chart reads those
instead of points (see :mod:`runwatch.store.chart`).

Summary conventions (as ``metric_stats`` today): ``min``/``max``/``sum``
ignore NaN; they are None when every value is NaN; a ``sum`` of None beside
non-NaN values means the sum is NaN (+Inf and −Inf met). ``last`` is the
value of the last point, NaN included. Integer chunks keep exact integer
``min``/``max``/``last``; their ``sum`` is exact while it fits in int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from .codecs import (
    CodecError,
    decode_float_column,
    decode_int_column,
    decode_mask,
    decode_texts,
    encode_float_column,
    encode_int_column,
    encode_mask,
    encode_texts,
)

__all__ = [
    "BLOCK_POINTS",
    "CHUNK_FORMAT",
    "FLOAT_BLOCK",
    "INT_BLOCK",
    "INT64_MAX",
    "INT64_MIN",
    "VALUE_FLOAT",
    "VALUE_INT",
    "ChunkColumns",
    "ColumnCache",
    "EncodedChunk",
    "block_dtype",
    "decode_chunk",
    "encode_chunk",
    "parse_blocks",
]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The layout version of a chunk row (bumped when blocks or columns change meaning). Format 2 adds each
#: block's finite sum and ±Inf counts (format 1 was never stored by a registered schema).
CHUNK_FORMAT: Final = 2
#: Points per block summary.
BLOCK_POINTS: Final = 256
VALUE_FLOAT: Final = 0
VALUE_INT: Final = 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_BLOCK_FIELDS: Final = [
    ("count", "<u4"),
    ("nan_count", "<u4"),
    ("min", None),
    ("max", None),
    ("step_min", "<i8"),  # INT64_MAX when no point of the block has a step
    ("step_max", "<i8"),  # INT64_MIN likewise
    ("time_min", "<i8"),
    ("time_max", "<i8"),
    ("sum", "<f8"),  # of the finite values (float64 also for integer chunks): with the counts, a mean
    ("pinf", "<u4"),  # +Inf values
    ("ninf", "<u4"),  # -Inf values
]


def block_dtype(value_type: int) -> np.dtype[Any]:
    """The record type of one block summary for chunks of ``value_type``."""
    value = "<f8" if value_type == VALUE_FLOAT else "<i8"
    return np.dtype([(name, kind or value) for name, kind in _BLOCK_FIELDS])


FLOAT_BLOCK: Final = block_dtype(VALUE_FLOAT)
INT_BLOCK: Final = block_dtype(VALUE_INT)

ColumnName = Literal["seq", "step", "time", "value", "tags"]
ALL_COLUMNS: Final[frozenset[str]] = frozenset({"seq", "step", "time", "value", "tags"})


@dataclass(frozen=True, slots=True)
class ChunkColumns:
    """The points of a chunk (or of any part of a series) as parallel arrays.

    Attributes:
        seq: logging-call numbers, int64, strictly increasing.
        step: steps, int64 (0 where ``step_valid`` is False).
        step_valid: which points have a step; None when all do.
        time_us: times in microseconds since the epoch, int64.
        values: float64, or int64 for an integer series.
        tags: canonical JSON text of each call's tags, or None for a chunk
            whose calls had none.
    """

    seq: Int64Array
    step: Int64Array
    step_valid: BoolArray | None
    time_us: Int64Array
    values: npt.NDArray[Any]
    tags: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.seq)

    def slice(self, start: int, stop: int) -> ChunkColumns:
        """Points ``start`` to ``stop`` (views, not copies)."""
        return ChunkColumns(
            self.seq[start:stop],
            self.step[start:stop],
            None if self.step_valid is None else self.step_valid[start:stop],
            self.time_us[start:stop],
            self.values[start:stop],
            None if self.tags is None else self.tags[start:stop],
        )

    @property
    def value_type(self) -> int:
        """VALUE_INT for int64 values, VALUE_FLOAT otherwise."""
        return VALUE_INT if self.values.dtype == np.int64 else VALUE_FLOAT


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """A chunk as stored: its summary and its encoded columns.

    ``steps`` is None when no point has a step; ``step_mask`` is None when
    every point has one; ``tags`` is None when no call had tags.
    """

    count: int
    nan_count: int
    value_type: int
    min: float | int | None
    max: float | int | None
    sum: float | int | None
    last: float | int | None
    seq_first: int
    seq_last: int
    step_first: int | None
    step_last: int | None
    step_min: int | None
    step_max: int | None
    time_first: int
    time_last: int
    time_min: int
    time_max: int
    blocks: bytes
    seqs: bytes
    steps: bytes | None
    step_mask: bytes | None
    times: bytes
    vals: bytes
    tags: bytes | None
    block_points: int = BLOCK_POINTS
    format: int = CHUNK_FORMAT

    @property
    def stored_bytes(self) -> int:
        """Bytes of the encoded columns and block summaries."""
        blobs = (self.blocks, self.seqs, self.steps, self.step_mask, self.times, self.vals, self.tags)
        return sum(len(blob) for blob in blobs if blob)


class ColumnCache:
    """Encoded call columns (call numbers, steps, times) by content, for one batch of chunks.

    The metrics logged by the same calls share these columns; within one
    commit each distinct column is then encoded once. Keys are the columns'
    bytes, so equal content always hits and different content never does.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int, bytes], Any] = {}

    def get(self, kind: str, array: npt.NDArray[Any], extra: int, make: Any) -> Any:
        """The cached result for ``array`` (and ``extra``), made by ``make()`` on a miss."""
        key = (kind, extra, array.tobytes())
        found = self._entries.get(key)
        if found is None:
            found = self._entries[key] = make()
        return found


def encode_chunk(
    columns: ChunkColumns, *, block_points: int = BLOCK_POINTS, cache: ColumnCache | None = None, fast: bool = False
) -> EncodedChunk:
    """Encode ``columns`` (at least one point) with its summary and block summaries.

    ``cache`` shares the encoding of call columns between chunks of one commit.
    ``fast`` stores the columns' byte planes raw (see
    :func:`~runwatch.store.codecs.encode_float_column`): for segments of an
    open chunk, which its sealing encodes again.

    Raises:
        ValueError: no points, columns of unequal length, ``seq`` not
            strictly increasing, or values neither float64 nor int64.
    """
    count = len(columns.seq)
    if count == 0:
        raise ValueError("a chunk holds at least one point")
    for name, array in (("step", columns.step), ("time_us", columns.time_us), ("values", columns.values)):
        if len(array) != count:
            raise ValueError(f"column {name} has {len(array)} points, seq has {count}")
    if columns.step_valid is not None and len(columns.step_valid) != count:
        raise ValueError("step_valid does not match the point count")
    if columns.tags is not None and len(columns.tags) != count:
        raise ValueError("tags do not match the point count")
    if count > 1 and not bool(np.all(np.diff(columns.seq) > 0)):
        raise ValueError("seq must be strictly increasing within a chunk")
    if block_points < 1:
        raise ValueError(f"block_points must be at least 1, got {block_points}")
    values = columns.values
    if values.dtype == np.int64:
        value_type = VALUE_INT
    elif values.dtype == np.float64:
        value_type = VALUE_FLOAT
    else:
        raise ValueError(f"chunk values must be float64 or int64, got {values.dtype}")

    valid = columns.step_valid
    if valid is not None and bool(valid.all()):
        valid = None
    has_steps = valid is None or bool(valid.any())
    cache = cache or ColumnCache()
    kind = ":fast" if fast else ""  # cached call columns of either encoding stay apart
    mask_bytes = np.packbits(valid).tobytes() if valid is not None else b""
    x_ranges = cache.get(
        "x" + mask_bytes.hex(),
        np.concatenate((columns.step, columns.time_us)),
        block_points,
        lambda: _x_ranges(columns.step, valid, columns.time_us, block_points),
    )
    blocks = _block_summaries(x_ranges, values, value_type, block_points)
    summary = _summary(blocks, values, value_type)
    steps_present = columns.step if valid is None else columns.step[valid]
    times = columns.time_us
    return EncodedChunk(
        count=count,
        nan_count=summary[0],
        value_type=value_type,
        min=summary[1],
        max=summary[2],
        sum=summary[3],
        last=summary[4],
        seq_first=int(columns.seq[0]),
        seq_last=int(columns.seq[-1]),
        step_first=int(steps_present[0]) if has_steps else None,
        step_last=int(steps_present[-1]) if has_steps else None,
        step_min=int(blocks["step_min"].min()) if has_steps else None,
        step_max=int(blocks["step_max"].max()) if has_steps else None,
        time_first=int(times[0]),
        time_last=int(times[-1]),
        time_min=int(blocks["time_min"].min()),
        time_max=int(blocks["time_max"].max()),
        blocks=blocks.tobytes(),
        seqs=cache.get("seq" + kind, columns.seq, 0, lambda: encode_int_column(columns.seq, fast=fast)),
        steps=cache.get(
            "step" + kind + mask_bytes.hex(), columns.step, 0, lambda: _encode_steps(columns.step, valid, fast)
        )
        if has_steps
        else None,
        step_mask=encode_mask(valid) if valid is not None and has_steps else None,
        times=cache.get("time" + kind, times, 0, lambda: encode_int_column(times, fast=fast)),
        vals=encode_float_column(values, fast=fast)
        if value_type == VALUE_FLOAT
        else encode_int_column(values, fast=fast),
        tags=None if columns.tags is None or all(t is None for t in columns.tags) else encode_texts(columns.tags),
        block_points=block_points,
    )


def decode_chunk(
    chunk: EncodedChunk | ChunkRow,
    columns: frozenset[str] = ALL_COLUMNS,
    *,
    out: dict[str, npt.NDArray[Any]] | None = None,
) -> ChunkColumns:
    """The columns of an encoded chunk.

    Args:
        chunk: an :class:`EncodedChunk`, or any object with its attributes
            (``count``, ``value_type``, ``seqs``, ``steps``, ``step_mask``,
            ``times``, ``vals``, ``tags``).
        columns: which of ``seq``, ``step``, ``time``, ``value``, ``tags`` to
            decode; the others come back as empty arrays (tags: None).
        out: arrays of ``count`` entries to decode into, by column name
            (``seq``, ``step``, ``time``, ``value``), e.g. slices of a read's
            result, so no concatenation is needed.

    Raises:
        CodecError: a column blob is malformed.
    """
    count = chunk.count
    out = out or {}
    empty = np.empty(0, dtype=np.int64)
    seq = decode_int_column(chunk.seqs, count, out.get("seq")) if "seq" in columns else empty
    valid: BoolArray | None = None
    if "step" in columns:
        if chunk.steps is None:
            step = out.get("step")
            step = np.zeros(count, dtype=np.int64) if step is None else _zero(step)
            valid = np.zeros(count, dtype=np.bool_)
        else:
            step = decode_int_column(chunk.steps, count, out.get("step"))
            if chunk.step_mask is not None:
                valid = decode_mask(chunk.step_mask, count)
                step[~valid] = 0
    else:
        step = empty
    time_us = decode_int_column(chunk.times, count, out.get("time")) if "time" in columns else empty
    if "value" in columns:
        if chunk.value_type == VALUE_FLOAT:
            values: npt.NDArray[Any] = decode_float_column(chunk.vals, count, out.get("value"))
        elif chunk.value_type == VALUE_INT:
            values = decode_int_column(chunk.vals, count, out.get("value"))
        else:
            raise CodecError(f"unknown value type {chunk.value_type}")
    else:
        values = np.empty(0, dtype=np.float64)
    tags = decode_texts(chunk.tags, count) if "tags" in columns and chunk.tags is not None else None
    return ChunkColumns(seq, step, valid, time_us, values, tags)


class ChunkRow:
    """The attributes :func:`decode_chunk` needs, from a stored row (no summary parsing)."""

    __slots__ = ("count", "seqs", "step_mask", "steps", "tags", "times", "vals", "value_type")

    def __init__(
        self,
        count: int,
        value_type: int,
        seqs: bytes,
        steps: bytes | None,
        step_mask: bytes | None,
        times: bytes,
        vals: bytes,
        tags: bytes | None,
    ) -> None:
        self.count = count
        self.value_type = value_type
        self.seqs = seqs
        self.steps = steps
        self.step_mask = step_mask
        self.times = times
        self.vals = vals
        self.tags = tags


def parse_blocks(blob: bytes, value_type: int) -> npt.NDArray[Any]:
    """The block summaries of a chunk as a structured array (a view of ``blob``).

    Raises:
        CodecError: the blob is not a whole number of block records.
    """
    dtype = FLOAT_BLOCK if value_type == VALUE_FLOAT else INT_BLOCK
    if len(blob) % dtype.itemsize:
        raise CodecError(f"block summaries of {len(blob)} bytes are not whole {dtype.itemsize}-byte records")
    return np.frombuffer(blob, dtype=dtype)


def _zero(array: Int64Array) -> Int64Array:
    array[:] = 0
    return array


def _filled_steps(step: Int64Array, valid: BoolArray | None) -> Int64Array:
    """Steps with each missing one replaced by the previous present one, so deltas stay small."""
    if valid is None:
        return step
    positions = np.where(valid, np.arange(len(step)), -1)
    np.maximum.accumulate(positions, out=positions)
    first = int(np.argmax(valid))
    positions[positions < 0] = first
    return step[positions]


def _encode_steps(step: Int64Array, valid: BoolArray | None, fast: bool) -> bytes:
    return encode_int_column(_filled_steps(step, valid), fast=fast)


def _x_ranges(
    step: Int64Array, valid: BoolArray | None, time_us: Int64Array, block_points: int
) -> tuple[Int64Array, Int64Array, Int64Array, Int64Array]:
    """Per block: step min and max (INT64_MAX/INT64_MIN without steps), time min and max."""
    starts = np.arange(0, len(step), block_points)
    if valid is None:
        step_min = np.minimum.reduceat(step, starts)
        step_max = np.maximum.reduceat(step, starts)
    else:
        step_min = np.minimum.reduceat(np.where(valid, step, INT64_MAX), starts)
        step_max = np.maximum.reduceat(np.where(valid, step, INT64_MIN), starts)
    return step_min, step_max, np.minimum.reduceat(time_us, starts), np.maximum.reduceat(time_us, starts)


def _block_summaries(
    x_ranges: tuple[Int64Array, Int64Array, Int64Array, Int64Array],
    values: npt.NDArray[Any],
    value_type: int,
    block_points: int,
) -> npt.NDArray[Any]:
    count = len(values)
    starts = np.arange(0, count, block_points)
    blocks = np.empty(len(starts), dtype=FLOAT_BLOCK if value_type == VALUE_FLOAT else INT_BLOCK)
    blocks["count"] = np.diff(np.append(starts, count))
    if value_type == VALUE_FLOAT:
        nan = np.isnan(values)
        blocks["nan_count"] = np.add.reduceat(nan.astype(np.uint32), starts) if nan.any() else 0
        # fmin/fmax skip NaN; a block of NaN only gives NaN.
        blocks["min"] = np.fmin.reduceat(values, starts)
        blocks["max"] = np.fmax.reduceat(values, starts)
        finite = np.isfinite(values)
        with np.errstate(over="ignore", invalid="ignore"):  # a sum of huge finite values may overflow to ±Inf
            if finite.all():
                blocks["sum"] = np.add.reduceat(values, starts)
                blocks["pinf"] = blocks["ninf"] = 0
            else:
                blocks["sum"] = np.add.reduceat(np.where(finite, values, 0.0), starts)
                blocks["pinf"] = np.add.reduceat((values == np.inf).astype(np.uint32), starts)
                blocks["ninf"] = np.add.reduceat((values == -np.inf).astype(np.uint32), starts)
    else:
        blocks["nan_count"] = 0
        blocks["min"] = np.minimum.reduceat(values, starts)
        blocks["max"] = np.maximum.reduceat(values, starts)
        blocks["sum"] = np.add.reduceat(values.astype(np.float64), starts)
        blocks["pinf"] = blocks["ninf"] = 0
    blocks["step_min"], blocks["step_max"], blocks["time_min"], blocks["time_max"] = x_ranges
    return blocks


def _summary(
    blocks: npt.NDArray[Any], values: npt.NDArray[Any], value_type: int
) -> tuple[int, float | int | None, float | int | None, float | int | None, float | int | None]:
    """NaN count, min, max, sum and last value of a chunk."""
    if value_type == VALUE_INT:
        return 0, int(blocks["min"].min()), int(blocks["max"].max()), _exact_int_sum(values), int(values[-1])
    nan_count = int(blocks["nan_count"].sum())
    last = float(values[-1])
    if nan_count == len(values):
        return nan_count, None, None, None, last
    with np.errstate(invalid="ignore", over="ignore"):
        total = float(np.nansum(values)) if nan_count else float(values.sum())
    low = float(np.fmin.reduce(blocks["min"]))
    high = float(np.fmax.reduce(blocks["max"]))
    return nan_count, low, high, None if total != total else total, last


def _exact_int_sum(values: Int64Array) -> int | float:
    """The exact sum of int64 values (as int when it fits int64, else as the nearest float)."""
    # Split each value into its signed high and unsigned low 32 bits: both partial sums fit int64.
    high = int((values >> 32).sum())
    low = int((values & 0xFFFFFFFF).sum())
    total = (high << 32) + low
    return total if INT64_MIN <= total <= INT64_MAX else float(total)
