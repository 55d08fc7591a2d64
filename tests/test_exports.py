"""Tests pinning runwatch's public surface: ``__all__``, lazy names, and a cheap ``import runwatch``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import runwatch

PUBLIC_NAMES = [
    "AlertEvent",
    "ConfigError",
    "DatabaseManager",
    "ErrorCategory",
    "ErrorHandler",
    "ErrorSeverity",
    "ExceptionEvent",
    "Heartbeat",
    "LogEvent",
    "Metric",
    "MonitorConfig",
    "Pipeline",
    "PipelineThread",
    "RunLifecycle",
    "RunTransition",
    "RunwatchError",
    "SessionEvent",
    "SessionMetric",
    "SessionMonitor",
    "StatePatch",
    "StoreError",
    "UnknownRunError",
    "WebMonitor",
    "get_session_monitor",
]


def test_all_is_the_pinned_sorted_list() -> None:
    """runwatch.__all__ is exactly the pinned list of public names, sorted."""
    assert runwatch.__all__ == PUBLIC_NAMES
    assert PUBLIC_NAMES == sorted(PUBLIC_NAMES, key=lambda name: (name[0].islower(), name))  # classes, then functions


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_resolves(name: str) -> None:
    """Every name in __all__ is an attribute of runwatch (lazy ones included)."""
    value = getattr(runwatch, name)

    assert value is not None
    assert getattr(value, "__name__", name) == name


def test_lazy_names_are_the_real_classes() -> None:
    """The lazily loaded names are the objects of their modules (the session monitor's seed names included)."""
    from runwatch import sessions
    from runwatch.pipeline.runtime import Pipeline
    from runwatch.pipeline.thread import PipelineThread
    from runwatch.store.manager import DatabaseManager

    assert (runwatch.SessionMonitor, runwatch.SessionEvent, runwatch.SessionMetric) == (
        sessions.SessionMonitor,
        sessions.SessionEvent,
        sessions.SessionMetric,
    )
    assert runwatch.get_session_monitor is sessions.get_session_monitor

    assert runwatch.DatabaseManager is DatabaseManager
    assert runwatch.Pipeline is Pipeline
    assert runwatch.PipelineThread is PipelineThread


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name runwatch does not have raises AttributeError naming it."""
    with pytest.raises(AttributeError, match="NoSuchThing"):
        runwatch.NoSuchThing  # noqa: B018 - the attribute access is the test


def test_seed_facades_are_the_documented_types() -> None:
    """The seed's enums have exactly the seed's members and values."""
    assert {member.name: member.value for member in runwatch.ErrorCategory} == {
        "UNKNOWN": "unknown",
        "SYSTEM": "system",
        "TRAINING": "training",
        "DATABASE": "database",
        "NETWORK": "network",
        "CONFIG": "config",
    }
    assert [member.value for member in runwatch.ErrorSeverity] == ["debug", "info", "warning", "error", "critical"]
    assert issubclass(runwatch.UnknownRunError, ValueError)
    assert issubclass(runwatch.ConfigError, ValueError)


def test_import_runwatch_does_not_import_heavy_modules() -> None:
    """A fresh ``import runwatch`` loads neither pandas, fastapi, aiosqlite nor the lazy submodules."""
    watched = [
        "pandas",
        "fastapi",
        "aiosqlite",
        "runwatch.store.manager",
        "runwatch.pipeline.runtime",
        "runwatch.sessions",
    ]
    code = f"import json, sys, runwatch; print(json.dumps([m for m in {watched!r} if m in sys.modules]))"

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)

    assert json.loads(completed.stdout) == []


def test_lazy_name_imports_its_module_on_first_use() -> None:
    """Touching runwatch.DatabaseManager in a fresh interpreter imports the store manager only then."""
    code = (
        "import json, sys, runwatch; before = 'runwatch.store.manager' in sys.modules; "
        "runwatch.DatabaseManager; print(json.dumps([before, 'runwatch.store.manager' in sys.modules]))"
    )

    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)

    assert json.loads(completed.stdout) == [False, True]
