"""The SQLite sink: batched, atomic writes of every event kind into the store."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import anyio
import anyio.lowlevel
import orjson
from pydantic import Field

from ..events import IngestReceipt
from ..pipeline.buffer import batch_nbytes
from ..pipeline.component import ComponentContext, Sink
from ..pipeline.component import Options as BaseOptions
from ..pipeline.config import MIN_MAX_BYTES
from ..store import forksafe
from ..store.encode import (
    ADVANCE_METRIC_ROW,
    INSERT_EVENTS,
    INSERT_METRIC_ROWS,
    INSERT_RECEIPTS,
    INSERT_STATE_HISTORY,
    UPSERT_METRIC_STATS,
    BatchEncoder,
    EncodedBatch,
    dumps,
    encode_metric_rows,
    runs_with_state_patches,
)
from ..store.schema import prepare_database

__all__ = ["SQLiteSink", "process_owner"]

logger = logging.getLogger("runwatch.store")

#: SQLite's busy timeout on the sink's connection: one slice of waiting for another writer's lock.
BUSY_SLICE_MILLISECONDS = 100
#: The longest one commit waits for another writer's lock (in slices) before it counts as failed.
LOCK_WAIT_SECONDS = 5.0


def process_owner() -> str:
    """``host:pid:start-time`` of this process, so a dead owner can be detected."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.3f}"


