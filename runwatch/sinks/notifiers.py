"""Alert notifiers: sinks that turn alert state changes into notifications.

Every notifier receives all events and acts only on :class:`AlertEvent`. What
to notify and when is decided by one pure core, :class:`NotificationPolicy`
(no I/O, no clock: ``now`` is passed in); the sinks only carry its decisions
out — to a log (:class:`LogNotifier`), an HTTP endpoint
(:class:`WebhookNotifier`) or a Python callable (:class:`CallbackNotifier`).

The policy, modelled on Prometheus Alertmanager:

- **Grouping.** Alerts are grouped by rule, run and labels (``group_by_labels``
  narrows which labels count; by default all of them do). The first change in
  a group opens a window of ``group_wait_seconds``; everything that happens in
  the group during the window goes out as one notification at its end. A
  group is never notified twice within ``group_wait_seconds``.
- **De-duplication.** An alert instance (rule + run + all labels) is notified
  as firing once, and as resolved once; repeated events in the same state are
  not notified again.
- **Flapping.** Changes inside one window collapse to the net change: an
  alert that fires, resolves and fires again within the window is notified
  once (as firing); one that fires and resolves again before its window ends
  is not notified at all.
- **Repeats.** An alert still firing ``repeat_interval_seconds`` after its
  last notification is notified again.
- **Resolutions** are notified only when ``send_resolved`` is true. A
  ``resolved`` or ``inactive`` event ends a firing alert; ``pending`` events
  are not notified.

Every notification has the same JSON-compatible form (see
:meth:`Notification.to_dict`)::

    {"status": "firing" | "resolved",
     "group": {"rule": ..., "run_id": ..., "labels": {...}},
     "severity": "critical",          # the highest among its alerts
     "timestamp": 1700000000.0,       # when it was decided
     "alerts": [{"rule", "run_id", "state", "severity", "value", "labels",
                 "annotations", "active_since", "timestamp"}, ...]}
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, cast
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import orjson
from pydantic import Field, ValidationInfo, field_validator

from ..events import AlertEvent, json_number
from ..exceptions import ConfigError
from ..pipeline.component import ComponentContext, Sink
from ..pipeline.component import Options as BaseOptions

if TYPE_CHECKING:
    import httpx

__all__ = [
    "AlertGroup",
    "CallbackNotifier",
    "Delivery",
    "LogNotifier",
    "Notification",
    "NotificationPolicy",
    "Outbox",
    "WebhookNotifier",
    "severity_level",
]

logger = logging.getLogger("runwatch.notifiers")

# -- the pure core: what to notify, and when ----------------------------------------------

#: Severity names → logging levels (case-insensitive); any other name logs as WARNING.
SEVERITY_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "low": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "medium": logging.WARNING,
    "error": logging.ERROR,
    "high": logging.ERROR,
    "major": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "page": logging.CRITICAL,
}


def severity_level(severity: str) -> int:
    """The logging level of an alert severity (unknown names give ``WARNING``)."""
    return SEVERITY_LEVELS.get(severity.lower(), logging.WARNING)


class AlertGroup(NamedTuple):
    """What a notification is about: a rule, a run and the grouping labels (sorted pairs)."""

    rule: str
    run_id: str
    labels: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in notifications."""
        return {"rule": self.rule, "run_id": self.run_id, "labels": dict(self.labels)}


def alert_to_dict(alert: AlertEvent) -> dict[str, Any]:
    """One alert's JSON form inside a notification (NaN values become ``None``)."""
    return {
        "rule": alert.rule,
        "run_id": alert.run_id,
        "state": alert.state,
        "severity": alert.severity,
        "value": json_number(alert.value),
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "active_since": alert.active_since,
        "timestamp": alert.timestamp,
    }


