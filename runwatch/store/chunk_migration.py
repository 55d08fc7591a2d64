"""Schema version 10 and back: per-call metric rows into chunks, and chunks into rows again.

Both directions run inside the transaction of the schema step
(:mod:`runwatch.store.schema`), so a crash mid-migration leaves the previous
version as it was.

Up (:func:`copy_metric_rows`): each run's ``metric_rows``, in row order,
go through the same :class:`SeriesBuilder` the writer uses. A call keeps its
row number as its call number (``seq``): rollups' row ranges and exported
row numbers still name the same calls. A NULL step stays absent, times
become microseconds, JSON ``null`` becomes NaN and ``"inf"``/``"-inf"``
±Inf, integers stay integers, and tags are kept (as canonical JSON). Only
sealed chunks are written until a run's last row, so no segment is
written and replaced inside the one transaction.

Down (:func:`copy_chunks_to_rows`): one ``metric_rows`` row per logging
call again (the points of all of a run's series that share a ``seq``), its
names in the order the run first logged them, values as a JSON array.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import orjson

from ..exceptions import StoreError
from .chunk_reads import read_series
from .chunk_store import ChunkWriter
from .frames import calls_of
from .series import SeriesBuilder, group_rows, time_to_us

__all__ = ["MigrationReport", "copy_chunks_to_rows", "copy_metric_rows"]

_SPECIAL: Final = {None: math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`copy_metric_rows` copied, and how long it took (seconds)."""

    runs: int
    calls: int
    values: int
    chunks: int
    seconds: float


def copy_metric_rows(
    connection: sqlite3.Connection,
    *,
    calls_per_batch: int = 50_000,
    builder_factory: Callable[[], SeriesBuilder] = SeriesBuilder,
) -> MigrationReport:
    """Copy every run's ``metric_rows`` into the chunk tables, inside the caller's transaction.

    Args:
        connection: a connection inside a write transaction, to a store with
            both layouts' tables.
        calls_per_batch: rows read and converted at a time (bounds memory).
        builder_factory: makes the builder for each run (chunk options).

    Raises:
        StoreError: a stored row does not match its key set.
    """
    started = time.perf_counter()
    stored_keysets = connection.execute("SELECT id, names FROM metric_keysets")
    keysets = {key: tuple(orjson.loads(names)) for key, names in stored_keysets}
    runs = [row[0] for row in connection.execute("SELECT DISTINCT run FROM metric_rows ORDER BY run")]
    calls = values = chunks = 0
    writer = ChunkWriter(connection)
    for run in runs:
        builder = builder_factory()
        cursor = connection.execute(
            "SELECT row, step, ts, keyset, vals, tags FROM metric_rows WHERE run = ? ORDER BY row", (run,)
        )
        while rows := cursor.fetchmany(calls_per_batch):
            groups = _groups(rows, keysets, run)
            builder.add_groups(groups)  # at once: a metric in calls of several name sets merges in call order
            values += sum(len(group.seq) * len(group.names) for group in groups)
            calls += len(rows)
            chunks += _write(writer, builder, seal_all=False)
        chunks += _write(writer, builder, seal_all=True)
    writer.committed()
    return MigrationReport(len(runs), calls, values, chunks, time.perf_counter() - started)


def _write(writer: ChunkWriter, builder: SeriesBuilder, *, seal_all: bool) -> int:
    # Segments of open chunks are pointless inside one transaction; only sealed chunks go out
    # until the end, when everything seals. Series get their ids in order of first appearance.
    writes = builder.prepare(seal_all=seal_all, persist_open=False)
    writer.register(builder.series_keys())
    writer.write(writes)
    builder.confirm(writes)
    return sum(1 for write in writes.inserts if write.sealed)


