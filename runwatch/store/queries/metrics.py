"""Reads of metrics: a run's logging calls as a DataFrame, from the run's chunks.

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
The series themselves are read by :func:`runwatch.store.chunk_reads.read_series`
(arrays decoded straight from chunks) and shaped by :mod:`runwatch.store.frames`.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from ...events import to_epoch_seconds
from ...exceptions import StoreError
from .common import TimeLike, check_metric_names, check_run_id, read_snapshot, run_pk

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_CALLS_PER_PAGE",
    "METRIC_ALIGNMENTS",
    "check_align",
    "frame_from_calls",
    "metric_calls",
    "run_metrics_frame",
]


#: The row layouts of a metrics frame: one row per global step (merged), or per logging call.
METRIC_ALIGNMENTS: Final = ("step", "call")


def check_align(align: object) -> str:
    """``align`` as given, after checking it is ``"step"`` or ``"call"``."""
    if align not in METRIC_ALIGNMENTS:
        raise ValueError(f"align must be 'step' or 'call', got {align!r}")
    return str(align)


def run_metrics_frame(
    conn: sqlite3.Connection,
    run_id: str,
    metric_names: Iterable[str] | None = None,
    start_time: TimeLike | None = None,
    end_time: TimeLike | None = None,
    *,
    align: str = "call",
) -> pd.DataFrame:
    """The metrics of a run as a wide DataFrame: one row per logging call, or per step.

    With ``align="step"`` the calls of one global step are merged into one
    row (see :func:`runwatch.store.frames.per_call_frame`); a run whose calls
    have no step at all comes back one row per call either way.

    Args:
        conn: a connection to the store.
        run_id: the run.
        metric_names: only these metrics (columns in this order), and only
            the calls that logged at least one of them; ``None`` for all.
            A name no call logged gives a column of NaN.
        start_time: only calls at or after this time (a naive ``datetime``
            is UTC; numbers are epoch seconds).
        end_time: only calls at or before this time.

    Returns:
        A DataFrame in call order with a ``RangeIndex`` and the columns
        ``timestamp`` (``datetime64[ns, UTC]``, microsecond precision),
        ``step`` (nullable ``Int64``; ``<NA>`` where no step was given), then
        one ``float64`` column per metric, in order of first appearance when
        ``metric_names`` is ``None``. A cell is NaN where that call did not
        log that metric; logged NaN and ±Inf come back as they were. A metric
        called ``timestamp`` or ``step`` gets the column ``metric:timestamp``
        (``metric:step``) so it cannot hide the call's own (one ``metric:``
        more while that is another metric's name).

    Raises:
        TypeError: a bad ``run_id``, ``metric_names`` or time type.
        ValueError: a non-finite time, or ``align`` neither ``"step"`` nor ``"call"``.
        UnknownRunError: no run has this id.
        StoreError: a stored chunk cannot be decoded (corrupt store).
    """
    from ..chunk_reads import read_series
    from ..frames import per_call_frame

    check_align(align)
    check_run_id(run_id)
    wanted = check_metric_names(metric_names)
    start = to_epoch_seconds(start_time, "start_time")
    end = to_epoch_seconds(end_time, "end_time")
    with read_snapshot(conn):
        names = None if wanted is None else [name for name in wanted if name]
        # One metric needs no call numbers to align on: a column less to decode (unless a window
        # merged by step must find the step its first calls were logged at).
        windowed_steps = align == "step" and start is not None
        columns = (
            ("step", "time", "value")
            if names is not None and len(names) == 1 and not windowed_steps
            else ("seq", "step", "time", "value")
        )
        series = read_series(conn, run_id, names, start=start, end=end, by="time", columns=columns)
        step_in_progress = _step_in_progress(conn, run_id, series) if windowed_steps else None
    if wanted is None:
        # In order of first appearance: the first call, then the order the run's series were created in.
        positions = {name: index for index, name in enumerate(series)}
        wanted = sorted(series, key=lambda name: (int(series[name].points.seq[0]), positions[name]))
    return per_call_frame(series, wanted, merge_steps=align == "step", step_in_progress=step_in_progress)


def _step_in_progress(conn: sqlite3.Connection, run_id: str, series: Mapping[str, Any]) -> int | None:
    """The step in progress at a window's first call, when that call has no step (else ``None``)."""
    first_call: int | None = None
    first_with_step: int | None = None
    for found in series.values():
        points = found.points
        if not len(points.seq):
            continue
        first_call = int(points.seq[0]) if first_call is None else min(first_call, int(points.seq[0]))
        with_step = points.seq if points.step_valid is None else points.seq[points.step_valid]
        if len(with_step):
            first = int(with_step[0])
            first_with_step = first if first_with_step is None else min(first_with_step, first)
    if first_call is None or first_call == first_with_step:
        return None
    return _step_before(conn, run_id, first_call)


