"""The PostgreSQL schema and its migrations: the SQLite store's tables and versions, in PostgreSQL's types.

Every table of :mod:`runwatch.store.schema` exists here with the same columns
and meaning, so the two stores hold the same data and the reads shape it the
same way: times are ``double precision`` epoch seconds, JSON documents are
``text`` (kept byte for byte as written, as in SQLite), a logging call's
values are a JSON array (``null`` = NaN, ``"inf"``/``"-inf"`` = ±Inf) in its
key set's order. The versions are the SQLite store's, step by step, so
``schema_version()`` and ``migrate()`` mean the same on both:

1. runs, metric key sets, metric rows, metric statistics, events, state
   history, meta. The positions of the three append-only streams (metric
   row numbers, ``events`` and ``state_history`` ids) are store-wide, as in
   SQLite, and come from a sequence each through
   ``runwatch_take_positions(sequence, n)``: a block of ``n`` consecutive
   positions (a writer's ledger notes ranges), taken under a short advisory
   lock (not held to the commit, so writers of different runs never wait
   for each other's transactions). The function also takes the *tail lock*
   shared until the transaction ends: a live tail (:mod:`.tail`) takes it
   exclusively for a moment to learn up to where every position taken is
   settled (committed or rolled back).
2. ``ingest_batches``; and ``partition_owners``, the fencing tokens and last
   committed stream sequence of the scale-out bus's partitions
   (docs/scale.md), written in the same transactions as the batches.
3. ``metric_rollups``.
4. ``snapshots``.
5. nothing to do: ``double precision`` keeps the sign of zero (SQLite's REAL
   column needed a rebuild for it).
6. ``ingest_batches`` scoped per run, with a content digest.
7. images (``media_blobs``, ``images``, ``media_usage``) and histograms.
8. ``run_annotations``.
9. ``detail`` of events and state patches.
10. metrics in columnar chunks (:mod:`runwatch.store.chunk_schema`):
    ``metric_series`` and ``metric_chunks`` replace ``metric_keysets`` and
    ``metric_rows``. The chunk bytes are the SQLite store's, in ``bytea``; the
    summary columns ``value_min``/``value_max``/``value_sum``/``value_last``
    are ``double precision`` (NULL for NaN, as in SQLite), and an integer
    chunk's exact figures are in their ``bigint`` twins ``exact_*`` (a float
    would round 2**63 - 1). ``rowid`` names a chunk row as SQLite's rowid
    does. Logging calls keep their store-wide numbers from the
    ``metric_row_positions`` sequence. No PostgreSQL store held metric rows
    before this version was released, so the step does not convert them: it
    refuses a store that has some (export the runs first, import them after).

The version is the one row of ``runwatch_schema``. Each step runs in its own
transaction with its version bump, under an advisory lock, so processes
preparing the same empty database at once (a serve node and a worker) never
run a step twice.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from ..schema import MIGRATIONS as SQLITE_MIGRATIONS
from ..schema import SCHEMA_VERSION, Migration

__all__ = [
    "MIGRATIONS",
    "POSITION_SEQUENCES",
    "POSITIONS_LOCK",
    "SCHEMA_VERSION",
    "TAIL_LOCK",
    "current_version",
    "migrate",
    "take_positions",
]

#: The advisory lock every migration step takes (any constant; runwatch's alone in its database).
_MIGRATION_LOCK: Final = 0x72756E77  # "runw"

#: Taken around the few statements that hand out a block of stream positions (never held to a commit).
POSITIONS_LOCK: Final = 0x72756E78
#: Taken shared by every transaction that took stream positions, until it ends; exclusively by a live tail
#: for the moment it reads the sequences (see :mod:`.tail`).
TAIL_LOCK: Final = 0x72756E79

#: The sequence of each append-only stream's positions.
POSITION_SEQUENCES: Final = {
    "metric_rows": "metric_row_positions",
    "events": "events_positions",
    "state_history": "state_history_positions",
}

_SCALAR = "double precision"

# The tail lock first, the positions lock second: a transaction that holds the tail lock already is granted
# it again at once, so no transaction waits for the positions lock while holding what a tail waits for.
_TAKE_POSITIONS = f"""
CREATE FUNCTION runwatch_take_positions(sequence regclass, n bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({TAIL_LOCK});
    PERFORM pg_advisory_lock({POSITIONS_LOCK});
    BEGIN
        first := nextval(sequence);
        IF n > 1 THEN
            PERFORM setval(sequence, first + n - 1);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock({POSITIONS_LOCK});
        RAISE;
    END;
    PERFORM pg_advisory_unlock({POSITIONS_LOCK});
    RETURN first;
END
$$"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        SQLITE_MIGRATIONS[0].description,
        up=(
            "CREATE SEQUENCE metric_row_positions MINVALUE 0 START 0",
            "CREATE SEQUENCE events_positions",
            "CREATE SEQUENCE state_history_positions",
            _TAKE_POSITIONS,
            f"""CREATE TABLE runs (
                id bigserial PRIMARY KEY,
                run_id text NOT NULL UNIQUE,
                kind text NOT NULL DEFAULT 'training',
                status text NOT NULL DEFAULT 'running',
                start_time {_SCALAR} NOT NULL,
                end_time {_SCALAR},
                updated_at {_SCALAR} NOT NULL,
                last_heartbeat {_SCALAR},
                config text,
                metadata text,
                final_reward {_SCALAR},
                total_steps bigint NOT NULL DEFAULT 0,
                total_episodes bigint NOT NULL DEFAULT 0,
                state text NOT NULL DEFAULT '{{}}',
                owner text
            )""",
            "CREATE INDEX runs_status ON runs (status, start_time)",
            "CREATE INDEX runs_start ON runs (start_time)",
            "CREATE TABLE metric_keysets (id bigserial PRIMARY KEY, names text NOT NULL UNIQUE)",
            f"""CREATE TABLE metric_rows (
                run bigint NOT NULL,
                row bigint NOT NULL,
                step bigint,
                ts {_SCALAR} NOT NULL,
                keyset bigint NOT NULL,
                vals text NOT NULL,
                tags text,
                PRIMARY KEY (run, row)
            )""",
            f"""CREATE TABLE metric_stats (
                run bigint NOT NULL,
                name text NOT NULL,
                count bigint NOT NULL,
                nan_count bigint NOT NULL,
                sum {_SCALAR},
                min {_SCALAR},
                max {_SCALAR},
                last {_SCALAR},
                last_ts {_SCALAR},
                last_step bigint,
                PRIMARY KEY (run, name)
            )""",
            f"""CREATE TABLE events (
                id bigint PRIMARY KEY DEFAULT runwatch_take_positions('events_positions', 1),
                run bigint NOT NULL,
                ts {_SCALAR} NOT NULL,
                kind text NOT NULL,
                type text NOT NULL,
                level text NOT NULL,
                data text NOT NULL
            )""",
            "CREATE INDEX events_run_ts ON events (run, ts)",
            "CREATE INDEX events_run_type ON events (run, type, ts)",
            "CREATE INDEX events_kind ON events (kind, id)",
            f"""CREATE TABLE state_history (
                id bigint PRIMARY KEY DEFAULT runwatch_take_positions('state_history_positions', 1),
                run bigint NOT NULL,
                ts {_SCALAR} NOT NULL,
                patch text NOT NULL
            )""",
            "CREATE INDEX state_history_run ON state_history (run, ts)",
            "CREATE TABLE meta (key text PRIMARY KEY, value text)",
        ),
        down=(
            "DROP TABLE meta",
            "DROP TABLE state_history",
            "DROP TABLE events",
            "DROP TABLE metric_stats",
            "DROP TABLE metric_rows",
            "DROP TABLE metric_keysets",
            "DROP TABLE runs",
            "DROP FUNCTION runwatch_take_positions",
            "DROP SEQUENCE state_history_positions",
            "DROP SEQUENCE events_positions",
            "DROP SEQUENCE metric_row_positions",
        ),
    ),
    Migration(
        2,
        SQLITE_MIGRATIONS[1].description + "; partition owners of the scale-out bus, for fencing",
        up=(
            f"""CREATE TABLE ingest_batches (
                batch_id text PRIMARY KEY,
                received_at {_SCALAR} NOT NULL,
                events bigint NOT NULL
            )""",
            # One row per partition of the bus: the newest owner's fencing token (its lease's
            # revision), the last stream sequence committed, and what its stages need to resume.
            """CREATE TABLE partition_owners (
                partition integer PRIMARY KEY,
                token bigint NOT NULL,
                owner text NOT NULL,
                committed_seq bigint NOT NULL DEFAULT 0,
                state text
            )""",
        ),
        down=("DROP TABLE partition_owners", "DROP TABLE ingest_batches"),
    ),
    Migration(
        3,
        SQLITE_MIGRATIONS[2].description,
        up=(
            f"""CREATE TABLE metric_rollups (
                run bigint NOT NULL,
                name text NOT NULL,
                first_row bigint NOT NULL,
                last_row bigint NOT NULL,
                first_step bigint,
                last_step bigint,
                start_ts {_SCALAR} NOT NULL,
                end_ts {_SCALAR} NOT NULL,
                count bigint NOT NULL,
                nan_count bigint NOT NULL,
                min {_SCALAR},
                max {_SCALAR},
                mean {_SCALAR},
                PRIMARY KEY (run, name, first_row)
            )""",
        ),
        down=("DROP TABLE metric_rollups",),
    ),
    Migration(
        4,
        SQLITE_MIGRATIONS[3].description,
        up=(
            f"""CREATE TABLE snapshots (
                id bigserial PRIMARY KEY,
                run bigint NOT NULL,
                ts {_SCALAR} NOT NULL,
                data text NOT NULL
            )""",
            "CREATE INDEX snapshots_run_ts ON snapshots (run, ts)",
        ),
        down=("DROP TABLE snapshots",),
    ),
    # double precision keeps -0.0 as it is: no table to rebuild.
    Migration(5, SQLITE_MIGRATIONS[4].description, up=(), down=()),
    Migration(
        6,
        SQLITE_MIGRATIONS[5].description,
        up=(
            f"""CREATE TABLE ingest_batches_scoped (
                scope text NOT NULL,
                batch_id text NOT NULL,
                digest text,
                received_at {_SCALAR} NOT NULL,
                events bigint NOT NULL,
                PRIMARY KEY (scope, batch_id)
            )""",
            "INSERT INTO ingest_batches_scoped (scope, batch_id, digest, received_at, events)"
            " SELECT '', batch_id, NULL, received_at, events FROM ingest_batches",
            "DROP TABLE ingest_batches",
            "ALTER TABLE ingest_batches_scoped RENAME TO ingest_batches",
            "ALTER INDEX ingest_batches_scoped_pkey RENAME TO ingest_batches_pkey",
        ),
        down=(
            f"""CREATE TABLE ingest_batches_unscoped (
                batch_id text PRIMARY KEY,
                received_at {_SCALAR} NOT NULL,
                events bigint NOT NULL
            )""",
            "INSERT INTO ingest_batches_unscoped (batch_id, received_at, events)"
            " SELECT batch_id, received_at, events FROM ingest_batches ORDER BY received_at"
            " ON CONFLICT (batch_id) DO NOTHING",
            "DROP TABLE ingest_batches",
            "ALTER TABLE ingest_batches_unscoped RENAME TO ingest_batches",
            "ALTER INDEX ingest_batches_unscoped_pkey RENAME TO ingest_batches_pkey",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        7,
        SQLITE_MIGRATIONS[6].description,
        up=(
            """CREATE TABLE media_blobs (
                digest text PRIMARY KEY,
                mime text NOT NULL,
                size bigint NOT NULL,
                data bytea NOT NULL
            )""",
            f"""CREATE TABLE images (
                id bigserial PRIMARY KEY,
                run bigint NOT NULL,
                name text NOT NULL,
                step bigint,
                ts {_SCALAR} NOT NULL,
                digest text NOT NULL,
                width bigint NOT NULL,
                height bigint NOT NULL,
                caption text
            )""",
            "CREATE INDEX images_run_name_step ON images (run, name, step, id)",
            "CREATE INDEX images_digest_run ON images (digest, run)",
            """CREATE TABLE media_usage (
                run bigint PRIMARY KEY,
                image_bytes bigint NOT NULL DEFAULT 0,
                images_over_budget bigint NOT NULL DEFAULT 0
            )""",
            f"""CREATE TABLE histograms (
                id bigserial PRIMARY KEY,
                run bigint NOT NULL,
                name text NOT NULL,
                step bigint,
                ts {_SCALAR} NOT NULL,
                size bigint NOT NULL,
                nan_count bigint NOT NULL,
                posinf_count bigint NOT NULL,
                neginf_count bigint NOT NULL,
                min {_SCALAR},
                max {_SCALAR},
                sum {_SCALAR},
                low {_SCALAR},
                high {_SCALAR},
                counts text NOT NULL
            )""",
            "CREATE INDEX histograms_run_name_step ON histograms (run, name, step, id)",
        ),
        down=(
            "DROP TABLE histograms",
            "DROP TABLE media_usage",
            "DROP TABLE images",
            "DROP TABLE media_blobs",
        ),
    ),
    Migration(
        8,
        SQLITE_MIGRATIONS[7].description,
        up=(
            f"""CREATE TABLE run_annotations (
                run bigint PRIMARY KEY,
                tags text NOT NULL DEFAULT '[]',
                note text NOT NULL DEFAULT '',
                updated_at {_SCALAR} NOT NULL
            )""",
        ),
        down=("DROP TABLE run_annotations",),
    ),
    Migration(
        9,
        SQLITE_MIGRATIONS[8].description,
        up=(
            "ALTER TABLE events ADD COLUMN detail text",
            "ALTER TABLE state_history ADD COLUMN detail text",
        ),
        down=(
            "ALTER TABLE state_history DROP COLUMN detail",
            "ALTER TABLE events DROP COLUMN detail",
        ),
    ),
)


