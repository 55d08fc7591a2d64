"""The SQLite sink: batched, atomic writes of every event kind into the store."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import anyio
from pydantic import Field

from ..events import IngestReceipt
from ..exceptions import StoreUnavailable
from ..pipeline.buffer import batch_nbytes
from ..pipeline.component import ComponentContext, Sink
from ..pipeline.component import Options as BaseOptions
from ..pipeline.config import MIN_MAX_BYTES
from ..sources.store_tail import COMMIT_LEDGER
from ..store.base import StoreWriter

__all__ = ["SQLiteSink", "process_owner"]

logger = logging.getLogger("runwatch.store")


def process_owner() -> str:
    """``host:pid:start-time`` of this process, so a dead owner can be detected."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.3f}"


class SQLiteSink(Sink):
    """Writes events into the SQLite store in batched transactions.

    It hands batches to the store's one write path
    (:meth:`runwatch.store.base.Store.open_writer`). A transaction is committed when
    ``max_events`` events are pending, every ``flush_interval_seconds``,
    and at every flush barrier. If a commit fails (disk full, locked), the
    events stay pending, the sink reports ``degraded`` and retries with
    backoff; upstream buffers apply their policy meanwhile. The ingest
    receipts of each committed transaction are reported to
    ``context.receipts`` (the ingest source answers on them).

    When this pipeline also follows the store live (a ``store_tail`` source
    offers its :data:`~runwatch.sources.store_tail.COMMIT_LEDGER`), each
    transaction notes what it writes there, so those rows do not come back.

    The store waits for another writer's lock in short slices (see
    :mod:`runwatch.store.writer`), so a pipeline's shutdown deadline or a
    fork never waits behind SQLite's own busy timeout. Every event ``write`` takes is either
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
        max_image_bytes_per_run: the bytes of images a run may store (each
            content once per run; see :mod:`runwatch.store.media`); past it
            new images are refused and counted (``images_over_budget``).
            ``null``: no budget.
    """

    takes_receipts = True  # internal ingest receipts: committed with their batch's events

    counts_own_losses = True  # write() keeps what it takes in _pending until committed or counted at aclose

    class Options(BaseOptions):
        path: str | None = None
        max_events: int = Field(20_000, ge=1)
        flush_interval_seconds: float = Field(0.1, gt=0)
        max_pending_events: int = Field(200_000, ge=1)
        max_pending_bytes: int = Field(64 << 20, ge=MIN_MAX_BYTES)
        max_image_bytes_per_run: int | None = Field(1 << 30, ge=1)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.tick_interval_seconds = options.flush_interval_seconds
        self._writer: StoreWriter = self._open_writer()
        self._open = False
        self._pending: list[Any] = []
        self._pending_bytes = 0  # estimated memory of _pending (see runwatch.events.event_nbytes)
        self._committed_events = 0
        self._commits = 0
        self._commit_errors = 0
        self._last_error: str | None = None
        self._last_commit_seconds: float | None = None
        self._degraded_since: float | None = None
        self._retry_at = 0.0  # monotonic: no commit is attempted before this while degraded
        self._dropped: dict[str, int] = {}
        context.receipts.add_recorder()

    def _open_writer(self) -> StoreWriter:
        """The store's write path this sink commits through."""
        return self.context.store_at(self.path).open_writer(
            owner=process_owner(), max_image_bytes_per_run=self.options.max_image_bytes_per_run
        )

    async def start(self) -> None:
        await self._writer.open()
        self._open = True

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
        if not self._open:
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
            self._open = False
            await self._writer.aclose()

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
        if not self._open:
            return False
        while self._pending:
            chunk = self._pending[: _chunk_end(self._pending, self.options.max_events)]
            started = time.perf_counter()
            try:
                receipts = await self._writer.write(chunk, ledger=self.context.services.get(COMMIT_LEDGER))
            except StoreUnavailable as exc:  # locked, disk full, read-only...: keep the events, retry later
                self._commit_failed(exc)
                return False
            except Exception as exc:
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
        """Drop (and count) the events of ``chunk`` that cannot be stored; keep the rest pending."""
        bad = self._writer.unstorable(chunk)
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
            **self._writer.counters(),
        }


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
