"""The live tail of a PostgreSQL store: what other connections commit, read forward from cursors.

:class:`PostgresTail` is the PostgreSQL :class:`~runwatch.store.base.StoreTail`,
with the SQLite tail's contract (:mod:`runwatch.store.tail`):

- **Noticing a commit**: every write transaction ends with a ``NOTIFY`` on
  :data:`~.writer.COMMITS_CHANNEL`; the tail's own connection listens, and
  :meth:`~PostgresTail.changed` reads a flag the notification set (no round
  trip on the caller's loop). A lost connection answers ``True``.
- **Up to where positions are settled**: stream positions come from
  sequences (:mod:`.schema`), taken by concurrent transactions that commit
  in any order, so a position below the sequence's end may still be in
  flight. A read first takes the *tail lock* exclusively for a moment:
  every transaction that took positions holds it shared until it ends, so
  once the tail has it, each position taken so far is committed or rolled
  back; the sequences' ends read then are the read's horizon, and rows are
  read below it only, on a snapshot taken after the lock was let go. New
  writers wait for that moment (a few milliseconds); the tail waits for the
  transactions in flight at most :data:`HORIZON_WAIT_SECONDS`, then reads
  nothing this time and tries again at the next poll.
- **Reading forward** per stream in windows of ``max_rows``, skipping the
  ranges the caller owns, exactly as the SQLite tail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

import asyncpg

from ...exceptions import StoreUnavailable
from ..base import RunProgress, StoredRow, TailRead
from ..calls import calls_of_rows
from ..chunk_reads import DECODE_COLUMNS
from ..tail_cursor import LIVE_STATUSES, TAIL_TABLES, CursorTail, metric_rows_of, without
from .connection import CONNECT_TIMEOUT_SECONDS, portal_for, redact_dsn
from .replay import decode_row
from .schema import POSITION_SEQUENCES, TAIL_LOCK
from .writer import COMMITS_CHANNEL

__all__ = ["HORIZON_WAIT_SECONDS", "PostgresTail"]

#: The longest a read waits for the write transactions in flight to end before it reads nothing this time.
HORIZON_WAIT_SECONDS: Final = 1.0


_COLUMNS: Final = {
    "events": "t.id, r.run_id, t.ts, t.kind, t.type, t.level, t.data",
    "state_history": "t.id, r.run_id, t.ts, t.patch",
}


class PostgresTail(CursorTail):
    """Follows the commits of other connections to one PostgreSQL store (see the module docs).

    Args:
        dsn: the store's URL.
        max_rows: the most rows of each stream one read returns.
    """

    def __init__(self, dsn: str, *, max_rows: int = 20_000) -> None:
        super().__init__(max_rows=max_rows)
        self.dsn = dsn
        self.location = redact_dsn(dsn)
        self._connection: asyncpg.Connection | None = None
        self._notified = True  # nothing read yet: read

    @property
    def opened(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        portal_for(self.dsn).run_free(self._open)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                portal_for(self.dsn).run_free(_close, connection, timeout=5.0)
            except Exception:  # the server may be gone: nothing to say goodbye to
                pass

    def changed(self) -> bool:
        connection = self._connection
        return self._notified or connection is None or connection.is_closed()

    def read(self, skip: Sequence[tuple[str, int, int]] = ()) -> TailRead:
        if self._connection is None:
            raise StoreUnavailable("the store tail is not open")
        try:
            read: TailRead = portal_for(self.dsn).run_free(self._read, skip)
        except StoreUnavailable:
            self._notified = True
            raise
        return read

    # -- on the portal's loop ----------------------------------------------------------------

    async def _open(self) -> None:
        try:
            connection = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        except Exception as exc:
            raise StoreUnavailable(f"cannot open {self.location!r}: {type(exc).__name__}: {exc}") from exc
        try:
            if await connection.fetchval("SELECT to_regclass('metric_row_positions')") is None:
                raise StoreUnavailable(f"no store in {self.location!r} yet")
            await connection.add_listener(COMMITS_CHANNEL, self._on_commit)
            horizon = await self._horizon(connection)
            if horizon is None:
                raise StoreUnavailable(f"{self.location!r} is busy: writes in flight for {HORIZON_WAIT_SECONDS} s")
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                heartbeats = {row.run_id: row.last_heartbeat for row in await _live_progress(connection)}
        except BaseException:
            await _close(connection)
            raise
        self._connection = connection
        self.positions = horizon
        self._heartbeats = heartbeats
        self._notified = True

    def _on_commit(self, *_: Any) -> None:
        self._notified = True

    async def _horizon(self, connection: asyncpg.Connection) -> dict[str, int] | None:
        """Each stream's first position not taken yet, all below it settled; ``None`` when writes stayed in flight."""
        try:
            async with connection.transaction():
                await connection.execute(f"SET LOCAL lock_timeout = {int(HORIZON_WAIT_SECONDS * 1000)}")
                await connection.execute("SELECT pg_advisory_xact_lock($1)", TAIL_LOCK)
                horizon = {}
                for stream, sequence in POSITION_SEQUENCES.items():
                    last, called = await connection.fetchrow(f"SELECT last_value, is_called FROM {sequence}")
                    horizon[stream] = int(last) + 1 if called else int(last)
        except asyncpg.LockNotAvailableError:
            return None
        return horizon

    async def _read(self, skip: Sequence[tuple[str, int, int]]) -> TailRead:
        connection = self._connection
        assert connection is not None
        self._notified = False  # before the horizon: a commit after it notifies again
        skipped = self._skipped(skip)
        horizon = await self._horizon(connection)
        if horizon is None:
            self._notified = True
            empty: dict[str, list[StoredRow]] = {table: [] for table in TAIL_TABLES}
            return TailRead(empty, dict(self.positions), [], False, 0)
        rows: dict[str, list[StoredRow]] = {}
        ends: dict[str, int] = {}
        more = False
        undecodable = 0
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            found, end, full, bad = await self._metric_rows(connection, horizon["metric_rows"], skipped["metric_rows"])
            rows["metric_rows"], ends["metric_rows"] = found, end
            more, undecodable, calls_full = more or full, undecodable + bad, full
            for table in ("events", "state_history"):
                found, end, full, bad = await self._id_rows(connection, table, horizon[table], skipped[table])
                rows[table], ends[table] = found, end
                more, undecodable = more or full, undecodable + bad
            live = await _live_progress(connection)
        return self._tail_read(rows, ends, live, more, undecodable, skipped, calls_full=calls_full)

    async def _metric_rows(
        self, connection: asyncpg.Connection, end_of_store: int, skip: list[tuple[int, int]]
    ) -> tuple[list[StoredRow], int, bool, int]:
        start = self.positions["metric_rows"]
        if end_of_store <= start:
            return [], start, False, 0
        end = min(end_of_store, start + self.max_rows)
        found: list[StoredRow] = []
        bad = 0
        for low, high in without(start, end, skip):
            # The chunks ending at or after ``low`` (an index on seq_last): the open segments, mostly.
            records = await connection.fetch(
                f"SELECT r.run_id, s.name, {DECODE_COLUMNS} FROM metric_chunks AS c"
                " JOIN metric_series AS s ON s.id = c.series JOIN runs AS r ON r.id = s.run"
                " WHERE c.seq_last >= $1 AND c.seq_first < $2 ORDER BY s.id, c.seq_first",
                low,
                high,
            )
            rows, undecodable = metric_rows_of(calls_of_rows([tuple(record) for record in records], low, high))
            found += rows
            bad += undecodable
        return found, end, end < end_of_store, bad

    async def _id_rows(
        self, connection: asyncpg.Connection, table: str, end_of_store: int, skip: list[tuple[int, int]]
    ) -> tuple[list[StoredRow], int, bool, int]:
        start = self.positions[table]
        if end_of_store <= start:
            return [], start, False, 0
        ranges = [(first, last) for first, last in skip if last >= start]
        params: list[Any] = [start, end_of_store]
        skipping = ""
        for first, last in ranges:
            params += [first, last]
            skipping += f" AND t.id NOT BETWEEN ${len(params) - 1} AND ${len(params)}"
        params.append(self.max_rows)
        # A row of a run removed since (runwatch cleanup) has no run to join: it is gone too.
        records = await connection.fetch(
            f"SELECT {_COLUMNS[table]} FROM {table} t JOIN runs r ON r.id = t.run"
            f" WHERE t.id >= $1 AND t.id < $2{skipping} ORDER BY t.id LIMIT ${len(params)}",
            *params,
        )
        found: list[StoredRow] = []
        bad = 0
        for record in records:
            try:
                event = decode_row(table, record[1], tuple(record)[2:])
            except (ValueError, TypeError, KeyError):
                bad += 1
                continue
            found.append(StoredRow(table, record[0], event))
        full = len(records) == self.max_rows
        return found, records[-1][0] + 1 if full else end_of_store, full, bad


async def _live_progress(connection: asyncpg.Connection) -> list[RunProgress]:
    rows = await connection.fetch(
        "SELECT run_id, last_heartbeat, total_steps, total_episodes FROM runs"
        " WHERE status = ANY($1::text[]) AND last_heartbeat IS NOT NULL",
        list(LIVE_STATUSES),
    )
    return [RunProgress(*row) for row in rows]


async def _close(connection: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(connection.close(), 2.0)
    except Exception:
        connection.terminate()
