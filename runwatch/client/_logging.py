"""DatacatHandler: Python log records as session events, as datacat's client sends them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._async import AsyncSession
    from ._session import Session

__all__ = ["DatacatHandler"]


class DatacatHandler(logging.Handler):
    """A ``logging.Handler`` that records each log record as an event of ``session``.

    A record becomes the event ``log.<logger>`` with category debug, info,
    warning, error or critical (other levels: info), group the logger's name,
    labels ``[level, logger, function]``, the formatted message, and data
    ``{logger, level_name, pathname, lineno, funcName, module}``. A record with
    an exception is logged as an ``exception`` event instead (``include_exceptions``),
    with that data and the record's message as ``log_message``.

    Records of runwatch's own loggers are skipped, so a client that logs its
    trouble never feeds it back into itself. With a blocking session each record
    is one request; with a non-blocking one (or an :class:`AsyncSession`) it is queued.
    Failures go to :meth:`logging.Handler.handleError`.

    Args:
        session: the session that receives the events.
        include_exceptions: log records with ``exc_info`` as exception events.
        level: the lowest level handled.
    """

    level_mapping: ClassVar[dict[int, str]] = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warning",
        logging.ERROR: "error",
        logging.CRITICAL: "critical",
    }

    def __init__(
        self, session: Session | AsyncSession, include_exceptions: bool = True, level: int = logging.NOTSET
    ) -> None:
        super().__init__(level)
        self.session = session
        self.include_exceptions = include_exceptions

    def emit(self, record: logging.LogRecord) -> None:
        """Send one record (errors go to ``handleError``)."""
        if record.name == "runwatch" or record.name.startswith("runwatch."):
            return
        try:
            data: dict[str, Any] = {
                "logger": record.name,
                "level_name": record.levelname,
                "pathname": record.pathname,
                "lineno": record.lineno,
                "funcName": record.funcName,
                "module": record.module,
            }
            if self.include_exceptions and record.exc_info and record.exc_info[0] is not None:
                self.session.log_exception(record.exc_info, {**data, "log_message": record.getMessage()})
                return
            self.session.log_event(
                f"log.{record.name}",
                category=self.level_mapping.get(record.levelno, "info"),
                group=record.name,
                labels=[record.levelname.lower(), record.name, record.funcName or ""],
                message=self.format(record),
                data=data,
            )
        except Exception:
            self.handleError(record)