class SQLiteSink(Sink):
    """Writes events into the SQLite store in batched transactions.

    One connection, one writer. A transaction is committed when
    ``max_events`` events are pending, every ``flush_interval_seconds``,
    and at every flush barrier. If a commit fails (disk full, locked), the
    events stay pending, the sink reports ``degraded`` and retries with
    backoff; upstream buffers apply their policy meanwhile. The ingest
    receipts of each committed transaction are reported to
    ``context.receipts`` (the ingest source answers on them).

    Waiting for another writer's lock happens in slices of
    :data:`BUSY_SLICE_MILLISECONDS` (up to :data:`LOCK_WAIT_SECONDS` per
    commit), so a pipeline's shutdown deadline or a fork never waits behind
    SQLite's own busy timeout. Every event ``write`` takes is either
    committed or, at ``aclose``, counted as dropped (``store_unavailable``):
    the runner never counts a cut-off write again.

    Options:
        path: the database file (default: the monitor's ``db_path``).
        max_events: events per transaction that trigger a commit.
        flush_interval_seconds: the longest an event waits before its commit.
        max_pending_events: past this many uncommitted events, ``write``
            waits for a successful commit (backpressure) instead of taking more.
        max_pending_bytes: the same bound in bytes of the uncommitted events'
            estimated memory (64 MiB), for a store that stays locked while
            large state patches or log payloads arrive.
    """

    counts_own_losses = True  # write() keeps what it takes in _pending until committed or counted at aclose

    class Options(BaseOptions):
        path: str | None = None
        max_events: int = Field(20_000, ge=1)
        flush_interval_seconds: float = Field(0.1, gt=0)
        max_pending_events: int = Field(200_000, ge=1)
        max_pending_bytes: int = Field(64 << 20, ge=MIN_MAX_BYTES)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.tick_interval_seconds = options.flush_interval_seconds
        self._db: aiosqlite.Connection | None = None
        self._pending: list[Any] = []
        self._pending_bytes = 0  # estimated memory of _pending (see runwatch.events.event_nbytes)
        self._encoder = BatchEncoder()
        self._run_ids: dict[str, int] = {}
        self._owner = process_owner()
        self._committed_events = 0
        self._commits = 0
        self._commit_errors = 0
        self._last_error: str | None = None
        self._last_commit_seconds: float | None = None
        self._degraded_since: float | None = None
        self._retry_at = 0.0  # monotonic: no commit is attempted before this while degraded
        self._dropped: dict[str, int] = {}
        context.receipts.add_recorder()

    async def start(self) -> None:
        # A new store is created 0600 and a directory created for it 0700 (an existing one keeps its mode).
        await anyio.to_thread.run_sync(prepare_database, self.path)
        async with forksafe.hold_async():
            self._db = await aiosqlite.connect(self.path, isolation_level=None, factory=forksafe.ForkSafeConnection)
            try:
                await self._db.execute(f"PRAGMA busy_timeout = {BUSY_SLICE_MILLISECONDS}")
                # Per connection: WAL with NORMAL keeps every commit across a process crash (docs/guarantees.md).
                await self._db.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._db.close()
                self._db = None
                raise
        _restrict_permissions(self.path)

    async def write(self, batch: list[Any]) -> None:
        self._pending.extend(batch)
        self._pending_bytes += batch_nbytes(batch)
        # While degraded, a retry waits for its backoff: not one failing transaction per batch.
        if len(self._pending) >= self.options.max_events and self._may_retry():
            await self._commit()
        options = self.options
        while len(self._pending) >= options.max_pending_events or self._pending_bytes >= options.max_pending_bytes:
            await self._wait_for_retry()
            await self._commit()

    async def flush(self) -> None:
        # A flush barrier is only acknowledged once everything before it is committed.
        while self._pending:
            await self._wait_for_retry()
            if await self._commit():
                return

    async def tick(self, now: float) -> None:
        if self._pending and self._may_retry():
            await self._commit()

    async def aclose(self) -> None:
        """Commit what is pending (within the caller's deadline, if any), count the rest, close."""
        if self._db is None:
            return
        try:
            # One more try, unless the pipeline's shutdown deadline has passed already.
            if self._pending and anyio.current_effective_deadline() > anyio.current_time():
                await self._commit()
        finally:
            if self._pending:
                self._dropped["store_unavailable"] = self._dropped.get("store_unavailable", 0) + len(self._pending)
                logger.error("runwatch: %d event(s) could not be committed before close", len(self._pending))
                self._pending = []
                self._pending_bytes = 0
            db, self._db = self._db, None
            with anyio.CancelScope(shield=True):  # a slice at most: the connection's busy timeout is one
                async with forksafe.hold_async():
                    await db.close()

    # -- committing -------------------------------------------------------------------

    def _backoff_seconds(self) -> float:
        return min(2.0, 0.05 * 2.0 ** min(self._commit_errors, 6))

    def _may_retry(self) -> bool:
        """Whether a commit may be attempted now (always, unless a failure's backoff is running)."""
        return self._degraded_since is None or time.monotonic() >= self._retry_at

    async def _wait_for_retry(self) -> None:
        if self._degraded_since is not None:
            await anyio.sleep(max(0.0, self._retry_at - time.monotonic()))

    async def _commit(self) -> bool:
        """Commit up to ``max_events`` pending events per transaction; False on failure."""
        if self._db is None:
            return False
        while self._pending:
            chunk = self._pending[: _chunk_end(self._pending, self.options.max_events)]
            started = time.perf_counter()
            try:
                receipts = await self._write_transaction(chunk)
            except Exception as exc:
                if _is_store_trouble(exc):  # locked, disk full, read-only...: keep the events, retry later
                    self._commit_failed(exc)
                    return False
                self._quarantine(chunk, exc)  # an event that cannot be stored must not wedge the store
                continue
            self._last_commit_seconds = time.perf_counter() - started
            self._commits += 1
            self._committed_events += len(chunk)
            if self._degraded_since is not None:
                logger.warning("runwatch: the store accepts writes again")
                self._degraded_since = None
                self._commit_errors = 0
            if len(chunk) == len(self._pending):
                self._pending, self._pending_bytes = [], 0
            else:
                self._pending = self._pending[len(chunk) :]
                self._pending_bytes -= batch_nbytes(chunk)
            if receipts:
                self.context.receipts.committed(receipts)
        return True

    def _quarantine(self, chunk: list[Any], exc: Exception) -> None:
        """Drop (and count) the events of ``chunk`` that cannot be encoded; keep the rest pending."""
        any_run: defaultdict[str, int] = defaultdict(int)  # every run id maps to row 0: only encoding is tried
        bad: list[int] = []
        for index, event in enumerate(chunk):
            try:
                encoded = self._encoder.encode([event], any_run, {})
                encode_metric_rows(encoded.metric_rows)
                dumps(encoded.metric_stats)
                dumps([list(u.__dict__.values()) for u in encoded.run_updates.values()])
            except Exception:
                bad.append(index)
        if not bad:  # no single event is at fault: a bug; drop the chunk rather than loop forever
            bad = list(range(len(chunk)))
        for index in reversed(bad):
            del chunk[index]
        self._dropped["unencodable"] = self._dropped.get("unencodable", 0) + len(bad)
        logger.error(
            "runwatch: dropped %d event(s) that could not be stored (%s: %s)", len(bad), type(exc).__name__, exc
        )
        self._pending = chunk + self._pending[len(chunk) + len(bad) :]
        self._pending_bytes = batch_nbytes(self._pending)

    def _commit_failed(self, exc: Exception) -> None:
        self._commit_errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._retry_at = time.monotonic() + self._backoff_seconds()
        if self._degraded_since is None:
            self._degraded_since = time.time()
        if self._commit_errors & (self._commit_errors - 1) == 0:
            logger.error(
                "runwatch: commit to %s failed (%d time(s)); %d event(s) kept pending: %s",
                self.path,
                self._commit_errors,
                len(self._pending),
                self._last_error,
            )

    async def _write_transaction(self, batch: list[Any]) -> list[tuple[str, str]]:
        """Write ``batch`` in one transaction; returns the ``(run_id, batch_id)`` keys of its receipts."""
        try:
            return await self._try_transaction(batch)
        except _StaleRunIds:
            # Runs were removed (``runwatch cleanup`` from any process) since their ids were cached:
            # the transaction is rolled back; forget them and write again, creating them anew.
            for event in batch:
                self._run_ids.pop(event.run_id, None)
            return await self._try_transaction(batch)

    async def _try_transaction(self, batch: list[Any]) -> list[tuple[str, str]]:
        db = self._db
        assert db is not None
        async with self._write_lock(db):
            return await self._write_locked(db, batch)

    @contextlib.asynccontextmanager
    async def _write_lock(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """The store's write lock (``BEGIN IMMEDIATE``), waited for in busy slices; no fork copies the connection
        while it is held.

        Raises:
            sqlite3.OperationalError: another writer kept the lock for :data:`LOCK_WAIT_SECONDS`.
        """
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            async with forksafe.hold_async():
                try:
                    await db.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc) or time.monotonic() >= deadline:
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

    async def _write_locked(self, db: aiosqlite.Connection, batch: list[Any]) -> list[tuple[str, str]]:
        new_runs: list[str] = []
        encoded: EncodedBatch | None = None
        try:
            now = time.time()  # run times are capped at the commit (see BatchEncoder.encode)
            new_runs = await self._ensure_runs(db, batch, now)
            state = await self._load_state(db, batch)
            # On the loop, not a worker thread: a CPU-bound thread beside the loop makes every socket
            # send wait for the GIL (a convoy); the 0.1 s flush interval keeps each encode short.
            encoded = self._encoder.encode(batch, self._run_ids, state, now)
            await self._execute_encoded(db, encoded, now)
            with anyio.CancelScope(shield=True):  # once sent, its outcome must be known: committed or not
                await db.execute("COMMIT")
            return [(receipt[0], receipt[1]) for receipt in encoded.receipts]
        except BaseException:
            if encoded is not None:  # key sets inserted in this transaction are gone too
                self._encoder.forget_keysets(encoded.new_keysets)
            try:
                with anyio.CancelScope(shield=True):
                    await db.execute("ROLLBACK")
            except Exception:  # the transaction may already be gone
                pass
            for run_id in new_runs:  # their rows were rolled back too
                self._run_ids.pop(run_id, None)
            raise

    async def _execute_encoded(self, db: aiosqlite.Connection, encoded: EncodedBatch, now: float) -> None:
        if encoded.new_keysets:
            await self._store_keysets(db, encoded)
        if encoded.metric_rows:
            await db.execute(INSERT_METRIC_ROWS, (encode_metric_rows(encoded.metric_rows),))
            await db.execute(ADVANCE_METRIC_ROW, (len(encoded.metric_rows),))
            await db.execute(UPSERT_METRIC_STATS, (dumps(encoded.metric_stats),))
        if encoded.event_rows is not None:
            await db.execute(INSERT_EVENTS, (encoded.event_rows,))
        if encoded.state_rows is not None:
            await db.execute(INSERT_STATE_HISTORY, (encoded.state_rows,))
        if encoded.receipts:
            await db.execute(INSERT_RECEIPTS, (dumps(encoded.receipts),))
        if encoded.run_updates:
            params = [_update_params(run, update, self._owner, now) for run, update in encoded.run_updates.items()]
            cursor = await db.executemany(_UPDATE_RUN, params)
            if cursor.rowcount != len(params):  # a cached row id is gone, or now another run's
                raise _StaleRunIds

    async def _store_keysets(self, db: aiosqlite.Connection, encoded: EncodedBatch) -> None:
        texts = {orjson.dumps(list(names)).decode(): names for names in encoded.new_keysets}
        param = (orjson.dumps(list(texts)),)
        await db.execute("INSERT OR IGNORE INTO metric_keysets (names) SELECT value FROM json_each(?)", param)
        async with db.execute(
            "SELECT names, id FROM metric_keysets WHERE names IN (SELECT value FROM json_each(?))", param
        ) as cursor:
            ids = {texts[names]: keyset for names, keyset in await cursor.fetchall()}
        self._encoder.resolve_keysets(encoded, ids)

    async def _ensure_runs(self, db: aiosqlite.Connection, batch: list[Any], now: float) -> list[str]:
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

    async def _load_state(self, db: aiosqlite.Connection, batch: list[Any]) -> dict[int, Any]:
        wanted = runs_with_state_patches(batch)
        if not wanted:
            return {}
        ids = [self._run_ids[run_id] for run_id in wanted]
        async with db.execute(
            "SELECT id, state FROM runs WHERE id IN (SELECT value FROM json_each(?))", (orjson.dumps(ids),)
        ) as cursor:
            return {run: orjson.loads(state) for run, state in await cursor.fetchall()}

    def lost_events(self) -> dict[str, int]:
        return dict(self._dropped)

    def statistics(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "health": "degraded" if self._degraded_since is not None else "ok",
            "degraded_since": self._degraded_since,
            "pending_events": len(self._pending),
            "pending_bytes": self._pending_bytes,
            "committed_events": self._committed_events,
            "commits": self._commits,
            "commit_errors": self._commit_errors,
            "last_commit_error": self._last_error,
            "last_commit_seconds": self._last_commit_seconds,
            "store_dropped_events": dict(self._dropped),
        }


