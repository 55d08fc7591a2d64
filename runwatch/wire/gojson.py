"""JSON and times as Go's standard library reads and writes them (pure).

datacat's server is written in Go; its clients see exactly what Go's
``encoding/json`` and ``time`` packages accept and print. To be a drop-in
replacement, runwatch's datacat routes (:mod:`.datacat`) read and write with
the same rules, which differ from Python's in small ways a client can notice:

Reading (:func:`parse_json`, :func:`decode_struct`):

- object keys match a struct's fields case-insensitively (``"Product"``,
  ``"VERSION"``); unknown keys are skipped without being looked at; with
  duplicate keys the last one wins;
- a value of the wrong type is a *type error*: the field is left as it was
  and decoding goes on (the caller decides whether the error matters); a
  ``null`` leaves a string or number as it was and clears a list, object,
  count or time;
- an integer field refuses ``12.0`` and ``1e2``; a number field refuses
  ``true`` and ``"1"``; numbers beyond float64 are errors; ``NaN`` and
  ``Infinity`` are not JSON;
- invalid UTF-8 inside a string becomes U+FFFD per byte, and so does an
  escaped lone surrogate;
- a time is a JSON string holding RFC 3339 as Go's ``time.Parse`` reads it
  (the string's raw bytes: an escape sequence in it is an error).

Writing (:func:`dumps`): compact, one trailing newline; ``<``, ``>``, ``&``,
U+2028 and U+2029 escaped; map keys sorted, struct fields (:class:`Struct`)
in declaration order; every number printed as Go prints a float64 (``5``,
``1.5``, ``1e+21``, ``1e-7``), so integers past 2**53 come out rounded as
Go rounds them.
"""

from __future__ import annotations

import codecs
import json
import json.decoder
import json.scanner
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal, NamedTuple

from .._payload import INT64_MAX, INT64_MIN

__all__ = [
    "FieldKind",
    "GoObject",
    "GoSyntaxError",
    "GoTime",
    "Struct",
    "decode_struct",
    "dumps",
    "format_epoch",
    "free_form",
    "parse_json",
    "parse_time",
]


class GoSyntaxError(ValueError):
    """The bytes are not one JSON value as Go reads it (or the value is not wholly JSON)."""


# -- reading ---------------------------------------------------------------------------------------


