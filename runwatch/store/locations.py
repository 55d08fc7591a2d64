"""Store locations as text: a SQLite file path or a PostgreSQL URL, told apart and shown without secrets.

Pure string functions, below every backend (:mod:`runwatch.store.backends`
opens what they name).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Final

__all__ = ["POSTGRES_SCHEMES", "is_postgres_url", "redact_dsn", "store_location"]

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
