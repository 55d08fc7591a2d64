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
import urllib.parse
from typing import Final

from .base import Store

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "open_store", "redact_dsn", "store_location"]

#: The URL schemes of a PostgreSQL store.
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL store (``postgresql://…`` or ``postgres://…``)."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def store_location(location: str | os.PathLike[str]) -> str:
    """``location`` as a string; a URL that went through ``pathlib.Path`` (``postgresql:/h/db``) is repaired.

    ``Path("postgresql://h/db")`` collapses the double slash; command-line
    options typed as paths hand such values over.
    """
    text = os.fspath(location)
    for scheme in POSTGRES_SCHEMES:
        collapsed = scheme[:-1]  # "postgresql:/"
        if text.startswith(collapsed) and not text.startswith(scheme):
            return scheme + text[len(collapsed) :]
    return text


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


def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (if any) replaced by ``***``, for messages and logs."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = urllib.parse.quote(parts.username or "", safe="")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
