"""How application sessions map onto runwatch's events, and so onto the store (pure: no I/O).

The wire codec, the store, the session monitor and the web all use this one mapping.

An application session is a run of kind ``session`` (``run_id`` = session id)
in the same store, pipeline and dashboard as training runs:

- creation is a ``started`` :class:`~runwatch.events.RunLifecycle` with
  ``run_kind = "session"`` and the metadata of :func:`session_metadata`
  (``product``, ``version``, ``hostname``, ``heartbeat_timeout_seconds`` and
  the caller's own ``metadata``; :class:`~runwatch.sessions.SessionMonitor`
  puts ``user_id`` and ``platform_id`` there);
- the end is a ``completed`` lifecycle;
- events are :class:`~runwatch.events.LogEvent` (``type`` = name);
- metrics are :class:`~runwatch.events.Metric` events with one value
  (``{name: value}``) whose tags hold JSON texts: ``tags`` (the REST list of
  strings), ``user_id`` and ``metadata`` (from the ``SessionMonitor``),
  ``datacat`` (a datacat metric's own fields, see :mod:`runwatch.wire.datacat`);
- state changes are :class:`~runwatch.events.StatePatch` events, heartbeats
  :class:`~runwatch.events.Heartbeat` events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import orjson

__all__ = [
    "MONITOR_KIND",
    "RUN_STATUSES_OF",
    "SESSION_KIND",
    "SYSTEM_RUN_ID",
    "decode_metric_value",
    "decode_session_tags",
    "encode_session_tags",
    "session_metadata",
    "session_status",
]

#: ``runs.kind`` of application sessions.
SESSION_KIND: Final = "session"
#: ``runs.kind`` of the run holding a ``SessionMonitor``'s own events (startup, error-rate alerts).
MONITOR_KIND: Final = "session_monitor"
#: The run id of that run.
SYSTEM_RUN_ID: Final = "session-monitor"

#: Session status (REST) of each run status.
_SESSION_STATUS: Final = {
    "running": "active",
    "paused": "active",
    "hung": "hung",
    "crashed": "crashed",
    "completed": "ended",
    "failed": "ended",
}
#: Run statuses of each session status (for filters).
RUN_STATUSES_OF: Final = {
    "active": ("running", "paused"),
    "hung": ("hung",),
    "crashed": ("crashed",),
    "ended": ("completed", "failed"),
}


def session_status(run_status: str) -> str:
    """The session status (``active``, ``hung``, ``crashed``, ``ended``) of a run status."""
    return _SESSION_STATUS.get(run_status, "active")


def session_metadata(
    *,
    product: str | None = None,
    version: str | None = None,
    hostname: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    heartbeat_timeout_seconds: float | None = None,
) -> dict[str, Any]:
    """The ``runs.metadata`` of a session (what its ``started`` lifecycle carries)."""
    return {
        "product": product,
        "version": version,
        "hostname": hostname,
        "heartbeat_timeout_seconds": heartbeat_timeout_seconds,
        "metadata": dict(metadata or {}),
    }


def encode_session_tags(tags: list[str] | None = None, **fields: Any) -> dict[str, str] | None:
    """The tags of a session metric: each value a JSON text (``None`` values are left out).

    Args:
        tags: the REST list of tag strings, stored under ``tags``.
        fields: more JSON values (``user_id``, ``metadata``).
    """
    out: dict[str, str] = {}
    if tags:
        out["tags"] = orjson.dumps(tags).decode()
    for key, value in fields.items():
        if value is not None:
            out[key] = orjson.dumps(value).decode()
    return out or None


def decode_session_tags(text: str | None) -> tuple[list[str], dict[str, Any]]:
    """Split stored metric tags into the REST tag list and the other decoded fields.

    Tags that are not session tags (a training metric's ``{"action": "left"}``)
    are rendered as ``"key:value"`` strings in the list.

    Returns:
        ``(tags, fields)``: e.g. ``(["app:x"], {"user_id": 7, "metadata": {...}})``
        (``fields`` may also hold ``datacat``).
    """
    if not text:
        return [], {}
    stored = orjson.loads(text)
    tags: list[str] = []
    fields: dict[str, Any] = {}
    if not isinstance(stored, dict):
        return tags, fields
    for key, raw in stored.items():
        try:
            value = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            value = raw
        if key == "tags" and isinstance(value, list) and all(isinstance(tag, str) for tag in value):
            tags[:0] = value
        elif key in ("user_id", "metadata", "datacat"):
            fields[key] = value
        else:
            tags.append(f"{key}:{raw}")
    return tags, fields


def decode_metric_value(value: Any) -> float:
    """A stored metric value: ``null`` is NaN, ``"inf"``/``"-inf"`` are ±Inf."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return math.inf if value == "inf" else -math.inf
    return float(value)
