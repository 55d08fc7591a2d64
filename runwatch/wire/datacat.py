"""datacat's REST contract: its request bodies in, its session documents out (pure).

The contract is datacat's server code at OriginalDaemon/datacat ``77ab370``
(see docs/datacat.md). Bodies are read as Go reads them (:mod:`.gojson`):
keys in any case, unknown keys ignored, any Content-Type, gzip when
``Content-Encoding`` is exactly ``gzip``. An error is a status and the exact
text datacat answers (:class:`~runwatch.exceptions.WireError`; the web layer
sends it as ``text/plain``).

A datacat write becomes runwatch's own events (so it flows through the same
pipeline, alerts, store and dashboard as any other), each carrying what
runwatch's fields cannot hold in its ``detail`` (a metric: in its ``datacat``
tag): the timestamp as Go prints it, datacat's event and metric fields, the
time the server received it. :func:`session_document` turns the stored rows
back into datacat's session document, in the order they arrived.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import orjson

from ..events import LEVELS, MAX_TIMESTAMP, Heartbeat, LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from ..exceptions import WireError
from .gojson import FieldKind, GoSyntaxError, GoTime, Struct, decode_struct, format_epoch, free_form, parse_json

__all__ = [
    "CRASH_EVENT",
    "DATACAT_PROTOCOL",
    "DATACAT_TAG",
    "HEALTH",
    "OK",
    "CreateBody",
    "LivenessFlags",
    "crash_detected_event",
    "crash_events",
    "create_events",
    "datacat_merge",
    "event_from_body",
    "gunzip",
    "liveness_flags",
    "metric_from_body",
    "parse_crash_reason",
    "parse_create_body",
    "session_document",
    "state_from_body",
]

#: ``runs.metadata.protocol`` of sessions created through datacat's routes.
DATACAT_PROTOCOL: Final = "datacat"
#: The metric tag holding a datacat metric's own fields (a JSON text).
DATACAT_TAG: Final = "datacat"
#: The event datacat's server writes for a crash, reported or detected.
CRASH_EVENT: Final = "session_crashed_detected"
#: Event names that set and clear ``hung`` (whatever their category or data).
HUNG_EVENT: Final = "application_appears_hung"
RECOVERED_EVENT: Final = "application_recovered"

#: ``GET /health`` (any method, never behind the token).
HEALTH: Final = {"service": "datacat-server", "status": "healthy", "version": "1.0.0"}
#: The answer to every accepted write.
OK: Final = {"status": "ok"}

_E = TypeVar("_E")
_INVALID_BODY: Final = "Invalid request body"
#: A datacat event name runwatch cannot keep as its event type (empty, or with NUL) is stored as this.
_UNNAMED: Final = "(unnamed)"


# -- bodies in -------------------------------------------------------------------------------------


def gunzip(body: bytes, max_bytes: int) -> tuple[bytes, bool]:
    """A gzip request body decompressed, as Go's ``gzip.Reader`` gives it.

    Returns:
        ``(data, complete)``: what could be decompressed, and whether the
        stream (every member) was whole and valid. A route that reads its
        body treats an incomplete one as a bad body.

    Raises:
        WireError: 400 ``Failed to decompress request`` when the first
            member's header cannot be read (an empty body too); 413 past
            ``max_bytes`` decompressed.
    """
    if not _gzip_header_ok(body):
        raise WireError(400, "Failed to decompress request")
    parts: list[bytes] = []
    size = 0
    rest = body
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(rest, max_bytes - size + 1)
        except zlib.error:
            return b"".join(parts), False
        size += len(part)
        if size > max_bytes:
            raise WireError(413, f"request body larger than {max_bytes} bytes decompressed")
        parts.append(part)
        if not inflater.eof:
            return b"".join(parts), False
        rest = inflater.unused_data
        if rest and not _gzip_header_ok(rest):
            return b"".join(parts), False
    return b"".join(parts), True


def _gzip_header_ok(data: bytes) -> bool:
    """Whether a gzip member's header is complete and valid (RFC 1952 2.3, as Go checks it)."""
    if len(data) < 10 or data[0] != 0x1F or data[1] != 0x8B or data[2] != 8:
        return False
    flags = data[3]
    position = 10
    if flags & 0x04:  # FEXTRA
        if len(data) < position + 2:
            return False
        position += 2 + int.from_bytes(data[position : position + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = data.find(b"\x00", position)
            if end == -1:
                return False
            position = end + 1
    if flags & 0x02:  # FHCRC
        if len(data) < position + 2:
            return False
        if int.from_bytes(data[position : position + 2], "little") != zlib.crc32(data[:position]) & 0xFFFF:
            return False
        position += 2
    return len(data) >= position


def _parse(body: bytes, *, first_value: bool) -> Any:
    try:
        return parse_json(body, first_value=first_value)
    except GoSyntaxError:
        raise WireError(400, _INVALID_BODY) from None


@dataclass(frozen=True)
class CreateBody:
    """A ``POST /api/sessions`` body.

    ``metadata`` and ``heartbeat_timeout_seconds`` are runwatch's own
    additions (datacat ignores unknown keys, so its clients never notice
    them); a value of the wrong type is ignored, as Go ignores every decode
    error of this route.
    """

    product: str
    version: str
    machine_id: str = ""
    hostname: str = ""
    metadata: dict[str, Any] | None = None
    heartbeat_timeout_seconds: float | None = None


_CREATE_FIELDS: Final[dict[str, FieldKind]] = {
    "product": "string",
    "version": "string",
    "machine_id": "string",
    "hostname": "string",
    "metadata": "object",
    "heartbeat_timeout_seconds": "number",
}


def parse_create_body(body: bytes) -> CreateBody:
    """Read a create body as datacat does: the first JSON value, decode errors ignored.

    Raises:
        WireError: 400 ``Product and version are required fields`` when
            either is empty after decoding (an empty or invalid body too).
    """
    try:
        document = parse_json(body, first_value=True)
    except GoSyntaxError:
        document = None
    fields, _ = decode_struct(document, _CREATE_FIELDS)
    product, version = fields.get("product", ""), fields.get("version", "")
    if not product or not version:
        raise WireError(400, "Product and version are required fields")
    timeout = fields.get("heartbeat_timeout_seconds")
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= 10 * 365 * 86_400):
        timeout = None
    return CreateBody(
        product,
        version,
        fields.get("machine_id", ""),
        fields.get("hostname", ""),
        fields.get("metadata"),
        timeout,
    )


_STATE_FIELDS: Final[dict[str, FieldKind]] = {"state": "object", "timestamp": "time"}


def state_from_body(session_id: str, body: bytes, received: float) -> StatePatch:
    """A ``/state`` body as a state patch: the wrapped form ``{"state", "timestamp"}`` or the state itself.

    In the wrapped form (``state`` is an object, even empty) only ``state``
    is merged and ``timestamp`` dates the history snapshot; otherwise the
    whole body is the patch (a ``timestamp`` key included, which also dates
    the snapshot). ``null`` is an empty patch.

    Raises:
        WireError: 400 ``Invalid request body``.
    """
    document = _parse(body, first_value=False)
    fields, ok = decode_struct(document, _STATE_FIELDS)
    if not ok:
        raise WireError(400, _INVALID_BODY)
    state = fields.get("state")
    try:
        patch = state if state is not None else (free_form(document) if document is not None else {})
    except ValueError:
        raise WireError(400, _INVALID_BODY) from None
    when: GoTime | None = fields.get("timestamp")
    detail = {"timestamp": when.text if when is not None else format_epoch(received), "received": received}
    return _build(lambda: StatePatch(session_id, _runwatch_time(when, received), patch, detail))


_EVENT_FIELDS: Final[dict[str, FieldKind]] = {
    "timestamp": "time",
    "name": "string",
    "category": "string",
    "group": "string",
    "labels": "strings",
    "message": "string",
    "data": "object",
    "stacktrace": "strings",
    "exception_type": "string",
    "exception_msg": "string",
    "source_file": "string",
    "source_line": "integer",
    "source_function": "string",
}
#: Event keys datacat leaves out of its answers when empty (or zero), in its order.
_OPTIONAL_EVENT_KEYS: Final = (
    "stacktrace",
    "exception_type",
    "exception_msg",
    "source_file",
    "source_line",
    "source_function",
)


def event_from_body(session_id: str, body: bytes, received: float) -> LogEvent:
    """A ``/events`` body as a log event (datacat's fields in its ``detail``).

    The category defaults to ``info`` and becomes ``error`` when an exception
    type is given with the category ``info``; runwatch's level is the
    category when it is one of runwatch's levels, else ``info``.

    Raises:
        WireError: 400 ``Invalid request body`` (any syntax or type error).
    """
    fields, ok = decode_struct(_parse(body, first_value=False), _EVENT_FIELDS)
    if not ok:
        raise WireError(400, _INVALID_BODY)
    category = fields.get("category") or "info"
    if fields.get("exception_type") and category == "info":
        category = "error"
    when: GoTime | None = fields.get("timestamp")
    name = fields.get("name", "")
    detail: dict[str, Any] = {
        "timestamp": when.text if when is not None else format_epoch(received),
        "name": name,
        "category": category,
        "group": fields.get("group", ""),
        "labels": fields.get("labels"),
        "message": fields.get("message", ""),
        "received": received,
    }
    data = fields.get("data")
    if data is None:
        detail["null_data"] = True
    for key in _OPTIONAL_EVENT_KEYS:
        value = fields.get(key)
        if value:  # datacat's omitempty: "", 0, null and [] are left out
            detail[key] = value
    level = category if category in LEVELS else "info"
    return _build(lambda: LogEvent(session_id, _runwatch_time(when, received), _event_type(name), level, data, detail))


_METRIC_FIELDS: Final[dict[str, FieldKind]] = {
    "timestamp": "time",
    "name": "string",
    "type": "string",
    "value": "number",
    "count": "integer",
    "unit": "string",
    "tags": "strings",
    "metadata": "object",
}


def metric_from_body(session_id: str, body: bytes, received: float) -> Metric:
    """A ``/metrics`` body (its first JSON value) as a one-value metric event.

    Its tags hold the tag list (``tags``, as every session metric's) and
    datacat's own fields (``datacat``: timestamp text, type, count, unit,
    metadata, receipt time), each a JSON text.

    Raises:
        WireError: 400 ``Invalid request body``.
    """
    fields, ok = decode_struct(_parse(body, first_value=True), _METRIC_FIELDS)
    if not ok:
        raise WireError(400, _INVALID_BODY)
    when: GoTime | None = fields.get("timestamp")
    name = fields.get("name", "")
    own: dict[str, Any] = {
        "timestamp": when.text if when is not None else format_epoch(received),
        "type": fields.get("type") or "gauge",
        "received": received,
    }
    if name != _metric_name(name):
        own["name"] = name
    if fields.get("count") is not None:
        own["count"] = fields["count"]
    for key in ("unit", "metadata"):
        if fields.get(key):
            own[key] = fields[key]
    tags = {DATACAT_TAG: _json_text(own)}
    if fields.get("tags"):
        tags["tags"] = _json_text(fields["tags"])
    value = fields.get("value", 0.0)
    return _build(lambda: Metric(session_id, _runwatch_time(when, received), {_metric_name(name): value}, tags=tags))


def parse_crash_reason(body: bytes) -> str:
    """The ``reason`` of a ``/crash`` body: ``""`` when absent, ``abnormal_termination`` when unreadable."""
    try:
        document = parse_json(body, first_value=True)
    except GoSyntaxError:
        return "abnormal_termination"
    fields, ok = decode_struct(document, {"reason": "string"})
    return fields.get("reason", "") if ok else "abnormal_termination"


def _build(make: Callable[[], _E]) -> _E:
    """Build an event; what runwatch's event model refuses (a payload nested past its limit) is a bad body."""
    try:
        return make()
    except (TypeError, ValueError):
        raise WireError(400, _INVALID_BODY) from None


def _runwatch_time(when: GoTime | None, received: float) -> float:
    """The time runwatch files a datacat write under: the producer's, or the receipt's when it has none
    runwatch can hold (the daemon's own events carry ``0001-01-01T00:00:00Z``)."""
    if when is not None and 0.0 <= when.epoch <= MAX_TIMESTAMP:
        return when.epoch
    return received


def _event_type(name: str) -> str:
    return name.replace("\x00", "\ufffd") if name else _UNNAMED


def _metric_name(name: str) -> str:
    return name.replace("\x00", "\ufffd") if name else _UNNAMED


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- the session's own events ----------------------------------------------------------------------


def create_events(session_id: str, body: CreateBody, received: float) -> list[Any]:
    """A new session: its ``started`` lifecycle and its first state, ``{"product", "version"}``
    (which datacat does not count as a state history entry)."""
    metadata: dict[str, Any] = {
        "protocol": DATACAT_PROTOCOL,
        "product": body.product,
        "version": body.version,
        "hostname": body.hostname or None,
        "machine_id": body.machine_id or None,
        "heartbeat_timeout_seconds": body.heartbeat_timeout_seconds,
        "metadata": body.metadata or {},
        # Its liveness is datacat's (suspended, computed when read), not runwatch's liveness stage's.
        "liveness_signal": "none",
    }
    started = RunLifecycle(session_id, received, RunTransition.STARTED, run_kind="session", metadata=metadata)
    first_state = StatePatch(
        session_id,
        received,
        {"product": body.product, "version": body.version},
        {"timestamp": format_epoch(received), "received": received, "initial": True},
    )
    return [started, first_state]


def heartbeat_event(session_id: str, received: float) -> Heartbeat:
    """A heartbeat (its time is the receipt's: datacat's ``last_heartbeat``)."""
    return Heartbeat(session_id, received)


def end_event(session_id: str, received: float) -> RunLifecycle:
    """An end (repeatable: each one moves ``ended_at``)."""
    return RunLifecycle(session_id, received, RunTransition.COMPLETED)


def crash_events(session_id: str, reason: str, received: float) -> list[Any]:
    """A reported crash: the ``session_crashed_detected`` event (category ``critical``) that ends
    the session crashed and clears ``hung``."""
    detail = {
        "timestamp": format_epoch(received),
        "name": CRASH_EVENT,
        "category": "critical",
        "group": "",
        "labels": None,
        "message": "",
        "received": received,
        "effect": "crash",
    }
    return [LogEvent(session_id, received, CRASH_EVENT, "critical", {"reason": reason}, detail)]


def crash_detected_event(session_id: str, machine_id: str, now: float) -> LogEvent:
    """The event of a suspended session found crashed when its machine created a new session
    (category ``""``; it does not move ``updated_at`` or ``ended_at``)."""
    detail = {
        "timestamp": format_epoch(now),
        "name": CRASH_EVENT,
        "category": "",
        "group": "",
        "labels": None,
        "message": "",
        "effect": "crash_detected",
    }
    data = {"machine_id": machine_id, "reason": "machine_returned_session_not_resumed"}
    return LogEvent(session_id, now, CRASH_EVENT, "critical", data, detail)


# -- the session document out ----------------------------------------------------------------------


def datacat_merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Deep-merge ``patch`` into ``target`` as datacat's server does.

    ``null`` deletes a key; an object merges into an object; anything else
    replaces, as given (nulls inside an object that is set, not merged, are
    kept: ``{"new": {"x": null}}`` stores ``x: null``).
    """
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
            continue
        current = target.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            datacat_merge(current, value)
        else:
            target[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value


@dataclass(frozen=True)
class LivenessFlags:
    """datacat's liveness of a session at one moment (see :func:`liveness_flags`)."""

    active: bool
    suspended: bool
    crashed: bool
    hung: bool


def liveness_flags(
    *, crashed: bool, hung: bool, ended: bool, last_heartbeat: float | None, now: float, timeout_seconds: float
) -> LivenessFlags:
    """datacat's rules, in order: crashed (frozen: inactive); ended (inactive); never heartbeated
    (active until ended); silent for more than ``timeout_seconds`` (suspended); else active."""
    if crashed or ended:
        return LivenessFlags(False, False, crashed, hung)
    if last_heartbeat is None or now - last_heartbeat <= timeout_seconds:
        return LivenessFlags(True, False, crashed, hung)
    return LivenessFlags(False, True, crashed, hung)


def _decode(text: Any) -> Any:
    return orjson.loads(text) if isinstance(text, (str, bytes)) else text


def _number(value: Any) -> Any:
    """A stored metric value for Go's JSON (which has no NaN or ±Inf: ``null``, read by Go as 0)."""
    if value is None or isinstance(value, str):
        return None
    return value if math.isfinite(value) else None


def _event_object(ts: float, name: str, level: str, data: Any, detail: Mapping[str, Any] | None) -> Struct:
    if detail is None:  # runwatch's own event (a /batch, a SessionMonitor): its fields in datacat's shape
        return Struct(
            timestamp=format_epoch(ts), name=name, category=level, group="", labels=None, message="", data=data
        )
    out = Struct(
        timestamp=detail["timestamp"],
        name=detail.get("name", name),
        category=detail.get("category", level),
        group=detail.get("group", ""),
        labels=detail.get("labels"),
        message=detail.get("message", ""),
        data=None if detail.get("null_data") else data,
    )
    for key in _OPTIONAL_EVENT_KEYS:
        if key in detail:
            out[key] = detail[key]
    return out


def session_document(
    run: Mapping[str, Any],
    events: Iterable[Sequence[Any]],
    metrics: Iterable[Sequence[Any]],
    states: Iterable[Sequence[Any]],
    *,
    now: float,
    timeout_seconds: float,
) -> Struct:
    """datacat's session document from a session's stored rows, each in the order it arrived.

    Args:
        run: the session's run: ``run_id``, ``status``, ``start_time``,
            ``end_time``, ``last_heartbeat`` (epoch seconds or ``None``) and
            ``metadata`` (``machine_id``, ``hostname``, its own
            ``heartbeat_timeout_seconds``).
        events: its log events as ``(ts, type, level, data, detail)``.
        metrics: its metric rows as ``(ts, names, values, tags)`` (``tags``:
            the stored dict of JSON texts, or ``None``).
        states: its state patches as ``(ts, patch, detail)``.
        now: the time the flags are computed for.
        timeout_seconds: silence after which a session that heartbeated is
            suspended (the session's own ``heartbeat_timeout_seconds`` wins).
    """
    metadata = run.get("metadata") or {}
    updated = run["start_time"]
    if run.get("last_heartbeat") is not None:
        updated = max(updated, run["last_heartbeat"])
    if run.get("end_time") is not None:
        updated = max(updated, run["end_time"])
    # datacat's sessions crash by /crash or crash detection only (an event a client names
    # application_crashed is just an event there); other sessions by runwatch's verdicts.
    crashed = metadata.get("protocol") != DATACAT_PROTOCOL and run.get("status") == "crashed"
    hung = False
    event_objects: list[Struct] = []
    for ts, name, level, data, detail in events:
        data, detail = _decode(data), _decode(detail)
        effect = detail.get("effect") if detail else None
        if effect is not None:
            crashed = True
        if effect != "crash_detected":
            updated = max(updated, detail.get("received", ts) if detail else ts)
        own_name = detail.get("name", name) if detail else name
        if own_name == HUNG_EVENT:
            hung = True
        elif own_name == RECOVERED_EVENT or effect == "crash":
            hung = False
        event_objects.append(_event_object(ts, name, level, data, detail))
    metric_objects: list[Struct] = []
    for ts, names, values, tags in metrics:
        tags = _decode(tags) or {}
        own = _decode(tags.get(DATACAT_TAG)) if DATACAT_TAG in tags else None
        tag_list = _decode(tags.get("tags")) if "tags" in tags else None
        for name, value in zip(_decode(names), _decode(values), strict=False):
            updated = max(updated, own.get("received", ts) if own else ts)
            out = Struct(
                timestamp=own["timestamp"] if own else format_epoch(ts),
                name=own.get("name", name) if own else name,
                type=own.get("type", "gauge") if own else "gauge",
                value=_number(value),
            )
            if own:
                for key in ("count", "unit"):
                    if key in own:
                        out[key] = own[key]
            if tag_list:
                out["tags"] = tag_list
            if own and own.get("metadata"):
                out["metadata"] = own["metadata"]
            metric_objects.append(out)
    state: dict[str, Any] = {}
    history: list[Struct] = []
    for ts, patch, detail in states:
        patch, detail = _decode(patch), _decode(detail)
        datacat_merge(state, patch)
        if detail and detail.get("initial"):
            continue
        updated = max(updated, detail.get("received", ts) if detail else ts)
        history.append(
            Struct(timestamp=detail["timestamp"] if detail else format_epoch(ts), state=copy.deepcopy(state))
        )
    own_timeout = metadata.get("heartbeat_timeout_seconds")
    if isinstance(own_timeout, (int, float)) and not isinstance(own_timeout, bool) and own_timeout > 0:
        timeout_seconds = float(own_timeout)
    flags = liveness_flags(
        crashed=crashed,
        hung=hung,
        ended=run.get("end_time") is not None,
        last_heartbeat=run.get("last_heartbeat"),
        now=now,
        timeout_seconds=timeout_seconds,
    )
    document = Struct(id=run["run_id"], created_at=format_epoch(run["start_time"]), updated_at=format_epoch(updated))
    if run.get("end_time") is not None:
        document["ended_at"] = format_epoch(run["end_time"])
    if run.get("last_heartbeat") is not None:
        document["last_heartbeat"] = format_epoch(run["last_heartbeat"])
    document.update(active=flags.active, suspended=flags.suspended, crashed=flags.crashed, hung=flags.hung)
    for key in ("machine_id", "hostname"):
        if isinstance(metadata.get(key), str) and metadata[key]:
            document[key] = metadata[key]
    document.update(state=state, state_history=history, events=event_objects, metrics=metric_objects)
    return document