def _refuse_rows(table: str, why: str) -> str:
    """A statement that stops a migration step while ``table`` holds rows."""
    return f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM {table}) THEN RAISE EXCEPTION 'runwatch: {why}'; END IF; END $$"


MIGRATIONS += (
    Migration(
        10,
        SQLITE_MIGRATIONS[9].description,
        up=(
            _refuse_rows(
                "metric_rows",
                "this store holds metric rows of schema 9; export its runs, then import them into a new store",
            ),
            "DROP TABLE metric_rows",
            "DROP TABLE metric_keysets",
            """CREATE TABLE metric_series (
                id bigserial PRIMARY KEY,
                run bigint NOT NULL,
                name text NOT NULL,
                UNIQUE (run, name)
            )""",
            f"""CREATE TABLE metric_chunks (
                rowid bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
                series bigint NOT NULL,
                seq_first bigint NOT NULL,
                seq_last bigint NOT NULL,
                sealed integer NOT NULL,
                format integer NOT NULL,
                count bigint NOT NULL,
                nan_count bigint NOT NULL,
                value_type integer NOT NULL,
                value_min {_SCALAR},
                value_max {_SCALAR},
                value_sum {_SCALAR},
                value_last {_SCALAR},
                step_first bigint,
                step_last bigint,
                step_min bigint,
                step_max bigint,
                time_first bigint NOT NULL,
                time_last bigint NOT NULL,
                time_min bigint NOT NULL,
                time_max bigint NOT NULL,
                block_points integer NOT NULL,
                blocks bytea NOT NULL,
                seqs bytea NOT NULL,
                steps bytea,
                step_mask bytea,
                times bytea NOT NULL,
                vals bytea NOT NULL,
                tags bytea,
                exact_min bigint,
                exact_max bigint,
                exact_sum bigint,
                exact_last bigint,
                PRIMARY KEY (series, seq_first)
            )""",
            "CREATE INDEX metric_chunks_by_last ON metric_chunks (seq_last)",
        ),
        down=(
            _refuse_rows(
                "metric_chunks",
                "this store holds metric chunks; export its runs before stepping below schema 10",
            ),
            "DROP TABLE metric_chunks",
            "DROP TABLE metric_series",
            "CREATE TABLE metric_keysets (id bigserial PRIMARY KEY, names text NOT NULL UNIQUE)",
            f"""CREATE TABLE metric_rows (
                run bigint NOT NULL,
                row bigint NOT NULL,
                step bigint,
                ts {_SCALAR} NOT NULL,
                keyset bigint NOT NULL,
                vals text NOT NULL,
                tags text,
                PRIMARY KEY (run, row)
            )""",
        ),
    ),
)

