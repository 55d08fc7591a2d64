"""DataFrames from series read out of chunks (pure numpy and pandas; no I/O).

Four shapes, each built with whole-array operations:

- :func:`series_frame`: one metric, one row per point;
- :func:`per_call_frame`: several metrics of a run, one row per logging call
  (today's ``get_run_metrics`` shape), aligned on the calls' numbers;
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

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .chunk_store import Series

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["long_frame", "per_call_frame", "series_frame", "step_frame"]

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


def per_call_frame(series: Mapping[str, Series], names: Sequence[str] | None = None) -> pd.DataFrame:
    """Metrics of one run, one row per logging call that logged any of them.

    Columns: ``timestamp``, ``step``, then one float64 column per metric in
    ``names`` order (NaN where a call did not log it; a metric never logged
    is a column of NaN). Each series must carry ``seq``, ``step``, ``time``
    and ``value``.
    """
    import pandas as pd

    order = list(series) if names is None else list(names)
    present = [series[name] for name in order if name in series]
    seqs = [s.points.seq for s in present]
    if not seqs:
        calls: Int64Array = np.empty(0, dtype=np.int64)
    elif all(len(seq) == len(seqs[0]) and np.array_equal(seq, seqs[0]) for seq in seqs[1:]):
        calls = seqs[0]  # every metric logged by the same calls: nothing to align
    else:
        calls = np.unique(np.concatenate(seqs))
    count = len(calls)
    time_us = np.zeros(count, dtype=np.int64)
    step = np.zeros(count, dtype=np.int64)
    valid = np.zeros(count, dtype=np.bool_)
    columns: dict[str, Any] = {}
    for name in order:
        column = np.full(count, np.nan)
        found = series.get(name)
        if found is not None:
            points = found.points
            rows = calls if points.seq is calls else np.searchsorted(calls, points.seq)
            at: Any = slice(None) if points.seq is calls else rows
            column[at] = points.values.astype(np.float64)
            time_us[at] = points.time_us
            step[at] = points.step
            valid[at] = True if points.step_valid is None else points.step_valid
        columns[_column_name(name, columns)] = column
    frame: dict[str, Any] = {
        "timestamp": _timestamps(time_us),
        "step": _steps(step, None if bool(valid.all()) else valid),
    }
    frame.update(columns)
    return pd.DataFrame(frame, copy=False)


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
        columns[_column_name(name, columns, taken=("step", "timestamp"))] = column
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


def _column_name(name: str, taken_columns: Mapping[str, Any], taken: tuple[str, ...] = ("timestamp", "step")) -> str:
    """A metric's column name; one named like a fixed column gets a ``metric:`` prefix."""
    renamed = name
    while renamed in taken or renamed in taken_columns and renamed != name:
        renamed = "metric:" + renamed
    return renamed
