"""The logging handler: log records become events of the current run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwatch import MonitorConfig, WebMonitor


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    """A monitor on a fresh store."""
    with WebMonitor(MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)) as m:
        yield m


def test_records_become_log_events_with_level_logger_and_message(monitor: WebMonitor) -> None:
    """A warning logged through the handler is stored as a 'log' event with its level, logger and message."""
    run_id = monitor.start_training()
    log = logging.getLogger("trainer.test")
    handler = monitor.log_handler()
    log.addHandler(handler)
    try:
        log.warning("lr %s is high", 0.5)
        log.debug("below the handler's level")
    finally:
        log.removeHandler(handler)
    events = monitor.get_run_events(run_id, "log")
    assert len(events) == 1
    event = events[0]
    assert event["level"] == "warning"
    assert event["event_data"]["logger"] == "trainer.test"
    assert event["event_data"]["message"] == "lr 0.5 is high"


def test_exceptions_carry_type_message_and_traceback(monitor: WebMonitor) -> None:
    """logger.exception() records the exception's type, message and traceback."""
    run_id = monitor.start_training()
    log = logging.getLogger("trainer.errors")
    handler = monitor.log_handler()
    log.addHandler(handler)
    try:
        try:
            raise KeyError("missing-key")
        except KeyError:
            log.exception("lookup failed")
    finally:
        log.removeHandler(handler)
    (event,) = monitor.get_run_events(run_id, "log")
    assert event["level"] == "error"
    exception = event["event_data"]["exception"]
    assert exception["type"] == "KeyError" and "missing-key" in exception["message"]
    assert "Traceback" in exception["traceback"]


def test_runwatch_own_records_and_records_without_a_run_are_skipped(monitor: WebMonitor) -> None:
    """Records from runwatch's loggers and records logged with no active run are not recorded."""
    handler = monitor.log_handler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("trainer.idle").warning("no run yet")
        run_id = monitor.start_training()
        logging.getLogger("runwatch.pipeline").warning("internal")
        logging.getLogger("trainer.busy").warning("counted")
    finally:
        root.removeHandler(handler)
    messages = [event["event_data"]["message"] for event in monitor.get_run_events(run_id, "log")]
    assert messages == ["counted"]
