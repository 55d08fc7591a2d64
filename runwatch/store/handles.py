"""What a :class:`~runwatch.store.base.Store` hands out: its writer, its tail and maintenance passes
(interfaces every backend implements), and the values its reads return.

:mod:`runwatch.store.base` re-exports every name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from ..events import Heartbeat
from .ledger import CommitLedger

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from .chunks import ChunkColumns

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
    "StoreTail",
    "StoreWriter",
    "StoredRow",
    "TailRead",
    "TimeLike",
]

#: The store's append-only streams of a run's events (a table each in SQLite), in the order an upload sends them:
#: lifecycle, log, exception and alert events; metric rows (one per logging call); state patches.
STREAMS: Final = ("events", "metric_rows", "state_history")
#: A point in time for a filter: a ``datetime`` (naive means UTC) or epoch seconds.
TimeLike = datetime | float | int
#: The x axis of a chart: the global step, epoch seconds, or seconds since each run's start.
ChartAxis = Literal["step", "time", "relative"]
#: What a series read's range is on: the run's logging-call number, the step, or epoch seconds.
SeriesAxis = Literal["seq", "step", "time"]
#: The columns a series read can decode (``time`` is microseconds since the epoch).
SERIES_COLUMNS: tuple[str, ...] = ("seq", "step", "time", "value", "tags")


class RunActivity(NamedTuple):
    """A run's status and its last signs of life (epoch seconds), for the liveness stage."""

    run_id: str
    status: str
    last_heartbeat: float | None
    updated_at: float
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ChartSeries:
    """One metric of one run, bucketed.

    Attributes:
        run_id, name: the series.
        edges: ``buckets + 1`` bucket edges in x units (steps, epoch seconds,
            or seconds since the run's start).
        count: points per bucket (NaN included).
        nan_count: NaN values per bucket.
        min, max: the extremes of each bucket's non-NaN values (NaN if none).
        x_low, x_high: the x range of the points counted in each bucket (NaN if none).
        decoded_points: how many points had to be decoded (the rest came from summaries).
        step_low, step_high: the step range of the points counted in each
            bucket (NaN if none has a step); on a step axis, ``x_low`` and ``x_high``.
        time_low, time_high: the time range (epoch seconds) of the points
            counted in each bucket (NaN if none).
        stepless: whether some points of the series have no step (a step
            chart leaves them out).
        sum, pinf, ninf: with ``finite=True`` only (else None): per bucket,
            the sum of the finite values and the +Inf and −Inf counts; then
            ``min``/``max`` are those of the finite values, so a bucket's
            finite mean is ``sum / (count - nan_count - pinf - ninf)``.
    """

    run_id: str
    name: str
    edges: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    nan_count: npt.NDArray[np.int64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    x_low: npt.NDArray[np.float64]
    x_high: npt.NDArray[np.float64]
    decoded_points: int
    step_low: npt.NDArray[np.float64]
    step_high: npt.NDArray[np.float64]
    time_low: npt.NDArray[np.float64]
    time_high: npt.NDArray[np.float64]
    stepless: bool = False
    sum: npt.NDArray[np.float64] | None = None
    pinf: npt.NDArray[np.int64] | None = None
    ninf: npt.NDArray[np.int64] | None = None


@dataclass(frozen=True, slots=True)
class Series:
    """One metric of one run: its points, in logging order.

    ``points.seq`` numbers the run's logging calls (strictly increasing;
    points of different metrics with one ``seq`` came from one call).
    """

    run_id: str
    name: str
    points: ChunkColumns


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """A series' figures from its chunk summaries alone (no point is decoded).

    ``min``/``max``/``sum`` ignore NaN (None when every value is NaN; ``sum``
    is NaN when +Inf and −Inf met); ``last`` is the last value, NaN included.
    Times are microseconds since the epoch.
    """

    count: int
    nan_count: int
    min: float | int | None
    max: float | int | None
    sum: float | int | None
    last: float | int | None
    seq_first: int
    seq_last: int
    step_first: int | None
    step_last: int | None
    time_first: int
    time_last: int
    chunks: int


class MaintenancePass(ABC):
    """A resumable piece of maintenance (retention, downsampling), done in short transactions."""

    @property
    @abstractmethod
    def done(self) -> bool:
        """Whether the pass has nothing left to do."""

    @abstractmethod
    def counters(self) -> dict[str, int]:
        """What the pass has done so far (e.g. ``removed_records``, ``downsampled_rows``)."""


class StoreWriter(ABC):
    """The store's one write path: batches of events, each in one transaction.

    Created by :meth:`Store.open_writer`; opened once (``await open()``), then
    written to by one task at a time, then closed (``await aclose()``).
    """

    @abstractmethod
    async def open(self) -> None:
        """Create the store or bring its schema up to date, and connect.

        Raises:
            Exception: the store cannot be created or opened.
        """

    @abstractmethod
    async def write(self, batch: Sequence[Any], *, ledger: CommitLedger | None = None) -> list[tuple[str, str]]:
        """Store a batch of events in one transaction: all of it, or nothing.

        Args:
            batch: events of any kind in pipeline order, with the ingest
                receipts of the batches they came in (a receipt commits
                together with its events).
            ledger: where to note what the transaction writes, before it
                commits (a live tail of this store in this process skips it;
                see :mod:`runwatch.store.ledger`), or ``None``.

        Returns:
            The ``(run_id, batch_id)`` keys of the receipts committed.

        Raises:
            StoreUnavailable: the store could not take it now (locked, full
                or failing disk); nothing was stored, the same batch may be
                written again later.
            Exception: the batch holds an event the store can never take
                (see :meth:`unstorable`); nothing was stored.
        """

    @abstractmethod
    def unstorable(self, batch: Sequence[Any]) -> list[int]:
        """The positions of the events of ``batch`` that no transaction could ever store."""

    @abstractmethod
    async def aclose(self) -> None:
        """Disconnect. Calling it again does nothing."""

    def counters(self) -> dict[str, int]:
        """What the writer has stored beyond events, for the sink's statistics (``images_stored``...)."""
        return {}


class StoredRow(NamedTuple):
    """One stored row read back: its stream (a table), its position there, the event it holds."""

    stream: str
    position: int
    event: Any


class RunProgress(NamedTuple):
    """A live run's progress: its last heartbeat and counters."""

    run_id: str
    last_heartbeat: float
    total_steps: int
    total_episodes: int

    def heartbeat(self) -> Heartbeat:
        """The heartbeat that leaves a run's record with this last heartbeat and these counters."""
        counters = {"total_steps": int(self.total_steps), "total_episodes": int(self.total_episodes)}
        return Heartbeat(self.run_id, float(self.last_heartbeat), counters)


class RunPage(NamedTuple):
    """A page of one run's rows of a stream: those that decode, how many were read, how many did not
    decode, and where the next page starts (a page that read fewer rows than asked is the stream's end)."""

    rows: list[StoredRow]
    read: int
    undecodable: int
    next_start: int


class TailRead(NamedTuple):
    """What one read of a :class:`StoreTail` found after its cursors (nothing moved yet).

    Attributes:
        rows: per stream, the rows found, in position order, as events.
        ends: per stream, the cursor that takes every row found (and any gap after them).
        progress: live runs whose heartbeat moved since the tail last took one.
        more: a window was full: read again without waiting for a commit.
        undecodable: rows skipped because they no longer decode.
        skipped: positions of the ``skip`` ranges the ends pass (the caller's own rows, not read).
    """

    rows: dict[str, list[StoredRow]]
    ends: dict[str, int]
    progress: list[RunProgress]
    more: bool
    undecodable: int
    skipped: int = 0


class StoreTail(ABC):
    """Follows what other connections commit to a store, forward from a cursor per stream.

    The streams are the store's append-only sequences (metric rows, events,
    state patches); a run's progress (heartbeat, counters) is read from its
    run record. A tail opens at the store's end: what was committed before is
    history, not live. Cursors only move forward (:meth:`advance`), so a row
    is read once unless the caller holds it back. One caller at a time;
    :meth:`read` blocks (a worker thread), :meth:`changed` is cheap enough
    for the event loop.
    """

    #: Per stream, the first position not taken yet.
    positions: dict[str, int]

    @property
    @abstractmethod
    def streams(self) -> tuple[str, ...]:
        """The streams :meth:`read` returns, in the order to take them."""

    @property
    @abstractmethod
    def opened(self) -> bool:
        """Whether :meth:`open` succeeded (and :meth:`close` was not called since)."""

    @abstractmethod
    def open(self) -> None:
        """Connect and put the cursors at the store's end.

        Raises:
            StoreUnavailable: the store does not exist yet, or cannot be read now.
        """

    @abstractmethod
    def close(self) -> None:
        """Disconnect. Calling it again does nothing."""

    @abstractmethod
    def changed(self) -> bool:
        """Whether another connection may have committed since the last :meth:`read` (``True`` when unsure).

        Costs no read of the data and never waits on a lock.
        """

    @abstractmethod
    def read(self, skip: Sequence[tuple[str, int, int]] = ()) -> TailRead:
        """Every stream forward from its cursor, in one snapshot (the cursors do not move).

        Args:
            skip: ``(stream, first, last)`` ranges of positions known to be the
                caller's own (its ledger's settled ranges): not read, not
                returned; the ends still pass them.

        Raises:
            StoreUnavailable: the store is busy or gone (read again later).
        """

    def advance(self, stream: str, position: int) -> None:
        """Move ``stream``'s cursor to ``position`` (the first position not taken)."""
        self.positions[stream] = position

    @abstractmethod
    def took_heartbeat(self, run_id: str, value: float) -> None:
        """The heartbeat of ``run_id`` up to ``value`` is dealt with (later reads report only newer ones)."""
