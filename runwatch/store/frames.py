"""DataFrames from series read out of chunks (pure numpy and pandas; no I/O).

Four shapes, each built with whole-array operations:

- :func:`series_frame`: one metric, one row per point;
- :func:`per_call_frame`: several metrics of a run, one row per logging call
  (``get_run_metrics(align="call")``), aligned on the calls' numbers, or one
  row per global step with the calls of a step merged
  (``get_run_metrics(align="step")``);
- :func:`step_frame`: one row per step, each metric's last value at that
  step (W&B's history shape), for runs that log steps;
- :func:`long_frame`: any number of runs and metrics in long form, for
  comparing runs.

Timestamps become ``datetime64[ns, UTC]``; steps are nullable ``Int64``
(``<NA>`` where a call gave none), as in today's frames. Values are float64 in the wide frames (an
integer beyond 2**53 is rounded there, as in today's frames) and keep
their type in :func:`series_frame` and :func:`long_frame` when all are of
one type.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .base import Series

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["calls_of", "long_frame", "per_call_frame", "series_frame", "step_frame"]

Int64Array = npt.NDArray[np.int64]


def _timestamps(time_us: Int64Array) -> Any:
    import pandas as pd

    # A view of the nanoseconds as naive datetimes, then UTC: no parsing, no copy beyond the multiply.
    return pd.Index((time_us * 1000).view("datetime64[ns]"), copy=False).tz_localize("UTC")


def _steps(step: Int64Array, valid: npt.NDArray[np.bool_] | None) -> Any:
    import pandas as pd

    missing = np.zeros(len(step), dtype=np.bool_) if valid is None else ~valid
    return pd.arrays.IntegerArray(step, missing)


def series_frame(series: Series) -> pd.DataFrame:
    """One metric: columns ``timestamp``, ``step`` and the metric's name (or ``value`` for a
    metric named like the other two), one row per point in logging order."""
    import pandas as pd

    points = series.points
    name = series.name if series.name not in ("timestamp", "step") else "value"
    return pd.DataFrame(
        {"timestamp": _timestamps(points.time_us), "step": _steps(points.step, points.step_valid), name: points.values},
        copy=False,
    )


def per_call_frame(
    series: Mapping[str, Series],
    names: Sequence[str] | None = None,
    *,
    merge_steps: bool = False,
    step_in_progress: int | None = None,
) -> pd.DataFrame:
    """Metrics of one run, one row per logging call that logged any of them (or per step).

    Columns: ``timestamp``, ``step``, then one float64 column per metric in
    ``names`` order (NaN where a call did not log it; a metric never logged
    is a column of NaN). Each series must carry ``step``, ``time`` and
    ``value``, and ``seq`` unless it is the only one.

    With ``merge_steps`` the calls of one global step become one row, in
    step order (see :func:`_merge_steps`); calls without any step stay one
    row per call, and so do calls whose steps already increase call by call
    (nothing to merge). ``step_in_progress`` is the step the calls without
    one before the first call with one join (a window's first calls: the
    step of the run's latest call with a step before them); ``None``: that
    first call's step.
    """
    import pandas as pd

    order = list(series) if names is None else list(names)
    present = [series[name] for name in order if name in series]
    seqs = [s.points.seq for s in present]
    if len(present) == 1 or (
        present and all(len(seq) == len(seqs[0]) and np.array_equal(seq, seqs[0]) for seq in seqs[1:])
    ):
        # Every metric logged by the same calls (one metric, above all): the columns as they are.
        points = present[0].points
        count = len(points.time_us)
        time_us, step = points.time_us, points.step
        valid = np.ones(count, dtype=np.bool_) if points.step_valid is None else points.step_valid
        rows = [
            series[name].points.values.astype(np.float64, copy=False) if name in series else np.full(count, np.nan)
            for name in order
        ]
        present_rows = np.array([name in series for name in order], dtype=np.bool_)
        logged = np.repeat(present_rows[:, None], count, axis=1) if merge_steps else None
    else:
        calls = np.unique(np.concatenate(seqs)) if seqs else np.empty(0, dtype=np.int64)
        count = len(calls)
        time_us = np.zeros(count, dtype=np.int64)
        step = np.zeros(count, dtype=np.int64)
        valid = np.zeros(count, dtype=np.bool_)
        matrix = np.full((len(order), count), np.nan)  # one row per metric: contiguous columns for pandas
        # Merging steps must tell "not logged" from a logged NaN: it keeps which cells were logged.
        logged = np.zeros((len(order), count), dtype=np.bool_) if merge_steps else None
        for index, name in enumerate(order):
            found = series.get(name)
            if found is None:
                continue
            points = found.points
            at = np.searchsorted(calls, points.seq)
            matrix[index, at] = points.values.astype(np.float64)
            if logged is not None:
                logged[index, at] = True
            time_us[at] = points.time_us
            step[at] = points.step
            valid[at] = True if points.step_valid is None else points.step_valid
        rows = list(matrix)
    one_call_per_step = bool(valid.all()) and bool(np.all(step[1:] > step[:-1]))
    if logged is not None and count and valid.any() and not one_call_per_step:
        time_us, step, merged = _merge_steps(time_us, step, ~valid, np.array(rows), logged, step_in_progress)
        rows = list(merged)
        valid = np.ones(len(step), dtype=np.bool_)
    frame: dict[str, Any] = {
        "timestamp": _timestamps(time_us),
        "step": _steps(step, None if bool(valid.all()) else valid),
    }
    columns: dict[str, Any] = {}
    for name, column in zip(order, rows, strict=True):
        columns[_column_name(name, order)] = column
    frame.update(columns)
    return pd.DataFrame(frame, copy=False)


def _merge_steps(
    time_us: Int64Array,
    steps: Int64Array,
    no_step: npt.NDArray[np.bool_],
    values: Any,
    logged: Any,
    step_in_progress: int | None = None,
) -> tuple[Int64Array, Int64Array, Any]:
    """One row per global step, in step order (whole-array numpy; no Python code per row).

    A call without a step (the system sampler's readings, an ingested
    metric without one) belongs to the step in progress: that of the
    nearest earlier call with a step in call order (``step_in_progress``
    for calls before any, else the first step). Within a step each metric keeps the value of the last
    call that logged it, a logged NaN included; the row's timestamp is that
    of the step's last call.

    Args:
        time_us: each call's time.
        steps: each call's step (any value where ``no_step``).
        no_step: where a call has no step (at least one call must have one).
        values: metric × call values.
        logged: metric × call, whether that call logged that metric.
        step_in_progress: the step of the calls without one before the first call with one.

    Returns:
        The times, steps and metric × step values of the merged rows.
    """
    n_rows = len(steps)
    has_step = ~no_step
    source = np.where(has_step, np.arange(n_rows), -1)
    np.maximum.accumulate(source, out=source)
    before_any = source < 0
    source[before_any] = int(np.argmax(has_step))
    row_steps = steps[source]
    if step_in_progress is not None:
        row_steps[before_any] = step_in_progress
    order = np.argsort(row_steps, kind="stable")  # call order kept within a step
    sorted_steps = row_steps[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_steps[1:] != sorted_steps[:-1])))
    ends = np.concatenate((starts[1:], [n_rows])) - 1
    positions = np.arange(n_rows)
    merged = np.full((values.shape[0], len(starts)), np.nan, dtype=np.float64)
    for column in range(values.shape[0]):
        last = np.maximum.reduceat(np.where(logged[column, order], positions, -1), starts)
        found = last >= 0
        merged[column, found] = values[column, order[last[found]]]
    return time_us[order[ends]], sorted_steps[starts], merged


def step_frame(series: Mapping[str, Series], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Metrics of one run merged per step: one row per step any of them was logged at.

    Columns: ``step`` (int64, ascending), ``timestamp`` (the latest time
    logged at that step), then per metric its last value at that step (NaN
    where it logged none). Points without a step are left out.
    """
    import pandas as pd

    order = list(series) if names is None else list(names)
    per_metric: dict[str, tuple[Int64Array, Int64Array, npt.NDArray[Any]]] = {}
    for name in order:
        found = series.get(name)
        if found is None:
            continue
        points = found.points
        step, time_us, values = points.step, points.time_us, points.values
        if points.step_valid is not None:
            step, time_us, values = step[points.step_valid], time_us[points.step_valid], values[points.step_valid]
        # The last point of each step, in logging order: sort stably by step, keep each run's end.
        order_by_step = np.argsort(step, kind="stable")
        sorted_steps = step[order_by_step]
        last = np.flatnonzero(np.append(np.diff(sorted_steps) != 0, True)) if len(step) else order_by_step
        picked = order_by_step[last]
        per_metric[name] = (step[picked], time_us[picked], values[picked])
    steps = (
        np.unique(np.concatenate([entry[0] for entry in per_metric.values()]))
        if per_metric
        else np.empty(0, dtype=np.int64)
    )
    time_us = np.full(len(steps), np.iinfo(np.int64).min, dtype=np.int64)
    columns: dict[str, Any] = {}
    for name in order:
        column = np.full(len(steps), np.nan)
        entry = per_metric.get(name)
        if entry is not None:
            rows = np.searchsorted(steps, entry[0])
            column[rows] = entry[2].astype(np.float64)
            np.maximum.at(time_us, rows, entry[1])
        columns[_column_name(name, order, taken=("step", "timestamp"))] = column
    frame: dict[str, Any] = {"step": steps, "timestamp": _timestamps(time_us)}
    frame.update(columns)
    return pd.DataFrame(frame)


def long_frame(series: Iterable[Series]) -> pd.DataFrame:
    """Any runs and metrics in long form: ``run_id`` and ``metric`` (categoricals), ``seq``,
    ``step``, ``timestamp``, ``value``; each series' points in logging order."""
    import pandas as pd

    items = list(series)
    lengths = np.array([len(s.points.seq) for s in items], dtype=np.int64)
    run_ids = list(dict.fromkeys(s.run_id for s in items))
    metrics = list(dict.fromkeys(s.name for s in items))
    run_codes = np.repeat(np.array([run_ids.index(s.run_id) for s in items], dtype=np.int32), lengths)
    metric_codes = np.repeat(np.array([metrics.index(s.name) for s in items], dtype=np.int32), lengths)

    def joined(pick: Any, dtype: Any) -> Any:
        parts = [pick(s.points) for s in items]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    values = [s.points.values for s in items]
    kinds = {v.dtype for v in values}
    if len(kinds) == 1:
        value_column = np.concatenate(values)
    else:
        value_column = np.concatenate([v.astype(np.float64) for v in values]) if values else np.empty(0)
    any_missing = any(s.points.step_valid is not None for s in items)
    valid = (
        joined(lambda p: np.ones(len(p.seq), dtype=np.bool_) if p.step_valid is None else p.step_valid, np.bool_)
        if any_missing
        else None
    )
    return pd.DataFrame(
        {
            "run_id": pd.Categorical.from_codes(run_codes, pd.Index(run_ids)),
            "metric": pd.Categorical.from_codes(metric_codes, pd.Index(metrics)),
            "seq": joined(lambda p: p.seq, np.int64),
            "step": _steps(joined(lambda p: p.step, np.int64), valid),
            "timestamp": _timestamps(joined(lambda p: p.time_us, np.int64)),
            "value": value_column,
        }
    )


def _column_name(name: str, names: Collection[str], taken: tuple[str, ...] = ("timestamp", "step")) -> str:
    """A metric's column name; one named like a fixed column gets a ``metric:`` prefix (more while that
    is the name of another metric in ``names``), so no metric's column hides another's."""
    renamed = name
    while renamed in taken or (renamed != name and renamed in names):
        renamed = "metric:" + renamed
    return renamed


def calls_of(series: Mapping[str, Series]) -> Iterator[tuple[int, int | None, int, list[tuple[str, Any]], str | None]]:
    """A run's logging calls rebuilt from its series, in call order (one Python tuple per call and value).

    Yields ``(seq, step or None, time_us, [(name, value), ...], tags)``: the
    values the call logged, names in the order of ``series``; ``tags`` the
    call's canonical JSON tags (or None). Each series must carry every column,
    tags included. For exports and pages of calls, not for bulk reads.
    """
    names = list(series)
    if not names:
        return
    calls = np.unique(np.concatenate([series[name].points.seq for name in names]))
    count = len(calls)
    step: list[int | None] = [None] * count
    time_us = np.zeros(count, dtype=np.int64)
    tags: list[str | None] = [None] * count
    logged: list[tuple[list[int], list[Any]]] = []
    for name in names:
        points = series[name].points
        at = np.searchsorted(calls, points.seq)
        time_us[at] = points.time_us
        positions = at.tolist()
        steps = points.step.tolist()
        if points.step_valid is None:
            for position, value in zip(positions, steps, strict=True):
                step[position] = value
        else:
            for position, value, valid in zip(positions, steps, points.step_valid.tolist(), strict=True):
                if valid:
                    step[position] = value
        if points.tags is not None:
            for position, text in zip(positions, points.tags, strict=True):
                if text is not None:
                    tags[position] = text
        logged.append((positions, points.values.tolist()))
    values: list[list[tuple[str, Any]]] = [[] for _ in range(count)]
    for name, (positions, column) in zip(names, logged, strict=True):
        for position, value in zip(positions, column, strict=True):
            values[position].append((name, value))
    times = time_us.tolist()
    for index, seq in enumerate(calls.tolist()):
        yield seq, step[index], times[index], values[index], tags[index]
