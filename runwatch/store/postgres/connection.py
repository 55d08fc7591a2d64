"""Connections to a PostgreSQL store: the blocking side's pool, and what PostgreSQL's errors mean.

The :class:`~runwatch.store.base.Store` methods block (they run on worker
threads), while asyncpg is an asyncio client. :class:`Portal` bridges the
two: one daemon thread per process and DSN runs an event loop holding an
asyncpg pool, and :meth:`Portal.run` hands it a coroutine function and waits
for its result. Every :class:`~runwatch.store.postgres.store.PostgresStore`
of the same DSN in a process shares that portal (stores are created freely,
per request), so a process holds at most ``max_connections`` connections per
DSN for reads and maintenance, plus one per pipeline writer.

The pool is created on first use and again after a failure (the server was
down); a connection broken by a server restart is discarded by the pool, so
after a restart the next call reconnects. A forked child builds its own
portal: it never touches the parent's thread or sockets.

Errors: a server that cannot be reached, refuses connections for now, was
restarted mid-call, or ends a transaction for a conflict is
:class:`~runwatch.exceptions.StoreUnavailable` (retrying may succeed); a
missing database or schema, or another refusal, is
:class:`~runwatch.exceptions.StoreError`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Final, TypeVar

import asyncpg

from ...exceptions import StoreError, StoreUnavailable
from ..locations import redact_dsn

__all__ = [
    "CALL_TIMEOUT_SECONDS",
    "Portal",
    "close_portal",
    "connect",
    "portal_for",
    "redact_dsn",
    "store_trouble",
    "translate_error",
]

_T = TypeVar("_T")

#: The longest one blocking call waits for its result (connecting included).
CALL_TIMEOUT_SECONDS: Final = 60.0
#: How long connecting may take before the server counts as unreachable.
CONNECT_TIMEOUT_SECONDS: Final = 5.0
#: Connections a portal's pool keeps open at most.
POOL_MAX_CONNECTIONS: Final = 4


# Faults of the server or the network, worth retrying: not a problem of the request.
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cancelled by the server
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.InsufficientResourcesError,  # disk full, out of memory
    asyncpg.ReadOnlySQLTransactionError,  # a standby after a failover
)


def store_trouble(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of the store itself (worth retrying), not of what was asked."""
    return isinstance(exc, _TRANSIENT)


def translate_error(exc: BaseException, location: str) -> BaseException:
    """The runwatch exception that ``exc`` (raised talking to the store at ``location``) stands for.

    Exceptions that are not PostgreSQL's or the network's (``UnknownRunError``,
    ``TypeError`` from an argument check...) come back unchanged.
    """
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StoreError(f"no PostgreSQL database for {location!r}: create it first (createdb)")
    if isinstance(exc, asyncpg.UndefinedTableError):
        return StoreError(f"no runwatch store in {location!r}; call init_database() to create it")
    if store_trouble(exc):
        return StoreUnavailable(f"the store {location!r} cannot be reached now: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(f"the store {location!r} refused the request: {type(exc).__name__}: {exc}")
    return exc


async def connect(dsn: str) -> asyncpg.Connection:
    """One connection to the store (for a pipeline writer, or one maintenance task).

    Raises:
        StoreUnavailable, StoreError: see :func:`translate_error`.
    """
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_SECONDS)
    except Exception as exc:
        raise translate_error(exc, redact_dsn(dsn)) from exc


