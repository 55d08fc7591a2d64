"""Websocket messages: what ``/ws`` and ``/ws/ingest`` send and take (see docs/protocol.md).

Every message is a JSON object with a ``type``; each is built here, once per
kind, and serialised with :func:`encode`. What a client sends is decoded
here too: ``{"subscribe": {...}}`` on ``/ws`` (its filter fields checked by
:func:`subscription_fields`) and ingest bodies on ``/ws/ingest``
(:func:`runwatch.wire.ingest.parse_ingest_body`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import orjson

from ..events import EVENT_CLASSES, HistogramEvent, ImageEvent
from ..exceptions import WireError
from .documents import dumps

__all__ = [
    "FORMATS",
    "GLOB_CHARS",
    "MAX_GLOBS",
    "MAX_PATTERNS",
    "MAX_PATTERN_CHARS",
    "SUBSCRIBABLE_KINDS",
    "SubscriptionFields",
    "ack",
    "batch",
    "batch_id_of",
    "columns",
    "encode",
    "error",
    "lagged",
    "parse_subscribe",
    "reset",
    "subscribed",
    "subscription_fields",
]

#: Wire formats a subscriber may ask for: one object per event, or metric values in columns.
FORMATS: Final = ("events", "columns")
#: Kinds a subscriber may ask for: those the wire takes, and images (without their bytes) and histograms.
SUBSCRIBABLE_KINDS: Final = (*EVENT_CLASSES, ImageEvent.kind, HistogramEvent.kind)
#: Limits of one filter field (runs, kinds, metrics): entries, characters per entry, and
#: glob patterns (entries with ``*``, ``?`` or ``[``; compiling them is what costs).
MAX_PATTERNS: Final = 1000
MAX_PATTERN_CHARS: Final = 200
MAX_GLOBS: Final = 100

#: The characters that make a filter entry a glob pattern.
GLOB_CHARS: Final = frozenset("*?[")


def encode(message: Mapping[str, Any]) -> str:
    """A message as the text of one websocket frame."""
    return dumps(message)


# -- server to client -------------------------------------------------------------------------------


def subscribed(subscription: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a subscription: the filter now in force."""
    return {"type": "subscribed", "filter": dict(subscription)}


def error(message: str, **details: Any) -> dict[str, Any]:
    """A refused request; ``/ws/ingest`` adds ``field``, ``batch_id`` and the HTTP ``status`` it stands for."""
    return {"type": "error", "message": message, **details}


def ack(batch_id: str | None, accepted: int, duplicate: bool) -> dict[str, Any]:
    """An ingested batch is stored (``duplicate``: it was, before this message)."""
    return {"type": "ack", "batch_id": batch_id, "accepted": accepted, "duplicate": duplicate}


def lagged(dropped: int) -> dict[str, Any]:
    """The subscriber fell behind: ``dropped`` events were not sent to it."""
    return {"type": "lagged", "dropped": dropped}


def batch(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Live events, one wire form each (:func:`runwatch.wire.events.event_to_wire`).

    A server on the scale-out bus adds ``"cursor"``: the live stream's
    sequence the message reaches, to resume from (``/ws?after=<cursor>``).
    """
    return {"type": "batch", "events": events}


def reset(reason: str) -> dict[str, Any]:
    """A resume cannot continue from the asked cursor: reload history over REST, then follow live events."""
    return {"type": "reset", "reason": reason}


def columns(metrics: list[dict[str, Any]], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Live events in the ``columns`` format: metric blocks of parallel arrays, the other events as wire forms."""
    return {"type": "columns", "metrics": metrics, "events": events}


# -- client to server -------------------------------------------------------------------------------


def parse_subscribe(data: str | bytes) -> Any:
    """The filter of a ``{"subscribe": {...}}`` message (checked by :func:`subscription_fields`).

    Raises:
        WireError: 400 for malformed JSON, 422 for another message.
    """
    try:
        request = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, str(exc)) from None
    if not isinstance(request, dict) or "subscribe" not in request:
        raise WireError(422, 'expected {"subscribe": {...}}')
    return request["subscribe"]


class SubscriptionFields(NamedTuple):
    """A checked subscription filter: run ids, event kinds and metric names (globs allowed), and the format."""

    runs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    format: str = "events"


def subscription_fields(data: Any) -> SubscriptionFields:
    """The fields of a subscription filter (a ``subscribe`` body or ``/ws`` query parameters).

    A field may be a list of strings or one comma-separated string; empty means everything.

    Raises:
        WireError: 422 naming the bad field and the limit it passed.
    """
    if data is None:
        return SubscriptionFields()
    if not isinstance(data, Mapping):
        raise WireError(422, "subscribe must be an object with optional runs, kinds and metrics", "subscribe")
    for key in data:
        if key not in ("runs", "kinds", "metrics", "format"):
            name = str(key)[:60]
            raise WireError(
                422, f"subscribe.{name}: unknown field (known: runs, kinds, metrics, format)", f"subscribe.{name}"
            )
    format = data.get("format") or "events"
    if format not in FORMATS:
        shown = _shown(format) if isinstance(format, str) else type(format).__name__
        raise WireError(422, f"subscribe.format: must be one of {', '.join(FORMATS)}; got {shown}", "subscribe.format")
    values: dict[str, tuple[str, ...]] = {}
    for key in ("runs", "kinds", "metrics"):
        field = f"subscribe.{key}"
        items = data.get(key) or []
        if isinstance(items, str):
            items = [part for part in items.split(",") if part]
        if not isinstance(items, list) or not all(isinstance(item, str) and item for item in items):
            raise WireError(422, f"{field}: must be a list of non-empty strings", field)
        if len(items) > MAX_PATTERNS:
            raise WireError(422, f"{field}: at most {MAX_PATTERNS} entries, got {len(items)}", field)
        for index, item in enumerate(items):
            if len(item) > MAX_PATTERN_CHARS:
                raise WireError(
                    422,
                    f"{field}[{index}]: at most {MAX_PATTERN_CHARS} characters, got {len(item)}",
                    f"{field}[{index}]",
                )
        globs = sum(1 for item in items if not GLOB_CHARS.isdisjoint(item))
        if globs > MAX_GLOBS:
            raise WireError(
                422,
                f"{field}: at most {MAX_GLOBS} glob patterns (with *, ? or [), got {globs};"
                f" exact names may be up to {MAX_PATTERNS}",
                field,
            )
        values[key] = tuple(sorted(set(items)))
    for kind in values["kinds"]:
        if kind not in SUBSCRIBABLE_KINDS:
            raise WireError(
                422,
                f"subscribe.kinds: unknown kind {_shown(kind)} (known: {', '.join(SUBSCRIBABLE_KINDS)})",
                "subscribe.kinds",
            )
    return SubscriptionFields(values["runs"], values["kinds"], values["metrics"], format)


def batch_id_of(data: bytes) -> object:
    """The ``batch_id`` of a refused ingest message, when it can be read at all (and is one: at most 200 characters)."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    batch_id = document.get("batch_id") if isinstance(document, dict) else None
    return batch_id if isinstance(batch_id, str) and len(batch_id) <= 200 else None


def _shown(value: str) -> str:
    """A client's string for an error message: quoted, cut to 60 characters."""
    return repr(value if len(value) <= 60 else value[:60] + "...")
