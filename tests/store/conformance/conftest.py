"""The backends the conformance suite runs against, and a writer helper.

A backend is a factory of an empty store for a test: the SQLite file today;
a PostgreSQL backend adds its factory here (a database per test) and the
whole suite runs against it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from runwatch.store.base import Store
from runwatch.store.sqlite import SQLiteStore

OWNER = "conformance-host:1:1.0"


def sqlite_backend(directory: Path) -> Store:
    """A SQLite store in a file of its own (not created yet)."""
    return SQLiteStore(directory / "store.db")


BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": sqlite_backend}


@pytest.fixture(params=[pytest.param(name, id=name) for name in BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each backend, not created yet."""
    factory = BACKENDS[request.param]
    return factory(tmp_path)


async def write(
    store: Store, *batches: Sequence[Any], max_image_bytes_per_run: int | None = None
) -> list[tuple[str, str]]:
    """Write each batch through the store's one write path, in order; the receipt keys committed."""
    committed, _ = await write_counting(store, *batches, max_image_bytes_per_run=max_image_bytes_per_run)
    return committed


async def write_counting(
    store: Store, *batches: Sequence[Any], max_image_bytes_per_run: int | None = None
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """As :func:`write`, with the writer's counters at the end."""
    writer = store.open_writer(owner=OWNER, max_image_bytes_per_run=max_image_bytes_per_run)
    await writer.open()
    try:
        committed: list[tuple[str, str]] = []
        for batch in batches:
            committed += await writer.write(list(batch))
        return committed, writer.counters()
    finally:
        await writer.aclose()
