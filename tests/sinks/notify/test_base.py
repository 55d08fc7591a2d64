"""Tests of runwatch.sinks.notify.base: the shell every notifier shares (through the log notifier)."""

from __future__ import annotations

import logging

import pytest

from runwatch.events import Heartbeat
from runwatch.sinks.notify import LogNotifier
from runwatch.sinks.notify.base import tick_interval

from ._helpers import T0, alert, context


@pytest.mark.parametrize(
    ("group_wait_seconds", "seconds"),
    [
        pytest.param(0.0, 0.05, id="no-window"),
        pytest.param(0.001, 0.01, id="at-least-10ms"),
        pytest.param(0.5, 0.25, id="half-the-window"),
        pytest.param(10.0, 1.0, id="at-most-1s"),
    ],
)
def test_a_notifier_ticks_at_half_its_window_within_bounds(group_wait_seconds: float, seconds: float) -> None:
    """A window closes at most half its length late, with ticks between 10 ms and 1 s apart."""
    assert tick_interval(group_wait_seconds) == seconds


async def test_only_alert_events_are_counted_and_closing_twice_notifies_once(caplog: pytest.LogCaptureFixture) -> None:
    """Other events are ignored; aclose drains a still-open window once, and a second aclose does nothing."""
    notifier = LogNotifier("log", LogNotifier.Options(group_wait_seconds=60.0), context())
    caplog.set_level(logging.INFO, logger="runwatch.alerts")

    await notifier.write([Heartbeat("r1", T0), alert("firing")])
    await notifier.flush()  # the 60 s window is still open: nothing yet
    assert [r for r in caplog.records if r.name == "runwatch.alerts"] == []
    await notifier.aclose()
    await notifier.aclose()

    assert [r.getMessage().split(" on run")[0] for r in caplog.records if r.name == "runwatch.alerts"] == [
        "runwatch alert FIRING loss_nan"
    ]
    stats = notifier.statistics()
    assert (stats["received_alerts"], stats["sent_notifications"], stats["pending_groups"]) == (1, 1, 0)
