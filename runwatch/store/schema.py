"""The SQLite schema and its migrations.

The schema version is SQLite's ``PRAGMA user_version``. Each migration is a
step up (and its step down) applied inside one transaction together with the
version bump, so a crash mid-migration leaves the previous version intact.

Layout (version 1)::

    runs            one row per run or session: status, times, config, state
    metric_keysets  the ordered names of a logging call, interned
    metric_rows     one row per logging call: step, ts, key set, values as a
                    JSON array (null = NaN, "inf"/"-inf" = ±Inf)
    metric_stats    per run and metric: count, NaN count, sum, min, max, last
    events        log events, lifecycle, exceptions, alerts (JSON data)
    state_history every state patch, in order
    meta          key/value (e.g. the next metric row number)

Version 2 adds ``ingest_batches``: the ids of batches taken by ``/api/ingest``,
written in the same transaction as their events.

Version 3 adds ``metric_rollups``: downsampled metric rows (see
:mod:`runwatch.store.lifecycle`). Each row summarises one metric over a
bucket of consecutive logging calls of a run that were removed from
``metric_rows``: their row range, step range, time range, the number of
values (NaN included) and of NaN, and min/max/mean over the others.

Version 4 adds ``snapshots``: saved views of runs (see
:mod:`runwatch.stages.snapshot`), one JSON document per row, indexed by run
and time.

Version 5 declares the value columns of ``metric_stats`` (``sum``, ``min``,
``max``, ``last``) without a type: a REAL column stores a float without a
fraction as an integer on disk, which turns -0.0 into 0.0.

Version 6 scopes ``ingest_batches`` per run: a batch id is unique within
its ``scope`` (the run of the batch's first event), and ``digest`` (a hash
of the batch's content) tells a retry from a reused id with new content.
Ids recorded before version 6 keep the scope ``''`` and no digest: any run's
retry of such an id is still answered as a duplicate. Stepping down keeps
one row per batch id.

Version 7 adds images and histograms (see :mod:`runwatch.store.media`):
``media_blobs`` keeps each image content once, named by its SHA-256;
``images`` has one row per logged image (run, name, step, time, size,
caption) naming its blob; ``media_usage`` counts per run the bytes of its
images (each content once per run) against the per-run budget, and the
images refused over it; ``histograms`` has one row per logged histogram:
its counts as a JSON array of ``len`` equal bins from ``low`` to ``high``,
and its summary. Their number columns have no declared type (as
``metric_stats`` since version 5), so -0.0 stays -0.0.

Version 8 adds ``run_annotations``: the tags and the free-text note a user
gives a run (see :mod:`runwatch.store.queries.annotations`), one row per annotated
run.

Version 9 adds ``detail`` to ``events`` and ``state_history``: what a
producer's protocol said beyond runwatch's own fields, kept to answer it
back exactly (datacat's event fields and timestamp texts, see
:mod:`runwatch.wire.datacat`); ``NULL`` for runwatch's own events.

Version 10 keeps metric values in columnar chunks (see docs/store.md and
:mod:`runwatch.store.chunk_schema`): ``metric_series`` (one row per run and
metric) and ``metric_chunks`` (one row per chunk of a series: summary
columns, block summaries, encoded columns) replace ``metric_rows`` and
``metric_keysets``. The step copies every run's rows into chunks, each
call keeping its row number as its call number (``seq``), so rollups'
row ranges still point at the same calls; ``meta.next_metric_row`` keeps
numbering calls store-wide (the live tail and ``runwatch sync`` read calls by
that number).
Stepping down rebuilds one row per logging call from the chunks.
``metric_stats`` and ``metric_rollups`` keep their layout.

A step's ``up`` and ``down`` are SQL statements or Python callables taking
the connection (for the steps that move data with code), run in order in
the step's transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import connections
from .chunk_schema import CHUNK_TABLES, DROP_CHUNK_TABLES
from .connections import apply_pragmas

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "create_private_file",
    "current_version",
    "make_private_dirs",
    "migrate",
    "prepare_database",
]


#: What a step runs: a SQL statement, or a function of the connection (inside the step's transaction).
Statement = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``up`` leads to ``version``, ``down`` back to ``version - 1``."""

    version: int
    description: str
    up: tuple[Statement, ...]
    down: tuple[Statement, ...]


