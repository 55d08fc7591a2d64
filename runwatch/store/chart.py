"""Min/max charts of metric series from chunk and block summaries.

A chart cuts the x range (step, time, or time since the run's start) into
``buckets`` equal intervals and gives, per bucket, the number of points,
NaN count, min and max, and the x range of the points counted. It reads
summaries, not points:

1. a chunk whose x range lies inside one bucket counts whole, from its
   summary columns;
2. otherwise its block summaries (``block_points`` points each) are read;
   a block inside one bucket counts whole;
3. a block that straddles one bucket edge and spans at most half a bucket
   counts whole in the bucket that holds most of its x range ("snapped"),
   unless ``exact=True``;
4. points are decoded only for the other blocks: wider than half a bucket
   (zoomed in, or a jump in x), crossing the chart's start or end, holding
   points without a step on a step axis, or (``exact=True``) straddling
   any edge.

So every point is counted exactly once, and each bucket's min and max are
exact for the points it reports (``x_low``..``x_high``). With snapping, a
point may be counted in the bucket next to its own, and then lies at most a
quarter of a bucket from the edge: at 1M points in 1,000 buckets, a block of
256 points is a quarter of a bucket; at 10M, 1/40. ``exact=True`` removes
that by decoding the straddling blocks' chunks, at the cost of decoding most
chunks of a long series.

``finite=True`` (the compare view's buckets: a mean with a min/max band)
adds each bucket's sum of finite values and ±Inf counts, from the block
summaries (format 2 keeps a block's finite sum and ±Inf counts); min and max
are then those of the finite values, so a block holding ±Inf is decoded
(rare), and no chunk counts whole from its own summary columns (they hold
no sum).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..exceptions import StoreError
from .base import ChartAxis, ChartSeries
from .chunks import INT64_MAX, ChunkRow, decode_chunk, parse_blocks
from .codecs import CodecError
from .queries.common import read_snapshot, run_keys

__all__ = ["ChartSeries", "chart", "check_axis"]

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

_AXES: Final = ("step", "time", "relative")
#: A block straddling a bucket edge is counted whole only if its x span is at most this part of a bucket.
_SNAP_FRACTION: Final = 0.5


@dataclass
class _ChunkInfo:
    rowid: int
    count: int
    value_type: int
    block_points: int
    x_min: int | None
    x_max: int | None
    value_min: Any
    value_max: Any
    nan_count: int
    partial_steps: bool
    blocks: bytes
    step_min: int | None
    step_max: int | None
    time_min: int
    time_max: int


def chart(
    connection: sqlite3.Connection,
    run_ids: Sequence[str],
    names: Sequence[str],
    *,
    x: ChartAxis = "step",
    buckets: int = 1000,
    start: float | None = None,
    end: float | None = None,
    exact: bool = False,
    finite: bool = False,
) -> dict[tuple[str, str], ChartSeries]:
    """Bucketed min/max of metrics of one or more runs on a shared x range.

    Args:
        connection: a connection to a store with the chunk tables.
        run_ids: the runs (compared on the same buckets).
        names: the metrics.
        x: ``step``, ``time`` (epoch seconds) or ``relative`` (seconds since
            each run's start time).
        buckets: the number of buckets (a 2,000-point min/max chart is 1,000).
        start, end: the x range; None takes the extent of the data.
        exact: count every point in its own bucket (decodes the blocks that
            straddle bucket edges).
        finite: also each bucket's sum of finite values and ±Inf counts; min
            and max of the finite values only.

    Returns:
        ``(run_id, name)`` → :class:`ChartSeries`, for the series that exist.

    Raises:
        TypeError, ValueError: a bad argument.
        UnknownRunError: a run id is not in the store.
        StoreError: a chunk cannot be decoded.
    """
    check_axis(x)
    _check_chart_range(buckets, start, end)
    scale = 1.0 if x == "step" else 1e6  # x units → stored integers (steps or microseconds)
    with read_snapshot(connection):
        keys = run_keys(connection, list(dict.fromkeys(run_ids)))
        origins = _origins(connection, keys, x)
        found: list[tuple[str, str, int, list[_ChunkInfo]]] = []
        stepless: set[tuple[str, str]] = set()
        for run_id, run in keys.items():
            for name in dict.fromkeys(names):
                series = _series_chunks(connection, run, name, x)
                if any(c.step_min is None or c.partial_steps for c in series):
                    stepless.add((run_id, name))
                if x == "step":  # a step chart skips chunks without steps
                    series = [chunk for chunk in series if chunk.x_min is not None]
                if series:
                    found.append((run_id, name, run, series))
        # One shared range: in stored integers, relative to each run's origin.
        low = None if start is None else start * scale
        high = None if end is None else end * scale
        if low is None or high is None:
            lows = [min(c.x_min for c in chunks if c.x_min is not None) - origins[run] for _, _, run, chunks in found]
            highs = [max(c.x_max for c in chunks if c.x_max is not None) - origins[run] for _, _, run, chunks in found]
            # A bound given alone may lie beyond the data (a window after its last point): the
            # other end is then the bound itself, and the buckets are empty.
            if low is None:
                low = min(lows) if lows else 0.0 if high is None else high
                low = low if high is None else min(low, high)
            if high is None:
                high = max(max(highs) if highs else low, low)
        if high < low:
            raise ValueError(f"end ({end}) is before start ({start})")
        width = (high - low) / buckets or 1.0
        result: dict[tuple[str, str], ChartSeries] = {}
        for run_id, name, run, chunks in found:
            grid = _Grid(low + origins[run], width, buckets, high + origins[run])
            result[(run_id, name)] = _bucket_series(
                connection,
                run_id,
                name,
                chunks,
                grid,
                x,
                exact,
                finite,
                scale,
                origins[run],
                (run_id, name) in stepless,
            )
    return result


def check_axis(x: object) -> None:
    """Raises ValueError unless ``x`` is a chart axis (``step``, ``time``, ``relative``)."""
    if x not in _AXES:
        raise ValueError(f"x must be 'step', 'time' or 'relative', got {x!r}")


def _check_chart_range(buckets: object, start: object, end: object) -> None:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 1_000_000:
        raise ValueError(f"buckets must be an integer from 1 to 1,000,000, got {buckets!r}")
    for what, bound in (("start", start), ("end", end)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
            raise TypeError(f"{what} must be a number or None, got {bound!r}")
        if bound is not None and not math.isfinite(bound):
            raise ValueError(f"{what} must be finite, got {bound!r}")


def _origins(connection: sqlite3.Connection, keys: dict[str, int], x: ChartAxis) -> dict[int, int]:
    """Per run, the stored x value that is 0 on the chart (the start time in µs for ``relative``)."""
    if x != "relative":
        return dict.fromkeys(keys.values(), 0)
    origins: dict[int, int] = {}
    for run in keys.values():
        row = connection.execute("SELECT start_time FROM runs WHERE id = ?", (run,)).fetchone()
        origins[run] = round(float(row[0]) * 1e6)
    return origins


def _series_chunks(connection: sqlite3.Connection, run: int, name: str, x: ChartAxis) -> list[_ChunkInfo]:
    low_column, high_column = ("step_min", "step_max") if x == "step" else ("time_min", "time_max")
    rows = connection.execute(
        f"SELECT c.rowid, c.count, c.value_type, c.block_points, c.{low_column}, c.{high_column},"
        " c.value_min, c.value_max, c.nan_count, c.step_mask IS NOT NULL, c.blocks, c.step_min, c.step_max,"
        " c.time_min, c.time_max"
        " FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
        " WHERE s.run = ? AND s.name = ? ORDER BY c.seq_first",
        (run, name),
    ).fetchall()
    return [_ChunkInfo(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class _Grid:
    """Bucket k holds stored x in [low + k * width, low + (k + 1) * width) (the last one up to ``high``, included)."""

    low: float
    width: float
    buckets: int
    end: float  # the range's end as asked: low + width * buckets may round off it, or overshoot (no width)

    @property
    def high(self) -> float:
        return self.end

    def bucket(self, x: npt.NDArray[Any]) -> Int64Array:
        index = np.floor((x.astype(np.float64) - self.low) / self.width).astype(np.int64)
        return np.minimum(index, self.buckets - 1)  # the end itself falls in the last bucket

    def inside(self, low: npt.NDArray[Any], high: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        return (low.astype(np.float64) >= self.low) & (high.astype(np.float64) <= self.high)


class _Accumulator:
    def __init__(self, buckets: int, finite: bool) -> None:
        self.count = np.zeros(buckets, dtype=np.int64)
        self.nan_count = np.zeros(buckets, dtype=np.int64)
        self.min = np.full(buckets, np.nan)
        self.max = np.full(buckets, np.nan)
        self.x_low = np.full(buckets, np.nan)
        self.x_high = np.full(buckets, np.nan)
        self.step_low = np.full(buckets, np.nan)
        self.step_high = np.full(buckets, np.nan)
        self.time_low = np.full(buckets, np.nan)
        self.time_high = np.full(buckets, np.nan)
        self.finite = finite
        self.sum = np.zeros(buckets) if finite else None
        self.pinf = np.zeros(buckets, dtype=np.int64) if finite else None
        self.ninf = np.zeros(buckets, dtype=np.int64) if finite else None

    def add(
        self,
        bucket: Int64Array,
        count: npt.NDArray[Any],
        nan_count: npt.NDArray[Any],
        low: npt.NDArray[Any],
        high: npt.NDArray[Any],
        x_low: npt.NDArray[Any],
        x_high: npt.NDArray[Any],
        step_low: npt.NDArray[Any],
        step_high: npt.NDArray[Any],
        time_low: npt.NDArray[Any],
        time_high: npt.NDArray[Any],
        sums: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]] | None = None,
    ) -> None:
        """Add counted points (whole chunks, blocks or single points) to their buckets.

        ``step_low``/``step_high`` are float arrays, NaN where the points have no step;
        times are stored microseconds; ``sums`` (finite sum, +Inf and −Inf counts) when finite.
        """
        if not len(bucket):
            return
        np.add.at(self.count, bucket, count.astype(np.int64))
        np.add.at(self.nan_count, bucket, nan_count.astype(np.int64))
        np.fmin.at(self.min, bucket, low.astype(np.float64))  # fmin/fmax: NaN never wins
        np.fmax.at(self.max, bucket, high.astype(np.float64))
        np.fmin.at(self.x_low, bucket, x_low.astype(np.float64))
        np.fmax.at(self.x_high, bucket, x_high.astype(np.float64))
        np.fmin.at(self.step_low, bucket, step_low)
        np.fmax.at(self.step_high, bucket, step_high)
        np.fmin.at(self.time_low, bucket, time_low.astype(np.float64))
        np.fmax.at(self.time_high, bucket, time_high.astype(np.float64))
        if self.sum is not None and self.pinf is not None and self.ninf is not None and sums is not None:
            with np.errstate(over="ignore", invalid="ignore"):  # huge finite values may sum to ±Inf or NaN
                np.add.at(self.sum, bucket, sums[0].astype(np.float64))
            np.add.at(self.pinf, bucket, sums[1].astype(np.int64))
            np.add.at(self.ninf, bucket, sums[2].astype(np.int64))

    def add_points(
        self, bucket: Int64Array, axis: npt.NDArray[Any], values: Float64Array, steps: Float64Array, times: Any
    ) -> None:
        """Add single points (``values`` as float64: integer chunks give exact floats, never NaN)."""
        nan = np.isnan(values)
        ones = np.ones(len(bucket), dtype=np.int64)
        if not self.finite:
            self.add(bucket, ones, nan, values, values, axis, axis, steps, steps, times, times)
            return
        finite = np.isfinite(values)
        kept = np.where(finite, values, np.nan)
        sums = (np.where(finite, values, 0.0), values == np.inf, values == -np.inf)
        self.add(bucket, ones, nan, kept, kept, axis, axis, steps, steps, times, times, sums)

    def series(
        self, run_id: str, name: str, edges: Float64Array, origin: float, scale: float, decoded: int, stepless: bool
    ) -> ChartSeries:
        return ChartSeries(
            run_id=run_id,
            name=name,
            edges=edges,
            count=self.count,
            nan_count=self.nan_count,
            min=self.min,
            max=self.max,
            x_low=(self.x_low - origin) / scale,
            x_high=(self.x_high - origin) / scale,
            decoded_points=decoded,
            step_low=self.step_low,
            step_high=self.step_high,
            time_low=self.time_low / 1e6,
            time_high=self.time_high / 1e6,
            stepless=stepless,
            sum=self.sum,
            pinf=self.pinf,
            ninf=self.ninf,
        )


def _step_bounds(low: npt.NDArray[Any], high: npt.NDArray[Any]) -> tuple[Float64Array, Float64Array]:
    """Block step ranges as floats, NaN for blocks without a step (stored as INT64_MAX / INT64_MIN)."""
    missing = low == INT64_MAX
    return np.where(missing, np.nan, low.astype(np.float64)), np.where(missing, np.nan, high.astype(np.float64))


def _optional(values: list[int | None]) -> Float64Array:
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)


def _bucket_series(
    connection: sqlite3.Connection,
    run_id: str,
    name: str,
    chunks: list[_ChunkInfo],
    grid: _Grid,
    x: ChartAxis,
    exact: bool,
    finite: bool,
    scale: float,
    origin: int,
    stepless: bool,
) -> ChartSeries:
    acc = _Accumulator(grid.buckets, finite)
    x_min = np.array([c.x_min for c in chunks], dtype=np.int64)
    x_max = np.array([c.x_max for c in chunks], dtype=np.int64)
    overlaps = (x_max.astype(np.float64) >= grid.low) & (x_min.astype(np.float64) <= grid.high)
    partial = np.array([c.partial_steps and x == "step" for c in chunks], dtype=np.bool_)
    whole = overlaps & ~partial & grid.inside(x_min, x_max)
    whole &= grid.bucket(np.where(whole, x_min, 0)) == grid.bucket(np.where(whole, x_max, 0))
    if finite:
        whole[:] = False  # a chunk's own columns hold no sum: its blocks do
    whole_index = np.flatnonzero(whole)
    if len(whole_index):
        picked = [chunks[i] for i in whole_index.tolist()]
        acc.add(
            grid.bucket(x_min[whole_index]),
            np.array([c.count for c in picked]),
            np.array([c.nan_count for c in picked]),
            np.array([np.nan if c.value_min is None else c.value_min for c in picked], dtype=np.float64),
            np.array([np.nan if c.value_max is None else c.value_max for c in picked], dtype=np.float64),
            x_min[whole_index],
            x_max[whole_index],
            _optional([c.step_min for c in picked]),
            _optional([c.step_max for c in picked]),
            np.array([c.time_min for c in picked], dtype=np.int64),
            np.array([c.time_max for c in picked], dtype=np.int64),
        )
    # Chunks to open: their block summaries decide the rest, all blocks of one value type at once.
    raw_blocks: dict[int, npt.NDArray[np.bool_]] = {}  # chunk index → which of its blocks need points
    opened: dict[int, list[int]] = {}
    for index in np.flatnonzero(overlaps & ~whole).tolist():
        chunk = chunks[index]
        if chunk.partial_steps and x == "step":
            raw_blocks[index] = np.ones(-(-chunk.count // chunk.block_points), dtype=np.bool_)
        else:
            opened.setdefault(chunk.value_type, []).append(index)
    for value_type, indices in opened.items():
        blocks = parse_blocks(b"".join([chunks[i].blocks for i in indices]), value_type)
        per_chunk = np.array([len(chunks[i].blocks) for i in indices]) // blocks.dtype.itemsize
        owner = np.repeat(np.array(indices), per_chunk)
        if x == "step":
            b_low, b_high = blocks["step_min"], blocks["step_max"]
            has_x = b_low != INT64_MAX
        else:
            b_low, b_high = blocks["time_min"], blocks["time_max"]
            has_x = np.ones(len(blocks), dtype=np.bool_)
        inside = has_x & grid.inside(b_low, b_high)
        if finite:  # a block holding ±Inf has no finite min/max of its own: its points are read
            inside &= (blocks["pinf"] == 0) & (blocks["ninf"] == 0)
        first = grid.bucket(np.where(inside, b_low, 0))
        last = grid.bucket(np.where(inside, b_high, 0))
        take = inside & (first == last)
        if not exact:
            # Straddling one edge and narrow against a bucket: the whole block goes where most
            # of its x range lies, so no point moves more than a quarter of a bucket.
            narrow = (b_high - b_low).astype(np.float64) <= _SNAP_FRACTION * grid.width
            straddle = inside & narrow & (last == first + 1)
            edge = grid.low + last * grid.width
            toward_last = straddle & ((b_high - edge) > (edge - b_low))
            first = np.where(toward_last, last, first)
            take |= straddle
        step_low, step_high = _step_bounds(blocks["step_min"][take], blocks["step_max"][take])
        acc.add(
            first[take],
            blocks["count"][take],
            blocks["nan_count"][take],
            blocks["min"][take],
            blocks["max"][take],
            b_low[take],
            b_high[take],
            step_low,
            step_high,
            blocks["time_min"][take],
            blocks["time_max"][take],
            (blocks["sum"][take], blocks["pinf"][take], blocks["ninf"][take]) if finite else None,
        )
        overlapping = has_x & (b_high.astype(np.float64) >= grid.low) & (b_low.astype(np.float64) <= grid.high)
        need_points = overlapping & ~take
        if need_points.any():
            offsets = np.concatenate(([0], np.cumsum(per_chunk)[:-1]))
            for index in np.unique(owner[need_points]).tolist():
                position = indices.index(index)
                start = int(offsets[position])
                raw_blocks[index] = need_points[start : start + int(per_chunk[position])]
    decoded = _add_points(connection, chunks, raw_blocks, grid, x, acc) if raw_blocks else 0
    edges = (
        np.minimum(grid.low + grid.width * np.arange(grid.buckets + 1, dtype=np.float64), grid.high) - origin
    ) / scale
    edges[-1] = (grid.high - origin) / scale
    return acc.series(run_id, name, edges, origin, scale, decoded, stepless)


def _add_points(
    connection: sqlite3.Connection,
    chunks: list[_ChunkInfo],
    raw_blocks: dict[int, npt.NDArray[np.bool_]],
    grid: _Grid,
    x: ChartAxis,
    acc: _Accumulator,
) -> int:
    """Decode the chunks holding blocks that need points; add those blocks' points. Returns points decoded."""
    by_rowid = {chunks[index].rowid: index for index in raw_blocks}
    placeholders = ", ".join("?" * len(by_rowid))
    rows = connection.execute(
        f"SELECT rowid, count, value_type, seqs, steps, step_mask, times, vals, tags FROM metric_chunks"
        f" WHERE rowid IN ({placeholders})",
        list(by_rowid),
    ).fetchall()
    wanted = frozenset({"step", "time", "value"})
    decoded = 0
    axes: list[npt.NDArray[Any]] = []
    all_steps: list[Float64Array] = []
    all_values: list[Float64Array] = []
    all_times: list[Int64Array] = []
    for row in rows:
        index = by_rowid[row[0]]
        chunk = chunks[index]
        try:
            points = decode_chunk(ChunkRow(*row[1:]), wanted)
        except CodecError as exc:
            raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
        decoded += chunk.count
        selected = np.repeat(raw_blocks[index], chunk.block_points)[: chunk.count]
        if x == "step":
            axis = points.step
            if points.step_valid is not None:
                selected &= points.step_valid
        else:
            axis = points.time_us
        within = selected & (axis.astype(np.float64) >= grid.low) & (axis.astype(np.float64) <= grid.high)
        axes.append(axis[within])
        steps = points.step.astype(np.float64)
        if points.step_valid is not None:
            steps[~points.step_valid] = np.nan
        all_steps.append(steps[within])
        all_values.append(points.values[within].astype(np.float64))
        all_times.append(points.time_us[within])
    if axes:
        axis = np.concatenate(axes)
        acc.add_points(
            grid.bucket(axis), axis, np.concatenate(all_values), np.concatenate(all_steps), np.concatenate(all_times)
        )
    return decoded