class GoObject(dict[str, Any]):
    """A JSON object as parsed: a dict (the last of duplicate keys wins) that remembers its pairs in order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


class _Fraction(float):
    """A number written with a fraction or an exponent (Go refuses it for an integer field)."""

    __slots__ = ()


class _Escaped(str):
    """A string written with a backslash escape (Go's time parser sees the raw bytes, so it fails)."""

    __slots__ = ()


class _OutOfRange:
    """A number beyond float64: an error only where a field's value is decoded (skipped keys are not)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _per_byte_replacement(error: UnicodeError) -> tuple[str, int]:
    # Go decodes each byte of an invalid sequence to U+FFFD on its own; Python's "replace"
    # gives one U+FFFD per maximal invalid subsequence.
    assert isinstance(error, UnicodeDecodeError)
    return "\ufffd" * (error.end - error.start), error.end


_GO_REPLACE: Final = "runwatch.go-replace"
codecs.register_error(_GO_REPLACE, _per_byte_replacement)


def _parse_int(text: str) -> Any:
    if text == "-0":
        return _Fraction(-0.0)  # float64 -0: Go prints it "-0"
    try:
        value = int(text)
    except ValueError:  # more digits than Python converts: far beyond float64 anyway
        return _OutOfRange(text)
    if INT64_MIN <= value <= INT64_MAX:
        return value
    try:
        return float(value)  # Go reads every free-form number as a float64
    except OverflowError:
        return _OutOfRange(text)


def _parse_float(text: str) -> Any:
    value = float(text)
    if math.isinf(value):
        return _OutOfRange(text)
    return _Fraction(value)


def _refuse_constant(name: str) -> Any:
    raise GoSyntaxError(f"invalid character in JSON: {name}")


_scan_text: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def _scanstring(text: str, end: int, strict: bool = True) -> tuple[str, int]:
    value, after = _scan_text(text, end, strict)
    if "\\" in text[end : after - 1]:
        return _Escaped(value), after
    return value, after


def _decoder() -> json.JSONDecoder:
    decoder = json.JSONDecoder(
        object_pairs_hook=GoObject,
        parse_int=_parse_int,
        parse_float=_parse_float,
        parse_constant=_refuse_constant,
    )
    # The pure-Python scanner takes its string parser from the decoder; the C one would not.
    decoder.parse_string = _scanstring  # type: ignore[attr-defined]  # read by py_make_scanner
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


_DECODER: Final = _decoder()
_WHITESPACE: Final = re.compile(r"[ \t\n\r]*")


def parse_json(body: bytes, *, first_value: bool = False) -> Any:
    """Parse a request body as Go does: ``json.Unmarshal`` (the whole body is one value) or,
    with ``first_value``, ``json.Decoder.Decode`` (the first value; what follows it is not read).

    Objects are :class:`GoObject`; see :func:`free_form` and :func:`decode_struct` for the values.

    Raises:
        GoSyntaxError: not JSON (an empty body included), or trailing data without ``first_value``.
    """
    text = body.decode("utf-8", _GO_REPLACE)
    start = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]  # matches the empty string
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise GoSyntaxError(f"invalid JSON: {exc}") from None
    if not first_value and _WHITESPACE.match(text, end).end() != len(text):  # type: ignore[union-attr]
        raise GoSyntaxError("invalid character after the top-level value")
    return value


def _clean_text(value: str) -> str:
    if value.isascii():
        return str(value)
    # An escaped lone surrogate (\ud800) is not UTF-8: Go decodes it to U+FFFD.
    return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)


def free_form(value: Any) -> Any:
    """A parsed value as plain JSON data, as Go's ``interface{}`` holds it.

    Objects become plain dicts, strings lose lone surrogates, numbers are
    ``int`` (within 64 bits, exact; Go holds them as float64 and :func:`dumps`
    prints them so) or ``float``.

    Raises:
        ValueError: a number beyond float64.
    """
    if type(value) is GoObject:
        return {_clean_text(key): free_form(item) for key, item in value.items()}
    if isinstance(value, list):
        return [free_form(item) for item in value]
    if isinstance(value, str):
        return _clean_text(value)
    if type(value) is _Fraction:
        return float(value)
    if type(value) is _OutOfRange:
        raise ValueError(f"number {value.text[:40]} is out of range")
    return value


FieldKind = Literal["string", "number", "integer", "strings", "object", "time"]


def _fold(key: str) -> str:
    """Go matches keys to fields with Unicode simple case folding (``ſ`` is ``s``, the Kelvin sign ``k``)."""
    if key.isascii():
        return key.lower()
    return "".join(_fold_char(char) for char in key)


def _fold_char(char: str) -> str:
    upper = char.upper()
    if len(upper) != 1:  # "ß" has no one-character upper case: it folds to itself
        return char
    lower = upper.lower()
    return lower if len(lower) == 1 else upper


def _decode_field(kind: FieldKind, value: Any) -> tuple[Any, bool]:
    """One field's value: ``(decoded, ok)``; ``None`` decoded means "absent"."""
    if kind == "string":
        return (_clean_text(value), True) if isinstance(value, str) else (None, False)
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), True
        return None, False
    if kind == "integer":
        return (value, True) if type(value) is int else (None, False)
    if kind == "strings":
        if not isinstance(value, list):
            return None, False
        items = [_clean_text(item) if isinstance(item, str) else None for item in value]
        if any(item is None for item in items):
            return None, False
        return items, True
    if kind == "object":
        if type(value) is not GoObject:
            return None, False
        try:
            return free_form(value), True
        except ValueError:
            return None, False
    # time: the raw string must read as RFC 3339
    if not isinstance(value, str) or type(value) is _Escaped:
        return None, False
    parsed = parse_time(value)
    return parsed, parsed is not None


