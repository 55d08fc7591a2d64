"""The checks of the events' fields: run ids, names, timestamps, levels, steps and metric values (pure).

Each raises a ``TypeError`` or ``ValueError`` naming the bad field; the
event constructors (:mod:`runwatch.events`, :mod:`runwatch.media_events`) call them.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, Final

from ._payload import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, check_text, shown

__all__ = [
    "LEVELS",
    "MAX_TIMESTAMP",
    "check_count",
    "check_int64",
    "check_level",
    "check_media_name",
    "check_media_step",
    "check_name",
    "check_run_id",
    "check_step",
    "check_storable",
    "check_timestamp",
    "copy_tags",
    "flatten_metrics",
    "to_float",
    "type_name",
]

#: Log levels, lowest first; the same names as :class:`ErrorSeverity`.
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_LEVEL_SET: Final = frozenset(LEVELS)


def check_run_id(run_id: object) -> None:
    """A run id: a non-empty string the store can keep."""
    if type(run_id) is not str or not run_id:
        raise TypeError(f"run_id must be a non-empty string, got {shown(run_id)}")
    check_storable("run_id", run_id)


def check_storable(what: str, text: str) -> None:
    """Refuse a name the store cannot keep: one with NUL (SQLite's JSON functions cut
    a string there, so ``a\\x00b`` would be stored as ``a``) or a lone surrogate (not
    UTF-8: neither SQLite nor JSON can hold it).

    Every constructor checks its run id and a log event's type, except
    :class:`~runwatch.events.Metric`, which leaves its run id and names to the store (a check
    per name would cost ~20% of the ~1 µs hot path): the store's encoder drops
    such a metric alone, counted as ``unencodable``. Metrics from the wire are
    checked by :func:`runwatch.wire.event_from_dict`, so a remote batch is refused whole.

    Raises:
        ValueError: naming ``what``.
    """
    if "\x00" in text:
        raise ValueError(f"{what} must not contain NUL characters, got {shown(text)}")
    check_text(what, text)


#: Timestamps are seconds since 1970 up to 2255 (what pandas' datetime64[ns] holds).
MAX_TIMESTAMP: Final = 9_000_000_000.0


def check_timestamp(timestamp: object, what: str = "timestamp") -> None:
    """Seconds since the epoch as a number, within what the store and pandas hold."""
    if type(timestamp) is not float and type(timestamp) is not int:
        raise TypeError(f"{what} must be seconds since the epoch as a float, got {shown(timestamp)}")
    if not 0.0 <= timestamp <= MAX_TIMESTAMP:  # also false for NaN
        raise ValueError(
            f"{what} must be seconds since the epoch between 0 and {MAX_TIMESTAMP:.0f}, got {shown(timestamp)}"
        )


def check_int64(what: str, value: int) -> int:
    """An integer that fits in 64 bits (what the store keeps), returned."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must fit in 64 bits, got {shown(value)}")
    return value


def check_name(what: str, name: object) -> None:
    """A non-empty string."""
    if type(name) is not str:
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")


def to_float(name: str, value: object) -> float:
    """Convert one metric value, accepting numpy scalars and 0-d tensors."""
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise TypeError(f"metric {shown(name)} must be a number, got {type(value).__name__} {shown(value)}")
    try:
        return float(value)  # type: ignore[arg-type]  # float() itself decides what is a number
    except OverflowError:
        raise ValueError(f"metric {shown(name)} is too large for a float: {shown(value)}") from None
    except (TypeError, ValueError):
        raise TypeError(f"metric {shown(name)} must be a number, got {type(value).__name__}") from None


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Validate metric values and flatten nested mappings to ``group/name``.

    Returns a new dict (the caller's mapping is never kept). ``int`` and
    ``float`` values are taken as they are; other numbers (``bool``, numpy
    scalars, 0-d tensors) are converted with ``float()``. NaN and ±Inf are legal.

    Raises:
        TypeError: a name that is not a string, or a value that is not a number.
        ValueError: an empty name, a name given twice (nested and flat), or no values at all.
    """
    if type(metrics) is dict:
        # The hot path: flat, plain string names, float or 64-bit int values.
        for name, value in metrics.items():
            kind = type(value)
            if kind is not float and (kind is not int or not INT64_MIN <= value <= INT64_MAX):
                break
            if type(name) is not str or not name:
                break
        else:
            if metrics:
                return metrics.copy()
    elif not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    _flatten_into(out, metrics, "", 0)
    if not out:
        raise ValueError("metrics must contain at least one value")
    return out


def _flatten_into(out: dict[str, float], metrics: Mapping[str, Any], prefix: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:  # also what a mapping that contains itself comes to
        raise ValueError(f"metrics are nested deeper than {MAX_JSON_DEPTH} levels (at {shown(prefix)})")
    for name, value in metrics.items():
        check_name("metric name", name)
        full_name = prefix + name
        if isinstance(value, Mapping):
            _flatten_into(out, value, full_name + "/", depth + 1)
            continue
        if full_name in out:  # a nested name and a flat one that flatten alike: neither may be lost silently
            raise ValueError(f"metric {shown(full_name)} is given twice (once nested, once as a flat name)")
        if type(value) is float or (type(value) is int and INT64_MIN <= value <= INT64_MAX):
            out[full_name] = value
        else:
            out[full_name] = to_float(full_name, value)


def check_level(level: object, what: str = "level") -> None:
    """One of :data:`LEVELS`."""
    if type(level) is not str:
        raise TypeError(f"{what} must be a string, got {shown(level)}")
    if level not in _LEVEL_SET:
        if what == "level":
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {shown(level)}")
        raise ValueError(f"{what} must be one of the levels {', '.join(LEVELS)}; got {shown(level)}")


def check_step(step: object) -> int:
    """A step: an integer (numpy integers too, never ``bool``) that fits in 64 bits."""
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer or None, got {shown(step)}")
    try:
        value = operator.index(step)  # type: ignore[arg-type]  # index() decides: int, numpy integers
    except TypeError:
        raise TypeError(f"step must be an integer or None, got {shown(step)}") from None
    return check_int64("step", value)


def copy_tags(what: str, tags: object) -> dict[str, str]:
    """A copy of a mapping of string to string."""
    if not isinstance(tags, Mapping):
        raise TypeError(f"{what} must be a mapping of string to string, got {type(tags).__name__}")
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(f"{what} must map strings to strings, got {shown(key)}: {shown(value)}")
    return dict(tags)


def type_name(value: object) -> str:
    """The name of ``value``'s type, for messages."""
    return type(value).__name__


def check_media_name(name: object) -> None:
    """An image or histogram series name: a non-empty string the store can keep."""
    check_name("name", name)
    check_storable("name", name)  # type: ignore[arg-type]  # a str, checked above


def check_media_step(step: object) -> int | None:
    """An image's or histogram's step: ``None`` or a 64-bit integer."""
    if step is None or (type(step) is int and INT64_MIN <= step <= INT64_MAX):
        return step
    return check_step(step)


def check_count(what: str, value: object) -> None:
    """A count: a non-negative ``int``."""
    if type(value) is not int or value < 0:
        raise TypeError(f"{what} must be a non-negative integer, got {shown(value)}")
