"""ErrorHandler: record errors of a training run as events, log and count them."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import Any

from ._payload import escape_surrogates
from .events import ExceptionEvent

__all__ = ["ErrorCategory", "ErrorHandler", "ErrorSeverity"]

logger = logging.getLogger("runwatch.errors")


def _describe(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:  # an exception whose __str__ raises is still counted and recorded
        return f"<unprintable {type(error).__name__}>"


class ErrorCategory(Enum):
    """Where an error comes from."""

    UNKNOWN = "unknown"
    SYSTEM = "system"
    TRAINING = "training"
    DATABASE = "database"
    NETWORK = "network"
    CONFIG = "config"


class ErrorSeverity(Enum):
    """How bad an error is."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


_LOG_LEVELS = {
    ErrorSeverity.DEBUG: logging.DEBUG,
    ErrorSeverity.INFO: logging.INFO,
    ErrorSeverity.WARNING: logging.WARNING,
    ErrorSeverity.ERROR: logging.ERROR,
    ErrorSeverity.CRITICAL: logging.CRITICAL,
}


class ErrorHandler:
    """Records errors as ``error`` events of the current run.

    Each handled error is logged, counted per category and severity, and —
    when a run is active — stored as an event whose ``event_data`` has
    ``category``, ``severity``, ``component``, ``message``, ``error_type``
    and ``traceback``. ``handle_error`` never raises.

    Args:
        emit: hands an :class:`~runwatch.events.ExceptionEvent` to the
            pipeline (``WebMonitor`` passes its own); ``None`` only logs and counts.
        current_run_id: the id of the run that receives the events now
            (``None`` while no run is active: nothing is emitted).
    """

    def __init__(
        self,
        emit: Callable[[ExceptionEvent], None] | None = None,
        current_run_id: Callable[[], str | None] | None = None,
    ) -> None:
        self._emit = emit
        self._current_run_id = current_run_id
        self._lock = threading.Lock()
        self._by_category: Counter[str] = Counter()
        self._by_severity: Counter[str] = Counter()
        self._failures = 0

    def handle_error(
        self,
        error: Exception,
        message: str | None = None,
        category: ErrorCategory = ErrorCategory.UNKNOWN,
        severity: ErrorSeverity = ErrorSeverity.ERROR,
        component: str | None = None,
    ) -> None:
        """Handle an error event.

        Args:
            error: the exception that occurred.
            message: a description; defaults to ``str(error)``.
            category: where the error comes from.
            severity: how bad it is.
            component: the component where it occurred.
        """
        try:
            category = ErrorCategory(category)
            severity = ErrorSeverity(severity)
            text = message if message is not None else (_describe(error) or type(error).__name__)
            try:
                trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            except Exception:
                trace = ""
            # An exception about a file name that is not UTF-8 holds lone surrogates: escaped, not refused.
            text, trace = escape_surrogates(text), escape_surrogates(trace)
            with self._lock:
                self._by_category[category.value] += 1
                self._by_severity[severity.value] += 1
            logger.log(
                _LOG_LEVELS[severity],
                "%s error in %s: %s (%s)",
                category.value,
                component or "unknown component",
                text,
                type(error).__name__,
            )
            run_id = self._current_run_id() if self._current_run_id is not None else None
            if self._emit is not None and run_id is not None:
                self._emit(
                    ExceptionEvent(
                        run_id,
                        time.time(),
                        escape_surrogates(type(error).__name__),
                        text,
                        trace,
                        category.value,
                        severity.value,
                        None if component is None else escape_surrogates(component),
                    )
                )
        except Exception:  # the handler itself must never raise into the caller
            self._failures += 1
            logger.exception("runwatch: handling an error failed")

    def get_error_counts(self) -> dict[str, dict[str, int]]:
        """Counts of handled errors: ``{"by_category": {...}, "by_severity": {...}}``."""
        with self._lock:
            return {"by_category": dict(self._by_category), "by_severity": dict(self._by_severity)}

    @property
    def total_errors(self) -> int:
        """How many errors were handled."""
        with self._lock:
            return sum(self._by_category.values())

    def statistics(self) -> dict[str, Any]:
        """Counts plus handler failures (for the pipeline view)."""
        return {**self.get_error_counts(), "total": self.total_errors, "handler_failures": self._failures}
