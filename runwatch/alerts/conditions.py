"""Alert conditions: how each rule kind turns events into a condition and a value.

Internals of :class:`~runwatch.alerts.engine.AlertEngine` (pure code: no I/O,
no clock). Each rule is compiled into a :class:`Condition` that keeps the
kind's signal state (windows, counters) in its alert instances. A condition
only decides: each evaluation returns a :data:`Decision` (is the condition
true, and the alert's value), and the engine applies it to the instance's
state machine. Kinds that keep signal state (:attr:`Condition.keeps_state`)
are judged with their instance, which the engine finds or creates first;
the others are judged first, and the engine creates an instance only for a
true condition.
"""

from __future__ import annotations

import math
import operator
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from itertools import repeat
from typing import Any, ClassVar, Final, Literal, overload

from ..events import ExceptionEvent, Heartbeat, LogEvent, Metric, StatePatch
from .rules import (
    MAX_RATE_WINDOW,
    OPERATORS,
    AbsenceRule,
    AnomalyRule,
    NonFiniteRule,
    RateRule,
    Rule,
    StagnationRule,
    ThresholdRule,
    _Pattern,
)
from .windows import MeanWindow, Patience, ZWindow, z_score

__all__ = [
    "CONDITIONS",
    "FIRING",
    "INACTIVE",
    "PENDING",
    "RESOLVED",
    "RUN_ACTIVITY",
    "AbsenceCondition",
    "AnomalyCondition",
    "Condition",
    "Decision",
    "Instance",
    "MetricCondition",
    "NonFiniteCondition",
    "RateCondition",
    "RunBatch",
    "RunState",
    "StagnationCondition",
    "ThresholdCondition",
    "decode_float",
    "encode_float",
]

# -- alert instances and per-run state ------------------------------------------------------------------------------

#: Event classes that are a run's own activity (and keep it from being "absent").
RUN_ACTIVITY: Final = frozenset({Metric, LogEvent, Heartbeat, ExceptionEvent, StatePatch})

#: One evaluation's outcome: whether the condition holds, and the alert's value then
#: (``None``: the value stays what it was).
Decision = tuple[bool, float | None]

INACTIVE: Final = "inactive"
PENDING: Final = "pending"
FIRING: Final = "firing"
RESOLVED: Final = "resolved"


class Instance:
    """One alert instance: a rule's state for one run (and metric)."""

    __slots__ = (
        "active",
        "active_since",
        "compiled",
        "data",
        "keep_firing_since",
        "metric",
        "run_id",
        "state",
        "value",
    )

    def __init__(self, compiled: Condition, run_id: str, metric: str | None, data: Any) -> None:
        self.compiled = compiled
        self.run_id = run_id
        self.metric = metric
        self.state = INACTIVE
        self.active = False  # the condition at the last evaluation
        self.value: float | None = None
        self.active_since: float | None = None
        self.keep_firing_since: float | None = None
        self.data = data  # the kind's signal state (window, counters), or None


class RunState:
    """What the engine keeps per run: its instances and absence clocks."""

    __slots__ = (
        "clock_at",
        "clock_ts",
        "instances",
        "last_event_at",
        "last_heartbeat_at",
        "last_metric_at",
        "paused",
        "run_id",
    )

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.instances: dict[tuple[int, str | None], Instance] = {}
        self.last_event_at: float | None = None  # arrival times (now), for absence
        self.last_heartbeat_at: float | None = None
        self.last_metric_at: dict[int, float] = {}  # by absence rule index
        self.paused = False
        self.clock_ts = 0.0  # the newest event timestamp seen...
        self.clock_at = 0.0  # ...and when it arrived: the run's event clock between events

    def event_clock(self, now: float) -> float:
        """The run's estimated event time at ``now``."""
        return self.clock_ts + max(0.0, now - self.clock_at)


