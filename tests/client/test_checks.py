"""Tests of runwatch.client._checks: argument checks at the call and payload copies."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable

import pytest

from runwatch.client import (
    DatacatClient,
    exception_data,
)

from ._doubles import TIMEOUT, FakeServer, open_client


def test_payloads_are_copied_so_later_changes_do_not_leak(client: DatacatClient, fake: FakeServer) -> None:
    """A dict changed after the call is sent as it was at the call."""
    data = {"nested": {"list": [1, 2]}, "n": 1}
    client.log_event("s0", "e", data)
    data["nested"]["list"].append(3)
    data["n"] = 2
    fake.operations["s0"] = []
    assert client.flush(TIMEOUT)
    assert fake.operations["s0"][0]["data"] == {"nested": {"list": [1, 2]}, "n": 1}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda c: c.log_event("", "e"), TypeError, "session_id", id="empty-session-id"),
        pytest.param(lambda c: c.log_event(None, "e"), TypeError, "session_id", id="none-session-id"),
        pytest.param(lambda c: c.log_event("s", 3), TypeError, "name", id="name-not-str"),
        pytest.param(lambda c: c.log_event("s", ""), ValueError, "name", id="empty-name"),
        pytest.param(lambda c: c.log_metric("s", "m" * 201, 1.0), ValueError, "1 to 200", id="long-name"),
        pytest.param(lambda c: c.log_event("s", "e", [1]), TypeError, "data must be a dict", id="data-list"),
        pytest.param(lambda c: c.log_event("s", "e", {"x": object()}), TypeError, r"data\.x", id="data-object"),
        pytest.param(
            lambda c: c.log_event("s", "e", {"a": [{"b": math.nan}]}),
            ValueError,
            r"data\.a\[0\]\.b",
            id="data-nan-path",
        ),
        pytest.param(lambda c: c.log_event("s", "e", {1: 2}), TypeError, "keys must be strings", id="data-int-key"),
        pytest.param(lambda c: c.log_event("s", "e", level="loud"), ValueError, "level", id="bad-level"),
        pytest.param(lambda c: c.log_event("s", "e", 5), TypeError, "category a string", id="category-int"),
        pytest.param(
            lambda c: c.log_event("s", "e", {"a": 1}, data={}), TypeError, "data given twice", id="data-twice"
        ),
        pytest.param(
            lambda c: c.log_event("s", "e", {}, "info", level="info"), TypeError, "level given", id="lvl-twice"
        ),
        pytest.param(lambda c: c.log_event("s", "e", group=3), TypeError, "group", id="group-int"),
        pytest.param(lambda c: c.log_event("s", "e", labels="a"), TypeError, "labels", id="labels-str"),
        pytest.param(lambda c: c.log_event("s", "e", stacktrace=[1]), TypeError, "stacktrace", id="stacktrace-ints"),
        pytest.param(lambda c: c.log_event("s", "e", source_line=1.5), TypeError, "source_line", id="line-float"),
        pytest.param(lambda c: c.log_metric("s", "m", 1, count=2.5), TypeError, "count", id="count-float"),
        pytest.param(lambda c: c.log_metric("s", "m", 1, count=-1), ValueError, "count", id="count-negative"),
        pytest.param(lambda c: c.log_metric("s", "m", 1, metric_type=3), TypeError, "metric_type", id="type-int"),
        pytest.param(lambda c: c.log_metric("s", "m", 1, unit=3), TypeError, "unit", id="unit-int"),
        pytest.param(lambda c: c.log_metric("s", "m", 1, metadata=[1]), TypeError, "metadata", id="metadata-list"),
        pytest.param(lambda c: c.log_metric("s", "m", 0, delta=1), ValueError, "delta", id="delta-on-a-gauge"),
        pytest.param(
            lambda c: c.log_metric("s", "m", 0, metric_type="counter", delta=math.nan),
            ValueError,
            "finite",
            id="delta-nan",
        ),
        pytest.param(
            lambda c: c.log_metric("s", "m", 1, metric_type="histogram", metadata={"buckets": [1, math.inf]}),
            ValueError,
            "finite",
            id="buckets-inf",
        ),
        pytest.param(
            lambda c: c.log_metric("s", "m", 1, metric_type="histogram", metadata={"buckets": []}),
            ValueError,
            "at least one",
            id="buckets-empty",
        ),
        pytest.param(lambda c: c.log_exception("s", (1, 2)), TypeError, "exc_info", id="exc-info-pair"),
        pytest.param(lambda c: c.log_metric("s", "m", "1"), TypeError, "real number", id="value-str"),
        pytest.param(lambda c: c.log_metric("s", "m", True), TypeError, "real number", id="value-bool"),
        pytest.param(lambda c: c.log_metric("s", "m", math.inf), ValueError, "finite", id="value-inf"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags="a"), TypeError, "tags", id="tags-str"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags=[1]), TypeError, "tags", id="tags-int"),
        pytest.param(lambda c: c.update_state("s", "running"), TypeError, "state must be a dict", id="state-str"),
        pytest.param(lambda c: c.log_exception("s"), ValueError, "no.*exception|none is being", id="no-exception"),
        pytest.param(
            lambda c: c.log_event("s", "e", {"files": ["ok", "f\udcff"]}),
            ValueError,
            r"^data\.files\[1\] must be valid unicode",
            id="data-lone-surrogate",
        ),
        pytest.param(
            lambda c: c.update_state("s", {"f\udcff": 1}), ValueError, r"^state keys must be valid", id="state-key"
        ),
        pytest.param(lambda c: c.log_event("s", "e\udcff"), ValueError, "name must be valid unicode", id="name-lone"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags=["\udcff"]), ValueError, "tags", id="tag-lone"),
    ],
)
@pytest.mark.parametrize("blocking", [pytest.param(True, id="blocking"), pytest.param(False, id="non-blocking")])
def test_bad_arguments_raise_at_the_call(
    fake: FakeServer, blocking: bool, call: Callable[[DatacatClient], None], error: type[Exception], match: str
) -> None:
    """A caller's mistake raises TypeError/ValueError at the call in both modes, and nothing is queued."""
    with open_client(fake, blocking=blocking) as client:
        with pytest.raises(error, match=match):
            call(client)
        assert client.statistics().queued == 0
    assert fake.requests == []


