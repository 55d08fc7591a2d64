"""A PostgreSQL connection shaped like the ``sqlite3`` connection the shared chunk reads take.

The metric reads of :mod:`runwatch.store.chunk_store`, :mod:`runwatch.store.chart`,
:mod:`runwatch.store.calls` and :mod:`runwatch.store.queries` (metrics, compare)
are written once, in SQL both databases speak, against a ``sqlite3``
connection: ``execute(sql, params)`` with ``?`` placeholders, then
``fetchone()``/``fetchall()``, and ``BEGIN``/``COMMIT`` around a snapshot
(:func:`runwatch.store.queries.common.read_snapshot`).
:class:`BlockingConnection` gives them that shape over one pooled asyncpg
connection held for the read (:meth:`Portal.hold`): placeholders become
``$1``, ``$2`` …, ``BEGIN`` a read-only ``REPEATABLE READ`` transaction
(one snapshot, as SQLite's WAL read transaction), and rows come back as
tuples. It is for those reads only: statements with SQLite's own functions
(``json_each``) are not translated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final

import asyncpg

from .connection import Portal

__all__ = ["BlockingConnection", "blocking_connection", "numbered_placeholders"]

_PLACEHOLDER: Final = re.compile(r"\?")


def numbered_placeholders(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1``, ``$2`` … (the shared SQL has no ``?`` in a literal)."""
    counter = iter(range(1, 1 << 16))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class _Rows:
    """The rows of one statement, as a ``sqlite3`` cursor hands them."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class BlockingConnection:
    """One held connection, read through ``execute`` as a ``sqlite3`` connection is (see the module docs)."""

    def __init__(self, portal: Portal, connection: asyncpg.Connection) -> None:
        self._portal = portal
        self._connection = connection
        self.in_transaction = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Rows:
        statement = sql.strip().upper()
        if statement == "BEGIN":
            self._portal.run_free(self._connection.execute, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.in_transaction = True
            return _Rows([])
        if statement in ("COMMIT", "ROLLBACK"):
            self.in_transaction = False
            self._portal.run_free(self._connection.execute, statement)
            return _Rows([])
        records = self._portal.run_free(self._connection.fetch, numbered_placeholders(sql), *params)
        return _Rows([tuple(record) for record in records])


@contextmanager
def blocking_connection(portal: Portal) -> Iterator[BlockingConnection]:
    """A :class:`BlockingConnection` on a pooled connection, for one read; rolled back and released after."""
    with portal.hold() as connection:
        blocking = BlockingConnection(portal, connection)
        try:
            yield blocking
        finally:
            if blocking.in_transaction:
                with suppress(Exception):  # a broken connection: the pool discards it anyway
                    blocking.execute("ROLLBACK")
