"""The chunk tables on SQLite: the statements that apply a :class:`SeriesBuilder`'s commits, and series reads.

The statements (:func:`chunk_statements`, :data:`INSERT_SERIES` …) are
shared by the store's writer (:mod:`runwatch.store.writer`, on aiosqlite)
and the synchronous writers here: :class:`ChunkWriter` inside a caller's
transaction (the schema migration, the importer, maintenance), and
:class:`SQLiteSeriesStore`, which commits each batch itself (benchmarks and
tests of the layout). Reads (:func:`read_series`, :func:`read_summaries`)
take any connection and read one snapshot.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from ..exceptions import StoreError
from .base import Series, SeriesAxis, SeriesSummary
from .chart import chart
from .chunk_schema import CHUNK_COLUMNS, chunk_tables_exist
from .chunks import VALUE_FLOAT, VALUE_INT, ChunkColumns, ChunkRow, EncodedChunk, decode_chunk
from .codecs import CodecError
from .encode import ADVANCE_METRIC_ROW, NEXT_METRIC_ROW
from .queries.common import read_snapshot, run_keys  # shared by every read of the store
from .series import CallGroup, ChunkWrites, SeriesBuilder, SeriesKey

__all__ = [
    "DECODE_COLUMNS",
    "DELETE_SEGMENTS",
    "INSERT_SERIES",
    "SELECT_SERIES",
    "ChunkWriter",
    "SQLiteSeriesStore",
    "Series",
    "SeriesIds",
    "SeriesSummary",
    "chunk_row",
    "chunk_statements",
    "commit_writes",
    "decode_rows",
    "read_series",
    "read_series_of_runs",
    "read_summaries",
    "summaries_of",
    "written_keys",
]

XAxis = SeriesAxis
_RANGE_COLUMNS: Final = {
    "seq": ("seq_first", "seq_last"),
    "step": ("step_min", "step_max"),
    "time": ("time_min", "time_max"),
}

# Set-based statements: one execute per table and commit, whatever the number of rows. (executemany
# releases and retakes the GIL once per row, which a busy training thread makes wait up to the
# interpreter's switch interval each time: see runwatch.store.encode.)

#: New series in the order given, so a run's series ids follow the order its metrics first appeared.
INSERT_SERIES: Final = """
INSERT INTO metric_series (run, name) SELECT e.value ->> 0, e.value ->> 1 FROM json_each(?) AS e
WHERE true ON CONFLICT (run, name) DO NOTHING
"""
SELECT_SERIES: Final = """
SELECT s.run, s.name, s.id FROM json_each(?) AS e JOIN metric_series AS s
ON s.run = e.value ->> 0 AND s.name = e.value ->> 1
"""
#: Unsealed rows of series ``[0]`` whose first call is in ``[1]..[2]``, per JSON entry.
DELETE_SEGMENTS: Final = """
DELETE FROM metric_chunks WHERE rowid IN (
    SELECT c.rowid FROM json_each(?) AS e JOIN metric_chunks AS c
    ON c.series = e.value ->> 0 AND c.seq_first BETWEEN e.value ->> 1 AND e.value ->> 2
    WHERE c.sealed = 0
)
"""
# Rows per multi-row INSERT: 28 parameters each, well within SQLite's 32,766 per statement.
_ROWS_PER_INSERT: Final = 512


@lru_cache(maxsize=64)
def _insert_chunks_sql(rows: int) -> str:
    one = f"({', '.join('?' * (len(CHUNK_COLUMNS) + 1))})"
    return f"INSERT INTO metric_chunks (series, {', '.join(CHUNK_COLUMNS)}) VALUES {', '.join([one] * rows)}"


def chunk_statements(writes: ChunkWrites, ids: Mapping[SeriesKey, int]) -> list[tuple[str, Sequence[Any]]]:
    """The statements that apply ``writes`` (deletes first), given every series' id.

    Blobs cannot travel in JSON, so chunk rows go in multi-row ``INSERT … VALUES``
    statements: a few hundred rows per execute.
    """
    statements: list[tuple[str, Sequence[Any]]] = []
    if writes.deletes:
        ranges = [[ids[d.key], d.seq_low, d.seq_high] for d in writes.deletes]
        statements.append((DELETE_SEGMENTS, (orjson.dumps(ranges),)))
    inserts = writes.inserts
    for start in range(0, len(inserts), _ROWS_PER_INSERT):
        part = inserts[start : start + _ROWS_PER_INSERT]
        params: list[Any] = []
        for write in part:
            params.extend(chunk_row(ids[write.key], write.sealed, write.chunk))
        statements.append((_insert_chunks_sql(len(part)), params))
    return statements


def written_keys(writes: ChunkWrites) -> list[SeriesKey]:
    """The series ``writes`` touches, each once, in the order of its inserts then deletes."""
    return list(dict.fromkeys([write.key for write in writes.inserts] + [delete.key for delete in writes.deletes]))


class SeriesIds:
    """Series ids a writer knows, and those created by the transaction under way (forgotten if it rolls back)."""

    def __init__(self) -> None:
        self.ids: dict[SeriesKey, int] = {}
        self._uncommitted: list[SeriesKey] = []

    def missing(self, keys: Iterable[SeriesKey]) -> list[SeriesKey]:
        """The keys without a known id, in order, as the JSON parameter of :data:`INSERT_SERIES`."""
        ids = self.ids
        return [key for key in keys if key not in ids]

    def learn(self, rows: Iterable[tuple[int, str, int]]) -> None:
        """Take ``(run, name, id)`` rows of :data:`SELECT_SERIES`."""
        for run, name, series in rows:
            self.ids[(run, name)] = series
            self._uncommitted.append((run, name))

    def committed(self) -> None:
        self._uncommitted.clear()

    def rolled_back(self) -> None:
        for key in self._uncommitted:
            self.ids.pop(key, None)
        self._uncommitted.clear()

    def forget_runs(self, runs: Collection[int]) -> None:
        """Forget the ids of ``runs``' series (their rows were removed)."""
        for key in [key for key in self.ids if key[0] in runs]:
            del self.ids[key]