def decode_struct(document: Any, fields: Mapping[str, FieldKind]) -> tuple[dict[str, Any], bool]:
    """Decode a parsed document into a struct's fields as Go's ``encoding/json`` does.

    Args:
        document: from :func:`parse_json`.
        fields: the struct's JSON field names (lowercase) and kinds: ``string``,
            ``number`` (float64), ``integer`` (int), ``strings`` ([]string),
            ``object`` (map[string]interface{}), ``time`` (*time.Time).

    Returns:
        ``(values, ok)``: the fields that were set (a ``null`` list, object or
        time is set to ``None``), and whether decoding had no type error (a
        wrongly typed field is left out and decoding goes on, as Go does).
    """
    if document is None:
        return {}, True
    if type(document) is not GoObject:
        return {}, False
    by_fold = {_fold(name): name for name in fields}
    values: dict[str, Any] = {}
    ok = True
    for key, value in document.pairs:
        name = by_fold.get(_fold(key))
        if name is None:
            continue  # unknown keys are skipped unread
        kind = fields[name]
        if value is None:
            if kind in ("strings", "object", "time"):
                values[name] = None
            continue
        if type(value) is _OutOfRange:
            ok = False
            continue
        decoded, good = _decode_field(kind, value)
        if good:
            values[name] = decoded
        else:
            ok = False
    return values, ok


# -- times -----------------------------------------------------------------------------------------


class GoTime(NamedTuple):
    """A time as Go holds one parsed from RFC 3339.

    Attributes:
        text: how Go prints it (RFC 3339 with nanoseconds, trailing zeros of
            the fraction dropped, the offset kept, ``Z`` for a zero offset).
        epoch: seconds since the Unix epoch (negative before 1970; a float,
            so nanoseconds are approximate).
    """

    text: str
    epoch: float


_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in(month: int, year: int) -> int:
    return 29 if month == 2 and _leap(year) else _DAYS_IN_MONTH[month - 1]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (year 0 included)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _digits(text: str, start: int, count: int) -> int | None:
    part = text[start : start + count]
    if len(part) != count or not (part.isascii() and part.isdigit()):
        return None
    return int(part)


def parse_time(text: str) -> GoTime | None:
    """Parse RFC 3339 as Go's ``time.Time.UnmarshalJSON`` does; ``None`` when Go refuses it.

    Go's rules: a 4-digit year 0000-9999, 2-digit month and day (the day
    valid for its month), uppercase ``T``, a 1- or 2-digit hour, 2-digit
    minute and second (0-59), an optional fraction after ``.`` or ``,``
    (digits past the ninth are cut), then ``Z`` or ``±hh:mm``. Go accepts an
    offset hour of 24 or minute of 60 but then cannot print the time: those
    are refused here.
    """
    year = _digits(text, 0, 4)
    month = _digits(text, 5, 2)
    day = _digits(text, 8, 2)
    if year is None or month is None or day is None or text[4:5] != "-" or text[7:8] != "-" or text[10:11] != "T":
        return None
    if not 1 <= month <= 12 or not 1 <= day <= _days_in(month, year):
        return None
    position = 11
    hour = _digits(text, position, 2)
    if hour is None:
        hour = _digits(text, position, 1)
        position += 1
    else:
        position += 2
    if hour is None or hour > 23 or text[position : position + 1] != ":":
        return None
    minute = _digits(text, position + 1, 2)
    if minute is None or minute > 59 or text[position + 3 : position + 4] != ":":
        return None
    second = _digits(text, position + 4, 2)
    if second is None or second > 59:
        return None
    position += 6
    nanos = 0
    if text[position : position + 1] in (".", ",") and _digits(text, position + 1, 1) is not None:
        end = position + 1
        while end < len(text) and text[end].isascii() and text[end].isdigit():
            end += 1
        nanos = int(text[position + 1 : end][:9].ljust(9, "0"))
        position = end
    rest = text[position:]
    if rest == "Z":
        offset = 0
    else:
        if len(rest) != 6 or rest[0] not in "+-" or rest[3] != ":":
            return None
        offset_hours, offset_minutes = _digits(rest, 1, 2), _digits(rest, 4, 2)
        if offset_hours is None or offset_minutes is None or offset_hours > 23 or offset_minutes > 59:
            return None
        offset = (offset_hours * 60 + offset_minutes) * 60 * (-1 if rest[0] == "-" else 1)
    local = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    printed = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if nanos:
        printed += "." + f"{nanos:09d}".rstrip("0")
    printed += _zone(offset)
    return GoTime(printed, local - offset + nanos / 1e9)


