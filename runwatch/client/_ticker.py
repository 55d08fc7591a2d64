"""A daemon thread that runs a client's periodic work: aggregate totals, keep-alive heartbeats.

datacat's daemon does this work in its own process; runwatch's client does it on one
thread per client, started only when there is periodic work, stopped at close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ._errors import describe

__all__ = ["Ticker"]

logger = logging.getLogger("runwatch.client")


class Ticker:
    """Runs each task every ``interval`` seconds on one daemon thread.

    Args:
        tasks: ``(interval_seconds, task)`` pairs; a task that raises is logged and runs again next time.
        name: the thread's name.
    """

    def __init__(self, tasks: list[tuple[float, Callable[[], None]]], name: str) -> None:
        self._tasks = tasks
        self._name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread, once (later calls do nothing)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds for a task in progress."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        start = time.monotonic()
        due = [start + interval for interval, _ in self._tasks]
        while not self._stop.wait(max(0.0, min(due) - time.monotonic())):
            now = time.monotonic()
            for index, (interval, task) in enumerate(self._tasks):
                if now >= due[index]:
                    due[index] = now + interval
                    try:
                        task()
                    except Exception as exc:  # periodic work must outlive one failure
                        logger.warning("runwatch client: periodic %s failed: %s", task.__name__, describe(exc))
