"""The work datacat's daemon does on its own schedule, done in the client's process.

* Rounds of totals: counters and histograms (``_aggregate``) are sent as one point per
  series every ``aggregate_interval_seconds``, and a last time before the session ends
  or the client closes.
* Keep-alives: each session the client created on a datacat server gets a heartbeat every
  ``keepalive_interval_seconds`` (the daemon's 15 s), so the server sees the process
  alive until it ends; a killed process then shows as suspended.

One daemon thread per client (a :class:`~runwatch.client._ticker.Ticker`), started only
when there is such work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ._aggregate import MetricAggregator
from ._operations import Aggregated
from ._ticker import Ticker

__all__ = ["PeriodicWork"]

#: ``send(session_id, operation, raise_errors)``: sends (or queues) one operation.
Send = Callable[[str, dict[str, Any], bool], None]


class PeriodicWork:
    """A client's rounds of totals and keep-alive heartbeats.

    Args:
        send: sends one operation; with ``raise_errors`` False it logs failures instead.
        aggregate_interval_seconds: the time between two rounds of totals.
        keepalive_interval_seconds: the time between two keep-alives (``None``: none).
    """

    def __init__(self, send: Send, aggregate_interval_seconds: float, keepalive_interval_seconds: float | None) -> None:
        self._send = send
        self.aggregates = MetricAggregator()
        # A round of totals is sent whole, never interleaved with a session's final round at its end.
        self._lock = threading.Lock()
        self.keepalive: set[str] = set()
        tasks: list[tuple[float, Callable[[], None]]] = [(aggregate_interval_seconds, self.send_totals)]
        if keepalive_interval_seconds is not None:
            tasks.append((keepalive_interval_seconds, self.send_keepalives))
        self._ticker = Ticker(tasks, name="runwatch-client-periodic")

    def add(self, session_id: str, name: str, metric: Aggregated) -> None:
        """Count a counter delta or a histogram sample of the session."""
        if metric.kind == "counter":
            self.aggregates.add_counter(session_id, name, metric.tags, metric.amount)
        else:
            self.aggregates.add_histogram(
                session_id,
                name,
                metric.tags,
                metric.amount,
                bounds=metric.bounds,
                unit=metric.unit,
                metadata=metric.metadata,
            )
        self._ticker.start()

    def keep_alive(self, session_id: str) -> None:
        """Send keep-alive heartbeats for the session until :meth:`release`."""
        self.keepalive.add(session_id)
        self._ticker.start()

    def send_totals(self) -> None:
        """One round of totals for every session (failures are logged: the next round sends them again)."""
        for session_id in self.aggregates.sessions():
            with self._lock:
                self._send_totals_of(session_id, raise_errors=False)

    def send_keepalives(self) -> None:
        """A heartbeat for each session kept alive."""
        for session_id in list(self.keepalive):
            self._send(session_id, {"op": "heartbeat", "timestamp": time.time()}, False)

    def release(self, session_id: str, *, raise_errors: bool) -> None:
        """The session's last round of totals, then no more work for it.

        Raises:
            DatacatError: with ``raise_errors``, a total could not be sent; the
                totals are kept, so a later release sends them again.
        """
        with self._lock:
            self._send_totals_of(session_id, raise_errors=raise_errors)
            self.aggregates.forget(session_id)
        self.keepalive.discard(session_id)

    def stop(self, timeout: float) -> None:
        """Stop the thread (a round in progress finishes within ``timeout`` seconds)."""
        self._ticker.stop(timeout)

    def _send_totals_of(self, session_id: str, *, raise_errors: bool) -> None:
        for operation in self.aggregates.snapshot(session_id, time.time()):
            self._send(session_id, operation, raise_errors)
