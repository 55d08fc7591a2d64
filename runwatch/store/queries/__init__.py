"""Read queries over the SQLite store: plain functions of a ``sqlite3.Connection``, by entity.

Everything here reads what :mod:`runwatch.store.encode` wrote and returns
plain values: dicts, lists, or a pandas ``DataFrame`` for metrics. Times are
seconds since the Unix epoch (floats); :class:`~runwatch.store.manager.DatabaseManager`
turns them into ``datetime`` objects for the public API. The functions never
hold a connection or a transaction beyond their own call, so they are safe to
run beside a writer in another thread or process (the store is in WAL mode:
readers see the last committed transaction and never block the writer).

- :mod:`.common`: argument checks, decoding, run keys, one snapshot per read;
- :mod:`.runs`: the run list, a run's summary, state and state history, and
  :func:`mark_crashed_runs` (the one writing function: it repairs the status
  of runs whose writer process died, and needs a connection that may write);
- :mod:`.events`: a run's events, alert transitions and current alerts;
- :mod:`.metrics`: logging calls as a DataFrame, or in pages (series, summaries and
  charts of the chunk layout are in :mod:`runwatch.store.chunk_store` and
  :mod:`runwatch.store.chart`);
- :mod:`.sessions`: application sessions (kind ``session``);
- :mod:`.compare`: several runs' metrics at once, in an x window (run comparison);
- :mod:`.annotations`: a run's tags and note (and their one write);
- :mod:`.runs_table`: what a runs table shows beside each run.
- :mod:`.datacat`: sessions whole, every row in arrival order, as datacat's clients read them.

Decoding rules (see ``encode.py``): JSON parameters carry NaN as ``null``
and ±Inf as the strings ``"inf"``/``"-inf"``; those strings can end up as
TEXT in the REAL columns of ``metric_stats``, and are decoded here.
"""

from __future__ import annotations

from ...events import to_epoch_seconds as to_epoch_seconds
from .common import ACTIVE_STATUSES as ACTIVE_STATUSES
from .common import ALERT_QUERY_STATES as ALERT_QUERY_STATES
from .common import MIN_READ_VERSION as MIN_READ_VERSION
from .common import RUN_STATUSES as RUN_STATUSES
from .common import TimeLike as TimeLike
from .common import check_limit as check_limit
from .common import check_run_id as check_run_id
from .common import check_status as check_status
from .common import to_datetime as to_datetime
from .compare import runs_metric_frame as runs_metric_frame
from .compare import runs_metric_series as runs_metric_series
from .events import alert_events as alert_events
from .events import alerts as alerts
from .events import run_events as run_events
from .metrics import MAX_CALLS_PER_PAGE as MAX_CALLS_PER_PAGE
from .metrics import METRIC_ALIGNMENTS as METRIC_ALIGNMENTS
from .metrics import check_align as check_align
from .metrics import frame_from_calls as frame_from_calls
from .metrics import metric_calls as metric_calls
from .metrics import run_metrics_frame as run_metrics_frame
from .runs import list_runs as list_runs
from .runs import live_writers as live_writers
from .runs import mark_crashed_runs as mark_crashed_runs
from .runs import run_state as run_state
from .runs import run_summary as run_summary
from .runs import state_history as state_history
from .runs_table import runs_table_details as runs_table_details

__all__ = [
    "ACTIVE_STATUSES",
    "ALERT_QUERY_STATES",
    "METRIC_ALIGNMENTS",
    "MIN_READ_VERSION",
    "RUN_STATUSES",
    "TimeLike",
    "alert_events",
    "alerts",
    "check_align",
    "check_limit",
    "check_run_id",
    "check_status",
    "list_runs",
    "mark_crashed_runs",
    "run_events",
    "run_metrics_frame",
    "run_state",
    "run_summary",
    "runs_metric_frame",
    "runs_metric_series",
    "runs_table_details",
    "state_history",
    "to_epoch_seconds",
]
