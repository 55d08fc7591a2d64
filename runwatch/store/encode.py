"""Turn a batch of events into the parameters of a few set-based SQL statements.

Pure code: no database, no clock. The SQLite sink asks :class:`BatchEncoder`
for one :class:`EncodedBatch` per transaction and runs it.

Why JSON parameters and ``json_each``: ``executemany`` releases and retakes
the GIL once per row, and a busy training thread then makes each retake wait
up to the interpreter's switch interval (5 ms): measured here, 1.3M rows/s
alone fell to under 1,000 rows/s beside a CPU-bound thread. One
``INSERT … SELECT … FROM json_each(?)`` per table moves a whole batch with a
single GIL release.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..events import (
    INT64_MAX,
    INT64_MIN,
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

__all__ = [
    "ADVANCE_METRIC_ROW",
    "INSERT_EVENTS",
    "INSERT_METRIC_ROWS",
    "INSERT_RECEIPTS",
    "INSERT_STATE_HISTORY",
    "LIVENESS_STATUS",
    "NEXT_METRIC_ROW",
    "UPSERT_METRIC_STATS",
    "BatchEncoder",
    "EncodedBatch",
    "RunUpdate",
    "encode_metric_rows",
]

# A logging call's values travel and are stored as a JSON array in key-set
# order. JSON has no Inf: ±Inf travel as "inf"/"-inf"; NaN travels as null.
# The row number continues the store-wide counter in ``meta`` (read under the
# write lock, so several writer processes never collide).
INSERT_METRIC_ROWS = """
INSERT INTO metric_rows (run, row, step, ts, keyset, vals, tags)
SELECT e.value ->> 0, (SELECT value FROM meta WHERE key = 'next_metric_row') + e.key,
       e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value -> 4, e.value ->> 5
FROM json_each(?) AS e
"""

ADVANCE_METRIC_ROW = "UPDATE meta SET value = value + ? WHERE key = 'next_metric_row'"

#: The row number the next metric row gets (read under the write lock, it is this transaction's first).
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


@dataclass
class EncodedBatch:
    """The parameters of one transaction."""

    new_keysets: list[tuple[str, ...]] = field(default_factory=list)
    metric_rows: list[tuple[Any, ...]] = field(default_factory=list)
    metric_stats: list[list[Any]] = field(default_factory=list)
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
    """Encodes batches for one store; remembers the key-set ids it has seen.

    ``keysets`` maps a logging call's ordered names to their id in
    ``metric_keysets``. Rows of key sets not yet there carry the names tuple
    in place of the id until :meth:`resolve_keysets` is called.
    """

    def __init__(self, keysets: Mapping[tuple[str, ...], int] | None = None) -> None:
        self.keysets: dict[tuple[str, ...], int] = dict(keysets or {})

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
        metric_rows = out.metric_rows
        event_rows: list[list[Any]] = []
        state_rows: list[list[Any]] = []
        updates = out.run_updates
        keysets = self.keysets
        new_keysets: set[tuple[str, ...]] = set()
        groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
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
                values = event.values
                names = tuple(values)
                keyset: Any = keysets.get(names)
                if keyset is None:
                    if names not in new_keysets:
                        for name in names:
                            check_storable("metric name", name)
                        new_keysets.add(names)
                    keyset = names
                # Tuples, not lists: the collector untracks a tuple of plain values at its first pass,
                # so a batch's rows are rarely promoted into (or walked by) full collections.
                vals = tuple(values.values())
                total = sum(vals)
                if total - total != 0.0:  # some value is NaN or ±Inf (or the sum overflowed)
                    vals = tuple([_encode_value(v) for v in vals])
                tags = event.tags
                group = groups.get((run, names))
                if group is None:
                    group = groups[(run, names)] = []
                group.append(len(metric_rows))
                metric_rows.append(
                    (run, event.step, event.timestamp, keyset, vals, None if tags is None else dumps(tags).decode())
                )
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
        out.new_keysets = sorted(new_keysets)
        if groups:
            out.metric_stats = _metric_stats(metric_rows, groups)
        if event_rows:
            out.event_rows = dumps(event_rows)
        if state_rows:
            out.state_rows = dumps(state_rows)
        return out

    def resolve_keysets(self, encoded: EncodedBatch, ids: Mapping[tuple[str, ...], int]) -> None:
        """Put the ids of newly stored key sets into ``encoded``'s rows."""
        self.keysets.update(ids)
        if encoded.new_keysets:
            rows = encoded.metric_rows
            for index, row in enumerate(rows):
                if type(row[3]) is tuple:
                    rows[index] = (*row[:3], ids[row[3]], *row[4:])

    def forget_keysets(self, names: Iterable[tuple[str, ...]]) -> None:
        """Drop key sets whose insert was rolled back."""
        for keyset in names:
            self.keysets.pop(keyset, None)


