"""The monitor's argument checks, run ids and closing line (pure: no I/O)."""

from __future__ import annotations

import operator
import shlex
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..events import check_storable

__all__ = ["check_media_name", "closing_hint", "describe", "integer", "last_step", "new_run_id", "number"]


def describe(error: BaseException) -> str:
    """``str(error)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(error)
    except Exception:
        return f"<unprintable {type(error).__name__}>"


def number(name: str, value: Any) -> float:
    """A number argument as a float (never a string, bytes, ``None`` or ``bool``)."""
    if isinstance(value, (str, bytes)) or value is None or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None


def integer(name: str, value: Any) -> int:
    """An integer argument: ``int`` or a numpy integer (never ``bool``)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def last_step(summary: Mapping[str, Any]) -> int:
    """The global step a resumed run continues from: the highest last step of its metrics (-1: none)."""
    steps = [stats.get("last_step") for stats in summary.get("metrics", {}).values()]
    return max((step for step in steps if isinstance(step, int)), default=-1)


def check_media_name(name: object) -> None:
    """An image or histogram series name: a non-empty string the store can keep."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    check_storable("name", name)


def closing_hint(db_path: str, run_ids: list[str]) -> str:
    """One line telling how to see a script's runs again after it ended (the store path quoted for the shell).

    Example: ``runwatch: run 'r1' is stored in runs.db; to see it again: runwatch serve --db runs.db``.
    """
    store = shlex.quote(db_path)
    if len(run_ids) == 1:
        what, them = f"run {run_ids[0]!r} is", "it"
    else:
        what, them = f"{len(run_ids)} runs are", "them"
    return f"runwatch: {what} stored in {db_path}; to see {them} again: runwatch serve --db {store}"


def new_run_id() -> str:
    """A sortable, unique run id: ``run-YYYYMMDD-HHMMSS-xxxxxx``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{uuid.uuid4().hex[:6]}"
