"""The scale tier runs only under ``make scale-test`` (``RUNWATCH_SCALE=1``).

It needs the ``scale`` extras (nats-py, asyncpg) and real servers (``nats-server``,
PostgreSQL), which ``make test`` neither installs nor waits for: without the
variable its test files are not collected at all.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

if os.environ.get("RUNWATCH_SCALE") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    from runwatch.testing.servers import NatsCluster, PostgresServer, open_nats, open_nats_cluster, open_postgres

    @pytest.fixture
    def nats_server() -> Iterator[NatsCluster]:
        """One JetStream-enabled nats-server of the test's own."""
        with open_nats() as server:
            yield server

    @pytest.fixture
    def nats_cluster() -> Iterator[NatsCluster]:
        """A 3-node JetStream cluster of the test's own (nodes may be killed)."""
        with open_nats_cluster(3) as cluster:
            yield cluster

    @pytest.fixture(scope="session")
    def shared_postgres() -> Iterator[PostgresServer]:
        """One PostgreSQL cluster for the whole tier's store tests (each takes a database of its own)."""
        with open_postgres(fsync=False) as server:
            yield server

    @pytest.fixture
    def postgres_dsn(shared_postgres: PostgresServer) -> Iterator[str]:
        """The URL of a new, empty database of the shared cluster (this process's pooled connections to it
        are closed after the test: the cluster allows a few dozen clients)."""
        from runwatch.store.postgres.connection import close_portal

        dsn = shared_postgres.create_database(f"t_{uuid.uuid4().hex[:16]}")
        yield dsn
        close_portal(dsn)

    @pytest.fixture
    def postgres() -> Iterator[PostgresServer]:
        """A PostgreSQL cluster of the test's own (it may be restarted); no fsync, process crashes lose nothing."""
        with open_postgres(fsync=False) as server:
            yield server