def encode_metric_rows(rows: list[tuple[Any, ...]]) -> bytes:
    """The JSON parameter of :data:`INSERT_METRIC_ROWS`."""
    try:
        return orjson.dumps(rows)
    except TypeError:
        # An int beyond 64 bits (or another oddity) somewhere: convert per value.
        return orjson.dumps([(*row[:4], [_encode_value(value) for value in row[4]], *row[5:]) for row in rows])


def _metric_stats(
    rows: list[tuple[Any, ...]], groups: Mapping[tuple[int, tuple[str, ...]], list[int]]
) -> list[list[Any]]:
    """Per run and metric name: count, NaN count, sum, min, max and the last value.

    A name may appear in several key sets of one batch; their figures are
    combined and ``last`` comes from the latest row that logged the name.
    """
    import warnings

    import numpy as np

    merged: dict[tuple[int, str], list[Any]] = {}
    for (run, names), indices in groups.items():
        values = np.array([rows[i][4] for i in indices], dtype=float)
        nan_counts = np.isnan(values).sum(axis=0)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            # -0.0 is the identity of IEEE addition (0.0 + -0.0 is 0.0): a sum of -0.0 stays -0.0.
            sums = np.nansum(values, axis=0, initial=-0.0)
            mins, maxs = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        for column, name in enumerate(names):
            seen = len(indices) - int(nan_counts[column])
            entry = [
                len(indices),
                int(nan_counts[column]),
                float(sums[column]) if seen else None,
                float(mins[column]) if seen else None,
                float(maxs[column]) if seen else None,
                indices[-1],
                float(values[-1, column]),
            ]
            previous = merged.get((run, name))
            merged[(run, name)] = entry if previous is None else _combine(previous, entry)
    stats: list[list[Any]] = []
    for (run, name), (count, nan_count, total, low, high, last_index, last) in merged.items():
        last_row = rows[last_index]
        stats.append(
            [
                run,
                name,
                count,
                nan_count,
                _json_float(total) if total is not None else None,
                _json_float(low) if low is not None else None,
                _json_float(high) if high is not None else None,
                _json_float(last),
                last_row[2],
                last_row[1],
            ]
        )
    return stats


def _combine(a: list[Any], b: list[Any]) -> list[Any]:
    """Two partial figures of one metric (count, nans, sum, min, max, last index, last)."""

    def pick(x: float | None, y: float | None, fn: Any) -> float | None:
        return y if x is None else x if y is None else fn(x, y)

    later = a if a[5] > b[5] else b
    return [
        a[0] + b[0],
        a[1] + b[1],
        pick(a[2], b[2], float.__add__),
        pick(a[3], b[3], min),
        pick(a[4], b[4], max),
        later[5],
        later[6],
    ]


def _json_float(value: Any) -> Any:
    """A float for the JSON parameter: NaN → null, ±Inf → "inf"/"-inf"."""
    return _encode_value(float(value))


def runs_with_state_patches(batch: Iterable[Any]) -> set[str]:
    """Run ids whose state a batch patches."""
    return {event.run_id for event in batch if type(event) is StatePatch}


def _encode_value(value: Any) -> Any:
    if value is None or type(value) is str:  # already encoded
        return value
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value  # exact: a float would round 2**53 + 1
    value = float(value)
    if value != value:
        return None
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return value


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
