"""Tests for runwatch.wire.gojson: JSON and times as Go's encoding/json and time packages read and write them."""

from __future__ import annotations

import gzip
import math

import pytest

from runwatch.wire.gojson import (
    GoSyntaxError,
    Struct,
    decode_struct,
    dumps,
    format_epoch,
    free_form,
    go_float,
    parse_json,
    parse_time,
)

FIELDS = {"name": "string", "value": "number", "count": "integer", "tags": "strings", "data": "object", "at": "time"}


@pytest.mark.parametrize(
    ("body", "first_value", "expected"),
    [
        pytest.param(b'  {"a": 1}\n', False, {"a": 1}, id="whitespace"),
        pytest.param(b'{"a":1} junk', True, {"a": 1}, id="first-value-ignores-trailing-data"),
        pytest.param(b"null", False, None, id="null"),
        pytest.param(b'{"a":1,"a":2}', False, {"a": 2}, id="duplicate-keys-last-wins"),
        pytest.param(b'"\xff"', False, "\ufffd", id="invalid-utf8-in-a-string"),
        pytest.param(b'"\xe2\x82"', False, "\ufffd\ufffd", id="one-replacement-per-byte"),
    ],
)
def test_parse_json_reads_as_go_does(body: bytes, first_value: bool, expected: object) -> None:
    """Whitespace, a first value with trailing data, null, duplicate keys and invalid UTF-8 read as Go reads them."""
    assert free_form(parse_json(body, first_value=first_value)) == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b'{"a":1}{"b":2}', id="trailing-data"),
        pytest.param(b'{"a":NaN}', id="nan"),
        pytest.param(b'{"a":Infinity}', id="infinity"),
        pytest.param(b"\xef\xbb\xbf{}", id="byte-order-mark"),
        pytest.param(b'{"a":"\x01"}', id="control-character"),
        pytest.param(gzip.compress(b"{}"), id="binary"),
    ],
)
def test_parse_json_refuses_what_go_refuses(body: bytes) -> None:
    """An empty body, trailing data, NaN/Infinity, a BOM, a raw control character and binary are syntax errors."""
    with pytest.raises(GoSyntaxError):
        parse_json(body)


def test_free_form_numbers_are_float64_values() -> None:
    """Integers within 64 bits stay exact ints; beyond, they become Go's float64; beyond float64 is an error;
    a lone surrogate escape becomes U+FFFD; -0 keeps its sign."""
    document = parse_json(b'{"i":12,"big":12345678901234567890,"s":"\\ud800x","neg":-0}')
    assert free_form(document) == {"i": 12, "big": 1.2345678901234567e19, "s": "\ufffdx", "neg": -0.0}
    assert math.copysign(1.0, free_form(document)["neg"]) == -1.0
    with pytest.raises(ValueError, match="out of range"):
        free_form(parse_json(b'{"x":1e400}'))


def test_decode_struct_matches_keys_in_any_case_and_skips_unknown_ones() -> None:
    """Keys match fields case-insensitively (the Kelvin sign and long s fold too), the last wins, unknown keys
    are skipped unread (even a number beyond float64)."""
    document = parse_json('{"NAME":"a","Value":2,"ſtate":1,"name":"b","junk":1e400,"\u212aind":"x"}'.encode())
    values, ok = decode_struct(document, {**FIELDS, "state": "integer", "kind": "string"})
    assert ok and values == {"name": "b", "value": 2.0, "state": 1, "kind": "x"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b'{"value":"1"}', "value", id="string-for-number"),
        pytest.param(b'{"value":true}', "value", id="bool-for-number"),
        pytest.param(b'{"count":12.0}', "count", id="fraction-for-integer"),
        pytest.param(b'{"count":1e2}', "count", id="exponent-for-integer"),
        pytest.param(b'{"count":9223372036854775808}', "count", id="integer-beyond-64-bits"),
        pytest.param(b'{"tags":["a",1]}', "tags", id="number-in-strings"),
        pytest.param(b'{"data":[1]}', "data", id="array-for-object"),
        pytest.param(b'{"at":"2020-01-01T00:00:00"}', "at", id="time-without-offset"),
        pytest.param(b'{"at":"2020\\u002d01-01T00:00:00Z"}', "at", id="escaped-time"),
        pytest.param(b'{"at":1577836800}', "at", id="epoch-time"),
    ],
)
def test_decode_struct_reports_type_errors_and_goes_on(body: bytes, field: str) -> None:
    """A wrongly typed field is a type error: left out, the other fields still decoded."""
    values, ok = decode_struct(parse_json(body[:-1] + b',"name":"kept"}'), FIELDS)
    assert not ok and field not in values and values["name"] == "kept"


