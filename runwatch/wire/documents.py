"""JSON documents on the wire: parsing a body, numbers JSON cannot hold, serialising once.

JSON has no NaN or ±Inf: on the wire a NaN is ``null`` and ±Inf are
``"Infinity"``/``"-Infinity"`` (:func:`json_number`, and back: :func:`number_from_json`). orjson reads an integer
literal past 64 bits as a float, so :func:`loads_json` refuses those instead
of storing ``10**30`` as ``1e30`` without a word.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import orjson

from .._payload import INT64_MIN
from ..exceptions import WireError

__all__ = [
    "NON_FINITE_FROM_JSON",
    "UINT64_MAX",
    "dumps",
    "json_number",
    "json_type",
    "loads_json",
    "number_from_json",
    "parse_document",
]

#: Integers beyond this are refused (beyond int64 too, later, naming the field).
UINT64_MAX: Final = 2**64 - 1
# Every ASCII digit to "0", every other byte to " ": a run of 20 digits is then a plain substring search
# (a regex tries up to 20 digits at each digit of a body full of timestamps: 15x slower).
_DIGITS_AS_ZEROS: Final = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_TWENTY_ZEROS: Final = b"0" * 20
#: JSON's stand-ins for ±Inf, back to floats (NaN is ``null``, which each reader takes in its own way).
NON_FINITE_FROM_JSON: Final = {"Infinity": math.inf, "-Infinity": -math.inf}


def json_number(value: float | None) -> float | str | None:
    """A number for JSON: NaN → ``None``, ±Inf → ``"Infinity"``/``"-Infinity"``."""
    if value is None or value - value == 0.0:
        return value
    if value != value:
        return None
    return "Infinity" if value > 0 else "-Infinity"


def number_from_json(value: Any) -> Any:
    """``"Infinity"``/``"-Infinity"`` back to ±Inf; any other value as it is (``null`` stays ``None``)."""
    return NON_FINITE_FROM_JSON.get(value, value) if type(value) is str else value


def loads_json(body: bytes) -> Any:
    """Parse a request body with orjson, refusing integers beyond 64 bits.

    Such literals have at least 20 digits, so only a body with a run of 20
    digits is parsed again, by the standard library, to find them (digits
    inside strings are not integers there).

    Raises:
        orjson.JSONDecodeError: malformed JSON.
        WireError: 422 for an integer beyond 64 bits, or a document nested too deeply.
    """
    document = orjson.loads(body)
    if _TWENTY_ZEROS in body.translate(_DIGITS_AS_ZEROS):
        try:
            wide = _first_wide_integer(json.loads(body), "")
        except RecursionError:
            raise WireError(422, "the document is nested too deeply") from None
        if wide is not None:
            path, value = wide
            text = str(value)[:40]
            raise WireError(
                422,
                f"{path}: integer {text} does not fit in 64 bits"
                if path
                else f"integer {text} does not fit in 64 bits",
                path or None,
            )
    return document


def _first_wide_integer(value: Any, path: str) -> tuple[str, int] | None:
    """The path (``events[3].values.loss``) and value of the first integer beyond 64 bits, or None."""
    if type(value) is int:
        return None if INT64_MIN <= value <= UINT64_MAX else (path, value)
    if isinstance(value, dict):
        items: Any = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _first_wide_integer(item, where)
        if found is not None:
            return found
    return None


def parse_document(body: bytes, *, empty: Any = None) -> Any:
    """The JSON document of a request body; an empty body is ``empty`` (when allowed).

    Raises:
        WireError: 400 for malformed JSON or a missing body; 422 as :func:`loads_json`.
    """
    if not body.strip():
        if empty is None:
            raise WireError(400, "a JSON body is required")
        return empty
    try:
        return loads_json(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"malformed JSON: {exc}") from None


def json_type(value: Any) -> str:
    """How a JSON value is named in an error message (``an object``, ``a number``...)."""
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(value), "a number")


def _default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars inside event data
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(document: Any) -> str:
    """``document`` as JSON text (numpy scalars as numbers; NaN and ±Inf as ``null``).

    Raises:
        TypeError: the document holds a value JSON cannot (orjson.JSONEncodeError).
    """
    return orjson.dumps(document, default=_default).decode()
