"""Session and Timer: datacat's high-level API over a DatacatClient."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from ._checks import check_session_id
from ._client import DatacatClient
from ._errors import DatacatError
from ._heartbeat import HEARTBEAT_SEND_INTERVAL_SECONDS, HeartbeatMonitor

__all__ = ["MetricLogger", "Session", "Timer"]

logger = logging.getLogger("runwatch.client")


class Session:
    """One application session: datacat's ``Session`` (and the seed's) over a :class:`DatacatClient`.

    Made by :func:`create_session`. Calls answer the server's reply (a dict) in
    blocking mode and ``None`` in non-blocking mode. Use it as a context manager
    to end the session on exit (an exception leaving the block is logged first).

    Args:
        client: the client that sends the calls.
        session_id: the session's id.
        owns_client: close ``client`` in :meth:`end`.
    """

    def __init__(self, client: DatacatClient, session_id: str, *, owns_client: bool = False) -> None:
        check_session_id(session_id)
        self._client = client
        self._session_id = session_id
        self._owns_client = owns_client
        self._ended = False
        self._clock: Callable[[], float] = time.monotonic  # tests may drive the monitor's time
        self._last_heartbeat_sent = -math.inf
        self._heartbeat_monitor: HeartbeatMonitor | None = None

    @property
    def session_id(self) -> str:
        """The session's id (a string)."""
        return self._session_id

    @property
    def client(self) -> DatacatClient:
        """The client this session sends through."""
        return self._client

    # -- state, events, exceptions ----------------------------------------------------

    def update_state(self, state: Mapping[str, Any]) -> dict[str, Any] | None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        return self._client.update_state(self._session_id, state)

    def log_event(
        self,
        name: str,
        category: str | Mapping[str, Any] | None = None,
        group: str | None = None,
        labels: list[str] | None = None,
        message: str | None = None,
        data: Mapping[str, Any] | None = None,
        stacktrace: list[str] | None = None,
        level: str | None = None,
    ) -> dict[str, Any] | None:
        """Record an event (see :meth:`DatacatClient.log_event`).

        The second argument is ``category`` (a string) or, when it is a dict,
        ``data`` as in the seed (``log_event("user_action", {"action": "click"})``).
        """
        return self._client.log_event(
            self._session_id, name, category, group, labels, message, data, stacktrace, level=level
        )

    def log_exception(self, exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Record the exception being handled (or ``exc_info``) with its stack trace and ``extra_data``.

        ``log_exception(sys.exc_info())``, ``log_exception(error)`` and the seed's
        ``log_exception(extra_data={...})`` (or a dict as the first argument) all work.
        """
        return self._client.log_exception(self._session_id, exc_info, extra_data)

    # -- metrics ----------------------------------------------------------------------

    def log_metric(
        self,
        name: str,
        value: float,
        tags: list[str] | None = None,
        metric_type: str = "gauge",
        count: int | None = None,
        unit: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delta: float | None = None,
    ) -> dict[str, Any] | None:
        """Record one value of metric ``name`` (see :meth:`DatacatClient.log_metric`)."""
        return self._client.log_metric(self._session_id, name, value, tags, metric_type, count, unit, metadata, delta)

    def log_gauge(
        self, name: str, value: float, tags: list[str] | None = None, unit: str | None = None
    ) -> dict[str, Any] | None:
        """Record the current value of ``name`` (one point per call)."""
        return self.log_metric(name, value, tags, "gauge", unit=unit)

    def log_counter(self, name: str, delta: float = 1, tags: list[str] | None = None) -> dict[str, Any] | None:
        """Add ``delta`` to the counter ``name``; its running total is sent every few seconds and at the end."""
        return self.log_metric(name, 0, tags, "counter", delta=delta)

    def log_histogram(
        self,
        name: str,
        value: float,
        unit: str | None = None,
        tags: list[str] | None = None,
        buckets: list[float] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Count ``value`` in the histogram ``name`` (bucket bounds: ``buckets``, else datacat's defaults).

        The buckets, count and sum are sent every few seconds and at the end, in
        the point's ``metadata``. Unlike datacat, the caller's ``metadata`` is not changed.
        """
        extra = dict(metadata) if metadata is not None else {}
        if buckets is not None:
            extra["buckets"] = buckets
        return self.log_metric(name, value, tags, "histogram", unit=unit, metadata=extra or None)

    def log_timer(
        self,
        name: str,
        duration: float,
        count: int | None = None,
        tags: list[str] | None = None,
        unit: str = "seconds",
    ) -> dict[str, Any] | None:
        """Record a duration (``count``: how many iterations it covers)."""
        return self.log_metric(name, duration, tags, "timer", count=count, unit=unit)

    def timer(self, name: str, count: int | None = None, tags: list[str] | None = None, unit: str = "seconds") -> Timer:
        """A context manager that records the duration of its block as a timer metric."""
        return Timer(self, name, count, tags, unit)

    # -- liveness ---------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Signal that the application is alive.

        The heartbeat monitor sees every call; the server gets at most one
        heartbeat per ``HEARTBEAT_SEND_INTERVAL_SECONDS``, so calling this in a
        tight loop costs no request per call. Unlike datacat, it also works
        without a monitor (it then only tells the server).
        """
        now = self._clock()
        monitor = self._heartbeat_monitor
        if monitor is not None:
            monitor.beat(now)
        if now - self._last_heartbeat_sent >= HEARTBEAT_SEND_INTERVAL_SECONDS:
            self._last_heartbeat_sent = now
            self._client.heartbeat(self._session_id)

    def start_heartbeat_monitor(self, timeout: float = 60, check_interval: float = 5) -> HeartbeatMonitor:
        """Watch :meth:`heartbeat` from a daemon thread (see :class:`HeartbeatMonitor`).

        When no heartbeat came for ``timeout`` seconds, an event
        ``application_appears_hung`` is logged once; when heartbeats resume,
        ``application_recovered``. A running monitor is replaced.

        Args:
            timeout: seconds without a heartbeat that mean hung.
            check_interval: seconds between two checks.

        Returns:
            The running monitor.
        """
        monitor = HeartbeatMonitor(self._client, self._session_id, timeout, check_interval, clock=self._clock)
        self.stop_heartbeat_monitor()
        self._heartbeat_monitor = monitor.start()
        return monitor

    def stop_heartbeat_monitor(self) -> None:
        """Stop the heartbeat monitor, if one runs."""
        monitor, self._heartbeat_monitor = self._heartbeat_monitor, None
        if monitor is not None:
            monitor.stop()

    def pause_heartbeat_monitoring(self) -> dict[str, Any]:
        """Pause hang detection (a long blocking step ahead) until resumed or the next heartbeat."""
        return self._client.pause_heartbeat_monitoring(self._session_id)

    def resume_heartbeat_monitoring(self) -> dict[str, Any]:
        """Resume hang detection; the silence counts from now."""
        return self._client.resume_heartbeat_monitoring(self._session_id)

    # -- reading, flushing, ending ----------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until earlier calls are delivered (non-blocking mode); see :meth:`DatacatClient.flush`."""
        return self._client.flush(timeout)

    def get_details(self) -> dict[str, Any]:
        """The session document as the server has it."""
        return self._client.get_session(self._session_id)

    def get(self) -> dict[str, Any]:
        """The session document as the server has it (the same as :meth:`get_details`)."""
        return self.get_details()

    def end(self) -> dict[str, Any] | None:
        """Stop the monitor, send the counter and histogram totals, end the session, close the client it made.

        Everything logged before is on the server when ``end()`` returns, as
        with datacat. Non-blocking, that waits up to ``exit_timeout_seconds``;
        what is not delivered by then is sent (or spooled) on close, and the
        answer is ``None``. Idempotent (a second call answers ``None``).

        Returns:
            The server's reply to the end.
        """
        return self._end(self._client.exit_timeout_seconds)

    def _end(self, timeout: float) -> dict[str, Any] | None:
        if self._ended:
            return None
        self._ended = True
        self.stop_heartbeat_monitor()
        client = self._client
        delivered = True
        try:
            if client.blocking:
                return client.end_session(self._session_id)
            reply, delivered = client._end_after_flush(self._session_id, timeout)
            return reply
        finally:
            if self._owns_client:
                client.close(None if delivered else 0)  # the deadline has passed already

    def _release(self) -> None:
        """Hand the session over to another client: stop here without ending it on the server."""
        self._ended = True
        self.stop_heartbeat_monitor()
        self._client._release_session(self._session_id)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, Exception) and not self._ended:
            try:
                self.log_exception((exc_type, exc, tb))
            except Exception as error:  # the original exception matters more
                logger.warning("runwatch client: cannot log the exception: %s", error)
        self.end()

    def __repr__(self) -> str:
        return f"<Session {self._session_id}{' ended' if self._ended else ''}>"