def _zone(offset: int) -> str:
    if offset == 0:
        return "Z"
    sign = "-" if offset < 0 else "+"
    minutes = abs(offset) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def format_epoch(epoch: float) -> str:
    """Seconds since the epoch as Go prints a UTC time (microseconds: what a float keeps)."""
    micros_total = round(epoch * 1_000_000)
    seconds, micros = divmod(micros_total, 1_000_000)
    days, second_of_day = divmod(seconds, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(second_of_day, 3600)
    minute, second = divmod(rest, 60)
    printed = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    if micros:
        printed += "." + f"{micros:06d}".rstrip("0")
    return printed + "Z"


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    year = year_of_era + era * 400 + (month <= 2)
    return year, month, day


# -- writing ---------------------------------------------------------------------------------------


class Struct(dict[str, Any]):
    """An object written in its own key order (a Go struct); a plain dict is written with sorted keys (a Go map)."""

    __slots__ = ()


_encode_text: Callable[[str], str] = json.encoder.encode_basestring
_HTML_UNSAFE: Final = re.compile("[<>&\u2028\u2029]")
_HTML_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _text(value: str) -> str:
    # The standard library's escaper (ensure_ascii off) writes what Go writes, but for Go's HTML escapes.
    encoded = _encode_text(value)
    if _HTML_UNSAFE.search(value):
        encoded = _HTML_UNSAFE.sub(lambda match: _HTML_ESCAPES[match.group()], encoded)
    return encoded


def go_float(value: float) -> str:
    """A float64 as Go's ``encoding/json`` prints it (shortest round-trip digits)."""
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    digits, exponent = _shortest(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp = exponent - 1
        sign = "-" if exp < 0 else "+"
        # Go prints at least two exponent digits, then drops a leading zero from negative ones.
        exp_text = f"{abs(exp):02d}"
        if sign == "-" and exp_text.startswith("0"):
            exp_text = exp_text[1:]
        text = f"{mantissa}e{sign}{exp_text}"
    elif exponent <= 0:
        text = "0." + "0" * -exponent + digits
    elif exponent >= len(digits):
        text = digits + "0" * (exponent - len(digits))
    else:
        text = digits[:exponent] + "." + digits[exponent:]
    return "-" + text if value < 0 else text


def _shortest(value: float) -> tuple[str, int]:
    """The shortest round-trip decimal digits of ``|value|`` and the decimal point's position."""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    if fraction == "0":
        fraction = ""
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + (int(exp) if exp else 0)
    leading_zeros = len(whole + fraction) - len((whole + fraction).lstrip("0"))
    point -= leading_zeros
    return digits.rstrip("0") or "0", point


def _write(value: Any, out: list[str]) -> None:
    kind = type(value)
    if kind is str:
        out.append(_text(value))
    elif value is None:
        out.append("null")
    elif kind is bool:
        out.append("true" if value else "false")
    elif kind is int or kind is float:
        out.append(go_float(float(value)))
    elif kind is Struct or isinstance(value, Mapping):
        items: Iterable[tuple[str, Any]] = value.items() if kind is Struct else sorted(value.items())
        out.append("{")
        first = True
        for key, item in items:
            if not first:
                out.append(",")
            first = False
            out.append(_text(key))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, str):
        out.append(_text(str(value)))
    elif isinstance(value, (int, float)):
        out.append(go_float(float(value)))
    else:
        raise TypeError(f"{type(value).__name__} is not JSON data")


def dumps(value: Any) -> bytes:
    """``value`` as Go's ``json.NewEncoder(w).Encode`` writes it: compact, with a trailing newline."""
    out: list[str] = []
    _write(value, out)
    out.append("\n")
    return "".join(out).encode("utf-8")
