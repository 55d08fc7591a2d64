"""The typed event model: small immutable records, one class per kind.

Pure code: no I/O, no clocks, no event loop. Every event carries the id of the
run it belongs to and a timestamp in seconds since the Unix epoch (UTC).

Kinds::

    Metric        many named numeric values from one logging call
    LogEvent      a typed log event with a level and a JSON data payload
    StatePatch    a deep-merge patch for the run's current state
    RunLifecycle  started / paused / resumed / completed / failed
    ExceptionEvent  an error with type, message, traceback and triage fields
    Heartbeat     "still alive", optionally with progress counters
    AlertEvent    an alert rule instance changed state
    ImageEvent    an encoded image (PNG or JPEG) of a named series at a step
    HistogramEvent  binned values of a named series at a step

Validation happens in each constructor, so a caller's mistake is a
``TypeError`` or ``ValueError`` at the call that names the bad field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, NamedTuple, Self, overload

from ._payload import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, Payload, check_text, copy_payload, shown, text_nbytes
from .event_base import EventBase, tuple_new
from .event_fields import (
    LEVELS,
    MAX_TIMESTAMP,
    check_int64,
    check_level,
    check_name,
    check_run_id,
    check_step,
    check_storable,
    check_timestamp,
    copy_tags,
    flatten_metrics,
    to_float,
    type_name,
)
from .media_events import IMAGE_MIMES, HistogramEvent, ImageEvent
from .run_state import copy_state, merge_state, merge_state_into

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "IMAGE_MIMES",
    "LEVELS",
    "MAX_TIMESTAMP",
    "MAX_JSON_DEPTH",
    "METRIC_NBYTES",
    "REMOTE_OWNER",
    "AlertEvent",
    "Event",
    "ExceptionEvent",
    "Heartbeat",
    "HistogramEvent",
    "ImageEvent",
    "LogEvent",
    "Metric",
    "RunLifecycle",
    "RunTransition",
    "StatePatch",
    "check_storable",
    "event_nbytes",
    "flatten_metrics",
    "copy_state",
    "merge_state",
    "merge_state_into",
    "shown",
    "to_epoch_seconds",
]


class _MetricFields(NamedTuple):
    run_id: str
    timestamp: float
    values: Mapping[str, float]
    step: int | None = None
    tags: Mapping[str, str] | None = None


class Metric(EventBase, _MetricFields):
    """Named numeric values from one logging call.

    Attributes:
        run_id: the run the values belong to.
        timestamp: seconds since the epoch.
        values: metric name → value; nested mappings are flattened to
            ``group/name`` at construction, and the caller's mapping is
            copied. NaN and ±Inf are kept.
        step: the training step, or ``None`` when the caller gave none.
        tags: free-form string labels, or ``None``.
    """

    __slots__ = ()
    kind: ClassVar[str] = "metric"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        values: Mapping[str, Any],
        step: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Self:
        if type(run_id) is not str or not run_id:
            check_run_id(run_id)
        if type(timestamp) is not float or not 0.0 <= timestamp <= MAX_TIMESTAMP:
            check_timestamp(timestamp)
        values = flatten_metrics(values)
        if step is not None and (type(step) is not int or not INT64_MIN <= step <= INT64_MAX):
            step = check_step(step)
        if tags is not None:
            tags = copy_tags("tags", tags)
            for key, value in tags.items():
                check_text("tags keys", key)
                check_text(f"tags.{key}", value)
        return tuple_new(cls, (run_id, timestamp, values, step, tags))

    def has_non_finite(self) -> bool:
        """Whether any value is NaN or ±Inf."""
        return any(v - v != 0.0 for v in self.values.values())


class _LogEventFields(NamedTuple):
    run_id: str
    timestamp: float
    type: str
    level: str = "info"
    data: Mapping[str, Any] = {}
    detail: Mapping[str, Any] | None = None


class LogEvent(EventBase, _LogEventFields):
    """A typed log event (``type`` such as ``episode_end``) with a JSON payload.

    Attributes:
        detail: how the producer's protocol put the event, where runwatch's
            fields cannot say it all (datacat's category, group, labels,
            message, stack trace, source and timestamp text; see
            :mod:`runwatch.wire.datacat`), kept to answer it back exactly;
            ``None`` for runwatch's own events.
    """

    __slots__ = ()
    kind: ClassVar[str] = "log"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        type: str,
        level: str = "info",
        data: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_name("type", type)
        check_storable("type", type)
        check_level(level)
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {type_name(data)}")
        data = copy_payload("data", data)
        if detail is not None:
            detail = _copy_detail(detail)
        return tuple_new(cls, (run_id, timestamp, type, level, data, detail))


def _copy_detail(detail: object) -> Payload:
    if not isinstance(detail, Mapping):
        raise TypeError(f"detail must be a mapping or None, got {type_name(detail)}")
    return copy_payload("detail", detail)


class _StatePatchFields(NamedTuple):
    run_id: str
    timestamp: float
    patch: Mapping[str, Any]
    detail: Mapping[str, Any] | None = None


class StatePatch(EventBase, _StatePatchFields):
    """A patch deep-merged into the run's current state (see :func:`merge_state`).

    Attributes:
        detail: how the producer's protocol put the patch (datacat's
            timestamp text), kept to answer it back exactly; ``None`` for
            runwatch's own patches.
    """

    __slots__ = ()
    kind: ClassVar[str] = "state"

    def __new__(
        cls, run_id: str, timestamp: float, patch: Mapping[str, Any], detail: Mapping[str, Any] | None = None
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        if not isinstance(patch, Mapping):
            raise TypeError(f"patch must be a mapping, got {type_name(patch)}")
        patch = copy_payload("patch", patch)
        if detail is not None:
            detail = _copy_detail(detail)
        return tuple_new(cls, (run_id, timestamp, patch, detail))


class RunTransition(StrEnum):
    """What happened to a run."""

    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    COMPLETED = "completed"
    FAILED = "failed"


_TRANSITIONS: Final = frozenset(t.value for t in RunTransition)

#: The run status each transition leads to.
STATUS_AFTER: Final = {
    RunTransition.STARTED: "running",
    RunTransition.PAUSED: "paused",
    RunTransition.RESUMED: "running",
    RunTransition.COMPLETED: "completed",
    RunTransition.FAILED: "failed",
}


class _RunLifecycleFields(NamedTuple):
    run_id: str
    timestamp: float
    transition: RunTransition
    run_kind: str = "training"
    config: Mapping[str, Any] | None = None
    final_reward: float | None = None
    metadata: Mapping[str, Any] | None = None
    owner: str | None = None


#: The owner of a run whose producer sent it over the network without naming itself.
REMOTE_OWNER: Final = "remote"


class RunLifecycle(EventBase, _RunLifecycleFields):
    """A run started, paused, resumed, completed or failed.

    Attributes:
        transition: what happened.
        run_kind: ``training`` or ``session`` (read on ``started``).
        config: the run's configuration (read on ``started``).
        final_reward: the final reward (read on ``completed``/``failed``).
        metadata: free-form JSON details (product, host, reason...).
        owner: who produces the run (read on ``started``/``resumed``):
            ``host:pid:start-time`` of a process (the store marks the run
            crashed when a server or monitor on that host starts and the
            process is gone), or any other text naming a producer elsewhere
            (``remote`` when a remote producer names none), whose run only
            the liveness stage judges. ``None``: the process that stores it.
    """

    __slots__ = ()
    kind: ClassVar[str] = "lifecycle"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        transition: RunTransition | str,
        run_kind: str = "training",
        config: Mapping[str, Any] | None = None,
        final_reward: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        if not isinstance(transition, str) or transition not in _TRANSITIONS:  # before the enum repr()s it
            names = ", ".join(t.value for t in RunTransition)
            raise ValueError(f"transition must be one of {names}; got {shown(transition)}")
        transition = RunTransition(transition)
        check_name("run_kind", run_kind)
        check_storable("run_kind", run_kind)
        if config is not None:
            if not isinstance(config, Mapping):
                raise TypeError(f"config must be a mapping, got {type_name(config)}")
            config = copy_payload("config", config)
        if final_reward is not None:
            final_reward = to_float("final_reward", final_reward)
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise TypeError(f"metadata must be a mapping, got {type_name(metadata)}")
            metadata = copy_payload("metadata", metadata)
        if owner is not None:
            check_name("owner", owner)
            check_storable("owner", owner)
            if len(owner) > 200:
                raise ValueError(f"owner must be at most 200 characters, got {len(owner)}")
        fields = (run_id, timestamp, transition, run_kind, config, final_reward, metadata, owner)
        return tuple_new(cls, fields)

    @property
    def status(self) -> str:
        """The run status after this transition."""
        return STATUS_AFTER[self.transition]


class _ExceptionEventFields(NamedTuple):
    run_id: str
    timestamp: float
    error_type: str
    message: str
    traceback: str = ""
    category: str = "unknown"
    severity: str = "error"
    component: str | None = None


class ExceptionEvent(EventBase, _ExceptionEventFields):
    """An error: exception type, message and traceback plus triage fields."""

    __slots__ = ()
    kind: ClassVar[str] = "exception"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        error_type: str,
        message: str,
        traceback: str = "",
        category: str = "unknown",
        severity: str = "error",
        component: str | None = None,
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_name("error_type", error_type)
        check_text("error_type", error_type)
        for name, value in (("message", message), ("traceback", traceback), ("category", category)):
            if type(value) is not str:
                raise TypeError(f"{name} must be a string, got {shown(value)}")
            check_text(name, value)
        check_level(severity, "severity")
        if component is not None:
            if type(component) is not str:
                raise TypeError(f"component must be a string or None, got {shown(component)}")
            check_text("component", component)
        fields = (run_id, timestamp, error_type, message, traceback, category, severity, component)
        return tuple_new(cls, fields)


class _HeartbeatFields(NamedTuple):
    run_id: str
    timestamp: float
    counters: Mapping[str, int] | None = None


class Heartbeat(EventBase, _HeartbeatFields):
    """The producer is alive; ``counters`` carries progress such as ``total_steps``."""

    __slots__ = ()
    kind: ClassVar[str] = "heartbeat"

    def __new__(cls, run_id: str, timestamp: float, counters: Mapping[str, int] | None = None) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        if counters is not None:
            if not isinstance(counters, Mapping):
                raise TypeError(f"counters must be a mapping of string to int, got {type(counters).__name__}")
            for key, value in counters.items():
                if type(key) is not str or type(value) is not int:
                    raise TypeError(f"counters must map strings to ints, got {shown(key)}: {shown(value)}")
                check_text("counters keys", key)
                check_int64(f"counters.{key}", value)
            counters = dict(counters)
        return tuple_new(cls, (run_id, timestamp, counters))


ALERT_STATES: Final = ("inactive", "pending", "firing", "resolved")


class _AlertEventFields(NamedTuple):
    run_id: str
    timestamp: float
    rule: str
    state: str
    severity: str = "warning"
    value: float | None = None
    labels: Mapping[str, str] = {}
    annotations: Mapping[str, str] = {}
    active_since: float | None = None


class AlertEvent(EventBase, _AlertEventFields):
    """An alert rule instance changed state (pending, firing, resolved...)."""

    __slots__ = ()
    kind: ClassVar[str] = "alert"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        rule: str,
        state: str,
        severity: str = "warning",
        value: float | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        active_since: float | None = None,
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_name("rule", rule)
        if state not in ALERT_STATES:
            raise ValueError(f"state must be one of {', '.join(ALERT_STATES)}; got {shown(state)}")
        check_name("severity", severity)
        labels = copy_tags("labels", {} if labels is None else labels)
        annotations = copy_tags("annotations", {} if annotations is None else annotations)
        if value is not None:
            value = to_float("value", value)
        if active_since is not None:
            check_timestamp(active_since, "active_since")
        fields = (run_id, timestamp, rule, state, severity, value, labels, annotations, active_since)
        return tuple_new(cls, fields)


class _IngestReceiptFields(NamedTuple):
    run_id: str
    timestamp: float
    batch_id: str
    events: int
    digest: str = ""


class IngestReceipt(EventBase, _IngestReceiptFields):
    """Internal: closes a remote producer's batch so the store records its id
    in the same transaction as its events (a retried batch is then refused).

    Not published to subscribers. ``run_id`` is the batch's first run: the
    scope of its ``batch_id`` (ids are unique per run). ``digest`` is a hash of
    the batch's content, so a reused id with other content can be told from a
    retry.
    """

    __slots__ = ()
    kind: ClassVar[str] = "receipt"

    def __new__(cls, run_id: str, timestamp: float, batch_id: str, events: int, digest: str = "") -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_name("batch_id", batch_id)
        check_storable("batch_id", batch_id)
        return tuple_new(cls, (run_id, timestamp, batch_id, events, digest))


Event = (
    Metric
    | LogEvent
    | StatePatch
    | RunLifecycle
    | ExceptionEvent
    | Heartbeat
    | AlertEvent
    | ImageEvent
    | HistogramEvent
)

EVENT_CLASSES: Final[dict[str, type[Any]]] = {
    cls.kind: cls for cls in (Metric, LogEvent, StatePatch, RunLifecycle, ExceptionEvent, Heartbeat, AlertEvent)
}


#: What a metric event counts for in the pipeline's byte bounds: about what a
#: logging call with a handful of values holds (measured: 376 bytes with 4
#: floats). One constant, so the producer's hand-off never looks into a metric.
METRIC_NBYTES: Final = 512
# Any other event: the tuple, its timestamp and a few small strings, plus its payload.
_EVENT_NBYTES: Final = 256


def event_nbytes(event: Any) -> int:
    """The estimated memory an event holds, for the byte bounds of the pipeline's buffers.

    Constant time: a payload was weighed when the event was built (see
    :class:`runwatch._payload.Payload`); a metric event is
    :data:`METRIC_NBYTES` whatever it holds (its values count in the
    buffers' event bounds).
    """
    kind = type(event)
    if kind is Metric:
        return METRIC_NBYTES
    if kind is StatePatch:
        return _EVENT_NBYTES + _payload_nbytes(event.patch) + _payload_nbytes(event.detail)
    if kind is LogEvent:
        return _EVENT_NBYTES + text_nbytes(event.type) + _payload_nbytes(event.data) + _payload_nbytes(event.detail)
    if kind is RunLifecycle:
        owner = 0 if event.owner is None else text_nbytes(event.owner)
        return _EVENT_NBYTES + _payload_nbytes(event.config) + _payload_nbytes(event.metadata) + owner
    if kind is ExceptionEvent:
        return _EVENT_NBYTES + sum(
            text_nbytes(text) for text in (event.error_type, event.message, event.traceback, event.category)
        )
    if kind is AlertEvent:
        tags = (*event.labels.items(), *event.annotations.items())
        return _EVENT_NBYTES + text_nbytes(event.rule) + sum(text_nbytes(k) + text_nbytes(v) for k, v in tags)
    if kind is ImageEvent:
        return _EVENT_NBYTES + len(event.data) + text_nbytes(event.name) + text_nbytes(event.caption or "")
    if kind is HistogramEvent:
        return _EVENT_NBYTES + text_nbytes(event.name) + 8 * len(event.counts)
    return _EVENT_NBYTES  # heartbeats, receipts, other components' own events


def _payload_nbytes(payload: Mapping[str, Any] | None) -> int:
    if payload is None:
        return 0
    if type(payload) is Payload:
        return payload.nbytes
    return copy_payload("payload", payload).nbytes  # built without its constructor (``_replace``)


@overload
def to_epoch_seconds(value: None, name: str = "time") -> None: ...
@overload
def to_epoch_seconds(value: datetime | float, name: str = "time") -> float: ...
@overload
def to_epoch_seconds(value: object, name: str = "time") -> float | None: ...
def to_epoch_seconds(value: object, name: str = "time") -> float | None:
    """Normalise a time filter to seconds since the epoch.

    Args:
        value: ``None``, a ``datetime`` (a naive one is taken as UTC; pandas
            ``Timestamp`` works too) or epoch seconds as ``int``/``float``.
        name: the argument's name, for error messages.

    Returns:
        Epoch seconds, or ``None`` when ``value`` is ``None``.

    Raises:
        TypeError: any other type (``bool``, ``date``, strings...).
        ValueError: a NaN or infinite number.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"{name} must be finite, got {shown(value)}")
        return seconds
    raise TypeError(f"{name} must be a datetime or epoch seconds, got {type(value).__name__}")
