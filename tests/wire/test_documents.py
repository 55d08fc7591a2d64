"""Numbers JSON cannot hold, both ways: NaN as null, ±Inf as "Infinity"/"-Infinity"."""

from __future__ import annotations

import math

import orjson
import pytest

from runwatch.exceptions import WireError
from runwatch.wire import json_number, number_from_json
from runwatch.wire.ingest import parse_ingest_body


def test_infinities_go_out_as_strings_and_come_back_as_floats() -> None:
    """±Inf survive a trip through JSON; finite numbers and integers pass unchanged."""
    values = [math.inf, -math.inf, 1.5, -0.0, 7, 2**63 - 1]
    text = orjson.dumps([json_number(value) for value in values])
    assert orjson.loads(text)[:2] == ["Infinity", "-Infinity"]
    back = [number_from_json(value) for value in orjson.loads(text)]
    assert back == values and [type(value) for value in back] == [type(value) for value in values]


def test_nan_goes_out_as_null_and_other_values_come_back_as_they_are() -> None:
    """NaN is null (each reader decides what null means); other strings and null are left alone."""
    assert json_number(math.nan) is None
    assert number_from_json(None) is None
    assert number_from_json("NaN") == "NaN" and number_from_json("inf") == "inf"
    assert number_from_json({"Infinity": 1}) == {"Infinity": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            b'{"events":[{"kind":"metric","run_id":"r","timestamp":1,"values":{"loss":18446744073709551616}}]}',
            "events[0].values.loss",
        ),
        (
            b'[{"kind":"log","run_id":"r","timestamp":1,"type":"x"},{"kind":"metric","run_id":"r","timestamp":1,"values":{"a":1},"step":-18446744073709551616}]',
            "[1].step",
        ),
        (str(2**64).encode(), None),
    ],
)
def test_an_integer_beyond_64_bits_is_refused_naming_its_field(body: bytes, field: str | None) -> None:
    """422 with the path of the first integer that does not fit in 64 bits (the whole document when it is one)."""
    with pytest.raises(WireError) as caught:
        parse_ingest_body(body, 100)
    assert caught.value.status == 422 and caught.value.field == field
    assert "does not fit in 64 bits" in caught.value.message


def test_digits_inside_strings_and_integers_within_64_bits_are_taken() -> None:
    """A 24-digit string (which makes the body be searched for wide integers) and 64-bit limits are taken."""
    data = b'{"s":"123456789012345678901234","low":-9223372036854775808,"high":9223372036854775807}'
    body = b'[{"kind":"log","run_id":"r","timestamp":1,"type":"x","data":' + data + b"}]"
    assert len(parse_ingest_body(body, 100).events) == 1
