"""Turn a batch of events into the parameters of a few set-based SQL statements.

Pure code: no database, no clock. The SQLite writer asks :class:`BatchEncoder`
for one :class:`EncodedBatch` per transaction and runs it. Metric calls are
not encoded here: they go to the chunk builder as columns
(:mod:`runwatch.store.series`); :func:`metric_stats` gives the per-metric
statistics of those columns.

Why JSON parameters and ``json_each``: ``executemany`` releases and retakes
the GIL once per row, and a busy training thread then makes each retake wait
up to the interpreter's switch interval (5 ms): measured here, 1.3M rows/s
alone fell to under 1,000 rows/s beside a CPU-bound thread. One
``INSERT … SELECT … FROM json_each(?)`` per table moves a whole batch with a
single GIL release.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..events import (
    AlertEvent,
    ExceptionEvent,
    Heartbeat,
    HistogramEvent,
    ImageEvent,
    IngestReceipt,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    check_storable,
    copy_state,
    merge_state_into,
)
from .call_groups import group_calls

if TYPE_CHECKING:
    from .series import CallGroup

__all__ = [
    "ADVANCE_METRIC_ROW",
    "INSERT_EVENTS",
    "INSERT_RECEIPTS",
    "INSERT_STATE_HISTORY",
    "LIVENESS_STATUS",
    "NEXT_METRIC_ROW",
    "UPSERT_METRIC_STATS",
    "BatchEncoder",
    "EncodedBatch",
    "RunUpdate",
    "metric_stats",
]

# Logging calls are numbered store-wide: the counter in ``meta`` is read and advanced under the write
# lock, so several writer processes never collide and a number below it is always committed.
ADVANCE_METRIC_ROW = "UPDATE meta SET value = value + ? WHERE key = 'next_metric_row'"

#: The number the next logging call gets (read under the write lock, it is this transaction's first).
NEXT_METRIC_ROW = "SELECT value FROM meta WHERE key = 'next_metric_row'"


# NULL-aware: SQLite's min()/max() of NULL and a number is NULL.
def _real(expression: str) -> str:
    """SQL turning a JSON-carried number back into REAL ("inf"/"-inf" → ±Inf)."""
    return (
        f"CASE WHEN typeof({expression}) = 'text' "
        f"THEN (CASE {expression} WHEN 'inf' THEN 9e999 ELSE -9e999 END) ELSE {expression} END"
    )


UPSERT_METRIC_STATS = f"""
INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts, last_step)
SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, {_real("e.value ->> 4")},
       {_real("e.value ->> 5")}, {_real("e.value ->> 6")}, {_real("e.value ->> 7")}, e.value ->> 8, e.value ->> 9
FROM json_each(?) AS e WHERE 1
ON CONFLICT (run, name) DO UPDATE SET
    count = count + excluded.count,
    nan_count = nan_count + excluded.nan_count,
    -- A NULL sum beside non-NaN values means the sum is NaN (+Inf plus -Inf): it stays NaN.
    sum = CASE
        WHEN (count > nan_count AND sum IS NULL) OR (excluded.count > excluded.nan_count AND excluded.sum IS NULL)
            THEN NULL
        WHEN sum IS NULL THEN excluded.sum WHEN excluded.sum IS NULL THEN sum ELSE sum + excluded.sum END,
    min = CASE WHEN min IS NULL THEN excluded.min WHEN excluded.min IS NULL THEN min ELSE MIN(min, excluded.min) END,
    max = CASE WHEN max IS NULL THEN excluded.max WHEN excluded.max IS NULL THEN max ELSE MAX(max, excluded.max) END,
    last = excluded.last, last_ts = excluded.last_ts, last_step = excluded.last_step
"""

# An event's detail (a protocol's own fields, see LogEvent.detail) is the 7th element: JSON or null.
INSERT_EVENTS = """
INSERT INTO events (run, ts, kind, type, level, data, detail)
SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value -> 5,
       CASE WHEN e.value ->> 6 IS NULL THEN NULL ELSE e.value -> 6 END
