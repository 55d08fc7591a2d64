"""The store conformance suite (tests/store/conformance) against the PostgreSQL store.

Every test of the shared suite runs here unchanged, its ``store`` fixture
giving a :class:`~runwatch.store.postgres.PostgresStore` on a new database
of a real PostgreSQL server instead of a SQLite file.
"""

from __future__ import annotations

import pytest

from runwatch.store.base import Store
from runwatch.store.postgres import PostgresStore
from tests.store.conformance.test_series import *  # noqa: F403 - the shared suite, collected again here
from tests.store.conformance.test_store import *  # noqa: F403

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(postgres_dsn: str) -> Store:
    """An empty PostgreSQL store (its database exists, its tables not yet)."""
    return PostgresStore(postgres_dsn)
