"""Several runs' metrics at once: the one read behind run comparison.

Every multi-run read (the dashboard's compare view through ``GET
/api/compare``, ``DatabaseManager.get_runs_metrics`` for notebooks) goes
through :func:`runs_metric_series` (``Store.runs_metrics`` and
``Store.runs_metrics_frame`` of the SQLite backend), so another metric
layout only has to answer that one read.

The x axis of a comparison is each run's **global step**, the step the
monitor gives every logging call (``update_metrics(..., step=)``, else the
previous step plus one; W&B's ``_step``). A call stored without one (the
system sampler's readings, a remote producer that sent none) takes the step
of the call before it, so it is drawn where it happened; a run's calls before
any step are at step 0.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from .common import check_metric_names, check_run_id, read_snapshot, run_pk
from .metrics import _decode_values, _keysets  # the metric rows' one decoder, shared with the one-run reads

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_COMPARE_RUNS",
    "X_AXES",
    "runs_metric_frame",
    "runs_metric_series",
]

#: The most runs one comparison reads.
MAX_COMPARE_RUNS: Final = 50

#: What a comparison's x axis can be: the global step, wall time, or seconds since the run started.
X_AXES: Final = ("step", "time", "relative")

#: One metric of one run: equal-length arrays ``ts`` (epoch seconds), ``step`` (global step) and ``value``.
Series = dict[str, np.ndarray]


def _check_run_ids(run_ids: object) -> list[str]:
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
            Cheaper than cutting the answer: the calls outside the window
            are not decoded, so a zoomed chart of a long run reads only
            its part.

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
    runs = _check_run_ids(run_ids)
    wanted = check_metric_names(metric_names)
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    out: dict[str, dict[str, Series]] = {}
    with read_snapshot(conn):
        keysets = _keysets(conn)
        pks = {run_id: run_pk(conn, run_id) for run_id in runs}
        for run_id, pk in pks.items():
            window = None if x_min is None and x_max is None else _Window.of(conn, pk, x, x_min, x_max)
            out[run_id] = _run_series(conn, pk, keysets, wanted, window)
    return out


class _Window:
    """An x range of one run: the SQL expression of its axis and the bounds, for reads that skip calls."""

    def __init__(self, column: str, params: tuple[float, ...], low: float | None, high: float | None) -> None:
        self.column, self.params, self.low, self.high = column, params, low, high

    @classmethod
    def of(cls, conn: sqlite3.Connection, run: int, x: str, low: float | None, high: float | None) -> _Window:
        if x == "relative":
            start = conn.execute("SELECT start_time FROM runs WHERE id = ?", (run,)).fetchone()[0]
            return cls("(ts - ?)", (float(start),), low, high)
        return cls("ts" if x == "time" else "step", (), low, high)

    def rows(self, conn: sqlite3.Connection, run: int) -> tuple[int, int] | None:
        """The first and last call that can hold a point of the window (``None``: none can).

        Every call whose x is within the bounds lies between the first call
        at or after ``low`` and the last at or before ``high``, whatever
        their order. On the step axis a call without a step takes the step
        before it, so the range runs on to the next call that has one.
        """
        first, last = 0, _LAST_ROW
        axis = f"{self.column} "
        if self.low is not None and not (self.column == "step" and self.low <= 0):
            # (On the step axis, calls before any step are at step 0: a bound at or below 0 skips none.)
            found = conn.execute(
                f"SELECT row FROM metric_rows WHERE run = ? AND {axis}>= ? ORDER BY row LIMIT 1",
                (run, *self.params, self.low),
            ).fetchone()
            if found is None:
                return None
            first = int(found[0])
        if self.high is not None:
            found = conn.execute(
                f"SELECT row FROM metric_rows WHERE run = ? AND {axis}<= ? ORDER BY row DESC LIMIT 1",
                (run, *self.params, self.high),
            ).fetchone()
            if self.column == "step":
                # Calls without a step after it carry its step (calls before any step, 0).
                after = -1 if found is None else int(found[0])
                following = conn.execute(
                    "SELECT row FROM metric_rows WHERE run = ? AND row > ? AND step IS NOT NULL ORDER BY row LIMIT 1",
                    (run, after),
                ).fetchone()
                last = _LAST_ROW if following is None else int(following[0]) - 1
            elif found is None:
                return None
            else:
                last = int(found[0])
        return (first, last) if first <= last else None

    def mask(self, ts: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Which of these points lie within the bounds."""
        if self.column == "step":
            axis = steps
        else:
            axis = ts - self.params[0] if self.params else ts
        keep = np.ones(len(axis), dtype=bool)
        if self.low is not None:
            keep &= axis >= self.low
        if self.high is not None:
            keep &= axis <= self.high
        return keep


