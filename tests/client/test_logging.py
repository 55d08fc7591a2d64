"""Tests of runwatch.client._logging: DatacatHandler against the in-process double."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from runwatch.client import DatacatClient, DatacatHandler, Session

from ._doubles import FakeServer


class RecordingHandler(DatacatHandler):
    """A DatacatHandler that records what it passes to handleError."""

    def __init__(self, session: Session, **options: object) -> None:
        super().__init__(session, **options)  # type: ignore[arg-type]
        self.failed: list[logging.LogRecord] = []

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed.append(record)


@pytest.fixture
def session(fake: FakeServer) -> Iterator[Session]:
    """A blocking session on the double."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    session = Session(client, client.create_session(), owns_client=True)
    yield session
    client.close()


def log_to(handler: logging.Handler, name: str) -> logging.Logger:
    """A logger of ``name`` that sends only to ``handler``."""
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


def test_records_become_events_with_the_level_as_category(session: Session, fake: FakeServer) -> None:
    """Each record is an event log.<logger>; standard levels map to categories, others to info."""
    logger = log_to(DatacatHandler(session), "app.worker")
    logger.debug("d")
    logger.log(25, "between info and warning")
    logger.critical("c")
    events = fake.operations[session.session_id]
    assert [(e["name"], e["level"]) for e in events] == [
        ("log.app.worker", "debug"),
        ("log.app.worker", "info"),
        ("log.app.worker", "critical"),
    ]
    assert events[0]["data"]["group"] == "app.worker" and events[0]["data"]["message"] == "d"


def test_records_with_an_exception_become_exception_events(session: Session, fake: FakeServer) -> None:
    """logger.exception() logs the exception with the record's data; include_exceptions=False keeps a log event."""
    logger = log_to(DatacatHandler(session), "app.failing")
    plain = log_to(DatacatHandler(session, include_exceptions=False), "app.plain")
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("while loading")
        plain.exception("as text")
    failure, text = fake.operations[session.session_id]
    assert (failure["name"], failure["data"]["type"], failure["data"]["log_message"]) == (
        "exception",
        "ValueError",
        "while loading",
    )
    assert text["name"] == "log.app.plain" and "ValueError: bad" in text["data"]["message"]


def test_runwatchs_own_records_are_not_sent(session: Session, fake: FakeServer) -> None:
    """Records of runwatch's loggers are skipped, so the client's warnings never feed back into it."""
    handler = DatacatHandler(session)
    log_to(handler, "runwatch.client").warning("the queue is full")
    log_to(handler, "runwatch").warning("x")
    assert fake.operations[session.session_id] == []


def test_a_failing_send_goes_to_handle_error(session: Session, fake: FakeServer) -> None:
    """With the server down, emit() does not raise: the record goes to handleError."""
    handler = RecordingHandler(session)
    fake.down = True
    log_to(handler, "app.down").error("lost")
    assert [record.getMessage() for record in handler.failed] == ["lost"]