class Portal:
    """An event loop on a daemon thread with an asyncpg pool, for blocking callers (see the module docs).

    Args:
        dsn: the store's URL.
        max_connections: the pool's bound.
    """

    def __init__(self, dsn: str, *, max_connections: int = POOL_MAX_CONNECTIONS) -> None:
        self.dsn = dsn
        self.location = redact_dsn(dsn)
        self.max_connections = max_connections
        self._loop = asyncio.new_event_loop()
        self._pool: asyncpg.Pool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="runwatch postgres", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """``await fn(connection, *args, **kwargs)`` on a pooled connection; its result, or its error translated.

        Never call it on the portal's own thread (nothing there does).

        Raises:
            StoreUnavailable: the server cannot be reached, or the call took longer than
                :data:`CALL_TIMEOUT_SECONDS`.
            StoreError: see :func:`translate_error`.
        """
        if self._closed:
            raise StoreUnavailable(f"the connections to {self.location!r} are closed")
        future = asyncio.run_coroutine_threadsafe(self._call(fn, args, kwargs), self._loop)
        try:
            return future.result(CALL_TIMEOUT_SECONDS)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable(
                f"the store {self.location!r} did not answer within {CALL_TIMEOUT_SECONDS:.0f} s"
            ) from None
        except Exception as exc:
            translated = translate_error(exc, self.location)
            if translated is exc:
                raise
            raise translated from exc

    def run_free(
        self, fn: Callable[..., Coroutine[Any, Any, _T]], *args: Any, timeout: float = CALL_TIMEOUT_SECONDS
    ) -> _T:
        """``await fn(*args)`` on the portal's loop, without a pooled connection (for a caller that keeps its own,
        such as a live tail); its result, or its error translated as :meth:`run` does."""
        if self._closed:
            raise StoreUnavailable(f"the connections to {self.location!r} are closed")
        future: concurrent.futures.Future[_T] = asyncio.run_coroutine_threadsafe(fn(*args), self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable(f"the store {self.location!r} did not answer within {timeout:.0f} s") from None
        except Exception as exc:
            translated = translate_error(exc, self.location)
            if translated is exc:
                raise
            raise translated from exc

    @contextlib.contextmanager
    def hold(self) -> Iterator[asyncpg.Connection]:
        """A pooled connection for a blocking caller's several calls (through :meth:`run_free`), released after."""

        async def acquire() -> asyncpg.Connection:
            connection: asyncpg.Connection = await (await self._get_pool()).acquire()
            return connection

        connection = self.run_free(acquire)
        try:
            yield connection
        finally:

            async def release() -> None:
                if self._pool is not None:
                    await self._pool.release(connection)  # resets it: a transaction left open is rolled back

            with contextlib.suppress(Exception):
                self.run_free(release)

    async def _call(self, fn: Callable[..., Awaitable[_T]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _T:
        pool = await self._get_pool()
        async with pool.acquire() as connection:
            return await fn(connection, *args, **kwargs)

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                # Created here, on the portal's loop: a failure (server down) leaves none, so the next call retries.
                self._pool = await asyncpg.create_pool(
                    self.dsn, min_size=0, max_size=self.max_connections, timeout=CONNECT_TIMEOUT_SECONDS
                )
            return self._pool

    def close(self, timeout: float = 2.0, *, graceful: bool = False) -> None:
        """Close the pool and stop the thread (bounded by ``timeout``). Idempotent.

        ``graceful`` closes each connection with the server's goodbye and the
        loop after its thread (a process that goes on); otherwise the sockets
        are dropped (at exit: nothing in flight is worth waiting for).
        """
        if self._closed:
            return
        self._closed = True

        async def close_pool() -> None:
            if self._pool is None:
                return
            if graceful:
                await asyncio.wait_for(self._pool.close(), timeout)
            else:
                self._pool.terminate()

        try:
            asyncio.run_coroutine_threadsafe(close_pool(), self._loop).result(timeout)
        except Exception:  # closing is best effort: the server notices the dead sockets
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if graceful and not self._thread.is_alive():
            self._loop.close()


_portals: dict[tuple[int, str], Portal] = {}
_portals_lock = threading.Lock()


def portal_for(dsn: str) -> Portal:
    """This process's portal for ``dsn`` (created on first use; a forked child gets its own)."""
    key = (os.getpid(), dsn)
    with _portals_lock:
        portal = _portals.get(key)
        if portal is None:
            portal = _portals[key] = Portal(dsn)
        return portal


def close_portal(dsn: str) -> None:
    """Close this process's portal for ``dsn``, if any (its pooled connections go; a later call opens anew)."""
    with _portals_lock:
        portal = _portals.pop((os.getpid(), dsn), None)
    if portal is not None:
        portal.close(graceful=True)


@atexit.register
def _close_portals() -> None:
    with _portals_lock:
        mine = [portal for (pid, _), portal in _portals.items() if pid == os.getpid()]
        _portals.clear()
    for portal in mine:
        portal.close()
