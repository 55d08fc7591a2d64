"""Alert notifiers: sinks that turn alert state changes into notifications.

Every notifier receives all events and acts only on :class:`AlertEvent`. What
to notify and when is decided by one pure core, :class:`NotificationPolicy`
(``policy``: grouping, de-duplication, flapping, repeats; no I/O, no clock);
the sinks only carry its decisions out, one module per channel: a log
(``log``: :class:`LogNotifier`), an HTTP endpoint (``webhook``:
:class:`WebhookNotifier`, over the pure :class:`Outbox` of ``outbox``) or a
Python callable (``callback``: :class:`CallbackNotifier`). ``base`` is the
shell they share: it feeds the policy and hands out what is due.

The pipeline config names them ``log_notifier``, ``webhook`` and ``callback``.
"""

from __future__ import annotations

from .callback import CallbackNotifier as CallbackNotifier
from .log import LogNotifier as LogNotifier
from .outbox import Delivery as Delivery
from .outbox import Outbox as Outbox
from .policy import AlertGroup as AlertGroup
from .policy import Notification as Notification
from .policy import NotificationPolicy as NotificationPolicy
from .policy import severity_level as severity_level
from .webhook import WebhookNotifier as WebhookNotifier

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