# COALESCE keeps what a batch does not change; ?2 = 1 clears end_time (a resumed run).
# start_time is set once, when the row is created: a resumed run keeps its start.
_UPDATE_RUN = """
UPDATE runs SET
    status = CASE
        WHEN ?3 IS NOT NULL THEN ?3
        WHEN ?16 IS NOT NULL AND status IN ('running', 'hung', 'crashed') THEN ?16
        ELSE status END,
    kind = COALESCE(?4, kind),
    end_time = CASE WHEN ?2 THEN NULL ELSE COALESCE(?6, end_time) END,
    config = COALESCE(?7, config),
    metadata = COALESCE(?8, metadata),
    final_reward = COALESCE(?9, final_reward),
    updated_at = MIN(MAX(updated_at, ?10), ?18),
    last_heartbeat = COALESCE(?11, last_heartbeat),
    total_steps = COALESCE(?12, total_steps),
    total_episodes = COALESCE(?13, total_episodes),
    state = COALESCE(?14, state),
    owner = CASE WHEN ?3 = 'running' THEN COALESCE(?15, owner) ELSE owner END
WHERE id = ?1 AND run_id = ?17
"""
# ?3 is a lifecycle status (started, paused, resumed, completed, failed): it always applies and
# a (re)started run takes its owner from the event (a remote producer) or this process.
# ?16 is a liveness verdict (hung, crashed, recovered → running): it applies only to a live
# run and never changes the owner, so a verdict cannot reopen a finished run. ?17 is the run's
# id: a row id cached for a run that cleanup removed matches no row (see _StaleRunIds). ?18 is
# the commit time: updated_at never passes it (this also brings back a row dated in the future
# by an older version).


