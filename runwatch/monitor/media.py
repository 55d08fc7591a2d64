"""Images and histograms of :class:`~runwatch.monitor.WebMonitor`: checked and copied at the call,
encoded and binned on runwatch's media thread (:mod:`runwatch.media.worker`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..config import MonitorConfig
from ..events import check_storable
from .arguments import check_media_name, integer

if TYPE_CHECKING:
    from ..media.images import TakenImage
    from ..media.worker import MediaWorker

__all__ = ["MediaLogging", "media_statistics"]

_time = time.time


def media_statistics(worker: MediaWorker | None) -> dict[str, Any]:
    """The media thread's counters (zeros before the first image or histogram)."""
    if worker is None:
        return {
            "queued_jobs": 0,
            "queued_bytes": 0,
            "images_encoded": 0,
            "histograms_binned": 0,
            "dropped": {},
            "cpu_seconds": 0.0,
        }
    return worker.statistics()._asdict()


class MediaLogging:
    """``log_image`` and ``log_histogram`` (a base of :class:`~runwatch.monitor.WebMonitor`, whose state they use)."""

    config: MonitorConfig
    _lock: threading.RLock
    _run_id: str | None
    _step: int
    _pid: int
    _media: MediaWorker | None
    _emit: Callable[[Any], None]

    def _require_run(self) -> str:
        raise NotImplementedError  # the monitor's own

    def _check_open(self) -> None:
        raise NotImplementedError  # the monitor's own

    def _drop_in_forked_child(self, event: Any) -> None:
        raise NotImplementedError  # the monitor's own

    def log_image(self, name: str, image: Any, *, step: int | None = None, caption: str | None = None) -> None:
        """Record an image of the series ``name`` (a frame, a sample, a plot).

        The call checks the image and takes a copy (about 10 µs for a
        160×144 RGB frame), so the loop may reuse its buffer at once;
        encoding to PNG happens on runwatch's media thread. Each content is
        stored once (by its SHA-256). Images past
        ``MonitorConfig.max_images_per_second`` for this name, or past the
        run's ``max_image_bytes_per_run``, are dropped and counted in
        :meth:`statistics` (``media``), never raised.

        Args:
            name: the series, e.g. ``frame`` or ``samples/real``.
            image: a numpy array (or anything with ``__array__``) of shape
                H×W, H×W×1, H×W×3 or H×W×4 (channels last), of dtype uint8,
                bool or float in [0, 1] (clipped); a PIL image; or PNG or
                JPEG bytes (stored as given).
            step: the global step it belongs to; ``None``: the run's current
                step (that of its latest logging call; it does not advance).
            caption: text shown with the image.

        Raises:
            ValueError: no active run; an empty name; an image shape other
                than the above, an empty image, a side beyond 8192 pixels,
                or bytes that are no PNG or JPEG.
            TypeError: a name, step, caption or image of the wrong type.
        """
        run_id = self._run_id
        if run_id is None:
            run_id = self._require_run()
        check_media_name(name)
        if caption is not None:
            if not isinstance(caption, str):
                raise TypeError(f"caption must be a string or None, got {type(caption).__name__}")
            check_storable("caption", caption)
        step = None if step is None else integer("step", step)
        from ..media.images import take_image  # numpy: imported by the first image, not by runwatch

        taken = take_image(image)
        self._submit_image(run_id, _time(), name, step, caption, taken)

    def _submit_image(
        self, run_id: str, now: float, name: str, step: int | None, caption: str | None, taken: TakenImage
    ) -> None:
        from ..media.worker import ImageJob

        if self._pid != os.getpid():
            self._drop_in_forked_child(None)
            return
        worker = self._media_worker()
        if worker.allow_image(run_id, name):
            at = self._step if step is None else step
            worker.submit(ImageJob(run_id, now, name, max(at, 0), caption, taken))

    def log_histogram(self, name: str, values: Any, *, step: int | None = None, bins: int = 64) -> None:
        """Record the distribution of ``values`` (weights, gradients, Q-values) as a histogram.

        The call checks the values and takes a flat copy (about a millisecond
        for a million float64; a list costs its conversion); binning happens
        on runwatch's media thread: ``bins`` equal bins over the finite
        values' range, NaN and ±Inf counted apart. Read them back with
        :meth:`DatabaseManager.get_run_histograms`.

        Args:
            name: the series, e.g. ``q_values`` or ``grad/layer1``.
            values: a numpy array, a list or tuple of numbers, or anything
                with ``__array__`` (a CPU tensor); any shape, flattened.
            step: the global step it belongs to; ``None``: the run's current step.
            bins: the number of bins, 1 to 1024.

        Raises:
            ValueError: no active run, an empty name, or ``bins`` out of range.
            TypeError: values that are not numbers, or a name, step or bins of the wrong type.
        """
        from ..media.histograms import check_bins, take_values
        from ..media.worker import HistogramJob

        run_id = self._run_id
        if run_id is None:
            run_id = self._require_run()
        check_media_name(name)
        bins = check_bins(bins)
        step = None if step is None else integer("step", step)
        copy = take_values(values)
        if self._pid != os.getpid():
            self._drop_in_forked_child(None)
            return
        at = self._step if step is None else step
        self._media_worker().submit(HistogramJob(run_id, _time(), name, max(at, 0), copy, bins))

    def _media_worker(self) -> MediaWorker:
        worker = self._media
        if worker is None:
            from ..media.worker import MediaWorker

            with self._lock:
                self._check_open()
                worker = self._media
                if worker is None:
                    worker = self._media = MediaWorker(
                        self._emit, max_images_per_second=self.config.max_images_per_second
                    )
        return worker

    def _wait_for_media(self, timeout: float | None) -> None:
        """Hand every queued image and histogram to the pipeline first (bounded by ``timeout``)."""
        worker = self._media
        if worker is not None:
            worker.wait_idle(timeout)
