"""A ``logging.Handler`` that records log records as events of the current run."""

from __future__ import annotations

import logging
import traceback
from typing import Any, Protocol

from ._payload import escape_surrogates
from .events import LogEvent

__all__ = ["RunLogHandler"]

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class EventTarget(Protocol):
    """What the handler writes to: a monitor with a current run."""

    @property
    def current_run_id(self) -> str | None: ...

    def emit_event(self, event: Any) -> None: ...


def level_name(levelno: int) -> str:
    """The event level for a logging level (custom levels round down)."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _LEVELS[threshold]
    return "debug"


class RunLogHandler(logging.Handler):
    """Turns log records into ``log`` events (type ``log``) of the target's current run.

    ``event_data`` holds ``logger``, ``message``, ``module``, ``line`` and, for
    records with an exception, ``exception`` (``type``, ``message``,
    ``traceback``). Records of runwatch's own loggers are skipped (no feedback
    loop); with no current run a record is skipped. Never raises.

    Args:
        target: a :class:`~runwatch.WebMonitor` (anything with ``current_run_id``
            and ``emit_event``).
        level: the lowest level handled.
    """

    def __init__(self, target: EventTarget, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "runwatch" or record.name.startswith("runwatch."):
            return
        try:
            run_id = self.target.current_run_id
            if run_id is None:
                return
            # Text from records and exceptions may hold lone surrogates (a file name that is not
            # UTF-8): escaped, so the record is kept rather than refused.
            data: dict[str, Any] = {
                "logger": escape_surrogates(record.name),
                "message": escape_surrogates(record.getMessage()),
                "module": record.module,
                "line": record.lineno,
            }
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                data["exception"] = {
                    "type": type(error).__name__,
                    "message": escape_surrogates(str(error)),
                    "traceback": escape_surrogates("".join(traceback.format_exception(*record.exc_info))),
                }
            self.target.emit_event(LogEvent(run_id, record.created, "log", level_name(record.levelno), data))
        except Exception:
            self.handleError(record)