# Versions 1 to 6 kept one row per logging call: a call's names, in order, interned once as a
# key set, and its values a JSON array in that order (null = NaN, "inf"/"-inf" = ±Inf).
_V1_METRIC_TABLES: tuple[str, ...] = (
    "CREATE TABLE metric_keysets (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE)",
    """CREATE TABLE metric_rows (
        run INTEGER NOT NULL,
        row INTEGER NOT NULL,
        step INTEGER,
        ts REAL NOT NULL,
        keyset INTEGER NOT NULL,
        vals TEXT NOT NULL,
        tags TEXT,
        PRIMARY KEY (run, row)
    ) WITHOUT ROWID""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "runs, metrics, events, state history",
        up=(
            """CREATE TABLE runs (
                id INTEGER PRIMARY KEY,
                run_id TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL DEFAULT 'training',
                status TEXT NOT NULL DEFAULT 'running',
                start_time REAL NOT NULL,
                end_time REAL,
                updated_at REAL NOT NULL,
                last_heartbeat REAL,
                config TEXT,
                metadata TEXT,
                final_reward REAL,
                total_steps INTEGER NOT NULL DEFAULT 0,
                total_episodes INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL DEFAULT '{}',
                owner TEXT
            )""",
            "CREATE INDEX runs_status ON runs(status, start_time)",
            "CREATE INDEX runs_start ON runs(start_time)",
            *_V1_METRIC_TABLES,
            """CREATE TABLE metric_stats (
                run INTEGER NOT NULL,
                name TEXT NOT NULL,
                count INTEGER NOT NULL,
                nan_count INTEGER NOT NULL,
                sum REAL,
                min REAL,
                max REAL,
                last REAL,
                last_ts REAL,
                last_step INTEGER,
                PRIMARY KEY (run, name)
            ) WITHOUT ROWID""",
            """CREATE TABLE events (
                id INTEGER PRIMARY KEY,
                run INTEGER NOT NULL,
                ts REAL NOT NULL,
                kind TEXT NOT NULL,
                type TEXT NOT NULL,
                level TEXT NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX events_run_ts ON events(run, ts)",
            "CREATE INDEX events_run_type ON events(run, type, ts)",
            """CREATE TABLE state_history (
                id INTEGER PRIMARY KEY,
                run INTEGER NOT NULL,
                ts REAL NOT NULL,
                patch TEXT NOT NULL
            )""",
            "CREATE INDEX state_history_run ON state_history(run, ts)",
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
            "INSERT INTO meta (key, value) VALUES ('next_metric_row', 0)",
        ),
        down=(
            "DROP TABLE meta",
            "DROP TABLE state_history",
            "DROP TABLE events",
            "DROP TABLE metric_stats",
            "DROP TABLE metric_rows",
            "DROP TABLE metric_keysets",
            "DROP TABLE runs",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "ids of ingested batches, for exactly-once retries",
        up=(
            """CREATE TABLE ingest_batches (
                batch_id TEXT PRIMARY KEY,
                received_at REAL NOT NULL,
                events INTEGER NOT NULL
            ) WITHOUT ROWID""",
        ),
        down=("DROP TABLE ingest_batches",),
    ),
    Migration(
        3,
        "metric rollups: downsampled metric rows",
        up=(
            """CREATE TABLE metric_rollups (
                run INTEGER NOT NULL,
                name TEXT NOT NULL,
                first_row INTEGER NOT NULL,
                last_row INTEGER NOT NULL,
                first_step INTEGER,
                last_step INTEGER,
                start_ts REAL NOT NULL,
                end_ts REAL NOT NULL,
                count INTEGER NOT NULL,
                nan_count INTEGER NOT NULL,
                min REAL,
                max REAL,
                mean REAL,
                PRIMARY KEY (run, name, first_row)
            ) WITHOUT ROWID""",
        ),
        down=("DROP TABLE metric_rollups",),
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "snapshots: saved views of runs",
        up=(
            """CREATE TABLE snapshots (
                id INTEGER PRIMARY KEY,
                run INTEGER NOT NULL,
                ts REAL NOT NULL,
                data TEXT NOT NULL
            )""",
            "CREATE INDEX snapshots_run_ts ON snapshots(run, ts)",
        ),
        down=("DROP INDEX snapshots_run_ts", "DROP TABLE snapshots"),
    ),
)


def _metric_stats_table(name: str, value_type: str) -> str:
    return f"""CREATE TABLE {name} (
                run INTEGER NOT NULL,
                name TEXT NOT NULL,
                count INTEGER NOT NULL,
                nan_count INTEGER NOT NULL,
                sum {value_type},
                min {value_type},
                max {value_type},
                last {value_type},
                last_ts REAL,
                last_step INTEGER,
                PRIMARY KEY (run, name)
            ) WITHOUT ROWID"""


