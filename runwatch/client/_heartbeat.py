"""Hang detection in the application's process: a pure watch and the thread that runs it.

The application calls ``heartbeat()`` from its main loop. When no heartbeat comes for
``timeout`` seconds, the monitor logs one ``application_appears_hung`` event; when
heartbeats resume, one ``application_recovered`` event. Servers set a session's ``hung``
flag from those event names. The events have the fields datacat's daemon gives them
(category ``error`` / ``info``, labels, message, ``data.seconds_since_heartbeat`` and
``data.last_heartbeat``) with group ``runwatch.client`` and runwatch's level
``warning`` / ``info``; ``data.detected_by`` is ``client``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._wire import rfc3339

if TYPE_CHECKING:
    from typing import Self

__all__ = ["HEARTBEAT_SEND_INTERVAL_SECONDS", "HeartbeatClient", "HeartbeatMonitor", "HeartbeatWatch"]

logger = logging.getLogger("runwatch.client")

#: heartbeat() sends at most one heartbeat to the server per this interval.
HEARTBEAT_SEND_INTERVAL_SECONDS = 1.0


class HeartbeatWatch:
    """Decides when an application looks hung and when it recovered (pure; time is passed in).

    Args:
        timeout_seconds: no heartbeat for this long means hung.
        now: the current time (any monotonic clock, in seconds).
    """

    def __init__(self, timeout_seconds: float, now: float) -> None:
        if timeout_seconds <= 0:
            raise ValueError(f"timeout must be positive, got {timeout_seconds!r}")
        self.timeout_seconds = timeout_seconds
        self.last_beat = now
        self.hung = False
        self.paused = False

    def beat(self, now: float) -> None:
        """Record a heartbeat at ``now`` (a heartbeat also ends a pause)."""
        self.last_beat = now
        self.paused = False

    def pause(self) -> None:
        """Stop judging until :meth:`resume` or the next :meth:`beat`."""
        self.paused = True

    def resume(self, now: float) -> None:
        """Judge again, counting the silence from ``now``."""
        self.last_beat = now
        self.paused = False

    def check(self, now: float) -> str | None:
        """``"hung"`` once when heartbeats stop for the timeout, ``"recovered"`` once when they resume.

        While paused there is no verdict either way.
        """
        if self.paused:
            return None
        late = now - self.last_beat >= self.timeout_seconds
        if late and not self.hung:
            self.hung = True
            return "hung"
        if self.hung and not late:
            self.hung = False
            return "recovered"
        return None


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class HeartbeatClient(Protocol):
    """What a :class:`HeartbeatMonitor` needs of its client (a :class:`~runwatch.client.DatacatClient`)."""

    #: The client's running monitors by session (its ``pause_heartbeat_monitoring`` finds them here).
    _monitors: dict[str, HeartbeatMonitor]

    def heartbeat(self, session_id: str) -> Any:
        """Tell the server the session's application is alive."""
        ...

    def log_event(
        self,
        session_id: str,
        name: str,
        category: str | None = None,
        group: str | None = None,
        labels: list[str] | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        level: str | None = None,
    ) -> Any:
        """Record an event of the session."""
        ...


