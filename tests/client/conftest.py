"""Fixtures of the client tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runwatch.client import (
    DatacatClient,
)

from ._datacat_stub import DatacatStub
from ._doubles import FakeServer, ServerProcess, open_client


@pytest.fixture
def fake() -> FakeServer:
    """A fresh in-process server double."""
    return FakeServer()


@pytest.fixture
def client(fake: FakeServer) -> Iterator[DatacatClient]:
    """A non-blocking client on the fake server, closed afterwards."""
    with open_client(fake) as client:
        yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for this module's tests."""
    process = ServerProcess(tmp_path_factory.mktemp("server"))
    yield process
    process.stop()


@pytest.fixture
def datacat() -> Iterator[DatacatStub]:
    """A datacat server double on a loopback port, stopped afterwards."""
    stub = DatacatStub()
    yield stub
    stub.close()
