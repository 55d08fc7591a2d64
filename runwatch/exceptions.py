"""Exceptions raised by runwatch.

Hierarchy::

    RunwatchError
     ├── ConfigError (ValueError)      a configuration value or graph is wrong
     ├── UnknownRunError (ValueError)  no run has the given id
     ├── StoreError                    the database is unusable for the request
     │    └── BackupError (ValueError) a backup file is corrupt or foreign
     └── PipelineNotRunning (RuntimeError)  the pipeline was used after close

A caller's mistake is a ``TypeError`` or ``ValueError`` (these subclass
``ValueError`` where that is the meaning). runwatch's own trouble at run time
(full queues, a failing disk, a bug in a stage) is never raised into the
producer: it is counted, logged and shown in statistics.
"""

from __future__ import annotations

__all__ = [
    "BackupError",
    "ConfigError",
    "PipelineNotRunning",
    "RunwatchError",
    "StoreError",
    "UnknownRunError",
]


class RunwatchError(Exception):
    """Base class of runwatch's exceptions."""


class ConfigError(RunwatchError, ValueError):
    """A configuration is invalid.

    Attributes:
        path: the key path of the bad value, e.g. ``sinks.store.flush_interval_seconds``.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class UnknownRunError(RunwatchError, ValueError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"unknown run id {run_id!r}")


class StoreError(RunwatchError):
    """The database cannot serve the request."""


class BackupError(StoreError, ValueError):
    """A backup file is corrupt, foreign, or otherwise unusable.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class PipelineNotRunning(RunwatchError, RuntimeError):
    """The pipeline is not running (not started yet, or closed)."""
