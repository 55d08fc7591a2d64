"""Argument checks at the call (pure): a caller's mistake raises TypeError or ValueError here,
before anything is queued or sent, and payloads are copied so later changes do not leak in."""

from __future__ import annotations

import math
import numbers
import sys
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import Any

__all__ = [
    "LEVELS",
    "MAX_JSON_DEPTH",
    "MAX_NAME_LENGTH",
    "check_bounds",
    "check_count",
    "check_level",
    "check_mapping",
    "check_name",
    "check_session_id",
    "check_strings",
    "check_tags",
    "check_unicode",
    "escaped",
    "is_unicode",
    "check_text",
    "check_value",
    "exception_fields",
    "json_copy",
    "resolve_exc_info",
]

#: Log levels runwatch's server accepts (runwatch.events.LEVELS).
LEVELS = ("debug", "info", "warning", "error", "critical")
#: The longest event or metric name the server takes.
MAX_NAME_LENGTH = 200
#: Nesting limit of JSON payloads (runwatch.events.MAX_JSON_DEPTH).
MAX_JSON_DEPTH = 64


def check_session_id(session_id: object) -> None:
    """A session id: a non-empty string."""
    if type(session_id) is not str or not session_id:
        raise TypeError(f"session_id must be a non-empty string, got {session_id!r}")


def check_name(what: str, name: object) -> None:
    """An event or metric name: a string of 1 to ``MAX_NAME_LENGTH`` characters."""
    if type(name) is not str:
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    check_unicode(what, name)


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8: no lone surrogate (what ``os.fsdecode`` gives for a
    file name that is not UTF-8), which the server refuses and JSON cannot carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_unicode(what: str, text: str) -> None:
    """A string without lone surrogates."""
    if not is_unicode(text):
        raise ValueError(f"{what} must be valid unicode (no lone surrogates), got {text!r}")


def escaped(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\udcxx``."""
    return text if is_unicode(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_value(name: str, value: object) -> float | int:
    """A metric value: a finite real number (numpy scalars work); bool is refused."""
    kind = type(value)
    if kind is not float and kind is not int:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"metric {name!r} must be a real number, got {type(value).__name__}")
        value = float(value)
    # value is a float or an int by now; `kind is` tests are the fast path, and mypy does not narrow them
    if not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(f"metric {name!r} must be finite (JSON has no NaN or infinity), got {value!r}")
    return value  # type: ignore[return-value]


def check_tags(tags: object) -> list[str]:
    """Tags: a list (or tuple) of strings; returns a list copy."""
    if type(tags) is not list and type(tags) is not tuple:
        if isinstance(tags, (str, bytes)) or not isinstance(tags, (list, tuple)):
            raise TypeError(f"tags must be a list of strings, got {type(tags).__name__}")
    for tag in tags:
        if type(tag) is not str:
            raise TypeError(f"tags must be strings, got {type(tag).__name__} {tag!r}")
        check_unicode("tags", tag)
    return list(tags)


def check_level(level: object) -> None:
    """A log level: one of ``LEVELS``."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {level!r}")


_ATOMIC = frozenset({int, bool, type(None)})


class _InvalidJSON(Exception):
    """A value JSON cannot carry; ``path`` is filled in (innermost first) on the way out."""

    def __init__(self, kind: type[Exception], reason: str) -> None:
        self.kind = kind
        self.reason = reason
        self.path: list[str] = []


def json_copy(what: str, value: Any) -> Any:
    """A copy of ``value`` made of JSON types only, so later changes by the caller do not leak in.

    Raises:
        TypeError: a value JSON cannot carry, or a non-string key (the message names its path).
        ValueError: NaN or infinity, a string with a lone surrogate, or nesting deeper than
            ``MAX_JSON_DEPTH``.
    """
    try:
        return _copy(value, 0)
    except _InvalidJSON as exc:
        raise exc.kind(f"{what}{''.join(reversed(exc.path))} {exc.reason}") from None


