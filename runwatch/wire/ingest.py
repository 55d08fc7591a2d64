"""Ingest bodies: the batches remote producers send (``POST /api/ingest``, ``/ws/ingest``), and an image
that travels alone (``POST /api/ingest/image``).

A batch body is a JSON array of wire events, or ``{"batch_id", "events"}``.
It is validated completely before anything is taken: all of it, or nothing,
with a :class:`~runwatch.exceptions.WireError` naming the first bad field
(``events[3].values.loss``). See docs/protocol.md.

An image body (:data:`IMAGE_BODY_TYPE`) carries one image with its raw
PNG/JPEG bytes instead of base64 in JSON, for an image too large for a batch
(a batch body is bounded by the server's ``max_body_bytes``, 1 MiB by
default; this route by ``max_image_body_bytes``): one line of JSON,
``{"batch_id": ..., "event": <the image's wire form without data>}``, a
newline (``\n``), then the bytes. It is a batch of one event to the server:
the same batch key, digest and answers as ``POST /api/ingest``.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Final, NamedTuple

import orjson

from .._payload import shown
from ..events import LEVELS, MAX_TIMESTAMP, check_storable
from ..exceptions import WireError
from .documents import loads_json
from .events import event_from_wire, event_to_wire, image_from_wire

__all__ = [
    "IMAGE_BODY_TYPE",
    "IMAGE_INGEST_PATH",
    "INGEST_BODY_SCHEMA",
    "MAX_IMAGE_HEADER_BYTES",
    "IngestBody",
    "check_batch_id",
    "content_digest",
    "image_body",
    "parse_image_body",
    "parse_ingest_body",
]

#: Where an image travels alone, with its raw bytes.
IMAGE_INGEST_PATH: Final = "/api/ingest/image"
#: The Content-Type of an image body (see the module docs).
IMAGE_BODY_TYPE: Final = "application/vnd.runwatch.image"
#: The longest JSON line before an image body's bytes.
MAX_IMAGE_HEADER_BYTES: Final = 64 << 10


def content_digest(document: Any) -> str:
    """A digest of a batch's content (a JSON-compatible document), independent of key order.

    Raises:
        TypeError: the document is not JSON-compatible or nested deeper than 254 levels.
    """
    return hashlib.blake2b(orjson.dumps(document, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


# The JSON Schema of the wire events, for /openapi.json.
_TIMESTAMP = {
    "type": "number",
    "minimum": 0,
    "maximum": MAX_TIMESTAMP,
    "description": "seconds since the epoch; absent: when the server received the request",
}
#: Text the store can keep (no NUL: see :func:`runwatch.events.check_storable`), as a JSON Schema pattern.
_NO_NUL = "^[^\\u0000]*$"
_RUN_ID = {"type": "string", "minLength": 1, "pattern": _NO_NUL}
_INT64 = {"type": "integer", "format": "int64"}
_DETAIL = {
    "anyOf": [{"type": "object"}, {"type": "null"}],
    "description": "what the producer's protocol said beyond runwatch's fields (e.g. datacat's), kept as given",
}
_METRIC_VALUE = {"anyOf": [{"type": "number"}, {"type": "null"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_WIRE_EVENTS = [
    {
        "type": "object",
        "title": "metric",
        "required": ["kind", "run_id", "values"],
        "properties": {
            "kind": {"const": "metric"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "values": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"minLength": 1, "pattern": _NO_NUL},
                "additionalProperties": _METRIC_VALUE,
            },
            "step": {"anyOf": [_INT64, {"type": "null"}]},
            "tags": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "log",
        "required": ["kind", "run_id", "type"],
        "properties": {
            "kind": {"const": "log"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "type": {"type": "string", "minLength": 1, "pattern": _NO_NUL},
            "level": {"enum": list(LEVELS)},
            "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "detail": _DETAIL,
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "state",
        "required": ["kind", "run_id", "patch"],
        "properties": {
            "kind": {"const": "state"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "patch": {"type": "object"},
            "detail": _DETAIL,
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "heartbeat",
        "required": ["kind", "run_id"],
        "properties": {
            "kind": {"const": "heartbeat"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "counters": {"anyOf": [{"type": "object", "additionalProperties": _INT64}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "lifecycle",
        "required": ["kind", "run_id", "transition"],
        "properties": {
            "kind": {"const": "lifecycle"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "transition": {"enum": ["started", "paused", "resumed", "completed", "failed"]},
            "run_kind": {"type": "string", "minLength": 1, "pattern": _NO_NUL},
            "config": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "final_reward": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    # exception and alert events are accepted too (docs/protocol.md); not described here.
]
_EVENTS = {"type": "array", "items": {"oneOf": _WIRE_EVENTS}}
#: How /openapi.json describes an ingest body (validated by :func:`parse_ingest_body`, with its own messages).
INGEST_BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _EVENTS,
                        {
                            "type": "object",
                            "properties": {
                                "batch_id": {
                                    "anyOf": [
                                        {"type": "string", "minLength": 1, "maxLength": 200, "pattern": _NO_NUL},
                                        {"type": "null"},
                                    ]
                                },
                                "events": _EVENTS,
                            },
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                    ]
                }
            }
        },
    }
}


class IngestBody(NamedTuple):
    """A validated ingest body: its events, its batch id and the digest of its content."""

    events: list[Any]
    batch_id: str | None
    digest: str


def check_batch_id(batch_id: Any) -> str | None:
    """A request's ``batch_id``: ``None`` or 1 to 200 characters the store can keep.

    Raises:
        WireError: 422 naming ``batch_id``.
    """
    if batch_id is None:
        return None
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= 200:
        raise WireError(422, "batch_id must be a string of 1 to 200 characters", "batch_id")
    try:
        check_storable("batch_id", batch_id)
    except ValueError as exc:
        raise WireError(422, str(exc), "batch_id") from None
    return batch_id


def parse_ingest_body(body: bytes, max_events: int) -> IngestBody:
    """Validate an ingest body completely: all of it is taken, or nothing.

    Raises:
        WireError: 400 for malformed JSON, 422 naming the first bad field
            (``events[3].values.loss``; every event is checked before any is taken).
    """
    try:
        document = loads_json(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"malformed JSON: {exc}") from None
    batch_id = None
    if isinstance(document, dict):
        unknown = [key for key in document if key not in ("batch_id", "events")]
        if unknown:
            raise WireError(422, f"unknown field {shown(unknown[0])}", unknown[0][:200])
        batch_id = check_batch_id(document.get("batch_id"))
        items = document.get("events")
        prefix = "events"
    else:
        items, prefix = document, ""
    if not isinstance(items, list):
        raise WireError(422, "expected a JSON array of events (or an object with an events array)", prefix or None)
    if len(items) > max_events:
        raise WireError(413, f"at most {max_events} events per request, got {len(items)}", prefix or None)
    events = []
    received_at = time.time()  # the timestamp of events that carry none
    for index, item in enumerate(items):
        if isinstance(item, dict) and "timestamp" not in item:
            item = {**item, "timestamp": received_at}
        try:
            events.append(event_from_wire(item))
        except (TypeError, ValueError) as exc:
            where = f"{prefix}[{index}]"
            field = getattr(exc, "field", None)
            path = f"{where}.{field}" if field else where
            raise WireError(422, f"{path}: {exc}", path) from None
    # Valid events nest at most ~70 levels: the digest's serialisation (up to 254) cannot fail.
    return IngestBody(events, batch_id, content_digest(items))


def image_body(batch_id: str | None, image: Any) -> bytes:
    """The ``POST /api/ingest/image`` body of an :class:`~runwatch.events.ImageEvent` (see the module docs)."""
    header = orjson.dumps({"batch_id": batch_id, "event": event_to_wire(image)})
    return b"".join((header, b"\n", image.data))


def parse_image_body(body: bytes) -> IngestBody:
    """Validate an image body (see the module docs): a batch of that one image.

    Raises:
        WireError: 400 for a body without its JSON line, 422 naming the bad
            field (``event.digest``; ``event.data`` for the bytes).
    """
    end = body.find(b"\n", 0, MAX_IMAGE_HEADER_BYTES + 1)
    if end < 0:
        raise WireError(
            400, f"an image body starts with one line of JSON (at most {MAX_IMAGE_HEADER_BYTES} bytes) and a newline"
        )
    try:
        document = loads_json(body[:end])
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"malformed JSON in the image body's first line: {exc}") from None
    if not isinstance(document, dict):
        raise WireError(422, "the image body's first line must be an object {batch_id, event}")
    unknown = [key for key in document if key not in ("batch_id", "event")]
    if unknown:
        raise WireError(422, f"unknown field {shown(unknown[0])}", unknown[0][:200])
    batch_id = check_batch_id(document.get("batch_id"))
    item = document.get("event")
    if isinstance(item, dict) and "timestamp" not in item:
        item = {**item, "timestamp": time.time()}
    try:
        event = image_from_wire(item, body[end + 1 :])
    except (TypeError, ValueError) as exc:
        field = getattr(exc, "field", None)
        path = f"event.{field}" if field else "event"
        raise WireError(422, f"{path}: {exc}", path) from None
    # The digest names the content: the image's own SHA-256 is in its wire form.
    return IngestBody([event], batch_id, content_digest([item]))
