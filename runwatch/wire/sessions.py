"""Session bodies: what the sessions REST API takes (see docs/sessions.md).

Pure functions: each validates a request's JSON document completely and
builds the events it stands for, or raises a
:class:`~runwatch.exceptions.WireError` naming the first bad field
(``operations[3].value``). The JSON Schemas describe the same bodies for
``/openapi.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._payload import copy_payload, shown
from ..events import (
    LEVELS,
    MAX_TIMESTAMP,
    Event,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    check_storable,
)
from ..exceptions import WireError
from ..session_events import encode_session_tags, session_metadata
from .documents import json_type
from .ingest import check_batch_id

__all__ = [
    "BATCH_BODY_SCHEMA",
    "CREATE_BODY_SCHEMA",
    "EMPTY_BODY_SCHEMA",
    "EVENT_FIELDS_SCHEMA",
    "METRIC_FIELDS_SCHEMA",
    "OPERATIONS",
    "batch_events",
    "build_event",
    "check_object",
    "check_no_unknown",
    "log_event",
    "metric_event",
    "parse_create_body",
    "state_event",
]

#: The operations of a ``/batch`` body.
OPERATIONS: Final = ("state", "event", "metric", "heartbeat", "end")


def check_object(document: Any, field: str | None, what: str) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise WireError(422, f"{what} must be a JSON object, got {json_type(document)}", field)
    return document


def check_no_unknown(document: Mapping[str, Any], known: tuple[str, ...], prefix: str = "") -> None:
    for key in document:
        if key not in known:
            field = (prefix + key)[:200]
            raise WireError(422, f"unknown field {shown(prefix + key)} (known: {', '.join(known)})", field)


def _optional_text(document: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
    value = document.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > 1000):
        raise WireError(422, f"{prefix + key} must be a string of at most 1000 characters or null", prefix + key)
    return value


def _seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10 * 365 * 86_400:
        raise WireError(422, f"{field} must be a positive number of seconds", field)
    return float(value)


_CREATE_FIELDS: Final = ("product", "version", "hostname", "metadata", "heartbeat_timeout_seconds")


def parse_create_body(document: Any) -> dict[str, Any]:
    """The ``runs.metadata`` of a new session from a ``POST /api/sessions`` body.

    Raises:
        WireError: 422 naming the first bad field.
    """
    document = check_object(document, None, "the body")
    check_no_unknown(document, _CREATE_FIELDS)
    metadata = document.get("metadata")
    if metadata is not None:
        check_object(metadata, "metadata", "metadata")
        try:  # as the session's lifecycle event will check it, one level down in the run's metadata
            metadata = copy_payload("metadata", metadata, depth=1)
        except (TypeError, ValueError) as exc:
            raise WireError(422, str(exc), "metadata") from None
    timeout = document.get("heartbeat_timeout_seconds")
    return session_metadata(
        product=_optional_text(document, "product"),
        version=_optional_text(document, "version"),
        hostname=_optional_text(document, "hostname"),
        metadata=metadata,
        heartbeat_timeout_seconds=None if timeout is None else _seconds(timeout, "heartbeat_timeout_seconds"),
    )


def _timestamp(document: Mapping[str, Any], now: float, prefix: str) -> float:
    value = document.get("timestamp")
    if value is None:
        return now
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TIMESTAMP:
        raise WireError(422, f"{prefix}timestamp must be seconds since the epoch", prefix + "timestamp")
    return float(value)


def build_event(fn: Callable[[], Event], field: str) -> Event:
    """Run an event constructor; its TypeError/ValueError (a payload too deep, an
    integer beyond 64 bits) becomes a 422 naming ``field`` (the message names the path)."""
    try:
        return fn()
    except (TypeError, ValueError) as exc:
        raise WireError(422, f"{field}: {exc}", field) from None


def state_event(session_id: str, patch: Any, now: float, field: str = "state") -> StatePatch:
    """A state patch (objects merge, lists and scalars replace, ``null`` deletes)."""
    patch = check_object(patch, field, field)
    event = build_event(lambda: StatePatch(session_id, now, patch), field)
    assert isinstance(event, StatePatch)
    return event


def _check_name(name: object, prefix: str) -> str:
    """An event or metric name: 1 to 200 characters the store can keep (no NUL, no lone surrogate)."""
    if not isinstance(name, str) or not name or len(name) > 200:
        raise WireError(422, f"{prefix}name must be a non-empty string of at most 200 characters", prefix + "name")
    try:
        check_storable(prefix + "name", name)
    except ValueError as exc:
        raise WireError(422, str(exc), prefix + "name") from None
    return name


def log_event(session_id: str, document: Mapping[str, Any], now: float, prefix: str = "") -> LogEvent:
    """A session event from ``{"name", "data", "level"}``."""
    name = _check_name(document.get("name"), prefix)
    data = document.get("data")
    if data is not None:
        check_object(data, prefix + "data", prefix + "data")
    level = document.get("level", "info")
    if level not in LEVELS:
        raise WireError(422, f"{prefix}level must be one of {', '.join(LEVELS)}", prefix + "level")
    event = build_event(lambda: LogEvent(session_id, now, name, level, data), prefix + "data")
    assert isinstance(event, LogEvent)
    return event


def metric_event(session_id: str, document: Mapping[str, Any], now: float, prefix: str = "") -> Metric:
    """A session metric from ``{"name", "value", "tags"}`` (tags kept as given)."""
    name = _check_name(document.get("name"), prefix)
    value = document.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WireError(422, f"{prefix}value must be a finite number", prefix + "value")
    tags = document.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise WireError(422, f"{prefix}tags must be an array of strings", prefix + "tags")
    return Metric(session_id, now, {name: float(value)}, tags=encode_session_tags(tags))


def batch_events(session_id: str, document: Any, now: float, max_operations: int) -> tuple[list[Event], str | None]:
    """Validate a ``/batch`` body completely and build its events (nothing is applied otherwise).

    Returns:
        The events in order, and the batch id (``None`` when not given).

    Raises:
        WireError: 413 for too many operations; 422 naming the first bad
            field (``operations[3].value``); 409 for an operation after ``end``.
    """
    document = check_object(document, None, "the body")
    check_no_unknown(document, ("batch_id", "operations"))
    batch_id = check_batch_id(document.get("batch_id"))
    operations = document.get("operations")
    if not isinstance(operations, list):
        raise WireError(422, "operations must be an array", "operations")
    if len(operations) > max_operations:
        raise WireError(413, f"at most {max_operations} operations per batch, got {len(operations)}", "operations")
    events: list[Event] = []
    ended = False
    for index, operation in enumerate(operations):
        prefix = f"operations[{index}]."
        operation = check_object(operation, f"operations[{index}]", f"operations[{index}]")
        op = operation.get("op")
        if op not in OPERATIONS:
            raise WireError(422, f"{prefix}op must be one of {', '.join(OPERATIONS)}", prefix + "op")
        if ended:
            raise WireError(409, f"{prefix}op: no operation may follow end", prefix + "op")
        ts = _timestamp(operation, now, prefix)
        if op == "state":
            check_no_unknown(operation, ("op", "state", "timestamp"), prefix)
            events.append(state_event(session_id, operation.get("state"), ts, prefix + "state"))
        elif op == "event":
            check_no_unknown(operation, ("op", "name", "data", "level", "timestamp"), prefix)
            events.append(log_event(session_id, operation, ts, prefix))
        elif op == "metric":
            check_no_unknown(operation, ("op", "name", "value", "tags", "timestamp"), prefix)
            events.append(metric_event(session_id, operation, ts, prefix))
        elif op == "heartbeat":
            check_no_unknown(operation, ("op", "timestamp"), prefix)
            events.append(Heartbeat(session_id, ts))
        else:
            check_no_unknown(operation, ("op", "timestamp"), prefix)
            events.append(RunLifecycle(session_id, ts, RunTransition.COMPLETED))
            ended = True
    return events, batch_id


# -- the bodies' JSON Schemas (/openapi.json) ------------------------------------------------------

_TEXT: Final = {"anyOf": [{"type": "string", "maxLength": 1000}, {"type": "null"}]}
_NAME: Final = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\u0000]*$"}
_WHEN: Final = {"type": "number", "minimum": 0, "maximum": MAX_TIMESTAMP}
EMPTY_BODY_SCHEMA: Final = {"type": "object", "additionalProperties": False}
CREATE_BODY_SCHEMA: Final = {
    "type": "object",
    "properties": {
        "product": _TEXT,
        "version": _TEXT,
        "hostname": _TEXT,
        "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "heartbeat_timeout_seconds": {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 10 * 365 * 86_400}, {"type": "null"}]
        },
    },
    "additionalProperties": False,
}
EVENT_FIELDS_SCHEMA: Final = {
    "name": _NAME,
    "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
    "level": {"enum": list(LEVELS)},
}
METRIC_FIELDS_SCHEMA: Final = {
    "name": _NAME,
    "value": {"type": "number"},
    "tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
}


def _operation(op: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["op", *required],
        "properties": {"op": {"const": op}, "timestamp": _WHEN, **properties},
        "additionalProperties": False,
    }


BATCH_BODY_SCHEMA: Final = {
    "type": "object",
    "required": ["operations"],
    "properties": {
        "batch_id": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "null"}]},
        "operations": {
            "type": "array",
            "items": {
                "oneOf": [
                    _operation("state", {"state": {"type": "object"}}, ("state",)),
                    _operation("event", EVENT_FIELDS_SCHEMA, ("name",)),
                    _operation("metric", METRIC_FIELDS_SCHEMA, ("name", "value")),
                    _operation("heartbeat", {}),
                    _operation("end", {}),
                ]
            },
        },
    },
    "additionalProperties": False,
}
