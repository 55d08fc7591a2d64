"""The store interface: what every runwatch store backend implements.

runwatch keeps runs, their metrics, events, state, alerts and snapshots in a
store. :class:`Store` is that store's whole surface, backend-neutral: the
SQLite file (:class:`~runwatch.store.sqlite.SQLiteStore`) implements it today;
a PostgreSQL backend and the columnar-chunk metric layout implement the same
interface, and ``tests/store/conformance/`` runs one suite against every
backend.

Shape of the interface:

- **One write path.** :meth:`Store.open_writer` gives the pipeline's store sink
  a :class:`StoreWriter`; each :meth:`StoreWriter.write` stores one batch of
  events (metrics as a batch of logging calls, events, state patches, run
  updates, images, histograms, ingest receipts) in one transaction. Nothing
  else writes events.
- **A live tail** (:meth:`Store.open_tail`): what other writers commit,
  read forward from a cursor per stream, for a process that serves the
  store live while other processes write it.
- **Reads by entity**, each consistent on its own (one snapshot of the
  store): runs, summaries, state, events, alerts, metrics, images
  (metadata, and contents by digest), histograms, snapshots, sessions.
- **Metrics are series in columnar chunks** (docs/store.md): one series per
  run and metric name, its points (logging-call number ``seq``, step, time
  in integer microseconds, value) kept in chunks of columns with per-chunk
  and per-block summaries. The layout is the interface's: the chunk bytes
  (:mod:`runwatch.store.chunks`, pure code) and the plan of each commit
  (:class:`runwatch.store.series.SeriesBuilder`) are shared by every
  backend, which stores chunk rows in its own tables (the columns of
  :data:`runwatch.store.chunk_schema.CHUNK_COLUMNS`). Reads: a run's calls
  as a DataFrame (:meth:`Store.run_metrics`), series as arrays
  (:meth:`Store.read_series`), their figures from summaries alone
  (:meth:`Store.read_summaries`), several runs at once
  (:meth:`Store.runs_metrics`), and charts (:meth:`Store.chart`: min/max
  per bucket from summaries, points decoded only at bucket edges).
  Durability: what a writer's transaction commits, open chunks included,
  is readable after the process is killed.
- **Lifecycle**: schema preparation and migrations (only the backend's
  schema module migrates), crash repair, retention and downsampling in
  resumable passes, backups, export.

Times are seconds since the Unix epoch. Methods block: call them from a
worker thread, never on the event loop. A store that cannot serve a request
raises :class:`~runwatch.exceptions.StoreError`;
:class:`~runwatch.exceptions.StoreUnavailable` when it is busy or failing
for now (retrying may succeed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .handles import (
    SERIES_COLUMNS,
    STREAMS,
    ChartAxis,
    ChartSeries,
    MaintenancePass,
    RunActivity,
    RunPage,
    RunProgress,
    Series,
    SeriesAxis,
    SeriesSummary,
    StoredRow,
    StoreTail,
    StoreWriter,
    TailRead,
    TimeLike,
)

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

__all__ = [
    "SERIES_COLUMNS",
    "STREAMS",
    "ChartAxis",
    "ChartSeries",
    "MaintenancePass",
    "RunActivity",
    "RunPage",
    "RunProgress",
    "Series",
    "SeriesAxis",
    "SeriesSummary",
    "Store",
    "StoreTail",
    "StoreWriter",
    "StoredRow",
    "TailRead",
    "TimeLike",
]


class Store(ABC):
    """A runwatch store (see the module docs)."""

    #: Where the store lives (a file path, a URL), for messages.
    location: str

    # -- the store itself ----------------------------------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store has been created."""

    @abstractmethod
    def identity(self) -> dict[str, str | None]:
        """What names this store however it is addressed: ``{"path": where it is, resolved;
        "identity": equal for two addresses of one store (``None`` while it does not exist)}``."""

    @abstractmethod
    def prepare(self) -> None:
        """Create the store, or bring its schema up to date (safe while a writer runs)."""

    @abstractmethod
    def schema_version(self) -> int:
        """The store's schema version (0 for an empty store)."""

    @abstractmethod
    def migrate(self, target_version: int | None = None) -> list[int]:
        """Step the schema up or down to ``target_version`` (``None``: the newest); the versions passed."""

    @abstractmethod
    def open_writer(self, *, owner: str, max_image_bytes_per_run: int | None = None) -> StoreWriter:
        """The write path for one pipeline sink.

        Args:
            owner: ``host:pid:start-time`` of the process writing: the owner of
                the runs it starts (crash detection), unless an event names one.
            max_image_bytes_per_run: the bytes of image contents a run may
                store (each content counted once per run); an image past it is
                refused and counted, never raised. ``None``: no budget.
        """

    @abstractmethod
    def open_tail(self, *, max_rows: int = 20_000) -> StoreTail:
        """A live tail of the store (not opened yet), reading at most ``max_rows`` rows of each stream per read."""

    # -- runs ------------------------------------------------------------------------------

    @abstractmethod
    def list_runs(
        self,
        *,
        limit: int | None = None,
        status: str | None = None,
        kind: str | None = None,
        exclude_kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest start first (see :func:`runwatch.store.queries.list_runs`)."""

    @abstractmethod
    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Everything known about one run, with per-metric statistics.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def run_state(self, run_id: str) -> dict[str, Any]:
        """The run's current state (every patch merged)."""

    @abstractmethod
    def state_history(
        self, run_id: str, limit: int | None = None, *, before_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The run's state patches, oldest first (the newest ``limit`` before ``before_id``)."""

    @abstractmethod
    def run_statuses(self, run_ids: list[str]) -> dict[str, str]:
        """The status of each of ``run_ids`` the store has."""

    @abstractmethod
    def run_activity(self, run_ids: list[str] | None) -> list[RunActivity]:
        """Status and last signs of life of ``run_ids`` (``None``: of every running or hung run)."""

    @abstractmethod
    def has_run(self, run_id: str) -> bool:
        """Whether the store holds a run with this id."""

    @abstractmethod
    def stored_rows(self, run_id: str, stream: str, start: int, limit: int) -> RunPage:
        """Up to ``limit`` rows of one run's ``stream`` (one of :data:`STREAMS`) at or after ``start``,
        as events, in storage order (``runwatch sync`` uploads runs this way).

        Raises:
            UnknownRunError: no run has this id.
            ValueError: an unknown stream.
        """

    @abstractmethod
    def stored_row_count(self, run_id: str) -> int:
        """How many rows ``run_id`` has in the store's :data:`STREAMS`.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def live_writers(self) -> list[dict[str, Any]]:
        """Who writes the live runs: one entry per owner of the running, paused or hung runs
        (see :func:`runwatch.store.queries.live_writers`); none for a store not created yet."""

    @abstractmethod
    def mark_crashed_runs(self, *, host: str | None = None) -> list[str]:
        """Mark active runs whose producer process on ``host`` (default: this one) is gone as ``crashed``."""

    # -- events and alerts -------------------------------------------------------------------

    @abstractmethod
    def run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        *,
        kind: str | None = None,
        level: str | None = None,
        limit: int | None = None,
        before_id: int | None = None,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """The run's events (see :func:`runwatch.store.queries.run_events`)."""

    @abstractmethod
    def alert_events(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        rule: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[dict[str, Any]]:
        """Stored alert transitions, newest first (``rule``: only that rule's)."""

    @abstractmethod
    def alerts(
        self,
        *,
        run_id: str | None = None,
        severity: str | None = None,
        states: tuple[str, ...] = ("pending", "firing"),
    ) -> list[dict[str, Any]]:
        """The current state of each alert instance, from its latest stored transition."""

    # -- metrics -----------------------------------------------------------------------------

    @abstractmethod
    def run_metrics(
        self,
        run_id: str,
        metric_names: Iterable[str] | None = None,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        *,
        align: str = "call",
    ) -> pd.DataFrame:
        """The run's logging calls as a DataFrame (see :func:`runwatch.store.queries.run_metrics_frame`)."""

    @abstractmethod
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
        """One page of the run's logging calls as stored: what :meth:`run_metrics` builds its frame from
        (see :func:`runwatch.store.queries.metric_calls`; :func:`runwatch.store.queries.frame_from_calls`
        builds the same frame from the pages)."""

    @abstractmethod
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
        """Metrics of a run as arrays, decoded straight from their chunks.

        Args:
            run_id: the run.
            names: the metrics (``None``: all of the run's).
            start, end: only points with ``by`` in ``[start, end]`` (time: epoch seconds).
            by: ``seq``, ``step`` (points without a step are then left out) or ``time``.
            columns: which of :data:`SERIES_COLUMNS` to decode (the others come back empty).

        Returns:
            Metric name → :class:`Series`: in the order of ``names``, or (``None``)
            in the order the run first logged them; a name never logged is absent.

        Raises:
            TypeError, ValueError: a bad argument.
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def read_summaries(self, run_id: str, names: Sequence[str] | None = None) -> dict[str, SeriesSummary]:
        """Each metric's figures from its chunk summaries, in the order of :meth:`read_series`.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
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
        """Bucketed min/max of metrics of one or more runs on a shared x range.

        Args:
            run_ids: the runs (compared on the same buckets).
            names: the metrics.
            x: ``step``, ``time`` (epoch seconds) or ``relative`` (seconds
                since each run's start).
            buckets: how many buckets the range is cut into.
            start, end: the x range; ``None`` takes the extent of the data.
            finite: also each bucket's sum of finite values and ±Inf counts,
                with ``min``/``max`` of the finite values only (the compare
                view's mean and band; a backend may read more to give them).

        Returns:
            ``(run_id, name)`` → :class:`ChartSeries`, for the series that exist.

        Raises:
            UnknownRunError: a run id is not in the store.
        """

    @abstractmethod
    def runs_metrics(
        self,
        run_ids: Sequence[str],
        metric_names: Iterable[str] | None = None,
        *,
        x: ChartAxis = "step",
        x_min: float | None = None,
        x_max: float | None = None,
    ) -> dict[str, dict[str, dict[str, npt.NDArray[Any]]]]:
        """Several runs' metrics as arrays, each on its run's global step: the read behind run comparison.

        Args:
            run_ids: the runs (at most 50; duplicates read once).
            metric_names: only these metrics; ``None`` for every metric.
            x: the axis of ``x_min``/``x_max``: ``step`` (global step),
                ``time`` (epoch seconds) or ``relative`` (seconds since each
                run's start).
            x_min, x_max: only points within these bounds (``None``: no
                bound); the calls outside are not read, so a window of a long
                run costs its size.

        Returns:
            ``{run_id: {metric: {"ts", "step", "value"}}}``: float64 epoch
            seconds, int64 global steps (a call stored without one at the
            step before it), float64 values as logged; a run with no point of
            a metric has no entry for it.

        Raises:
            TypeError, ValueError: bad run ids, names, axis; too many runs.
            UnknownRunError: a run id is not in the store.
        """

    @abstractmethod
    def runs_metrics_frame(self, run_ids: Sequence[str], metric_names: Iterable[str] | None = None) -> pd.DataFrame:
        """Several runs' metrics as one long-form DataFrame (see :func:`runwatch.store.queries.runs_metric_frame`)."""

    # -- what people say about runs ----------------------------------------------------------

    @abstractmethod
    def runs_table_details(self, run_ids: Sequence[str], metric_names: Sequence[str] | None = None) -> dict[str, Any]:
        """What a runs table shows beside each run: config, tags, note, latest global step, metric
        statistics (``last``, ``min``, ``max`` of ``metric_names``) and active alert counts (see
        :func:`runwatch.store.queries.runs_table_details`)."""

    @abstractmethod
    def annotate_run(
        self, run_id: str, *, tags: Sequence[str] | None = None, note: str | None = None, now: float | None = None
    ) -> dict[str, Any]:
        """Set a run's tags and/or note (``None`` keeps that one), at ``now`` (default: the clock).

        Returns:
            ``{"tags", "note", "updated_at"}`` after the change.

        Raises:
            TypeError, ValueError: bad tags (at most 50 one-line strings of at
                most 64 characters) or note (at most 10,000 characters);
                nothing is stored.
            UnknownRunError: no run has this id.
            StoreError: a store older than the annotations (migrate it first).
        """

    # -- images and histograms ---------------------------------------------------------------

    @abstractmethod
    def image_names(self, run_id: str) -> list[dict[str, Any]]:
        """A run's image names: ``name``, ``count``, ``first_step``, ``last_step`` and ``latest``
        (the metadata of its latest image, see :meth:`images`).

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def images(
        self,
        run_id: str,
        name: str | None = None,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The metadata of a run's images, by name, step and order of storing: ``id``, ``name``, ``step``,
        ``ts``, ``digest`` (SHA-256 of the content), ``mime``, ``width``, ``height``, ``caption``, ``size``.

        Args:
            name: only this name (``None``: every name).
            start_step, end_step: only steps in this closed range.
            limit: the most images returned (the first ones in that order).

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def image_at(
        self, run_id: str, name: str, step: int | None = None, *, with_data: bool = False
    ) -> dict[str, Any] | None:
        """The latest image of ``name`` at or before ``step`` (``None``: the latest of all), or ``None``.

        Args:
            with_data: add ``data`` (the content's bytes), read in the same snapshot.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def image_content(self, digest: str) -> tuple[str, bytes] | None:
        """The media type and bytes of the image content named ``digest``, or ``None``."""

    @abstractmethod
    def histogram_names(self, run_id: str) -> list[dict[str, Any]]:
        """A run's histogram names: ``name``, ``count``, ``first_step`` and ``last_step``.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def histograms(
        self,
        run_id: str,
        name: str,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
        max_count: int | None = None,
    ) -> list[dict[str, Any]]:
        """A run's histograms of ``name`` by step (then order of storing): ``id``, ``name``, ``step``,
        ``ts``, ``size``, ``nan_count``, ``posinf_count``, ``neginf_count``, ``min``, ``max``, ``sum``
        (``None`` without finite values), and ``counts``: ``len(counts)`` equal bins from ``low`` to ``high``.
        ``max_count`` keeps at most that many, evenly spaced, the first and the last included.

        Raises:
            UnknownRunError: no run has this id.
        """

    @abstractmethod
    def media_usage(self, run_id: str) -> dict[str, int]:
        """A run's ``image_bytes`` (counted against its budget) and ``images_over_budget``.

        Raises:
            UnknownRunError: no run has this id.
        """

    # -- ingest, snapshots -------------------------------------------------------------------

    @abstractmethod
    def stored_batch_digest(self, run_id: str, batch_id: str) -> str | None:
        """The content digest stored for an ingested batch of ``run_id`` (``None``: not stored)."""

    @abstractmethod
    def stored_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Which of ``run_ids`` the store holds."""

    @abstractmethod
    def save_snapshots(
        self,
        snapshots: Sequence[tuple[str, bytes]],
        taken_at: float,
        max_snapshots: int,
        *,
        busy_timeout_seconds: float = 5.0,
    ) -> tuple[list[str], int]:
        """Store snapshots (run id, JSON bytes) of runs the store holds; keep the newest ``max_snapshots``.

        Returns:
            The runs whose snapshot was stored, and how many older ones were removed.
        """

    @abstractmethod
    def latest_snapshots(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The latest stored snapshot (JSON text) of each of ``run_ids`` that has one."""

    # -- sessions ----------------------------------------------------------------------------

    @abstractmethod
    def session_run_status(self, session_id: str) -> str:
        """The run status of a session.

        Raises:
            UnknownRunError: no session has this id.
        """

    @abstractmethod
    def read_session(
        self,
        session_id: str,
        *,
        events_limit: int,
        events_before: int | None = None,
        metrics_limit: int,
        metrics_before: int | None = None,
        history_limit: int = 100,
        history_before: int | None = None,
    ) -> dict[str, Any]:
        """A session with pages of its events, metrics and state patches
        (see :func:`runwatch.store.queries.sessions.read_session`)."""

    @abstractmethod
    def list_sessions(
        self,
        *,
        active: bool | None,
        status: str | None,
        product: str | None,
        limit: int,
        before: int | None,
        now: float | None = None,
        timeout_seconds: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Session records, newest first: up to ``limit + 1``.

        ``now`` and ``timeout_seconds``: when, and after what silence, datacat's
        sessions are ``suspended`` (see :func:`runwatch.store.queries.sessions.list_sessions`).
        """

    @abstractmethod
    def session_statistics(self, since: float | None) -> dict[str, Any]:
        """Session counts, event counts and metric statistics since ``since``."""

    @abstractmethod
    def session_metrics(self, start: float | None, end: float | None) -> list[dict[str, Any]]:
        """Every session metric value between ``start`` and ``end``, in recording order."""

    @abstractmethod
    def remove_old_sessions(self, cutoff: float) -> dict[str, int]:
        """Delete session data older than ``cutoff``; the rows removed per table."""

    @abstractmethod
    def whole_sessions(self, session_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        """Sessions with every event, metric and state patch, in arrival order, as datacat reads them
        (see :func:`runwatch.store.queries.datacat.session_rows`); ``None``: every session.

        Raises:
            UnknownRunError: one of ``session_ids`` is not a session.
        """

    @abstractmethod
    def suspended_sessions_of_machine(self, machine_id: str, now: float, timeout_seconds: float) -> list[str]:
        """The ids of the sessions of ``machine_id`` that are suspended (heartbeated, then silent past
        their timeout, not ended) and not crashed at ``now``."""

    # -- lifecycle ---------------------------------------------------------------------------

    @abstractmethod
    def cleanup_pass(self, cutoff: float, *, batch_rows: int, lock_wait_seconds: float) -> MaintenancePass:
        """A pass removing the runs that ended before ``cutoff``, with all their data."""

    @abstractmethod
    def downsample_pass(
        self, cutoff: float, *, bucket_rows: int, batch_rows: int, lock_wait_seconds: float
    ) -> MaintenancePass:
        """A pass replacing metric rows of inactive runs older than ``cutoff`` by per-bucket rollups."""

    @abstractmethod
    def work(self, passes: list[MaintenancePass], *, work_seconds: float) -> tuple[list[MaintenancePass], bool]:
        """Step ``passes`` in order for about ``work_seconds``, pausing between transactions.

        Finished passes leave the list. Returns them, and whether the slice
        ended because the write lock stayed taken (the passes resume later).
        """

    @abstractmethod
    def cleanup_old_data(self, older_than: float, *, dry_run: bool = False) -> int:
        """Remove (or, with ``dry_run``, count) the runs that ended before ``older_than`` and their rows."""

    @abstractmethod
    def downsample_metrics(self, older_than: float, *, bucket_rows: int) -> dict[str, int]:
        """Downsample every inactive run's metric rows older than ``older_than``, at once."""

    @abstractmethod
    def metric_rollups(self, run_id: str, metric_names: list[str] | None = None) -> list[dict[str, Any]]:
        """The rollups that replaced a run's downsampled metric rows."""

    @abstractmethod
    def optimize(self) -> dict[str, Any]:
        """Refresh statistics and give free space back (sizes before and after)."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Sizes, schema version and row counts."""

    @abstractmethod
    def create_backup(self, backup_dir: Path, tag: str | None = None) -> Path:
        """A consistent copy of the store in ``backup_dir``; its path."""

    @abstractmethod
    def restore_backup(self, backup_path: Path) -> Path | None:
        """Replace the store by a backup; the kept copy of the replaced store (``None``: there was none)."""

    @abstractmethod
    def export_run(self, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
        """Export one run into a ``.zip`` in ``output_dir``; its path."""
