"""runwatch: watch ML training runs and application sessions live.

Public names are re-exported here; heavy modules (pandas, the pipeline
runtime) load only when first used, so ``import runwatch`` stays cheap for
the training loop that pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .config import MonitorConfig as MonitorConfig
from .errors import ErrorCategory as ErrorCategory
from .errors import ErrorHandler as ErrorHandler
from .errors import ErrorSeverity as ErrorSeverity
from .events import AlertEvent as AlertEvent
from .events import ExceptionEvent as ExceptionEvent
from .events import Heartbeat as Heartbeat
from .events import LogEvent as LogEvent
from .events import Metric as Metric
from .events import RunLifecycle as RunLifecycle
from .events import RunTransition as RunTransition
from .events import StatePatch as StatePatch
from .exceptions import ConfigError as ConfigError
from .exceptions import RunwatchError as RunwatchError
from .exceptions import StoreError as StoreError
from .exceptions import UnknownRunError as UnknownRunError
from .monitor import WebMonitor as WebMonitor

if TYPE_CHECKING:
    from .pipeline.runtime import Pipeline as Pipeline
    from .pipeline.thread import PipelineThread as PipelineThread
    from .sessions import SessionEvent as SessionEvent
    from .sessions import SessionMetric as SessionMetric
    from .sessions import SessionMonitor as SessionMonitor
    from .sessions import get_session_monitor as get_session_monitor
    from .store.manager import DatabaseManager as DatabaseManager


__all__ = [
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

_LAZY = {
    "DatabaseManager": ("runwatch.store.manager", "DatabaseManager"),
    "Pipeline": ("runwatch.pipeline.runtime", "Pipeline"),
    "PipelineThread": ("runwatch.pipeline.thread", "PipelineThread"),
    "SessionEvent": ("runwatch.sessions", "SessionEvent"),
    "SessionMetric": ("runwatch.sessions", "SessionMetric"),
    "SessionMonitor": ("runwatch.sessions", "SessionMonitor"),
    "get_session_monitor": ("runwatch.sessions", "get_session_monitor"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'runwatch' has no attribute {name!r}")