@dataclass(frozen=True)
class Notification:
    """One message about one group: the alerts that changed (or repeat) together.

    Attributes:
        group: the group the alerts belong to.
        status: ``firing`` when any alert in it fires, else ``resolved``.
        alerts: the alerts, firing ones first; each has state ``firing`` or ``resolved``.
        timestamp: when the policy decided to send it (seconds since the epoch).
    """

    group: AlertGroup
    status: str
    alerts: tuple[AlertEvent, ...]
    timestamp: float

    @property
    def severity(self) -> str:
        """The highest severity among the alerts that decide the status."""
        deciding = [alert for alert in self.alerts if alert.state == self.status] or list(self.alerts)
        return max(deciding, key=lambda alert: severity_level(alert.severity)).severity

    @property
    def level(self) -> int:
        """The logging level: from the severity when firing, ``INFO`` when resolved."""
        return severity_level(self.severity) if self.status == "firing" else logging.INFO

    def to_dict(self) -> dict[str, Any]:
        """The JSON-compatible form (a new dict on every call)."""
        return {
            "status": self.status,
            "group": self.group.as_dict(),
            "severity": self.severity,
            "timestamp": self.timestamp,
            "alerts": [alert_to_dict(alert) for alert in self.alerts],
        }

    def summary(self) -> str:
        """A one-line human description (for logs)."""
        labels = ",".join(f"{key}={value}" for key, value in self.group.labels)
        parts = []
        for alert in self.alerts:
            text = f"{alert.state}"
            if alert.value is not None:
                text += f" value={alert.value:g}"
            description = alert.annotations.get("summary") or alert.annotations.get("description")
            if description:
                text += f" ({description})"
            if alert.labels and dict(alert.labels) != dict(self.group.labels):
                text = ",".join(f"{key}={value}" for key, value in sorted(alert.labels.items())) + " " + text
            parts.append(text)
        where = f"{self.group.rule}{{{labels}}}" if labels else self.group.rule
        return f"{self.status.upper()} {where} on run {self.group.run_id}: " + "; ".join(parts)


_InstanceKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass
class _Instance:
    alert: AlertEvent  # the latest firing or resolved event
    active: bool
    notified: bool = False  # told "firing" and not told "resolved" since
    notified_at: float = 0.0  # when last told "firing" (repeats count from here)


@dataclass
class _Group:
    key: AlertGroup
    instances: dict[_InstanceKey, _Instance] = field(default_factory=dict)
    due_at: float | None = None  # a change is to be notified at this time
    last_sent_at: float | None = None


class PolicyStatistics(NamedTuple):
    """A snapshot of what the policy holds."""

    groups: int
    active_alerts: int
    pending_groups: int


