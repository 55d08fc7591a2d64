"""Numbers JSON cannot hold, both ways: NaN as null, ±Inf as "Infinity"/"-Infinity"."""

from __future__ import annotations

import math

import orjson

from runwatch.wire import json_number, number_from_json


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
