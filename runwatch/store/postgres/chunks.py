"""The chunk tables on PostgreSQL: a :class:`~runwatch.store.series.SeriesBuilder`'s commits, and chunk summaries.

The chunk bytes and the plan of each commit are the SQLite store's
(:mod:`runwatch.store.chunks`, :mod:`runwatch.store.series`); this module
only stores them: series created in order of first appearance, replaced
segment rows deleted, new chunk rows sent with ``COPY`` (binary). A chunk's
float summaries go in ``double precision`` columns (NULL for NaN, as in
SQLite); an integer chunk's exact figures also go in the ``bigint`` twins
``exact_*`` (schema version 10, :mod:`.schema`), which :func:`summary_rows`
reads back, so summaries of 64-bit integers stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import asyncpg

from ..base import Series
from ..calls import Call, calls_of_rows
from ..chunk_reads import DECODE_COLUMNS, _within, decode_columns, decode_rows
from ..chunk_schema import CHUNK_COLUMNS
from ..chunk_store import SeriesIds, chunk_row
from ..chunks import VALUE_INT, EncodedChunk
from ..series import ChunkWrites, SeriesBuilder, SeriesKey

__all__ = [
    "CHUNK_RECORD_COLUMNS",
    "SUMMARY_SELECT",
    "PostgresChunkWriter",
    "adopt_open_chunks",
    "chunk_record",
    "fetch_calls",
    "fetch_series",
    "summary_rows",
]

#: The columns of a ``metric_chunks`` record as :func:`chunk_record` gives it (``rowid`` is the table's).
CHUNK_RECORD_COLUMNS: Final = ("series", *CHUNK_COLUMNS, "exact_min", "exact_max", "exact_sum", "exact_last")
_ALL_COLUMNS: Final = frozenset({"seq", "step", "time", "value", "tags"})


def _real(value: float | int | None) -> float | None:
    """A summary value for a ``double precision`` column: NaN as NULL (as SQLite stores it)."""
    if value is None:
        return None
    number = float(value)
    return None if number != number else number


def _exact(chunk: EncodedChunk, value: float | int | None) -> int | None:
    """An integer chunk's exact figure (a sum past int64 is a float: it has none)."""
    return value if chunk.value_type == VALUE_INT and type(value) is int else None


def chunk_record(series: int, sealed: bool, chunk: EncodedChunk) -> tuple[Any, ...]:
    """The values of one ``metric_chunks`` row, in :data:`CHUNK_RECORD_COLUMNS` order."""
    return (
        *chunk_row(series, sealed, chunk, real=_real),
        _exact(chunk, chunk.min),
        _exact(chunk, chunk.max),
        _exact(chunk, chunk.sum),
        _exact(chunk, chunk.last),
    )


_INSERT_SERIES: Final = """
INSERT INTO metric_series (run, name)
SELECT k.run, k.name FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS k(run, name, position)
ORDER BY k.position
ON CONFLICT (run, name) DO NOTHING
"""
_SELECT_SERIES: Final = """
SELECT s.run, s.name, s.id FROM unnest($1::bigint[], $2::text[]) AS k(run, name)
JOIN metric_series AS s ON s.run = k.run AND s.name = k.name
"""
_DELETE_SEGMENTS: Final = """
DELETE FROM metric_chunks AS c USING unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS d(series, low, high)
WHERE c.series = d.series AND c.seq_first BETWEEN d.low AND d.high AND c.sealed = 0
"""


class PostgresChunkWriter:
    """Writes :class:`ChunkWrites` inside the caller's transaction; remembers series ids.

    After the transaction commits or rolls back, call :meth:`committed` or
    :meth:`rolled_back` (ids created by a rolled-back transaction are forgotten).
    """

    def __init__(self) -> None:
        self.series = SeriesIds()

    async def register(self, connection: asyncpg.Connection, keys: Sequence[SeriesKey]) -> dict[SeriesKey, int]:
        """Give ``keys`` ids (new ones in the order given); all known ids."""
        missing = self.series.missing(keys)
        if missing:
            runs = [run for run, _ in missing]
            names = [name for _, name in missing]
            await connection.execute(_INSERT_SERIES, runs, names)
            rows = await connection.fetch(_SELECT_SERIES, runs, names)
            self.series.learn((row[0], row[1], row[2]) for row in rows)
        return self.series.ids

    async def write(self, connection: asyncpg.Connection, order: Sequence[SeriesKey], writes: ChunkWrites) -> None:
        """Create the series of ``order`` (first appearance) as needed, delete replaced segments, insert chunks."""
        ids = await self.register(connection, order)
        if writes.deletes:
            await connection.execute(
                _DELETE_SEGMENTS,
                [ids[delete.key] for delete in writes.deletes],
                [delete.seq_low for delete in writes.deletes],
                [delete.seq_high for delete in writes.deletes],
            )
        if writes.inserts:
            records = [chunk_record(ids[write.key], write.sealed, write.chunk) for write in writes.inserts]
            await connection.copy_records_to_table("metric_chunks", records=records, columns=CHUNK_RECORD_COLUMNS)

    def committed(self) -> None:
        self.series.committed()

    def rolled_back(self) -> None:
        self.series.rolled_back()