class HeartbeatMonitor:
    """Watches a session's heartbeats from a daemon thread and logs hang and recovery events.

    Args:
        client: the client that sends the events and heartbeats.
        session_id: the session watched.
        timeout: seconds without a heartbeat that mean hung.
        check_interval: seconds between two checks.
        clock: the monotonic clock (tests pass their own).

    Raises:
        ValueError: ``timeout`` or ``check_interval`` is not a positive number.
    """

    def __init__(
        self,
        client: HeartbeatClient,
        session_id: str,
        timeout: float = 60,
        check_interval: float = 5,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.timeout = _positive_seconds("timeout", timeout)
        self.check_interval = _positive_seconds("check_interval", check_interval)
        self._clock = clock
        self._wall_clock = time.time  # for the last heartbeat's time in the hang event
        self._lock = threading.Lock()
        self._watch = HeartbeatWatch(self.timeout, clock())
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._last_sent = -math.inf

    def start(self) -> Self:
        """Start watching (the silence counts from now); returns the monitor."""
        self.stop()
        self.client._monitors[self.session_id] = self  # for DatacatClient.pause_heartbeat_monitoring
        with self._lock:
            self._watch = HeartbeatWatch(self.timeout, self._clock())
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._watch, self._stop, self._wake),
            name=f"runwatch-heartbeat-{self.session_id}",
            daemon=True,
        )
        self._thread.start()
        return self

    def beat(self, now: float | None = None) -> None:
        """Record a heartbeat locally (no request); a hung session's recovery is logged at once."""
        with self._lock:
            self._watch.beat(self._clock() if now is None else now)
            hung = self._watch.hung
        if hung:
            self._wake.set()  # log the recovery now, not at the next check

    def heartbeat(self) -> None:
        """Record a heartbeat and tell the server (at most once per second; errors are logged, not raised)."""
        now = self._clock()
        self.beat(now)
        if now - self._last_sent >= HEARTBEAT_SEND_INTERVAL_SECONDS:
            self._last_sent = now
            try:
                self.client.heartbeat(self.session_id)
            except Exception as exc:  # a heartbeat must never break the application's loop
                logger.warning("runwatch client: cannot send a heartbeat for %s: %s", self.session_id, exc)

    def pause(self) -> None:
        """Stop judging (a long blocking step ahead) until :meth:`resume` or the next heartbeat."""
        with self._lock:
            self._watch.pause()

    def resume(self) -> None:
        """Judge again; the silence counts from now."""
        with self._lock:
            self._watch.resume(self._clock())

    def stop(self) -> None:
        """Stop the thread (waits for it); idempotent."""
        thread, self._thread = self._thread, None
        if self.client._monitors.get(self.session_id) is self:
            del self.client._monitors[self.session_id]
        if thread is not None:
            self._stop.set()
            self._wake.set()
            if thread is not threading.current_thread():
                thread.join(10.0)

    def is_running(self) -> bool:
        """Whether the monitor's thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _run(self, watch: HeartbeatWatch, stop: threading.Event, wake: threading.Event) -> None:
        hung_at = 0.0
        while not stop.is_set():
            wake.wait(self.check_interval)
            wake.clear()
            if stop.is_set():
                return
            now = self._clock()
            with self._lock:
                verdict = watch.check(now)
                silent = now - watch.last_beat
            if verdict == "hung":
                hung_at = now - silent
                data = {
                    "last_heartbeat": rfc3339(math.floor(self._wall_clock() - silent)),
                    "seconds_since_heartbeat": int(silent),
                    "timeout_seconds": watch.timeout_seconds,
                }
                self._log(
                    "application_appears_hung",
                    data,
                    level="warning",
                    category="error",
                    labels=["heartbeat", "hung"],
                    message=f"Application has not sent heartbeat for {int(silent)} seconds",
                )
            elif verdict == "recovered":
                self._log(
                    "application_recovered",
                    {"hung_seconds": round(now - hung_at, 3)},
                    level="info",
                    category="info",
                    labels=["heartbeat", "recovery"],
                    message="Application heartbeat resumed after hang",
                )

    def _log(
        self, name: str, data: dict[str, Any], *, level: str, category: str, labels: list[str], message: str
    ) -> None:
        try:
            self.client.log_event(
                self.session_id,
                name,
                category,
                "runwatch.client",
                labels,
                message,
                {**data, "detected_by": "client"},
                level=level,
            )
        except Exception as exc:  # the monitor must outlive a server that is down
            logger.warning("runwatch client: cannot log %s for session %s: %s", name, self.session_id, exc)

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<HeartbeatMonitor {self.session_id} timeout={self.timeout:g}s {state}>"
