"""Every connection runwatch opens to a SQLite file: readers, read-write connections, the writer.

One place decides how a connection is opened, so every caller gets the same
rules:

- Each one comes from :mod:`runwatch.store.forksafe`, the single gate that
  keeps connections from crossing a fork: per-call connections
  (:func:`open_reader`, :func:`open_read_write`, :func:`connect`) hold it while
  open, the writer (:func:`open_writer`, through aiosqlite) per transaction
  with :func:`hold_async`.
- A store is opened as an existing file (``mode=rw``): a wrong path fails
  instead of creating an empty database that would hide it. Only
  :func:`runwatch.store.schema.prepare_database` creates a store.
- Readers are ``query_only``; a read-write connection is in autocommit mode,
  so its transactions are the explicit ``BEGIN IMMEDIATE`` … ``COMMIT`` of the
  code that writes.
- Waiting for another connection's lock: a busy timeout of
  :data:`BUSY_TIMEOUT_SECONDS` (readers, maintenance), or slices of
  :data:`WRITER_BUSY_SLICE_MILLISECONDS` for the writer, which waits for the
  write lock itself (so a shutdown deadline or a fork never waits behind
  SQLite's own busy handler). :func:`is_busy` tells a busy store from other
  failures.
- Settings of a store: WAL and ``synchronous = NORMAL`` (:func:`apply_pragmas`),
  which keeps every committed transaction across a process crash.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from . import forksafe

if TYPE_CHECKING:
    import aiosqlite

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "READ_MMAP_BYTES",
    "WRITER_BUSY_SLICE_MILLISECONDS",
    "apply_pragmas",
    "connect",
    "hold",
    "hold_async",
    "hold_now",
    "open_follower",
    "is_busy",
    "is_missing_table",
    "open_read_write",
    "open_reader",
    "open_writer",
    "reading",
    "store_uri",
    "writing",
]

#: How long a reader or a maintenance connection waits for a lock held by another connection.
BUSY_TIMEOUT_SECONDS = 5.0
#: The writer's busy timeout: one slice of waiting for another writer's lock.
WRITER_BUSY_SLICE_MILLISECONDS: Final = 100
#: How much of a store a reader maps into memory (address space, not memory: pages load when read).
READ_MMAP_BYTES: Final = 1 << 30

hold_async = forksafe.hold_async
hold = forksafe.hold
hold_now = forksafe.hold_now


def connect(database: str | os.PathLike[str], **options: Any) -> sqlite3.Connection:
    """A per-call connection to any SQLite file (a backup's copy, say), as :func:`sqlite3.connect` takes it.

    Close it before returning to your caller: a fork waits for it.
    """
    return forksafe.connect(database, **options)


def store_uri(path: str | os.PathLike[str], mode: str = "rw") -> str:
    """The ``file:`` URI of a store, opened with ``mode`` (``ro``, ``rw``; ``rw`` never creates it)."""
    return f"{Path(path).absolute().as_uri()}?mode={mode}"


def open_reader(path: str | os.PathLike[str], *, timeout: float | None = None) -> sqlite3.Connection:
    """A read-only (``query_only``) connection to an existing store.

    ``timeout`` is the busy timeout in seconds (``None``: :data:`BUSY_TIMEOUT_SECONDS`).

    Raises:
        sqlite3.OperationalError: the file does not exist or cannot be opened.
    """
    connection = forksafe.connect(store_uri(path), uri=True, timeout=_busy_timeout(timeout))
    try:
        connection.execute("PRAGMA query_only = ON")
        # Metric chunks are blobs over many pages: mapped, SQLite hands them over without a read()
        # and a copy per page (half the time of a 5M-point series read, see docs/store.md).
        connection.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")
    except BaseException:
        connection.close()
        raise
    return connection


def open_follower(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A long-lived read-only connection that never waits on a lock, for following a store's commits.

    Autocommit (its reads are explicit ``BEGIN`` … ``COMMIT``), busy timeout 0
    (a busy moment is read at the next look). Long-lived: use it under
    :func:`hold_async` (or from a worker thread started under it), like the writer.

    Raises:
        sqlite3.OperationalError: the file does not exist or cannot be opened.
    """
    connection = sqlite3.connect(
        store_uri(path, "ro"), uri=True, factory=forksafe.ForkSafeConnection, isolation_level=None
    )
    try:
        connection.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        connection.close()
        raise
    return connection


def open_read_write(path: str | os.PathLike[str], *, timeout: float | None = None) -> sqlite3.Connection:
    """A connection that may write to an existing store, in autocommit mode (write in explicit transactions).

    ``timeout`` is the busy timeout in seconds (``None``: :data:`BUSY_TIMEOUT_SECONDS`).

    Raises:
        sqlite3.OperationalError: the file does not exist or cannot be opened.
    """
    return forksafe.connect(store_uri(path), uri=True, timeout=_busy_timeout(timeout), isolation_level=None)


def _busy_timeout(timeout: float | None) -> float:
    # Read at each call, so the module's default can be changed at run time.
    return BUSY_TIMEOUT_SECONDS if timeout is None else timeout


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], *, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
    """:func:`open_reader`, closed on exit."""
    connection = open_reader(path, timeout=timeout)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def writing(path: str | os.PathLike[str], *, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
    """:func:`open_read_write`, closed on exit."""
    connection = open_read_write(path, timeout=timeout)
    try:
        yield connection
    finally:
        connection.close()


def apply_pragmas(connection: sqlite3.Connection) -> None:
    """Settings for every connection: WAL, a busy timeout, ``synchronous=NORMAL``.

    ``synchronous=NORMAL`` in WAL mode keeps every committed transaction
    across a process crash; only an OS crash or power loss can lose the last
    transactions (https://www.sqlite.org/wal.html).
    """
    connection.execute("PRAGMA busy_timeout = 5000")
    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal":
        connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


async def open_writer(path: str) -> aiosqlite.Connection:
    """The writer's long-lived connection to a prepared store: aiosqlite on its own thread, autocommit.

    Its busy timeout is one slice (:data:`WRITER_BUSY_SLICE_MILLISECONDS`); the
    writer waits for the write lock in slices itself. Close it with
    ``async with hold_async(): await connection.close()``.
    """
    import aiosqlite
    import anyio

    async with forksafe.hold_async():
        connection = await aiosqlite.connect(path, isolation_level=None, factory=forksafe.ForkSafeConnection)
        try:
            await connection.execute(f"PRAGMA busy_timeout = {WRITER_BUSY_SLICE_MILLISECONDS}")
            # Per connection: WAL with NORMAL keeps every commit across a process crash (docs/guarantees.md).
            await connection.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.close()
            raise
    return connection


@contextlib.asynccontextmanager
async def held_writer(connection: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One use of the writer's connection: no fork copies it meanwhile."""
    async with forksafe.hold_async():
        yield connection


def is_busy(exc: BaseException) -> bool:
    """Whether SQLite answered SQLITE_BUSY (another connection holds the lock): worth waiting again."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY
    return "locked" in str(exc)


def is_missing_table(exc: BaseException) -> bool:
    """Whether a query failed because a table does not exist (a store nothing was written to yet)."""
    return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)
