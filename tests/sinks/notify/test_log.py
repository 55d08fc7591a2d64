"""Tests of runwatch.sinks.notify.log: the log_notifier sink."""

from __future__ import annotations

import logging

import pytest

from runwatch.events import AlertEvent, LogEvent, Metric
from runwatch.sinks.notify import LogNotifier

from ._helpers import T0, context


async def test_log_notifier_writes_one_line_per_notification_at_the_severity_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Firing logs at the severity's level, resolution at INFO, other events are ignored."""
    notifier = LogNotifier("log", LogNotifier.Options(group_wait_seconds=0.0), context())
    caplog.set_level(logging.DEBUG, logger="runwatch.alerts")
    firing = AlertEvent("r1", T0, "loss_nan", "firing", severity="critical", value=float("nan"))
    await notifier.write(
        [Metric("r1", T0, {"loss": 1.0}), firing, LogEvent("r1", T0, "x"), firing._replace(labels={"m": "x"})]
    )
    await notifier.flush()
    await notifier.write([AlertEvent("r1", T0 + 1, "loss_nan", "resolved", severity="critical")])
    await notifier.flush()
    await notifier.aclose()

    records = [r for r in caplog.records if r.name == "runwatch.alerts"]
    assert [(r.levelno, r.getMessage().split(" on run")[0]) for r in records] == [
        (logging.CRITICAL, "runwatch alert FIRING loss_nan"),
        (logging.CRITICAL, "runwatch alert FIRING loss_nan{m=x}"),
        (logging.INFO, "runwatch alert RESOLVED loss_nan"),
    ]
    assert notifier.statistics()["received_alerts"] == 3
    assert notifier.statistics()["sent_notifications"] == 3