FROM json_each(?) AS e
"""

INSERT_RECEIPTS = """
INSERT OR IGNORE INTO ingest_batches (scope, batch_id, digest, received_at, events)
SELECT e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4 FROM json_each(?) AS e
"""

INSERT_STATE_HISTORY = """
INSERT INTO state_history (run, ts, patch, detail)
SELECT e.value ->> 0, e.value ->> 1, e.value -> 2, CASE WHEN e.value ->> 3 IS NULL THEN NULL ELSE e.value -> 3 END
FROM json_each(?) AS e
"""


#: Log event types that set the run's status (written by the liveness stage, or by a
#: client's own heartbeat monitor). They are verdicts about the run, not activity of
#: it, so they do not advance ``updated_at`` (which the ``any_event`` liveness signal reads).
LIVENESS_STATUS: Final = {
    "application_appears_hung": "hung",
    "application_crashed": "crashed",
    "application_recovered": "running",
}


@dataclass
class RunUpdate:
    """What one batch changes in one run's row."""

    #: The run's id: the row is updated only if its primary key still belongs to this id.
    run_id: str = ""
    status: str | None = None
    #: hung / crashed / running from a liveness verdict: applies only to a live run.
    liveness_status: str | None = None
    kind: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    clear_end_time: bool = False
    config: Any = None
    metadata: Any = None
    final_reward: float | None = None
    updated_at: float = 0.0
    last_heartbeat: float | None = None
    total_steps: int | None = None
    total_episodes: int | None = None
    state: dict[str, Any] | None = None
    #: The producer of a (re)started run (``None``: the writing process).
    owner: str | None = None

    def row(self, run: int, owner: str, now: float) -> tuple[Any, ...]:
        """The parameters of every backend's run update statement, in this order: the row's key, ``run_id``,
        ``clear_end_time``, ``status``, ``liveness_status``, ``kind``, ``end_time``, ``config`` and
        ``metadata`` (JSON text), ``final_reward``, ``updated_at``, ``last_heartbeat``, ``total_steps``,
        ``total_episodes``, ``state`` (JSON text), the owner (``owner``, the writing process, unless the
        update names one) and ``now`` (the commit time)."""
        return (
            run,
            self.run_id,
            self.clear_end_time,
            self.status,
            self.liveness_status,
            self.kind,
            self.end_time,
            None if self.config is None else dumps(self.config).decode(),
            None if self.metadata is None else dumps(self.metadata).decode(),
            self.final_reward,
            self.updated_at,
            self.last_heartbeat,
            self.total_steps,
            self.total_episodes,
            None if self.state is None else dumps(self.state).decode(),
            self.owner or owner,
            now,
        )


@dataclass
class EncodedBatch:
    """The parameters of one transaction.

    ``metric_calls`` are the batch's :class:`~runwatch.events.Metric` events, in
    order (their names checked), for the chunk builder; ``ending_runs`` the
    runs the batch completes or fails (their open chunks seal).
    """

    metric_calls: list[Metric] = field(default_factory=list)
    ending_runs: set[int] = field(default_factory=set)
    event_rows: bytes | None = None
    state_rows: bytes | None = None
    receipts: list[list[Any]] = field(default_factory=list)
    run_updates: dict[int, RunUpdate] = field(default_factory=dict)
    events: int = 0
    #: Images and histograms, in order: written by the plans of :mod:`runwatch.store.media`.
    images: list[ImageEvent] = field(default_factory=list)
    histograms: list[HistogramEvent] = field(default_factory=list)


def _json_default(value: Any) -> Any:
    # numpy scalars and other number-likes inside JSON payloads
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Serialize a JSON payload (NaN and ±Inf become null; numpy scalars allowed)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


