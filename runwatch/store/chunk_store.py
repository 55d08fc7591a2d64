"""The chunk tables on SQLite: the statements that apply a :class:`SeriesBuilder`'s commits, and its writers.

The statements (:func:`chunk_statements`, :data:`INSERT_SERIES` …) are
shared by the store's writer (:mod:`runwatch.store.writer`, on aiosqlite)
and the synchronous writers here: :class:`ChunkWriter` inside a caller's
transaction (the schema migration, the importer, maintenance), and
:class:`SQLiteSeriesStore`, which commits each batch itself (benchmarks and
tests of the layout). Reads are :mod:`runwatch.store.chunk_reads`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from ..exceptions import StoreError
from .base import Series, SeriesSummary
from .chart import chart
from .chunk_reads import read_series, read_summaries
from .chunk_schema import CHUNK_COLUMNS, chunk_tables_exist
from .chunks import EncodedChunk
from .encode import ADVANCE_METRIC_ROW, NEXT_METRIC_ROW
from .queries.common import run_keys
from .series import CallGroup, ChunkWrites, SeriesBuilder, SeriesKey

__all__ = [
    "DELETE_SEGMENTS",
    "INSERT_SERIES",
    "SELECT_SERIES",
    "ChunkWriter",
    "SQLiteSeriesStore",
    "SeriesIds",
    "chunk_row",
    "chunk_statements",
    "commit_writes",
    "written_keys",
]

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


def _real(value: float | int | None) -> float | int | None:
    # SQLite turns NaN into NULL anyway; say so explicitly.
    return None if isinstance(value, float) and value != value else value


def chunk_row(
    series: int,
    sealed: bool,
    chunk: EncodedChunk,
    *,
    real: Callable[[float | int | None], float | int | None] = _real,
) -> tuple[Any, ...]:
    """The values of one ``metric_chunks`` row, in table order (``series`` and :data:`CHUNK_COLUMNS`).

    Args:
        real: how a backend stores a summary value (``value_min`` … ``value_last``); by default as
            SQLite does, NaN as NULL.
    """
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
        """See :func:`runwatch.store.chunk_reads.read_series`."""
        return read_series(self.connection, run_id, names, **options)

    def read_summaries(self, run_id: str, names: Sequence[str] | None = None) -> dict[str, SeriesSummary]:
        """See :func:`runwatch.store.chunk_reads.read_summaries`."""
        return read_summaries(self.connection, run_id, names)

    def chart(self, run_ids: Sequence[str], names: Sequence[str], **options: Any) -> Any:
        """See :func:`runwatch.store.chart.chart`."""
        return chart(self.connection, run_ids, names, **options)
