"""The alert evaluator: :class:`AlertEngine`, with Prometheus semantics.

Pure code: no I/O, no clock, no event loop. Time comes in as ``now``
(seconds since the epoch), so tests drive every timer explicitly.

Alert instances. A rule has one instance per run, and for the metric kinds
(threshold, non_finite, stagnation, anomaly) one per run and metric name,
which is then the ``metric`` label. Each instance moves through Prometheus'
states, and every transition is returned as an :class:`AlertEvent`::

    inactive ──condition true──▶ pending ──held for for_seconds──▶ firing
       ▲  ▲                         │                                │
       │  └────condition false──────┘ (event state "inactive")       │
       │                                         condition false for │
       └──────────(silent: the instance is forgotten)◀── resolved ◀──┘
                                                keep_firing_for_seconds

With ``for_seconds = 0`` a true condition fires at once. Resolved is where an
alert ends: the next true condition starts again with pending (or firing).

Evaluation. Each :meth:`AlertEngine.observe` call is one evaluation of the
series it touches: a threshold compares the *last* value (or the window
mean), ``non_finite`` is true when any value since the previous evaluation
was NaN or ±Inf, and ``anomaly`` when any value since then stood out from
the values before it. A value-driven condition holds until its series
reports again; :meth:`AlertEngine.tick` advances the timers (``for``,
``keep_firing_for``), lets rate windows decay and evaluates absence.

Clocks. Data windows (mean, rate, stagnation) use the events' own
timestamps, so a backlog replays correctly and a producer's clock skew
does not matter; between events a run's clock is estimated as its newest
event time plus the time since that event arrived. State timers, absence
and the timestamps of alert events use ``now``.

Memory is bounded: windows are bounded deques, instances per rule and
tracked runs are capped (the least recently active run is evicted, its
alerts resolved), and a run that ends (lifecycle ``completed``/``failed``)
resolves its alerts and drops its state. :meth:`AlertEngine.snapshot` /
:meth:`AlertEngine.restore` carry firing alerts, pending timers, absence
clocks, rate windows and stagnation counters over a restart; mean and
anomaly windows refill from new data.
"""

from __future__ import annotations

import operator
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..events import (
    AlertEvent,
    ExceptionEvent,
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
)
from ..exceptions import ConfigError
from ..wire import alert_fields
from .conditions import (
    CONDITIONS,
    FIRING,
    INACTIVE,
    PENDING,
    RESOLVED,
    RUN_ACTIVITY,
    AbsenceCondition,
    Condition,
    Instance,
    MetricCondition,
    NonFiniteCondition,
    RateCondition,
    RunBatch,
    RunState,
    decode_float,
    encode_float,
)
from .rules import DEFAULT_RULES, Rule, _integer, _render, _type_name

__all__ = ["AlertEngine"]

_MAX_CACHED_NAMES: Final = 10_000
_SNAPSHOT_VERSION: Final = 1
_IGNORED: Final = RunBatch(None)  # stands for "no run yet" before the first event
_BULK_KINDS: Final = frozenset({Metric, Heartbeat})
_RUN_ID: Final = operator.itemgetter(0)  # the first field of every event
_TIMESTAMP: Final = operator.itemgetter(1)
_VALUES: Final = operator.itemgetter(2)  # Metric.values

# -- the engine ------------------------------------------------------------------------------------


