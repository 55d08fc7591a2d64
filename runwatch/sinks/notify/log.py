"""The ``log_notifier`` sink: one log line per notification."""

from __future__ import annotations

import logging

from .base import Notifier, NotifierOptions
from .policy import Notification


class LogNotifier(Notifier):
    """Writes one log line per notification, at a level derived from its severity.

    Firing notifications log at the level of their highest severity
    (``critical`` → CRITICAL, ``error`` → ERROR, ``warning`` → WARNING,
    ``info`` → INFO; unknown names → WARNING); resolutions log at INFO.

    Options:
        logger: the logger name (default ``runwatch.alerts``).
        group_wait_seconds, repeat_interval_seconds, send_resolved,
        group_by_labels: the :class:`NotificationPolicy` settings.
    """

    class Options(NotifierOptions):
        logger: str = "runwatch.alerts"

    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        log = logging.getLogger(self.options.logger)
        for notification in notifications:
            log.log(notification.level, "runwatch alert %s", notification.summary())
            self.sent_notifications += 1