def _step_before(conn: sqlite3.Connection, run_id: str, call: int) -> int | None:
    """The step of the run's latest call with a step numbered before ``call`` (``None``: no such call).

    Looks back in growing ranges of call numbers, so a window late in a long
    run decodes little.
    """
    from ..chunk_reads import read_series

    span = 1024
    while True:
        low = max(call - span, 0)
        before = read_series(conn, run_id, start=low, end=call - 1, by="seq", columns=("seq", "step"))
        latest: tuple[int, int] | None = None
        for found in before.values():
            points = found.points
            seqs, steps = points.seq, points.step
            if points.step_valid is not None:
                seqs, steps = seqs[points.step_valid], steps[points.step_valid]
            if len(seqs) and (latest is None or int(seqs[-1]) > latest[0]):
                latest = (int(seqs[-1]), int(steps[-1]))
        if latest is not None or low == 0:
            return None if latest is None else latest[1]
        span *= 16


# -- a run's logging calls as stored, page by page ----------------------------------------------
# ``GET /api/runs/{id}/metrics/calls`` answers metric_calls pages, and a remote-mode reader builds the
# DataFrame from them with frame_from_calls, which shapes it with the code run_metrics_frame uses: a
# frame read over REST is the frame read from the file, value for value (values travel as JSON texts
# in which NaN is null and ±Inf "inf"/"-inf": floats printed to round-trip, unrounded).

#: The most calls one page holds.
MAX_CALLS_PER_PAGE: Final = 100_000

_WIRE_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf}


def metric_calls(
    conn: sqlite3.Connection,
    run_id: str,
    metric_names: Iterable[str] | None = None,
    start_time: TimeLike | None = None,
    end_time: TimeLike | None = None,
    *,
    after_row: int | None = None,
    limit: int = 20_000,
) -> dict[str, Any]:
    """One page of a run's logging calls, in call order (rebuilt from the run's chunks).

    Args:
        conn: a connection to the store.
        run_id: the run.
        metric_names: only these metrics' values, of the calls that logged one of them (``None``: all).
        start_time: only calls at or after this time; ``end_time``: at or before.
        after_row: only calls numbered after this one (the previous page's ``next_after_row``).
        limit: the most calls in the page (1 to :data:`MAX_CALLS_PER_PAGE`).

    Returns:
        ``{"keysets": {id: [names]}, "row": [...], "keyset": [...], "step": [int | None],
        "ts": [...], "vals": [JSON text], "next_after_row": int | None}``: per call its
        number, the page's id of the names it logged, its step, time (epoch seconds, to the
        microsecond) and values in those names' order; ``next_after_row`` is ``None`` on the
        last page; ``step_in_progress`` (first page of a window whose first call has no
        step, else ``None``) the step of the run's latest call with a step before it.

    Raises:
        TypeError / ValueError: a bad argument.
        UnknownRunError: no run has this id.
        StoreError: a stored chunk cannot be decoded.
    """
    from ..calls import run_calls_from

    check_run_id(run_id)
    wanted = check_metric_names(metric_names)
    if type(limit) is not int or not 1 <= limit <= MAX_CALLS_PER_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_CALLS_PER_PAGE}, got {limit!r}")
    if after_row is not None and type(after_row) is not int:
        raise TypeError(f"after_row must be an integer or None, got {after_row!r}")
    start = to_epoch_seconds(start_time, "start_time")
    end = to_epoch_seconds(end_time, "end_time")
    names = None if wanted is None else [name for name in wanted if name]
    step_in_progress: int | None = None
    if names == []:
        calls = []
    else:
        with read_snapshot(conn):
            calls = run_calls_from(
                conn,
                run_pk(conn, run_id),
                -(2**63) if after_row is None else after_row + 1,
                limit + 1,
                names=names,
                time_low=None if start is None else round(start * 1e6),
                time_high=None if end is None else round(end * 1e6),
            )
            if after_row is None and start is not None and calls and calls[0].step is None:
                step_in_progress = _step_before(conn, run_id, calls[0].seq)
    more = len(calls) > limit
    calls = calls[:limit]
    keysets: dict[tuple[str, ...], int] = {}
    keyset_of: list[int] = []
    vals: list[str] = []
    for call in calls:
        call_names = tuple(name for name, _ in call.values)
        keyset_of.append(keysets.setdefault(call_names, len(keysets)))
        vals.append(orjson.dumps([_wire_value(value) for _, value in call.values]).decode())
    return {
        "keysets": {str(keyset): list(call_names) for call_names, keyset in keysets.items()},
        "row": [call.seq for call in calls],
        "keyset": keyset_of,
        "step": [call.step for call in calls],
        "ts": [call.time_us / 1e6 for call in calls],
        "vals": vals,
        "next_after_row": calls[-1].seq if more else None,
        "step_in_progress": step_in_progress,
    }


