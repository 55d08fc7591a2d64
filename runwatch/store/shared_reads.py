"""The :class:`~runwatch.store.base.Store` methods every backend answers with the same chunk reads.

Metric series live in columnar chunks in every backend (docs/store.md), and
the reads of them (:mod:`.replay`, :mod:`.queries.metrics`,
:mod:`.queries.compare`, :mod:`.chunk_reads`, :mod:`.chart`) are written once,
for a ``sqlite3``-style connection. :class:`ChunkReadMethods` implements the
interface's methods that only hand their arguments to one of those reads; a
backend inherits it and says, in :meth:`ChunkReadMethods._read_metrics`, how
it runs such a read (SQLite: on a reader connection of a store of the chunk
layout; PostgreSQL: on a pooled connection held for the read).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .base import ChartAxis, ChartSeries, RunPage, Series, SeriesAxis, Store, TimeLike
from .chart import chart
from .chunk_reads import read_series
from .queries.compare import runs_metric_frame, runs_metric_series
from .queries.metrics import metric_calls, run_metrics_frame
from .replay import run_row_count, run_rows

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ChunkReadMethods"]

_T = TypeVar("_T")


class ChunkReadMethods(Store):
    """The metric reads of the :class:`~runwatch.store.base.Store` interface, over :meth:`_read_metrics`."""

    @abstractmethod
    def _read_metrics(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(connection, *args, **kwargs)`` on a connection to this store that the chunk reads can use."""

    def stored_rows(self, run_id: str, stream: str, start: int, limit: int) -> RunPage:
        return self._read_metrics(run_rows, run_id, stream, start, limit)

    def stored_row_count(self, run_id: str) -> int:
        return self._read_metrics(run_row_count, run_id)

    def run_metrics(
        self,
        run_id: str,
        metric_names: Iterable[str] | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        *,
        align: str = "call",
    ) -> pd.DataFrame:
        return self._read_metrics(run_metrics_frame, run_id, metric_names, start_time, end_time, align=align)

    def metric_calls(
        self,
        run_id: str,
        metric_names: Iterable[str] | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        *,
        after_row: int | None = None,
        limit: int = 20_000,
    ) -> dict[str, Any]:
        return self._read_metrics(
            metric_calls, run_id, metric_names, start_time, end_time, after_row=after_row, limit=limit
        )

    def read_series(
        self,
        run_id: str,
        names: Sequence[str] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        by: SeriesAxis = "seq",
        columns: Collection[str] = ("seq", "step", "time", "value"),
    ) -> dict[str, Series]:
        return self._read_metrics(read_series, run_id, names, start=start, end=end, by=by, columns=columns)

    def chart(
        self,
        run_ids: Sequence[str],
        names: Sequence[str],
        *,
        x: ChartAxis = "step",
        buckets: int = 1000,
        start: float | None = None,
        end: float | None = None,
        finite: bool = False,
    ) -> dict[tuple[str, str], ChartSeries]:
        return self._read_metrics(chart, run_ids, names, x=x, buckets=buckets, start=start, end=end, finite=finite)

    def runs_metrics(
        self,
        run_ids: Sequence[str],
        metric_names: Iterable[str] | None = None,
        *,
        x: ChartAxis = "step",
        x_min: float | None = None,
        x_max: float | None = None,
    ) -> dict[str, dict[str, dict[str, Any]]]:
        return self._read_metrics(runs_metric_series, run_ids, metric_names, x=x, x_min=x_min, x_max=x_max)

    def runs_metrics_frame(self, run_ids: Sequence[str], metric_names: Iterable[str] | None = None) -> pd.DataFrame:
        return self._read_metrics(runs_metric_frame, run_ids, metric_names)