def _groups(rows: list[tuple[Any, ...]], keysets: dict[int, tuple[str, ...]], run: int) -> list[Any]:
    count = len(rows)
    seq = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=count)
    keyset_of = np.fromiter(map(itemgetter(3), rows), dtype=np.int64, count=count)
    # Groups in order of each key set's first call (key set ids follow no such order): the builder
    # creates a run's series in the order it meets them, which is its frames' column order.
    used, first_rows = np.unique(keyset_of, return_index=True)
    used = used[np.argsort(first_rows)]
    groups = []
    for keyset in used.tolist():
        names = keysets.get(keyset)
        if names is None:
            raise StoreError(f"metric rows of run {run} name an unknown key set {keyset}")
        indices = np.arange(count) if len(used) == 1 else np.flatnonzero(keyset_of == keyset)
        picked = rows if len(used) == 1 else [rows[i] for i in indices.tolist()]
        steps = list(map(itemgetter(1), picked))
        valid = None
        if None in steps:
            valid = np.array([s is not None for s in steps], dtype=np.bool_)
            steps = [0 if s is None else s for s in steps]
        texts = list(map(itemgetter(4), picked))
        joined = ",".join(texts)
        parsed: list[list[Any]] = orjson.loads("[" + joined + "]")
        if "null" in joined or '"' in joined:
            parsed = [[_SPECIAL[v] if v is None or type(v) is str else v for v in row] for row in parsed]
        if any(len(row) != len(names) for row in parsed):
            raise StoreError(f"stored metric values do not match their key set {list(names)!r}")
        tag_texts = list(map(itemgetter(5), picked))
        tags = None
        if tag_texts.count(None) != len(tag_texts):
            tags = [
                None if text is None else orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
                for text in tag_texts
            ]
        seconds = np.fromiter(map(itemgetter(2), picked), dtype=np.float64, count=len(picked))
        groups.append(
            group_rows(
                run, names, seq[indices], np.array(steps, dtype=np.int64), valid, time_to_us(seconds), parsed, tags
            )
        )
    return groups


# -- down ------------------------------------------------------------------------------


def copy_chunks_to_rows(connection: sqlite3.Connection) -> int:
    """Write one ``metric_rows`` row per logging call of every run from the chunks; the rows written.

    Runs inside the caller's transaction, with ``metric_rows`` and
    ``metric_keysets`` present and empty. Each call keeps its number as its
    row number; ``meta.next_metric_row`` stays above every one (numbers are
    never given twice).
    """
    found = connection.execute("SELECT run_id FROM runs WHERE id IN (SELECT run FROM metric_series) ORDER BY id")
    runs = [row[0] for row in found]
    keysets: dict[tuple[str, ...], int] = {}
    written = 0
    next_row = 0
    for run_id in runs:
        (run,) = connection.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        series = read_series(connection, run_id, columns=("seq", "step", "time", "value", "tags"))
        rows = list(_rows_of(run, series, keysets, connection))
        for start in range(0, len(rows), 20_000):
            connection.execute(
                "INSERT INTO metric_rows (run, row, step, ts, keyset, vals, tags)"
                " SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value -> 5,"
                " e.value ->> 6 FROM json_each(?) AS e",
                (orjson.dumps(rows[start : start + 20_000]),),
            )
        if rows:
            next_row = max(next_row, rows[-1][1] + 1)
        written += len(rows)
    connection.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_metric_row'", (next_row,))
    return written


def _rows_of(
    run: int, series: dict[str, Any], keysets: dict[tuple[str, ...], int], connection: sqlite3.Connection
) -> Iterator[list[Any]]:
    """The run's calls as ``[run, row, step, ts, keyset, values, tags]``, in call order."""
    for seq, step, time_us, values, tags in calls_of(series):
        names = tuple(name for name, _ in values)
        keyset = keysets.get(names)
        if keyset is None:
            text = orjson.dumps(list(names)).decode()
            connection.execute("INSERT OR IGNORE INTO metric_keysets (names) VALUES (?)", (text,))
            (keyset,) = connection.execute("SELECT id FROM metric_keysets WHERE names = ?", (text,)).fetchone()
            keysets[names] = keyset
        yield [run, seq, step, time_us / 1e6, keyset, [_json_value(value) for _, value in values], tags]


def _json_value(value: Any) -> Any:
    """A value as the rows' JSON arrays hold it: NaN → null, ±Inf → "inf"/"-inf"."""
    if type(value) is float and not math.isfinite(value):
        return None if value != value else ("inf" if value > 0 else "-inf")
    return value
