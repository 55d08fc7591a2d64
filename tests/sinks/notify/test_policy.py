"""Tests of runwatch.sinks.notify.policy: grouping, de-duplication, flapping, repeats and severities (pure)."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
import pytest

from runwatch.events import AlertEvent
from runwatch.sinks.notify import AlertGroup, NotificationPolicy, severity_level

from ._helpers import T0, alert

WAIT = 10.0  # group_wait_seconds of the policy tests


def policy(**options: Any) -> NotificationPolicy:
    """A policy with a 10 s window and a 100 s repeat interval unless told otherwise."""
    options.setdefault("group_wait_seconds", WAIT)
    options.setdefault("repeat_interval_seconds", 100.0)
    return NotificationPolicy(**options)


def feed(p: NotificationPolicy, *events: tuple[float, AlertEvent]) -> None:
    """Observe each ``(seconds after T0, event)``."""
    for at, event in events:
        p.observe(event, T0 + at)


def states(notifications: list[Any]) -> list[tuple[str, list[str]]]:
    """(status, [alert states]) of each notification."""
    return [(n.status, [a.state for a in n.alerts]) for n in notifications]


def test_first_firing_waits_for_the_window_then_is_notified_once() -> None:
    """A firing alert is notified when its group's window closes, and only then."""
    p = policy()
    feed(p, (0, alert("firing", value=float("nan"))))

    assert p.due(T0 + WAIT - 0.1) == []
    [notification] = p.due(T0 + WAIT)
    assert p.due(T0 + WAIT + 1) == []
    payload = notification.to_dict()
    assert payload["status"] == "firing"
    assert payload["group"] == {"rule": "loss_nan", "run_id": "r1", "labels": {}}
    assert payload["alerts"][0]["state"] == "firing"
    assert payload["alerts"][0]["value"] is None  # NaN is not JSON
    orjson.dumps(payload)


def test_changes_within_a_window_are_aggregated_into_one_notification() -> None:
    """Alerts of one group that change within the window go out together, firing ones first."""
    p = policy(group_by_labels=[])
    feed(
        p,
        (0, alert("firing", labels={"metric": "loss"})),
        (WAIT - 1, alert("firing", labels={"metric": "acc"}, severity="critical")),
    )

    [notification] = p.due(T0 + WAIT)
    assert [dict(a.labels) for a in notification.alerts] == [{"metric": "loss"}, {"metric": "acc"}]
    assert notification.severity == "critical"
    assert notification.group == AlertGroup("loss_nan", "r1", ())


@pytest.mark.parametrize(
    ("group_by_labels", "expected_groups"),
    [
        pytest.param(["*"], 2, id="all-labels"),
        pytest.param(["team"], 1, id="chosen-label"),
        pytest.param([], 1, id="rule-and-run-only"),
    ],
)
def test_group_by_labels_decides_which_alerts_share_a_notification(
    group_by_labels: list[str], expected_groups: int
) -> None:
    """Labels named in group_by_labels (all by default) split groups; others do not."""
    p = policy(group_by_labels=group_by_labels)
    feed(
        p,
        (0, alert("firing", labels={"team": "a", "metric": "loss"})),
        (0, alert("firing", labels={"team": "a", "metric": "acc"})),
    )

    assert len(p.due(T0 + WAIT)) == expected_groups


def test_rules_and_runs_are_grouped_apart() -> None:
    """Different rules, or the same rule on different runs, are notified separately."""
    p = policy()
    feed(p, (0, alert("firing")), (0, alert("firing", run_id="r2")), (0, alert("firing", rule="stalled")))

    groups = [n.group for n in p.due(T0 + WAIT)]
    assert groups == [
        AlertGroup("loss_nan", "r1", ()),
        AlertGroup("loss_nan", "r2", ()),
        AlertGroup("stalled", "r1", ()),
    ]


