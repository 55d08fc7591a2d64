"""The shell every notifier shares: it feeds the policy and hands out what is due."""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from typing import Any

from pydantic import Field

from ...events import AlertEvent
from ...pipeline.component import ComponentContext, Sink
from ...pipeline.component import Options as BaseOptions
from .policy import Notification, NotificationPolicy

logger = logging.getLogger("runwatch.notifiers")


class NotifierOptions(BaseOptions):
    """The :class:`~runwatch.sinks.notify.policy.NotificationPolicy` settings every notifier takes."""

    group_wait_seconds: float = Field(10.0, ge=0)
    repeat_interval_seconds: float = Field(3600.0, gt=0)
    send_resolved: bool = True
    group_by_labels: list[str] = ["*"]


def tick_interval(group_wait_seconds: float) -> float:
    """How often a notifier asks its policy what is due, in seconds."""
    # Fine enough that a window closes at most half its length (and at most 1 s) late.
    return max(0.01, min(1.0, group_wait_seconds / 2 if group_wait_seconds > 0 else 0.05))


class Notifier(Sink):
    """The shell shared by every notifier: feeds the policy, hands out what is due."""

    Options = NotifierOptions

    def __init__(self, id: str, options: NotifierOptions, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.policy = NotificationPolicy(
            group_wait_seconds=options.group_wait_seconds,
            repeat_interval_seconds=options.repeat_interval_seconds,
            send_resolved=options.send_resolved,
            group_by_labels=options.group_by_labels,
        )
        self.tick_interval_seconds = tick_interval(options.group_wait_seconds)
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
