"""Fixtures of the datacat harness: real `runwatch serve` processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._harness import UNIT, Serve

#: The key of the server that requires one (datacat's daemon sends it as ``Authorization: Bearer``).
API_KEY = "secret-key"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """One server for the module (no key; datacat's default heartbeat timeout)."""
    process = Serve(tmp_path_factory.mktemp("serve"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def quick_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A server whose sessions are suspended after 1.5 time units of silence (datacat's test used 2 s)."""
    process = Serve(tmp_path_factory.mktemp("quick"), heartbeat_timeout=1.5 * UNIT)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A server that requires the bearer key ``secret-key``."""
    process = Serve(tmp_path_factory.mktemp("keyed"), token=API_KEY)
    yield process
    process.stop()
