"""The process around the monitors: open monitors are closed at interpreter exit, and let go in a forked child."""

from __future__ import annotations

import atexit
import os
import sys
import traceback
import weakref
from types import TracebackType
from typing import Protocol

__all__ = ["ClosedAtExit", "forget", "install_exit_hooks", "remember"]


class ClosedAtExit(Protocol):
    """A monitor as the process hooks see it."""

    def _close(self, failure: BaseException | None) -> None:
        """Finish the active run (failed with ``failure``, else completed) and stop."""

    def _after_fork_in_child(self) -> None:
        """Let go of the pipeline thread, which a forked child does not have."""


def remember(monitor: ClosedAtExit) -> None:
    """Close ``monitor`` at interpreter exit unless it is closed before."""
    _open_monitors.add(monitor)


def forget(monitor: ClosedAtExit) -> None:
    """``monitor`` is closed: nothing to do at exit."""
    _open_monitors.discard(monitor)


# Monitors still open at interpreter exit are closed there: an uncaught
# exception marks their active run failed, a normal exit completes it.
_open_monitors: weakref.WeakSet[ClosedAtExit] = weakref.WeakSet()
_uncaught: list[BaseException] = []
_previous_excepthook = sys.excepthook


def _remember_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _uncaught.append(exc)
    _previous_excepthook(exc_type, exc, tb)


def _after_fork_in_child() -> None:
    for monitor in list(_open_monitors):
        try:
            monitor._after_fork_in_child()
        except Exception:  # never break the child's fork
            pass
    # A forked child has no pipeline thread: its copies must not try to close it at exit.
    _open_monitors.clear()


def _close_open_monitors() -> None:
    failure = _uncaught[-1] if _uncaught else None
    for monitor in list(_open_monitors):
        try:
            monitor._close(failure)
        except Exception:
            traceback.print_exc()


_hooks_installed = False


def install_exit_hooks() -> None:
    """Once per process, on the first monitor (importing runwatch changes nothing)."""
    global _hooks_installed, _previous_excepthook
    if _hooks_installed:
        return
    _hooks_installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _remember_uncaught
    atexit.register(_close_open_monitors)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