class RunBatch:
    """What one ``observe`` call saw of one run, gathered before evaluating."""

    __slots__ = (
        "_dicts",
        "_samples",
        "_times",
        "heartbeat",
        "hits",
        "ignored",
        "last",
        "max_ts",
        "metrics",
        "non_finite",
        "state",
    )

    def __init__(self, state: RunState | None) -> None:
        self.state = state
        self.ignored = state is None  # a run that ended: its stragglers are not evaluated
        self.metrics: list[Metric] = []
        self.last: dict[str, float] = {}
        self.non_finite: dict[str, float] = {}
        self.max_ts = 0.0
        self.hits: dict[int, list[float]] = {}
        self.heartbeat = False
        self._samples: dict[str, tuple[list[float], list[float]]] = {}
        self._dicts: list[Any] | None = None  # the metric events' value dicts and timestamps, shared by every name
        self._times: list[float] = []

    def note_non_finite(self, values: Mapping[str, float]) -> None:
        for name, value in values.items():
            if value - value != 0.0:
                self.non_finite[name] = value

    def samples(self, name: str) -> tuple[list[float], list[float]]:
        """Event timestamps and values of ``name`` in this batch, in order."""
        cached = self._samples.get(name)
        if cached is None:
            if self._dicts is None:
                self._dicts = list(map(operator.itemgetter(2), self.metrics))  # Metric.values
                self._times = list(map(operator.itemgetter(1), self.metrics))  # Metric.timestamp
            try:  # C-level fast path: Metric.values is a dict
                values: list[Any] = list(map(dict.get, self._dicts, repeat(name)))
            except TypeError:
                values = [mapping.get(name) for mapping in self._dicts]
            times = self._times
            if None in values:  # some calls did not log this metric
                pairs = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
                times, values = [t for t, _ in pairs], [v for _, v in pairs]
            cached = self._samples[name] = (times, values)
        return cached

    def finite_samples(self, name: str) -> tuple[list[float], list[float]]:
        """Like :meth:`samples` without NaN and ±Inf values."""
        times, values = self.samples(name)
        if name in self.non_finite:
            pairs = [(t, v) for t, v in zip(times, values, strict=True) if v - v == 0.0]
            return [t for t, _ in pairs], [v for _, v in pairs]
        return times, values


def encode_float(value: float | None) -> float | str | None:
    """JSON-safe float: NaN and ±Inf as strings."""
    if value is None or value - value == 0.0:
        return value
    return "nan" if value != value else ("inf" if value > 0 else "-inf")