def _rebuild_metric_stats(value_type: str) -> tuple[str, ...]:
    return (
        _metric_stats_table("metric_stats_rebuilt", value_type),
        "INSERT INTO metric_stats_rebuilt SELECT run, name, count, nan_count, sum, min, max, last, last_ts, last_step"
        " FROM metric_stats",
        "DROP TABLE metric_stats",
        "ALTER TABLE metric_stats_rebuilt RENAME TO metric_stats",
    )


MIGRATIONS += (
    Migration(
        5,
        "metric statistics keep the sign of zero",
        # No declared type: no affinity, so a stored float stays a float (a REAL column writes
        # -0.0 as the integer 0); the writer only ever stores numbers, NULL and "inf"/"-inf".
        up=_rebuild_metric_stats(""),
        down=_rebuild_metric_stats("REAL"),
    ),
)

MIGRATIONS += (
    Migration(
        6,
        "ingest batch ids scoped per run, with a digest of each batch's content",
        up=(
            """CREATE TABLE ingest_batches_scoped (
                scope TEXT NOT NULL,
                batch_id TEXT NOT NULL,
                digest TEXT,
                received_at REAL NOT NULL,
                events INTEGER NOT NULL,
                PRIMARY KEY (scope, batch_id)
            ) WITHOUT ROWID""",
            "INSERT INTO ingest_batches_scoped (scope, batch_id, digest, received_at, events)"
            " SELECT '', batch_id, NULL, received_at, events FROM ingest_batches",
            "DROP TABLE ingest_batches",
            "ALTER TABLE ingest_batches_scoped RENAME TO ingest_batches",
        ),
        down=(
            """CREATE TABLE ingest_batches_unscoped (
                batch_id TEXT PRIMARY KEY,
                received_at REAL NOT NULL,
                events INTEGER NOT NULL
            ) WITHOUT ROWID""",
            "INSERT OR IGNORE INTO ingest_batches_unscoped (batch_id, received_at, events)"
            " SELECT batch_id, received_at, events FROM ingest_batches ORDER BY received_at",
            "DROP TABLE ingest_batches",
            "ALTER TABLE ingest_batches_unscoped RENAME TO ingest_batches",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        7,
        "images (content-addressed blobs) and histograms",
        up=(
            # A rowid table: blobs are large rows, which WITHOUT ROWID tables store poorly.
            """CREATE TABLE media_blobs (
                digest TEXT PRIMARY KEY,
                mime TEXT NOT NULL,
                size INTEGER NOT NULL,
                data BLOB NOT NULL
            )""",
            """CREATE TABLE images (
                id INTEGER PRIMARY KEY,
                run INTEGER NOT NULL,
                name TEXT NOT NULL,
                step INTEGER,
                ts REAL NOT NULL,
                digest TEXT NOT NULL,
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                caption TEXT
            )""",
            "CREATE INDEX images_run_name_step ON images(run, name, step, id)",
            # Whether a run already holds a content (its budget counts it once), and whether any image still does.
            "CREATE INDEX images_digest_run ON images(digest, run)",
            """CREATE TABLE media_usage (
                run INTEGER PRIMARY KEY,
                image_bytes INTEGER NOT NULL DEFAULT 0,
                images_over_budget INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE histograms (
                id INTEGER PRIMARY KEY,
                run INTEGER NOT NULL,
                name TEXT NOT NULL,
                step INTEGER,
                ts REAL NOT NULL,
                size INTEGER NOT NULL,
                nan_count INTEGER NOT NULL,
                posinf_count INTEGER NOT NULL,
                neginf_count INTEGER NOT NULL,
                min,
                max,
                sum,
                low,
                high,
                counts TEXT NOT NULL
            )""",
            "CREATE INDEX histograms_run_name_step ON histograms(run, name, step, id)",
        ),
        down=(
            "DROP TABLE histograms",
            "DROP TABLE media_usage",
            "DROP TABLE images",
            "DROP TABLE media_blobs",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "run annotations: tags and a note per run",
        up=(
            """CREATE TABLE run_annotations (
                run INTEGER PRIMARY KEY,
                tags TEXT NOT NULL DEFAULT '[]',
                note TEXT NOT NULL DEFAULT '',
                updated_at REAL NOT NULL
            )""",
        ),
        down=("DROP TABLE run_annotations",),
    ),
)

MIGRATIONS += (
    Migration(
        9,
        "the detail of events and state patches (what a producer's protocol said beyond runwatch's fields)",
        up=(
            "ALTER TABLE events ADD COLUMN detail TEXT",
            "ALTER TABLE state_history ADD COLUMN detail TEXT",
        ),
        down=(
            "ALTER TABLE state_history DROP COLUMN detail",
            "ALTER TABLE events DROP COLUMN detail",
        ),
    ),
)


def _copy_rows_into_chunks(connection: sqlite3.Connection) -> None:
    from .chunk_migration import copy_metric_rows  # numpy: imported only when a store migrates

    copy_metric_rows(connection)


def _copy_chunks_into_rows(connection: sqlite3.Connection) -> None:
    from .chunk_migration import copy_chunks_to_rows

    copy_chunks_to_rows(connection)


MIGRATIONS += (
    Migration(
        10,
        "metric series in columnar chunks",
        up=(
            *CHUNK_TABLES,
            _copy_rows_into_chunks,
            "DROP TABLE metric_rows",
            "DROP TABLE metric_keysets",
        ),
        down=(
            *_V1_METRIC_TABLES,
            _copy_chunks_into_rows,
            *DROP_CHUNK_TABLES,
        ),
    ),
)

#: The version this code writes and reads.
SCHEMA_VERSION = MIGRATIONS[-1].version


def make_private_dirs(path: str | os.PathLike[str]) -> None:
    """Create the directory ``path`` and its missing parents with mode 0700.

    A directory that already exists is left as it is (a user's own directory
    keeps the mode its owner gave it); one created meanwhile by another
    process is accepted.

    Raises:
        OSError: a directory cannot be created, or ``path`` is not a directory.
    """
    directory = Path(path).absolute()
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for item in reversed(missing):
        try:
            os.mkdir(item, 0o700)
        except FileExistsError:
            pass
    if not Path(path).is_dir():
        raise NotADirectoryError(f"{os.fspath(path)!r} is not a directory")


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; whether this call created it.

    Created with ``O_CREAT | O_EXCL``, so the file is never readable by others,
    not even for a moment, and a race with another creator is harmless.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(descriptor)
    return True


def prepare_database(path: str) -> None:
    """Create or upgrade the database at ``path`` to :data:`SCHEMA_VERSION`.

    A new database gets mode 0600 from its creation (SQLite gives its WAL and
    shared-memory files the database file's mode), and a missing directory
    for it mode 0700 (see :func:`make_private_dirs`).

    Raises:
        sqlite3.DatabaseError: the file is not a SQLite database.
        ValueError: the database is newer than this code.
        OSError: the directory or file cannot be created.
    """
    if path and path != ":memory:" and not path.startswith("file:"):
        make_private_dirs(Path(path).absolute().parent)
        create_private_file(path)
    connection = connections.connect(path)
    try:
        apply_pragmas(connection)
        migrate(connection)
    finally:
        connection.close()


def current_version(connection: sqlite3.Connection) -> int:
    """The schema version stored in the database (0 for an empty one)."""
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(connection: sqlite3.Connection, target_version: int | None = None) -> list[int]:
    """Step the schema up or down to ``target_version`` (default: the newest).

    Each step runs in its own transaction with its version bump.

    Returns:
        The versions passed through, in order.

    Raises:
        ValueError: ``target_version`` is not between 0 and :data:`SCHEMA_VERSION`,
            or the database is newer than this code.
    """
    target = SCHEMA_VERSION if target_version is None else target_version
    if type(target) is not int or not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target_version must be an integer from 0 to {SCHEMA_VERSION}, got {target_version!r}")
    version = current_version(connection)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"the database has schema version {version}, newer than this runwatch ({SCHEMA_VERSION}); upgrade runwatch"
        )
    passed: list[int] = []
    while True:
        # Each step re-reads the version under the write lock, so two processes
        # preparing the same fresh file never run the same step twice.
        step_to = _step_in_transaction(connection, target)
        if step_to is None:
            return passed
        passed.append(step_to)


def _step_in_transaction(connection: sqlite3.Connection, target: int) -> int | None:
    saved = connection.isolation_level
    connection.isolation_level = None
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = current_version(connection)
            if version == target:
                connection.execute("COMMIT")
                return None
            if version < target:
                step = MIGRATIONS[version]
                statements, new_version = step.up, step.version
            else:
                step = MIGRATIONS[version - 1]
                statements, new_version = step.down, step.version - 1
            for statement in statements:
                if isinstance(statement, str):
                    connection.execute(statement)
                else:
                    statement(connection)
            connection.execute(f"PRAGMA user_version = {int(new_version)}")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return new_version
    finally:
        connection.isolation_level = saved