def _copy(value: Any, depth: int) -> Any:
    # Hot path of log_event/update_state: atomic values are checked inline and
    # paths are built only for an error, so a small dict costs well under a microsecond.
    kind = type(value)
    if kind in _ATOMIC or (kind is str and value.isascii()):
        return value
    if kind is str:
        if is_unicode(value):
            return value
        raise _InvalidJSON(ValueError, f"must be valid unicode (no lone surrogates), got {value!r}")
    if kind is float:
        if math.isfinite(value):
            return value
        raise _InvalidJSON(ValueError, f"must be finite (JSON has no NaN or infinity), got {value!r}")
    if depth >= MAX_JSON_DEPTH:
        raise _InvalidJSON(ValueError, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if kind is dict or isinstance(value, Mapping):
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _InvalidJSON(TypeError, f"keys must be strings, got {type(key).__name__} {key!r}")
            if not (key.isascii() or is_unicode(key)):
                raise _InvalidJSON(ValueError, f"keys must be valid unicode (no lone surrogates), got {key!r}")
            kind = type(item)
            if kind is str:
                if item.isascii():  # constant time: the common string needs no further check
                    copy[key] = item
                    continue
            elif kind in _ATOMIC:
                copy[key] = item
                continue
            try:
                copy[key] = _copy(item, depth + 1)
            except _InvalidJSON as exc:
                exc.path.append(f".{key}")
                raise
        return copy
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        items = []
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str:
                if item.isascii():
                    items.append(item)
                    continue
            elif kind in _ATOMIC:
                items.append(item)
                continue
            try:
                items.append(_copy(item, depth + 1))
            except _InvalidJSON as exc:
                exc.path.append(f"[{index}]")
                raise
        return items
    if kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_"):  # numpy bool is no int
        return bool(value)
    if isinstance(value, numbers.Integral):  # numpy integers
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats
        return _copy(float(value), depth)
    if isinstance(value, str):
        return _copy(str(value), depth)
    raise _InvalidJSON(TypeError, f"must hold JSON values only, got {type(value).__name__}")


def check_mapping(what: str, value: object) -> dict[str, Any]:
    """A dict of JSON values; returns a deep copy."""
    if type(value) is not dict and not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    copy: dict[str, Any] = json_copy(what, value)
    return copy


def check_text(what: str, value: object) -> str:
    """A string field (``group``, ``message``, ``unit``...)."""
    if type(value) is not str:
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def check_strings(what: str, value: object) -> list[str]:
    """A list (or tuple) of strings (``labels``, ``stacktrace``); returns a list copy."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of strings, got {type(value).__name__}")
    for item in value:
        if type(item) is not str:
            raise TypeError(f"{what} must hold strings, got {type(item).__name__} {item!r}")
    return list(value)


def check_count(what: str, value: object) -> int:
    """A count: an integer >= 0 (numpy integers work); bool is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return int(value)


def check_bounds(value: object) -> tuple[float, ...]:
    """Histogram bucket bounds: finite numbers, at least one; returns them sorted."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"buckets must be a list of numbers, got {type(value).__name__}")
    if not value:
        raise ValueError("buckets must hold at least one bound")
    return tuple(sorted(check_value("buckets", bound) for bound in value))


def resolve_exc_info(exc_info: Any) -> tuple[type[BaseException], BaseException, TracebackType | None]:
    """``(type, value, traceback)`` from a tuple, an exception, or ``None`` (the exception being handled).

    Raises:
        ValueError: ``None`` and no exception is being handled.
        TypeError: neither a 3-tuple nor an exception.
    """
    if exc_info is None:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or len(exc_info) != 3:
        raise TypeError(f"exc_info must be an exception or a (type, value, traceback) tuple, got {exc_info!r}")
    exc_type, exc_value, exc_tb = exc_info
    if exc_type is None or exc_value is None:
        raise ValueError("log_exception() needs an exception: none is being handled")
    return exc_type, exc_value, exc_tb


def exception_fields(exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fields of an ``exception`` event, as datacat's client sends them.

    ``name`` ``exception``, level ``error``, ``group`` ``exception``, ``labels``
    ``["exception", <type>]``, ``message`` and ``exception_msg`` the exception's
    text, ``data`` the extra data, ``stacktrace`` the formatted lines, and the
    innermost frame's ``source_file``, ``source_line`` and ``source_function``.

    Raises:
        ValueError: no exception is given and none is being handled.
        TypeError: ``exc_info`` is neither, or ``extra_data`` is not JSON.
    """
    exc_type, exc_value, exc_tb = resolve_exc_info(exc_info)
    data = check_mapping("extra_data", extra_data) if extra_data is not None else {}
    try:
        message = str(exc_value)
    except Exception:  # an exception whose __str__ raises must still be logged
        message = f"<unprintable {exc_type.__name__}>"
    # An exception about a file name that is not UTF-8 holds lone surrogates: escaped, never refused.
    message = escaped(message)
    type_name = escaped(exc_type.__name__)
    fields: dict[str, Any] = {
        "name": "exception",
        "data": data,
        "level": "error",
        "group": "exception",
        "labels": ["exception", type_name],
        "message": message,
        "stacktrace": [escaped(line) for line in traceback.format_exception(exc_type, exc_value, exc_tb)],
        "exception_type": type_name,
        "exception_msg": message,
    }
    innermost = exc_tb
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    if innermost is not None:
        fields["source_file"] = escaped(innermost.tb_frame.f_code.co_filename)
        fields["source_line"] = innermost.tb_lineno
        fields["source_function"] = innermost.tb_frame.f_code.co_name
    return fields
