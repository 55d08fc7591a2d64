"""The alert notifiers under their first import path; they live in :mod:`runwatch.sinks.notify`.

Kept so that code and configs naming ``runwatch.sinks.notifiers`` (for example
``type = "runwatch.sinks.notifiers:WebhookNotifier"``) keep working.
"""

from __future__ import annotations

from .notify import AlertGroup as AlertGroup
from .notify import CallbackNotifier as CallbackNotifier
from .notify import Delivery as Delivery
from .notify import LogNotifier as LogNotifier
from .notify import Notification as Notification
from .notify import NotificationPolicy as NotificationPolicy
from .notify import Outbox as Outbox
from .notify import WebhookNotifier as WebhookNotifier
from .notify import severity_level as severity_level

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