def _wire_value(value: Any) -> Any:
    if type(value) is float and value - value != 0.0:  # NaN or ±Inf
        return None if value != value else ("inf" if value > 0 else "-inf")
    return value


def frame_from_calls(
    pages: Iterable[Mapping[str, Any]], metric_names: Iterable[str] | None = None, *, align: str = "step"
) -> pd.DataFrame:
    """The metrics DataFrame of a run from its :func:`metric_calls` pages (in order).

    Args:
        pages: every page of the run's calls, first to last.
        metric_names: the names asked for (columns in this order), as given to :func:`metric_calls`.
        align: ``"step"`` or ``"call"`` (see :meth:`~runwatch.DatabaseManager.get_run_metrics`).

    Raises:
        StoreError: a call's values do not match its names.
    """
    import numpy as np

    from ..base import Series
    from ..chunks import ChunkColumns
    from ..frames import per_call_frame

    check_align(align)
    wanted = check_metric_names(metric_names)
    columns: dict[str, tuple[list[int], list[int], list[bool], list[int], list[float]]] = {}
    step_in_progress: int | None = None
    for index, page in enumerate(pages):
        if index == 0:
            step_in_progress = page.get("step_in_progress")
        keysets = {int(key): list(names) for key, names in page["keysets"].items()}
        rows = zip(page["row"], page["keyset"], page["step"], page["ts"], page["vals"], strict=True)
        for seq, keyset, step, ts, text in rows:
            names = keysets[keyset]
            values = orjson.loads(text)
            if len(values) != len(names):
                raise StoreError(f"a call's values do not match its names {names!r}")
            time_us = round(ts * 1e6)
            for name, value in zip(names, values, strict=True):
                column = columns.get(name)
                if column is None:
                    column = columns[name] = ([], [], [], [], [])
                column[0].append(seq)
                column[1].append(0 if step is None else step)
                column[2].append(step is not None)
                column[3].append(time_us)
                column[4].append(math.nan if value is None else _WIRE_FLOATS.get(value, value))
    series: dict[str, Series] = {}
    for name, (seqs, steps, valid, times, values) in columns.items():
        has_step = np.array(valid, dtype=np.bool_)
        points = ChunkColumns(
            np.array(seqs, dtype=np.int64),
            np.array(steps, dtype=np.int64),
            None if has_step.all() else has_step,
            np.array(times, dtype=np.int64),
            np.array(values, dtype=np.float64),
        )
        series[name] = Series("", name, points)
    if wanted is None:
        # In order of first appearance, as run_metrics_frame: the first call, then the order within it.
        wanted = sorted(series, key=lambda name: int(series[name].points.seq[0]))
    return per_call_frame(series, wanted, merge_steps=align == "step", step_in_progress=step_in_progress)
