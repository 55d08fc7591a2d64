"""Which store backend a location names: a SQLite file path, or a PostgreSQL URL.

Everything that is handed a store location (``db_path``, ``--db``,
``--store``) opens it with :func:`open_store`: ``postgresql://…`` (or
``postgres://…``) is a :class:`~runwatch.store.postgres.PostgresStore`
(which needs the ``scale`` extras: ``pip install runwatch[scale]``), anything
else a :class:`~runwatch.store.sqlite.SQLiteStore` file. Nothing is opened
here.
"""

from __future__ import annotations

import os

from .base import Store
from .locations import POSTGRES_SCHEMES, is_postgres_url, redact_dsn, store_location

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "open_store", "redact_dsn", "store_location"]


def open_store(location: str | os.PathLike[str]) -> Store:
    """The store at ``location`` (a SQLite file path or a PostgreSQL URL); nothing is opened yet.

    Raises:
        ImportError: a PostgreSQL URL without the ``scale`` extras installed (asyncpg).
    """
    text = store_location(location)
    if is_postgres_url(text):
        from .postgres import PostgresStore

        return PostgresStore(text)
    from .sqlite import SQLiteStore

    return SQLiteStore(text)
