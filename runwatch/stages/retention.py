"""A stage that enforces data retention on the store, on a schedule.

Purpose: remove old finished runs (and, optionally, downsample old metric
rows) while the pipeline runs, without holding back ingest.

Status: beta · Delivery: passes every batch through unchanged · State: stateful (the pass in progress)

Example::

    [stages.retention]
    type = "retention"
    inputs = ["app"]
    retention_days = 30
    interval_seconds = 3600
    downsample_after_days = 7      # optional
    downsample_bucket_rows = 100

    [sinks.store]
    type = "sqlite"
    inputs = ["retention"]

Options:

    ========================  ============  ========  =========  ======
    option                    type          required  default    unit
    ========================  ============  ========  =========  ======
    retention_days            float > 0     yes                  days
    interval_seconds          float > 0     no        3600       seconds
    downsample_after_days     float > 0     no        none       days
    downsample_bucket_rows    int >= 2      no        100        logging calls
    path                      string        no        the store  file
    ========================  ============  ========  =========  ======

How it keeps ingest flowing: the runner calls ``tick`` on the stage's own
task, so while a tick runs the stage takes no batches. A pass is therefore
never run in one go: each tick (every second) does at most about 0.2 s of
work on a worker thread, in transactions of at most 5,000 rows with a pause
after each (see :mod:`runwatch.store.lifecycle`), and the next tick resumes
where it stopped. In between, the stage forwards what queued up; its input
buffer absorbs the short stalls. A pass starts every ``interval_seconds``
(the first at the first tick) unless the previous one is still running.

Statistics: ``retention_passes_total``, ``retention_removed_records_total``,
``retention_removed_runs_total``, ``retention_downsampled_rows_total``,
``retention_written_rollups_total``, ``retention_busy_total`` (slices cut
short because the write lock stayed taken for 0.5 s: a saturated sink;
the pass resumes at the next tick, and since the stage then forwards
nothing while it waits, the sink soon runs dry and lets it in),
``retention_pass_running``, ``retention_last_pass_started_at``,
``retention_last_pass_seconds`` and ``retention_last_error``. Any other
error (a corrupt store, say) propagates to the runner, which counts and
logs it; the pass resumes at the next tick.
"""

from __future__ import annotations

import time
from typing import Any, Final

import anyio
from pydantic import Field

from ..pipeline.component import ComponentContext, Stage
from ..pipeline.component import Options as BaseOptions
from ..store.base import MaintenancePass
from ..store.downsample import DEFAULT_BUCKET_ROWS
from ..store.lifecycle import DEFAULT_BATCH_ROWS

__all__ = ["RetentionStage"]

_SECONDS_PER_DAY: Final = 86_400.0
#: Seconds between ticks while a pass may be due or is running.
TICK_INTERVAL_SECONDS: Final = 1.0
#: The most work done per tick, in seconds (checked between transactions).
WORK_SECONDS_PER_TICK: Final = 0.2
#: How long a transaction waits for the write lock before the slice ends (the pass resumes next tick).
LOCK_WAIT_SECONDS: Final = 0.5


class RetentionStage(Stage):
    """Passes batches through; removes (and downsamples) old data of the store on a schedule.

    Options:
        retention_days: runs that ended (or were last heard of) more than
            this many days ago go, with all their rows; active runs stay.
        interval_seconds: seconds between the starts of two passes.
        downsample_after_days: when set, the metric rows of inactive runs
            older than this are replaced by rollups (min/max/mean/count per
            metric and bucket); needs schema version 3.
        downsample_bucket_rows: logging calls per rollup bucket.
        path: the database (default: the pipeline's store).

    Attributes:
        batch_rows: the most rows removed or replaced per write transaction.
    """

    takes_receipts = True  # internal ingest receipts: forwarded with their batch

    batch_rows: int = DEFAULT_BATCH_ROWS

    class Options(BaseOptions):
        retention_days: float = Field(gt=0)
        interval_seconds: float = Field(3600.0, gt=0)
        downsample_after_days: float | None = Field(None, gt=0)
        downsample_bucket_rows: int = Field(DEFAULT_BUCKET_ROWS, ge=2)
        path: str | None = None

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = options.path or context.db_path
        self.store = context.store_at(self.path)
        self.tick_interval_seconds = min(TICK_INTERVAL_SECONDS, options.interval_seconds)
        self._next_pass_at = 0.0
        self._jobs: list[MaintenancePass] = []
        self._pass_started_at: float | None = None
        self._pass_started_clock = 0.0
        self._passes = 0
        self._busy = 0
        self._totals = dict.fromkeys(_COUNTERS, 0)
        self._last_pass_seconds: float | None = None
        self._last_error: str | None = None

    async def write(self, batch: list[Any]) -> None:
        await self.output.send(batch)

    async def tick(self, now: float) -> None:
        """Start a pass when one is due, and run a slice of the pass in progress.

        Args:
            now: seconds since the epoch; the cutoffs are measured from it.
        """
        if not self._jobs:
            if now < self._next_pass_at:
                return
            self._start_pass(now)
        try:
            finished, busy = await anyio.to_thread.run_sync(self._work, self._jobs)
        except Exception as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        for job in finished:
            self._add_to_totals(job)
        self._busy += busy
        self._last_error = None
        if not self._jobs:
            self._finish_pass()

    @property
    def pass_running(self) -> bool:
        """Whether a pass has started and not finished."""
        return bool(self._jobs)

    def _start_pass(self, now: float) -> None:
        options = self.options
        self._next_pass_at = now + options.interval_seconds
        self._pass_started_at = now
        self._pass_started_clock = time.perf_counter()
        limits: dict[str, Any] = {"batch_rows": self.batch_rows, "lock_wait_seconds": LOCK_WAIT_SECONDS}
        self._jobs = [self.store.cleanup_pass(now - options.retention_days * _SECONDS_PER_DAY, **limits)]
        if options.downsample_after_days is not None:
            cutoff = now - options.downsample_after_days * _SECONDS_PER_DAY
            self._jobs.append(self.store.downsample_pass(cutoff, bucket_rows=options.downsample_bucket_rows, **limits))

    def _finish_pass(self) -> None:
        self._passes += 1
        self._last_pass_seconds = time.perf_counter() - self._pass_started_clock

    def _work(self, jobs: list[MaintenancePass]) -> tuple[list[MaintenancePass], bool]:
        """Worker thread: step the jobs for up to WORK_SECONDS_PER_TICK (see :meth:`Store.work`).

        Returns:
            The jobs finished, and whether the slice ended because the write
            lock stayed taken (a busy sink: not an error, the pass resumes at
            the next tick).
        """
        return self.store.work(jobs, work_seconds=WORK_SECONDS_PER_TICK)

    def _add_to_totals(self, job: MaintenancePass) -> None:
        for key, value in job.counters().items():
            self._totals[key] += value

    def statistics(self) -> dict[str, Any]:
        # Totals count the finished jobs and the progress of the running ones.
        totals = dict(self._totals)
        for job in list(self._jobs):
            for key, value in job.counters().items():
                totals[key] += value
        return {
            "retention_passes_total": self._passes,
            **{f"retention_{key}_total": value for key, value in totals.items()},
            "retention_busy_total": self._busy,
            "retention_pass_running": self.pass_running,
            "retention_last_pass_started_at": self._pass_started_at,
            "retention_last_pass_seconds": self._last_pass_seconds,
            "retention_last_error": self._last_error,
        }


_COUNTERS: Final = ("removed_records", "removed_runs", "downsampled_rows", "written_rollups")
