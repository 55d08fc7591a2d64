"""PostgreSQL behaviours the writer workers of docs/scale.md rely on, on a real server.

A worker stores each JetStream message (one ingest batch) in one transaction:
the batch's key first (``INSERT ... ON CONFLICT DO NOTHING`` on (run, batch id),
with the content digest), then its rows by ``COPY``, then ``COMMIT``; it
acknowledges the message only after the commit. A redelivered or concurrently
handled batch then stores nothing twice, and a server restart mid-write loses
nothing once the worker reconnects and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson
import pytest

from runwatch.testing.servers import PostgresServer

pytestmark = pytest.mark.timeout(60)

SCHEMA = """
CREATE TABLE ingest_batches (
    run_id text NOT NULL,
    batch_id text NOT NULL,
    digest bytea NOT NULL,
    events integer NOT NULL,
    PRIMARY KEY (run_id, batch_id)
);
CREATE TABLE metric_rows (
    run_id text NOT NULL,
    row bigint NOT NULL,
    step bigint,
    ts double precision NOT NULL,
    vals double precision[] NOT NULL,
    PRIMARY KEY (run_id, row)
);
"""

Row = tuple[str, int, int | None, float, list[float]]

#: Errors after which a writer reconnects and tries the same batch again.
RECONNECT_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class BatchConflict(Exception):
    """A stored batch key arrived again with other content."""


def make_batch(run_id: str, batch_index: int, calls: int) -> list[Row]:
    """``calls`` logging calls of ``run_id`` (4 values each), numbered after the batches before it."""
    first = batch_index * calls
    return [
        (run_id, first + i, first + i, 1.8e9 + (first + i) * 0.001, [0.5, float(i), -0.0, math.nan])
        for i in range(calls)
    ]


def digest(rows: Sequence[Row]) -> bytes:
    return hashlib.blake2b(orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY), digest_size=16).digest()


async def store_batch(connection: asyncpg.Connection, run_id: str, batch_id: str, rows: Sequence[Row]) -> bool:
    """Store a batch once: True when stored now, False when it already was; BatchConflict for other content."""
    content = digest(rows)
    async with connection.transaction():
        claimed = await connection.fetchval(
            "INSERT INTO ingest_batches (run_id, batch_id, digest, events) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (run_id, batch_id) DO NOTHING RETURNING true",
            run_id,
            batch_id,
            content,
            len(rows),
        )
        if not claimed:
            stored = await connection.fetchval(
                "SELECT digest FROM ingest_batches WHERE run_id = $1 AND batch_id = $2", run_id, batch_id
            )
            if stored != content:
                raise BatchConflict(f"batch {batch_id!r} of run {run_id!r} was stored with other content")
            return False
        await connection.copy_records_to_table("metric_rows", records=rows)
    return True


@pytest.fixture
async def connection(postgres: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's server with the tables created."""
    connection = await asyncpg.connect(postgres.dsn)
    await connection.execute(SCHEMA)
    yield connection
    await connection.close()


async def test_copy_stores_every_row_of_a_batch_exactly(connection: asyncpg.Connection) -> None:
    """A batch written with COPY reads back whole and bit-exact: NaN, -0.0, None steps and float timestamps."""
    rows = make_batch("r1", 0, 5000)
    rows[7] = ("r1", 7, None, rows[7][3], [math.inf, -math.inf, 1e-310, 2.0**53 + 2])
    await connection.copy_records_to_table("metric_rows", records=rows)

    stored = await connection.fetch("SELECT run_id, row, step, ts, vals FROM metric_rows ORDER BY row")
    assert [_bits(tuple(record)) for record in stored] == [_bits(row) for row in rows]


