"""The alert rule model: rule kinds, their validation and annotation templates.

Pure code: no I/O, no clock. Rules are frozen dataclasses, one class per
kind, validated at construction (a :class:`~runwatch.exceptions.ConfigError`
naming the field); :func:`parse_rules` builds them from TOML/JSON tables and
prefixes errors with ``rules[i].``. The evaluator is
:class:`~runwatch.alerts.engine.AlertEngine`.

====================  ========================================================
``threshold``         a metric (name or glob) compared with a value, on its
                      last value or its mean over ``window_seconds``
``non_finite``        NaN or ±Inf in any metric, or in the named ones (globs)
``rate``              at least/more than ``limit`` matching log or exception
                      events within ``window_seconds`` (an error burst)
``absence``           no metric / heartbeat / event for ``duration_seconds``
``stagnation``        a metric not improving by ``min_delta`` over ``steps``
                      logging calls or ``window_seconds``
``anomaly``           the z-score of a value against the ``window_values``
                      values before it is above ``z``
====================  ========================================================

Every rule also has ``name``, ``for_seconds``, ``keep_firing_for_seconds``,
``severity``, ``labels`` and ``annotations`` (see :class:`Rule`).

The ``value`` of an alert (``AlertEvent.value``, ``{value}`` in templates):
threshold — the last value or the window mean; non_finite — the NaN/±Inf
value (the finite one that resolved it); rate — the count in the window;
absence — seconds since last seen; stagnation — calls or seconds since the
last improvement; anomaly — the z-score.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Final

from ..exceptions import ConfigError

__all__ = [
    "DEFAULT_RULES",
    "OPERATORS",
    "RULE_KINDS",
    "SEVERITIES",
    "TEMPLATE_FIELDS",
    "AbsenceRule",
    "AnomalyRule",
    "NonFiniteRule",
    "RateRule",
    "Rule",
    "StagnationRule",
    "ThresholdRule",
    "parse_rule",
    "parse_rules",
]

#: Alert severities, least urgent first.
SEVERITIES: Final = ("info", "warning", "error", "critical", "page")

#: Comparison operators of threshold and rate rules.
OPERATORS: Final[Mapping[str, Callable[[Any, Any], bool]]] = MappingProxyType(
    {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
)

#: Most timestamps a rate window holds; counts above it saturate.
MAX_RATE_WINDOW: Final = 10_000
#: Most values an anomaly window may hold.
MAX_ANOMALY_WINDOW: Final = 100_000
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_LABELS: Final = frozenset({"metric"})
_EVENT_KINDS_FOR_RATE: Final = ("log", "exception")
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")

# -- validation helpers ----------------------------------------------------------------------------


def _set(rule: Any, name: str, value: Any) -> None:
    object.__setattr__(rule, name, value)  # normalising a frozen dataclass in __post_init__


def _type_name(value: object) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _string(path: str, value: object) -> str:
    if type(value) is not str:
        raise ConfigError(path, f"must be a string, got {_type_name(value)}")
    if not value:
        raise ConfigError(path, "must not be empty")
    return value


def _choice(path: str, value: object, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if type(value) is not str or value not in choices:
        raise ConfigError(path, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _number(path: str, value: object, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite JSON number as a float (ints accepted, booleans refused)."""
    if type(value) is not float and type(value) is not int:
        raise ConfigError(path, f"must be a number, got {_type_name(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(path, f"must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise ConfigError(path, f"must be greater than 0, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(path, f"must be at least {minimum:g}, got {value!r}")
    return number


def _integer(path: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    if type(value) is not int:
        raise ConfigError(path, f"must be an integer, got {_type_name(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(path, f"must be {bound}, got {value}")
    return value


def _strings(path: str, value: object, choices: Iterable[str] | None = None) -> tuple[str, ...]:
    """A list of non-empty strings (a single string is shorthand for a list of one)."""
    items = [value] if type(value) is str else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(path, f"must be a list of strings, got {_type_name(value)}")
    allowed = tuple(choices) if choices is not None else None
    for index, item in enumerate(items):
        if allowed is not None:
            _choice(f"{path}[{index}]", item, allowed)
        else:
            _string(f"{path}[{index}]", item)
    return tuple(items)


class _Pattern:
    """A metric name or glob (``*``, ``?``, ``[...]``), matched case-sensitively."""

    __slots__ = ("match", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        if any(char in text for char in "*?["):
            regex = re.compile(fnmatch.translate(text))
            self.match: Callable[[str], bool] = lambda name: regex.match(name) is not None
        else:
            self.match = text.__eq__


# -- annotation templates --------------------------------------------------------------------------

#: Fields an annotation template may use, besides ``{labels[name]}``.
TEMPLATE_FIELDS: Final = ("value", "run_id", "metric", "rule", "severity")
_LABEL_FIELD = re.compile(r"labels\[[^\[\]{}]+\]\Z")
_FORMATTER = string.Formatter()


class _TemplateValue:
    """The ``{value}`` of a template: a float, or "n/a" when there is none.

    Rendering at run time never raises: a format spec that does not fit
    falls back to the plain value (specs are checked when rules load).
    """

    __slots__ = ("number", "strict")

    def __init__(self, number: float | None, strict: bool = False) -> None:
        self.number = number
        self.strict = strict

    def __format__(self, spec: str) -> str:
        if not spec:
            return str(self)
        if self.number is None:
            return format("n/a", spec) if not self.strict else format(1.0, spec)
        try:
            return format(self.number, spec)
        except (ValueError, TypeError):
            if self.strict:
                raise
            return str(self)

    def __str__(self) -> str:
        number = self.number
        if number is None:
            return "n/a"
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number))  # counts read "12", not "12.0"
        return str(number)

    __repr__ = __str__


class _Labels(dict[str, str]):
    """Labels for ``{labels[name]}``: a missing label renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _check_template(path: str, template: object) -> str:
    if type(template) is not str:
        raise ConfigError(path, f"must be a template string, got {_type_name(template)}")
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ConfigError(path, f"is not a valid template: {exc}") from None
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS and not _LABEL_FIELD.match(name):
            known = ", ".join("{" + field + "}" for field in (*TEMPLATE_FIELDS, "labels[name]"))
            raise ConfigError(path, f"unknown template field {{{name}}} (known: {known})")
        if spec and "{" in spec:
            raise ConfigError(path, f"nested fields in the format spec of {{{name}}} are not supported")
    try:
        _render(template, 1.0, "run", "metric", "rule", "warning", {}, strict=True)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ConfigError(path, f"cannot be rendered: {exc}") from None
    return template


def _render(
    template: str,
    value: float | None,
    run_id: str,
    metric: str,
    rule: str,
    severity: str,
    labels: Mapping[str, str],
    *,
    strict: bool = False,
) -> str:
    context = {
        "value": _TemplateValue(value, strict),
        "run_id": run_id,
        "metric": metric,
        "rule": rule,
        "severity": severity,
        "labels": _Labels(labels),
    }
    if strict:
        return template.format_map(context)
    try:
        return template.format_map(context)
    except Exception:  # field names were checked at load; never let a template break evaluation
        return template


# -- rule specs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Rule:
    """Fields every rule kind has. Construct a subclass (one per kind).

    Attributes:
        name: unique among the rules of an engine; the ``rule`` of its alert events.
        for_seconds: how long the condition must hold before the alert fires;
            0 fires at the first true evaluation.
        keep_firing_for_seconds: how long a firing alert keeps firing after
            its condition turned false (damps flapping); 0 resolves at once.
        severity: one of :data:`SEVERITIES`.
        labels: static labels added to every alert of the rule (``metric`` is
            reserved: the metric kinds set it to the series' metric name).
        annotations: name → template; templates use ``{value}``, ``{run_id}``,
            ``{metric}``, ``{rule}``, ``{severity}`` and ``{labels[name]}``
            with ``str.format`` specs (``{value:.3g}``).

    Raises:
        ConfigError: (a ``ValueError``) naming the bad field.
    """

    kind: ClassVar[str] = ""
    #: Whether instances are per metric name (with a ``metric`` label).
    per_metric: ClassVar[bool] = False

    name: str
    for_seconds: float = 0.0
    keep_firing_for_seconds: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            raise TypeError("Rule is the base class; construct ThresholdRule, NonFiniteRule, RateRule, ...")
        _string("name", self.name)
        _set(self, "for_seconds", _number("for_seconds", self.for_seconds, minimum=0))
        _set(
            self, "keep_firing_for_seconds", _number("keep_firing_for_seconds", self.keep_firing_for_seconds, minimum=0)
        )
        _choice("severity", self.severity, SEVERITIES)
        _set(self, "labels", MappingProxyType(self._check_labels(self.labels)))
        annotations = self._mapping("annotations", self.annotations)
        for key, template in annotations.items():
            _check_template(f"annotations.{key}", template)
        _set(self, "annotations", MappingProxyType(annotations))
        self._validate()

    @staticmethod
    def _mapping(path: str, value: object) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a table of strings, got {_type_name(value)}")
        for key in value:
            if type(key) is not str or not key:
                raise ConfigError(path, f"keys must be non-empty strings, got {key!r}")
        return dict(value)

    def _check_labels(self, value: object) -> dict[str, str]:
        labels = self._mapping("labels", value)
        for key, item in labels.items():
            if not _LABEL_NAME.match(key):
                raise ConfigError(f"labels.{key}", "a label name holds letters, digits and '_', not first a digit")
            if key in _RESERVED_LABELS:
                raise ConfigError(f"labels.{key}", "is reserved: alerts set it to the metric name")
            if type(item) is not str:
                raise ConfigError(f"labels.{key}", f"must be a string, got {_type_name(item)}")
        return labels

    def _validate(self) -> None:
        """Check and normalise the kind's own fields."""


@dataclass(frozen=True, kw_only=True)
class ThresholdRule(Rule):
    """A metric compared with a threshold.

    Attributes:
        metric: a metric name or glob; each matching name is its own series.
        op: one of ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``.
        threshold: the value compared with.
        aggregate: ``last`` (the latest value) or ``mean`` (of the finite
            values within ``window_seconds`` of the newest, by event time).
        window_seconds: the window of ``mean``; ignored for ``last``.
    """

    kind: ClassVar[str] = "threshold"
    per_metric: ClassVar[bool] = True

    metric: str
    op: str
    threshold: float
    aggregate: str = "last"
    window_seconds: float = 60.0

    def _validate(self) -> None:
        _string("metric", self.metric)
        _choice("op", self.op, OPERATORS)
        _set(self, "threshold", _number("threshold", self.threshold))
        _choice("aggregate", self.aggregate, ("last", "mean"))
        _set(self, "window_seconds", _number("window_seconds", self.window_seconds, positive=True))


@dataclass(frozen=True, kw_only=True)
class NonFiniteRule(Rule):
    """A metric value is NaN or ±Inf.

    Attributes:
        metrics: names or globs to watch; empty watches every metric.
    """

    kind: ClassVar[str] = "non_finite"
    per_metric: ClassVar[bool] = True

    metrics: tuple[str, ...] = ()

    def _validate(self) -> None:
        _set(self, "metrics", _strings("metrics", self.metrics))


@dataclass(frozen=True, kw_only=True)
class RateRule(Rule):
    """Too many matching log or exception events within a window (a burst).

    Attributes:
        window_seconds: the window, by event time.
        limit: the count compared with; the condition is ``count <op> limit``.
        op: ``>`` or ``>=``.
        kinds: event kinds counted: ``log``, ``exception`` or both.
        types: globs of the log event ``type`` (for exceptions: ``error_type``);
            empty counts every type.
        levels: log levels (for exceptions: ``severity``) counted; empty counts all.
    """

    kind: ClassVar[str] = "rate"

    window_seconds: float
    limit: int
    op: str = ">"
    kinds: tuple[str, ...] = _EVENT_KINDS_FOR_RATE
    types: tuple[str, ...] = ()
    levels: tuple[str, ...] = ()

    def _validate(self) -> None:
        _set(self, "window_seconds", _number("window_seconds", self.window_seconds, positive=True))
        _integer("limit", self.limit, minimum=0, maximum=MAX_RATE_WINDOW - 1)
        _choice("op", self.op, (">", ">="))
        kinds = _strings("kinds", self.kinds, _EVENT_KINDS_FOR_RATE)
        if not kinds:
            raise ConfigError("kinds", "must name at least one of log, exception")
        _set(self, "kinds", kinds)
        _set(self, "types", _strings("types", self.types))
        _set(self, "levels", _strings("levels", self.levels, _LEVELS))


@dataclass(frozen=True, kw_only=True)
class AbsenceRule(Rule):
    """Nothing heard from a run for a while (a hang, a stuck loader).

    A run is watched from the first event of the awaited sort on (so runs
    that never send heartbeats are not reported for lacking them), and not
    while it is paused.

    Attributes:
        target: ``heartbeat``, ``metric`` or ``event`` (any event).
        duration_seconds: how long without one before the condition is true.
        metric: with ``target = "metric"``, a name or glob to await; ``None``
            awaits any metric.
    """

    kind: ClassVar[str] = "absence"

    target: str
    duration_seconds: float
    metric: str | None = None

    def _validate(self) -> None:
        _choice("target", self.target, ("heartbeat", "metric", "event"))
        _set(self, "duration_seconds", _number("duration_seconds", self.duration_seconds, positive=True))
        if self.metric is not None:
            _string("metric", self.metric)
            if self.target != "metric":
                raise ConfigError("metric", 'is only used with target = "metric"')


@dataclass(frozen=True, kw_only=True)
class StagnationRule(Rule):
    """A metric has not improved for a number of logging calls or seconds.

    An improvement is a value better than the best so far by more than
    ``min_delta`` (lower for ``min``, higher for ``max``); NaN never improves.

    Attributes:
        metric: a metric name or glob.
        mode: ``min`` (a loss should fall) or ``max`` (a reward should rise).
        min_delta: the smallest change that counts as an improvement (≥ 0).
        steps: logging calls of the metric without improvement; or
        window_seconds: event time without improvement (exactly one of the two).
    """

    kind: ClassVar[str] = "stagnation"
    per_metric: ClassVar[bool] = True

    metric: str
    mode: str = "min"
    min_delta: float = 0.0
    steps: int | None = None
    window_seconds: float | None = None

    def _validate(self) -> None:
        _string("metric", self.metric)
        _choice("mode", self.mode, ("min", "max"))
        _set(self, "min_delta", _number("min_delta", self.min_delta, minimum=0))
        if (self.steps is None) == (self.window_seconds is None):
            raise ConfigError("steps", "give exactly one of steps and window_seconds")
        if self.steps is not None:
            _integer("steps", self.steps, minimum=1)
        if self.window_seconds is not None:
            _set(self, "window_seconds", _number("window_seconds", self.window_seconds, positive=True))


@dataclass(frozen=True, kw_only=True)
class AnomalyRule(Rule):
    """A value far from the recent ones: its z-score against the window before it.

    Attributes:
        metric: a metric name or glob.
        z: the |z| (standard deviations from the window mean) above which a
            value is anomalous. A value differing from a constant window has
            an infinite z.
        window_values: how many previous finite values form the window.
        min_values: values needed in the window before any is judged
            (default: the smaller of 10 and ``window_values``).
        direction: ``both``, ``above`` (only spikes up) or ``below``.
    """

    kind: ClassVar[str] = "anomaly"
    per_metric: ClassVar[bool] = True

    metric: str
    z: float = 4.0
    window_values: int = 100
    min_values: int | None = None
    direction: str = "both"

    def _validate(self) -> None:
        _string("metric", self.metric)
        _set(self, "z", _number("z", self.z, positive=True))
        _integer("window_values", self.window_values, minimum=2, maximum=MAX_ANOMALY_WINDOW)
        if self.min_values is None:
            _set(self, "min_values", min(10, self.window_values))
        else:
            _integer("min_values", self.min_values, minimum=2, maximum=self.window_values)
        _choice("direction", self.direction, ("both", "above", "below"))


#: Rule classes by their ``kind``.
RULE_KINDS: Final[Mapping[str, type[Rule]]] = MappingProxyType(
    {cls.kind: cls for cls in (ThresholdRule, NonFiniteRule, RateRule, AbsenceRule, StagnationRule, AnomalyRule)}
)


def parse_rules(data: object) -> list[Rule]:
    """Validate rule tables (from TOML/JSON) and build the rules.

    Each table has a ``kind`` (see :data:`RULE_KINDS`) and that kind's
    fields; list fields also take a single string. Built :class:`Rule`
    objects are accepted as they are.

    Raises:
        ConfigError: naming ``rules[i].field`` and what is wrong with it —
            an unknown or missing field, a bad value or template, a duplicate name.
    """
    if not isinstance(data, (list, tuple)):
        raise ConfigError("rules", f"must be a list of rule tables, got {_type_name(data)}")
    rules: list[Rule] = []
    names: dict[str, int] = {}
    for index, item in enumerate(data):
        path = f"rules[{index}]"
        if isinstance(item, Rule):
            rule = item
        else:
            rule = _parse_rule(path, item)
        if rule.name in names:
            raise ConfigError(f"{path}.name", f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])")
        names[rule.name] = index
        rules.append(rule)
    return rules


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def parse_rule(data: object) -> Rule:
    """Build one rule from its table; see :func:`parse_rules`.

    Raises:
        ConfigError: naming the field (``op``, ``annotations.summary``...).
    """
    return _parse_rule("", data)


def _parse_rule(path: str, item: object) -> Rule:
    if not isinstance(item, Mapping):
        raise ConfigError(path, f"must be a table, got {_type_name(item)}")
    kind = item.get("kind")
    cls = RULE_KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(_join(path, "kind"), f"must be one of {', '.join(RULE_KINDS)}; got {kind!r}")
    known = {spec.name: spec for spec in fields(cls)}
    for key in item:
        if key != "kind" and key not in known:
            names = ", ".join(sorted(known))
            raise ConfigError(_join(path, key), f"unknown field for a {kind} rule (known: kind, {names})")
    for name, spec in known.items():
        if name not in item and spec.default is MISSING and spec.default_factory is MISSING:
            raise ConfigError(_join(path, name), f"is required for a {kind} rule")
    try:
        return cls(**{key: value for key, value in item.items() if key != "kind"})
    except ConfigError as exc:
        if not path:
            raise
        raise ConfigError(f"{path}.{exc.path}", exc.reason) from None


#: The rules an ``alerts`` stage runs unless told otherwise.
DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    NonFiniteRule(
        name="non_finite_metric",
        severity="critical",
        annotations={"summary": "{metric} is {value} in run {run_id}"},
    ),
    RateRule(
        name="error_burst",
        kinds=("log", "exception"),
        levels=("error", "critical"),
        op=">=",
        limit=10,
        window_seconds=60.0,
        severity="error",
        annotations={"summary": "{value} errors within 60 s in run {run_id}"},
    ),
    # ErrorHandler's CRITICAL errors (and any critical log event) fire at once: a rule
    # instance like every other alert, not a separate code path.
    RateRule(
        name="critical_error",
        kinds=("log", "exception"),
        levels=("critical",),
        op=">=",
        limit=1,
        window_seconds=300.0,
        severity="critical",
        annotations={"summary": "a critical error in run {run_id}"},
    ),
    AbsenceRule(
        name="heartbeat_absent",
        target="heartbeat",
        duration_seconds=120.0,
        severity="warning",
        labels={"condition": "hung"},
        annotations={"summary": "no heartbeat from run {run_id} for {value:.0f} s"},
    ),
)
