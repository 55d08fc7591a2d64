"""What every read of the SQLite store shares: argument checks, decoding, run keys, one snapshot per read.

The reads are plain functions of a ``sqlite3.Connection`` (see
:mod:`runwatch.store.queries`); times are seconds since the Unix epoch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from ...exceptions import UnknownRunError
from ..base import TimeLike

__all__ = [
    "ACTIVE_STATUSES",
    "ALERT_QUERY_STATES",
    "MIN_READ_VERSION",
    "NO_ID_LIMIT",
    "RUN_STATUSES",
    "TimeLike",
    "check_limit",
    "check_metric_names",
    "check_run_id",
    "check_status",
    "check_text",
    "json_value",
    "read_snapshot",
    "real_value",
    "run_keys",
    "run_pk",
    "to_datetime",
]

#: The oldest schema version these queries can read (version 1's tables); metric series need version 10
#: (:data:`runwatch.store.chunk_schema.CHUNK_VERSION`).
MIN_READ_VERSION: Final = 1


#: Every status a run can have.
RUN_STATUSES: Final = ("running", "paused", "completed", "failed", "crashed", "hung")


#: The alert states a query may ask for (``inactive`` is never stored as current).
ALERT_QUERY_STATES: Final = ("pending", "firing", "resolved")


#: Statuses of runs whose writer is expected to be alive.
ACTIVE_STATUSES: Final = ("running", "paused", "hung")


# Past every row id (SQLite's rowids are signed 64-bit).
NO_ID_LIMIT: Final = 2**63 - 1


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a non-empty string.

    Raises:
        TypeError: ``run_id`` is not a string, or is empty.
    """
    if type(run_id) is not str or not run_id:
        raise TypeError(f"run_id must be a non-empty string, got {run_id!r}")
    return run_id


def check_limit(limit: object) -> int | None:
    """Return ``limit`` if it is ``None`` or a positive int.

    Raises:
        ValueError: ``limit`` is not a positive integer (``bool`` is refused).
    """
    if limit is None:
        return None
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    return limit


def check_status(status: object) -> str | None:
    """Return ``status`` if it is ``None`` or one of :data:`RUN_STATUSES`.

    Raises:
        ValueError: an unknown status.
    """
    if status is None:
        return None
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RUN_STATUSES)}; got {status!r}")
    return str(status)


def check_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if type(value) is not str or not value:
        raise TypeError(f"{name} must be a non-empty string or None, got {value!r}")
    return value


def check_metric_names(metric_names: object) -> list[str] | None:
    if metric_names is None:
        return None
    if isinstance(metric_names, (str, bytes)) or not isinstance(metric_names, Iterable):
        raise TypeError(f"metric_names must be a list of strings or None, got {metric_names!r}")
    names: list[str] = []
    for name in metric_names:
        if type(name) is not str:
            raise TypeError(f"metric_names must contain strings, got {name!r}")
        if name not in names:
            names.append(name)
    return names


def json_value(text: str | bytes | None, default: Any = None) -> Any:
    return default if text is None else orjson.loads(text)


def real_value(value: Any) -> float | None:
    """A REAL column of ``metric_stats``: NULL → None; TEXT 'inf'/'-inf' → ±Inf."""
    if value is None:
        return None
    return float(value)


def run_pk(conn: sqlite3.Connection, run_id: str) -> int:
    check_run_id(run_id)
    row = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRunError(run_id)
    return int(row[0])


@contextmanager
def read_snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Run several SELECTs on one snapshot, so they agree with each other.

    In WAL mode a read transaction sees one committed state of the database
    even while a writer commits. If the caller already holds a transaction,
    it is used as it is.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:  # nothing was written: COMMIT just ends the read
            conn.execute("COMMIT")


def run_keys(connection: sqlite3.Connection, run_ids: Iterable[str]) -> dict[str, int]:
    """Run id → the run's integer key in ``runs``.

    Raises:
        TypeError, ValueError: a run id that is not a valid run id.
        UnknownRunError: a run id is not in the store.
    """
    keys: dict[str, int] = {}
    for run_id in run_ids:
        if run_id not in keys:
            keys[run_id] = run_pk(connection, run_id)
    return keys


def to_datetime(seconds: float | None) -> datetime | None:
    """Epoch seconds as an aware ``datetime`` in UTC (``None`` stays ``None``)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)
