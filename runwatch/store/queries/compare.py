"""Several runs' metrics at once: the one read behind run comparison.

Every multi-run read (the dashboard's compare view through ``GET
/api/compare``, ``DatabaseManager.get_runs_metrics`` for notebooks) goes
through :func:`runs_metric_series` (``Store.runs_metrics`` and
``Store.runs_metrics_frame`` of the SQLite backend): each run's series
decoded from its chunks (:func:`runwatch.store.chunk_reads.read_series`),
a window on the chunks' summary columns.

The x axis of a comparison is each run's **global step**, the step the
monitor gives every logging call (``update_metrics(..., step=)``, else the
previous step plus one; W&B's ``_step``). A call stored without one (the
system sampler's readings, a remote producer that sent none) takes the step
of the call before it, so it is drawn where it happened; a run's calls before
any step are at step 0.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from .common import check_metric_names, check_run_id, read_snapshot, run_pk

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_COMPARE_RUNS",
    "X_AXES",
    "check_run_ids",
    "runs_metric_frame",
    "runs_metric_series",
    "runs_series_frame",
]

#: The most runs one comparison reads.
MAX_COMPARE_RUNS: Final = 50

#: What a comparison's x axis can be: the global step, wall time, or seconds since the run started.
X_AXES: Final = ("step", "time", "relative")

#: One metric of one run: equal-length arrays ``ts`` (epoch seconds), ``step`` (global step) and ``value``.
Series = dict[str, np.ndarray]


def check_run_ids(run_ids: object) -> list[str]:
    """The runs of a comparison: duplicates dropped, order kept (TypeError/ValueError for bad ones)."""
    if isinstance(run_ids, (str, bytes)) or not isinstance(run_ids, Iterable):
        raise TypeError(f"run_ids must be a list of run ids, got {run_ids!r}")
    out: list[str] = []
    for run_id in run_ids:
        check_run_id(run_id)
        if run_id not in out:
            out.append(run_id)
    if not out:
        raise ValueError("run_ids must name at least one run")
    if len(out) > MAX_COMPARE_RUNS:
        raise ValueError(f"at most {MAX_COMPARE_RUNS} runs can be compared at once, got {len(out)}")
    return out


def runs_metric_series(
    conn: sqlite3.Connection,
    run_ids: Iterable[str],
    metric_names: Iterable[str] | None = None,
    *,
    x: str = "step",
    x_min: float | None = None,
    x_max: float | None = None,
) -> dict[str, dict[str, Series]]:
    """The metrics of several runs, per run and metric, in logging order.

    Args:
        conn: a connection to the store.
        run_ids: the runs (duplicates are read once; at most
            :data:`MAX_COMPARE_RUNS`).
        metric_names: only these metrics; ``None`` for every metric.
        x: the axis ``x_min`` and ``x_max`` are in (one of :data:`X_AXES`:
            the global step, epoch seconds, or seconds since each run's start).
        x_min: only points at or after this x; ``None`` for no bound.
        x_max: only points at or before this x; ``None`` for no bound.
            Cheaper than cutting the answer: the chunks outside the window
            are not decoded (their summaries say so), so a zoomed chart of a
            long run reads only its part.

    Returns:
        ``{run_id: {metric: {"ts", "step", "value"}}}``: float64 epoch
        seconds, int64 global steps and float64 values (a logged NaN or ±Inf
        as it was). A run that logged no point of a metric (in the window)
        has no entry for it.

    Raises:
        TypeError: a bad run id or ``metric_names``.
        ValueError: no run, or too many; an unknown axis.
        UnknownRunError: a run id no run has.
    """
    runs = check_run_ids(run_ids)
    wanted = check_metric_names(metric_names)
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    out: dict[str, dict[str, Series]] = {}
    with read_snapshot(conn):
        for run_id in runs:
            out[run_id] = _run_series(conn, run_id, run_pk(conn, run_id), wanted, x, x_min, x_max)
    return out


_COLUMNS: Final = ("seq", "step", "time", "value")


def _run_series(
    conn: sqlite3.Connection,
    run_id: str,
    run: int,
    wanted: list[str] | None,
    x: str,
    x_min: float | None,
    x_max: float | None,
) -> dict[str, Series]:
    from ..chunk_reads import read_series

    names = None if wanted is None else [name for name in wanted if name]
    if names == []:
        return {}
    windowed = x_min is not None or x_max is not None
    missing_steps = _has_stepless_points(conn, run, names)
    if not windowed or (x == "step" and missing_steps):
        # Points without a step take the step of the call before them: read whole, cut below.
        found = read_series(conn, run_id, names, columns=_COLUMNS)
    elif x == "step":
        # Steps are integers: a fractional bound (a chart's zoom) keeps the steps within it.
        first_step = None if x_min is None else math.ceil(x_min)
        last_step = None if x_max is None else math.floor(x_max)
        found = read_series(conn, run_id, names, start=first_step, end=last_step, by="step", columns=_COLUMNS)
    else:
        origin = 0.0
        if x == "relative":
            origin = float(conn.execute("SELECT start_time FROM runs WHERE id = ?", (run,)).fetchone()[0])
        low = None if x_min is None else x_min + origin
        high = None if x_max is None else x_max + origin
        found = read_series(conn, run_id, names, start=low, end=high, by="time", columns=_COLUMNS)
    carried = _carried_steps(conn, run_id, run, found) if missing_steps else None
    result: dict[str, Series] = {}
    for name, series in found.items():
        points = series.points
        steps = points.step
        if points.step_valid is not None and carried is not None:
            stepless = ~points.step_valid
            steps = steps.copy()
            steps[stepless] = carried[1][np.searchsorted(carried[0], points.seq[stepless])]
        ts = points.time_us / 1e6
        values = points.values.astype(np.float64, copy=False)
        if windowed and x == "step" and missing_steps:
            keep = np.ones(len(steps), dtype=bool)
            if x_min is not None:
                keep &= steps >= x_min
            if x_max is not None:
                keep &= steps <= x_max
            if not keep.all():
                ts, steps, values = ts[keep], steps[keep], values[keep]
            if not len(steps):
                continue
        result[name] = {"ts": ts, "step": steps, "value": values}
    if wanted is None:
        return dict(sorted(result.items()))
    return result


def _has_stepless_points(conn: sqlite3.Connection, run: int, names: list[str] | None) -> bool:
    """Whether a point of these series has no step (its chunk's summary says so: no step column or a mask)."""
    where = "s.run = ? AND (c.steps IS NULL OR c.step_mask IS NOT NULL)"
    params: list[Any] = [run]
    if names is not None:
        where += f" AND s.name IN ({', '.join('?' * len(names))})"
        params.extend(names)
    found = conn.execute(
        f"SELECT 1 FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id WHERE {where} LIMIT 1", params
    ).fetchone()
    return found is not None


#: Up to this many calls without a step, the steps they carry are found from the chunks' summaries and
#: the few chunks around them; beyond, from every call of the run (a producer that never gives steps).
_CARRY_BY_SUMMARIES: Final = 4096


def _carried_steps(
    conn: sqlite3.Connection, run_id: str, run: int, found: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """The calls without a step among ``found``'s points (ascending) and the step each carries: that of
    the latest earlier call of the run that has one, whichever metrics it logged (0 if none)."""
    stepless = [s.points.seq[~s.points.step_valid] for s in found.values() if s.points.step_valid is not None]
    calls = np.unique(np.concatenate(stepless)) if stepless else np.empty(0, dtype=np.int64)
    if len(calls) > _CARRY_BY_SUMMARIES:
        return calls, _carry_from_timeline(calls, _step_timeline(conn, run_id))
    return calls, _carry_from_summaries(conn, run, calls)


def _carry_from_summaries(conn: sqlite3.Connection, run: int, calls: np.ndarray) -> np.ndarray:
    """:func:`_carried_steps` for a few calls: a chunk whose calls all have steps and end before a call
    gives its last call and step from its summary; only a chunk a call falls inside (or one with
    calls without a step) is decoded."""
    from ..chunk_reads import decode_columns, decode_rows

    rows = conn.execute(
        "SELECT c.series, c.seq_first, c.seq_last, c.step_last, c.steps IS NOT NULL AND c.step_mask IS NULL,"
        " c.steps IS NULL FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
        " WHERE s.run = ? ORDER BY c.series, c.seq_first",
        (run,),
    ).fetchall()
    chunks: dict[int, list[tuple[Any, ...]]] = {}
    for row in rows:
        chunks.setdefault(row[0], []).append(row[1:])
    decode = frozenset(("seq", "step"))
    columns = decode_columns(decode)

    decoded: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def stepped_points(series: int, seq_first: int) -> tuple[np.ndarray, np.ndarray]:
        key = (series, seq_first)
        if key not in decoded:
            decoded[key] = decode_stepped(series, seq_first)
        return decoded[key]

    def decode_stepped(series: int, seq_first: int) -> tuple[np.ndarray, np.ndarray]:
        row = conn.execute(
            f"SELECT c.seq_first, {columns} FROM metric_chunks AS c WHERE c.series = ? AND c.seq_first = ?",
            (series, seq_first),
        ).fetchone()
        points = decode_rows([row], decode)
        if points.step_valid is None:
            return points.seq, points.step
        return points.seq[points.step_valid], points.step[points.step_valid]

    indexed = []
    for series, series_chunks in chunks.items():
        firsts = np.fromiter((chunk[0] for chunk in series_chunks), dtype=np.int64, count=len(series_chunks))
        indexed.append((series, series_chunks, np.searchsorted(firsts, calls, side="left") - 1))
    carried = np.zeros(len(calls), dtype=np.int64)
    for i, call in enumerate(calls.tolist()):
        # Series by the latest call they may hold before this one: once a series' answer is at least
        # the next one's bound, the rest cannot beat it (a call logging many metrics is in each of them).
        bounds = []
        for series, series_chunks, before in indexed:
            index = int(before[i])
            if index >= 0:
                bounds.append((min(series_chunks[index][1], call - 1), series, series_chunks, index))
        bounds.sort(key=lambda bound: bound[0], reverse=True)
        latest = -1
        for bound, series, series_chunks, index in bounds:
            if bound <= latest:
                break
            while index >= 0:
                seq_first, seq_last, step_last, all_stepped, no_steps = series_chunks[index]
                if no_steps:
                    index -= 1
                    continue
                if all_stepped and seq_last < call:
                    candidate, step = seq_last, step_last
                else:
                    seqs, steps = stepped_points(series, seq_first)
                    position = int(np.searchsorted(seqs, call, side="left")) - 1
                    if position < 0:
                        index -= 1
                        continue
                    candidate, step = int(seqs[position]), int(steps[position])
                if candidate > latest:
                    latest, carried[i] = candidate, step
                break
    return carried


def _step_timeline(conn: sqlite3.Connection, run_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per series of the run: its calls that have a step (their numbers, ascending) and their steps.

    Kept per series, not merged into one sorted array: merging sorts every call of the run (seconds
    for a run of millions of calls), while a carried step needs one search per series.
    """
    from ..chunk_reads import read_series

    timeline: list[tuple[np.ndarray, np.ndarray]] = []
    for series in read_series(conn, run_id, columns=("seq", "step")).values():
        points = series.points
        if points.step_valid is None:
            seq, steps = points.seq, points.step
        else:
            seq, steps = points.seq[points.step_valid], points.step[points.step_valid]
        if len(seq):
            timeline.append((seq, steps))
    return timeline


def _carry_from_timeline(calls: np.ndarray, timeline: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:func:`_carried_steps` from every stepped call of the run, one search per series."""
    latest_call = np.full(len(calls), -1, dtype=np.int64)
    carried = np.zeros(len(calls), dtype=np.int64)
    for seqs, steps in timeline:
        before = np.searchsorted(seqs, calls, side="left") - 1
        found = np.maximum(before, 0)
        candidate = np.where(before >= 0, seqs[found], -1)
        later = candidate > latest_call
        latest_call = np.where(later, candidate, latest_call)
        carried = np.where(later, steps[found], carried)
    return carried


def runs_metric_frame(
    conn: sqlite3.Connection, run_ids: Iterable[str], metric_names: Iterable[str] | None = None
) -> pd.DataFrame:
    """The metrics of several runs as one long-form DataFrame.

    Returns:
        One row per logged value, with the columns ``run_id`` (str),
        ``step`` (int64 global step), ``timestamp`` (``datetime64[ns, UTC]``),
        ``metric`` (str) and ``value`` (float64; a logged NaN or ±Inf as it
        was); ordered by run (as given), metric, then logging order.

    Raises:
        As :func:`runs_metric_series`.
    """
    return runs_series_frame(runs_metric_series(conn, run_ids, metric_names))


def runs_series_frame(found: dict[str, dict[str, Series]]) -> pd.DataFrame:
    """The long-form DataFrame of :func:`runs_metric_frame` from what :func:`runs_metric_series` gives
    (also from the same arrays read over the REST API, so both frames are built by this code)."""
    import pandas as pd

    from ..series import time_to_us

    run_col: list[np.ndarray] = []
    metric_col: list[np.ndarray] = []
    steps: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for run_id, metrics in found.items():
        for name, arrays in metrics.items():
            n = len(arrays["ts"])
            run_col.append(np.full(n, run_id, dtype=object))
            metric_col.append(np.full(n, name, dtype=object))
            steps.append(arrays["step"])
            seconds.append(arrays["ts"])
            values.append(arrays["value"])

    def joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    # The stored microseconds again (float seconds hold them only to ~0.24 µs): the timestamps
    # get_run_metrics gives the same calls.
    microseconds = time_to_us(joined(seconds, np.float64))
    timestamps = pd.to_datetime(microseconds, unit="us", utc=True).as_unit("ns")
    return pd.DataFrame(
        {
            "run_id": joined(run_col, object),
            "step": joined(steps, np.int64).astype(np.int64),
            "timestamp": timestamps,
            "metric": joined(metric_col, object),
            "value": joined(values, np.float64).astype(np.float64),
        }
    )