class NotificationPolicy:
    """Decides which alert changes to notify, grouped and de-duplicated (pure).

    Feed every alert event to :meth:`observe`, and call :meth:`due` regularly
    (every second or so); it returns the notifications whose time has come.
    See the module documentation for the rules.

    Args:
        group_wait_seconds: how long a group collects changes before they are
            notified, and the least time between two notifications of a group.
            ``0`` notifies at the next :meth:`due` call (no flapping protection).
        repeat_interval_seconds: how long after its last notification a still
            firing alert is notified again.
        send_resolved: whether resolutions are notified.
        group_by_labels: the label names that tell groups apart (besides rule
            and run); ``("*",)`` means all labels, ``()`` none.

    Raises:
        ValueError: a negative wait or a non-positive repeat interval.
    """

    def __init__(
        self,
        *,
        group_wait_seconds: float = 10.0,
        repeat_interval_seconds: float = 3600.0,
        send_resolved: bool = True,
        group_by_labels: Iterable[str] = ("*",),
    ) -> None:
        if not group_wait_seconds >= 0:
            raise ValueError(f"group_wait_seconds must be at least 0, got {group_wait_seconds!r}")
        if not repeat_interval_seconds > 0:
            raise ValueError(f"repeat_interval_seconds must be positive, got {repeat_interval_seconds!r}")
        self.group_wait_seconds = group_wait_seconds
        self.repeat_interval_seconds = repeat_interval_seconds
        self.send_resolved = send_resolved
        labels = tuple(group_by_labels)
        self._all_labels = "*" in labels
        self._group_labels = frozenset(labels)
        self._groups: dict[AlertGroup, _Group] = {}

    def group_of(self, alert: AlertEvent) -> AlertGroup:
        """The group an alert belongs to."""
        if self._all_labels:
            return AlertGroup(alert.rule, alert.run_id, tuple(sorted(alert.labels.items())))
        labels = [(key, value) for key, value in alert.labels.items() if key in self._group_labels]
        return AlertGroup(alert.rule, alert.run_id, tuple(sorted(labels)))

    def observe(self, alert: AlertEvent, now: float) -> None:
        """Take one alert event into account (``now``: seconds since the epoch)."""
        state = alert.state
        if state == "pending":
            return  # not notified; the rule engine sends "firing" when it is time
        group_key = self.group_of(alert)
        instance_key = (alert.rule, alert.run_id, tuple(sorted(alert.labels.items())))
        group = self._groups.get(group_key)
        instance = group.instances.get(instance_key) if group is not None else None
        if state == "firing":
            if group is None:
                group = self._groups[group_key] = _Group(group_key)
            if instance is None:
                instance = group.instances[instance_key] = _Instance(alert, active=True)
            instance.alert = alert  # a repeat carries the latest value
            instance.active = True
            if not instance.notified:
                self._schedule(group, now)
            return
        # "resolved", or "inactive" (which ends a firing alert the same way)
        if group is None or instance is None or not instance.active:
            return  # never firing, or already resolved: nothing to tell
        instance.alert = alert if state == "resolved" else alert._replace(state="resolved")
        instance.active = False
        if instance.notified:
            self._schedule(group, now)
        else:
            # It fired and resolved before anyone was told: the window swallows it.
            # The group stays until its window closes, so that flapping cannot
            # keep pushing the window back.
            del group.instances[instance_key]

    def _schedule(self, group: _Group, now: float) -> None:
        # The window opens at the first change; later changes join it. As a
        # notification resets nothing but due_at, the next window opens after
        # it, so a group hears from us at most once per group_wait_seconds.
        if group.due_at is None:
            group.due_at = now + self.group_wait_seconds

    def due(self, now: float) -> list[Notification]:
        """The notifications to send at ``now``, each marked as sent."""
        return self._collect(now, force=False)

    def drain(self, now: float) -> list[Notification]:
        """Every pending change as notifications now, windows cut short (for shutdown)."""
        return self._collect(now, force=True)

    def next_due_at(self) -> float | None:
        """The earliest time at which :meth:`due` may return something, or ``None``."""
        times: list[float] = []
        for group in self._groups.values():
            if group.due_at is not None:
                times.append(group.due_at)
            notified = [i.notified_at for i in group.instances.values() if i.active and i.notified]
            if notified:
                repeat_at = min(notified) + self.repeat_interval_seconds
                if group.last_sent_at is not None:
                    repeat_at = max(repeat_at, group.last_sent_at + self.group_wait_seconds)
                times.append(repeat_at)
        return min(times, default=None)

    def statistics(self) -> PolicyStatistics:
        """How many groups, firing alerts and groups with a pending change there are."""
        groups = self._groups.values()
        return PolicyStatistics(
            groups=len(self._groups),
            active_alerts=sum(1 for g in groups for i in g.instances.values() if i.active),
            pending_groups=sum(1 for g in groups if g.due_at is not None),
        )

    def _collect(self, now: float, *, force: bool) -> list[Notification]:
        notifications = []
        for key, group in list(self._groups.items()):
            notification = self._collect_group(group, now, force)
            if notification is not None:
                notifications.append(notification)
            if not group.instances and group.due_at is None:
                del self._groups[key]
        return notifications

    def _collect_group(self, group: _Group, now: float, force: bool) -> Notification | None:
        repeat_before = now - self.repeat_interval_seconds
        if group.due_at is not None:
            if not force and now < group.due_at:
                return None  # the window is still open; repeats wait for it too
            group.due_at = None
            changed = True
        elif force:
            return None  # repeats are not "pending"
        elif group.last_sent_at is not None and now < group.last_sent_at + self.group_wait_seconds:
            return None
        else:
            changed = False
        # Newly firing alerts (only when the group changed) and those due for a repeat.
        firing = [
            instance
            for instance in group.instances.values()
            if instance.active and (instance.notified_at <= repeat_before if instance.notified else changed)
        ]
        resolved = [(key, i) for key, i in group.instances.items() if not i.active] if changed else []
        for instance in firing:
            instance.notified = True
            instance.notified_at = now
        for key, _ in resolved:
            del group.instances[key]  # an instance is only kept inactive until its resolution is told
        alerts = [instance.alert for instance in firing]
        if self.send_resolved:
            alerts.extend(instance.alert for _, instance in resolved)
        if not alerts:
            return None
        group.last_sent_at = now
        return Notification(group.key, "firing" if firing else "resolved", tuple(alerts), now)


# -- the pure core of webhook delivery: an ordered, bounded outbox with backoff -----------


@dataclass(eq=False)
class Delivery:
    """One notification waiting to be delivered (its JSON body serialised once)."""

    group: AlertGroup
    body: bytes
    attempts: int = 0
    next_attempt_at: float = 0.0
    in_flight: bool = False


