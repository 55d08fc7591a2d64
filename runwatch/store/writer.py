"""The SQLite store's one write path: each batch the store sink hands over, in one transaction.

:class:`SQLiteWriter` owns the store's writer connection (aiosqlite: sqlite3 on
its own thread, see :func:`runwatch.store.connections.open_writer`) and every
statement that writes events: it resolves run ids, has
:class:`~runwatch.store.encode.BatchEncoder` turn the batch into the
parameters of a few set-based statements, runs them and commits. The sink
decides when to write and what to do when the store cannot take a batch.

Metrics go into columnar chunks (docs/store.md): the batch's calls become
columns (:func:`~runwatch.store.series.group_calls`, no Python object per
value), a :class:`~runwatch.store.series.SeriesBuilder` appends them to each
series' open chunk, and every transaction writes what its
:meth:`~runwatch.store.series.SeriesBuilder.prepare` plans: sealed chunks
and a segment of each open chunk holding its new points. So what a commit
acknowledges (a flush barrier's, in particular) is readable after the
process is killed. A run's open chunks seal in the transaction that stores
its end (completed or failed). A failed transaction rolls the builder back
to where it was before the batch, so the sink's retry adds it once.
Logging calls are numbered store-wide (``seq``, the store's
``next_metric_row`` counter read and advanced under the write lock, in
batch order), so a number below the counter is committed: the live tail and
``runwatch sync`` read calls by that number. A run first written by this
writer has the open chunks a previous writer of the run left unsealed (a
process that crashed or stopped mid-run) adopted: they continue as this
writer's open chunks. One writer per run at a time, as the runs' ownership
already has it.

Waiting for another writer's lock happens in slices of
:data:`~runwatch.store.connections.WRITER_BUSY_SLICE_MILLISECONDS` (up to
:data:`LOCK_WAIT_SECONDS` per transaction), so a pipeline's shutdown
deadline or a fork never waits behind SQLite's own busy timeout.

Images and histograms are written by the plans of :mod:`.media` (one logic
for this connection and the importer's), inside the same transaction; a
run's images stay within ``max_image_bytes_per_run`` (refused past it,
counted in :meth:`SQLiteWriter.counters`, logged once).

A stale run id is caught by the update that touches the run: the writer
caches run row ids, and each transaction's run update matches the id and the
run's name, so a run removed by ``runwatch cleanup`` (from any process) since
it was cached rolls the transaction back, and the run is created again.

With a :class:`~runwatch.store.ledger.CommitLedger`, each transaction notes
the positions it writes (metric row numbers, ``events`` and
``state_history`` ids: contiguous, as each new id is the table's highest
plus one under the write lock) and the heartbeats it leaves on run rows,
before it commits, so this process's live tail of the store skips them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
import orjson

from ..exceptions import StoreUnavailable
from . import connections
from .base import StoreWriter
from .chunk_reads import DECODE_COLUMNS, decode_rows
from .chunk_store import INSERT_SERIES, SELECT_SERIES, SeriesIds, chunk_statements
from .encode import (
    ADVANCE_METRIC_ROW,
    INSERT_EVENTS,
    INSERT_RECEIPTS,
    INSERT_STATE_HISTORY,
    NEXT_METRIC_ROW,
    UPSERT_METRIC_STATS,
    BatchEncoder,
    EncodedBatch,
    dumps,
    metric_stats,
    runs_with_state_patches,
)
from .ledger import CommitLedger, LedgerEntry
from .media import MediaTotals, MediaWriteOutcome, WritePlan, histogram_plan, image_plan
from .schema import prepare_database
from .series import BuilderSavepoint, ChunkWrites, SeriesBuilder, group_calls

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["LOCK_WAIT_SECONDS", "SQLiteWriter"]

logger = logging.getLogger("runwatch.store")

#: The longest one transaction waits for another writer's lock (in busy slices) before it counts as failed.
LOCK_WAIT_SECONDS: Final = 5.0
_ALL_COLUMNS: Final = frozenset({"seq", "step", "time", "value", "tags"})


class SQLiteWriter(StoreWriter):
    """Writes batches of events into a SQLite store, one transaction each (see the module docs).

    Args:
        path: the store file (created, mode 0600, by :meth:`open` when missing).
        owner: ``host:pid:start-time`` of this process: the owner of the runs it starts.
        max_image_bytes_per_run: a run's image budget in bytes (``None``: none).
    """

    def __init__(
        self,
        path: str,
        owner: str,
        *,
        max_image_bytes_per_run: int | None = None,
        builder: SeriesBuilder | None = None,
    ) -> None:
        self.path = path
        self._owner = owner
        self._max_image_bytes_per_run = max_image_bytes_per_run
        self._media = MediaTotals(max_image_bytes_per_run)  # committed image and histogram counters
        self._db: aiosqlite.Connection | None = None
        self._encoder = BatchEncoder()
        self._run_ids: dict[str, int] = {}
        #: the open chunks of every series this writer writes (see the module docs)
        self.builder = builder or SeriesBuilder()
        self._series = SeriesIds()
        self._taken_over: set[int] = set()  # runs whose unsealed chunks this writer has adopted

    async def open(self) -> None:
        # A new store is created 0600 and a directory created for it 0700 (an existing one keeps its mode).
        await anyio.to_thread.run_sync(prepare_database, self.path)
        self._db = await connections.open_writer(self.path)
        _restrict_permissions(self.path)

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with anyio.CancelScope(shield=True):  # a slice at most: the connection's busy timeout is one
                async with connections.hold_async():
                    await db.close()

    async def write(self, batch: Sequence[Any], *, ledger: CommitLedger | None = None) -> list[tuple[str, str]]:
        if self._db is None:
            raise StoreUnavailable(f"the writer of {self.path!r} is not open")
        try:
            try:
                return await self._try_transaction(self._db, batch, ledger)
            except _StaleRunIds:
                # Runs were removed (``runwatch cleanup`` from any process) since their ids were cached:
                # the transaction is rolled back; forget them and write again, creating them anew.
                stale = {self._run_ids.pop(event.run_id) for event in batch if event.run_id in self._run_ids}
                self.builder.forget_runs(stale)
                self._series.forget_runs(stale)
                self._taken_over -= stale
                return await self._try_transaction(self._db, batch, ledger)
        except Exception as exc:
            if _is_store_trouble(exc):  # locked, disk full, read-only...: the batch may be written again later
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    def unstorable(self, batch: Sequence[Any]) -> list[int]:
        return self._encoder.unstorable(batch)

    # -- one transaction ------------------------------------------------------------------

    async def _try_transaction(
        self, db: aiosqlite.Connection, batch: Sequence[Any], ledger: CommitLedger | None
    ) -> list[tuple[str, str]]:
        async with self._write_lock(db):
            return await self._write_locked(db, batch, ledger)

    @contextlib.asynccontextmanager
    async def _write_lock(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """The store's write lock (``BEGIN IMMEDIATE``), waited for in busy slices; no fork copies the connection
        while it is held.

        Raises:
            sqlite3.OperationalError: another writer kept the lock for :data:`LOCK_WAIT_SECONDS`.
        """
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            async with connections.hold_async():
                try:
                    await db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if not connections.is_busy(exc) or time.monotonic() >= deadline:
                        raise
                except BaseException:  # cancelled while waiting: the statement may still take the lock
                    with anyio.CancelScope(shield=True), contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                    raise
                else:
                    yield
                    return
            # Between slices: a shutdown's cancellation, or a fork, gets its turn here.
            await anyio.lowlevel.checkpoint()

    async def _write_locked(
        self, db: aiosqlite.Connection, batch: Sequence[Any], ledger: CommitLedger | None
    ) -> list[tuple[str, str]]:
        new_runs: list[str] = []
        builder = self.builder
        savepoint: BuilderSavepoint | None = None
        writes: ChunkWrites | None = None
        entry = ledger.begin() if ledger is not None else None
        taken_over = set(self._taken_over)
        try:
            now = time.time()  # run times are capped at the commit (see BatchEncoder.encode)
            new_runs = await self._ensure_runs(db, batch, now)
            state = await self._load_state(db, batch)
            # On the loop, not a worker thread: a CPU-bound thread beside the loop makes every socket
            # send wait for the GIL (a convoy); the sink's 0.1 s flush interval keeps each encode short.
            encoded = self._encoder.encode(batch if type(batch) is list else list(batch), self._run_ids, state, now)
            savepoint = builder.savepoint()
            await self._take_over_runs(db, encoded)
            if encoded.metric_calls:
                # Numbered store-wide under the write lock: a number below the counter is committed.
                async with db.execute(NEXT_METRIC_ROW) as cursor:
                    first = int((await cursor.fetchone() or (0,))[0])
                count = len(encoded.metric_calls)
                groups = group_calls(encoded.metric_calls, self._run_ids, first)
                await db.execute(ADVANCE_METRIC_ROW, (count,))
                if entry is not None:
                    entry.ranges.append(("metric_rows", first, first + count - 1))
                await db.execute(UPSERT_METRIC_STATS, (dumps(metric_stats(groups)),))
                builder.add_groups(groups)
            writes = builder.prepare(seal_runs=encoded.ending_runs)
            await self._write_chunks(db, writes)
            await self._execute_encoded(db, encoded, now, entry)
            media = await self._write_media(db, encoded)
            with anyio.CancelScope(shield=True):  # once sent, its outcome must be known: committed or not
                await db.execute("COMMIT")
        except BaseException:
            if entry is not None:
                assert ledger is not None
                ledger.settle(entry, committed=False)
            try:
                with anyio.CancelScope(shield=True):
                    await db.execute("ROLLBACK")
            except Exception:  # the transaction may already be gone
                pass
            for run_id in new_runs:  # their rows were rolled back too
                self._run_ids.pop(run_id, None)
            self._series.rolled_back()  # series created in this transaction are gone
            if writes is not None:
                builder.abort(writes)
            if savepoint is not None:  # the sink writes the same batch again: add it once
                builder.rollback(savepoint)
            self._taken_over = taken_over  # adopted rows are back in the store: adopt them again
            raise
        if entry is not None:
            assert ledger is not None
            ledger.settle(entry, committed=True)
        self._series.committed()
        builder.confirm(writes)
        if media is not None:
            self._media.add(media)
        if encoded.ending_runs:  # sealed: a long-lived writer keeps nothing per ended run (a resumed one reads it anew)
            builder.forget_runs(encoded.ending_runs)
            self._series.forget_runs(encoded.ending_runs)
            self._taken_over -= encoded.ending_runs
        return [(receipt[0], receipt[1]) for receipt in encoded.receipts]

    async def _take_over_runs(self, db: aiosqlite.Connection, encoded: EncodedBatch) -> None:
        """Runs this writer writes for the first time: adopt the open chunks a previous writer left
        unsealed (their rows go in this transaction)."""
        run_ids = self._run_ids
        runs = ({run_ids[call.run_id] for call in encoded.metric_calls} | encoded.ending_runs) - self._taken_over
        if not runs:
            return
        self._taken_over |= runs
        param = (orjson.dumps(sorted(runs)),)
        async with db.execute(
            f"SELECT c.rowid, s.run, s.name, {DECODE_COLUMNS} FROM metric_series AS s"
            " JOIN metric_chunks AS c ON c.series = s.id"
            " WHERE s.run IN (SELECT value FROM json_each(?)) AND c.sealed = 0 ORDER BY s.id, c.seq_first",
            param,
        ) as cursor:
            left = await cursor.fetchall()
        if not left:
            return
        by_series: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
        for row in left:
            by_series.setdefault((row[1], row[2]), []).append(row[2:])
        for key, rows in by_series.items():
            self.builder.adopt(key, decode_rows(rows, _ALL_COLUMNS))
        rowids = [row[0] for row in left]
        await db.execute(
            "DELETE FROM metric_chunks WHERE rowid IN (SELECT value FROM json_each(?))", (orjson.dumps(rowids),)
        )

    async def _write_chunks(self, db: aiosqlite.Connection, writes: ChunkWrites) -> None:
        """The chunk rows of ``writes``, each series created (in order of first appearance) if new."""
        # Every series written is still open in the builder until confirm(): its order is first appearance.
        missing = self._series.missing(self.builder.series_keys())
        if missing:
            param = (orjson.dumps(missing),)
            await db.execute(INSERT_SERIES, param)
            async with db.execute(SELECT_SERIES, param) as cursor:
                self._series.learn((run, name, series) for run, name, series in await cursor.fetchall())
        for sql, params in chunk_statements(writes, self._series.ids):
            await db.execute(sql, params)

    async def _execute_encoded(
        self, db: aiosqlite.Connection, encoded: EncodedBatch, now: float, entry: LedgerEntry | None
    ) -> None:
        for table, statement, rows in (
            ("events", INSERT_EVENTS, encoded.event_rows),
            ("state_history", INSERT_STATE_HISTORY, encoded.state_rows),
        ):
            if rows is None:
                continue
            cursor = await db.execute(statement, (rows,))
            if entry is not None and cursor.rowcount > 0 and cursor.lastrowid is not None:
                # Under the write lock each new id is the table's highest plus one: the ids are contiguous.
                entry.ranges.append((table, cursor.lastrowid - cursor.rowcount + 1, cursor.lastrowid))
        if encoded.receipts:
            await db.execute(INSERT_RECEIPTS, (dumps(encoded.receipts),))
        if encoded.run_updates:
            params = [update.row(run, self._owner, now) for run, update in encoded.run_updates.items()]
            if entry is not None:
                entry.heartbeats.update(
                    (update.run_id, update.last_heartbeat)
                    for update in encoded.run_updates.values()
                    if update.last_heartbeat is not None
                )
            cursor = await db.executemany(_UPDATE_RUN, params)
            if cursor.rowcount != len(params):  # a cached row id is gone, or now another run's
                raise _StaleRunIds

    async def _write_media(self, db: aiosqlite.Connection, encoded: EncodedBatch) -> MediaWriteOutcome | None:
        if not encoded.images and not encoded.histograms:
            return None
        outcome = MediaWriteOutcome()
        budget = self._max_image_bytes_per_run
        await _run_plan(db, image_plan(self._run_ids, encoded.images, budget, outcome))
        await _run_plan(db, histogram_plan(self._run_ids, encoded.histograms, outcome))
        return outcome

    def counters(self) -> dict[str, int]:
        return self._media.counters()

    async def _ensure_runs(self, db: aiosqlite.Connection, batch: Sequence[Any], now: float) -> list[str]:
        run_ids = self._run_ids
        missing = {event.run_id for event in batch} - run_ids.keys()
        if not missing:
            return []
        first_seen: dict[str, float] = {}
        for event in batch:
            if event.run_id in missing and event.run_id not in first_seen:
                first_seen[event.run_id] = min(event.timestamp, now)
        # No owner yet: a run is owned by whoever starts it (its lifecycle event sets the owner);
        # one that only logs is judged by the liveness stage alone.
        rows = [[run_id, ts, ts] for run_id, ts in first_seen.items()]
        await db.execute(
            "INSERT OR IGNORE INTO runs (run_id, start_time, updated_at) "
            "SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2 FROM json_each(?) AS e",
            (orjson.dumps(rows),),
        )
        async with db.execute(
            "SELECT run_id, id FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(sorted(missing)),),
        ) as cursor:
            for run_id, run in await cursor.fetchall():
                run_ids[run_id] = run
        return sorted(missing)

    async def _load_state(self, db: aiosqlite.Connection, batch: Sequence[Any]) -> dict[int, Any]:
        wanted = runs_with_state_patches(batch)
        if not wanted:
            return {}
        ids = [self._run_ids[run_id] for run_id in wanted]
        async with db.execute(
            "SELECT id, state FROM runs WHERE id IN (SELECT value FROM json_each(?))", (orjson.dumps(ids),)
        ) as cursor:
            return {run: orjson.loads(state) for run, state in await cursor.fetchall()}


# The parameters are RunUpdate.row's. COALESCE keeps what a batch does not change; ?3 true clears
# end_time (a resumed run). start_time is set once, when the row is created: a resumed run keeps its start.
_UPDATE_RUN: Final = """
UPDATE runs SET
    status = CASE
        WHEN ?4 IS NOT NULL THEN ?4
        WHEN ?5 IS NOT NULL AND status IN ('running', 'hung', 'crashed') THEN ?5
        ELSE status END,
    kind = COALESCE(?6, kind),
    end_time = CASE WHEN ?3 THEN NULL ELSE COALESCE(?7, end_time) END,
    config = COALESCE(?8, config),
    metadata = COALESCE(?9, metadata),
    final_reward = COALESCE(?10, final_reward),
    updated_at = MIN(MAX(updated_at, ?11), ?17),
    last_heartbeat = COALESCE(?12, last_heartbeat),
    total_steps = COALESCE(?13, total_steps),
    total_episodes = COALESCE(?14, total_episodes),
    state = COALESCE(?15, state),
    owner = CASE WHEN ?4 = 'running' THEN COALESCE(?16, owner) ELSE owner END
