"""The PostgreSQL store: runwatch's store on a shared PostgreSQL database (docs/scale.md).

:class:`PostgresStore` implements :class:`~runwatch.store.base.Store` on
asyncpg; open one with :func:`runwatch.store.backends.open_store` given a
``postgresql://`` URL. Needs the ``scale`` extras (``pip install
runwatch[scale]``).
"""

from __future__ import annotations

from .store import PostgresStore as PostgresStore

__all__ = ["PostgresStore"]
