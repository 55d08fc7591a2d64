"""The ``webhook`` sink: each notification POSTed as JSON, retried with backoff."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import orjson
from pydantic import Field, ValidationInfo, field_validator

from ...pipeline.component import ComponentContext
from .base import Notifier, NotifierOptions, logger, tick_interval
from .outbox import Delivery, Outbox
from .policy import Notification

if TYPE_CHECKING:
    import httpx


class WebhookNotifier(Notifier):
    """POSTs each notification as JSON to ``url``, retrying with capped exponential backoff.

    Deliveries never wait on a receiver for long: notifications go into a
    bounded outbox, and each ``tick``/``flush`` makes one round of at most
    ``max_concurrent_requests`` attempts, each cut off after
    ``timeout_seconds``; retries wait for later ticks, never in a sleep. So
    a dead or slow receiver holds this sink for at most ``timeout_seconds``
    per tick, and only this sink's input buffer fills meanwhile.

    A failed attempt (connection error, timeout, HTTP 5xx, 408 or 429) is
    retried at a later tick after ``backoff_initial_seconds``, doubling up to
    ``backoff_max_seconds``, at most ``max_retries`` times; other 4xx answers
    are not retried. Every drop is counted by reason (``outbox_full``,
    ``retries_exhausted``, ``rejected``, ``shutdown``, ``error``) and logged.
    On close, what is pending is retried at once, without waiting out
    backoffs, for at most ``timeout_seconds``; the rest is dropped. Header values
    (e.g. a bearer token) and the URL's path and query are never logged.

    Example::

        [sinks.pager]
        type = "webhook"
        inputs = ["alerts"]
        url = "https://hooks.example.org/runwatch"
        headers = { Authorization = "Bearer ..." }

    Options:
        url: the ``http``/``https`` endpoint (required).
        headers: extra request headers, e.g. ``{"Authorization": "Bearer ..."}``.
        timeout_seconds: the longest one attempt may take.
        max_retries: retries after the first attempt.
        backoff_initial_seconds, backoff_max_seconds: the retry waits.
        max_concurrent_requests: attempts in flight at once.
        max_outbox_notifications: the outbox bound.
        group_wait_seconds, repeat_interval_seconds, send_resolved,
        group_by_labels: the :class:`NotificationPolicy` settings.
    """

    class Options(NotifierOptions):
        url: str
        headers: dict[str, str] = Field(default_factory=dict, repr=False)
        timeout_seconds: float = Field(5.0, gt=0)
        max_retries: int = Field(5, ge=0)
        backoff_initial_seconds: float = Field(0.5, gt=0)
        backoff_max_seconds: float = Field(30.0, gt=0)
        max_concurrent_requests: int = Field(4, ge=1)
        max_outbox_notifications: int = Field(1000, ge=1)

        @field_validator("url")
        @classmethod
        def _check_url(cls, url: str) -> str:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
            return url

        @field_validator("backoff_max_seconds")
        @classmethod
        def _check_backoff(cls, value: float, info: ValidationInfo) -> float:
            initial = info.data.get("backoff_initial_seconds")
            if initial is not None and value < initial:
                raise ValueError(f"must be at least backoff_initial_seconds ({initial})")
            return value

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        # Retries are made at ticks: tick at least as often as the shortest backoff.
        self.tick_interval_seconds = max(
            0.01, min(tick_interval(options.group_wait_seconds), options.backoff_initial_seconds)
        )
        self.outbox = Outbox(
            max_notifications=options.max_outbox_notifications,
            max_retries=options.max_retries,
            backoff_initial_seconds=options.backoff_initial_seconds,
            backoff_max_seconds=options.backoff_max_seconds,
        )
        parts = urlsplit(options.url)
        self._safe_url = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/…"  # no path, query or userinfo
        self._client: httpx.AsyncClient | None = None
        self.delivered_notifications = 0
        self.request_attempts = 0
        self.retried_requests = 0
        self.timed_out_requests = 0
        self.failed_requests = 0

    async def start(self) -> None:
        import httpx  # imported here so that importing runwatch stays cheap

        self._client = httpx.AsyncClient(
            headers=self.options.headers,
            timeout=httpx.Timeout(self.options.timeout_seconds),
            follow_redirects=False,
        )

    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        for notification in notifications:
            body = orjson.dumps(notification.to_dict())
            dropped = self.outbox.put(Delivery(notification.group, body), now)
            if dropped is not None:
                self._count_drop("outbox_full")
        if not final:
            await self._deliver_round(now)
            return
        # Closing: retry what is left without waiting out backoffs, within one timeout.
        try:
            with anyio.move_on_after(self.options.timeout_seconds):
                while await self._deliver_round(math.inf):
                    pass
        finally:
            left = self.outbox.drop_all()
            if left:
                self._count_drop("shutdown", left, f"undelivered to {self._safe_url} at close")
            if self._client is not None:
                await self._client.aclose()
                self._client = None

    async def _deliver_round(self, now: float) -> int:
        """Attempt what is due (bounded concurrency); returns how many attempts were made."""
        due = self.outbox.take_due(now, self.options.max_concurrent_requests)
        if len(due) == 1:
            await self._attempt(due[0], now)
        elif due:
            # A task group local to this call: every attempt ends before it returns.
            async with anyio.create_task_group() as group:
                for delivery in due:
                    group.start_soon(self._attempt, delivery, now)
        return len(due)

    async def _attempt(self, delivery: Delivery, now: float) -> None:
        """One POST; a retry is scheduled from ``now`` (the round's time, as the policy's)."""
        import httpx

        client = self._client
        if client is None:
            raise RuntimeError(f"notifier {self.id} is not started (call start() first)")
        self.request_attempts += 1
        retryable, reason, problem = True, "rejected", "timeout"
        with anyio.move_on_after(self.options.timeout_seconds) as deadline:
            try:
                response = await client.post(
                    self.options.url, content=delivery.body, headers={"Content-Type": "application/json"}
                )
            except httpx.TimeoutException:
                problem = "timeout"
            except (httpx.HTTPError, OSError) as exc:
                self.failed_requests += 1
                problem = f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # e.g. a header that is not ASCII: retrying cannot help
                self.failed_requests += 1
                problem, retryable, reason = f"{type(exc).__name__}: {exc}", False, "error"
            else:
                if response.is_success:
                    self.outbox.succeeded(delivery)
                    self.delivered_notifications += 1
                    self.sent_notifications += 1
                    return
                self.failed_requests += 1
                problem = f"HTTP {response.status_code}"
                retryable = response.status_code >= 500 or response.status_code in (408, 429)
        if deadline.cancelled_caught or problem == "timeout":
            self.timed_out_requests += 1
            problem = f"no answer within {self.options.timeout_seconds:g} s"
        dropped = self.outbox.failed(delivery, now, retryable=retryable, reason=reason)
        if dropped is None:
            self.retried_requests += 1
            logger.info(
                "runwatch: notifier %s: POST to %s failed (%s); retry %d of %d",
                self.id,
                self._safe_url,
                problem,
                delivery.attempts,
                self.options.max_retries,
            )
        else:
            self._count_drop(dropped, 1, f"POST to {self._safe_url} failed ({problem})")

    def statistics(self) -> dict[str, Any]:
        stats = super().statistics()
        stats.update(
            delivered_notifications=self.delivered_notifications,
            request_attempts=self.request_attempts,
            retried_requests=self.retried_requests,
            timed_out_requests=self.timed_out_requests,
            failed_requests=self.failed_requests,
            outbox={
                "buffered": len(self.outbox),
                "max": self.outbox.max_notifications,
                "in_flight": self.outbox.in_flight,
            },
        )
        return stats
