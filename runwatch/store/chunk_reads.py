"""Metric series read from the chunk tables on SQLite: points decoded from chunks, figures from summaries.

:func:`read_series` (one run) and :func:`read_series_of_runs` (several) decode
the columns asked for; :func:`read_summaries` answers from the chunks'
summaries without decoding a point; :func:`decode_rows` is the decoding that
every chunk read shares (:mod:`runwatch.store.calls` too). Each read takes
any connection and reads one snapshot.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..exceptions import StoreError
from .base import Series, SeriesAxis, SeriesSummary
from .chunks import VALUE_FLOAT, VALUE_INT, ChunkColumns, ChunkRow, decode_chunk
from .codecs import CodecError
from .queries.common import read_snapshot, run_keys  # shared by every read of the store

__all__ = [
    "DECODE_COLUMNS",
    "decode_columns",
    "decode_rows",
    "read_series",
    "read_series_of_runs",
    "read_summaries",
    "summaries_of",
]

XAxis = SeriesAxis
_RANGE_COLUMNS: Final = {
    "seq": ("seq_first", "seq_last"),
    "step": ("step_min", "step_max"),
    "time": ("time_min", "time_max"),
}


def _check_names(names: object) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Iterable):
        raise TypeError(f"names must be a list of metric names or None, got {names!r}")
    checked = list(names)
    for name in checked:
        if type(name) is not str or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
    return checked


def _x_bound(by: XAxis, value: float | int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number or None, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if by == "time":
        return round(value * 1e6)  # epoch seconds → microseconds
    if value != int(value):
        raise ValueError(f"{what} must be an integer for by={by!r}, got {value!r}")
    return int(value)


def read_series(
    connection: sqlite3.Connection,
    run_id: str,
    names: Sequence[str] | None = None,
    *,
    start: float | None = None,
    end: float | None = None,
    by: XAxis = "seq",
    columns: Collection[str] = ("seq", "step", "time", "value"),
) -> dict[str, Series]:
    """Metrics of a run as arrays, decoded straight from their chunks.

    Args:
        connection: a connection to a store with the chunk tables.
        run_id: the run.
        names: the metrics (None: all of the run's).
        start: only points with ``by`` at or after this (time: epoch seconds).
        end: only points with ``by`` at or before this.
        by: the axis of ``start``/``end``: ``seq`` (logging-call number),
            ``step`` (points without a step are then left out) or ``time``.
        columns: which of ``seq``, ``step``, ``time``, ``value``, ``tags`` to
            decode (the others come back empty).

    Returns:
        Metric name → :class:`Series`, in the order of ``names`` (or, for
        ``None``, the order the run first logged them: by series id); a name
        the run never logged is absent.

    Raises:
        TypeError, ValueError: a bad argument.
        UnknownRunError: no run has this id.
        StoreError: a chunk cannot be decoded.
    """
    wanted = _check_names(names)
    if by not in _RANGE_COLUMNS:
        raise ValueError(f"by must be 'seq', 'step' or 'time', got {by!r}")
    low, high = _x_bound(by, start, "start"), _x_bound(by, end, "end")
    decode = frozenset(columns) | ({by} if low is not None or high is not None else set())
    unknown = decode - {"seq", "step", "time", "value", "tags"}
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    with read_snapshot(connection):
        run = run_keys(connection, [run_id])[run_id]
        rows = _chunk_rows(connection, run, wanted, by, low, high, decode)
    by_name: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row)
    order = wanted if wanted is not None else list(by_name)
    result: dict[str, Series] = {}
    for name in order:
        chunk_rows = by_name.get(name)
        if chunk_rows:
            points = decode_rows(chunk_rows, decode)
            if low is not None or high is not None:
                points = _within(points, by, low, high)
                if not _point_count(points):
                    continue  # no point of this series in the range
            result[name] = Series(run_id, name, points)
    return result


def read_series_of_runs(
    connection: sqlite3.Connection,
    run_condition: str,
    params: Sequence[Any] = (),
    *,
    start: float | None = None,
    end: float | None = None,
    columns: Collection[str] = ("seq", "step", "time", "value"),
) -> list[Series]:
    """Every series of the runs matching ``run_condition`` (SQL on ``runs AS r``), cut to a time range.

    One query for all of them (sessions: many small runs). Series come in
    the order of their ids (runs' metrics in order of first appearance).

    Args:
        run_condition: an SQL condition on the table ``runs`` aliased ``r``, with ``?`` for ``params``.
        start, end: only points at or after / at or before these epoch seconds.
        columns: as for :func:`read_series`.
    """
    low, high = _x_bound("time", start, "start"), _x_bound("time", end, "end")
    decode = frozenset(columns) | {"seq", "time"}
    where = [run_condition]
    bounds: list[Any] = list(params)
    if low is not None:
        where.append("c.time_max >= ?")
        bounds.append(low)
    if high is not None:
        where.append("c.time_min <= ?")
        bounds.append(high)
    with read_snapshot(connection):
        rows = connection.execute(
            f"SELECT r.run_id, s.name, {decode_columns(decode)}"
            " FROM runs AS r JOIN metric_series AS s ON s.run = r.id JOIN metric_chunks AS c ON c.series = s.id"
            f" WHERE {' AND '.join(where)} ORDER BY s.id, c.seq_first",
            bounds,
        ).fetchall()
    grouped: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault((row[0], row[1]), []).append(row[1:])
    result = []
    for (run_id, name), chunk_rows in grouped.items():
        points = decode_rows(chunk_rows, decode)
        if low is not None or high is not None:
            points = _within(points, "time", low, high)
        if _point_count(points):
            result.append(Series(run_id, name, points))
    return result


def _chunk_rows(
    connection: sqlite3.Connection,
    run: int,
    names: list[str] | None,
    by: XAxis,
    low: int | None,
    high: int | None,
    columns: Collection[str],
) -> list[tuple[Any, ...]]:
    where = ["s.run = ?"]
    params: list[Any] = [run]
    if names is not None:
        where.append(f"s.name IN ({', '.join('?' * len(names))})")
        params.extend(names)
    first, last = _RANGE_COLUMNS[by]
    if low is not None:
        where.append(f"c.{last} >= ?")
        params.append(low)
    if high is not None:
        where.append(f"c.{first} <= ?")
        params.append(high)
    return connection.execute(
        f"SELECT s.name, {decode_columns(columns)} FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
        f" WHERE {' AND '.join(where)} ORDER BY s.id, c.seq_first",
        params,
    ).fetchall()


#: The columns a chunk row is selected with for :func:`decode_rows` (after a leading key column).
DECODE_COLUMNS: Final = "c.count, c.value_type, c.seqs, c.steps, c.step_mask, c.times, c.vals, c.tags"
_BLOBS: Final = {"seq": ("c.seqs",), "step": ("c.steps", "c.step_mask"), "time": ("c.times",), "value": ("c.vals",)}


def decode_columns(columns: Collection[str]) -> str:
    """:data:`DECODE_COLUMNS` with NULL for the blobs of columns not decoded: sqlite3 copies every
    blob it hands over (10 of 22 ms for a 5M-point series' four columns)."""
    wanted = {blob for name in columns for blob in _BLOBS.get(name, ())}
    if "tags" in columns:
        wanted.add("c.tags")
    picked = [blob if blob in wanted else "NULL" for blob in DECODE_COLUMNS.split(", ")[2:]]
    return ", ".join(["c.count", "c.value_type", *picked])


def decode_rows(rows: Sequence[Sequence[Any]], columns: frozenset[str]) -> ChunkColumns:
    """One series' chunk rows, ``(key, *DECODE_COLUMNS)`` in call order, decoded into preallocated arrays."""
    counts = [row[1] for row in rows]
    total = sum(counts)
    types = {row[2] for row in rows}
    empty = np.empty(0, dtype=np.int64)
    out: dict[str, npt.NDArray[Any]] = {}
    for name in ("seq", "step", "time"):
        if name in columns:
            out[name] = np.empty(total, dtype=np.int64)
    single_type = len(types) == 1
    if "value" in columns and single_type:
        out["value"] = np.empty(total, dtype=np.int64 if types == {VALUE_INT} else np.float64)
    valid: npt.NDArray[np.bool_] | None = None
    pieces: list[npt.NDArray[Any]] = []
    tags: list[str | None] | None = [] if "tags" in columns else None
    offset = 0
    try:
        for row, count in zip(rows, counts, strict=True):
            window = {name: array[offset : offset + count] for name, array in out.items()}
            chunk = decode_chunk(ChunkRow(count, *row[2:]), columns, out=window)
            if "step" in columns and chunk.step_valid is not None:
                if valid is None:
                    valid = np.ones(total, dtype=np.bool_)
                valid[offset : offset + count] = chunk.step_valid
            if "value" in columns and not single_type:
                pieces.append(chunk.values)
            if tags is not None:
                tags.extend(chunk.tags if chunk.tags is not None else [None] * count)
            offset += count
    except CodecError as exc:
        raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
    if "value" in columns and not single_type:
        out["value"] = _combine_values(pieces)
    if tags is not None and all(tag is None for tag in tags):
        tags = None
    return ChunkColumns(
        out.get("seq", empty),
        out.get("step", empty),
        valid,
        out.get("time", empty),
        out.get("value", np.empty(0, dtype=np.float64)),
        tags,
    )


def _point_count(points: ChunkColumns) -> int:
    """How many points ``points`` holds, whichever columns were decoded."""
    return max(len(points.seq), len(points.step), len(points.time_us), len(points.values))


def _combine_values(pieces: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Integer and float chunks of one series: float64 when every integer converts exactly, else objects."""
    exact = all(
        piece.dtype != np.int64 or not len(piece) or (-(2**53) <= int(piece.min()) and int(piece.max()) <= 2**53)
        for piece in pieces
    )
    if exact:
        return np.concatenate([piece.astype(np.float64, copy=False) for piece in pieces])
    return np.concatenate([piece.astype(object) for piece in pieces])


def _within(points: ChunkColumns, by: XAxis, low: int | None, high: int | None) -> ChunkColumns:
    axis = {"seq": points.seq, "step": points.step, "time": points.time_us}[by]
    keep = np.ones(len(axis), dtype=np.bool_)
    if low is not None:
        keep &= axis >= low
    if high is not None:
        keep &= axis <= high
    if by == "step" and points.step_valid is not None:
        keep &= points.step_valid
    if bool(keep.all()):
        return points

    def pick(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return array[keep] if len(array) else array

    return ChunkColumns(
        pick(points.seq),
        pick(points.step),
        None if points.step_valid is None else points.step_valid[keep],
        pick(points.time_us),
        pick(points.values),
        None if points.tags is None else [tag for tag, kept in zip(points.tags, keep.tolist(), strict=True) if kept],
    )


def read_summaries(
    connection: sqlite3.Connection, run_id: str, names: Sequence[str] | None = None
) -> dict[str, SeriesSummary]:
    """Each metric's figures from its chunk summaries (see :class:`SeriesSummary`).

    Raises:
        UnknownRunError: no run has this id.
    """
    wanted = _check_names(names)
    where = "s.run = ?"
    with read_snapshot(connection):
        run = run_keys(connection, [run_id])[run_id]
        params: list[Any] = [run]
        if wanted is not None:
            where += f" AND s.name IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        rows = connection.execute(
            "SELECT s.name, c.count, c.nan_count, c.value_type, c.value_min, c.value_max, c.value_sum, c.value_last,"
            " c.seq_first, c.seq_last, c.step_first, c.step_last, c.time_first, c.time_last"
            " FROM metric_series s JOIN metric_chunks c ON c.series = s.id"
            f" WHERE {where} ORDER BY s.id, c.seq_first",
            params,
        ).fetchall()
    return summaries_of(rows, wanted)


def summaries_of(rows: Iterable[Sequence[Any]], names: Sequence[str] | None) -> dict[str, SeriesSummary]:
    """Each series' :class:`SeriesSummary` from its chunk summary rows (name first, in series then call order),
    in the order of ``names`` (None: as the rows come); a backend selects the rows its own way."""
    grouped: dict[str, list[Sequence[Any]]] = {}
    for row in rows:
        grouped.setdefault(row[0], []).append(row)
    order = names if names is not None else list(grouped)
    return {name: _summarize(grouped[name]) for name in order if name in grouped}


def _summarize(rows: list[Sequence[Any]]) -> SeriesSummary:
    count = sum(row[1] for row in rows)
    nan_count = sum(row[2] for row in rows)
    lows = [row[4] for row in rows if row[4] is not None]
    highs = [row[5] for row in rows if row[5] is not None]
    total: float | int | None = None
    if count > nan_count:
        if any(row[6] is None and row[1] > row[2] for row in rows):
            total = math.nan
        else:
            sums = [row[6] for row in rows if row[6] is not None]
            total = sum(sums) if all(type(s) is int for s in sums) else math.fsum(sums)
    last_row = rows[-1]
    last = last_row[7]
    if last is None and last_row[3] == VALUE_FLOAT:
        last = math.nan
    steps = [row for row in rows if row[10] is not None]
    return SeriesSummary(
        count=count,
        nan_count=nan_count,
        min=min(lows) if lows else None,
        max=max(highs) if highs else None,
        sum=total,
        last=last,
        seq_first=rows[0][8],
        seq_last=last_row[9],
        step_first=steps[0][10] if steps else None,
        step_last=steps[-1][11] if steps else None,
        time_first=rows[0][12],
        time_last=last_row[13],
        chunks=len(rows),
    )