class AlertEngine:
    """Evaluates rules over events and returns alert state changes.

    Args:
        rules: the rules (names must be unique); default :data:`DEFAULT_RULES`.
        max_series_per_rule: instances one rule may hold (per run and metric);
            beyond it new series are not tracked and are counted in
            ``statistics()["dropped_series_total"]``.
        max_runs: runs tracked at once; the least recently active is evicted
            (its alerts resolved) to make room. Also bounds the memory of
            ended runs whose late events are ignored.
        max_window_values: most values a ``mean`` window holds.

    Not thread-safe: call it from one thread (the pipeline's loop).
    :meth:`active_alerts` and :meth:`statistics` only read.

    Raises:
        TypeError: a rule that is not a :class:`Rule`.
        ConfigError: two rules share a name, or a limit is below 1.
    """

    def __init__(
        self,
        rules: Iterable[Rule] = DEFAULT_RULES,
        *,
        max_series_per_rule: int = 10_000,
        max_runs: int = 10_000,
        max_window_values: int = 10_000,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        names: set[str] = set()
        for index, rule in enumerate(self.rules):
            if not isinstance(rule, Rule) or type(rule) not in CONDITIONS:
                raise TypeError(f"rules[{index}] must be a rule (ThresholdRule, RateRule, ...), got {rule!r}")
            if rule.name in names:
                raise ConfigError(f"rules[{index}].name", f"duplicate rule name {rule.name!r}")
            names.add(rule.name)
        for name, value in (
            ("max_series_per_rule", max_series_per_rule),
            ("max_runs", max_runs),
            ("max_window_values", max_window_values),
        ):
            _integer(name, value, minimum=1)
        self.max_series_per_rule = max_series_per_rule
        self.max_runs = max_runs
        self.max_window_values = max_window_values

        self._compiled = [CONDITIONS[type(rule)](index, rule) for index, rule in enumerate(self.rules)]
        self._by_name = {c.rule.name: c for c in self._compiled}
        self._metric_rules = [c for c in self._compiled if isinstance(c, MetricCondition)]
        self._rate_rules = [c for c in self._compiled if isinstance(c, RateCondition)]
        self._absence_rules = [c for c in self._compiled if isinstance(c, AbsenceCondition)]
        self._absence_any_metric = tuple(
            c.index for c in self._absence_rules if c.target == "metric" and c.pattern is None
        )
        self._absence_named = [c for c in self._absence_rules if c.pattern is not None]
        self._collect_samples = any(c.needs_samples for c in self._metric_rules)
        self._check_non_finite = self._collect_samples or any(isinstance(c, NonFiniteCondition) for c in self._compiled)

        self._runs: OrderedDict[str, RunState] = OrderedDict()  # least recently active first
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._live: dict[tuple[int, str, str | None], Instance] = {}  # pending and firing
        self._series = [0] * len(self.rules)
        self._name_cache: dict[str, tuple[tuple[MetricCondition, ...], tuple[int, ...]]] = {}
        self._rate_cache: dict[tuple[str, str, str], tuple[int, ...]] = {}
        self._out: list[AlertEvent] = []
        self.transitions = 0
        self.dropped_series = 0
        self.evicted_runs = 0

    # -- evaluating --------------------------------------------------------------------------------

    def observe(self, events: Iterable[Any], now: float) -> list[AlertEvent]:
        """Evaluate the rules on a batch of events; one evaluation per touched series.

        Args:
            events: events of any kind, in order (alert events are ignored).
            now: seconds since the epoch: the evaluation time.

        Returns:
            The alert events of every transition, in the order they happened.
        """
        if type(events) is not list:
            events = list(events)
        if events:
            kinds = set(map(type, events))
            if kinds <= _BULK_KINDS and len(set(map(_RUN_ID, events))) == 1:
                bulk = self._observe_one_run(events, kinds, now)
                if bulk is not None:
                    return bulk
        out: list[AlertEvent] = []
        self._out = out
        batches: dict[str, RunBatch] = {}
        check_non_finite = self._check_non_finite
        collect = self._collect_samples
        rates = bool(self._rate_rules)
        # The batch of the current run, and its bound methods: most batches hold one run.
        run_id: str | None = None
        batch = _IGNORED
        update_last = append_metric = None
        for event in events:
            kind = type(event)
            if kind is RunLifecycle:
                held = batches.pop(event.run_id, None)
                if held is not None and not held.ignored:
                    self._evaluate(held, now)  # what came before the transition counts
                run_id = None
                self._lifecycle(event, now)
                continue
            if kind not in RUN_ACTIVITY:
                continue  # alert events, ingest receipts: not a run's own activity
            if event.run_id != run_id:
                run_id = event.run_id
                batch = batches.get(run_id) or batches.setdefault(run_id, self._open(run_id, now))
                update_last, append_metric = batch.last.update, batch.metrics.append
            if batch.ignored:
                continue
            ts = event.timestamp
            if ts > batch.max_ts:
                batch.max_ts = ts
            if kind is Metric:
                values = event.values
                update_last(values)  # type: ignore[misc]  # bound with the run's batch above
                if check_non_finite:
                    total = sum(values.values())
                    if total - total != 0.0:  # some value is NaN or ±Inf (or the sum overflowed)
                        batch.note_non_finite(values)
                if collect:
                    append_metric(event)  # type: ignore[misc]  # bound with the run's batch above
            elif kind is Heartbeat:
                batch.heartbeat = True
            elif rates and kind is not StatePatch:
                self._count_hit(batch, event)
        for held in batches.values():
            if not held.ignored:
                self._evaluate(held, now)
        self._out = []
        return out

    def _observe_one_run(self, events: list[Any], kinds: set[type], now: float) -> list[AlertEvent] | None:
        """:meth:`observe` for the common batch: one run, only metrics and heartbeats, done in bulk.

        Returns ``None`` (nothing changed) when the values are not plain dicts.
        """
        metrics = events if Heartbeat not in kinds else [event for event in events if type(event) is Metric]
        dicts = list(map(_VALUES, metrics))
        total = 0.0
        if self._check_non_finite:
            try:
                total = sum(map(sum, map(dict.values, dicts)))
            except TypeError:  # a values mapping that is not a dict: take the general path
                return None
        out: list[AlertEvent] = []
        self._out = out
        batch = self._open(events[0].run_id, now)
        if not batch.ignored:
            batch.heartbeat = Heartbeat in kinds
            batch.max_ts = max(map(_TIMESTAMP, events))
            deque(map(batch.last.update, dicts), maxlen=0)  # the last value of each name
            if total - total != 0.0:  # some value is NaN or ±Inf (or a sum overflowed): find which
                for values in dicts:
                    subtotal = sum(values.values())
                    if subtotal - subtotal != 0.0:
                        batch.note_non_finite(values)
            if self._collect_samples:
                batch.metrics = metrics
            self._evaluate(batch, now)
        self._out = []
        return out

    def tick(self, now: float) -> list[AlertEvent]:
        """Evaluate what time alone changes: absence, decaying rate windows, ``for`` timers.

        Args:
            now: seconds since the epoch.

        Returns:
            The alert events of every transition.
        """
        out: list[AlertEvent] = []
        self._out = out
        for run in list(self._runs.values()):
            if self._runs.get(run.run_id) is not run:
                continue
            if self._rate_rules:
                clock = run.event_clock(now)
                for rate in self._rate_rules:
                    if (rate.index, None) in run.instances:
                        self._judge_rate(run, rate, None, clock, now)
            for absence in self._absence_rules:
                self._judge_absence(run, absence, now)
        for instance in list(self._live.values()):
            # A held condition: a pending alert may have waited long enough,
            # a firing one whose condition is false may have been kept long enough.
            if (instance.state == PENDING and instance.active) or (instance.state == FIRING and not instance.active):
                self._apply(instance, instance.active, instance.value, now)
        self._out = []
        return out

    def _open(self, run_id: str, now: float) -> RunBatch:
        if run_id in self._ended:
            return RunBatch(None)
        return RunBatch(self._run(run_id, now))

    def _run(self, run_id: str, now: float) -> RunState:
        run = self._runs.get(run_id)
        if run is None:
            while len(self._runs) >= self.max_runs:
                oldest = next(iter(self._runs))
                self.evicted_runs += 1
                self._end_run(oldest, now)
            run = self._runs[run_id] = RunState(run_id)
        else:
            self._runs.move_to_end(run_id)
        return run

    def _count_hit(self, batch: RunBatch, event: LogEvent | ExceptionEvent) -> None:
        if isinstance(event, LogEvent):
            key = ("log", event.type, event.level)
        else:
            key = ("exception", event.error_type, event.severity)
        indexes = self._rate_cache.get(key)
        if indexes is None:
            indexes = tuple(rate.index for rate in self._rate_rules if rate.matches(*key))
            if len(self._rate_cache) >= _MAX_CACHED_NAMES:
                self._rate_cache.clear()
            self._rate_cache[key] = indexes
        for index in indexes:
            hits = batch.hits.get(index)
            if hits is None:
                batch.hits[index] = [event.timestamp]
            else:
                hits.append(event.timestamp)

    def _rules_for(self, name: str) -> tuple[tuple[MetricCondition, ...], tuple[int, ...]]:
        entry = self._name_cache.get(name)
        if entry is None:
            entry = (
                tuple(c for c in self._metric_rules if c.matches(name)),
                tuple(c.index for c in self._absence_named if c.pattern is not None and c.pattern.match(name)),
            )
            if len(self._name_cache) >= _MAX_CACHED_NAMES:
                self._name_cache.clear()
            self._name_cache[name] = entry
        return entry

    def _evaluate(self, batch: RunBatch, now: float) -> None:
        run = batch.state
        if run is None or self._runs.get(run.run_id) is not run:
            return  # evicted meanwhile
        run.last_event_at = now
        if batch.heartbeat:
            run.last_heartbeat_at = now
        if batch.max_ts > run.clock_ts:
            run.clock_ts, run.clock_at = batch.max_ts, now
        if batch.last:
            for name, value in batch.last.items():
                rules, absences = self._rules_for(name)
                for rule in rules:
                    self._judge_series(run, rule, batch, name, value, now)
                for index in absences:
                    run.last_metric_at[index] = now
            for index in self._absence_any_metric:
                run.last_metric_at[index] = now
        for index, hits in batch.hits.items():
            rate = self._compiled[index]
            assert isinstance(rate, RateCondition)
            self._judge_rate(run, rate, hits, run.clock_ts, now)
        for absence in self._absence_rules:
            self._judge_absence(run, absence, now)

    def _lifecycle(self, event: RunLifecycle, now: float) -> None:
        transition = event.transition
        run_id = event.run_id
        if transition is RunTransition.COMPLETED or transition is RunTransition.FAILED:
            self._end_run(run_id, now)
            self._ended[run_id] = None
            self._ended.move_to_end(run_id)
            while len(self._ended) > self.max_runs:
                self._ended.popitem(last=False)
            return
        if transition is RunTransition.PAUSED and run_id in self._ended:
            return
        self._ended.pop(run_id, None)  # started or resumed again
        run = self._run(run_id, now)
        run.last_event_at = now
        if transition is RunTransition.PAUSED:
            run.paused = True
        else:
            if run.paused:  # absence clocks restart when the run does
                if run.last_heartbeat_at is not None:
                    run.last_heartbeat_at = now
                for index in run.last_metric_at:
                    run.last_metric_at[index] = now
            run.paused = False
        for absence in self._absence_rules:
            self._judge_absence(run, absence, now)

    def _end_run(self, run_id: str, now: float) -> None:
        """Resolve a run's alerts and forget it."""
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        for instance in run.instances.values():
            if instance.state == FIRING:
                self._emit(instance, RESOLVED, now)
            elif instance.state == PENDING:
                self._emit(instance, INACTIVE, now)
            self._live.pop((instance.compiled.index, instance.run_id, instance.metric), None)
            self._series[instance.compiled.index] -= 1

    # -- applying the conditions' decisions --------------------------------------------------------

    def _judge_series(
        self, run: RunState, rule: MetricCondition, batch: RunBatch, name: str, last: float, now: float
    ) -> None:
        """One evaluation of a metric rule on one series of a run."""
        if rule.keeps_state:
            instance = self._instance(run, rule, name, create=True)
            if instance is None:
                return
            decision = rule.judge(instance, batch, name, last)
            if decision is None:
                return
        else:
            decision = rule.judge(None, batch, name, last)
            if decision is None:
                return
            instance = self._instance(run, rule, name, create=decision[0])
            if instance is None:
                return
        self._apply(instance, decision[0], decision[1], now)

    def _judge_rate(
        self, run: RunState, rate: RateCondition, hits: list[float] | None, clock: float, now: float
    ) -> None:
        """One evaluation of a rate rule on a run: the batch's matching events, or time passing."""
        instance = self._instance(run, rate, None, create=bool(hits))
        if instance is None:
            return
        condition, value = rate.judge_window(instance, hits, clock)
        self._apply(instance, condition, value, now)
        if rate.spent(instance):
            self._drop_instance(run, instance)

    def _judge_absence(self, run: RunState, absence: AbsenceCondition, now: float) -> None:
        """One evaluation of an absence rule on a run."""
        decision = absence.judge_silence(run, now)
        if decision is None:
            return
        instance = self._instance(run, absence, None, create=decision[0])
        if instance is not None:
            self._apply(instance, decision[0], decision[1], now)

    # -- the state machine -------------------------------------------------------------------------

    def _instance(self, run: RunState, compiled: Condition, metric: str | None, *, create: bool) -> Instance | None:
        instance = run.instances.get((compiled.index, metric))
        if instance is None and create:
            if self._series[compiled.index] >= self.max_series_per_rule:
                self.dropped_series += 1
                return None
            instance = run.instances[(compiled.index, metric)] = Instance(
                compiled, run.run_id, metric, compiled.new_data(self.max_window_values)
            )
            self._series[compiled.index] += 1
        return instance

    def _drop_instance(self, run: RunState, instance: Instance) -> None:
        if run.instances.pop((instance.compiled.index, instance.metric), None) is not None:
            self._series[instance.compiled.index] -= 1

    def _apply(self, instance: Instance, condition: bool, value: float | None, now: float) -> None:
        """One evaluation of an instance: move it through the state machine."""
        rule = instance.compiled.rule
        state = instance.state
        if condition:
            instance.active = True
            instance.value = value
            instance.keep_firing_since = None
            if state == INACTIVE:
                instance.active_since = now
                self._transition(instance, FIRING if rule.for_seconds <= 0 else PENDING, now)
            # a pending instance always has active_since
            elif state == PENDING and now - instance.active_since >= rule.for_seconds:  # type: ignore[operator]
                self._transition(instance, FIRING, now)
            return
        instance.active = False
        if value is not None:
            instance.value = value
        if state == PENDING:
            self._transition(instance, INACTIVE, now)
        elif state == FIRING:
            keep = rule.keep_firing_for_seconds
            if keep > 0:
                if instance.keep_firing_since is None:
                    instance.keep_firing_since = now
                if now - instance.keep_firing_since < keep:
                    return
            self._transition(instance, RESOLVED, now)

    def _transition(self, instance: Instance, state: str, now: float) -> None:
        self._emit(instance, state, now)
        key = (instance.compiled.index, instance.run_id, instance.metric)
        if state == PENDING or state == FIRING:
            instance.state = state
            self._live[key] = instance
            return
        instance.state = INACTIVE  # resolved ends the alert; the instance starts over
        instance.active_since = None
        instance.keep_firing_since = None
        self._live.pop(key, None)
        if instance.data is None:
            run = self._runs.get(instance.run_id)
            if run is not None:
                self._drop_instance(run, instance)

    def _emit(self, instance: Instance, state: str, now: float) -> None:
        self.transitions += 1
        rule = instance.compiled.rule
        self._out.append(
            AlertEvent(
                instance.run_id,
                now,
                rule.name,
                state,
                rule.severity,
                instance.value,
                self._labels(instance),
                self._annotations(instance),
                instance.active_since,
            )
        )

    @staticmethod
    def _labels(instance: Instance) -> dict[str, str]:
        labels = dict(instance.compiled.rule.labels)
        if instance.metric is not None:
            labels["metric"] = instance.metric
        return labels

    def _annotations(self, instance: Instance) -> dict[str, str]:
        rule = instance.compiled.rule
        if not rule.annotations:
            return {}
        labels = self._labels(instance)
        metric = instance.metric if instance.metric is not None else instance.compiled.template_metric
        return {
            key: _render(template, instance.value, instance.run_id, metric, rule.name, rule.severity, labels)
            for key, template in rule.annotations.items()
        }

    # -- reading -----------------------------------------------------------------------------------

    def active_alerts(self, run_id: str | None = None, severity: str | None = None) -> list[dict[str, Any]]:
        """The alerts pending or firing now, oldest first, as JSON-safe dicts.

        Args:
            run_id: only this run's alerts; ``None`` for every run.
            severity: only alerts of this severity; ``None`` for all.

        Returns:
            Dicts with ``rule``, ``kind``, ``run_id``, ``state``, ``severity``,
            ``value`` (NaN and ±Inf as ``None``), ``labels``,
            ``annotations`` and ``active_since``.
        """
        alerts = []
        for instance in list(self._live.values()):
            rule = instance.compiled.rule
            if (run_id is not None and instance.run_id != run_id) or (
                severity is not None and rule.severity != severity
            ):
                continue
            alert = alert_fields(
                rule=rule.name,
                run_id=instance.run_id,
                state=instance.state,
                severity=rule.severity,
                value=instance.value,
                labels=self._labels(instance),
                annotations=self._annotations(instance),
                active_since=instance.active_since,
            )
            alert["kind"] = rule.kind
            alerts.append(alert)
        alerts.sort(key=lambda alert: (alert["active_since"], alert["rule"], alert["run_id"]))
        return alerts

    def statistics(self) -> dict[str, int]:
        """Counters: rules, tracked runs and series, firing/pending alerts, drops."""
        states = [instance.state for instance in list(self._live.values())]
        return {
            "rules": len(self.rules),
            "runs": len(self._runs),
            "series": sum(self._series),
            "firing": states.count(FIRING),
            "pending": states.count(PENDING),
            "transitions_total": self.transitions,
            "dropped_series_total": self.dropped_series,
            "evicted_runs_total": self.evicted_runs,
        }

    # -- persistence -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state to carry over a restart, as JSON-compatible data.

        Holds pending and firing alerts (with their timers), absence clocks,
        paused flags, rate windows, stagnation counters and the ended runs.
        """
        index_names = {c.index: c.rule.name for c in self._compiled}
        runs: dict[str, Any] = {}
        instances: list[dict[str, Any]] = []
        for run in self._runs.values():
            runs[run.run_id] = {
                "last_event_at": run.last_event_at,
                "last_heartbeat_at": run.last_heartbeat_at,
                "last_metric_at": {index_names[index]: at for index, at in run.last_metric_at.items()},
                "paused": run.paused,
                "clock": [run.clock_ts, run.clock_at],
            }
            for instance in run.instances.values():
                data = instance.compiled.dump_data(instance.data)
                if instance.state == INACTIVE and data is None:
                    continue
                instances.append(
                    {
                        "rule": instance.compiled.rule.name,
                        "kind": instance.compiled.rule.kind,
                        "run_id": instance.run_id,
                        "metric": instance.metric,
                        "state": instance.state,
                        "active": instance.active,
                        "value": encode_float(instance.value),
                        "active_since": instance.active_since,
                        "keep_firing_since": instance.keep_firing_since,
                        "data": data,
                    }
                )
        return {"version": _SNAPSHOT_VERSION, "runs": runs, "instances": instances, "ended_runs": list(self._ended)}

    @classmethod
    def restore(
        cls,
        rules: Iterable[Rule],
        snapshot: Mapping[str, Any],
        *,
        max_series_per_rule: int = 10_000,
        max_runs: int = 10_000,
        max_window_values: int = 10_000,
    ) -> AlertEngine:
        """An engine for ``rules`` continuing from a :meth:`snapshot`.

        State of rules that no longer exist (or changed kind) is dropped;
        the current rules' ``for``/``keep_firing_for`` apply to restored timers.

        Raises:
            ValueError: the snapshot is malformed, naming the bad entry
                (``snapshot.instances[2].state: ...``).
        """
        engine = cls(
            rules, max_series_per_rule=max_series_per_rule, max_runs=max_runs, max_window_values=max_window_values
        )
        engine._load(snapshot)
        return engine

    def _load(self, snapshot: Mapping[str, Any]) -> None:
        if not isinstance(snapshot, Mapping):
            raise ValueError(f"snapshot: must be an object, got {_type_name(snapshot)}")
        if snapshot.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"snapshot.version: expected {_SNAPSHOT_VERSION}, got {snapshot.get('version')!r}")
        runs, instances, ended = snapshot.get("runs", {}), snapshot.get("instances", []), snapshot.get("ended_runs", [])
        if not isinstance(runs, Mapping) or not isinstance(instances, list) or not isinstance(ended, list):
            raise ValueError("snapshot: runs must be an object, instances and ended_runs lists")
        for run_id, entry in runs.items():
            path = f"snapshot.runs[{run_id!r}]"
            if not isinstance(entry, Mapping) or type(run_id) is not str or not run_id:
                raise ValueError(f"{path}: must be an object keyed by a run id")
            run = self._run(run_id, 0.0)
            run.last_event_at = decode_float(f"{path}.last_event_at", entry.get("last_event_at"))
            run.last_heartbeat_at = decode_float(f"{path}.last_heartbeat_at", entry.get("last_heartbeat_at"))
            run.paused = entry.get("paused") is True
            clock = entry.get("clock", [0.0, 0.0])
            if not isinstance(clock, list) or len(clock) != 2:
                raise ValueError(f"{path}.clock: must be [timestamp, arrived_at]")
            run.clock_ts = decode_float(f"{path}.clock", clock[0], optional=False)
            run.clock_at = decode_float(f"{path}.clock", clock[1], optional=False)
            seen = entry.get("last_metric_at", {})
            if not isinstance(seen, Mapping):
                raise ValueError(f"{path}.last_metric_at: must be an object")
            for name, at in seen.items():
                compiled = self._by_name.get(name)
                if isinstance(compiled, AbsenceCondition) and compiled.target == "metric":
                    run.last_metric_at[compiled.index] = decode_float(f"{path}.last_metric_at", at, optional=False)
        for position, record in enumerate(instances):
            self._load_instance(f"snapshot.instances[{position}]", record)
        for position, run_id in enumerate(ended):
            if type(run_id) is not str:
                raise ValueError(f"snapshot.ended_runs[{position}]: must be a run id")
            if run_id not in self._runs:
                self._ended[run_id] = None
        while len(self._ended) > self.max_runs:
            self._ended.popitem(last=False)

    def _load_instance(self, path: str, record: object) -> None:
        if not isinstance(record, Mapping):
            raise ValueError(f"{path}: must be an object")
        compiled = self._by_name.get(record.get("rule"))  # type: ignore[arg-type]  # a name no rule has finds none
        if compiled is None or compiled.rule.kind != record.get("kind"):
            return  # the rule is gone or is another rule now
        run_id, metric, state = record.get("run_id"), record.get("metric"), record.get("state")
        if type(run_id) is not str or not run_id:
            raise ValueError(f"{path}.run_id: must be a run id")
        if metric is not None and type(metric) is not str:
            raise ValueError(f"{path}.metric: must be a string or null")
        if (metric is not None) != compiled.rule.per_metric:
            return
        if state not in (INACTIVE, PENDING, FIRING):
            raise ValueError(f"{path}.state: must be inactive, pending or firing, got {state!r}")
        active_since = decode_float(f"{path}.active_since", record.get("active_since"))
        if state != INACTIVE and active_since is None:
            raise ValueError(f"{path}.active_since: a {state} alert needs it")
        raw = record.get("data")
        data = (
            compiled.new_data(self.max_window_values)
            if raw is None
            else compiled.load_data(self.max_window_values, raw, f"{path}.data")
        )
        run = self._run(run_id, 0.0)
        instance = self._instance(run, compiled, metric, create=True)
        if instance is None:
            return
        instance.data = data
        instance.state = state
        instance.active = record.get("active") is True
        instance.value = decode_float(f"{path}.value", record.get("value"))
        instance.active_since = active_since if state != INACTIVE else None
        instance.keep_firing_since = decode_float(f"{path}.keep_firing_since", record.get("keep_firing_since"))
        if state != INACTIVE:
            self._live[(compiled.index, run_id, metric)] = instance
