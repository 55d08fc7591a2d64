"""JSON payloads of events: copied, checked and weighed once, at construction (pure).

An event's payload (a log event's ``data``, a state patch, a run's config or
metadata) is copied so a caller who reuses its dict cannot change an event
waiting in a queue, checked so that everything accepted can be stored and
sent (JSON types, 64-bit integers, no lone surrogates, bounded nesting), and
weighed: :attr:`Payload.nbytes` estimates the memory the copy holds, so the
pipeline's buffers can bound their bytes without walking an event again.

Values that are not JSON types but stand for one are converted: numpy
scalars and 0-d arrays (or any 0-d value with ``.item()``, such as a 0-d
tensor) become the Python value they hold, ``str`` subclasses (``numpy.str_``)
become ``str``, ``int``/``float`` subclasses become ``int``/``float``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_JSON_DEPTH",
    "Payload",
    "check_text",
    "copy_payload",
    "escape_surrogates",
    "shown",
    "text_nbytes",
]

#: Upper bound on nesting of JSON payloads (data, state, config).
MAX_JSON_DEPTH: Final = 64

#: Integers stored in SQLite columns (steps, counters) and JSON payloads are 64-bit.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# Estimated memory of copied values in CPython (64-bit), from sys.getsizeof:
# a dict ~128 bytes plus ~24 per item, a list 56 plus 8 per item, a str 49 plus
# its length (ASCII; up to 4 bytes a character otherwise), a float 24, an int
# outside the small-int cache 32. True, False, None and small ints are shared.
_DICT_NBYTES: Final = 128
_DICT_ITEM_NBYTES: Final = 24
_LIST_NBYTES: Final = 56
_LIST_ITEM_NBYTES: Final = 8
_STR_NBYTES: Final = 49
_FLOAT_NBYTES: Final = 24
_INT_NBYTES: Final = 32


_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlevel = 3
_SHOWN.maxdict = _SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxset = 4


def shown(value: object) -> str:
    """A value for an error message: its repr cut to about 80 characters and 3 levels.

    A caller's value may be a megabyte string or a structure nested a thousand
    levels deep; ``repr()`` of it would flood the message (or recurse too deep).
    """
    if type(value) is int and value.bit_length() > 128:  # repr() of a huge int is slow, or refused
        return f"an integer of {value.bit_length()} bits"
    return _SHOWN.repr(value)


def cut(path: str) -> str:
    """A field path for an error message, cut to 200 characters (keys may be huge)."""
    return path if len(path) <= 200 else path[:200] + "..."


class Payload(dict[str, Any]):
    """A payload copied by an event constructor; ``nbytes`` estimates the memory it holds.

    It is an ordinary ``dict`` in every other way (``orjson`` and ``json``
    serialise it as one); an event never changes it.
    """

    __slots__ = ("nbytes",)

    nbytes: int


class _Refused(Exception):
    """A value the payload cannot hold; ``path`` is filled in on the way out (only for errors)."""

    def __init__(self, kind: type[Exception], reason: str) -> None:
        self.kind = kind
        self.reason = reason
        self.path: list[str] = []


def check_text(what: str, text: str) -> None:
    """Refuse a string with a lone surrogate (what ``os.fsdecode`` gives for a
    file name that is not UTF-8): neither JSON nor SQLite can hold it.

    Raises:
        ValueError: naming ``what``.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} must be valid unicode (no lone surrogates), got {shown(text)}") from None


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as ``\\udcxx``: for text runwatch takes from
    exceptions and log records (a file name that is not UTF-8), which must not be refused."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def text_nbytes(text: str) -> int:
    """The estimated memory of a string."""
    return _STR_NBYTES + (len(text) if text.isascii() else 4 * len(text))


def copy_payload(what: str, value: Mapping[str, Any], *, depth: int = 0) -> Payload:
    """A checked copy of the JSON object ``value``, with its estimated size.

    Args:
        what: the field's name, for error messages (``data``, ``patch``...).
        value: a mapping of string keys to JSON-compatible values.
        depth: how deep ``value`` will sit inside an event's payload (its
            nesting counts from there: a session's own metadata sits one
            level down in its run's metadata).

    Raises:
        TypeError: a non-string key or a value JSON cannot hold, naming its
            path (``patch.game_state.frames[3]``).
        ValueError: an integer beyond 64 bits, a lone surrogate in a key or
            string, or nesting deeper than :data:`MAX_JSON_DEPTH`, naming its path.
    """
    size = [0]
    out = Payload()
    try:
        _copy_into(out, value, depth, size)
    except _Refused as refused:
        raise refused.kind(f"{cut(what + ''.join(reversed(refused.path)))} {refused.reason}") from None
    except RecursionError:  # a mapping whose keys or items misbehave without end
        raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    out.nbytes = size[0]
    return out


def _copy_into(out: dict[str, Any], value: Mapping[str, Any], depth: int, size: list[int]) -> None:
    size[0] += _DICT_NBYTES + _DICT_ITEM_NBYTES * len(value)
    for key, item in value.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise _Refused(TypeError, f"keys must be strings, got {shown(key)}")
            key = str(key)
        if not key.isascii():
            _check_surrogates(key, "keys ")
        size[0] += _STR_NBYTES + len(key)
        try:
            out[key] = _copy(item, depth + 1, size)
        except _Refused as refused:
            refused.path.append(f".{key}")
            raise


def _copy(value: Any, depth: int, size: list[int]) -> Any:
    # Paths are built only for an error, so a clean payload costs one type test per value.
    kind = type(value)
    if kind is str:
        if not value.isascii():
            _check_surrogates(value, "")
            size[0] += 3 * len(value)
        size[0] += _STR_NBYTES + len(value)
        return value
    if kind is float:
        size[0] += _FLOAT_NBYTES
        return value  # non-finite floats are stored as null in JSON payloads
    if kind is bool or value is None:
        return value
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise _Refused(ValueError, f"must fit in 64 bits, got {shown(value)}")
        if not -5 <= value <= 256:
            size[0] += _INT_NBYTES
        return value
    if depth > MAX_JSON_DEPTH:
        raise _Refused(ValueError, f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, Mapping):
        copy: dict[str, Any] = {}
        _copy_into(copy, value, depth, size)
        return copy
    if kind is list or kind is tuple or isinstance(value, (list, tuple)):
        size[0] += _LIST_NBYTES + _LIST_ITEM_NBYTES * len(value)
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_copy(item, depth + 1, size))
            except _Refused as refused:
                refused.path.append(f"[{index}]")
                raise
        return items
    return _copy(_plain(value), depth + 1, size)


def _plain(value: Any) -> Any:
    """The JSON type a stand-in holds: numpy scalars, 0-d arrays and tensors, str/int/float subclasses.

    numpy is never imported: its scalars and 0-d arrays are recognised by ``item()`` and an empty shape.
    """
    if isinstance(value, str):
        return str(value)
    item = getattr(value, "item", None)
    if item is not None and callable(item) and getattr(value, "shape", None) == ():
        plain = item()
        if type(plain) in (str, float, int, bool) or plain is None:
            return plain
    elif isinstance(value, int):
        return int(value)
    elif isinstance(value, float):
        return float(value)
    raise _Refused(TypeError, f"must be JSON-compatible, got {type(value).__name__}")


def _check_surrogates(text: str, prefix: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(ValueError, f"{prefix}must be valid unicode (no lone surrogates), got {shown(text)}") from None
