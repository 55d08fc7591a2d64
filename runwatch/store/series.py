"""From logging calls to chunks: columns per batch, open chunks per series (pure code).

Two steps, both without I/O or clocks:

1. :func:`group_calls` (:mod:`runwatch.store.call_groups`) turns a batch of metric calls into :class:`CallGroup`
   columns, one group per (run, ordered metric names): ``numpy`` builds every
   column from the calls' value lists at once, no Python object is made per
   value. Each call gets the store's next logging-call number (``seq``).
2. :class:`SeriesBuilder` appends each group's columns to the open chunk of
   each (run, metric) series and, at every commit, says what to write:
   :meth:`~SeriesBuilder.prepare` returns a :class:`ChunkWrites` (sealed
   chunks and *segments* of open chunks to insert, segment rows to delete),
   the caller writes it in one transaction, then calls
   :meth:`~SeriesBuilder.confirm` (or :meth:`~SeriesBuilder.abort` when the
   transaction failed, to be prepared again).

Durability rule: every point added before :meth:`~SeriesBuilder.prepare` is
in the returned writes, so a transaction that commits them makes them
readable after a crash. The open part of a chunk is persisted as segments:
each commit writes its new points as one small unsealed chunk row, which
absorbs the trailing segment rows no larger than itself (size-tiered, like
a binary counter); when the chunk seals (``chunk_points`` points,
``max_chunk_seconds`` of event time, a value-type change, ``seal_all`` or
the memory bound), the sealed chunk replaces the segment rows. A point is
thus encoded at most about log2(chunk_points / points per commit) + 1
times, and an open chunk has about that many rows, whatever the commit
rate (see docs/store.md for the measurements behind this choice).

Values: a column of floats stays float64 bit for bit; a column of integers
becomes int64 exactly. Integers in a float column are stored as float64 when
they convert exactly (|v| <= 2**53); a series whose integers beyond 2**53 mix
with floats gets separate integer and float chunks, so nothing is rounded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from .call_groups import FLOAT_EXACT, BoolArray, CallGroup, group_calls, group_rows, time_to_us
from .chunks import BLOCK_POINTS, VALUE_FLOAT, VALUE_INT, ChunkColumns, ColumnCache, EncodedChunk, encode_chunk

__all__ = [
    "BuilderSavepoint",
    "BuilderStatistics",
    "CallGroup",
    "ChunkWrite",
    "ChunkWrites",
    "SeriesBuilder",
    "SeriesKey",
    "SegmentDelete",
    "group_calls",
    "group_rows",
    "time_to_us",
]

#: (run's integer key in ``runs``, metric name)
SeriesKey = tuple[int, str]


# -- the builder ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkWrite:
    """One chunk row to insert: the series, whether it is sealed, the chunk."""

    key: SeriesKey
    sealed: bool
    chunk: EncodedChunk


@dataclass(frozen=True, slots=True)
class SegmentDelete:
    """Unsealed rows of ``key`` whose ``seq_first`` is in ``[seq_low, seq_high]`` go."""

    key: SeriesKey
    seq_low: int
    seq_high: int


@dataclass
class ChunkWrites:
    """What one commit writes: deletes first, then inserts.

    Attributes:
        deletes: unsealed segment rows replaced by this commit.
        inserts: chunk rows (sealed chunks and open-chunk segments).
        new_points: points that become durable with this commit.
        encoded_points: points encoded for it (≥ ``new_points``: segments
            merged or rewritten on sealing count again).
    """

    deletes: list[SegmentDelete] = field(default_factory=list)
    inserts: list[ChunkWrite] = field(default_factory=list)
    new_points: int = 0
    encoded_points: int = 0
    merges: int = 0
    _plan: dict[SeriesKey, _Transition] = field(default_factory=dict, repr=False)


@dataclass
class _Transition:
    remaining: ChunkColumns | None
    persisted: int
    segments: list[tuple[int, int, int]]


@dataclass
class _OpenSeries:
    value_type: int
    parts: list[ChunkColumns] = field(default_factory=list)
    #: complete chunks cut off by a value-type change, to be written sealed
    closed: list[ChunkColumns] = field(default_factory=list)
    points: int = 0
    #: leading open points already stored in unsealed segment rows
    persisted: int = 0
    #: (seq_first, first open point, end) of those rows, in order
    segments: list[tuple[int, int, int]] = field(default_factory=list)
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class BuilderSavepoint:
    """What :meth:`SeriesBuilder.rollback` restores: open series and the call number as they were."""

    next_seq: int
    series: dict[SeriesKey, tuple[int, list[ChunkColumns], list[ChunkColumns], int, bool]]


@dataclass(frozen=True, slots=True)
class BuilderStatistics:
    """Counters of a :class:`SeriesBuilder` (monotonic except ``open_*``)."""

    open_series: int
    open_points: int
    new_points: int
    encoded_points: int
    sealed_chunks: int
    segment_rows: int
    merges: int


class SeriesBuilder:
    """Open chunks of every series being written, and the plan of each commit.

    Args:
        chunk_points: a chunk seals when it holds this many points.
        block_points: points per block summary.
        max_chunk_seconds: a chunk also seals once its points span this much
            event time (None: no time bound), so slow series get readable,
            bounded chunks too.
        max_open_segments: the most unsealed segment rows per series; past
            it they are merged into one (1 = rewrite the whole open part at
            each commit). Segments also merge by size on their own (see
            :meth:`prepare`), which keeps them to about log2(chunk_points /
            points per commit).
        tiered_segments: merge segments by size (the default); False keeps
            every commit's segment until ``max_open_segments`` or sealing
            (to measure the alternatives).
        max_open_points: the most points held open over all series; past it,
            the largest open chunks seal early (memory stays bounded whatever
            the number of series).

    Not thread-safe: one writer calls :meth:`add`, :meth:`prepare`,
    :meth:`confirm` / :meth:`abort` in turn.
    """

    def __init__(
        self,
        *,
        chunk_points: int = 16_384,
        block_points: int = BLOCK_POINTS,
        max_chunk_seconds: float | None = 3600.0,
        max_open_segments: int = 16,
        tiered_segments: bool = True,
        max_open_points: int = 1_000_000,
    ) -> None:
        if chunk_points < 1 or block_points < 1 or max_open_segments < 1 or max_open_points < 1:
            raise ValueError("chunk_points, block_points, max_open_segments and max_open_points must be positive")
        if max_chunk_seconds is not None and not max_chunk_seconds > 0:
            raise ValueError(f"max_chunk_seconds must be positive or None, got {max_chunk_seconds!r}")
        self.chunk_points = chunk_points
        self.block_points = block_points
        self.max_chunk_us = None if max_chunk_seconds is None else int(max_chunk_seconds * 1e6)
        self.max_open_segments = max_open_segments
        self.tiered_segments = tiered_segments
        self.max_open_points = max_open_points
        #: the number :meth:`add_calls` gives the next call (a writer sets it from its store's counter)
        self.next_seq = 0
        self._open: dict[SeriesKey, _OpenSeries] = {}
        self._pending: ChunkWrites | None = None
        self._cache = ColumnCache()
        self._new_points = 0
        self._encoded_points = 0
        self._sealed_chunks = 0
        self._segment_rows = 0
        self._merges = 0

    # -- adding ---------------------------------------------------------------------

    def add_calls(self, calls: Sequence[Any], run_keys: Mapping[str, int]) -> None:
        """Add a batch of metric calls (see :func:`group_calls`), numbered from :attr:`next_seq` on."""
        self.add_groups(group_calls(calls, run_keys, self.next_seq))
        self.next_seq += len(calls)

    def add(self, group: CallGroup) -> None:
        """Append the columns of one group; see :meth:`add_groups`."""
        self.add_groups([group])

    def add_groups(self, groups: Iterable[CallGroup]) -> None:
        """Append the columns of ``groups`` (one batch) to the open chunk of each of their series.

        A metric logged by several groups of the batch (in calls with
        different name sets) gets its points merged in call order.

        Raises:
            RuntimeError: a prepared commit is neither confirmed nor aborted.
        """
        if self._pending is not None:
            raise RuntimeError("add() while a prepared commit is outstanding: confirm() or abort() it first")
        pieces: dict[SeriesKey, list[ChunkColumns]] = {}
        for group in groups:
            for name, values in zip(group.names, group.columns, strict=True):
                pieces.setdefault((group.run, name), []).append(_columns(group, values, 0, len(values)))
        for key, parts in pieces.items():
            merged = parts[0] if len(parts) == 1 else _merge_by_seq(parts)
            if merged.values.dtype == object:
                for start, stop, run_values in _exact_runs(merged.values):
                    piece = merged.slice(start, stop)
                    self._append(
                        key,
                        ChunkColumns(piece.seq, piece.step, piece.step_valid, piece.time_us, run_values, piece.tags),
                    )
            else:
                self._append(key, merged)

    def adopt(self, key: SeriesKey, points: ChunkColumns) -> None:
        """Take stored points of an open chunk another writer left (it ended without sealing).

        They become the start of this builder's open chunk of ``key`` (the
        caller deletes their rows in the transaction that writes this
        builder's next commit). Call before adding any point of ``key``.
        """
        if self._pending is not None:
            raise RuntimeError("adopt() while a prepared commit is outstanding: confirm() or abort() it first")
        if key in self._open:
            raise RuntimeError(f"adopt() of {key!r}, which already has open points")
        self._append(key, points)

    def _append(self, key: SeriesKey, columns: ChunkColumns) -> None:
        value_type = columns.value_type
        series = self._open.get(key)
        if series is None:
            series = self._open[key] = _OpenSeries(value_type)
        elif value_type != series.value_type:
            if value_type == VALUE_INT and _float_exact(columns.values):
                columns = _as_float(columns)
            elif value_type == VALUE_FLOAT and all(_float_exact(part.values) for part in series.parts):
                series.parts = [_as_float(part) for part in series.parts]
                series.value_type = VALUE_FLOAT
            else:
                # Cut here: the open points become a complete chunk of their own type.
                if series.parts:
                    series.closed.append(_concat(series.parts))
                series.parts = []
                series.points = 0
                series.value_type = value_type
        series.parts.append(columns)
        series.points += len(columns)
        series.dirty = True

    # -- committing -----------------------------------------------------------------

    def prepare(
        self, *, seal_all: bool = False, seal_runs: Collection[int] = (), persist_open: bool = True
    ) -> ChunkWrites:
        """The writes that make every point added so far durable.

        Args:
            seal_all: seal every open chunk (at close).
            seal_runs: seal the open chunks of these runs (at their end).
            persist_open: write the open chunks' new points as segments;
                False writes sealed chunks only (a bulk copy inside one
                transaction, where segments would be replaced before anyone
                could read them).

        Raises:
            RuntimeError: the previous prepared commit is still outstanding.
        """
        if self._pending is not None:
            raise RuntimeError("prepare() twice: confirm() or abort() the previous commit first")
        writes = ChunkWrites()
        self._cache = ColumnCache()  # metrics of the same calls share their call columns' encoding
        forced = self._over_memory_bound()
        for key, series in self._open.items():
            seal = seal_all or key in forced or key[0] in seal_runs
            if series.dirty or (seal and (series.points or series.closed)):
                self._plan_series(key, series, writes, seal=seal, persist_open=persist_open)
        self._pending = writes
        self._cache = ColumnCache()
        return writes

    def confirm(self, writes: ChunkWrites) -> None:
        """Record that ``writes`` committed."""
        self._check_pending(writes)
        for key, transition in writes._plan.items():
            series = self._open[key]
            if transition.remaining is None:
                del self._open[key]
                continue
            series.parts = [transition.remaining]
            series.closed = []
            series.points = len(transition.remaining)
            series.persisted = transition.persisted
            series.segments = transition.segments
            series.dirty = False
        self._new_points += writes.new_points
        self._encoded_points += writes.encoded_points
        self._merges += writes.merges
        for write in writes.inserts:
            if write.sealed:
                self._sealed_chunks += 1
            else:
                self._segment_rows += 1
        self._pending = None

    def abort(self, writes: ChunkWrites) -> None:
        """Forget ``writes`` (their transaction failed): the next :meth:`prepare` plans them again."""
        self._check_pending(writes)
        self._pending = None

    def savepoint(self) -> BuilderSavepoint:
        """The builder's state now, for :meth:`rollback` (cheap: no point is copied)."""
        if self._pending is not None:
            raise RuntimeError("savepoint() while a prepared commit is outstanding")
        return BuilderSavepoint(
            self.next_seq,
            {
                key: (series.value_type, list(series.parts), list(series.closed), series.points, series.dirty)
                for key, series in self._open.items()
            },
        )

    def rollback(self, savepoint: BuilderSavepoint) -> None:
        """Forget every point added since ``savepoint`` (a batch whose transaction failed, to be added again).

        Raises:
            RuntimeError: a prepared commit is outstanding (abort it first), or a
                commit was confirmed since the savepoint.
        """
        if self._pending is not None:
            raise RuntimeError("rollback() while a prepared commit is outstanding: abort() it first")
        for key in list(self._open):
            if key not in savepoint.series:
                del self._open[key]
        for key, (value_type, parts, closed, points, dirty) in savepoint.series.items():
            series = self._open.get(key)
            if series is None:
                raise RuntimeError("a commit was confirmed since the savepoint")
            series.value_type, series.parts, series.closed = value_type, list(parts), list(closed)
            series.points, series.dirty = points, dirty
        self.next_seq = savepoint.next_seq

    def forget_runs(self, runs: Collection[int]) -> None:
        """Drop the open points of ``runs`` (their rows are gone from the store, or they ended)."""
        for key in [key for key in self._open if key[0] in runs]:
            del self._open[key]

    def series_keys(self) -> list[SeriesKey]:
        """The open series, in the order their points first arrived."""
        return list(self._open)

    def statistics(self) -> BuilderStatistics:
        """Open series and points, and what the confirmed commits wrote."""
        return BuilderStatistics(
            open_series=len(self._open),
            open_points=sum(series.points + sum(map(len, series.closed)) for series in self._open.values()),
            new_points=self._new_points,
            encoded_points=self._encoded_points,
            sealed_chunks=self._sealed_chunks,
            segment_rows=self._segment_rows,
            merges=self._merges,
        )

    def _check_pending(self, writes: ChunkWrites) -> None:
        if writes is not self._pending:
            raise RuntimeError("these writes are not the outstanding prepared commit")

    def _over_memory_bound(self) -> set[SeriesKey]:
        """Series to seal early so the open points stay within ``max_open_points``."""
        remaining = {key: series.points % self.chunk_points for key, series in self._open.items()}
        total = sum(remaining.values())
        forced: set[SeriesKey] = set()
        if total <= self.max_open_points:
            return forced
        for key, points in sorted(remaining.items(), key=itemgetter(1), reverse=True):
            if total <= self.max_open_points // 2:  # leave headroom so this does not recur at once
                break
            forced.add(key)
            total -= points
        return forced

    def _plan_series(
        self, key: SeriesKey, series: _OpenSeries, writes: ChunkWrites, *, seal: bool, persist_open: bool
    ) -> None:
        to_seal = [piece for closed in series.closed for piece in self._pieces(closed)]
        columns = _concat(series.parts) if series.parts else None
        start = 0
        if columns is not None:
            total = len(columns)
            while total - start >= self.chunk_points:
                to_seal.append(columns.slice(start, start + self.chunk_points))
                start += self.chunk_points
            if start < total and (seal or self._too_long(columns, start)):
                to_seal.append(columns.slice(start, total))
                start = total
        remaining = None
        if columns is not None and start < len(columns):
            # A copy once something was cut off: a view would keep the whole batch's arrays alive.
            remaining = _copy(columns.slice(start, len(columns))) if start else columns
        new_points = series.points + sum(map(len, series.closed)) - series.persisted
        segments = series.segments
        persisted = series.persisted
        encoded = 0
        if to_seal:
            # Sealing replaces every segment row (they hold a prefix of the sealed points,
            # and possibly of the remaining ones, which are then written again).
            if segments:
                writes.deletes.append(SegmentDelete(key, segments[0][0], segments[-1][0]))
            segments, persisted = [], 0
        for part in to_seal:
            writes.inserts.append(
                ChunkWrite(key, True, encode_chunk(part, block_points=self.block_points, cache=self._cache))
            )
            encoded += len(part)
        if remaining is not None and persisted < len(remaining) and persist_open:
            # Size-tiered segments (a binary counter): the new points absorb trailing segments
            # no larger than themselves, so a point is rewritten at most log2(chunk_points /
            # points per commit) times before sealing and an open chunk has few rows.
            start = persisted
            absorbed: list[tuple[int, int, int]] = []
            while self.tiered_segments and segments and segments[-1][2] - segments[-1][1] <= len(remaining) - start:
                absorbed.append(segments[-1])
                segments = segments[:-1]
                start = absorbed[-1][1]
            if len(segments) >= self.max_open_segments:  # the hard bound: one row again
                absorbed += segments
                segments, start = [], 0
            if absorbed:
                first_seqs = [segment[0] for segment in absorbed]
                writes.deletes.append(SegmentDelete(key, min(first_seqs), max(first_seqs)))
                writes.merges += 1
            segment = remaining.slice(start, len(remaining))
            # Raw planes: a segment is rewritten as segments merge and when the chunk seals.
            chunk = encode_chunk(segment, block_points=self.block_points, cache=self._cache, fast=True)
            writes.inserts.append(ChunkWrite(key, False, chunk))
            encoded += len(segment)
            segments = [*segments, (int(segment.seq[0]), start, len(remaining))]
            persisted = len(remaining)
        elif not persist_open:
            new_points -= len(remaining) - persisted if remaining is not None else 0
        writes.new_points += new_points
        writes.encoded_points += encoded
        writes._plan[key] = _Transition(remaining, persisted if remaining is not None else 0, segments)

    def _pieces(self, columns: ChunkColumns) -> list[ChunkColumns]:
        size = self.chunk_points
        return [columns.slice(start, start + size) for start in range(0, len(columns), size)]

    def _too_long(self, columns: ChunkColumns, start: int) -> bool:
        if self.max_chunk_us is None:
            return False
        times = columns.time_us[start:]
        return int(times.max()) - int(times.min()) > self.max_chunk_us


