"""What goes over the wire (pure): the two server dialects, request bodies, answers.

A call is first made into a *neutral operation*, the same dict whether it is sent at
once or queued: ``{"op": "state" | "event" | "metric" | "heartbeat" | "end",
"timestamp": epoch seconds, ...}``. The fields runwatch's strict session routes know
(``name``, ``data``, ``level`` of an event; ``name``, ``value``, ``tags`` of a metric;
``state``) are always in the same place; datacat's further fields (``category``,
``group``, ``labels``, ``message``, ``stacktrace``, ``exception_*``, ``source_*`` of an
event; ``type``, ``count``, ``unit``, ``metadata`` of a metric) are present only when set.

Two dialects turn it into requests:

* ``datacat`` — datacat's REST contract (OriginalDaemon/datacat at 77ab370): the
  bodies datacat's daemon forwards, RFC 3339 timestamps, the state in its wrapped form
  ``{"timestamp", "state"}``. Spoken to a server whose ``GET /health`` answers 200 with
  a JSON ``status`` (datacat, and runwatch once it serves datacat's routes).
* ``runwatch`` — runwatch's strict session routes (``POST /api/sessions`` answering 201;
  unknown fields refused with 422): the lean bodies of :func:`lean_operation`, where
  datacat's event fields are folded into ``data`` and metric types travel as plain values.

``/batch`` (runwatch's exactly-once route) always carries lean operations.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from ._checks import LEVELS, exception_fields

__all__ = [
    "DATACAT",
    "DEFAULT_BASE_URL",
    "PROTOCOLS",
    "RUNWATCH",
    "StateDeduper",
    "datacat_request",
    "dialect_from_health",
    "error_message",
    "exception_data",
    "is_missing_route",
    "lean_operation",
    "rfc3339",
    "runwatch_request",
    "session_path",
]

#: Where datacat's clients look for a server.
DEFAULT_BASE_URL: Final = "http://localhost:9090"
DATACAT: Final = "datacat"
RUNWATCH: Final = "runwatch"
#: Values of ``DatacatClient(protocol=...)``.
PROTOCOLS: Final = ("auto", DATACAT, RUNWATCH)

#: Event fields runwatch's strict routes lack, folded into ``data`` under their own names.
_FOLDED_EVENT_FIELDS: Final = (
    "group",
    "labels",
    "message",
    "stacktrace",
    "source_file",
    "source_line",
    "source_function",
)
#: Event fields datacat omits when empty (``omitempty`` in its server).
_OPTIONAL_EVENT_FIELDS: Final = (
    "stacktrace",
    "exception_type",
    "exception_msg",
    "source_file",
    "source_line",
    "source_function",
)
_ROUTES: Final = {"state": "/state", "event": "/events", "metric": "/metrics", "heartbeat": "/heartbeat", "end": "/end"}


def session_path(session_id: str, suffix: str) -> str:
    """``/api/sessions/{id}{suffix}`` with the id escaped."""
    return f"/api/sessions/{quote(session_id, safe='')}{suffix}"


def rfc3339(epoch: float) -> str:
    """An epoch time as datacat writes it: UTC, ``Z``, the fraction without trailing zeros (µs)."""
    seconds = math.floor(epoch)
    micros = round((epoch - seconds) * 1e6)
    if micros == 1_000_000:
        seconds, micros = seconds + 1, 0
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if micros:
        text += "." + f"{micros:06d}".rstrip("0")
    return text + "Z"


def dialect_from_health(status: int, body: bytes) -> str | None:
    """The dialect of a server from its ``GET /health`` answer; ``None`` when it cannot tell (5xx).

    datacat answers ``200 {"service", "status", "version"}``; runwatch's strict
    routes come with no ``/health`` (404, or 401 behind a token).
    """
    if status >= 500:
        return None
    if status == 200:
        try:
            document = json.loads(body)
        except ValueError:
            return RUNWATCH
        if isinstance(document, dict) and isinstance(document.get("status"), str):
            return DATACAT
    return RUNWATCH


def error_message(status: int, body: bytes) -> tuple[str, str | None]:
    """The message and field of an error answer: runwatch's ``{"error": {...}}``, else its text.

    datacat answers errors as plain text (``Session not found``), which is the message.
    """
    try:
        document = json.loads(body)
        error = document["error"]
        return str(error.get("message") or error), error.get("field")
    except Exception:  # not runwatch's JSON: datacat's text, a proxy's page, an empty body
        text = body[:200].decode("utf-8", "replace").strip()
        return text or http.client.responses.get(status, "error"), None


def is_missing_route(status: int, body: bytes) -> bool:
    """Whether an answer says the server has no such route (datacat's ``404 Not found`` for ``/batch``).

    runwatch names an unknown session in a JSON error; a route the server lacks is
    answered in plain text (datacat) or without runwatch's error object.
    """
    if status not in (404, 405):
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return True
    return not (isinstance(document, dict) and "error" in document)


def lean_operation(operation: dict[str, Any]) -> dict[str, Any]:
    """The operation as runwatch's strict routes take it (``/batch`` and the single routes).

    Events keep ``name``, ``data``, ``level`` and ``timestamp``; datacat's further
    fields go into ``data`` under their own names unless ``data`` has that key (a
    free-form category as ``category``); an exception's become ``type``, ``message``
    and ``traceback``, as runwatch always stored them. Metrics keep ``name``,
    ``value``, ``tags`` and ``timestamp``.
    """
    kind = operation.get("op")
    if kind == "event":
        if len(operation) == 5:  # op, name, data, level, timestamp: nothing to fold
            return operation
        return {
            "op": "event",
            "name": operation["name"],
            "data": _folded_data(operation),
            "level": operation["level"],
            "timestamp": operation["timestamp"],
        }
    if kind == "metric" and len(operation) > 4 + ("tags" in operation):
        return {key: operation[key] for key in ("op", "name", "value", "tags", "timestamp") if key in operation}
    return operation


def _folded_data(event: dict[str, Any]) -> dict[str, Any]:
    data = dict(event["data"])
    if "exception_type" in event:
        # The exception's own keys win, as runwatch's exception events always had them.
        data["type"] = event["exception_type"]
        data["message"] = event.get("exception_msg", "")
        data["traceback"] = "".join(event.get("stacktrace", ()))
        return data
    category = event.get("category")
    if category is not None and category not in LEVELS:
        data.setdefault("category", category)
    for key in _FOLDED_EVENT_FIELDS:
        if key in event:
            data.setdefault(key, event[key])
    return data


def exception_data(exc_info: Any = None, extra_data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` of an exception event in runwatch's form: ``type``, ``message``, ``traceback``, the extra data.

    Args:
        exc_info: a ``(type, value, traceback)`` tuple or an exception; ``None``
            means the exception being handled (``sys.exc_info()``).
        extra_data: more keys for the event; ``type``, ``message`` and
            ``traceback`` are the exception's and win over keys of the same name.

    Raises:
        ValueError: no exception is given and none is being handled.
        TypeError: ``exc_info`` is neither, or ``extra_data`` is not JSON.
    """
    return _folded_data(exception_fields(exc_info, extra_data))


def runwatch_request(operation: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The route suffix and body of one operation on runwatch's strict session routes."""
    kind = operation["op"]
    if kind == "state":
        body: dict[str, Any] = operation["state"]
    elif kind == "event":
        lean = lean_operation(operation)
        body = {"name": lean["name"], "data": lean["data"], "level": lean["level"]}
    elif kind == "metric":
        body = {"name": operation["name"], "value": operation["value"]}
        if "tags" in operation:
            body["tags"] = operation["tags"]
    else:
        body = {}
    return _ROUTES[kind], body


def datacat_request(operation: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The route suffix and body of one operation in datacat's contract (as its daemon forwards it)."""
    kind = operation["op"]
    if kind == "state":
        body: dict[str, Any] = {"timestamp": rfc3339(operation["timestamp"]), "state": operation["state"]}
    elif kind == "event":
        body = {
            "timestamp": rfc3339(operation["timestamp"]),
            "name": operation["name"],
            "category": operation.get("category") or operation["level"],
            "group": operation.get("group", ""),
            "labels": operation.get("labels", []),
            "message": operation.get("message", ""),
            "data": operation["data"],
        }
        for key in _OPTIONAL_EVENT_FIELDS:
            if key in operation:
                body[key] = operation[key]
    elif kind == "metric":
        body = {
            "timestamp": rfc3339(operation["timestamp"]),
            "name": operation["name"],
            "type": operation.get("type", "gauge"),
            "value": operation["value"],
        }
        for key in ("count", "unit", "tags", "metadata"):
            if key in operation:
                body[key] = operation[key]
    else:
        body = {}
    return _ROUTES[kind], body


class StateDeduper:
    """Drops state updates that change nothing, as datacat's daemon does (not thread-safe; callers lock).

    It keeps each session's last state, merged like the daemon merges it (a ``None``
    stays a key), and an update whose every key equals that key's current value (as
    JSON) is a repeat: not sent, no history snapshot on the server.
    """

    def __init__(self) -> None:
        self._states: dict[str, dict[str, Any]] = {}

    def changes(self, session_id: str, patch: dict[str, Any]) -> bool:
        """Whether ``patch`` changes the session's state; records it when it does."""
        state = self._states.setdefault(session_id, {})
        if all(key in state and _same(state[key], value) for key, value in patch.items()):
            return False
        _merge_keeping_nulls(state, patch)
        return True

    def forget(self, session_id: str) -> None:
        """Drop a session's state (it ended)."""
        self._states.pop(session_id, None)


def _same(left: Any, right: Any) -> bool:
    # By JSON text, as the daemon compares: True and 1 differ, key order does not matter.
    return json.dumps(left, sort_keys=True) == json.dumps(right, sort_keys=True)


def _merge_keeping_nulls(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge_keeping_nulls(current, value)
        else:
            target[key] = json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value