class ChunkWriter:
    """Writes :class:`ChunkWrites` into the chunk tables on a ``sqlite3`` connection; remembers series ids.

    Call :meth:`write` inside the caller's transaction; after it commits or
    rolls back, call :meth:`committed` or :meth:`rolled_back` (ids created by
    a rolled-back transaction are forgotten).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.series = SeriesIds()

    def take_seqs(self, count: int) -> int:
        """Reserve ``count`` store-wide logging-call numbers (committed at once); the first of them."""
        with self.connection:
            self.connection.execute("BEGIN IMMEDIATE")
            first = int(self.connection.execute(NEXT_METRIC_ROW).fetchone()[0])
            self.connection.execute(ADVANCE_METRIC_ROW, (count,))
        return first

    def register(self, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """Give ``keys`` ids (new ones in the order given); all known ids."""
        missing = self.series.missing(keys)
        if missing:
            param = (orjson.dumps(missing),)
            self.connection.execute(INSERT_SERIES, param)
            self.series.learn(self.connection.execute(SELECT_SERIES, param).fetchall())
        return self.series.ids

    def write(self, writes: ChunkWrites) -> None:
        """Delete replaced segment rows, then insert the new chunk rows."""
        ids = self.register(written_keys(writes))
        for sql, params in chunk_statements(writes, ids):
            self.connection.execute(sql, params)

    def committed(self) -> None:
        """The transaction of the last :meth:`write` committed."""
        self.series.committed()

    def rolled_back(self) -> None:
        """The transaction of the last :meth:`write` rolled back."""
        self.series.rolled_back()


def chunk_row(series: int, sealed: bool, chunk: EncodedChunk) -> tuple[Any, ...]:
    """The values of one ``metric_chunks`` row, in table order."""

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
        writer.register(builder.series_keys())  # ids in order of first appearance
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
        Metric name → :class:`Series`, in the order of ``names`` (or, for
        ``None``, the order the run first logged them: by series id); a name
        the run never logged is absent.

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
        rows = _chunk_rows(connection, run, wanted, by, low, high, decode)
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    order = wanted if wanted is not None else list(by_name)
    result: dict[str, Series] = {}
    for name in order:
        chunk_rows = by_name.get(name)
        if chunk_rows:
            points = decode_rows(chunk_rows, decode)
            if low is not None or high is not None:
                points = _within(points, by, low, high)
                if not _point_count(points):
                    continue  # no point of this series in the range
            result[name] = Series(run_id, name, points)
    return result


def read_series_of_runs(
    connection: sqlite3.Connection,
    run_condition: str,
    params: Sequence[Any] = (),
    *,
    start: float | None = None,
    end: float | None = None,
    columns: Collection[str] = ("seq", "step", "time", "value"),
) -> list[Series]:
    """Every series of the runs matching ``run_condition`` (SQL on ``runs AS r``), cut to a time range.

    One query for all of them (sessions: many small runs). Series come in
    the order of their ids (runs' metrics in order of first appearance).

    Args:
        run_condition: an SQL condition on the table ``runs`` aliased ``r``, with ``?`` for ``params``.
        start, end: only points at or after / at or before these epoch seconds.
        columns: as for :func:`read_series`.
    """
    low, high = _x_bound("time", start, "start"), _x_bound("time", end, "end")
    decode = frozenset(columns) | {"seq", "time"}
    where = [run_condition]
    bounds: list[Any] = list(params)
    if low is not None:
        where.append("c.time_max >= ?")
        bounds.append(low)
    if high is not None:
        where.append("c.time_min <= ?")
        bounds.append(high)
    with read_snapshot(connection):
        rows = connection.execute(
            f"SELECT r.run_id, s.name, {decode_columns(decode)}"
            " FROM runs AS r JOIN metric_series AS s ON s.run = r.id JOIN metric_chunks AS c ON c.series = s.id"
            f" WHERE {' AND '.join(where)} ORDER BY s.id, c.seq_first",
            bounds,
        ).fetchall()
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1]), []).append(row[1:])
    result = []
    for (run_id, name), chunk_rows in grouped.items():
        points = decode_rows(chunk_rows, decode)
        if low is not None or high is not None:
            points = _within(points, "time", low, high)
        if _point_count(points):
            result.append(Series(run_id, name, points))
    return result


def _chunk_rows(
    connection: sqlite3.Connection,
    run: int,
    names: list[str] | None,
    by: XAxis,
    low: int | None,
    high: int | None,
    columns: Collection[str],
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
        f"SELECT s.name, {decode_columns(columns)} FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
        f" WHERE {' AND '.join(where)} ORDER BY s.id, c.seq_first",
        params,
    ).fetchall()


#: The columns a chunk row is selected with for :func:`decode_rows` (after a leading key column).
DECODE_COLUMNS: Final = "c.count, c.value_type, c.seqs, c.steps, c.step_mask, c.times, c.vals, c.tags"
_BLOBS: Final = {"seq": ("c.seqs",), "step": ("c.steps", "c.step_mask"), "time": ("c.times",), "value": ("c.vals",)}


def decode_columns(columns: Collection[str]) -> str:
    """:data:`DECODE_COLUMNS` with NULL for the blobs of columns not decoded: sqlite3 copies every
    blob it hands over (10 of 22 ms for a 5M-point series' four columns)."""
    wanted = {blob for name in columns for blob in _BLOBS.get(name, ())}
    if "tags" in columns:
        wanted.add("c.tags")
    picked = [blob if blob in wanted else "NULL" for blob in DECODE_COLUMNS.split(", ")[2:]]
    return ", ".join(["c.count", "c.value_type", *picked])


def decode_rows(rows: Sequence[Sequence[Any]], columns: frozenset[str]) -> ChunkColumns:
    """One series' chunk rows, ``(key, *DECODE_COLUMNS)`` in call order, decoded into preallocated arrays."""
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


def _point_count(points: ChunkColumns) -> int:
    """How many points ``points`` holds, whichever columns were decoded."""
    return max(len(points.seq), len(points.step), len(points.time_us), len(points.values))


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
            f" WHERE {where} ORDER BY s.id, c.seq_first",
            params,
        ).fetchall()
    return summaries_of(rows, wanted)


def summaries_of(rows: Iterable[Sequence[Any]], names: Sequence[str] | None) -> dict[str, SeriesSummary]:
    """Each series' :class:`SeriesSummary` from its chunk summary rows (name first, in series then call order),
    in the order of ``names`` (None: as the rows come); a backend selects the rows its own way."""
    grouped: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    order = names if names is not None else list(grouped)
    return {name: _summarize(grouped[name]) for name in order if name in grouped}


def _summarize(rows: list[Sequence[Any]]) -> SeriesSummary:
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
        self.builder.next_seq = self.writer.take_seqs(len(calls))
        self.builder.add_calls(calls, self._run_keys)

    def _seed_runs(self, run_ids: Iterable[str]) -> None:
        """Resolve runs new to this store."""
        missing = set(run_ids) - self._run_keys.keys()
        if missing:
            self._run_keys.update(run_keys(self.connection, sorted(missing)))

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
        first = self.writer.take_seqs(count)
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