def test_a_window_opens_at_the_first_change_and_later_changes_do_not_extend_it() -> None:
    """A change late in the window joins it; the window still closes group_wait after the first."""
    p = policy(group_by_labels=[])
    feed(p, (0, alert("firing", labels={"m": "a"})), (WAIT - 0.5, alert("firing", labels={"m": "b"})))

    assert len(p.due(T0 + WAIT)[0].alerts) == 2


def test_a_group_is_not_notified_twice_within_group_wait() -> None:
    """A change right after a notification waits for a new full window."""
    p = policy(group_by_labels=[])
    feed(p, (0, alert("firing", labels={"m": "a"})))
    assert len(p.due(T0 + WAIT)) == 1
    feed(p, (WAIT + 0.1, alert("firing", labels={"m": "b"})))

    assert p.due(T0 + 2 * WAIT) == []
    assert len(p.due(T0 + 2 * WAIT + 0.1)) == 1


def test_group_wait_zero_notifies_at_the_next_due_call() -> None:
    """With group_wait_seconds = 0 a change is due at once."""
    p = policy(group_wait_seconds=0.0)
    feed(p, (0, alert("firing")))

    assert len(p.due(T0)) == 1


def test_the_same_state_is_not_notified_twice() -> None:
    """Repeated firing events and repeated resolved events are notified once each."""
    p = policy()
    feed(p, (0, alert("firing")), (1, alert("firing")))
    assert states(p.due(T0 + WAIT)) == [("firing", ["firing"])]
    feed(p, (11, alert("firing")), (12, alert("resolved")), (13, alert("resolved")))

    assert states(p.due(T0 + 30)) == [("resolved", ["resolved"])]
    feed(p, (31, alert("resolved")))
    assert p.due(T0 + 60) == []
    assert p.statistics().groups == 0


def test_a_resolution_is_not_sent_without_send_resolved_and_a_new_firing_is() -> None:
    """send_resolved=False hides resolutions but still ends the alert, so the next firing is news."""
    p = policy(send_resolved=False)
    feed(p, (0, alert("firing")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("resolved")))
    assert p.due(T0 + 40) == []
    feed(p, (50, alert("firing")))

    assert states(p.due(T0 + 60)) == [("firing", ["firing"])]


def test_an_alert_that_fires_and_resolves_within_the_window_is_not_notified() -> None:
    """Firing then resolving before the window closes sends nothing at all."""
    p = policy()
    feed(p, (0, alert("firing")), (1, alert("resolved")))

    assert p.due(T0 + WAIT) == []
    assert p.statistics() == (0, 0, 0)


@pytest.mark.parametrize(
    "state",
    [pytest.param("pending", id="pending"), pytest.param("inactive", id="inactive-without-firing")],
)
def test_pending_and_inactive_alone_are_never_notified(state: str) -> None:
    """Pending, and inactive for an alert that never fired, produce nothing."""
    p = policy()
    feed(p, (0, alert(state)))

    assert p.due(T0 + 1000) == []


def test_inactive_ends_a_firing_alert_like_resolved() -> None:
    """An inactive event after a notified firing is notified as a resolution."""
    p = policy()
    feed(p, (0, alert("firing")), (5, alert("pending")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("inactive")))

    assert states(p.due(T0 + 30)) == [("resolved", ["resolved"])]


def test_a_still_firing_alert_is_renotified_after_the_repeat_interval() -> None:
    """repeat_interval_seconds after its last notification, a firing alert is sent again, with its latest value."""
    p = policy(repeat_interval_seconds=100.0)
    feed(p, (0, alert("firing", value=1.0)))
    p.due(T0 + WAIT)
    feed(p, (50, alert("firing", value=2.0)))

    assert p.due(T0 + WAIT + 99) == []
    [repeat] = p.due(T0 + WAIT + 100)
    assert [a.value for a in repeat.alerts] == [2.0]
    assert p.due(T0 + WAIT + 150) == []
    assert len(p.due(T0 + WAIT + 200)) == 1