class BatchEncoder:
    """Encodes batches for one store; remembers the metric name sets whose names it has checked."""

    #: The most name sets remembered (a producer inventing names forever costs a re-check, not memory).
    MAX_CHECKED_NAME_SETS = 10_000

    def __init__(self) -> None:
        self._checked: set[tuple[str, ...]] = set()

    def unstorable(self, batch: Sequence[Any]) -> list[int]:
        """The indexes of the events in ``batch`` that cannot be encoded (see
        :meth:`~runwatch.store.base.StoreWriter.unstorable`): each event is encoded alone."""
        any_run: defaultdict[str, int] = defaultdict(int)  # every run id maps to row 0: only encoding is tried
        bad: list[int] = []
        for index, event in enumerate(batch):
            try:
                encoded = self.encode([event], any_run, {})
                dumps(metric_stats(group_calls(encoded.metric_calls, any_run, 0)))
                dumps([list(u.__dict__.values()) for u in encoded.run_updates.values()])
            except Exception:
                bad.append(index)
        return bad

    def encode(
        self,
        batch: list[Any],
        run_ids: Mapping[str, int],
        current_state: Mapping[int, Mapping[str, Any]],
        now: float | None = None,
    ) -> EncodedBatch:
        """Encode ``batch``; ``run_ids`` must map every run id in it.

        ``current_state`` gives the stored state of the runs that
        :func:`runs_with_state_patches` names. With ``now`` (the commit time,
        epoch seconds), a run's update, heartbeat and end times are capped at
        it: a producer whose clock runs ahead keeps its events' timestamps but
        cannot date its run in the future (where it would stay the newest run
        and never age out).
        """
        out = EncodedBatch(events=len(batch))
        metric_calls = out.metric_calls
        event_rows: list[list[Any]] = []
        state_rows: list[list[Any]] = []
        updates = out.run_updates
        checked = self._checked
        for event in batch:
            run = run_ids[event.run_id]
            update = updates.get(run)
            if update is None:
                # A Metric's constructor leaves this to the store (its hot path): refuse the
                # event here, so the sink drops it alone instead of storing a truncated name.
                check_storable("run_id", event.run_id)
                update = updates[run] = RunUpdate(run_id=event.run_id)
            kind = type(event)
            # Verdicts about a run (liveness, alerts) are not activity of it.
            if kind is not AlertEvent and (kind is not LogEvent or event.type not in LIVENESS_STATUS):
                update.updated_at = max(update.updated_at, event.timestamp)
            if kind is Metric:
                names = tuple(event.values)
                if names not in checked:
                    # A Metric's constructor leaves this to the store (its hot path): refuse the
                    # event here, so the sink drops it alone instead of storing a truncated name.
                    for name in names:
                        check_storable("metric name", name)
                    if len(checked) >= self.MAX_CHECKED_NAME_SETS:
                        checked.clear()
                    checked.add(names)
                metric_calls.append(event)
            elif kind is LogEvent:
                detail = event.detail
                event_rows.append([run, event.timestamp, "log", event.type, event.level, event.data, detail])
                liveness = LIVENESS_STATUS.get(event.type)
                if liveness is not None:
                    _apply_verdict(update, liveness)
                elif detail is not None and "effect" in detail:
                    _apply_effect(update, detail["effect"], event.timestamp)
            elif kind is Heartbeat:
                update.last_heartbeat = event.timestamp
                counters = event.counters
                if counters:
                    if "total_steps" in counters:
                        update.total_steps = counters["total_steps"]
                    if "total_episodes" in counters:
                        update.total_episodes = counters["total_episodes"]
            elif kind is StatePatch:
                state = update.state
                if state is None:  # this batch's own copy, merged into patch by patch
                    state = update.state = copy_state(current_state.get(run, {}))
                merge_state_into(state, event.patch)
                state_rows.append([run, event.timestamp, event.patch, event.detail])
            elif kind is RunLifecycle:
                _apply_lifecycle(update, event)
                if event.transition in (RunTransition.COMPLETED, RunTransition.FAILED):
                    out.ending_runs.add(run)
                event_rows.append(
                    [run, event.timestamp, "lifecycle", f"run_{event.transition.value}", "info", _lifecycle_data(event)]
                )
            elif kind is ExceptionEvent:
                event_rows.append([run, event.timestamp, "exception", "error", event.severity, _error_data(event)])
            elif kind is AlertEvent:
                event_rows.append([run, event.timestamp, "alert", "alert", _alert_level(event), _alert_data(event)])
            elif kind is ImageEvent:
                out.images.append(event)
            elif kind is HistogramEvent:
                out.histograms.append(event)
            elif kind is IngestReceipt:
                out.receipts.append([event.run_id, event.batch_id, event.digest, event.timestamp, event.events])
        if now is not None:
            for update in updates.values():
                _cap_times(update, now)
        if event_rows:
            out.event_rows = dumps(event_rows)
        if state_rows:
            out.state_rows = dumps(state_rows)
        return out


