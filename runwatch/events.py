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
import operator
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, NamedTuple, Self, cast, overload

from ._payload import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, Payload, check_text, copy_payload, shown, text_nbytes

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "LEVELS",
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

#: Log levels, lowest first; the same names as :class:`ErrorSeverity`.
LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_LEVEL_SET: Final = frozenset(LEVELS)


def _check_run_id(run_id: object) -> None:
    if type(run_id) is not str or not run_id:
        raise TypeError(f"run_id must be a non-empty string, got {shown(run_id)}")
    check_storable("run_id", run_id)


def check_storable(what: str, text: str) -> None:
    """Refuse a name the store cannot keep: one with NUL (SQLite's JSON functions cut
    a string there, so ``a\\x00b`` would be stored as ``a``) or a lone surrogate (not
    UTF-8: neither SQLite nor JSON can hold it).

    Every constructor checks its run id and a log event's type, except
    :class:`Metric`, which leaves its run id and names to the store (a check
    per name would cost ~20% of the ~1 µs hot path): the store's encoder drops
    such a metric alone, counted as ``unencodable``. Metrics from the wire are
    checked by :func:`runwatch.wire.event_from_dict`, so a remote batch is refused whole.

    Raises:
        ValueError: naming ``what``.
    """
    if "\x00" in text:
        raise ValueError(f"{what} must not contain NUL characters, got {shown(text)}")
    check_text(what, text)


#: Timestamps are seconds since 1970 up to 2255 (what pandas' datetime64[ns] holds).
MAX_TIMESTAMP: Final = 9_000_000_000.0


def _check_timestamp(timestamp: object, what: str = "timestamp") -> None:
    if type(timestamp) is not float and type(timestamp) is not int:
        raise TypeError(f"{what} must be seconds since the epoch as a float, got {shown(timestamp)}")
    if not 0.0 <= timestamp <= MAX_TIMESTAMP:  # also false for NaN
        raise ValueError(
            f"{what} must be seconds since the epoch between 0 and {MAX_TIMESTAMP:.0f}, got {shown(timestamp)}"
        )