@overload
def decode_float(path: str, value: object, *, optional: Literal[False]) -> float: ...
@overload
def decode_float(path: str, value: object, *, optional: bool = True) -> float | None: ...
def decode_float(path: str, value: object, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if type(value) is str and value in ("nan", "inf", "-inf"):
        return float(value)
    if type(value) is float or type(value) is int:
        return float(value)
    raise ValueError(f"{path}: must be a number, got {value!r}")


# -- compiled rules --------------------------------------------------------------------------------


class Condition:
    """A rule ready to evaluate: its index, matchers and signal state factory."""

    __slots__ = ("index", "keeps_state", "rule")
    needs_samples: ClassVar[bool] = False

    def __init__(self, index: int, rule: Rule) -> None:
        self.index = index
        self.rule = rule
        #: Whether the rule keeps signal state in its instances: the engine finds or creates the
        #: instance before judging (otherwise it creates one only for a true condition).
        self.keeps_state = False

    def new_data(self, max_window_values: int) -> Any:
        """Fresh signal state for a new instance (``None``: the kind keeps none).

        Args:
            max_window_values: the most values a window may hold.
        """
        return None

    def dump_data(self, data: Any) -> Any:
        """The JSON form of an instance's signal state, or ``None`` to not persist it."""
        return None

    def load_data(self, max_window_values: int, raw: Any, path: str) -> Any:
        """Signal state from :meth:`dump_data`'s output (``None``: start fresh)."""
        return self.new_data(max_window_values)

    @property
    def template_metric(self) -> str:
        """What ``{metric}`` shows for instances without a metric of their own."""
        return ""


class MetricCondition(Condition):
    """Base of the kinds evaluated per (run, metric name)."""

    __slots__ = ("patterns",)

    def __init__(self, index: int, rule: Rule, patterns: Iterable[str]) -> None:
        super().__init__(index, rule)
        self.patterns = tuple(_Pattern(p) for p in patterns)

    def matches(self, name: str) -> bool:
        return not self.patterns or any(pattern.match(name) for pattern in self.patterns)

    def judge(self, instance: Instance | None, batch: RunBatch, name: str, last: float) -> Decision | None:
        """One evaluation of the series ``name`` of a run, after a batch.

        Args:
            instance: the series' alert instance (kinds that keep state), else ``None``.
            batch: what the batch held of the run.
            name: the metric.
            last: its last value in the batch.

        Returns:
            The decision, or ``None`` when there was nothing to judge.
        """
        raise NotImplementedError


class ThresholdCondition(MetricCondition):
    __slots__ = ("compare", "mean", "threshold", "window_seconds")

    def __init__(self, index: int, rule: ThresholdRule) -> None:
        super().__init__(index, rule, (rule.metric,))
        self.compare = OPERATORS[rule.op]
        self.threshold = rule.threshold
        self.mean = rule.aggregate == "mean"
        self.keeps_state = self.mean
        self.window_seconds = rule.window_seconds

    @property
    def needs_samples(self) -> bool:  # type: ignore[override]  # per rule here, a class constant elsewhere
        return self.mean

    def new_data(self, max_window_values: int) -> Any:
        return MeanWindow(self.window_seconds, max_window_values) if self.mean else None

    def judge(self, instance: Instance | None, batch: RunBatch, name: str, last: float) -> Decision | None:
        if instance is not None and self.mean:
            window: MeanWindow = instance.data
            window.add(*batch.finite_samples(name))
            value = window.mean()
            return value is not None and self.compare(value, self.threshold), value
        return self.compare(last, self.threshold), last


class NonFiniteCondition(MetricCondition):
    __slots__ = ()

    def __init__(self, index: int, rule: NonFiniteRule) -> None:
        super().__init__(index, rule, rule.metrics)

    def judge(self, instance: Instance | None, batch: RunBatch, name: str, last: float) -> Decision | None:
        bad = batch.non_finite.get(name)
        return (True, bad) if bad is not None else (False, last)


class StagnationCondition(MetricCondition):
    __slots__ = ("delta", "minimise", "steps", "window_seconds")
    needs_samples: ClassVar[bool] = True

    def __init__(self, index: int, rule: StagnationRule) -> None:
        super().__init__(index, rule, (rule.metric,))
        self.keeps_state = True
        self.minimise = rule.mode == "min"
        self.delta = rule.min_delta
        self.steps = rule.steps
        self.window_seconds = rule.window_seconds

    def new_data(self, max_window_values: int) -> Any:
        return Patience(math.inf if self.minimise else -math.inf)

    def dump_data(self, data: Any) -> Any:
        return [encode_float(data.best), data.calls, data.since]

    def load_data(self, max_window_values: int, raw: Any, path: str) -> Any:
        if not (isinstance(raw, list) and len(raw) == 3 and type(raw[1]) is int):
            raise ValueError(f"{path}: must be [best, calls, since]")
        return Patience(decode_float(path, raw[0], optional=False), raw[1], decode_float(path, raw[2]))

    def judge(self, instance: Instance | None, batch: RunBatch, name: str, last: float) -> Decision | None:
        assert instance is not None  # keeps_state: the engine passes the instance
        patience: Patience = instance.data
        times, values = batch.samples(name)
        best, calls, since, delta = patience.best, patience.calls, patience.since, self.delta
        for t, v in zip(times, values, strict=True):
            if (v < best - delta) if self.minimise else (v > best + delta):
                best, calls, since = v, 0, t
            else:
                calls += 1
                if since is None:
                    since = t
        patience.best, patience.calls, patience.since = best, calls, since
        if self.steps is not None:
            return calls >= self.steps, float(calls)
        assert self.window_seconds is not None
        value = (max(times) - since) if times and since is not None else 0.0
        return value >= self.window_seconds, value


#: From this many values in one evaluation, anomaly windows are judged with numpy.
_VECTORISE_FROM: Final = 64
#: A deviation below this fraction of the value is rounding, not a change
#: (a constant window's mean is not always bit-exact).
_NOISE: Final = 1e-12


class AnomalyCondition(MetricCondition):
    __slots__ = ("direction", "min_values", "size", "z")
    needs_samples: ClassVar[bool] = True

    def __init__(self, index: int, rule: AnomalyRule) -> None:
        super().__init__(index, rule, (rule.metric,))
        self.keeps_state = True
        self.z = rule.z
        self.size = rule.window_values
        assert rule.min_values is not None
        self.min_values = rule.min_values
        self.direction = {"both": 0, "above": 1, "below": -1}[rule.direction]

    def new_data(self, max_window_values: int) -> Any:
        return ZWindow(self.size)

    def judge(self, instance: Instance | None, batch: RunBatch, name: str, last: float) -> Decision | None:
        assert instance is not None  # keeps_state: the engine passes the instance
        window: ZWindow = instance.data
        batch_values = batch.finite_samples(name)[1]
        if len(batch_values) >= _VECTORISE_FROM:
            worst, latest = self._judge_vectorised(window, batch_values)
        else:
            worst, latest = self._judge(window, batch_values)
        if worst is not None:
            return True, worst
        if latest is not None:
            return False, latest
        return (False, None) if instance.state != INACTIVE else None

    def _judge(self, window: ZWindow, batch_values: list[float]) -> tuple[float | None, float | None]:
        """Each value against the window before it, one at a time.

        Returns:
            The most extreme anomalous z (or ``None``) and the last value's z
            (``None`` when no value was judged).
        """
        values = window.values
        size, direction, min_values = self.size, self.direction, self.min_values
        limit_squared = self.z * self.z
        recompute_after = 4 * size
        shift, total, squares, pushes = window.shift, window.sum, window.sum_squares, window.pushes
        n = len(values)
        worst: float | None = None
        deviation = variance = math.nan  # of the last value judged
        # The hot loop: z is compared squared (no sqrt) and only worked out for a hit.
        for v in batch_values:
            if n >= min_values:
                mean = total / n
                deviation = v - shift - mean
                variance = squares / n - mean * mean
                if (
                    deviation * deviation > limit_squared * variance
                    and (direction == 0 or deviation * direction > 0)
                    and abs(deviation) > _NOISE * abs(v)
                ):
                    z = z_score(deviation, max(variance, 0.0))
                    if worst is None or abs(z) > abs(worst):
                        worst = z
            elif n == 0:
                shift = v
            if n == size:
                old = values[0] - shift
                total -= old
                squares -= old * old
            else:
                n += 1
            values.append(v)
            x = v - shift
            total += x
            squares += x * x
            pushes += 1
            if pushes >= recompute_after:
                window.recompute()
                shift, total, squares, pushes = window.shift, window.sum, window.sum_squares, 0
        window.shift, window.sum, window.sum_squares, window.pushes = shift, total, squares, pushes
        latest = z_score(deviation, max(variance, 0.0)) if deviation == deviation else None
        return worst, latest

    def _judge_vectorised(self, window: ZWindow, batch_values: list[float]) -> tuple[float | None, float | None]:
        """:meth:`_judge` for many values at once: window statistics from prefix sums."""
        import numpy as np  # only here: ``import runwatch.alerts`` stays cheap

        size, min_values = self.size, self.min_values
        previous = len(window.values)
        shift = window.shift if previous else batch_values[0]
        series = np.array([*window.values, *batch_values], dtype=np.float64) - shift
        sums = np.concatenate(([0.0], np.cumsum(series)))
        squares = np.concatenate(([0.0], np.cumsum(series * series)))
        positions = np.arange(previous, len(series))  # each batch value's index in the series
        counts = np.minimum(positions, size)  # how many values precede it in its window
        judged = counts >= min_values
        positions, counts = positions[judged], counts[judged]
        worst: float | None = None
        latest: float | None = None
        if len(positions):
            means = (sums[positions] - sums[positions - counts]) / counts
            variances = (squares[positions] - squares[positions - counts]) / counts - means * means
            deviations = series[positions] - means
            hits = deviations * deviations > (self.z * self.z) * variances
            hits &= np.abs(deviations) > _NOISE * np.abs(series[positions] + shift)
            if self.direction:
                hits &= deviations * self.direction > 0
            if hits.any():
                pairs = zip(deviations[hits].tolist(), variances[hits].tolist(), strict=True)
                worst = max((z_score(d, max(v, 0.0)) for d, v in pairs), key=abs)
            latest = z_score(float(deviations[-1]), max(float(variances[-1]), 0.0))
        window.values.extend(batch_values)
        window.recompute()
        return worst, latest


class RateCondition(Condition):
    __slots__ = ("capacity", "compare", "kinds", "levels", "limit", "types", "window_seconds")

    def __init__(self, index: int, rule: RateRule) -> None:
        super().__init__(index, rule)
        self.compare = OPERATORS[rule.op]
        self.limit = rule.limit
        self.window_seconds = rule.window_seconds
        self.kinds = frozenset(rule.kinds)
        self.levels = frozenset(rule.levels)
        self.types = tuple(_Pattern(p) for p in rule.types)
        self.capacity = max(rule.limit + 1, min(MAX_RATE_WINDOW, 4 * rule.limit + 64))

    def matches(self, kind: str, type_: str, level: str) -> bool:
        if kind not in self.kinds or (self.levels and level not in self.levels):
            return False
        return not self.types or any(pattern.match(type_) for pattern in self.types)

    def new_data(self, max_window_values: int) -> Any:
        return deque(maxlen=self.capacity)

    def dump_data(self, data: Any) -> Any:
        return list(data)

    def load_data(self, max_window_values: int, raw: Any, path: str) -> Any:
        if not isinstance(raw, list) or not all(type(t) is float or type(t) is int for t in raw):
            raise ValueError(f"{path}: must be a list of timestamps")
        return deque(map(float, raw), maxlen=self.capacity)

    def judge_window(self, instance: Instance, hits: list[float] | None, clock: float) -> Decision:
        """Add the batch's matching events (their timestamps) and count those within the window.

        Args:
            instance: the run's instance (the engine creates one when there are hits).
            hits: timestamps of the matching events, or ``None`` (time passing alone).
            clock: the run's event clock: the window ends there.
        """
        window: deque[float] = instance.data
        if hits:
            window.extend(hits)
        cutoff = clock - self.window_seconds
        while window and window[0] < cutoff:
            window.popleft()
        count = len(window)
        return self.compare(count, self.limit), float(count)

    @staticmethod
    def spent(instance: Instance) -> bool:
        """Whether the instance holds nothing worth keeping (an empty window, no alert)."""
        return not instance.data and instance.state == INACTIVE


class AbsenceCondition(Condition):
    __slots__ = ("duration", "pattern", "target")

    def __init__(self, index: int, rule: AbsenceRule) -> None:
        super().__init__(index, rule)
        self.target = rule.target
        self.duration = rule.duration_seconds
        self.pattern = _Pattern(rule.metric) if rule.metric is not None else None

    @property
    def template_metric(self) -> str:
        return self.pattern.text if self.pattern is not None else ""

    def last_seen(self, run: RunState) -> float | None:
        if self.target == "heartbeat":
            return run.last_heartbeat_at
        if self.target == "event":
            return run.last_event_at
        return run.last_metric_at.get(self.index)

    def judge_silence(self, run: RunState, now: float) -> Decision | None:
        """Whether the run has been silent (for this rule's target) long enough; ``None``: not watched yet."""
        last = self.last_seen(run)
        if last is None:
            return None
        elapsed = max(0.0, now - last)
        return not run.paused and elapsed >= self.duration, elapsed


CONDITIONS: Final[Mapping[type[Rule], Callable[[int, Any], Condition]]] = {
    ThresholdRule: ThresholdCondition,
    NonFiniteRule: NonFiniteCondition,
    RateRule: RateCondition,
    AbsenceRule: AbsenceCondition,
    StagnationRule: StagnationCondition,
    AnomalyRule: AnomalyCondition,
}