class Outbox:
    """A bounded queue of deliveries with retries and capped exponential backoff (pure).

    Deliveries of one group leave in order: a group's next notification waits
    until the one before it is delivered or dropped, so a receiver never sees
    ``resolved`` before the ``firing`` it ends.

    Args:
        max_notifications: the bound; when full, the oldest delivery not in
            flight is dropped to make room.
        max_retries: attempts after the first before a delivery is dropped.
        backoff_initial_seconds: the wait before the first retry; it doubles
            with each retry, up to ``backoff_max_seconds``.
    """

    def __init__(
        self,
        *,
        max_notifications: int = 1000,
        max_retries: int = 5,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        if max_notifications < 1:
            raise ValueError(f"max_notifications must be at least 1, got {max_notifications}")
        self.max_notifications = max_notifications
        self.max_retries = max_retries
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._entries: list[Delivery] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """How many deliveries are being attempted."""
        return sum(1 for delivery in self._entries if delivery.in_flight)

    def put(self, delivery: Delivery, now: float) -> Delivery | None:
        """Queue a delivery, due at once; returns the delivery dropped to make room, if any."""
        delivery.next_attempt_at = now
        dropped = None
        if len(self._entries) >= self.max_notifications:
            waiting = [entry for entry in self._entries if not entry.in_flight]
            if not waiting:
                return delivery
            dropped = waiting[0]
            self._entries.remove(dropped)
        self._entries.append(delivery)
        return dropped

    def take_due(self, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries to attempt now (at most one per group), marked in flight."""
        taken: list[Delivery] = []
        blocked: set[AlertGroup] = set()
        for delivery in self._entries:
            if len(taken) >= limit:
                break
            if delivery.group in blocked:
                continue
            blocked.add(delivery.group)
            if not delivery.in_flight and delivery.next_attempt_at <= now:
                delivery.in_flight = True
                taken.append(delivery)
        return taken

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt (1, 2...)."""
        exponent = min(attempts - 1, 62)  # 2**62 already exceeds any sane cap
        return float(min(self.backoff_max_seconds, self.backoff_initial_seconds * 2**exponent))

    def succeeded(self, delivery: Delivery) -> None:
        """The delivery arrived: forget it."""
        self._entries.remove(delivery)

    def failed(self, delivery: Delivery, now: float, *, retryable: bool, reason: str = "rejected") -> str | None:
        """An attempt failed: schedule a retry and return ``None``, or drop the delivery
        and return why (``reason`` when not ``retryable``, else ``retries_exhausted``)."""
        delivery.in_flight = False
        delivery.attempts += 1
        if not retryable:
            self._entries.remove(delivery)
            return reason
        if delivery.attempts > self.max_retries:
            self._entries.remove(delivery)
            return "retries_exhausted"
        delivery.next_attempt_at = now + self.backoff_seconds(delivery.attempts)
        return None

    def drop_all(self) -> int:
        """Forget every delivery; returns how many there were."""
        count = len(self._entries)
        self._entries.clear()
        return count


# -- the sinks --------------------------------------------------------------------------


class _NotifierOptions(BaseOptions):
    group_wait_seconds: float = Field(10.0, ge=0)
    repeat_interval_seconds: float = Field(3600.0, gt=0)
    send_resolved: bool = True
    group_by_labels: list[str] = ["*"]


def _tick_interval(group_wait_seconds: float) -> float:
    # Fine enough that a window closes at most half its length (and at most 1 s) late.
    return max(0.01, min(1.0, group_wait_seconds / 2 if group_wait_seconds > 0 else 0.05))


class _Notifier(Sink):
    """The shell shared by every notifier: feeds the policy, hands out what is due."""

    Options = _NotifierOptions

    def __init__(self, id: str, options: _NotifierOptions, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.policy = NotificationPolicy(
            group_wait_seconds=options.group_wait_seconds,
            repeat_interval_seconds=options.repeat_interval_seconds,
            send_resolved=options.send_resolved,
            group_by_labels=options.group_by_labels,
        )
        self.tick_interval_seconds = _tick_interval(options.group_wait_seconds)
        self.received_alerts = 0
        self.sent_notifications = 0
        self.dropped_notifications: dict[str, int] = {}
        self._closed = False

    async def write(self, batch: list[Any]) -> None:
        now = time.time()
        for event in batch:
            if type(event) is AlertEvent:
                self.received_alerts += 1
                self.policy.observe(event, now)

    async def tick(self, now: float) -> None:
        await self._notify(self.policy.due(now), now)

    async def flush(self) -> None:
        await self.tick(time.time())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.time()
        await self._notify(self.policy.drain(now), now, final=True)

    @abstractmethod
    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        """Carry the notifications out; ``final`` on close (the last call)."""

    def _count_drop(self, reason: str, count: int = 1, detail: str = "", exc: BaseException | None = None) -> None:
        total = self.dropped_notifications.get(reason, 0) + count
        self.dropped_notifications[reason] = total
        if total & (total - 1) == 0 or count > 1:  # 1, 2, 4, 8...: no log storm
            logger.warning(
                "runwatch: notifier %s dropped %d notification(s) (reason %s; %d so far)%s",
                self.id,
                count,
                reason,
                total,
                f": {detail}" if detail else "",
                exc_info=exc,
            )

    def statistics(self) -> dict[str, Any]:
        policy = self.policy.statistics()
        return {
            "received_alerts": self.received_alerts,
            "sent_notifications": self.sent_notifications,
            "dropped_notifications": dict(self.dropped_notifications),
            "active_alerts": policy.active_alerts,
            "pending_groups": policy.pending_groups,
        }


class LogNotifier(_Notifier):
    """Writes one log line per notification, at a level derived from its severity.

    Firing notifications log at the level of their highest severity
    (``critical`` → CRITICAL, ``error`` → ERROR, ``warning`` → WARNING,
    ``info`` → INFO; unknown names → WARNING); resolutions log at INFO.

    Options:
        logger: the logger name (default ``runwatch.alerts``).
        group_wait_seconds, repeat_interval_seconds, send_resolved,
        group_by_labels: the :class:`NotificationPolicy` settings.
    """

    class Options(_NotifierOptions):
        logger: str = "runwatch.alerts"

    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        log = logging.getLogger(self.options.logger)
        for notification in notifications:
            log.log(notification.level, "runwatch alert %s", notification.summary())
            self.sent_notifications += 1


class WebhookNotifier(_Notifier):
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

    class Options(_NotifierOptions):
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
            0.01, min(_tick_interval(options.group_wait_seconds), options.backoff_initial_seconds)
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


NotificationCallback = Callable[[dict[str, Any]], Any]


class CallbackNotifier(_Notifier):
    """Calls a Python function with each notification's dict (see the module docs).

    Configure it with ``target = "module:function"``, or build one in code
    with :meth:`from_callable`. A plain function runs in a worker thread (so
    a slow one never stalls the event loop); an ``async def`` function is
    awaited on the loop. Calls happen one at a time, in order. An exception
    from the function is counted (drop reason ``callback_error``) and logged,
    never raised. A call still running after ``timeout_seconds`` is given up
    (drop reason ``callback_timeout``; a plain function keeps running in its
    thread, as threads cannot be interrupted), so a stuck function holds the
    sink for at most that long.

    Options:
        target: ``"module:function"`` (``"module:object.method"`` also works).
        timeout_seconds: the longest one call is waited for.
        group_wait_seconds, repeat_interval_seconds, send_resolved,
        group_by_labels: the :class:`NotificationPolicy` settings.

    Raises:
        ConfigError: from the constructor, when ``target`` is missing or
            cannot be imported.
    """

    class Options(_NotifierOptions):
        target: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
        timeout_seconds: float = Field(10.0, gt=0)

    def __init__(
        self, id: str, options: Options, context: ComponentContext, *, fn: NotificationCallback | None = None
    ) -> None:
        super().__init__(id, options, context)
        if fn is None:
            fn = _import_target(f"sinks.{id}.target", options.target)
        self.fn = fn
        self.failed_callbacks = 0

    @classmethod
    def from_callable(
        cls, fn: NotificationCallback, *, id: str = "callback", context: ComponentContext | None = None, **options: Any
    ) -> CallbackNotifier:
        """A notifier calling ``fn``; ``options`` are the policy settings (keyword-only).

        Raises:
            pydantic.ValidationError: an unknown or ill-typed option.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        return cls(id, cls.Options(**options), context or ComponentContext(), fn=fn)

    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        for notification in notifications:
            payload = notification.to_dict()
            try:
                with anyio.move_on_after(self.options.timeout_seconds) as deadline:
                    if inspect.iscoroutinefunction(self.fn):
                        await self.fn(payload)
                    else:
                        result = await anyio.to_thread.run_sync(self.fn, payload, abandon_on_cancel=True)
                        if inspect.isawaitable(result):
                            await result
            except Exception as exc:
                self.failed_callbacks += 1
                self._count_drop("callback_error", 1, f"{type(exc).__name__}: {exc}", exc)
                continue
            if deadline.cancelled_caught:
                self.failed_callbacks += 1
                self._count_drop("callback_timeout", 1, f"no return within {self.options.timeout_seconds:g} s")
            else:
                self.sent_notifications += 1

    def statistics(self) -> dict[str, Any]:
        stats = super().statistics()
        stats["failed_callbacks"] = self.failed_callbacks
        return stats


def _import_target(path: str, target: str | None) -> NotificationCallback:
    if target is None:
        raise ConfigError(path, "is required: 'module:function' (or build the notifier with from_callable)")
    module_name, _, attribute = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(path, f"cannot import {target!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(path, f"{target!r} is not callable")
    return cast("NotificationCallback", obj)
