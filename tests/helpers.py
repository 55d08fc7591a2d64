"""Helpers shared by test modules of several packages (fixtures are in conftest.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from runwatch.pipeline import ComponentContext


def context(tmp_path: Path) -> ComponentContext:
    """A component context that keeps every file the pipeline might write inside tmp_path."""
    return ComponentContext(db_path=str(tmp_path / "default.db"), data_dir=tmp_path / "data")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