def metric_stats(groups: Iterable[CallGroup]) -> list[list[Any]]:
    """The parameter rows of :data:`UPSERT_METRIC_STATS` for a batch's call columns.

    Per run and metric name: count, NaN count, sum, min and max (NaN
    ignored; ``None`` when every value is NaN), the last value (NaN kept),
    and the time and step of the call that logged it. A metric logged in
    calls with different name sets (several groups of one batch) gets its
    figures combined, ``last`` from the latest call.
    """
    import warnings

    import numpy as np

    merged: dict[tuple[int, str], list[Any]] = {}
    for group in groups:
        count = len(group.seq)
        last_seq = int(group.seq[-1])
        last_step = None if group.step_valid is not None and not group.step_valid[-1] else int(group.step[-1])
        last_ts = int(group.time_us[-1]) / 1e6 if group.last_seconds is None else group.last_seconds
        for name, column in zip(group.names, group.columns, strict=True):
            values = column if column.dtype == np.float64 else column.astype(np.float64)
            nans = int(np.count_nonzero(np.isnan(values)))
            seen = count - nans
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # +Inf and -Inf summed
                # -0.0 is the identity of IEEE addition (0.0 + -0.0 is 0.0): a sum of -0.0 stays -0.0.
                total = float(np.nansum(values, initial=-0.0)) if seen else None
                low = float(np.nanmin(values)) if seen else None
                high = float(np.nanmax(values)) if seen else None
            entry = [count, nans, total, low, high, last_seq, float(values[-1]), last_ts, last_step]
            previous = merged.get((group.run, name))
            merged[(group.run, name)] = entry if previous is None else _combine(previous, entry)
    return [
        [
            run,
            name,
            count,
            nans,
            None if total is None else _json_float(total),
            None if low is None else _json_float(low),
            None if high is None else _json_float(high),
            _json_float(last),
            last_ts,
            last_step,
        ]
        for (run, name), (count, nans, total, low, high, _, last, last_ts, last_step) in merged.items()
    ]


def _combine(a: list[Any], b: list[Any]) -> list[Any]:
    """Two partial figures of one metric (count, nans, sum, min, max, last seq, last, last ts, last step)."""

    def pick(x: float | None, y: float | None, fn: Any) -> float | None:
        return y if x is None else x if y is None else fn(x, y)

    later = a if a[5] > b[5] else b
    return [
        a[0] + b[0],
        a[1] + b[1],
        pick(a[2], b[2], float.__add__),
        pick(a[3], b[3], min),
        pick(a[4], b[4], max),
        *later[5:],
    ]


def _json_float(value: float) -> float | str | None:
    """A float for the JSON parameter: NaN → null, ±Inf → "inf"/"-inf"."""
    if value != value:
        return None
    if value in (math.inf, -math.inf):
        return "inf" if value > 0 else "-inf"
    return value