class MetricLogger(Protocol):
    """What a :class:`Timer` logs to: a :class:`Session` or an :class:`~runwatch.client.AsyncSession`."""

    def log_metric(
        self,
        name: str,
        value: float,
        tags: list[str] | None = None,
        metric_type: str = "gauge",
        count: int | None = None,
        unit: str | None = None,
    ) -> Any:
        """Record one value of metric ``name``."""
        ...


class Timer:
    """Times the block of a ``with`` statement and logs it as a ``timer`` metric on exit.

    Args:
        session: a :class:`Session` or :class:`AsyncSession`.
        name: the metric's name.
        count: how many iterations the block covers; it can be set inside the
            block (``timer.count += 1``); logged when above 0.
        tags: the metric's tags.
        unit: ``"seconds"``, or ``"milliseconds"`` (the duration is then
            multiplied by 1000); any other unit is a label.
    """

    def __init__(
        self,
        session: MetricLogger,
        name: str,
        count: int | None = None,
        tags: list[str] | None = None,
        unit: str = "seconds",
    ) -> None:
        self.session = session
        self.name = name
        self.count = count or 0
        self.tags = tags
        self.unit = unit
        self.duration: float | None = None
        self._started = 0.0

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        elapsed = time.perf_counter() - self._started
        self.duration = elapsed * 1000 if self.unit == "milliseconds" else elapsed
        count = self.count if self.count > 0 else None
        try:
            self.session.log_metric(self.name, self.duration, self.tags, "timer", count=count, unit=self.unit)
        except DatacatError as error:
            if exc is None:
                raise
            logger.warning("runwatch client: cannot log timer %s: %s", self.name, error)  # the block's error wins
        return False