def test_numpy_scalars_are_accepted_as_numbers() -> None:
    """numpy integers, floats and bools are converted to JSON numbers and booleans."""
    numpy = pytest.importorskip("numpy")
    fake = FakeServer()
    fake.operations["s"] = []
    with open_client(fake) as client:
        client.log_metric("s", "m", numpy.float32(0.5))
        client.log_event("s", "e", {"i": numpy.int64(3), "f": numpy.float64(1.5), "b": numpy.bool_(True)})
        assert client.flush(TIMEOUT)
    metric, event = fake.operations["s"]
    assert metric["value"] == 0.5
    assert event["data"] == {"i": 3, "f": 1.5, "b": True}


def test_exception_data_has_type_message_traceback_and_extra() -> None:
    """The exception event's data names the type and message, carries the traceback and the extra keys."""
    try:
        raise KeyError("missing")
    except KeyError:
        data = exception_data(extra_data={"context": "user_action", "type": "ignored"})
    assert data["type"] == "KeyError"
    assert data["message"] == "'missing'"
    assert "Traceback (most recent call last)" in data["traceback"]
    assert 'raise KeyError("missing")' in data["traceback"]
    assert data["context"] == "user_action"


def test_exception_data_escapes_a_non_utf8_file_name_instead_of_refusing_it() -> None:
    """An exception whose message holds a lone surrogate is logged with it escaped as \\udcxx."""
    name = os.fsdecode(b"ckpt_\xff.pt")
    data = exception_data(ValueError(f"cannot load {name}"))
    assert data["message"] == "cannot load ckpt_\\udcff.pt"
    json.dumps(data, ensure_ascii=False).encode()  # encodable: the batch it joins can be sent


def test_exception_data_accepts_an_exception_instance_and_an_unprintable_one() -> None:
    """An exception object works as exc_info, even one whose __str__ raises."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    data = exception_data(Unprintable())
    assert data["type"] == "Unprintable"
    assert data["message"] == "<unprintable Unprintable>"
