"""The live tail of a SQLite store: what other connections commit, read forward from cursors.

Several processes may write one SQLite store (training scripts beside
``runwatch serve``). :class:`SQLiteTail` (the SQLite
:class:`~runwatch.store.base.StoreTail`) follows their commits for a process
that wants them live:

- **Noticing a commit** costs one ``PRAGMA data_version`` on the tail's own
  read connection: SQLite changes the value whenever another connection has
  committed, and not for commits of the same connection. In WAL mode it reads
  the shared-memory WAL index (no disk read, no lock that a writer waits on).
  The connection never writes and never holds a read transaction between
  reads, so it never blocks a writer or a checkpoint.
- **Reading forward**: one read transaction per read, from a cursor per
  stream: ``metric_rows``, the logging calls, by their store-wide number
  (given at commit under the write lock, so a call below ``next_metric_row``
  is always committed; rebuilt from the metric chunks holding them, see
  :mod:`runwatch.store.calls`), ``events`` and ``state_history`` by id. Progress of a run (its
  heartbeat and counters) is read from the ``runs`` rows of active runs.
  Reads are windowed (``max_rows`` per table); a full window asks for another
  read at once. While the window of calls is full, events and state patches
  stamped after its last call wait for a later read, so a run's ``completed``
  never goes live ahead of the calls logged before it.
- **Never twice**: cursors only move forward; a process that writes the store
  and tails it too skips its own rows with a
  :class:`~runwatch.store.ledger.CommitLedger` its writer fills
  (:mod:`runwatch.store.writer`). The ranges the ledger already knows as its
  own are not even read (``read(skip=...)``): a server that only stores
  what it ingests reads nothing back.

Limits: an id of ``events`` or ``state_history`` is reused by SQLite only
when the rows with the highest ids were deleted (``runwatch cleanup`` of the
newest runs); the tail then moves its cursor back to the new end, and rows
written and deleted between two reads are missed. Metric row numbers are
never reused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..exceptions import StoreUnavailable
from . import connections
from .base import RunProgress, StoredRow, TailRead
from .calls import read_calls
from .replay import decode_event_row, decode_state_row
from .tail_cursor import LIVE_STATUSES, CursorTail, metric_rows_of, without

__all__ = ["SQLiteTail"]


class SQLiteTail(CursorTail):
    """Follows the commits of other connections to one SQLite store (see the module docs).

    Args:
        path: the store.
        max_rows: the most rows of each table one read returns.
    """

    def __init__(self, path: str, *, max_rows: int = 20_000) -> None:
        super().__init__(max_rows=max_rows)
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._read_version: int | None = None  # data_version when the last read began

    @property
    def opened(self) -> bool:
        return self._connection is not None

    def open(self) -> None:
        if not Path(self.path).exists():
            raise StoreUnavailable(f"no store at {self.path!r} yet")
        with connections.hold():
            try:
                connection = connections.open_follower(self.path)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open {self.path!r}: {exc}") from exc
            try:
                connection.execute("BEGIN")
                try:
                    positions = {
                        "metric_rows": _next_metric_row(connection),
                        "events": _max_id(connection, "events") + 1,
                        "state_history": _max_id(connection, "state_history") + 1,
                    }
                    heartbeats = {row.run_id: row.last_heartbeat for row in _live_progress(connection)}
                finally:
                    connection.execute("COMMIT")
            except sqlite3.Error as exc:
                connection.close()
                raise StoreUnavailable(f"cannot read {self.path!r} yet: {exc}") from exc
            except BaseException:
                connection.close()
                raise
        self._connection = connection
        self.positions = positions
        self._heartbeats = heartbeats
        self._read_version = None

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with connections.hold():
                connection.close()

    def changed(self) -> bool:
        # data_version reads the WAL index in shared memory: no disk read, no lock a writer waits on.
        connection = self._connection
        if connection is None or self._read_version is None:
            return True
        with connections.hold_now() as held:
            if not held:  # a fork is under way: say yes, the read (on a worker thread) waits for it
                return True
            try:
                version = int(connection.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                return True  # busy for a moment: read to be sure
        return version != self._read_version

    def read(self, skip: Sequence[tuple[str, int, int]] = ()) -> TailRead:
        connection = self._require()
        with connections.hold():
            try:
                return self._read(connection, skip)
            except sqlite3.Error as exc:
                self._read_version = None
                raise StoreUnavailable(f"reading {self.path!r} failed: {exc}") from exc

    def _read(self, connection: sqlite3.Connection, skip: Sequence[tuple[str, int, int]]) -> TailRead:
        # Taken before the snapshot: a commit after it changes the version, and the next look reads again.
        self._read_version = int(connection.execute("PRAGMA data_version").fetchone()[0])
        rows: dict[str, list[StoredRow]] = {}
        ends: dict[str, int] = {}
        undecodable = 0
        more = False
        skipped = self._skipped(skip)
        connection.execute("BEGIN")
        try:
            found, end, full, bad = self._metric_rows(connection, skipped["metric_rows"])
            rows["metric_rows"], ends["metric_rows"] = found, end
            more, undecodable, calls_full = more or full, undecodable + bad, full
            for table in ("events", "state_history"):
                found, end, full, bad = self._id_rows(connection, table, skipped[table])
                rows[table], ends[table] = found, end
                more, undecodable = more or full, undecodable + bad
            live = _live_progress(connection)
        finally:
            connection.execute("COMMIT")
        return self._tail_read(rows, ends, live, more, undecodable, skipped, calls_full=calls_full)

    # -- per table ---------------------------------------------------------------------------

    def _metric_rows(
        self, connection: sqlite3.Connection, skip: list[tuple[int, int]]
    ) -> tuple[list[StoredRow], int, bool, int]:
        start = self.positions["metric_rows"]
        end_of_store = _next_metric_row(connection)
        if end_of_store <= start:
            return [], start, False, 0
        end = min(end_of_store, start + self.max_rows)
        found: list[StoredRow] = []
        bad = 0
        for low, high in without(start, end, skip):
            # The chunks ending at or after ``low`` (an index on seq_last): the open segments, mostly.
            rows, undecodable = metric_rows_of(read_calls(connection, low=low, high=high))
            found += rows
            bad += undecodable
        return found, end, end < end_of_store, bad

    def _id_rows(
        self, connection: sqlite3.Connection, table: str, skip: list[tuple[int, int]]
    ) -> tuple[list[StoredRow], int, bool, int]:
        start = self.positions[table]
        last = _max_id(connection, table)
        if last + 1 < start:  # the newest rows were deleted: their ids will be given again
            return [], last + 1, False, 0
        if last < start:
            return [], start, False, 0
        columns = (
            "t.id, r.run_id, t.ts, t.kind, t.type, t.level, t.data"
            if table == "events"
            else "t.id, r.run_id, t.ts, t.patch"
        )
        # A row of a run removed since (runwatch cleanup) has no run to join: it is gone too.
        ranges = [(first, last) for first, last in skip if last >= start]
        skipping = "".join(" AND t.id NOT BETWEEN ? AND ?" for _ in ranges)
        query = (
            f"SELECT {columns} FROM {table} t JOIN runs r ON r.id = t.run WHERE t.id >= ?{skipping}"
            " ORDER BY t.id LIMIT ?"
        )
        found: list[StoredRow] = []
        bad = 0
        count = 0
        end = start
        for row in connection.execute(query, (start, *[bound for pair in ranges for bound in pair], self.max_rows)):
            count += 1
            end = row[0] + 1
            try:
                if table == "events":
                    event: Any = decode_event_row(*row[1:])
                else:
                    event = decode_state_row(*row[1:])
            except (ValueError, TypeError, KeyError):
                bad += 1
                continue
            found.append(StoredRow(table, row[0], event))
        full = count == self.max_rows
        return found, end if full else max(end, last + 1), full, bad

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreUnavailable("the store tail is not open")
        return self._connection


def _next_metric_row(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = 'next_metric_row'").fetchone()
    return 0 if row is None else int(row[0])


def _max_id(connection: sqlite3.Connection, table: str) -> int:
    return int(connection.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0])


def _live_progress(connection: sqlite3.Connection) -> list[RunProgress]:
    placeholders = ", ".join("?" for _ in LIVE_STATUSES)
    return [
        RunProgress(*row)
        for row in connection.execute(
            "SELECT run_id, last_heartbeat, total_steps, total_episodes FROM runs"
            f" WHERE status IN ({placeholders}) AND last_heartbeat IS NOT NULL",
            LIVE_STATUSES,
        )
    ]
