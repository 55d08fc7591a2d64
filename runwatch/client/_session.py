"""Session: the high-level API over a DatacatClient, and create_session()."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

from ._checks import check_session_id
from ._client import DatacatClient
from ._heartbeat import HEARTBEAT_SEND_INTERVAL_SECONDS, HeartbeatMonitor

__all__ = ["Session", "create_session"]

logger = logging.getLogger("runwatch.client")


class Session:
    """One application session: the seed's high-level API over a :class:`DatacatClient`.

    Made by :func:`create_session`. Use it as a context manager to end the
    session on exit (an exception leaving the block is logged first).

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

    def update_state(self, state: Mapping[str, Any]) -> None:
        """Deep-merge ``state`` into the session's state (objects merge, lists and scalars replace, None deletes)."""
        self._client.update_state(self._session_id, state)

    def log_event(self, name: str, data: Mapping[str, Any] | None = None, level: str = "info") -> None:
        """Record an event ``name`` with JSON ``data``."""
        self._client.log_event(self._session_id, name, data, level)

    def log_metric(self, name: str, value: float, tags: list[str] | None = None) -> None:
        """Record one value of metric ``name`` with optional string tags."""
        self._client.log_metric(self._session_id, name, value, tags)

    def log_exception(self, extra_data: Mapping[str, Any] | None = None, exc_info: Any = None) -> None:
        """Record the exception being handled (or ``exc_info``) with its traceback and ``extra_data``."""
        self._client.log_exception(self._session_id, exc_info, extra_data)

    def heartbeat(self) -> None:
        """Signal that the application is alive.

        The heartbeat monitor sees every call; the server gets at most one
        heartbeat per ``HEARTBEAT_SEND_INTERVAL_SECONDS``, so calling this in a
        tight loop costs no request per call.
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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until earlier calls are delivered (non-blocking mode); see :meth:`DatacatClient.flush`."""
        return self._client.flush(timeout)

    def get(self) -> dict[str, Any]:
        """The session as the server has it."""
        return self._client.get_session(self._session_id)

    def end(self) -> None:
        """Stop the heartbeat monitor, end the session and close the client this session made. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self.stop_heartbeat_monitor()
        try:
            self._client.end_session(self._session_id)
        finally:
            if self._owns_client:
                self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and isinstance(exc, Exception) and not self._ended:
            try:
                self.log_exception(exc_info=(exc_type, exc, tb))
            except Exception as error:  # the original exception matters more
                logger.warning("runwatch client: cannot log the exception: %s", error)
        self.end()

    def __repr__(self) -> str:
        return f"<Session {self._session_id}{' ended' if self._ended else ''}>"


def create_session(base_url: str, *, token: str | None = None, blocking: bool = True, **meta: Any) -> Session:
    """Create a session on the server at ``base_url`` and return it.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8080``.
        token: a bearer token, when the server requires one.
        blocking: ``False`` queues calls and sends them in batches (see the package docs).
        meta: ``product``, ``version``, ``hostname``, ``metadata``,
            ``heartbeat_timeout_seconds``; other keywords go into ``metadata``.

    Raises:
        DatacatError: the server refused or is unreachable.
    """
    client = DatacatClient(base_url, token, blocking=blocking)
    try:
        session_id = client.create_session(**meta)
    except BaseException:
        client.close(0)
        raise
    return Session(client, session_id, owns_client=True)
