"""Events on the wire: their JSON forms out (websocket, snapshots, exports, plugins) and in (ingest).

The wire form of an event is its fields plus ``kind`` (see docs/protocol.md).
:func:`event_to_wire` makes it JSON-safe: NaN metric values as ``null``, ±Inf
as ``"Infinity"``/``"-Infinity"``; an image goes without its bytes (subscribers
fetch them by digest). :func:`event_to_ingest` is what a producer sends: the
same, with an image's bytes in base64. :func:`event_from_dict` builds an event
back from a wire form, validating every field with the event's own
constructor, so a wire event is checked by exactly the code that checks
``update_metrics``; its errors are ``TypeError``/``ValueError`` whose
``field`` attribute names the field.

An alert has one JSON form wherever it goes (:func:`alert_fields`): in a
websocket message, in the REST answers, in notifications.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Mapping
from enum import Enum
from typing import Any, Final

from .._payload import cut, shown
from ..events import EVENT_CLASSES, AlertEvent, Event, HistogramEvent, ImageEvent, Metric, check_storable
from .documents import json_number

__all__ = [
    "alert_fields",
    "alert_to_wire",
    "decode_wire_numbers",
    "event_from_dict",
    "event_from_wire",
    "event_to_dict",
    "event_to_ingest",
    "event_to_wire",
    "image_from_wire",
]


def event_to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event: its fields plus ``kind``."""
    out: dict[str, Any] = {"kind": event.kind}
    for name, value in zip(event._fields, event, strict=True):
        out[name] = value.value if isinstance(value, Enum) else value
    return out


def event_to_wire(event: Event) -> dict[str, Any]:
    """The JSON-safe wire form (see docs/protocol.md): like :func:`event_to_dict`,
    with NaN metric values as ``null`` and ±Inf as ``"Infinity"``/``"-Infinity"``."""
    if type(event) is Metric:  # the common case, without the generic field walk
        run_id, timestamp, values, step, tags = event
        wire_values: Mapping[str, float | str | None] = values
        total = sum(values.values())
        if total - total != 0.0:
            wire_values = {name: json_number(value) for name, value in values.items()}
        return {
            "kind": "metric",
            "run_id": run_id,
            "timestamp": timestamp,
            "values": wire_values,
            "step": step,
            "tags": tags,
        }
    if type(event) is AlertEvent:
        return {"kind": "alert", **alert_to_wire(event)}
    if type(event) is ImageEvent:  # subscribers fetch the bytes by digest
        wire = event_to_dict(event)
        del wire["data"]
        return wire
    if type(event) is HistogramEvent:  # a sum past the float range is +-Inf
        wire = event_to_dict(event)
        wire["sum"] = json_number(event.sum)
        return wire
    return event_to_dict(event)


def event_to_ingest(event: Event) -> dict[str, Any]:
    """The form a producer sends to ingest: :func:`event_to_wire`, with an image's bytes in ``data`` (base64)."""
    if type(event) is ImageEvent:
        wire = event_to_dict(event)
        wire["data"] = base64.b64encode(event.data).decode("ascii")
        return wire
    return event_to_wire(event)


def alert_fields(
    *,
    rule: str,
    run_id: str,
    state: str,
    severity: str,
    value: float | None,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    active_since: float | None,
) -> dict[str, Any]:
    """The JSON form of an alert (an instance's state, or one of its transitions).

    A ``value`` that is NaN or ±Inf has no JSON form: it is ``null`` (as every
    number but a metric value on the wire, see docs/protocol.md).
    """
    return {
        "rule": rule,
        "run_id": run_id,
        "state": state,
        "severity": severity,
        "value": value if value is None or value - value == 0.0 else None,
        "labels": dict(labels),
        "annotations": dict(annotations),
        "active_since": active_since,
    }


def alert_to_wire(alert: AlertEvent) -> dict[str, Any]:
    """An alert transition's JSON form: :func:`alert_fields` plus its ``timestamp``."""
    out = alert_fields(
        rule=alert.rule,
        run_id=alert.run_id,
        state=alert.state,
        severity=alert.severity,
        value=alert.value,
        labels=alert.labels,
        annotations=alert.annotations,
        active_since=alert.active_since,
    )
    out["timestamp"] = alert.timestamp
    return out


