"""Tests for runwatch.errors: ErrorHandler on its own, with an emit callable instead of a monitor."""

from __future__ import annotations

from runwatch.errors import ErrorCategory, ErrorHandler, ErrorSeverity
from runwatch.events import ExceptionEvent


def test_error_handler_emits_exception_events_of_the_current_run_through_its_callable() -> None:
    """A handled error becomes an ExceptionEvent of the run the callable names, handed to emit."""
    emitted: list[ExceptionEvent] = []
    handler = ErrorHandler(emitted.append, lambda: "run-1")
    handler.handle_error(KeyError("k"), category=ErrorCategory.DATABASE, severity=ErrorSeverity.WARNING, component="db")
    (event,) = emitted
    assert (event.run_id, event.error_type, event.category, event.severity, event.component) == (
        "run-1",
        "KeyError",
        "database",
        "warning",
        "db",
    )
    assert handler.get_error_counts() == {"by_category": {"database": 1}, "by_severity": {"warning": 1}}


def test_error_handler_without_a_run_or_emit_only_counts() -> None:
    """No active run (or no emit at all): nothing is emitted, the error is still counted."""
    emitted: list[ExceptionEvent] = []
    ErrorHandler(emitted.append, lambda: None).handle_error(ValueError("x"))
    bare = ErrorHandler()
    bare.handle_error(ValueError("y"))
    assert emitted == []
    assert bare.total_errors == 1