WHERE id = ?1 AND run_id = ?2
"""
# ?4 is a lifecycle status (started, paused, resumed, completed, failed): it always applies and
# a (re)started run takes its owner from the event (a remote producer) or this process.
# ?5 is a liveness verdict (hung, crashed, recovered → running): it applies only to a live
# run and never changes the owner, so a verdict cannot reopen a finished run. ?2 is the run's
# id: a row id cached for a run that cleanup removed matches no row (see _StaleRunIds). ?17 is
# the commit time: updated_at never passes it (this also brings back a row dated in the future
# by an older version).


async def _run_plan(db: aiosqlite.Connection, plan: WritePlan) -> None:
    """Run a write plan of :mod:`runwatch.store.media` on the writer's connection (as ``run_plan`` does on sqlite3)."""
    result: Any = None
    while True:
        try:
            statement = plan.send(result)
        except StopIteration:
            return
        if statement.many:
            cursor = await db.executemany(statement.sql, statement.params)
        else:
            cursor = await db.execute(statement.sql, statement.params)
        if statement.returns == "row":
            result = await cursor.fetchone()
        elif statement.returns == "rowcount":
            result = cursor.rowcount
        else:
            result = None
        await cursor.close()


class _StaleRunIds(Exception):
    """A run row the writer's cache points to was deleted (or its id reused by another run)."""


def _is_store_trouble(exc: Exception) -> bool:
    """Faults of the store itself (worth retrying), as opposed to a batch it cannot take."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError


def _restrict_permissions(path: str) -> None:
    # Training configs and state can be sensitive: the store is the owner's alone.
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(path + suffix, 0o600)
        except OSError:
            pass