def event_from_dict(data: Mapping[str, Any], *, default_run_id: str | None = None) -> Event:
    """Build an event from its wire form, validating every field.

    Raises:
        TypeError / ValueError: naming the field that is wrong.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"an event must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    cls = EVENT_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise _naming(ValueError(f"kind must be one of {', '.join(EVENT_CLASSES)}; got {shown(kind)}"), "kind")
    if cls is Metric and data.keys() <= _METRIC_WIRE_KEYS and _METRIC_REQUIRED <= data.keys():
        return _metric_from_dict(data)  # the common case, without the generic field walk
    fields: tuple[str, ...] = cls._fields
    kwargs = {key: value for key, value in data.items() if key != "kind"}
    for key in kwargs:
        if key not in fields:
            raise _naming(ValueError(f"unknown field {shown(key)} for a {kind} event"), cut(str(key)))
    if "run_id" not in kwargs and default_run_id is not None:
        kwargs["run_id"] = default_run_id
    for name in fields:
        if name not in kwargs and name not in cls._field_defaults:
            raise _naming(ValueError(f"missing field {shown(name)} for a {kind} event"), name)
    if type(kwargs.get("timestamp")) is int:
        kwargs["timestamp"] = float(kwargs["timestamp"])
    try:
        event: Event = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        _naming(exc, _field_named_by(str(exc), fields))
        raise
    if cls is Metric:
        _check_metric_storable(event)  # type: ignore[arg-type]
    return event


_METRIC_WIRE_KEYS: Final = frozenset({"kind", *Metric._fields})
_METRIC_REQUIRED: Final = frozenset({"run_id", "timestamp", "values"})


def event_from_wire(item: Any) -> Event:
    """An event from an item of an ingest body: :func:`decode_wire_numbers`, then :func:`event_from_dict`.

    The common item, a metric of plain JSON numbers with every required field
    and no unknown one, goes straight to :class:`Metric` (the same checks,
    without the generic walks: ingest throughput is bounded by this).

    Raises:
        TypeError / ValueError: naming the field that is wrong.
    """
    kind = item.get("kind") if type(item) is dict else None
    if kind == "image":
        return _image_from_wire(item)
    if kind == "histogram":
        return _histogram_from_wire(item)
    if kind == "metric":
        values = item.get("values")
        if type(values) is dict and item.keys() <= _METRIC_WIRE_KEYS and _METRIC_REQUIRED <= item.keys():
            for value in values.values():
                kind = type(value)
                if kind is not float and kind is not int:  # a bool, "NaN", null...: decoded (or refused) below
                    break
            else:
                return _metric_from_dict(item)
    return event_from_dict(decode_wire_numbers(item))


_IMAGE_REQUIRED: Final = frozenset({"run_id", "timestamp", "name", "data", "mime", "width", "height", "digest"})
_HISTOGRAM_FLOATS: Final = ("min", "max", "low", "high")


def _media_fields(item: dict[str, Any], cls: type[Any], required: frozenset[str]) -> dict[str, Any]:
    """An image's or histogram's fields from the wire: no unknown one, every required one, times as floats."""
    fields: tuple[str, ...] = cls._fields
    for key in item:
        if key != "kind" and key not in fields:
            raise _naming(ValueError(f"unknown field {shown(key)} for a {cls.kind} event"), cut(str(key)))
    missing = sorted(required - item.keys())
    if missing:
        raise _naming(ValueError(f"missing field {shown(missing[0])} for a {cls.kind} event"), missing[0])
    out = {key: value for key, value in item.items() if key != "kind"}
    if type(out["timestamp"]) is int:
        out["timestamp"] = float(out["timestamp"])
    if type(out.get("step")) is float:
        out["step"] = _integral(out["step"])
    out.setdefault("step", None)
    return out


def _media_event(cls: type[Any], fields: dict[str, Any]) -> Event:
    try:
        event: Event = cls(**fields)
    except (TypeError, ValueError) as exc:
        _naming(exc, _field_named_by(str(exc), cls._fields))
        raise
    return event


def _image_from_wire(item: dict[str, Any]) -> Event:
    """An image from an ingest batch: its bytes in base64 in ``data`` (see :func:`image_from_wire`)."""
    from ..media.images import MAX_IMAGE_BYTES

    fields = _media_fields(item, ImageEvent, _IMAGE_REQUIRED)
    text = fields["data"]
    if type(text) is not str:
        raise _naming(TypeError(f"data must be the image's bytes in base64, got {shown(text)}"), "data")
    if len(text) > (MAX_IMAGE_BYTES + 2) // 3 * 4:
        raise _naming(ValueError(f"data holds more than the {MAX_IMAGE_BYTES} bytes an image may have"), "data")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _naming(ValueError("data must be the image's bytes in base64"), "data") from None
    return _checked_image(fields, data)


def image_from_wire(item: Any, data: bytes) -> Event:
    """An image whose bytes travel apart from its wire form (``POST /api/ingest/image``).

    ``item`` is the image's wire form without ``data`` (:func:`event_to_wire`).
    The producer has read the bytes as an image already (its media thread);
    here they must be what the event says they are: the SHA-256 of ``digest``
    (the store keeps a content once by it, so a wrong one would show another
    run's image) and a PNG or JPEG of the type ``mime`` names.

    Raises:
        TypeError / ValueError: naming the field that is wrong (``data``: the bytes).
    """
    from ..media.images import MAX_IMAGE_BYTES

    if type(item) is not dict:
        raise TypeError(f"an event must be a JSON object, got {type(item).__name__}")
    if item.get("kind", "image") != "image":
        raise _naming(ValueError(f"kind must be 'image' here, got {shown(item.get('kind'))}"), "kind")
    if "data" in item:
        raise _naming(ValueError("data travels as the body's bytes, not in the event"), "data")
    fields = _media_fields({**item, "data": b""}, ImageEvent, _IMAGE_REQUIRED)
    if len(data) > MAX_IMAGE_BYTES:
        raise _naming(ValueError(f"{len(data)} bytes is more than the {MAX_IMAGE_BYTES} an image may have"), "data")
    return _checked_image(fields, data)


def _checked_image(fields: dict[str, Any], data: bytes) -> Event:
    """The image event of ``fields`` with ``data``, its digest and media type checked against the bytes."""
    from ..media.images import image_mime

    fields["data"] = data
    digest = fields["digest"]
    if type(digest) is str and data and hashlib.sha256(data).hexdigest() != digest:
        raise _naming(ValueError(f"digest {shown(digest)} is not the SHA-256 of data"), "digest")
    mime = fields["mime"]
    found = image_mime(data)
    if data and type(mime) is str and found != mime:
        raise _naming(ValueError(f"data is {found or 'neither PNG nor JPEG'}, not {shown(mime)}"), "mime")
    return _media_event(ImageEvent, fields)


def _histogram_from_wire(item: dict[str, Any]) -> Event:
    """A histogram from the wire: ``sum`` may be ``"Infinity"``/``"-Infinity"``, integral floats are floats."""
    fields = _media_fields(item, HistogramEvent, frozenset(HistogramEvent._fields) - {"step"})
    total = fields["sum"]
    if total is None or total == "NaN":
        fields["sum"] = math.nan
    elif total in ("Infinity", "-Infinity"):
        fields["sum"] = math.inf if total == "Infinity" else -math.inf
    elif type(total) is not float and type(total) is not int:
        raise _naming(TypeError(f"sum must be a number, got {shown(total)}"), "sum")
    for name in _HISTOGRAM_FLOATS:
        if type(fields[name]) is int:
            fields[name] = float(fields[name])
    counts = fields["counts"]
    if type(counts) is not list:
        raise _naming(TypeError(f"counts must be a list of non-negative integers, got {shown(counts)}"), "counts")
    fields["counts"] = tuple(counts)
    return _media_event(HistogramEvent, fields)


def _metric_from_dict(data: Mapping[str, Any]) -> Metric:
    """:func:`event_from_dict` for a metric with every required field and no unknown one: the same checks."""
    timestamp = data["timestamp"]
    if type(timestamp) is int:
        timestamp = float(timestamp)
    step = data.get("step")
    if type(step) is float:
        step = _integral(step)
    try:
        event = Metric(data["run_id"], timestamp, data["values"], step, data.get("tags"))
    except (TypeError, ValueError) as exc:
        _naming(exc, _field_named_by(str(exc), Metric._fields))
        raise
    _check_metric_storable(event)
    return event


#: Run ids and metric names already found storable: they repeat in nearly every event of a batch.
_STORABLE: set[str] = set()
_STORABLE_MAX: Final = 100_000


def _check_metric_storable(metric: Metric) -> None:
    """The checks :class:`Metric` leaves to the store, for events from the wire: a bad
    run id or name refuses the whole batch instead of being dropped alone later."""
    known = _STORABLE
    run_id = metric.run_id
    if run_id not in known:
        try:
            check_storable("run_id", run_id)
        except ValueError as exc:
            raise _naming(exc, "run_id") from None
        _remember_storable(run_id)
    for name in metric.values:
        if name in known:
            continue
        try:
            check_storable(f"metric name {shown(name)}", name)
        except ValueError as exc:
            raise _naming(exc, cut(f"values.{name}")) from None
        _remember_storable(name)


def _remember_storable(text: str) -> None:
    if len(_STORABLE) >= _STORABLE_MAX:  # bounded: a producer of ever new names costs a check each, no memory
        _STORABLE.clear()
    _STORABLE.add(text)


def _naming(error: Exception, field: str | None) -> Exception:
    # The web layer reads ``field`` back with getattr to name it in the 4xx body.
    error.field = field  # type: ignore[attr-defined]
    return error


def _field_named_by(message: str, fields: tuple[str, ...]) -> str | None:
    """The field an error message is about (messages start with it), e.g. ``values.loss``.

    Number checks say ``metric 'name'``: a metric's value (``values.name``), or a
    numeric field of another kind (``final_reward``, an alert's ``value``).
    Metric mapping checks say ``metrics`` or ``metric name``: the ``values`` field.
    """
    if message.startswith("metric '"):
        name = message[len("metric '") :].split("'", 1)[0]
        if "values" in fields:
            return f"values.{name}"
        return name if name in fields else None
    if message.startswith(("metrics ", "metric name ")) and "values" in fields:
        return "values"
    first = message.split(" ", 1)[0]
    head = first.split(".", 1)[0].split("[", 1)[0]
    if head in fields:
        return first.rstrip(":")
    return None


def _integral(value: Any) -> Any:
    """``3.0`` as ``3`` (JSON Schema's integers include integral numbers written with a fraction).

    Only below 2**53, where a double is exact: orjson reads integer literals beyond
    64 bits as floats, and those must stay out of range (refused), not be rounded in.
    """
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _wire_integers(item: dict[str, Any]) -> dict[str, Any]:
    """Integer fields (a metric's ``step``, a heartbeat's ``counters``) given as integral floats become ints."""
    kind = item.get("kind")
    if kind == "metric" and type(item.get("step")) is float:
        return {**item, "step": _integral(item["step"])}
    counters = item.get("counters")
    if kind == "heartbeat" and isinstance(counters, dict) and any(type(v) is float for v in counters.values()):
        return {**item, "counters": {key: _integral(value) for key, value in counters.items()}}
    return item


def decode_wire_numbers(item: Any) -> Any:
    """Metric values may carry "NaN"/"Infinity"/"-Infinity" (JSON has no such numbers).

    On the wire a number is a JSON number: ``true``/``false`` where one is
    expected is refused (Python callers may pass bools; JSON producers mean
    something else).
    """
    if isinstance(item, dict):
        item = _wire_integers(item)
    if isinstance(item, dict) and item.get("kind") == "lifecycle" and isinstance(item.get("final_reward"), bool):
        raise _naming(TypeError("final_reward must be a number or null, got a boolean"), "final_reward")
    if isinstance(item, dict) and item.get("kind") == "metric" and isinstance(item.get("values"), dict):
        values = item["values"]
        for name, value in values.items():
            if isinstance(value, bool):
                raise _naming(
                    TypeError(f"metric {shown(name)} must be a number, got a boolean"), f"values.{name[:200]}"
                )
        if any(isinstance(value, str) or value is None for value in values.values()):
            decoded = {}
            for name, value in values.items():
                if value is None or value == "NaN":
                    decoded[name] = math.nan
                elif value == "Infinity":
                    decoded[name] = math.inf
                elif value == "-Infinity":
                    decoded[name] = -math.inf
                else:
                    decoded[name] = value
            return {**item, "values": decoded}
    return item
