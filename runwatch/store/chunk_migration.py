"""Copy the per-call metric rows of today's layout into chunks.

Each run is copied in one transaction, call by call in row order, through
the same :class:`SeriesBuilder` the writer uses: its calls are numbered
0, 1, 2, … (``seq``), a NULL step stays absent, times become microseconds,
JSON ``null`` becomes NaN and ``"inf"``/``"-inf"`` ±Inf, integers stay
integers. A run that already has chunks is skipped, so an interrupted
migration resumes where it stopped. ``metric_rows`` is left as it is
(the schema step that registers the chunk layout decides when it goes).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import orjson

from ..exceptions import StoreError
from .chunk_schema import create_chunk_tables
from .chunk_store import ChunkWriter
from .series import SeriesBuilder, group_rows, time_to_us

__all__ = ["MigrationReport", "migrate_metric_rows"]

_SPECIAL: Final = {None: math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`migrate_metric_rows` copied, and how long it took (seconds)."""

    runs: int
    skipped_runs: int
    calls: int
    values: int
    chunks: int
    seconds: float


def migrate_metric_rows(
    connection: sqlite3.Connection,
    *,
    calls_per_batch: int = 50_000,
    builder_factory: Callable[[], SeriesBuilder] = SeriesBuilder,
) -> MigrationReport:
    """Copy every run's ``metric_rows`` into the chunk tables (created if missing).

    Args:
        connection: an autocommit connection (``isolation_level=None``) to a
            store of today's layout.
        calls_per_batch: rows read and converted at a time (bounds memory).
        builder_factory: makes the builder for each run (chunk options).

    Raises:
        StoreError: a stored row does not match its key set.
    """
    started = time.perf_counter()
    create_chunk_tables(connection)
    stored_keysets = connection.execute("SELECT id, names FROM metric_keysets")
    keysets = {key: tuple(orjson.loads(names)) for key, names in stored_keysets}
    runs = [row[0] for row in connection.execute("SELECT DISTINCT run FROM metric_rows ORDER BY run")]
    migrated = skipped = calls = values = chunks = 0
    for run in runs:
        done = connection.execute("SELECT 1 FROM metric_series WHERE run = ? LIMIT 1", (run,)).fetchone()
        if done is not None:
            skipped += 1
            continue
        run_calls, run_values, run_chunks = _migrate_run(connection, run, keysets, calls_per_batch, builder_factory())
        migrated += 1
        calls += run_calls
        values += run_values
        chunks += run_chunks
    return MigrationReport(migrated, skipped, calls, values, chunks, time.perf_counter() - started)


def _migrate_run(
    connection: sqlite3.Connection,
    run: int,
    keysets: dict[int, tuple[str, ...]],
    calls_per_batch: int,
    builder: SeriesBuilder,
) -> tuple[int, int, int]:
    writer = ChunkWriter(connection)
    calls = values = chunks = 0
    connection.execute("BEGIN IMMEDIATE")
    try:
        cursor = connection.execute(
            "SELECT step, ts, keyset, vals, tags FROM metric_rows WHERE run = ? ORDER BY row", (run,)
        )
        while rows := cursor.fetchmany(calls_per_batch):
            for group_rows_ in _groups(rows, calls, keysets, run):
                builder.add(group_rows_)
                values += len(group_rows_.seq) * len(group_rows_.names)
            calls += len(rows)
            chunks += _write(writer, builder, seal_all=False)
        chunks += _write(writer, builder, seal_all=True)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return calls, values, chunks


def _write(writer: ChunkWriter, builder: SeriesBuilder, *, seal_all: bool) -> int:
    # Segments of open chunks are pointless inside one transaction; only sealed chunks go out
    # until the end, when everything seals.
    writes = builder.prepare(seal_all=seal_all, persist_open=False)
    writer.write(writes)
    builder.confirm(writes)
    return sum(1 for write in writes.inserts if write.sealed)


def _groups(rows: list[tuple[Any, ...]], first_seq: int, keysets: dict[int, tuple[str, ...]], run: int) -> list[Any]:
    count = len(rows)
    seq = np.arange(first_seq, first_seq + count, dtype=np.int64)
    keyset_of = np.fromiter(map(itemgetter(2), rows), dtype=np.int64, count=count)
    used = np.unique(keyset_of)
    groups = []
    for keyset in used.tolist():
        names = keysets.get(keyset)
        if names is None:
            raise StoreError(f"metric rows of run {run} name an unknown key set {keyset}")
        indices = np.arange(count) if len(used) == 1 else np.flatnonzero(keyset_of == keyset)
        picked = rows if len(used) == 1 else [rows[i] for i in indices.tolist()]
        steps = list(map(itemgetter(0), picked))
        valid = None
        if None in steps:
            valid = np.array([s is not None for s in steps], dtype=np.bool_)
            steps = [0 if s is None else s for s in steps]
        texts = list(map(itemgetter(3), picked))
        joined = ",".join(texts)
        parsed: list[list[Any]] = orjson.loads("[" + joined + "]")
        if "null" in joined or '"' in joined:
            parsed = [[_SPECIAL[v] if v is None or type(v) is str else v for v in row] for row in parsed]
        if any(len(row) != len(names) for row in parsed):
            raise StoreError(f"stored metric values do not match their key set {list(names)!r}")
        tag_texts = list(map(itemgetter(4), picked))
        tags = None
        if tag_texts.count(None) != len(tag_texts):
            tags = [
                None if text is None else orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
                for text in tag_texts
            ]
        seconds = np.fromiter(map(itemgetter(1), picked), dtype=np.float64, count=len(picked))
        groups.append(
            group_rows(
                run,
                names,
                seq[indices],
                np.array(steps, dtype=np.int64),
                valid,
                time_to_us(seconds),
                parsed,
                tags,
            )
        )
    return groups
