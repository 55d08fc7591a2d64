"""Shared fixtures of the framework-integration tier (``make integrations``).

Each test module here imports its framework with ``pytest.importorskip``, so in
the plain ``make test`` environment (no frameworks) the tier is skipped whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runwatch import DatabaseManager, MonitorConfig, WebMonitor
from runwatch.pipeline.config import default_pipeline_config

# Keras reads its backend once, at import: torch, so the tier needs no TensorFlow or JAX.
os.environ.setdefault("KERAS_BACKEND", "torch")
# Frameworks must never reach for a hub or telemetry from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def make_config(directory: Path) -> MonitorConfig:
    """A monitor config with its store in ``directory``, any free web port, and no alert rules."""
    return MonitorConfig(
        db_path=str(directory / "monitoring.db"),
        data_dir=str(directory / "data"),
        web_port=0,
        pipeline=default_pipeline_config(snapshots=False),
    )


@pytest.fixture
def config(tmp_path: Path) -> MonitorConfig:
    return make_config(tmp_path)


@pytest.fixture
def monitor(config: MonitorConfig) -> Iterator[WebMonitor]:
    with WebMonitor(config) as m:
        yield m


def stored_run(config: MonitorConfig, run_id: str) -> dict[str, Any]:
    """The run's summary as another reader of the store sees it."""
    with DatabaseManager(config.db_path) as db:
        return db.get_run_summary(run_id)


def stored_events(config: MonitorConfig, run_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
    """The run's events as another reader of the store sees them."""
    with DatabaseManager(config.db_path) as db:
        return db.get_run_events(run_id, event_type)


def stored_metrics(config: MonitorConfig, run_id: str) -> Any:
    """The run's metrics frame (one row per logging call) as another reader sees it."""
    with DatabaseManager(config.db_path) as db:
        return db.get_run_metrics(run_id)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The frameworks' own deprecation notices are theirs to fix; every other warning still fails a test."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            for category in ("DeprecationWarning", "PendingDeprecationWarning", "FutureWarning"):
                item.add_marker(pytest.mark.filterwarnings(f"ignore::{category}"))
