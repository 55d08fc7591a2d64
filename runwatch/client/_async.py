"""AsyncSession: datacat's non-blocking session, on runwatch's bounded queue and sender."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._client import DatacatClient
from ._heartbeat import HeartbeatMonitor
from ._session import Session, Timer

__all__ = ["AsyncSession"]


class AsyncSession:
    """A session whose logging calls never wait: they are queued and sent by a background thread.

    Every logging call checks its arguments (``TypeError``/``ValueError`` at the
    call), queues the call and returns ``None`` at once. The queue holds at most
    ``queue_size`` calls; when it is full the newest call is dropped and counted
    (``drop_on_full=True``, as in datacat) or the call waits for room. Calls are
    delivered in batches, each exactly once by batch id on a runwatch server;
    runwatch's own trouble (server away, queue full) never raises here: see
    :meth:`get_stats`. ``log_exception()`` captures the exception at the call.

    Args:
        session: the session to send for. A blocking session is handed over to a
            new non-blocking client of the same server (it stops working itself).
        queue_size: the queue's bound, in calls.
        drop_on_full: drop the newest call when the queue is full (``False``: wait).
    """

    def __init__(self, session: Session, queue_size: int = 10_000, drop_on_full: bool = True) -> None:
        client = session.client
        when_full = "drop_newest" if drop_on_full else "block"
        if client.blocking or client.max_queue != queue_size or client.options.when_full != when_full:
            queued = client._derive(blocking=False, max_queue=queue_size, when_full=when_full)
            session._release()
            session = Session(queued, session.session_id, owns_client=True)
        self.session = session
        self.drop_on_full = drop_on_full

    @property
    def session_id(self) -> str:
        """The session's id."""
        return self.session.session_id

    @property
    def client(self) -> DatacatClient:
        """The non-blocking client that sends the calls."""
        return self.session.client

    @property
    def running(self) -> bool:
        """Whether calls are still taken (``False`` once ended)."""
        return not self.session._ended

    @property
    def sent_count(self) -> int:
        """Calls delivered so far."""
        return self.client.statistics().sent

    @property
    def dropped_count(self) -> int:
        """Calls given up so far (a full queue, refused by the server, after the end)."""
        return sum(self.client.statistics().dropped.values())

    # -- logging: queued, never waits ------------------------------------------------

    def update_state(self, state: Mapping[str, Any]) -> None:
        """Queue a deep merge of ``state`` into the session's state."""
        self.session.update_state(state)

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
    ) -> None:
        """Queue an event (see :meth:`DatacatClient.log_event`)."""
        self.session.log_event(name, category, group, labels, message, data, stacktrace, level)

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
    ) -> None:
        """Queue one value of metric ``name`` (see :meth:`DatacatClient.log_metric`)."""
        self.session.log_metric(name, value, tags, metric_type, count, unit, metadata, delta)

    def log_gauge(
        self,
        name: str,
        value: float,
        unit: str | None = None,
        tags: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue a gauge value (datacat's AsyncSession order: unit before tags)."""
        self.session.log_metric(name, value, tags, "gauge", unit=unit, metadata=metadata)

    def log_counter(self, name: str, delta: float = 1, tags: list[str] | None = None) -> None:
        """Add ``delta`` to the counter ``name`` (totals are sent periodically)."""
        self.session.log_counter(name, delta, tags)

    def log_histogram(
        self,
        name: str,
        value: float,
        unit: str | None = None,
        tags: list[str] | None = None,
        buckets: list[float] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Count ``value`` in the histogram ``name`` (see :meth:`Session.log_histogram`)."""
        self.session.log_histogram(name, value, unit, tags, buckets, metadata)

    def log_timer(
        self, name: str, duration: float, count: int | None = None, tags: list[str] | None = None, unit: str = "seconds"
    ) -> None:
        """Queue a duration as a timer metric."""
        self.session.log_timer(name, duration, count, tags, unit)

    def timer(self, name: str, count: int | None = None, unit: str = "seconds", tags: list[str] | None = None) -> Timer:
        """A context manager timing its block (datacat's AsyncSession order: unit before tags)."""
        return Timer(self, name, count, tags, unit)

    def log_exception(self, exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> None:
        """Queue the exception being handled (captured now, not in the sender) or ``exc_info``."""
        self.session.log_exception(exc_info, extra_data)

    # -- liveness -----------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Signal that the application is alive (queued; see :meth:`Session.heartbeat`)."""
        self.session.heartbeat()

    def start_heartbeat_monitor(self, timeout: float = 60, check_interval: float = 5) -> HeartbeatMonitor:
        """Start the hang monitor (see :meth:`Session.start_heartbeat_monitor`)."""
        return self.session.start_heartbeat_monitor(timeout, check_interval)

    def stop_heartbeat_monitor(self) -> None:
        """Stop the hang monitor."""
        self.session.stop_heartbeat_monitor()

    def pause_heartbeat_monitoring(self) -> dict[str, Any]:
        """Pause hang detection until resumed or the next heartbeat."""
        return self.session.pause_heartbeat_monitoring()

    def resume_heartbeat_monitoring(self) -> dict[str, Any]:
        """Resume hang detection; the silence counts from now."""
        return self.session.resume_heartbeat_monitoring()

    # -- waiting ------------------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """``{"sent", "dropped", "queued"}``: calls delivered, given up, and waiting."""
        stats = self.client.statistics()
        return {"sent": stats.sent, "dropped": sum(stats.dropped.values()), "queued": stats.queued}

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to ``timeout`` seconds until the calls made so far are delivered; whether they are."""
        return self.session.flush(timeout)

    def get_details(self) -> dict[str, Any]:
        """The session document as the server has it (after delivering what is queued)."""
        return self.session.get_details()

    def shutdown(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """Deliver what is queued (up to ``timeout`` seconds), end the session and stop.

        Returns:
            The server's reply to the end, or ``None`` when the queue was not
            delivered in time (the rest, and the end, are then spooled or
            dropped and counted at close).
        """
        return self.session._end(timeout)

    def end(self) -> dict[str, Any] | None:
        """The same as :meth:`shutdown` with its default timeout."""
        return self.shutdown()

    def __repr__(self) -> str:
        return f"<AsyncSession {self.session_id}{'' if self.running else ' ended'}>"