def test_next_due_at_names_the_window_close_and_then_the_repeat() -> None:
    """next_due_at is the earliest time due() may return something."""
    p = policy(repeat_interval_seconds=100.0)
    assert p.next_due_at() is None
    feed(p, (0, alert("firing")))
    assert p.next_due_at() == T0 + WAIT
    p.due(T0 + WAIT)

    assert p.next_due_at() == T0 + WAIT + 100


def test_flapping_within_the_window_produces_one_notification() -> None:
    """firing/resolved/firing/resolved/firing inside one window is notified once, as firing."""
    p = policy()
    flaps = ["firing", "resolved", "firing", "resolved", "firing"]
    feed(p, *((i, alert(state)) for i, state in enumerate(flaps)))

    assert states(p.due(T0 + WAIT)) == [("firing", ["firing"])]
    assert p.due(T0 + 99) == []


def test_flapping_after_a_notification_sends_nothing_when_the_net_state_is_unchanged() -> None:
    """Resolving and firing again within one window after a firing notification is no news."""
    p = policy()
    feed(p, (0, alert("firing")))
    p.due(T0 + WAIT)
    feed(p, (11, alert("resolved")), (12, alert("firing")), (13, alert("resolved")), (14, alert("firing")))

    assert p.due(T0 + 30) == []


def test_a_rule_flapping_for_a_long_time_gets_at_most_one_notification_per_window() -> None:
    """Flapping every second for 200 s never notifies a group twice within group_wait_seconds."""
    p = policy()
    sent_at: list[float] = []
    for second in range(200):
        p.observe(alert("firing" if second % 2 == 0 else "resolved", second), T0 + second)
        for tick in (second, second + 0.5):
            sent_at.extend(n.timestamp for n in p.due(T0 + tick))

    assert 1 <= len(sent_at) <= 200 / WAIT + 1
    assert all(later - earlier >= WAIT for earlier, later in zip(sent_at, sent_at[1:], strict=False))


def test_drain_sends_pending_changes_now_but_no_repeats() -> None:
    """drain() cuts open windows short (for shutdown) and does not repeat unchanged alerts."""
    p = policy()
    feed(p, (0, alert("firing")), (0, alert("firing", rule="other")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("resolved")))

    assert states(p.drain(T0 + 21)) == [("resolved", ["resolved"])]
    assert p.drain(T0 + 10_000) == []


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"group_wait_seconds": -1.0}, id="negative-wait"),
        pytest.param({"repeat_interval_seconds": 0.0}, id="zero-repeat"),
        pytest.param({"group_wait_seconds": math.nan}, id="nan-wait"),
    ],
)
def test_invalid_policy_settings_are_refused(options: dict[str, float]) -> None:
    """A negative or NaN wait, or a non-positive repeat interval, is a ValueError."""
    with pytest.raises(ValueError):
        NotificationPolicy(**options)


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        pytest.param("critical", logging.CRITICAL, id="critical"),
        pytest.param("ERROR", logging.ERROR, id="error-any-case"),
        pytest.param("warning", logging.WARNING, id="warning"),
        pytest.param("info", logging.INFO, id="info"),
        pytest.param("sev-7", logging.WARNING, id="unknown"),
    ],
)
def test_severity_names_map_to_logging_levels(severity: str, level: int) -> None:
    """Severities map to logging levels case-insensitively; unknown ones to WARNING."""
    assert severity_level(severity) == level


def test_a_resolution_logs_at_info_whatever_its_severity() -> None:
    """A resolved notification's level is INFO even for a critical alert."""
    p = policy(group_wait_seconds=0.0)
    feed(p, (0, alert("firing", severity="critical")))
    assert p.due(T0)[0].level == logging.CRITICAL
    feed(p, (1, alert("resolved", severity="critical")))

    assert p.due(T0 + 1)[0].level == logging.INFO