def test_decode_struct_null_clears_lists_objects_and_times_and_keeps_scalars() -> None:
    """null leaves a string or number as it was and sets a list, object or time to absent (None)."""
    document = parse_json(b'{"name":"a","name":null,"value":null,"tags":null,"data":null,"at":null}')
    assert decode_struct(document, FIELDS) == ({"name": "a", "tags": None, "data": None, "at": None}, True)
    assert decode_struct(None, FIELDS) == ({}, True)
    assert decode_struct(parse_json(b"[1]"), FIELDS) == ({}, False)


@pytest.mark.parametrize(
    ("text", "printed", "epoch"),
    [
        pytest.param("2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z", 1577836800.0, id="utc"),
        pytest.param("2020-01-01T00:00:00.5+00:00", "2020-01-01T00:00:00.5Z", 1577836800.5, id="zero-offset-is-Z"),
        pytest.param(
            "2020-01-02T03:04:05.123456789+02:00",
            "2020-01-02T03:04:05.123456789+02:00",
            1577927045.123456789,
            id="offset-and-nanoseconds-kept",
        ),
        pytest.param("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", -62135596800.0, id="go-zero-time"),
        pytest.param("2020-01-01T1:02:03,25Z", "2020-01-01T01:02:03.25Z", 1577840523.25, id="go-leniency"),
        pytest.param("2024-02-29T00:00:00.1234567891Z", "2024-02-29T00:00:00.123456789Z", 1709164800.123457, id="leap"),
    ],
)
def test_parse_time_reads_rfc3339_as_go_does(text: str, printed: str, epoch: float) -> None:
    """Go's RFC 3339 reading: offset kept, zero offset printed Z, nanoseconds, the zero time, Go's leniencies."""
    parsed = parse_time(text)
    assert parsed is not None and parsed.text == printed and parsed.epoch == pytest.approx(epoch, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2020-01-01T00:00:00",
        "2020-01-01 00:00:00Z",
        "2020-01-01t00:00:00z",
        "2020-02-30T00:00:00Z",
        "2020-13-01T00:00:00Z",
        "2020-01-01T24:00:00Z",
        "2020-01-01T00:00:60Z",
        "2020-01-01T00:00:00.Z",
        "2020-01-01T00:00:00+24:00",
        "",
        "20-01-01T00:00:00Z",
    ],
)
def test_parse_time_refuses_what_go_refuses(text: str) -> None:
    """No offset, a space or lowercase separator, impossible dates and times are refused (and an offset hour
    of 24, which Go reads but cannot print)."""
    assert parse_time(text) is None


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (5.0, "5"),
        (1.5, "1.5"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1.5e-7, "1.5e-7"),
        (0.00001, "0.00001"),
        (-0.0, "-0"),
        (12345678901234567890.0, "12345678901234567000"),
        (0.016666666666666666, "0.016666666666666666"),
        (-1234.5, "-1234.5"),
    ],
)
def test_go_float_prints_as_encoding_json_does(value: float, printed: str) -> None:
    """Floats print with the shortest digits, positional below 1e21 and at least 1e-6, exponent otherwise."""
    assert go_float(value) == printed


def test_dumps_writes_structs_in_order_maps_sorted_and_escapes_html() -> None:
    """Structs keep their field order, maps sort their keys, <, > and & and U+2028 are escaped, a newline ends it."""
    document = Struct(b=1, a={"z": 1, "a": [True, None, "<&>\u2028\n\x08"]})
    assert dumps(document) == b'{"b":1,"a":{"a":[true,null,"\\u003c\\u0026\\u003e\\u2028\\n\\b"],"z":1}}\n'


def test_format_epoch_prints_utc_with_microseconds() -> None:
    """Server times print as Go prints a UTC time: Z, the fraction without trailing zeros."""
    assert format_epoch(1577836800.25) == "2020-01-01T00:00:00.25Z"
    assert format_epoch(1577836800.0) == "2020-01-01T00:00:00Z"
    assert format_epoch(-62135596800.0) == "0001-01-01T00:00:00Z"
