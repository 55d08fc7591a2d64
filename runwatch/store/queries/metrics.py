"""Reads of metrics: a run's logging calls as a DataFrame, from the run's chunks.

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
The series themselves are read by :func:`runwatch.store.chunk_store.read_series`
(arrays decoded straight from chunks) and shaped by :mod:`runwatch.store.frames`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from ...events import to_epoch_seconds
from .common import TimeLike, check_metric_names, check_run_id, read_snapshot

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METRIC_ALIGNMENTS", "check_align", "run_metrics_frame"]


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
        (``metric:step``) so it cannot hide the call's own.

    Raises:
        TypeError: a bad ``run_id``, ``metric_names`` or time type.
        ValueError: a non-finite time, or ``align`` neither ``"step"`` nor ``"call"``.
        UnknownRunError: no run has this id.
        StoreError: a stored chunk cannot be decoded (corrupt store).
    """
    from ..chunk_store import read_series
    from ..frames import per_call_frame

    check_align(align)
    check_run_id(run_id)
    wanted = check_metric_names(metric_names)
    start = to_epoch_seconds(start_time, "start_time")
    end = to_epoch_seconds(end_time, "end_time")
    with read_snapshot(conn):
        names = None if wanted is None else [name for name in wanted if name]
        # One metric needs no call numbers to align on: a column less to decode.
        columns = (
            ("step", "time", "value") if names is not None and len(names) == 1 else ("seq", "step", "time", "value")
        )
        series = read_series(conn, run_id, names, start=start, end=end, by="time", columns=columns)
    if wanted is None:
        # In order of first appearance: the first call, then the order the run's series were created in.
        positions = {name: index for index, name in enumerate(series)}
        wanted = sorted(series, key=lambda name: (int(series[name].points.seq[0]), positions[name]))
    return per_call_frame(series, wanted, merge_steps=align == "step")