def runs_with_state_patches(batch: Iterable[Any]) -> set[str]:
    """Run ids whose state a batch patches."""
    return {event.run_id for event in batch if type(event) is StatePatch}


def _cap_times(update: RunUpdate, now: float) -> None:
    """A run's times in the store are never later than the commit that writes them."""
    if update.updated_at > now:
        update.updated_at = now
    if update.last_heartbeat is not None and update.last_heartbeat > now:
        update.last_heartbeat = now
    if update.end_time is not None and update.end_time > now:
        update.end_time = now


def _apply_verdict(update: RunUpdate, status: str) -> None:
    """A liveness verdict after whatever this batch already did to the run, in order."""
    if update.status is None:
        update.liveness_status = status  # applies in SQL only if the stored run is live
    elif update.status in ("running", "hung", "crashed"):
        update.status = status  # started or resumed earlier in this batch: live
    # paused, completed or failed earlier in this batch: a verdict does not reopen it


def _apply_effect(update: RunUpdate, effect: str, timestamp: float) -> None:
    """What a protocol's event does to its run beyond being stored (see ``LogEvent.detail``).

    ``crash``: a crash the producer reported ends the run crashed, whatever
    its status (datacat's ``/crash``: also after its end). ``crash_detected``:
    a crash concluded from the producer's silence, a verdict on a live run.
    """
    if effect == "crash":
        update.status = "crashed"
        update.liveness_status = None
        update.end_time = timestamp
        update.clear_end_time = False
    elif effect == "crash_detected":
        _apply_verdict(update, "crashed")


def _apply_lifecycle(update: RunUpdate, event: RunLifecycle) -> None:
    transition = event.transition
    update.liveness_status = None  # a later lifecycle transition overrides an earlier verdict
    update.status = event.status
    if transition in (RunTransition.STARTED, RunTransition.RESUMED):
        update.owner = event.owner
    if transition is RunTransition.STARTED:
        update.kind = event.run_kind
        update.start_time = event.timestamp
        update.clear_end_time = True
        update.end_time = None
        if event.config is not None:
            update.config = event.config
        if event.metadata is not None:
            update.metadata = event.metadata
    elif transition is RunTransition.RESUMED:
        update.clear_end_time = True  # a finished run resumed is running again
        update.end_time = None
        if event.config is not None:
            update.config = event.config
    elif transition in (RunTransition.COMPLETED, RunTransition.FAILED):
        update.end_time = event.timestamp
        update.clear_end_time = False
        # NaN is stored as NULL, which keeps the earlier reward: the same within one batch.
        if event.final_reward is not None and event.final_reward == event.final_reward:
            update.final_reward = event.final_reward
        if event.metadata is not None:
            update.metadata = event.metadata


def _lifecycle_data(event: RunLifecycle) -> dict[str, Any]:
    data: dict[str, Any] = {"status": event.status}
    if event.transition is RunTransition.STARTED:
        data["kind"] = event.run_kind
        if event.config is not None:
            data["config"] = event.config
    if event.final_reward is not None:
        data["final_reward"] = event.final_reward
    if event.metadata is not None:
        data["metadata"] = event.metadata
    return data


def _error_data(event: ExceptionEvent) -> dict[str, Any]:
    return {
        "category": event.category,
        "severity": event.severity,
        "component": event.component,
        "message": event.message,
        "error_type": event.error_type,
        "traceback": event.traceback,
    }


def _alert_level(event: AlertEvent) -> str:
    return event.severity if event.severity in ("debug", "info", "warning", "error", "critical") else "warning"


def _alert_data(event: AlertEvent) -> dict[str, Any]:
    return {
        "rule": event.rule,
        "state": event.state,
        "severity": event.severity,
        "value": event.value,
        "labels": dict(event.labels),
        "annotations": dict(event.annotations),
        "active_since": event.active_since,
    }