def _update_params(run: int, update: Any, owner: str, now: float) -> tuple[Any, ...]:
    return (
        run,
        1 if update.clear_end_time else 0,
        update.status,
        update.kind,
        None,
        update.end_time,
        None if update.config is None else dumps(update.config).decode(),
        None if update.metadata is None else dumps(update.metadata).decode(),
        update.final_reward,
        update.updated_at,
        update.last_heartbeat,
        update.total_steps,
        update.total_episodes,
        None if update.state is None else dumps(update.state).decode(),
        update.owner or owner,
        update.liveness_status,
        update.run_id,
        now,
    )


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite answered SQLITE_BUSY (another connection holds the lock): worth another slice."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


class _StaleRunIds(Exception):
    """A run row the sink's cache points to was deleted (or its id reused by another run)."""


def _is_store_trouble(exc: Exception) -> bool:
    """Faults of the store itself (worth retrying), as opposed to a batch it cannot take."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) or type(exc) is sqlite3.DatabaseError


def _chunk_end(pending: list[Any], limit: int) -> int:
    """Where to cut a transaction: at ``limit`` events, but never inside an
    ingested batch (its receipt must commit together with its events)."""
    if len(pending) <= limit:
        return len(pending)
    for index in range(limit, min(len(pending), limit + _MAX_INGEST_GROUP)):
        event = pending[index]
        if type(event) is IngestReceipt:
            return index + 1 if index - event.events < limit else limit
    return limit


_MAX_INGEST_GROUP = 100_000


def _restrict_permissions(path: str) -> None:
    # Training configs and state can be sensitive: the store is the owner's alone.
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(path + suffix, 0o600)
        except OSError:
            pass
