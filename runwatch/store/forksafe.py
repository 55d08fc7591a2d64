"""SQLite connections never cross a fork.

SQLite keeps, in process memory, which of the process's connections holds
which lock on each database file (POSIX locks belong to a process, so SQLite
counts its own connections' shares itself). A child forked while a parent's
connection is mid-transaction inherits that bookkeeping with the write lock
marked as taken by a sibling connection that will never release it: a new
connection in the child to the same file fails with "database is locked".
A child that merely inherits idle connections is worse off in silence: its
new connections count as sharing the inherited locks without holding any
lock of their own, so the parent's last close may checkpoint and delete the
WAL under them (their commits then go to a deleted file).

So, around every ``os.fork()`` of a process that opened a runwatch
connection:

- before the fork, the forking thread waits (at most
  :data:`FORK_WAIT_SECONDS`) until no runwatch connection is in use — no
  per-call connection open, no transaction or statement of a long-lived one
  under way — and new uses wait until the fork is done;
- in the child, every runwatch connection is closed at once (each is idle,
  so closing it touches nothing the parent shares), and the child's SQLite
  starts with no state for those files: a new monitor there takes real locks
  of its own;
- in the parent, work goes on.

Per-call connections (:func:`connect`) hold the gate from open to close;
the SQLite sink's long-lived connection (:class:`ForkSafeConnection` opened
through aiosqlite) holds it per transaction with :func:`hold_async`. A fork
that cannot wait for them (a connection kept in use past the bound, or the
fork called from inside a use) leaves the connections to the child as they
are and logs a warning there. Connections opened outside runwatch are the
caller's to close before forking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio

__all__ = [
    "FORK_WAIT_SECONDS",
    "ForkSafeConnection",
    "PerCallConnection",
    "connect",
    "hold",
    "hold_async",
    "hold_now",
]

logger = logging.getLogger("runwatch.store")

#: The longest a fork waits for runwatch's SQLite connections to be idle.
FORK_WAIT_SECONDS = 10.0

#: How often a task on the event loop looks again while a fork is under way (a fork takes milliseconds).
_FORK_POLL_SECONDS = 0.001


class _ForkGate:
    """Counts uses of runwatch connections per thread; a fork waits until there are none."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._uses: dict[int, int] = {}  # thread id → uses it has open
        self._forking = False
        self.idle_at_fork = True

    def enter(self) -> int:
        """Start a use (waiting while a fork is under way); returns the thread id to :meth:`exit` with."""
        ident = threading.get_ident()
        with self._condition:
            # A thread that already holds a use nests: making it wait would deadlock the fork.
            while self._forking and not self._uses.get(ident):
                self._condition.wait()
            self._uses[ident] = self._uses.get(ident, 0) + 1
        return ident

    def try_enter(self) -> int | None:
        """Like :meth:`enter`, but ``None`` at once while a fork is under way."""
        ident = threading.get_ident()
        with self._condition:
            if self._forking and not self._uses.get(ident):
                return None
            self._uses[ident] = self._uses.get(ident, 0) + 1
        return ident

    def exit(self, ident: int) -> None:
        """End a use started by ``ident``'s thread."""
        with self._condition:
            left = self._uses.get(ident, 0) - 1
            if left > 0:
                self._uses[ident] = left
            else:
                self._uses.pop(ident, None)
                self._condition.notify_all()

    def before_fork(self) -> None:
        me = threading.get_ident()
        deadline = time.monotonic() + FORK_WAIT_SECONDS
        with self._condition:
            self._forking = True
            while any(ident != me for ident in self._uses):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            self.idle_at_fork = not self._uses

    def after_fork_in_parent(self) -> None:
        with self._condition:
            self._forking = False
            self._condition.notify_all()

    def after_fork_in_child(self) -> None:
        # The parent's threads are gone, and one of them may have held the lock at the fork.
        self._condition = threading.Condition()
        self._uses = {}
        self._forking = False


_gate = _ForkGate()
_connections: weakref.WeakSet[ForkSafeConnection] = weakref.WeakSet()
_hooks_installed = False
_hooks_lock = threading.Lock()


class ForkSafeConnection(sqlite3.Connection):
    """A connection that a forked child closes at once (see the module docs).

    Usable from any thread (the child closes it from the forking thread);
    SQLite itself serialises calls on one connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["check_same_thread"] = False
        super().__init__(*args, **kwargs)
        _install_fork_hooks()
        _connections.add(self)


class PerCallConnection(ForkSafeConnection):
    """A connection for one call: no fork happens while it is open (the fork waits, bounded)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ident = _gate.enter()
        try:
            super().__init__(*args, **kwargs)
        except BaseException:
            _gate.exit(ident)
            raise
        # Released on close, or when collected unclosed: a fork never waits for a lost connection.
        self._release = weakref.finalize(self, _gate.exit, ident)

    def close(self) -> None:
        """Close the connection and let a waiting fork go on."""
        try:
            super().close()
        finally:
            self._release()


def connect(database: str | os.PathLike[str], **kwargs: Any) -> sqlite3.Connection:
    """``sqlite3.connect(database, **kwargs)`` for one call: closed before returning to the caller's caller.

    Raises:
        sqlite3.Error: as :func:`sqlite3.connect`.
    """
    return sqlite3.connect(database, factory=PerCallConnection, **kwargs)


@contextlib.asynccontextmanager
async def hold_async() -> AsyncIterator[None]:
    """A use of a long-lived connection from the event loop (never blocks the loop)."""
    ident = _gate.try_enter()
    while ident is None:
        await anyio.sleep(_FORK_POLL_SECONDS)
        ident = _gate.try_enter()
    try:
        yield
    finally:
        _gate.exit(ident)


@contextlib.contextmanager
def hold() -> Iterator[None]:
    """A use of a long-lived connection from a worker thread (waits while a fork is under way)."""
    ident = _gate.enter()
    try:
        yield
    finally:
        _gate.exit(ident)


@contextlib.contextmanager
def hold_now() -> Iterator[bool]:
    """A use of a long-lived connection that never waits: ``False`` (nothing held) while a fork is under way."""
    ident = _gate.try_enter()
    try:
        yield ident is not None
    finally:
        if ident is not None:
            _gate.exit(ident)


def _install_fork_hooks() -> None:
    """Once per process, at its first runwatch connection (importing runwatch changes nothing)."""
    global _hooks_installed
    if _hooks_installed or not hasattr(os, "register_at_fork"):
        return
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        os.register_at_fork(
            before=_gate.before_fork, after_in_parent=_gate.after_fork_in_parent, after_in_child=_close_in_child
        )


def _close_in_child() -> None:
    """In a forked child: close every runwatch connection inherited from the parent."""
    idle = _gate.idle_at_fork
    _gate.after_fork_in_child()
    inherited = list(_connections)
    _connections.clear()
    if not idle:
        if inherited:
            logger.warning(
                "runwatch: this process was forked while runwatch's SQLite connections were in use; they stay"
                " open here unused, and a new monitor in this process may find its store locked"
            )
        return
    for connection in inherited:
        release = getattr(connection, "_release", None)
        if release is not None:
            release.detach()  # the gate was reset: nothing to release here
        with contextlib.suppress(Exception):
            sqlite3.Connection.close(connection)
