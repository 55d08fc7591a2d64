"""Stored rows back as typed events: what the live tail and ``runwatch sync`` read.

The store keeps events in three append-only streams (``metric_rows``: the
logging calls, kept in metric chunks; the ``events`` and ``state_history``
tables) and the progress of a run (its last heartbeat and counters) in its
``runs`` row. This module turns those rows back into the events of
:mod:`runwatch.events` that wrote them:

===============================  =============================================
stored                           event
===============================  =============================================
a logging call                   :class:`~runwatch.events.Metric` (NaN, ±Inf,
                                 step and tags as logged; the time to the
                                 microsecond)
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

Each stream is read in storage order from a position: the number of a
logging call (store-wide, given at commit under the write lock, so calls
appear in commit order; see :mod:`runwatch.store.calls`), the ``id`` of the
other two.
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
from .base import STREAMS, RunPage, StoredRow
from .calls import Call, run_call_count, run_calls_from
from .queries.common import read_snapshot, run_pk

__all__ = [
    "decode_event_row",
    "decode_state_row",
    "metric_of_call",
    "run_row_count",
    "run_rows",
]

_TRANSITIONS: Final = {f"run_{transition.value}": transition for transition in RunTransition}
_WIRE_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf}


def metric_of_call(call: Call) -> Metric:
    """The :class:`Metric` a stored logging call came from.

    Raises:
        ValueError / TypeError: an event check refuses it (written by an older version).
    """
    return Metric(
        call.run_id,
        call.time_us / 1e6,
        dict(call.values),
        call.step,
        None if call.tags is None else orjson.loads(call.tags),
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
    if table == "metric_rows":
        return _run_calls(connection, run_id, start, limit)
    query = _RUN_ROW_QUERIES.get(table)
    if query is None:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {table!r}")
    with read_snapshot(connection):
        rows = connection.execute(query, (run_pk(connection, run_id), start, limit)).fetchall()
    out: list[StoredRow] = []
    undecodable = 0
    for row in rows:
        try:
            if table == "events":
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


def _run_calls(connection: sqlite3.Connection, run_id: str, start: int, limit: int) -> RunPage:
    with read_snapshot(connection):
        calls = run_calls_from(connection, run_pk(connection, run_id), start, limit)
    out: list[StoredRow] = []
    undecodable = 0
    for call in calls:
        try:
            out.append(StoredRow("metric_rows", call.seq, metric_of_call(call)))
        except (ValueError, TypeError, KeyError):
            undecodable += 1
    return RunPage(out, len(calls), undecodable, calls[-1].seq + 1 if calls else start)


def run_row_count(connection: sqlite3.Connection, run_id: str) -> int:
    """How many rows ``run_id`` has in the store's streams.

    Raises:
        UnknownRunError: no run has this id.
    """
    with read_snapshot(connection):
        run = run_pk(connection, run_id)
        return run_call_count(connection, run) + sum(
            int(connection.execute(f"SELECT count(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0])
            for table in _RUN_ROW_QUERIES
        )
