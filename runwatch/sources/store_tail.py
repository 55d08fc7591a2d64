"""The store tail source: events that other processes commit to the store, live.

Purpose: ``runwatch serve`` over a store that training scripts write directly
(embedded mode) shows their runs live, not as a frozen view. Status: beta.
Delivery: each stored row at most once per pipeline (cursors only move
forward), never a row this process's own store writer wrote. Egress: stream.
State: stateful (one cursor per table, in memory: a restarted server starts
at the store's end; the history is in the store).

Example::

    [sources.tail]
    type = "store_tail"
    poll_interval_seconds = 0.05

    [sinks.live]
    type = "websocket_hub"
    inputs = ["alerts", "tail"]

==========================  =======  ========  ==========  ======================================
option                      type     required  default     meaning
==========================  =======  ========  ==========  ======================================
poll_interval_seconds       number   no        0.05        how often ``PRAGMA data_version`` is
                                                           asked whether another writer committed
max_rows                    integer  no        20000       rows per table per read
path                        string   no        the store   the SQLite store to follow
==========================  =======  ========  ==========  ======================================

How (see :mod:`runwatch.store.tail`): an idle store costs one cheap
``changed()`` check per poll on the loop (SQLite: ``PRAGMA data_version``, a
memory read of a few microseconds); a commit by another connection wakes one
read on a worker thread, forward from per-stream cursors, in one snapshot.
The store sink of this pipeline notes what it writes in the
:class:`~runwatch.store.ledger.CommitLedger` this source offers (service
:data:`COMMIT_LEDGER`), and those rows are skipped: an event this process
stored already went to the live views through the pipeline. Wire it into
live views only (the websocket hub): its events are stored already, and a
store sink fed by it would store them again.

An event reaches the hub at most ``poll_interval_seconds`` plus one read
after the writer's commit (the writer commits every 0.1 s by default).

Metrics (in ``statistics()``): ``tailed_events`` (sent on), ``own_rows_skipped``,
``undecodable_rows``, ``polls`` (``data_version`` checks), ``reads`` (reads after a
commit), ``read_errors``, ``foreign_runs``.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import Field

from ..exceptions import StoreUnavailable
from ..pipeline.component import ComponentContext, ServiceKey, Source
from ..pipeline.component import Options as BaseOptions
from ..store.base import StoreTail, TailRead
from ..store.ledger import OWN, PENDING, CommitLedger

__all__ = ["COMMIT_LEDGER", "STORE_TAIL", "StoreTailSource"]

logger = logging.getLogger("runwatch.tail")

#: The ledger this pipeline's store sink notes its own commits in (so they are skipped here).
COMMIT_LEDGER: ServiceKey[CommitLedger] = ServiceKey("commit ledger")
#: The source itself (``/api/health`` asks it which runs other processes write).
STORE_TAIL: ServiceKey[StoreTailSource] = ServiceKey("store_tail")

#: How long to wait before trying again after the store could not be opened or read.
_RETRY_SECONDS = 0.5


class StoreTailSource(Source):
    """Sends on what other processes commit to the store (see the module docs).

    Options:
        poll_interval_seconds: how often to ask whether another writer committed.
        max_rows: the most rows of each stream one read takes.
        path: the store to follow (default: the pipeline's ``db_path``).
    """

    class Options(BaseOptions):
        poll_interval_seconds: float = Field(0.05, gt=0, le=5.0, allow_inf_nan=False)
        max_rows: int = Field(20_000, ge=1)
        path: str | None = None

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.ledger = CommitLedger()
        self._tail: StoreTail = context.store_at(self.path).open_tail(max_rows=options.max_rows)
        self._wake = anyio.Event()
        self.tailed_events = 0
        self.own_rows_skipped = 0
        self.undecodable_rows = 0
        self.polls = 0
        self.reads = 0
        self.read_errors = 0
        self.last_read_error: str | None = None
        #: Runs whose rows this source sent on: written by another process.
        self.foreign_runs: set[str] = set()

    async def start(self) -> None:
        # Before any source runs (sinks started first, none has written yet): every transaction of this
        # pipeline's store sink is noted, none can commit unnoted after the tail opened.
        self.ledger = self.context.services.provide(COMMIT_LEDGER, self.ledger)
        self.context.services.provide(STORE_TAIL, self)

    async def aclose(self) -> None:
        self.context.services.withdraw(STORE_TAIL, self)
        self.context.services.withdraw(COMMIT_LEDGER, self.ledger)

    async def run(self, stopping: anyio.Event) -> None:
        try:
            await self._follow(self._tail, stopping)
        finally:
            self._tail.close()

    def stop(self) -> None:
        self._wake.set()

    async def _follow(self, tail: StoreTail, stopping: anyio.Event) -> None:
        poll = self.options.poll_interval_seconds
        again = False  # rows held back at the last read: read again at the next poll, commit or not
        while not stopping.is_set():
            if not tail.opened and not await self._open(tail):
                await self._sleep(_RETRY_SECONDS, stopping)
                continue
            self.polls += 1
            if again or tail.changed():
                mark = self.ledger.mark()
                own = self.ledger.settled_ranges()  # not even read: this process stored them
                try:
                    read = await anyio.to_thread.run_sync(tail.read, own)
                except StoreUnavailable as exc:
                    self._read_failed(exc)
                    await self._sleep(_RETRY_SECONDS, stopping)
                    continue
                self.reads += 1
                events, again = self._take(tail, read, mark)
                if events:
                    await self.output.send(events)
                if read.more:  # a full window: the rest is there already
                    await anyio.lowlevel.checkpoint()
                    continue
            await self._sleep(poll, stopping)

    async def _open(self, tail: StoreTail) -> bool:
        try:
            await anyio.to_thread.run_sync(tail.open)
        except StoreUnavailable as exc:
            self._read_failed(exc)
            return False
        return True

    def _read_failed(self, exc: Exception) -> None:
        self.read_errors += 1
        self.last_read_error = f"{type(exc).__name__}: {exc}"
        if self.read_errors & (self.read_errors - 1) == 0:  # 1, 2, 4...: no log storm
            logger.warning("runwatch: following %s failed (%d time(s)): %s", self.path, self.read_errors, exc)

    def _take(self, tail: StoreTail, read: TailRead, mark: int) -> tuple[list[Any], bool]:
        """The events of a read that are not this process's own; moves the cursors past what was decided."""
        ledger = self.ledger
        events: list[Any] = []
        held = False
        self.undecodable_rows += read.undecodable
        self.own_rows_skipped += read.skipped
        for stream in tail.streams:
            end = read.ends[stream]
            for row in read.rows[stream]:
                owner = ledger.owner(stream, row.position)
                if owner == PENDING:  # its transaction is not settled: decide at the next read
                    end, held = row.position, True
                    break
                if owner == OWN:
                    self.own_rows_skipped += 1
                    continue
                events.append(row.event)
            tail.advance(stream, end)
        for progress in read.progress:
            owner = ledger.heartbeat_owner(progress.run_id, progress.last_heartbeat)
            if owner == PENDING:
                held = True
                continue
            tail.took_heartbeat(progress.run_id, progress.last_heartbeat)
            if owner != OWN:
                events.append(progress.heartbeat())
        ledger.forget(tail.positions, mark)
        if events:
            # Streams are read one after another: put the events back in time order for live views.
            events.sort(key=_timestamp)
            self.tailed_events += len(events)
            self.foreign_runs.update(event.run_id for event in events)
        return events, held

    async def _sleep(self, seconds: float, stopping: anyio.Event) -> None:
        if stopping.is_set():
            return
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    def statistics(self) -> dict[str, Any]:
        return {
            "tailed_events": self.tailed_events,
            "own_rows_skipped": self.own_rows_skipped,
            "undecodable_rows": self.undecodable_rows,
            "polls": self.polls,
            "reads": self.reads,
            "read_errors": self.read_errors,
            "last_read_error": self.last_read_error,
            "foreign_runs": len(self.foreign_runs),
        }


def _timestamp(event: Any) -> float:
    timestamp: float = event.timestamp
    return timestamp
