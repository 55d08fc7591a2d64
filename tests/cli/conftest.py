"""Fixtures of the command-line tests: a clean environment, a runner, and stores written by a real monitor."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ._helpers import Store, write_runs


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove the variables the commands and MonitorConfig read, so the host's settings cannot leak in."""
    for name in list(os.environ):
        if name.startswith("MONITOR_") or name in ("RUNWATCH_TOKEN", "RUNWATCH_DB", "RUNWATCH_URL"):
            monkeypatch.delenv(name)


@pytest.fixture
def runner() -> CliRunner:
    """A runner of the command in process, its stdout and stderr apart."""
    return CliRunner()


@pytest.fixture(scope="package")
def template(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The tests' store, written once; tests that change a store use ``store`` (a copy)."""
    path = tmp_path_factory.mktemp("template") / "monitoring.db"
    write_runs(path)
    return Store(path)


@pytest.fixture
def store(template: Store, tmp_path: Path) -> Store:
    """A private copy of the template store (SQLite's backup API copies it consistently)."""
    target = tmp_path / "store" / "monitoring.db"
    target.parent.mkdir()
    source, destination = sqlite3.connect(template.path), sqlite3.connect(target)
    try:
        source.backup(destination)
    finally:
        source.close()
        destination.close()
    return Store(target)
