"""Images and histograms on the ingest wire: what a remote producer sends comes back as the same event,
and an image whose bytes are not what its fields say is refused, naming the field."""

from __future__ import annotations

import base64
import hashlib
import io
import math
from typing import Any

import orjson
import pytest
from PIL import Image

from runwatch.events import HistogramEvent, ImageEvent
from runwatch.exceptions import WireError
from runwatch.wire import event_to_ingest, event_to_wire, parse_ingest_body

TS = 1_790_000_000.25


def png_bytes() -> bytes:
    """A 3×2 PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_event(data: bytes | None = None) -> ImageEvent:
    """An image event as the media worker makes it."""
    data = png_bytes() if data is None else data
    return ImageEvent("r", TS, "frame", 4, data, "image/png", 3, 2, hashlib.sha256(data).hexdigest(), "cap")


def through_ingest(*items: dict[str, Any]) -> list[Any]:
    """The events a server takes from a body of these wire items."""
    return parse_ingest_body(orjson.dumps({"batch_id": "b-1", "events": list(items)}), 100).events


def test_an_image_travels_to_ingest_with_its_bytes_and_comes_back_the_same() -> None:
    """event_to_ingest carries the bytes in base64 (event_to_wire, for subscribers, still leaves them out)."""
    event = image_event()
    wire = event_to_ingest(event)
    assert base64.b64decode(wire["data"]) == event.data and "data" not in event_to_wire(event)
    assert through_ingest(wire) == [event]


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(HistogramEvent("r", TS, "q", 7, 6, 1, 1, 0, 0.5, 2.5, 3.0, 0.5, 2.5, (2, 0, 2)), id="with bins"),
        pytest.param(
            HistogramEvent("r", TS, "q", None, 2, 1, 0, 1, None, None, 0.0, None, None, ()), id="no finite value"
        ),
        pytest.param(
            HistogramEvent("r", TS, "q", 1, 2, 0, 0, 0, 1e308, 1.7e308, math.inf, 1e308, 1.7e308, (1, 1)),
            id="a sum past the float range",
        ),
    ],
)
def test_a_histogram_travels_to_ingest_and_comes_back_the_same(event: HistogramEvent) -> None:
    """A histogram's wire form (a sum of +Inf as "Infinity") is taken back as the same event."""
    assert through_ingest(event_to_ingest(event)) == [event]


def test_integral_numbers_of_another_producer_are_taken() -> None:
    """A producer that writes 3 for 3.0 (min, max, edges, sum, time) is understood."""
    wire = event_to_ingest(HistogramEvent("r", TS, "q", 7, 2, 0, 0, 0, 1.0, 3.0, 4.0, 1.0, 3.0, (1, 1)))
    wire.update(min=1, max=3, low=1, high=3, sum=4, timestamp=1_790_000_000)
    (event,) = through_ingest(wire)
    assert event.min == 1.0 and type(event.min) is float and event.sum == 4.0 and event.timestamp == 1_790_000_000.0


@pytest.mark.parametrize(
    ("change", "field", "match"),
    [
        pytest.param({"data": "not base64!"}, "data", "base64", id="not base64"),
        pytest.param({"data": 12}, "data", "base64", id="not text"),
        pytest.param({"data": ""}, "data", "non-empty", id="no bytes"),
        pytest.param({"digest": "ab" * 32}, "digest", "SHA-256", id="another content's digest"),
        pytest.param({"mime": "image/jpeg"}, "mime", "not 'image/jpeg'", id="a PNG said to be a JPEG"),
        pytest.param({"width": 0}, "width", "width", id="zero width"),
        pytest.param({"colour": "red"}, "colour", "unknown field", id="unknown field"),
    ],
)
def test_an_image_that_is_not_what_it_says_is_refused(change: dict[str, Any], field: str, match: str) -> None:
    """A 422 names the field: bytes that are not base64, not the digest's content, not the mime's type."""
    wire = event_to_ingest(image_event()) | change
    with pytest.raises(WireError, match=match) as caught:
        through_ingest(wire)
    assert caught.value.status == 422 and caught.value.field == f"events[0].{field}"


def test_bytes_that_are_no_image_are_refused() -> None:
    """Text under a digest of its own is neither PNG nor JPEG: refused, naming mime."""
    event = image_event(b"GIF89a-not-ours")
    with pytest.raises(WireError, match="neither PNG nor JPEG") as caught:
        through_ingest(event_to_ingest(event))
    assert caught.value.field == "events[0].mime"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"counts": "1,1"}, "counts", id="counts not a list"),
        pytest.param({"counts": [1, -1]}, "counts", id="a negative count"),
        pytest.param({"sum": "lots"}, "sum", id="sum not a number"),
        pytest.param({"size": 3}, "size", id="size not the counts added up"),
    ],
)
def test_a_histogram_with_bad_fields_is_refused(change: dict[str, Any], field: str) -> None:
    """A histogram's fields are checked by the event's own constructor, naming the field."""
    wire = event_to_ingest(HistogramEvent("r", TS, "q", 7, 2, 0, 0, 0, 1.0, 3.0, 4.0, 1.0, 3.0, (1, 1))) | change
    with pytest.raises(WireError) as caught:
        through_ingest(wire)
    assert caught.value.status == 422 and caught.value.field == f"events[0].{field}"


def test_an_image_body_carries_the_image_raw_and_decodes_to_the_same_event() -> None:
    """image_body puts the bytes raw after one line of JSON; parse_image_body gives back the same image as a
    batch of one, its digest that of the line (so a retry of the same image under the same id is a duplicate)."""
    from runwatch.wire.ingest import image_body, parse_image_body

    event = image_event()
    body = image_body("b7", event)
    line, _, raw = body.partition(b"\n")
    parsed = parse_image_body(body)
    assert raw == event.data and b"data" not in orjson.loads(line)["event"]
    assert parsed.events == [event] and parsed.batch_id == "b7"
    assert parse_image_body(image_body("b7", event)).digest == parsed.digest


def test_an_image_crosses_the_bus_by_its_object_name_and_wrong_bytes_are_left_out() -> None:
    """On the bus an image's item names its object (by message id) instead of carrying bytes: decoded, it waits
    as a PendingImage; with its bytes it is the image again; bytes that are not its own are left out, counted."""
    from runwatch.events import Metric
    from runwatch.wire.bus import PendingImage, decode_batch, encode_batch, image_blob_names, with_image_bytes

    event = image_event()
    metric = Metric(event.run_id, event.timestamp, {"loss": 1.0}, 1)
    body = encode_batch(event.run_id, "b1", "d1", 1.0, [metric, event], msg_id="m1")
    batch = decode_batch(body)
    assert type(batch.events[1]) is PendingImage and image_blob_names(batch) == ["m1.0"]
    assert with_image_bytes(batch, {"m1.0": event.data}) == (batch._replace(events=[metric, event]), 0)
    assert with_image_bytes(batch, {"m1.0": png_bytes()[:-1] + b"\x00"}) == (batch._replace(events=[metric]), 1)
    assert with_image_bytes(batch, {}) == (batch._replace(events=[metric]), 1)
    live_only = decode_batch(encode_batch(event.run_id, "b1", "d1", 1.0, [metric, event]))
    assert live_only.events == [metric]  # no object holds its bytes: left out
