"""The chunk store on SQLite: commit what a :class:`SeriesBuilder` plans, read series and summaries.

Synchronous ``sqlite3`` code, for the writer's thread or a reader's. The
connection is in autocommit mode (``isolation_level=None``); each commit is
one ``BEGIN IMMEDIATE`` … ``COMMIT`` holding a batch's chunk rows, so what it
acknowledges survives a crash of the process (WAL, as the rest of the store).

:class:`SQLiteSeriesStore` is the shape of the store interface the rest of
runwatch will use (write a batch, read series, summaries and charts); a
PostgreSQL backend implements the same methods over the same layout.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ..exceptions import StoreError
from .chart import chart
from .chunk_schema import CHUNK_COLUMNS, chunk_tables_exist
from .chunks import VALUE_FLOAT, VALUE_INT, ChunkColumns, ChunkRow, decode_chunk
from .codecs import CodecError
from .queries.common import read_snapshot, run_keys  # shared by every read of the store
from .series import CallGroup, ChunkWrites, SeriesBuilder, SeriesKey

__all__ = [
    "ChunkWriter",
    "Series",
    "SeriesSummary",
    "SQLiteSeriesStore",
    "commit_writes",
    "read_series",
    "read_summaries",
]

XAxis = Literal["seq", "step", "time"]
_INSERT_CHUNK: Final = (
    f"INSERT INTO metric_chunks (series, {', '.join(CHUNK_COLUMNS)})"
    f" VALUES ({', '.join('?' * (len(CHUNK_COLUMNS) + 1))})"
)
_DELETE_SEGMENTS: Final = "DELETE FROM metric_chunks WHERE series = ? AND sealed = 0 AND seq_first BETWEEN ? AND ?"
_RANGE_COLUMNS: Final = {
    "seq": ("seq_first", "seq_last"),
    "step": ("step_min", "step_max"),
    "time": ("time_min", "time_max"),
}


class ChunkWriter:
    """Writes :class:`ChunkWrites` into the chunk tables; remembers series ids.

    Call :meth:`write` inside the caller's transaction; after it commits or
    rolls back, call :meth:`committed` or :meth:`rolled_back` (ids created by
    a rolled-back transaction are forgotten).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self._ids: dict[SeriesKey, int] = {}
        self._uncommitted: list[SeriesKey] = []

    def next_seq(self, run: int) -> int:
        """The next logging-call number of ``run`` (0 for a run with no chunk yet)."""
        row = self.connection.execute(
            "SELECT max(c.seq_last) FROM metric_series s JOIN metric_chunks c ON c.series = s.id WHERE s.run = ?",
            (run,),
        ).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def write(self, writes: ChunkWrites) -> None:
        """Delete replaced segment rows, then insert the new chunk rows."""
        keys = {write.key for write in writes.inserts} | {delete.key for delete in writes.deletes}
        ids = self._series_ids(keys)
        if writes.deletes:
            self.connection.executemany(_DELETE_SEGMENTS, [(ids[d.key], d.seq_low, d.seq_high) for d in writes.deletes])
        if writes.inserts:
            rows = [_chunk_row(ids[write.key], write.sealed, write.chunk) for write in writes.inserts]
            self.connection.executemany(_INSERT_CHUNK, rows)

    def committed(self) -> None:
        """The transaction of the last :meth:`write` committed."""
        self._uncommitted.clear()

    def rolled_back(self) -> None:
        """The transaction of the last :meth:`write` rolled back."""
        for key in self._uncommitted:
            self._ids.pop(key, None)
        self._uncommitted.clear()

    def _series_ids(self, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        missing = [key for key in keys if key not in self._ids]
        if missing:
            self.connection.executemany(
                "INSERT INTO metric_series (run, name) VALUES (?, ?) ON CONFLICT (run, name) DO NOTHING", missing
            )
            for run, name in missing:
                row = self.connection.execute(
                    "SELECT id FROM metric_series WHERE run = ? AND name = ?", (run, name)
                ).fetchone()
                self._ids[(run, name)] = int(row[0])
                self._uncommitted.append((run, name))
        return self._ids


def _chunk_row(series: int, sealed: bool, chunk: Any) -> tuple[Any, ...]:
    def real(value: float | int | None) -> float | int | None:
        # SQLite turns NaN into NULL anyway; say so explicitly.
        return None if isinstance(value, float) and value != value else value

    return (
        series,
        chunk.seq_first,
        chunk.seq_last,
        int(sealed),
        chunk.format,
        chunk.count,
        chunk.nan_count,
        chunk.value_type,
        real(chunk.min),
        real(chunk.max),
        real(chunk.sum),
        real(chunk.last),
        chunk.step_first,
        chunk.step_last,
        chunk.step_min,
        chunk.step_max,
        chunk.time_first,
        chunk.time_last,
        chunk.time_min,
        chunk.time_max,
        chunk.block_points,
        chunk.blocks,
        chunk.seqs,
        chunk.steps,
        chunk.step_mask,
        chunk.times,
        chunk.vals,
        chunk.tags,
    )


def commit_writes(
    connection: sqlite3.Connection, writer: ChunkWriter, builder: SeriesBuilder, *, seal_all: bool = False
) -> ChunkWrites:
    """Prepare, write and commit one transaction of ``builder``'s pending points.

    On any failure the transaction rolls back, the builder keeps every point
    for the next attempt, and the error propagates.
    """
    writes = builder.prepare(seal_all=seal_all)
    try:
        connection.execute("BEGIN IMMEDIATE")
        writer.write(writes)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        writer.rolled_back()
        builder.abort(writes)
        raise
    writer.committed()
    builder.confirm(writes)
    return writes


# -- reading -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one run: its points, in logging order."""

    run_id: str
    name: str
    points: ChunkColumns


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """A series' figures from its chunk summaries alone (no point is decoded).

    ``min``/``max``/``sum`` ignore NaN (None when every value is NaN; ``sum``
    is NaN when +Inf and −Inf met); ``last`` is the last value, NaN included.
    Times are microseconds since the epoch.
    """

    count: int
    nan_count: int
    min: float | int | None
    max: float | int | None
    sum: float | int | None
    last: float | int | None
    seq_first: int
    seq_last: int
    step_first: int | None
    step_last: int | None
    time_first: int
    time_last: int
    chunks: int


def _check_names(names: object) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of metric names or None, got {names!r}")
    checked = list(names)
    for name in checked:
        if type(name) is not str or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
    return checked


def _x_bound(by: XAxis, value: float | int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number or None, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if by == "time":
        return round(value * 1e6)  # epoch seconds → microseconds
    if value != int(value):
        raise ValueError(f"{what} must be an integer for by={by!r}, got {value!r}")
    return int(value)


def read_series(
    connection: sqlite3.Connection,
    run_id: str,
    names: Sequence[str] | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
    by: XAxis = "seq",
    columns: Collection[str] = ("seq", "step", "time", "value"),
) -> dict[str, Series]:
    """Metrics of a run as arrays, decoded straight from their chunks.

    Args:
        connection: a connection to a store with the chunk tables.
        run_id: the run.
        names: the metrics (None: all of the run's).
        start: only points with ``by`` at or after this (time: epoch seconds).
        end: only points with ``by`` at or before this.
        by: the axis of ``start``/``end``: ``seq`` (logging-call number),
            ``step`` (points without a step are then left out) or ``time``.
        columns: which of ``seq``, ``step``, ``time``, ``value``, ``tags`` to
            decode (the others come back empty).

    Returns:
        Metric name → :class:`Series`, in the order of ``names`` (or by name);
        a name the run never logged is absent.

    Raises:
        TypeError, ValueError: a bad argument.
        UnknownRunError: no run has this id.
        StoreError: a chunk cannot be decoded.
    """
    wanted = _check_names(names)
    if by not in _RANGE_COLUMNS:
        raise ValueError(f"by must be 'seq', 'step' or 'time', got {by!r}")
    low, high = _x_bound(by, start, "start"), _x_bound(by, end, "end")
    decode = frozenset(columns) | ({by} if low is not None or high is not None else set())
    unknown = decode - {"seq", "step", "time", "value", "tags"}
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    with read_snapshot(connection):
        run = run_keys(connection, [run_id])[run_id]
        rows = _chunk_rows(connection, run, wanted, by, low, high)
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    order = wanted if wanted is not None else sorted(by_name)
    result: dict[str, Series] = {}
    for name in order:
        chunk_rows = by_name.get(name)
        if chunk_rows:
            points = _decode_rows(chunk_rows, decode)
            if low is not None or high is not None:
                points = _within(points, by, low, high)
            result[name] = Series(run_id, name, points)
    return result


def _chunk_rows(
    connection: sqlite3.Connection, run: int, names: list[str] | None, by: XAxis, low: int | None, high: int | None
) -> list[tuple[Any, ...]]:
    where = ["s.run = ?"]
    params: list[Any] = [run]
    if names is not None:
        where.append(f"s.name IN ({', '.join('?' * len(names))})")
        params.extend(names)
    first, last = _RANGE_COLUMNS[by]
    if low is not None:
        where.append(f"c.{last} >= ?")
        params.append(low)
    if high is not None:
        where.append(f"c.{first} <= ?")
        params.append(high)
    return connection.execute(
        "SELECT s.name, c.count, c.value_type, c.seqs, c.steps, c.step_mask, c.times, c.vals, c.tags"
        " FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
        f" WHERE {' AND '.join(where)} ORDER BY s.name, c.seq_first",
        params,
    ).fetchall()


def _decode_rows(rows: list[tuple[Any, ...]], columns: frozenset[str]) -> ChunkColumns:
    """One series' chunk rows decoded into preallocated arrays (no concatenation)."""
    counts = [row[1] for row in rows]
    total = sum(counts)
    types = {row[2] for row in rows}
    empty = np.empty(0, dtype=np.int64)
    out: dict[str, npt.NDArray[Any]] = {}
    for name in ("seq", "step", "time"):
        if name in columns:
            out[name] = np.empty(total, dtype=np.int64)
    single_type = len(types) == 1
    if "value" in columns and single_type:
        out["value"] = np.empty(total, dtype=np.int64 if types == {VALUE_INT} else np.float64)
    valid: npt.NDArray[np.bool_] | None = None
    pieces: list[npt.NDArray[Any]] = []
    tags: list[str | None] | None = [] if "tags" in columns else None
    offset = 0
    try:
        for row, count in zip(rows, counts, strict=True):
            window = {name: array[offset : offset + count] for name, array in out.items()}
            chunk = decode_chunk(ChunkRow(count, *row[2:]), columns, out=window)
            if "step" in columns and chunk.step_valid is not None:
                if valid is None:
                    valid = np.ones(total, dtype=np.bool_)
                valid[offset : offset + count] = chunk.step_valid
            if "value" in columns and not single_type:
                pieces.append(chunk.values)
            if tags is not None:
                tags.extend(chunk.tags if chunk.tags is not None else [None] * count)
            offset += count
    except CodecError as exc:
        raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
    if "value" in columns and not single_type:
        out["value"] = _combine_values(pieces)
    if tags is not None and all(tag is None for tag in tags):
        tags = None
    return ChunkColumns(
        out.get("seq", empty),
        out.get("step", empty),
        valid,
        out.get("time", empty),
        out.get("value", np.empty(0, dtype=np.float64)),
        tags,
    )


def _combine_values(pieces: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Integer and float chunks of one series: float64 when every integer converts exactly, else objects."""
    exact = all(
        piece.dtype != np.int64 or not len(piece) or (-(2**53) <= int(piece.min()) and int(piece.max()) <= 2**53)
        for piece in pieces
    )
    if exact:
        return np.concatenate([piece.astype(np.float64, copy=False) for piece in pieces])
    return np.concatenate([piece.astype(object) for piece in pieces])


def _within(points: ChunkColumns, by: XAxis, low: int | None, high: int | None) -> ChunkColumns:
    axis = {"seq": points.seq, "step": points.step, "time": points.time_us}[by]
    keep = np.ones(len(axis), dtype=np.bool_)
    if low is not None:
        keep &= axis >= low
    if high is not None:
        keep &= axis <= high
    if by == "step" and points.step_valid is not None:
        keep &= points.step_valid
    if bool(keep.all()):
        return points

    def pick(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return array[keep] if len(array) else array

    return ChunkColumns(
        pick(points.seq),
        pick(points.step),
        None if points.step_valid is None else points.step_valid[keep],
        pick(points.time_us),
        pick(points.values),
        None if points.tags is None else [tag for tag, kept in zip(points.tags, keep.tolist(), strict=True) if kept],
    )


def read_summaries(
    connection: sqlite3.Connection, run_id: str, names: Sequence[str] | None = None
) -> dict[str, SeriesSummary]:
    """Each metric's figures from its chunk summaries (see :class:`SeriesSummary`).

    Raises:
        UnknownRunError: no run has this id.
    """
    wanted = _check_names(names)
    where = "s.run = ?"
    with read_snapshot(connection):
        run = run_keys(connection, [run_id])[run_id]
        params: list[Any] = [run]
        if wanted is not None:
            where += f" AND s.name IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        rows = connection.execute(
            "SELECT s.name, c.count, c.nan_count, c.value_type, c.value_min, c.value_max, c.value_sum, c.value_last,"
            " c.seq_first, c.seq_last, c.step_first, c.step_last, c.time_first, c.time_last"
            " FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
            f" WHERE {where} ORDER BY s.name, c.seq_first",
            params,
        ).fetchall()
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    order = wanted if wanted is not None else sorted(grouped)
    return {name: _summarize(grouped[name]) for name in order if name in grouped}


def _summarize(rows: list[tuple[Any, ...]]) -> SeriesSummary:
    count = sum(row[1] for row in rows)
    nan_count = sum(row[2] for row in rows)
    lows = [row[4] for row in rows if row[4] is not None]
    highs = [row[5] for row in rows if row[5] is not None]
    total: float | int | None = None
    if count > nan_count:
        if any(row[6] is None and row[1] > row[2] for row in rows):
            total = math.nan
        else:
            sums = [row[6] for row in rows if row[6] is not None]
            total = sum(sums) if all(type(s) is int for s in sums) else math.fsum(sums)
    last_row = rows[-1]
    last = last_row[7]
    if last is None and last_row[3] == VALUE_FLOAT:
        last = math.nan
    steps = [row for row in rows if row[10] is not None]
    return SeriesSummary(
        count=count,
        nan_count=nan_count,
        min=min(lows) if lows else None,
        max=max(highs) if highs else None,
        sum=total,
        last=last,
        seq_first=rows[0][8],
        seq_last=last_row[9],
        step_first=steps[0][10] if steps else None,
        step_last=steps[-1][11] if steps else None,
        time_first=rows[0][12],
        time_last=last_row[13],
        chunks=len(rows),
    )


# -- the store -------------------------------------------------------------------------


class SQLiteSeriesStore:
    """Metric series in chunks on one SQLite connection: the store interface's metric part.

    Args:
        connection: a connection in autocommit mode (``isolation_level=None``)
            to a store that has the chunk tables.
        builder: the :class:`SeriesBuilder` holding open chunks (default options if None).

    Raises:
        StoreError: the database has no chunk tables.
    """

    def __init__(self, connection: sqlite3.Connection, builder: SeriesBuilder | None = None) -> None:
        if connection.isolation_level is not None:
            raise ValueError("the connection must be in autocommit mode (isolation_level=None)")
        if not chunk_tables_exist(connection):
            raise StoreError("the database has no chunk tables (see runwatch.store.chunk_schema)")
        self.connection = connection
        self.builder = builder or SeriesBuilder()
        self.writer = ChunkWriter(connection)
        self._run_keys: dict[str, int] = {}

    def add_calls(self, calls: Sequence[Any]) -> None:
        """Take a batch of metric calls into open chunks (nothing is written yet).

        Raises:
            UnknownRunError: a call's run is not in the store.
        """
        self._seed_runs(set(map(itemgetter(0), calls)))
        self.builder.add_calls(calls, self._run_keys)

    def _seed_runs(self, run_ids: Iterable[str]) -> None:
        """Resolve runs new to this store and continue their call numbers after what is stored."""
        missing = set(run_ids) - self._run_keys.keys()
        if missing:
            self._run_keys.update(run_keys(self.connection, sorted(missing)))
            for run_id in missing:
                run = self._run_keys[run_id]
                if run not in self.builder.next_seq:
                    self.builder.next_seq[run] = self.writer.next_seq(run)

    def add_columns(
        self,
        run_id: str,
        names: Sequence[str],
        values: Sequence[npt.NDArray[Any]],
        *,
        time_us: npt.NDArray[np.int64],
        step: npt.NDArray[np.int64] | None = None,
    ) -> None:
        """Take calls that arrive as columns (a producer's batch path): one array per name.

        Args:
            run_id: the run.
            names: the metric names.
            values: per name, one float64 or int64 value per call.
            time_us: per call, microseconds since the epoch.
            step: per call, the step (None: the calls have none).

        Raises:
            UnknownRunError: the run is not in the store.
            ValueError: arrays of different lengths, or values neither float64 nor int64.
        """
        count = len(time_us)
        if len(names) != len(values) or any(len(column) != count for column in values):
            raise ValueError("names and values must pair up, one value per call in each column")
        if step is not None and len(step) != count:
            raise ValueError(f"step has {len(step)} entries for {count} calls")
        columns = tuple(np.asarray(column) for column in values)
        for name, column in zip(names, columns, strict=True):
            if column.dtype not in (np.float64, np.int64):
                raise ValueError(f"values of {name!r} must be float64 or int64, got {column.dtype}")
        self._seed_runs([run_id])
        run = self._run_keys[run_id]
        first = self.builder.next_seq.get(run, 0)
        self.builder.next_seq[run] = first + count
        self.builder.add(
            CallGroup(
                run,
                tuple(names),
                np.arange(first, first + count, dtype=np.int64),
                np.zeros(count, dtype=np.int64) if step is None else np.asarray(step, dtype=np.int64),
                None if step is not None else np.zeros(count, dtype=np.bool_),
                np.asarray(time_us, dtype=np.int64),
                columns,
            )
        )

    def commit(self, *, seal_all: bool = False) -> ChunkWrites:
        """Make every point taken so far durable, in one transaction."""
        return commit_writes(self.connection, self.writer, self.builder, seal_all=seal_all)

    def write_batch(self, calls: Sequence[Any]) -> ChunkWrites:
        """:meth:`add_calls` then :meth:`commit`."""
        self.add_calls(calls)
        return self.commit()

    def read_series(self, run_id: str, names: Sequence[str] | None = None, **options: Any) -> dict[str, Series]:
        """See :func:`read_series`."""
        return read_series(self.connection, run_id, names, **options)

    def read_summaries(self, run_id: str, names: Sequence[str] | None = None) -> dict[str, SeriesSummary]:
        """See :func:`read_summaries`."""
        return read_summaries(self.connection, run_id, names)

    def chart(self, run_ids: Sequence[str], names: Sequence[str], **options: Any) -> Any:
        """See :func:`runwatch.store.chart.chart`."""
        return chart(self.connection, run_ids, names, **options)
