"""The media worker: one thread that encodes images and bins histograms off the training loop.

The training thread hands over a job (a private copy of the image or the
values; see :func:`~runwatch.media.images.take_image` and
:func:`~runwatch.media.histograms.take_values`) and returns; this thread
turns it into an :class:`~runwatch.events.ImageEvent` or a
:class:`~runwatch.events.HistogramEvent` and passes that to ``emit`` (the
pipeline's intake), so the pipeline's order is: every event of the run as
the training thread made them, with each image or histogram joining when it
is ready.

The queue is bounded in jobs and in bytes: past either bound, a new job is
dropped and counted (``queue_full``), never waited for. Images beyond the
rate limit are dropped at the call, before any copy (``rate_limited``).
Bytes that are not a readable PNG or JPEG are found here and dropped,
counted (``unreadable``) and logged; so is an array whose PNG comes out
larger than :data:`~runwatch.media.images.MAX_IMAGE_BYTES` (``too_large``:
the bound on any image, embedded or remote, whose bytes a server takes).
Nothing here raises into the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np

from ..events import HistogramEvent, ImageEvent
from .histograms import bin_values
from .images import MAX_IMAGE_BYTES, ImageError, TakenImage, encode_image
from .rate import RateLimiter

__all__ = [
    "DEFAULT_MAX_QUEUED_BYTES",
    "DEFAULT_MAX_QUEUED_JOBS",
    "HistogramJob",
    "ImageJob",
    "MediaStatistics",
    "MediaWorker",
]

logger = logging.getLogger("runwatch.media")

#: Jobs waiting for the worker at most.
DEFAULT_MAX_QUEUED_JOBS: Final = 256
#: Bytes of copies waiting for the worker at most.
DEFAULT_MAX_QUEUED_BYTES: Final = 128 << 20


@dataclass(frozen=True, slots=True)
class ImageJob:
    """An image waiting to be encoded."""

    run_id: str
    timestamp: float
    name: str
    step: int | None
    caption: str | None
    image: TakenImage

    @property
    def nbytes(self) -> int:
        return self.image.nbytes


@dataclass(frozen=True, slots=True)
class HistogramJob:
    """Values waiting to be binned."""

    run_id: str
    timestamp: float
    name: str
    step: int | None
    values: np.ndarray[Any, Any]
    bins: int

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)


class MediaStatistics(NamedTuple):
    """Counters of the media worker.

    Attributes:
        queued_jobs: jobs waiting now.
        queued_bytes: bytes of their copies.
        images_encoded: images handed to the pipeline.
        histograms_binned: histograms handed to the pipeline.
        dropped: drops by reason: ``rate_limited`` (images past
            ``max_images_per_second``), ``queue_full``, ``unreadable``
            (bytes that were no PNG/JPEG), ``failed`` (an unexpected error).
        cpu_seconds: CPU time the worker thread has used.
    """

    queued_jobs: int
    queued_bytes: int
    images_encoded: int
    histograms_binned: int
    dropped: dict[str, int]
    cpu_seconds: float


class MediaWorker:
    """The thread behind ``log_image`` and ``log_histogram``.

    Args:
        emit: hands an event to the pipeline (thread-safe, never raises).
        max_images_per_second: images per run and name at most (``None``: no limit).
        max_queued_jobs: jobs waiting at most.
        max_queued_bytes: bytes of waiting copies at most.
        name: the thread's name.

    The thread starts with the first job and ends at :meth:`close`.
    """

    def __init__(
        self,
        emit: Callable[[Any], None],
        *,
        max_images_per_second: float | None = None,
        max_queued_jobs: int = DEFAULT_MAX_QUEUED_JOBS,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        name: str = "runwatch-media",
    ) -> None:
        self._emit = emit
        self._limiter = RateLimiter(max_images_per_second) if max_images_per_second is not None else None
        self.max_queued_jobs = max_queued_jobs
        self.max_queued_bytes = max_queued_bytes
        self._name = name
        self._jobs: deque[ImageJob | HistogramJob] = deque()
        self._queued_bytes = 0
        self._busy = False  # a job taken from the queue is being worked on
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # jobs arrived, or close (the worker waits on it)
        self._idle = threading.Condition(lock)  # a job is done (wait_idle waits on it)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._images_encoded = 0
        self._histograms_binned = 0
        self._dropped: dict[str, int] = {}
        self._cpu_seconds = 0.0

    # -- the caller's side --------------------------------------------------------

    def allow_image(self, run_id: str, name: str) -> bool:
        """Whether an image of ``name`` in ``run_id`` is within the rate limit now; counts the drop if not.

        Called before the image is copied, so a dropped frame costs almost nothing.
        """
        limiter = self._limiter
        if limiter is None:
            return True
        with self._cond:
            if limiter.allow((run_id, name), time.monotonic()):
                return True
            self._count_drop("rate_limited")
        return False

    def submit(self, job: ImageJob | HistogramJob) -> bool:
        """Queue ``job`` without waiting; ``False`` (counted as ``queue_full``) when a bound is reached or closed."""
        nbytes = job.nbytes
        with self._cond:
            if self._closed:
                self._count_drop("closed")
                return False
            jobs = self._jobs
            if jobs and (len(jobs) >= self.max_queued_jobs or self._queued_bytes + nbytes > self.max_queued_bytes):
                self._count_drop("queue_full")
                return False
            jobs.append(job)
            self._queued_bytes += nbytes
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif len(jobs) == 1:
                self._cond.notify()
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every job queued before the call was handed to the pipeline.

        Returns:
            ``False`` if ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued jobs (up to ``timeout`` seconds) and stop the thread. Idempotent."""
        self.wait_idle(timeout)
        with self._cond:
            self._closed = True
            left = len(self._jobs)
            if left:
                self._dropped["closed"] = self._dropped.get("closed", 0) + left
                self._jobs.clear()
                self._queued_bytes = 0
            self._cond.notify_all()
            self._idle.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def statistics(self) -> MediaStatistics:
        """The worker's counters now."""
        with self._cond:
            return MediaStatistics(
                len(self._jobs),
                self._queued_bytes,
                self._images_encoded,
                self._histograms_binned,
                dict(self._dropped),
                self._cpu_seconds,
            )

    def _count_drop(self, reason: str) -> None:
        # Under self._cond.
        self._dropped[reason] = self._dropped.get(reason, 0) + 1

    # -- the worker's side --------------------------------------------------------

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                self._busy = False
                self._idle.notify_all()
                while not self._jobs and not self._closed:
                    cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._queued_bytes -= job.nbytes
                self._busy = True
            started = time.thread_time()
            outcome = self._work(job)
            spent = time.thread_time() - started
            with cond:
                self._cpu_seconds += spent
                if outcome is not None:
                    self._count_drop(outcome)
                elif isinstance(job, ImageJob):
                    self._images_encoded += 1
                else:
                    self._histograms_binned += 1

    def _work(self, job: ImageJob | HistogramJob) -> str | None:
        """Turn ``job`` into its event and emit it; the reason of a drop, or ``None``."""
        try:
            if isinstance(job, ImageJob):
                try:
                    encoded = encode_image(job.image)
                except ImageError as exc:
                    logger.warning("runwatch: image %r of run %r dropped: %s", job.name, job.run_id, exc)
                    return "unreadable"
                if len(encoded.data) > MAX_IMAGE_BYTES:
                    logger.warning(
                        "runwatch: image %r of run %r dropped: its PNG takes %d bytes (an image may have %d)",
                        job.name,
                        job.run_id,
                        len(encoded.data),
                        MAX_IMAGE_BYTES,
                    )
                    return "too_large"
                event: Any = ImageEvent(
                    job.run_id,
                    job.timestamp,
                    job.name,
                    job.step,
                    encoded.data,
                    encoded.mime,
                    encoded.width,
                    encoded.height,
                    encoded.digest,
                    job.caption,
                )
            else:
                binned = bin_values(job.values, job.bins)
                event = HistogramEvent(
                    job.run_id,
                    job.timestamp,
                    job.name,
                    job.step,
                    binned.size,
                    binned.nan_count,
                    binned.posinf_count,
                    binned.neginf_count,
                    binned.min,
                    binned.max,
                    binned.sum,
                    binned.low,
                    binned.high,
                    binned.counts,
                )
            self._emit(event)
        except Exception:  # runwatch's own trouble: counted and logged, the thread goes on
            logger.exception("runwatch: the media worker failed on %r of run %r", job.name, job.run_id)
            return "failed"
        return None
