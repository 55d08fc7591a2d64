"""The media worker thread: encodes and bins off the caller's thread, bounded, never raising."""

from __future__ import annotations

import threading

import numpy as np

from runwatch.events import HistogramEvent, ImageEvent
from runwatch.media.histograms import take_values
from runwatch.media.images import take_image
from runwatch.media.worker import HistogramJob, ImageJob, MediaWorker


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.threads: set[str] = set()

    def __call__(self, event: object) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(event)


def image_job(step: int, image: object | None = None, name: str = "frame") -> ImageJob:
    taken = take_image(np.full((4, 4, 3), step % 256, np.uint8) if image is None else image)
    return ImageJob("run", 1.0 + step, name, step, None, taken)


def test_jobs_become_events_on_the_worker_thread_in_order() -> None:
    """Images and histograms reach emit in the order submitted, from the worker's thread."""
    recorder = Recorder()
    worker = MediaWorker(recorder, name="media-test")
    try:
        for step in range(5):
            assert worker.submit(image_job(step))
            assert worker.submit(HistogramJob("run", 1.0, "q", step, take_values([step, step + 1]), 4))
        assert worker.wait_idle(10)
    finally:
        worker.close()
    kinds = [(type(event).__name__, event.step) for event in recorder.events]  # type: ignore[attr-defined]
    assert kinds == [(kind, step) for step in range(5) for kind in ("ImageEvent", "HistogramEvent")]
    assert recorder.threads == {"media-test"}
    stats = worker.statistics()
    assert (stats.images_encoded, stats.histograms_binned, stats.dropped) == (5, 5, {})
    assert stats.cpu_seconds > 0


def test_a_full_queue_drops_new_jobs_and_counts_them() -> None:
    """Past max_queued_jobs a submit returns False at once, counted as queue_full."""
    release = threading.Event()
    recorder = Recorder()

    def slow_emit(event: object) -> None:
        release.wait(10)
        recorder(event)

    worker = MediaWorker(slow_emit, max_queued_jobs=2)
    try:
        accepted = [worker.submit(image_job(step)) for step in range(6)]
        release.set()
        assert worker.wait_idle(10)
    finally:
        worker.close()
    # The first job may already be with the thread, freeing a place: 2 or 3 accepted.
    assert accepted[:2] == [True, True] and accepted[-1] is False
    dropped = worker.statistics().dropped["queue_full"]
    assert dropped == accepted.count(False) and len(recorder.events) == accepted.count(True)


def test_the_byte_bound_drops_a_copy_that_does_not_fit() -> None:
    """A job whose copy would pass max_queued_bytes behind another is dropped; alone in the queue it is taken."""
    release, busy = threading.Event(), threading.Event()

    def blocked_emit(event: object) -> None:
        busy.set()
        release.wait(10)

    worker = MediaWorker(blocked_emit, max_queued_bytes=100)
    try:
        assert worker.submit(HistogramJob("run", 1.0, "q", 0, take_values(np.zeros(1000)), 4))
        assert busy.wait(10)  # the first job is with the thread: the queue is empty again
        assert worker.submit(HistogramJob("run", 1.0, "q", 1, take_values(np.zeros(1000)), 4))  # alone: taken
        assert not worker.submit(HistogramJob("run", 1.0, "q", 2, take_values(np.zeros(1000)), 4))
    finally:
        release.set()
        worker.close()
    assert worker.statistics().dropped == {"queue_full": 1}


def test_unreadable_bytes_are_dropped_counted_and_the_worker_goes_on(caplog) -> None:
    """A PNG that does not decode is logged and counted as unreadable; the next image is encoded."""
    recorder = Recorder()
    worker = MediaWorker(recorder)
    try:
        worker.submit(image_job(0, b"\x89PNG\r\n\x1a\n-not-really"))
        worker.submit(image_job(1))
        assert worker.wait_idle(10)
    finally:
        worker.close()
    assert [event.step for event in recorder.events] == [1]  # type: ignore[attr-defined]
    assert worker.statistics().dropped == {"unreadable": 1}
    assert "dropped" in caplog.text


def test_a_failing_emit_is_counted_not_raised() -> None:
    """An error in emit counts as failed and the thread keeps working."""
    calls: list[object] = []

    def emit(event: object) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("boom")

    worker = MediaWorker(emit)
    try:
        worker.submit(image_job(0))
        worker.submit(image_job(1))
        assert worker.wait_idle(10)
    finally:
        worker.close()
    assert len(calls) == 2 and worker.statistics().dropped == {"failed": 1}


def test_the_rate_limit_counts_drops_per_run_and_name() -> None:
    """allow_image refuses past max_images_per_second per (run, name) and counts it."""
    worker = MediaWorker(lambda event: None, max_images_per_second=2)
    results = [worker.allow_image("run", "frame") for _ in range(5)]
    assert results == [True, True, False, False, False]
    assert worker.allow_image("run", "other")
    assert worker.statistics().dropped == {"rate_limited": 3}
    worker.close()


def test_submit_after_close_is_counted_not_raised() -> None:
    """A closed worker refuses jobs with False, counted as closed."""
    worker = MediaWorker(lambda event: None)
    worker.close()
    assert not worker.submit(image_job(0))
    assert worker.statistics().dropped == {"closed": 1}


def test_image_events_carry_the_encoded_image() -> None:
    """The event has the PNG, its size and digest, the caption and step of the job."""
    recorder = Recorder()
    worker = MediaWorker(recorder)
    try:
        worker.submit(ImageJob("run", 5.0, "frame", 7, "hello", take_image(np.zeros((2, 3), np.uint8))))
        assert worker.wait_idle(10)
    finally:
        worker.close()
    (event,) = recorder.events
    assert isinstance(event, ImageEvent)
    assert (event.name, event.step, event.caption, event.width, event.height) == ("frame", 7, "hello", 3, 2)
    assert event.data.startswith(b"\x89PNG") and len(event.digest) == 64


def test_histogram_events_carry_the_bins() -> None:
    """The event has the counts and summary of the job's values."""
    recorder = Recorder()
    worker = MediaWorker(recorder)
    try:
        worker.submit(HistogramJob("run", 5.0, "q", 3, take_values([0.0, 1.0, 1.0, np.nan]), 2))
        assert worker.wait_idle(10)
    finally:
        worker.close()
    (event,) = recorder.events
    assert isinstance(event, HistogramEvent)
    assert (event.size, event.nan_count, event.counts, event.low, event.high) == (4, 1, (1, 2), 0.0, 1.0)
