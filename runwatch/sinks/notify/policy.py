"""What to notify, and when: :class:`NotificationPolicy`, the notifiers' pure core.

No I/O and no clock (``now`` is passed in); the notifier sinks only carry its
decisions out. The policy, modelled on Prometheus Alertmanager:

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

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from ...events import AlertEvent
from ...wire import json_number

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
