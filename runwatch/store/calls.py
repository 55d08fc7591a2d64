"""Logging calls rebuilt from metric chunks, by their store-wide numbers.

The chunk layout keeps a series per run and metric; a logging call is the
points of one number (``seq``) across a run's series. Some readers want calls
back, one at a time and in the order they were numbered: the live tail (every
run's calls after its cursor), ``runwatch sync`` (one run's calls page by
page), the ``/metrics/calls`` pages a remote reader builds its DataFrame from,
and datacat's session documents. They read here.

Calls are numbered store-wide under the write lock (``meta.next_metric_row``,
see :mod:`runwatch.store.writer`), so a number below the counter is
committed, and numbers only grow. A range of numbers is found through each
chunk's ``seq_first``/``seq_last`` (the ``metric_chunks_by_last`` index on
``seq_last`` finds the chunks of every run ending at or after a number; one
run's chunks are found through its series).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from .base import Series
from .chunk_reads import DECODE_COLUMNS, decode_rows
from .chunks import ChunkColumns
from .frames import calls_of

__all__ = ["Call", "calls_of_rows", "read_calls", "run_call_count", "run_calls_from"]

_ALL: Final = frozenset({"seq", "step", "time", "value", "tags"})


@dataclass(frozen=True, slots=True)
class Call:
    """One logging call: its number, step (None if none), time (µs), ``(name, value)`` pairs and tags text."""

    run_id: str
    seq: int
    step: int | None
    time_us: int
    values: list[tuple[str, Any]]
    tags: str | None


def read_calls(
    connection: sqlite3.Connection,
    *,
    low: int | None = None,
    high: int | None = None,
    run: int | None = None,
    runs: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> list[Call]:
    """The calls numbered ``low <= seq < high`` (``None``: no bound), in number order.

    Args:
        connection: a connection in a read snapshot (the caller's transaction).
        low, high: the range of call numbers.
        run: only this run's calls (its integer key); ``runs``: only these runs'.
        names: only these metrics' values (a call that logged none of them is left out).
    """
    where: list[str] = []
    params: list[Any] = []
    if run is not None:
        where.append("s.run = ?")
        params.append(run)
    if runs is not None:
        where.append(f"s.run IN ({', '.join('?' * len(runs))})")
        params.extend(runs)
    if names is not None:
        where.append(f"s.name IN ({', '.join('?' * len(names))})")
        params.extend(names)
    if low is not None:
        where.append("c.seq_last >= ?")
        params.append(low)
    if high is not None:
        where.append("c.seq_first < ?")
        params.append(high)
    rows = connection.execute(
        f"SELECT r.run_id, s.name, {DECODE_COLUMNS} FROM metric_chunks AS c"
        " JOIN metric_series AS s ON s.id = c.series JOIN runs AS r ON r.id = s.run"
        f" WHERE {' AND '.join(where) or 'true'} ORDER BY s.id, c.seq_first",
        params,
    ).fetchall()
    return calls_of_rows(rows, low, high)


def calls_of_rows(rows: Sequence[Sequence[Any]], low: int | None = None, high: int | None = None) -> list[Call]:
    """The calls numbered ``low <= seq < high`` in chunk rows ``(run_id, name, *DECODE_COLUMNS)`` (in series
    then call order, as :func:`read_calls` selects them; a backend may select them its own way), in number order."""
    grouped: dict[str, dict[str, list[Sequence[Any]]]] = {}
    for row in rows:
        grouped.setdefault(row[0], {}).setdefault(row[1], []).append(row[1:])
    calls: list[Call] = []
    for run_id, by_name in grouped.items():
        series: dict[str, Series] = {}
        for name, chunk_rows in by_name.items():
            points = _in_range(decode_rows(chunk_rows, _ALL), low, high)
            if len(points.seq):
                series[name] = Series(run_id, name, points)
        calls.extend(Call(run_id, *call) for call in calls_of(series))
    if len(grouped) > 1:
        calls.sort(key=lambda call: call.seq)
    return calls


def run_calls_from(
    connection: sqlite3.Connection,
    run: int,
    start: int,
    limit: int,
    *,
    names: Sequence[str] | None = None,
    time_low: int | None = None,
    time_high: int | None = None,
) -> list[Call]:
    """The first ``limit`` calls of ``run`` numbered ``start`` or more (fewer: the run has no more).

    Args:
        names: only these metrics' values (calls that logged none of them are skipped).
        time_low, time_high: only calls at or after / at or before these times (µs).
    """
    where = "s.run = ?" + ("" if names is None else f" AND s.name IN ({', '.join('?' * len(names))})")
    found = connection.execute(
        "SELECT max(c.seq_last), min(c.seq_first) FROM metric_series AS s JOIN metric_chunks AS c"
        f" ON c.series = s.id WHERE {where}"
        + ("" if time_low is None else " AND c.time_max >= ?")
        + ("" if time_high is None else " AND c.time_min <= ?"),
        [run, *(names or []), *(bound for bound in (time_low, time_high) if bound is not None)],
    ).fetchone()
    last, first = found
    if last is None or last < start:
        return []
    start = max(start, first)  # calls before the first chunk in the time range are not read
    out: list[Call] = []
    span = max(limit, 1)
    while True:
        # A run's calls are numbered densely unless other runs wrote beside it: widen until enough.
        high = start + span
        calls = read_calls(connection, low=start, high=high, run=run, names=names)
        if time_low is not None or time_high is not None:
            calls = [
                call
                for call in calls
                if (time_low is None or call.time_us >= time_low) and (time_high is None or call.time_us <= time_high)
            ]
        out.extend(calls)
        if len(out) >= limit or high > last:
            return out[:limit]
        start = high
        span *= 4


def run_call_count(connection: sqlite3.Connection, run: int) -> int:
    """How many logging calls ``run`` has stored (calls, not values: one per number)."""
    rows = connection.execute(
        "SELECT c.count, c.value_type, c.seqs, NULL, NULL, NULL, NULL, NULL FROM metric_series AS s"
        " JOIN metric_chunks AS c ON c.series = s.id WHERE s.run = ?",
        (run,),
    ).fetchall()
    if not rows:
        return 0
    seqs = decode_rows([(None, *row) for row in rows], frozenset({"seq"})).seq
    return len(np.unique(seqs))


def _in_range(points: ChunkColumns, low: int | None, high: int | None) -> ChunkColumns:
    if low is None and high is None:
        return points
    seq = points.seq
    first = 0 if low is None else int(np.searchsorted(seq, low, side="left"))
    last = len(seq) if high is None else int(np.searchsorted(seq, high, side="left"))
    if first == 0 and last == len(seq):
        return points
    return points.slice(first, last)