#: Beyond any call number (row numbers are 64-bit).
_LAST_ROW: Final = 2**63 - 1


def _run_series(
    conn: sqlite3.Connection,
    run: int,
    keysets: dict[int, tuple[str, ...]],
    wanted: list[str] | None,
    window: _Window | None,
) -> dict[str, Series]:
    wanted_set = None if wanted is None else set(wanted)
    matching = [k for k, names in keysets.items() if wanted_set is None or not wanted_set.isdisjoint(names)]
    first_row, last_row, carried = 0, _LAST_ROW, 0
    if window is not None:
        bounds = window.rows(conn, run)
        if bounds is None:
            return {}
        first_row, last_row = bounds
        # The calls before the first one read are not read; the last step
        # among them is carried into calls without one.
        before = conn.execute(
            "SELECT step FROM metric_rows WHERE run = ? AND row < ? AND step IS NOT NULL ORDER BY row DESC LIMIT 1",
            (run, first_row),
        ).fetchone()
        carried = int(before[0]) if before else 0
    # Every call of the range is read (a call without a step takes its
    # predecessor's); only the calls that logged a wanted metric bring their
    # values along.
    rows = conn.execute(
        "SELECT keyset, ts, step IS NULL, COALESCE(step, 0),"
        " CASE WHEN keyset IN (SELECT value FROM json_each(?)) THEN vals END"
        " FROM metric_rows WHERE run = ? AND row BETWEEN ? AND ? ORDER BY row",
        (orjson.dumps(matching).decode(), run, first_row, last_row),
    ).fetchall()
    count = len(rows)
    row_keysets = np.fromiter(map(itemgetter(0), rows), dtype=np.int64, count=count)
    seconds = np.fromiter(map(itemgetter(1), rows), dtype=np.float64, count=count)
    no_step = np.fromiter(map(itemgetter(2), rows), dtype=bool, count=count)
    stored = np.fromiter(map(itemgetter(3), rows), dtype=np.int64, count=count)
    vals = list(map(itemgetter(4), rows))
    del rows
    steps = _carry_steps(stored, no_step, carried)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for keyset in matching:
        indices = np.flatnonzero(row_keysets == keyset)
        if not len(indices):
            continue
        names = keysets[keyset]
        flat = _decode_values(vals, indices, single=len(indices) == count)
        block = flat.reshape(len(indices), len(names))
        for column, name in enumerate(names):
            if wanted_set is None or name in wanted_set:
                parts.setdefault(name, []).append((indices, block[:, column]))
    inside = None if window is None else window.mask(seconds, steps)
    result: dict[str, Series] = {}
    for name, pieces in parts.items():
        if len(pieces) == 1:
            index, value = pieces[0]
        else:  # logged by calls of several key sets: back in logging order
            index = np.concatenate([piece[0] for piece in pieces])
            value = np.concatenate([piece[1] for piece in pieces])
            order = np.argsort(index, kind="stable")
            index, value = index[order], value[order]
        if inside is not None:
            kept = inside[index]
            if not kept.all():
                index, value = index[kept], value[kept]
            if not len(index):
                continue
        result[name] = {"ts": seconds[index], "step": steps[index], "value": np.ascontiguousarray(value)}
    if wanted is not None:
        result = {name: result[name] for name in wanted if name in result}
    else:
        result = dict(sorted(result.items()))
    return result


def _carry_steps(stored: np.ndarray, missing: np.ndarray, carried: int) -> np.ndarray:
    """The stored steps, each missing one replaced by the step before it (``carried`` before the first)."""
    if not missing.any():
        return stored
    index = np.where(missing, -1, np.arange(len(stored)))
    np.maximum.accumulate(index, out=index)
    return np.where(index >= 0, stored[np.maximum(index, 0)], carried).astype(np.int64)


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
    import pandas as pd

    found = runs_metric_series(conn, run_ids, metric_names)
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

    timestamps = pd.to_datetime(joined(seconds, np.float64), unit="s", utc=True)
    if str(timestamps.dtype) != "datetime64[ns, UTC]":
        timestamps = timestamps.as_unit("ns")
    return pd.DataFrame(
        {
            "run_id": joined(run_col, object),
            "step": joined(steps, np.int64).astype(np.int64),
            "timestamp": timestamps,
            "metric": joined(metric_col, object),
            "value": joined(values, np.float64).astype(np.float64),
        }
    )
