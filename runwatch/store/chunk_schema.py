"""The chunk tables of the store (schema version 10; see :mod:`runwatch.store.schema`).

Layout::

    metric_series   one row per (run, metric name): its integer id
    metric_chunks   one row per chunk of a series: summary columns, block
                    summaries, then the encoded columns (see runwatch.store.chunks)

``metric_chunks`` is keyed by (series, seq_first): a series' chunks are
disjoint, ordered ranges of its run's logging calls, numbered store-wide
(``meta.next_metric_row``); an index on ``seq_last`` finds every run's calls
after a number (the live tail's read). ``sealed = 0`` marks a
segment of a still-open chunk (replaced when the chunk seals). The summary
columns ``value_min``, ``value_max``, ``value_sum`` and ``value_last`` have
no declared type on purpose: SQLite then keeps what it is given, so integer
chunks keep exact 64-bit integers and −0.0 stays −0.0 (a REAL or NUMERIC
column would store −0.0 as the integer 0). NaN is stored as NULL (SQLite
has no NaN); see :mod:`runwatch.store.chunks` for what NULL means in each.
Series ids are given in order of the series' first appearance in a run, so
``ORDER BY id`` lists a run's metrics in the order they were first logged.

PostgreSQL takes the same layout with ``bigint`` for the integer columns,
``bytea`` for the blobs, ``double precision`` for float summaries (NaN
kept) plus ``bigint`` twins for integer chunks, and ``COPY`` for bulk
inserts; chunk bytes are identical on both.
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["CHUNK_COLUMNS", "CHUNK_TABLES", "CHUNK_VERSION", "DROP_CHUNK_TABLES", "chunk_tables_exist"]

#: The schema version that keeps metrics in chunks.
CHUNK_VERSION: Final = 10

#: The stored columns of ``metric_chunks`` after ``series``, in table order.
CHUNK_COLUMNS: Final = (
    "seq_first",
    "seq_last",
    "sealed",
    "format",
    "count",
    "nan_count",
    "value_type",
    "value_min",
    "value_max",
    "value_sum",
    "value_last",
    "step_first",
    "step_last",
    "step_min",
    "step_max",
    "time_first",
    "time_last",
    "time_min",
    "time_max",
    "block_points",
    "blocks",
    "seqs",
    "steps",
    "step_mask",
    "times",
    "vals",
    "tags",
)

#: The statements that create the chunk tables (schema version 10).
CHUNK_TABLES: Final = (
    """CREATE TABLE metric_series (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL,
        name TEXT NOT NULL,
        UNIQUE (run, name)
    )""",
    # Summary columns first and the block summaries before the column blobs:
    # a chart reads only the leading part of each row.
    """CREATE TABLE metric_chunks (
        series INTEGER NOT NULL,
        seq_first INTEGER NOT NULL,
        seq_last INTEGER NOT NULL,
        sealed INTEGER NOT NULL,
        format INTEGER NOT NULL,
        count INTEGER NOT NULL,
        nan_count INTEGER NOT NULL,
        value_type INTEGER NOT NULL,
        value_min,
        value_max,
        value_sum,
        value_last,
        step_first INTEGER,
        step_last INTEGER,
        step_min INTEGER,
        step_max INTEGER,
        time_first INTEGER NOT NULL,
        time_last INTEGER NOT NULL,
        time_min INTEGER NOT NULL,
        time_max INTEGER NOT NULL,
        block_points INTEGER NOT NULL,
        blocks BLOB NOT NULL,
        seqs BLOB NOT NULL,
        steps BLOB,
        step_mask BLOB,
        times BLOB NOT NULL,
        vals BLOB NOT NULL,
        tags BLOB,
        PRIMARY KEY (series, seq_first)
    )""",
    # Calls by number across every run (the live tail reads the calls after its cursor): the chunks
    # ending at or after a number.
    "CREATE INDEX metric_chunks_by_last ON metric_chunks (seq_last)",
)
#: The statements that remove them.
DROP_CHUNK_TABLES: Final = ("DROP TABLE metric_chunks", "DROP TABLE metric_series")


def chunk_tables_exist(connection: sqlite3.Connection) -> bool:
    """Whether the database has the chunk tables."""
    row = connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'metric_chunks'")
    return bool(row.fetchone()[0])