async def adopt_open_chunks(connection: asyncpg.Connection, builder: SeriesBuilder, runs: Iterable[int]) -> None:
    """The open chunks previous writers of ``runs`` left unsealed become ``builder``'s (their rows are deleted in
    the caller's transaction; the builder writes them again with its next commit)."""
    wanted = sorted(runs)
    if not wanted:
        return
    left = await connection.fetch(
        f"SELECT c.rowid, s.run, s.name, {DECODE_COLUMNS} FROM metric_series AS s"
        " JOIN metric_chunks AS c ON c.series = s.id"
        " WHERE s.run = ANY($1::bigint[]) AND c.sealed = 0 ORDER BY s.id, c.seq_first",
        wanted,
    )
    if not left:
        return
    by_series: dict[SeriesKey, list[tuple[Any, ...]]] = {}
    for row in left:
        by_series.setdefault((row[1], row[2]), []).append(tuple(row)[2:])
    for key, rows in by_series.items():
        builder.adopt(key, decode_rows(rows, _ALL_COLUMNS))
    await connection.execute("DELETE FROM metric_chunks WHERE rowid = ANY($1::bigint[])", [row[0] for row in left])


#: The summary columns :func:`summary_rows` selects, exact figures first where an integer chunk has them.
SUMMARY_SELECT: Final = (
    "SELECT s.name, c.count, c.nan_count, c.value_type, c.value_min, c.value_max, c.value_sum, c.value_last,"
    " c.seq_first, c.seq_last, c.step_first, c.step_last, c.time_first, c.time_last,"
    " c.exact_min, c.exact_max, c.exact_sum, c.exact_last"
)


def summary_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of :data:`SUMMARY_SELECT` as the SQLite store's summary rows: an integer chunk's exact figures
    in place of their floats (the shape :func:`runwatch.store.chunk_store.summarize` takes)."""
    out = []
    for row in rows:
        values = list(row[:14])
        if row[3] == VALUE_INT:
            for index, exact in zip(range(4, 8), row[14:18], strict=True):
                if exact is not None:
                    values[index] = exact
        out.append(tuple(values))
    return out


async def fetch_series(
    connection: asyncpg.Connection,
    condition: str,
    *params: Any,
    time_low: float | None = None,
    time_high: float | None = None,
    columns: frozenset[str] = _ALL_COLUMNS,
) -> list[Series]:
    """Every series of the runs matching ``condition`` (SQL on ``runs AS r`` with ``$1`` … for ``params``),
    decoded, cut to points at or after ``time_low`` / at or before ``time_high`` (epoch seconds); in the
    order of their ids (a run's metrics in order of first appearance). The coroutine form of
    :func:`runwatch.store.chunk_store.read_series_of_runs`."""
    where = [condition]
    bounds: list[Any] = list(params)
    low = None if time_low is None else round(time_low * 1e6)
    high = None if time_high is None else round(time_high * 1e6)
    if low is not None:
        bounds.append(low)
        where.append(f"c.time_max >= ${len(bounds)}")
    if high is not None:
        bounds.append(high)
        where.append(f"c.time_min <= ${len(bounds)}")
    rows = await connection.fetch(
        f"SELECT r.run_id, s.name, {decode_columns(columns | {'seq', 'time'})}"
        " FROM runs AS r JOIN metric_series AS s ON s.run = r.id JOIN metric_chunks AS c ON c.series = s.id"
        f" WHERE {' AND '.join(where)} ORDER BY s.id, c.seq_first",
        *bounds,
    )
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1]), []).append(tuple(row)[1:])
    found = []
    for (run_id, name), chunk_rows in grouped.items():
        points = decode_rows(chunk_rows, columns | {"seq", "time"})
        if low is not None or high is not None:
            points = _within(points, "time", low, high)
        if len(points.seq):
            found.append(Series(run_id, name, points))
    return found


async def fetch_calls(connection: asyncpg.Connection, runs: Sequence[int]) -> list[Call]:
    """Every logging call of ``runs`` (their integer keys), in number order (as
    :func:`runwatch.store.calls.read_calls` reads them)."""
    rows = await connection.fetch(
        f"SELECT r.run_id, s.name, {DECODE_COLUMNS} FROM metric_chunks AS c"
        " JOIN metric_series AS s ON s.id = c.series JOIN runs AS r ON r.id = s.run"
        " WHERE s.run = ANY($1::bigint[]) ORDER BY s.id, c.seq_first",
        list(runs),
    )
    return calls_of_rows([tuple(row) for row in rows])
