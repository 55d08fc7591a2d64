"""Stored rows back as typed events: what the live tail and ``runwatch sync`` read.

The store keeps events in three append-only tables (``metric_rows``,
``events``, ``state_history``) and the progress of a run (its last heartbeat
and counters) in its ``runs`` row. This module turns those rows back into the
events of :mod:`runwatch.events` that wrote them:

===============================  =============================================
stored                           event
===============================  =============================================
a metric row                     :class:`~runwatch.events.Metric` (NaN, ±Inf,
                                 step and tags as logged)
``log`` event                    :class:`~runwatch.events.LogEvent`
``lifecycle`` ``run_<t>``        :class:`~runwatch.events.RunLifecycle` ``t``
``lifecycle`` ``run_crashed``    :class:`~runwatch.events.LogEvent`
                                 ``run_crashed`` (written by crash detection,
                                 not a transition a producer sends)
``exception`` event              :class:`~runwatch.events.ExceptionEvent`
``alert`` event                  :class:`~runwatch.events.AlertEvent`
a state history row              :class:`~runwatch.events.StatePatch`
a run's heartbeat and counters   :class:`~runwatch.events.Heartbeat`
===============================  =============================================

Not carried back: a started run's ``owner`` (the events table does not keep
it). A row that no longer passes the event model's checks (written by an
older version) is skipped and counted by the caller.

Each table is read in storage order from a position: the row number of
``metric_rows`` (store-wide, given at commit under the write lock, so rows
appear in commit order), the ``id`` of the other two.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from typing import Any, Final

import orjson

from ..events import (
    AlertEvent,
    ExceptionEvent,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
)
from .base import RunPage, StoredRow
from .queries.common import read_snapshot, run_pk

__all__ = [
    "KeysetNames",
    "decode_event_row",
    "decode_metric_row",
    "decode_state_row",
    "run_row_count",
    "run_rows",
]

_TRANSITIONS: Final = {f"run_{transition.value}": transition for transition in RunTransition}
_WIRE_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf}


class KeysetNames:
    """The metric names of each key set, loaded as rows name key sets it has not seen."""

    def __init__(self) -> None:
        self._names: dict[int, tuple[str, ...]] = {}

    def names(self, connection: sqlite3.Connection, keyset: int) -> tuple[str, ...]:
        """The ordered names of ``keyset`` (read from the store the first time).

        Raises:
            KeyError: the store has no such key set.
        """
        found = self._names.get(keyset)
        if found is None:
            for key, names in connection.execute("SELECT id, names FROM metric_keysets WHERE id >= ?", (keyset,)):
                self._names[key] = tuple(orjson.loads(names))
            found = self._names[keyset]
        return found


def _value(value: Any) -> float:
    if value is None:
        return math.nan
    if type(value) is str:
        return _WIRE_FLOATS[value]
    return float(value)


def decode_metric_row(
    run_id: str, step: int | None, ts: float, names: tuple[str, ...], vals: str | bytes, tags: str | None
) -> Metric:
    """The :class:`Metric` a stored logging call came from.

    Raises:
        ValueError / TypeError / KeyError: the row does not decode (its values
        do not match its key set, or an event check refuses it).
    """
    values = orjson.loads(vals)
    if len(values) != len(names):
        raise ValueError(f"a row of {len(values)} values for {len(names)} names")
    if any(value is None or type(value) is str for value in values):
        values = [_value(value) for value in values]
    return Metric(
        run_id, float(ts), dict(zip(names, values, strict=True)), step, None if tags is None else orjson.loads(tags)
    )


def decode_event_row(run_id: str, ts: float, kind: str, type_: str, level: str, data_text: str | bytes) -> Any:
    """The event a row of the ``events`` table came from (see the module docs).

    Raises:
        ValueError / TypeError / KeyError: the row does not decode.
    """
    data = orjson.loads(data_text)
    ts = float(ts)
    if kind == "lifecycle":
        transition = _TRANSITIONS.get(type_)
        if transition is None:  # run_crashed, written by crash detection
            return LogEvent(run_id, ts, type_, level, data)
        return RunLifecycle(
            run_id,
            ts,
            transition,
            run_kind=data.get("kind", "training"),
            config=data.get("config"),
            final_reward=data.get("final_reward"),
            metadata=data.get("metadata"),
        )
    if kind == "exception":
        return ExceptionEvent(
            run_id,
            ts,
            data["error_type"],
            data["message"],
            data.get("traceback") or "",
            data.get("category") or "unknown",
            data.get("severity") or "error",
            data.get("component"),
        )
    if kind == "alert":
        return AlertEvent(
            run_id,
            ts,
            data["rule"],
            data["state"],
            data.get("severity") or "warning",
            data.get("value"),
            data.get("labels"),
            data.get("annotations"),
            data.get("active_since"),
        )
    return LogEvent(run_id, ts, type_, level, data)


def decode_state_row(run_id: str, ts: float, patch: str | bytes) -> StatePatch:
    """The :class:`StatePatch` a row of ``state_history`` came from."""
    return StatePatch(run_id, float(ts), orjson.loads(patch))


# -- one run's rows, for uploads ------------------------------------------------------------

_RUN_ROW_QUERIES: Final[Mapping[str, str]] = {
    "metric_rows": "SELECT row, step, ts, keyset, vals, tags FROM metric_rows WHERE run = ? AND row >= ?"
    " ORDER BY row LIMIT ?",
    "events": "SELECT id, ts, kind, type, level, data FROM events WHERE run = ? AND id >= ? ORDER BY id LIMIT ?",
    "state_history": "SELECT id, ts, patch FROM state_history WHERE run = ? AND id >= ? ORDER BY id LIMIT ?",
}


def run_rows(connection: sqlite3.Connection, run_id: str, table: str, start: int, limit: int) -> RunPage:
    """Up to ``limit`` rows of one run's ``table`` at or after position ``start``, decoded.

    Args:
        connection: a connection to the store.
        run_id: the run.
        table: one of :data:`~runwatch.store.base.STREAMS`.
        start: the first position to read.
        limit: the most rows to read.

    Returns:
        The page; a page that read fewer than ``limit`` rows is the table's end.

    Raises:
        UnknownRunError: no run has this id.
        ValueError: an unknown table.
    """
    query = _RUN_ROW_QUERIES.get(table)
    if query is None:
        raise ValueError(f"stream must be one of {', '.join(_RUN_ROW_QUERIES)}, got {table!r}")
    keysets = KeysetNames()
    with read_snapshot(connection):
        rows = connection.execute(query, (run_pk(connection, run_id), start, limit)).fetchall()
    out: list[StoredRow] = []
    undecodable = 0
    for row in rows:
        try:
            if table == "metric_rows":
                position, step, ts, keyset, vals, tags = row
                event: Any = decode_metric_row(run_id, step, ts, keysets.names(connection, keyset), vals, tags)
            elif table == "events":
                position, ts, kind, type_, level, data = row
                event = decode_event_row(run_id, ts, kind, type_, level, data)
            else:
                position, ts, patch = row
                event = decode_state_row(run_id, ts, patch)
        except (ValueError, TypeError, KeyError):
            undecodable += 1
            continue
        out.append(StoredRow(table, position, event))
    return RunPage(out, len(rows), undecodable, rows[-1][0] + 1 if rows else start)


def run_row_count(connection: sqlite3.Connection, run_id: str) -> int:
    """How many rows ``run_id`` has in the store's streams.

    Raises:
        UnknownRunError: no run has this id.
    """
    with read_snapshot(connection):
        run = run_pk(connection, run_id)
        return sum(
            int(connection.execute(f"SELECT count(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0])
            for table in _RUN_ROW_QUERIES
        )
