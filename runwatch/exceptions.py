"""Exceptions raised by runwatch.

Hierarchy::

    RunwatchError
     ├── ConfigError (ValueError)      a configuration value or graph is wrong
     ├── UnknownRunError (ValueError)  no run has the given id
     ├── StoreError                    the database is unusable for the request
     │    ├── StoreUnavailable         the store is locked or failing for now (retry later)
     │    └── BackupError (ValueError) a backup file is corrupt or foreign
     ├── WireError (ValueError)        a JSON document from the network is malformed or invalid
     ├── BatchIdConflict (ValueError)  an ingest batch id reused for different content
     ├── BatchNotStored                an ingested batch was not committed (retry it)
     └── PipelineNotRunning (RuntimeError)  the pipeline was used after close

A caller's mistake is a ``TypeError`` or ``ValueError`` (these subclass
``ValueError`` where that is the meaning). runwatch's own trouble at run time
(full queues, a failing disk, a bug in a stage) is never raised into the
producer: it is counted, logged and shown in statistics.
"""

from __future__ import annotations

__all__ = [
    "BackupError",
    "BatchIdConflict",
    "BatchNotStored",
    "ConfigError",
    "PipelineNotRunning",
    "RunwatchError",
    "StoreError",
    "StoreUnavailable",
    "UnknownRunError",
    "WireError",
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


class StoreUnavailable(StoreError):
    """The store cannot take the request for now: locked by another writer past the wait, a full or
    failing disk, a read-only file. Retrying later may succeed; nothing of the request was done."""


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


class WireError(RunwatchError, ValueError):
    """A JSON document that crossed the network (a request body, a websocket message) is refused.

    Attributes:
        status: the HTTP status that answers it (400 malformed JSON, 413 too
            large, 422 an invalid field, 409 a conflict).
        message: what is wrong, for the client.
        field: the path of the bad field (``events[3].values.loss``), or ``None``.
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field
        super().__init__(message)


class BatchIdConflict(RunwatchError, ValueError):
    """A batch id already used in its scope (a run) for different content.

    An idempotency key only ever dedupes a true retry: the same id with
    different content is refused, never silently dropped.

    Attributes:
        batch_id: the reused id.
        scope: the run the id belongs to.
    """

    def __init__(self, batch_id: str, scope: str) -> None:
        self.batch_id = batch_id
        self.scope = scope
        super().__init__(
            f"batch_id {_short(batch_id)} was already used for different content in run {_short(scope)};"
            " use a new batch_id for new data"
        )


class BatchNotStored(RunwatchError):
    """An ingested batch was not committed (the store refused it, or the pipeline
    stopped first). Nothing of it is stored; its batch id may be sent again.

    Attributes:
        batch_id: the batch's id.
    """

    def __init__(self, batch_id: str, reason: str) -> None:
        self.batch_id = batch_id
        super().__init__(f"batch_id {_short(batch_id)} was not stored ({reason}); send it again")


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


class PipelineNotRunning(RunwatchError, RuntimeError):
    """The pipeline is not running (not started yet, or closed)."""