def _bits(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row with its floats as their 8 bytes, so NaN equals NaN and -0.0 differs from 0.0."""
    run_id, number, step, ts, values = row
    return run_id, number, step, struct.pack("<d", ts), struct.pack(f"<{len(values)}d", *values)


async def test_a_redelivered_batch_stores_nothing_and_other_content_under_its_key_is_refused(
    connection: asyncpg.Connection,
) -> None:
    """The batch key makes a second delivery a no-op; the same key with other rows raises instead of dropping them."""
    rows = make_batch("r1", 0, 100)
    assert await store_batch(connection, "r1", "b0", rows) is True
    assert await store_batch(connection, "r1", "b0", rows) is False
    assert await store_batch(connection, "r2", "b0", make_batch("r2", 0, 100)) is True  # ids are scoped per run
    with pytest.raises(BatchConflict, match="b0"):
        await store_batch(connection, "r1", "b0", make_batch("r1", 1, 100))

    assert await connection.fetchval("SELECT count(*) FROM metric_rows WHERE run_id = 'r1'") == 100
    assert await connection.fetchval("SELECT count(*) FROM metric_rows") == 200


async def test_two_workers_storing_the_same_batch_at_once_store_it_once(
    postgres: PostgresServer, connection: asyncpg.Connection
) -> None:
    """Two workers racing on one batch (a redelivery while the first still works): exactly one stores it."""
    rows = make_batch("r1", 0, 2000)
    other = await asyncpg.connect(postgres.dsn)
    try:
        async with asyncio.timeout(20):
            outcomes = await asyncio.gather(
                store_batch(connection, "r1", "b0", rows), store_batch(other, "r1", "b0", rows)
            )
    finally:
        await other.close()

    assert sorted(outcomes) == [False, True]
    assert await connection.fetchval("SELECT count(*) FROM metric_rows") == 2000


async def test_a_writer_survives_a_postgres_crash_mid_transaction_and_stores_every_batch_once(
    postgres: PostgresServer, connection: asyncpg.Connection
) -> None:
    """PostgreSQL crashed (immediate stop) inside a batch's transaction: the writer reconnects; all is stored once."""
    batches, calls, crash_at = 60, 200, 20
    in_transaction = asyncio.Event()
    stored_now: list[int] = []
    reconnects = 0

    async def writer() -> None:
        nonlocal reconnects
        writer_connection: Any = None
        for index in range(batches):
            rows = make_batch("r1", index, calls)
            delay = 0.05
            while True:  # the same batch until it is known stored (a retry after a lost commit is a duplicate)
                try:
                    if writer_connection is None:
                        writer_connection = await asyncpg.connect(postgres.dsn, timeout=5)
                    if index == crash_at and not in_transaction.is_set():
                        async with writer_connection.transaction():
                            await writer_connection.execute(
                                "INSERT INTO ingest_batches VALUES ('r1', 'in-flight', '', 0)"
                            )
                            in_transaction.set()
                            await writer_connection.execute("SELECT pg_sleep(30)")  # the crash ends this
                    if await store_batch(writer_connection, "r1", f"b{index}", rows):
                        stored_now.append(index)
                    break
                except RECONNECT_ERRORS:
                    reconnects += 1
                    if writer_connection is not None:
                        writer_connection.terminate()
                        writer_connection = None
                    await asyncio.sleep(delay)  # back off while the server is down: nothing to await
                    delay = min(delay * 2, 1.0)
        await writer_connection.close()

    async with asyncio.timeout(45):
        task = asyncio.create_task(writer())
        await in_transaction.wait()
        postgres.stop("immediate")  # a crash: no checkpoint, WAL replay on start
        postgres.start()
        await task

    check = await asyncpg.connect(postgres.dsn)
    try:
        assert reconnects >= 1
        assert stored_now == list(range(batches))
        assert await check.fetchval("SELECT count(*) FROM ingest_batches") == batches
        assert await check.fetchval("SELECT count(*) FROM metric_rows") == batches * calls
        assert await check.fetchval("SELECT count(DISTINCT row) FROM metric_rows") == batches * calls
    finally:
        await check.close()
