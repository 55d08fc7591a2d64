"""Fixtures of the store's tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The path of a store file that does not exist yet."""
    return tmp_path / "store.db"