def _check_int64(what: str, value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must fit in 64 bits, got {shown(value)}")
    return value


def _check_name(what: str, name: object) -> None:
    if type(name) is not str:
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")


def _to_float(name: str, value: object) -> float:
    """Convert one metric value, accepting numpy scalars and 0-d tensors."""
    if isinstance(value, (str, bytes, bytearray)) or value is None:
        raise TypeError(f"metric {shown(name)} must be a number, got {type(value).__name__} {shown(value)}")
    try:
        return float(value)  # type: ignore[arg-type]  # float() itself decides what is a number
    except OverflowError:
        raise ValueError(f"metric {shown(name)} is too large for a float: {shown(value)}") from None
    except (TypeError, ValueError):
        raise TypeError(f"metric {shown(name)} must be a number, got {type(value).__name__}") from None


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Validate metric values and flatten nested mappings to ``group/name``.

    Returns a new dict (the caller's mapping is never kept). ``int`` and
    ``float`` values are taken as they are; other numbers (``bool``, numpy
    scalars, 0-d tensors) are converted with ``float()``. NaN and ±Inf are legal.

    Raises:
        TypeError: a name that is not a string, or a value that is not a number.
        ValueError: an empty name, or no values at all.
    """
    if type(metrics) is dict:
        # The hot path: flat, plain string names, float or 64-bit int values.
        for name, value in metrics.items():
            kind = type(value)
            if kind is not float and (kind is not int or not INT64_MIN <= value <= INT64_MAX):
                break
            if type(name) is not str or not name:
                break
        else:
            if metrics:
                return metrics.copy()
    elif not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    _flatten_into(out, metrics, "", 0)
    if not out:
        raise ValueError("metrics must contain at least one value")
    return out


def _flatten_into(out: dict[str, float], metrics: Mapping[str, Any], prefix: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:  # also what a mapping that contains itself comes to
        raise ValueError(f"metrics are nested deeper than {MAX_JSON_DEPTH} levels (at {shown(prefix)})")
    for name, value in metrics.items():
        _check_name("metric name", name)
        full_name = prefix + name
        if isinstance(value, Mapping):
            _flatten_into(out, value, full_name + "/", depth + 1)
        elif type(value) is float or (type(value) is int and INT64_MIN <= value <= INT64_MAX):
            out[full_name] = value
        else:
            out[full_name] = _to_float(full_name, value)


def _check_level(level: object, what: str = "level") -> None:
    if type(level) is not str:
        raise TypeError(f"{what} must be a string, got {shown(level)}")
    if level not in _LEVEL_SET:
        if what == "level":
            raise ValueError(f"level must be one of {', '.join(LEVELS)}; got {shown(level)}")
        raise ValueError(f"{what} must be one of the levels {', '.join(LEVELS)}; got {shown(level)}")


class _EventBase:
    """Shared behaviour of every event class (all are tuple-backed and immutable)."""

    __slots__ = ()
    kind: ClassVar[str]

    # Tuple equality would let two kinds with equal fields compare equal.
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(cast("tuple[object, ...]", self), other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.kind, tuple.__hash__(cast("tuple[object, ...]", self))))


_tuple_new = tuple.__new__


class _MetricFields(NamedTuple):
    run_id: str
    timestamp: float
    values: Mapping[str, float]
    step: int | None = None
    tags: Mapping[str, str] | None = None


class Metric(_EventBase, _MetricFields):
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
            _check_run_id(run_id)
        if type(timestamp) is not float or not 0.0 <= timestamp <= MAX_TIMESTAMP:
            _check_timestamp(timestamp)
        values = flatten_metrics(values)
        if step is not None and (type(step) is not int or not INT64_MIN <= step <= INT64_MAX):
            step = _check_step(step)
        if tags is not None:
            tags = _copy_tags("tags", tags)
            for key, value in tags.items():
                check_text("tags keys", key)
                check_text(f"tags.{key}", value)
        return _tuple_new(cls, (run_id, timestamp, values, step, tags))

    def has_non_finite(self) -> bool:
        """Whether any value is NaN or ±Inf."""
        return any(v - v != 0.0 for v in self.values.values())


def _check_step(step: object) -> int:
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer or None, got {shown(step)}")
    try:
        value = operator.index(step)  # type: ignore[arg-type]  # index() decides: int, numpy integers
    except TypeError:
        raise TypeError(f"step must be an integer or None, got {shown(step)}") from None
    return _check_int64("step", value)


def _copy_tags(what: str, tags: object) -> dict[str, str]:
    if not isinstance(tags, Mapping):
        raise TypeError(f"{what} must be a mapping of string to string, got {type(tags).__name__}")
    for key, value in tags.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(f"{what} must map strings to strings, got {shown(key)}: {shown(value)}")
    return dict(tags)


class _LogEventFields(NamedTuple):
    run_id: str
    timestamp: float
    type: str
    level: str = "info"
    data: Mapping[str, Any] = {}
    detail: Mapping[str, Any] | None = None


class LogEvent(_EventBase, _LogEventFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_name("type", type)
        check_storable("type", type)
        _check_level(level)
        if data is None:
            data = {}
        elif not isinstance(data, Mapping):
            raise TypeError(f"data must be a mapping, got {_type_name(data)}")
        data = copy_payload("data", data)
        if detail is not None:
            detail = _copy_detail(detail)
        return _tuple_new(cls, (run_id, timestamp, type, level, data, detail))


def _copy_detail(detail: object) -> Payload:
    if not isinstance(detail, Mapping):
        raise TypeError(f"detail must be a mapping or None, got {_type_name(detail)}")
    return copy_payload("detail", detail)


def _type_name(value: object) -> str:
    return type(value).__name__


class _StatePatchFields(NamedTuple):
    run_id: str
    timestamp: float
    patch: Mapping[str, Any]
    detail: Mapping[str, Any] | None = None


class StatePatch(_EventBase, _StatePatchFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        if not isinstance(patch, Mapping):
            raise TypeError(f"patch must be a mapping, got {_type_name(patch)}")
        patch = copy_payload("patch", patch)
        if detail is not None:
            detail = _copy_detail(detail)
        return _tuple_new(cls, (run_id, timestamp, patch, detail))


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


class RunLifecycle(_EventBase, _RunLifecycleFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        if not isinstance(transition, str) or transition not in _TRANSITIONS:  # before the enum repr()s it
            names = ", ".join(t.value for t in RunTransition)
            raise ValueError(f"transition must be one of {names}; got {shown(transition)}")
        transition = RunTransition(transition)
        _check_name("run_kind", run_kind)
        check_storable("run_kind", run_kind)
        if config is not None:
            if not isinstance(config, Mapping):
                raise TypeError(f"config must be a mapping, got {_type_name(config)}")
            config = copy_payload("config", config)
        if final_reward is not None:
            final_reward = _to_float("final_reward", final_reward)
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise TypeError(f"metadata must be a mapping, got {_type_name(metadata)}")
            metadata = copy_payload("metadata", metadata)
        if owner is not None:
            _check_name("owner", owner)
            check_storable("owner", owner)
            if len(owner) > 200:
                raise ValueError(f"owner must be at most 200 characters, got {len(owner)}")
        fields = (run_id, timestamp, transition, run_kind, config, final_reward, metadata, owner)
        return _tuple_new(cls, fields)

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


class ExceptionEvent(_EventBase, _ExceptionEventFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_name("error_type", error_type)
        check_text("error_type", error_type)
        for name, value in (("message", message), ("traceback", traceback), ("category", category)):
            if type(value) is not str:
                raise TypeError(f"{name} must be a string, got {shown(value)}")
            check_text(name, value)
        _check_level(severity, "severity")
        if component is not None:
            if type(component) is not str:
                raise TypeError(f"component must be a string or None, got {shown(component)}")
            check_text("component", component)
        fields = (run_id, timestamp, error_type, message, traceback, category, severity, component)
        return _tuple_new(cls, fields)


class _HeartbeatFields(NamedTuple):
    run_id: str
    timestamp: float
    counters: Mapping[str, int] | None = None


class Heartbeat(_EventBase, _HeartbeatFields):
    """The producer is alive; ``counters`` carries progress such as ``total_steps``."""

    __slots__ = ()
    kind: ClassVar[str] = "heartbeat"

    def __new__(cls, run_id: str, timestamp: float, counters: Mapping[str, int] | None = None) -> Self:
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        if counters is not None:
            if not isinstance(counters, Mapping):
                raise TypeError(f"counters must be a mapping of string to int, got {type(counters).__name__}")
            for key, value in counters.items():
                if type(key) is not str or type(value) is not int:
                    raise TypeError(f"counters must map strings to ints, got {shown(key)}: {shown(value)}")
                check_text("counters keys", key)
                _check_int64(f"counters.{key}", value)
            counters = dict(counters)
        return _tuple_new(cls, (run_id, timestamp, counters))


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


class AlertEvent(_EventBase, _AlertEventFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_name("rule", rule)
        if state not in ALERT_STATES:
            raise ValueError(f"state must be one of {', '.join(ALERT_STATES)}; got {shown(state)}")
        _check_name("severity", severity)
        labels = _copy_tags("labels", {} if labels is None else labels)
        annotations = _copy_tags("annotations", {} if annotations is None else annotations)
        if value is not None:
            value = _to_float("value", value)
        if active_since is not None:
            _check_timestamp(active_since, "active_since")
        fields = (run_id, timestamp, rule, state, severity, value, labels, annotations, active_since)
        return _tuple_new(cls, fields)


class _IngestReceiptFields(NamedTuple):
    run_id: str
    timestamp: float
    batch_id: str
    events: int
    digest: str = ""


class IngestReceipt(_EventBase, _IngestReceiptFields):
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
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_name("batch_id", batch_id)
        check_storable("batch_id", batch_id)
        return _tuple_new(cls, (run_id, timestamp, batch_id, events, digest))


def _check_media_name(name: object) -> None:
    _check_name("name", name)
    check_storable("name", name)  # type: ignore[arg-type]  # a str, checked above


def _check_media_step(step: object) -> int | None:
    if step is None or (type(step) is int and INT64_MIN <= step <= INT64_MAX):
        return step
    return _check_step(step)


def _check_count(what: str, value: object) -> None:
    if type(value) is not int or value < 0:
        raise TypeError(f"{what} must be a non-negative integer, got {shown(value)}")


#: The media types an :class:`ImageEvent` may carry.
IMAGE_MIMES: Final = ("image/png", "image/jpeg")


class _ImageEventFields(NamedTuple):
    run_id: str
    timestamp: float
    name: str
    step: int | None
    data: bytes
    mime: str
    width: int
    height: int
    digest: str
    caption: str | None = None


class ImageEvent(_EventBase, _ImageEventFields):
    """An encoded image of the series ``name`` (see :mod:`runwatch.media.images`).

    Attributes:
        name: the series (e.g. ``frame``); the store keeps every image of it.
        step: the global step it belongs to, or ``None``.
        data: PNG or JPEG bytes.
        mime: ``image/png`` or ``image/jpeg``.
        width, height: pixels.
        digest: SHA-256 of ``data`` in hex: the store keeps each content once.
        caption: free text shown with the image, or ``None``.

    The wire form (:func:`event_to_wire`) leaves ``data`` out: subscribers
    fetch the bytes by digest.
    """

    __slots__ = ()
    kind: ClassVar[str] = "image"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        name: str,
        step: int | None,
        data: bytes,
        mime: str,
        width: int,
        height: int,
        digest: str,
        caption: str | None = None,
    ) -> Self:
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_media_name(name)
        step = _check_media_step(step)
        if type(data) is not bytes or not data:
            raise TypeError(f"data must be non-empty bytes, got {_type_name(data)}")
        if mime not in IMAGE_MIMES:
            raise ValueError(f"mime must be one of {', '.join(IMAGE_MIMES)}, got {shown(mime)}")
        for what, side in (("width", width), ("height", height)):
            if type(side) is not int or side < 1:
                raise TypeError(f"{what} must be a positive integer, got {shown(side)}")
        if type(digest) is not str or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ValueError(f"digest must be a SHA-256 in lowercase hex, got {shown(digest)}")
        if caption is not None:
            if type(caption) is not str:
                raise TypeError(f"caption must be a string or None, got {_type_name(caption)}")
            check_storable("caption", caption)
        return _tuple_new(cls, (run_id, timestamp, name, step, data, mime, width, height, digest, caption))


class _HistogramEventFields(NamedTuple):
    run_id: str
    timestamp: float
    name: str
    step: int | None
    size: int
    nan_count: int
    posinf_count: int
    neginf_count: int
    min: float | None
    max: float | None
    sum: float
    low: float | None
    high: float | None
    counts: tuple[int, ...]


class HistogramEvent(_EventBase, _HistogramEventFields):
    """Binned values of the series ``name`` at a step (see :mod:`runwatch.media.histograms`).

    Attributes:
        size: values given; ``nan_count``, ``posinf_count`` and
            ``neginf_count`` of them are NaN, +Inf and -Inf (in no bin).
        min, max, sum: of the finite values (``min``/``max`` ``None`` without any).
        low, high: the edges of ``len(counts)`` equal bins (``None`` without a
            finite value, and then ``counts`` is empty).
        counts: values per bin.
    """

    __slots__ = ()
    kind: ClassVar[str] = "histogram"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        name: str,
        step: int | None,
        size: int,
        nan_count: int,
        posinf_count: int,
        neginf_count: int,
        min: float | None,
        max: float | None,
        sum: float,
        low: float | None,
        high: float | None,
        counts: tuple[int, ...],
    ) -> Self:
        _check_run_id(run_id)
        _check_timestamp(timestamp)
        _check_media_name(name)
        step = _check_media_step(step)
        for what, value in (
            ("size", size),
            ("nan_count", nan_count),
            ("posinf_count", posinf_count),
            ("neginf_count", neginf_count),
        ):
            _check_count(what, value)
        counts = tuple(counts)
        for value in counts:
            _check_count("counts", value)
        if nan_count + posinf_count + neginf_count + (sum_ := _total(counts)) != size:
            raise ValueError(f"size ({size}) must be the NaN, ±Inf and binned counts added up ({sum_} binned)")
        finite = (min, max, low, high)
        if counts and any(type(value) is not float or value - value != 0.0 for value in finite):
            raise TypeError(f"min, max, low and high must be finite floats, got {shown(finite)}")
        if not counts and any(value is not None for value in finite):
            raise ValueError("min, max, low and high must be None for a histogram without bins")
        fields = (run_id, timestamp, name, step, size, nan_count, posinf_count, neginf_count)
        return _tuple_new(cls, (*fields, min, max, float(sum), low, high, counts))


def _total(counts: tuple[int, ...]) -> int:
    total = 0
    for value in counts:
        total += value
    return total


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


def merge_state(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into ``base`` and return the new state.

    Nested mappings merge key by key; lists and scalars replace; a ``None``
    value deletes the key. Neither argument is modified.
    """
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_state(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def merge_state_into(state: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Deep-merge ``patch`` into ``state`` in place, as :func:`merge_state` does.

    The cost is the patch's size, not the state's: for a state that takes
    patch after patch (the store's writer, the snapshot stage). ``state`` and
    every mapping nested in it must belong to the caller; mappings taken from
    ``patch`` are copied, never shared, so a later merge cannot change a patch
    (lists and scalars are shared: nothing here changes them).
    """
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
        elif isinstance(value, Mapping):
            current = state.get(key)
            if type(current) is not dict:
                current = state[key] = {}
            merge_state_into(current, value)
        else:
            state[key] = value


def copy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a state whose nested mappings are copies too (lists are shared: never changed),
    so :func:`merge_state_into` may merge into it."""
    return {key: copy_state(value) if isinstance(value, Mapping) else value for key, value in state.items()}