if len(MIGRATIONS) != SCHEMA_VERSION:  # the versions must mean the same on both stores
    raise ImportError(f"the PostgreSQL schema has {len(MIGRATIONS)} versions, the SQLite schema {SCHEMA_VERSION}")


async def current_version(connection: asyncpg.Connection) -> int:
    """The schema version of the store (0 for a database runwatch never prepared)."""
    if await connection.fetchval("SELECT to_regclass('runwatch_schema')") is None:
        return 0
    version = await connection.fetchval("SELECT version FROM runwatch_schema")
    return int(version or 0)


async def migrate(connection: asyncpg.Connection, target_version: int | None = None) -> list[int]:
    """Step the schema up or down to ``target_version`` (default: the newest); the versions passed.

    Raises:
        ValueError: ``target_version`` is not between 0 and :data:`SCHEMA_VERSION`,
            or the store is newer than this code.
    """
    target = SCHEMA_VERSION if target_version is None else target_version
    if type(target) is not int or not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target_version must be an integer from 0 to {SCHEMA_VERSION}, got {target_version!r}")
    passed: list[int] = []
    while True:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await connection.execute("CREATE TABLE IF NOT EXISTS runwatch_schema (version integer NOT NULL)")
            version = await connection.fetchval("SELECT version FROM runwatch_schema")
            if version is None:
                await connection.execute("INSERT INTO runwatch_schema (version) VALUES (0)")
                version = 0
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"the store has schema version {version}, newer than this runwatch ({SCHEMA_VERSION});"
                    " upgrade runwatch"
                )
            if version == target:
                return passed
            if version < target:
                step = MIGRATIONS[version]
                statements, new_version = step.up, step.version
            else:
                step = MIGRATIONS[version - 1]
                statements, new_version = step.down, step.version - 1
            for statement in statements:
                await connection.execute(statement)
            await connection.execute("UPDATE runwatch_schema SET version = $1", new_version)
        passed.append(new_version)


async def take_positions(connection: asyncpg.Connection, stream: str, count: int) -> int:
    """The first of ``count`` consecutive positions of ``stream``, for the caller's transaction (see the docs)."""
    first = await connection.fetchval(
        "SELECT runwatch_take_positions($1::regclass, $2)", POSITION_SEQUENCES[stream], count
    )
    return int(first)