def _columns(group: CallGroup, values: npt.NDArray[Any], start: int, stop: int) -> ChunkColumns:
    return ChunkColumns(
        group.seq[start:stop],
        group.step[start:stop],
        None if group.step_valid is None else group.step_valid[start:stop],
        group.time_us[start:stop],
        values,
        None if group.tags is None else group.tags[start:stop],
    )


def _exact_runs(values: npt.NDArray[Any]) -> Iterator[tuple[int, int, npt.NDArray[Any]]]:
    """Split an object column into runs of integers and of floats (with exact small integers)."""
    big_int = np.fromiter(
        (type(v) is int and not -FLOAT_EXACT <= v <= FLOAT_EXACT for v in values), dtype=np.bool_, count=len(values)
    )
    is_int = np.fromiter((type(v) is int for v in values), dtype=np.bool_, count=len(values))
    # A run of integers is stored as int64 if it holds a big one; otherwise everything is float.
    kind = np.where(is_int, 1, 0)
    edges = np.flatnonzero(np.diff(kind)) + 1
    bounds = [0, *edges.tolist(), len(values)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        piece = values[start:stop]
        if kind[start] == 1 and big_int[start:stop].any():
            yield start, stop, np.array(piece.tolist(), dtype=np.int64)
        else:
            yield start, stop, np.array(piece.tolist(), dtype=np.float64)


def _merge_by_seq(parts: list[ChunkColumns]) -> ChunkColumns:
    """Points of one series from several groups of a batch, in call order.

    Values of different types are merged as objects, to be split into exact runs.
    """
    if len({part.values.dtype for part in parts}) > 1:
        parts = [ChunkColumns(p.seq, p.step, p.step_valid, p.time_us, p.values.astype(object), p.tags) for p in parts]
    merged = _concat(parts)
    order = np.argsort(merged.seq, kind="stable")
    return ChunkColumns(
        merged.seq[order],
        merged.step[order],
        None if merged.step_valid is None else merged.step_valid[order],
        merged.time_us[order],
        merged.values[order],
        None if merged.tags is None else [merged.tags[i] for i in order.tolist()],
    )


def _copy(columns: ChunkColumns) -> ChunkColumns:
    return ChunkColumns(
        columns.seq.copy(),
        columns.step.copy(),
        None if columns.step_valid is None else columns.step_valid.copy(),
        columns.time_us.copy(),
        columns.values.copy(),
        None if columns.tags is None else list(columns.tags),
    )


def _float_exact(values: npt.NDArray[Any]) -> bool:
    if values.dtype != np.int64 or len(values) == 0:
        return True
    return -(2**53) <= int(values.min()) and int(values.max()) <= 2**53


def _as_float(columns: ChunkColumns) -> ChunkColumns:
    return ChunkColumns(
        columns.seq, columns.step, columns.step_valid, columns.time_us, columns.values.astype(np.float64), columns.tags
    )


def _concat(parts: list[ChunkColumns]) -> ChunkColumns:
    if len(parts) == 1:
        return parts[0]
    if any(part.step_valid is not None for part in parts):
        valid: BoolArray | None = np.concatenate(
            [np.ones(len(p), dtype=np.bool_) if p.step_valid is None else p.step_valid for p in parts]
        )
    else:
        valid = None
    if any(part.tags is not None for part in parts):
        tags: list[str | None] | None = []
        for part in parts:
            tags.extend(part.tags if part.tags is not None else [None] * len(part))  # type: ignore[union-attr]
    else:
        tags = None
    return ChunkColumns(
        np.concatenate([p.seq for p in parts]),
        np.concatenate([p.step for p in parts]),
        valid,
        np.concatenate([p.time_us for p in parts]),
        np.concatenate([p.values for p in parts]),
        tags,
    )
