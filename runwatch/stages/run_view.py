"""What a snapshot holds: each run's live view, and the book of views (pure: no I/O).

:class:`RunView` is one run's latest metrics, state, counters and recent
events, kept from the events as they pass; :class:`SnapshotBook` keeps the
views of every run and knows which changed since the last save. The
snapshot stage (:mod:`runwatch.stages.snapshot`) feeds them and saves them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

import orjson

from ..events import (
    Heartbeat,
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
from ..store.encode import LIVENESS_STATUS
from ..wire import NON_FINITE_FROM_JSON, event_to_wire, json_number

__all__ = ["SNAPSHOT_FORMAT", "RunView", "SnapshotBook"]

#: The value of ``format`` in every snapshot.
SNAPSHOT_FORMAT: Final = "runwatch-snapshot/1"
_ENDED: Final = frozenset({"completed", "failed"})


class RunView:
    """One run's current view, built from its events (pure: no I/O, no clock).

    Args:
        run_id: the run.
        max_events: the event-log entries kept (the oldest go first).
    """

    __slots__ = (
        "discarded",
        "events",
        "events_by_kind",
        "events_by_type",
        "metrics",
        "run_id",
        "run_kind",
        "saved_version",
        "state",
        "status",
        "total_episodes",
        "total_steps",
        "updated_at",
        "version",
    )

    def __init__(self, run_id: str, max_events: int) -> None:
        self.run_id = run_id
        self.status: str | None = None
        self.run_kind: str | None = None
        self.updated_at: float | None = None
        # name → (value, step, timestamp)
        self.metrics: dict[str, tuple[float, int | None, float]] = {}
        self.state: dict[str, Any] = {}
        self.events_by_kind: dict[str, int] = {}
        self.events_by_type: dict[str, int] = {}
        self.total_steps: int | None = None
        self.total_episodes: int | None = None
        # Events as they came, or wire dicts restored from a snapshot.
        self.events: deque[Any] = deque(maxlen=max_events)
        #: Bumped by every applied event; a view changed since its save when it differs from ``saved_version``.
        self.version = 0
        self.saved_version = 0
        #: Values and events left out because a snapshot could not hold them (see :meth:`discard_unencodable`).
        self.discarded = 0

    @property
    def changed(self) -> bool:
        """Whether events arrived since the last save (or restore)."""
        return self.version != self.saved_version

    @property
    def ended(self) -> bool:
        """Whether the run completed or failed."""
        return self.status in _ENDED

    def apply(self, event: Any) -> None:
        """Take one event of this run into the view."""
        kind = type(event)
        self.events_by_kind[event.kind] = self.events_by_kind.get(event.kind, 0) + 1
        if self.updated_at is None or event.timestamp > self.updated_at:
            self.updated_at = event.timestamp
        if kind is Metric:
            metrics, step, timestamp = self.metrics, event.step, event.timestamp
            for name, value in event.values.items():
                if name not in metrics and not _storable(name):
                    self.discarded += 1  # metric names are not checked at the call (their hot path)
                    continue
                metrics[name] = (value, step, timestamp)
        elif kind is StatePatch:
            merge_state_into(self.state, event.patch)  # the view's own state: linear in the patch
        elif kind is Heartbeat:
            counters = event.counters or {}
            self.total_steps = counters.get("total_steps", self.total_steps)
            self.total_episodes = counters.get("total_episodes", self.total_episodes)
        else:
            self.events.append(event)
            if kind is LogEvent:
                self.events_by_type[event.type] = self.events_by_type.get(event.type, 0) + 1
                self.status = LIVENESS_STATUS.get(event.type, self.status)
            elif kind is RunLifecycle:
                self.status = event.status
                if event.transition is RunTransition.STARTED:
                    self.run_kind = event.run_kind
        self.version += 1

    def to_dict(self) -> dict[str, Any]:
        """The view as JSON-safe data (new containers; ``state`` is shared and changes as patches
        arrive: serialise it at once, or copy it)."""
        return {
            "format": SNAPSHOT_FORMAT,
            "run_id": self.run_id,
            "status": self.status,
            "run_kind": self.run_kind,
            "updated_at": self.updated_at,
            "metrics": {
                name: {"value": json_number(value), "step": step, "timestamp": timestamp}
                for name, (value, step, timestamp) in self.metrics.items()
            },
            "state": self.state,
            "counters": {
                "events_total": sum(self.events_by_kind.values()),
                "events_by_kind": dict(self.events_by_kind),
                "events_by_type": dict(self.events_by_type),
                "total_steps": self.total_steps,
                "total_episodes": self.total_episodes,
            },
            "events": [event if type(event) is dict else event_to_wire(event) for event in self.events],
        }

    def to_json(self, **extra: Any) -> bytes:
        """The snapshot as JSON (the view plus ``extra``); what cannot be serialised is left out.

        Only events built around their constructors' checks (an alert's labels
        hold metric names, which are unchecked) can hold such text; each one is
        dropped alone (counted in ``discarded``), never the view.

        Raises:
            TypeError: the view still cannot be serialised.
        """
        try:
            return orjson.dumps({**self.to_dict(), **extra})
        except TypeError:  # orjson.JSONEncodeError
            self.discard_unencodable()
            return orjson.dumps({**self.to_dict(), **extra})

    def discard_unencodable(self) -> None:
        """Leave out the metrics, events and state entries a snapshot cannot hold."""
        for name in [name for name in self.metrics if not _storable(name)]:
            del self.metrics[name]
            self.discarded += 1
        kept = [event for event in self.events if _serialisable(event if type(event) is dict else event_to_wire(event))]
        self.discarded += len(self.events) - len(kept)
        self.events.clear()
        self.events.extend(kept)
        if not _serialisable(self.state):
            self.state = _without_unencodable(self.state)
            self.discarded += 1
        for name in [name for name in self.events_by_type if not _serialisable(name)]:
            del self.events_by_type[name]

    @classmethod
    def from_dict(cls, data: Any, max_events: int) -> RunView:
        """Rebuild a view from :meth:`to_dict` data (a snapshot); it counts as saved.

        Raises:
            ValueError: ``data`` is not such a snapshot (the message names the key).
        """
        if not isinstance(data, dict):
            raise ValueError(f"snapshot: must be an object, got {type(data).__name__}")
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot.format: expected {SNAPSHOT_FORMAT!r}, got {data.get('format')!r}")
        view = cls(_typed(data, "run_id", str), max_events)
        view.status = _typed(data, "status", str, optional=True)
        view.run_kind = _typed(data, "run_kind", str, optional=True)
        view.updated_at = _number(data.get("updated_at"), "snapshot.updated_at", optional=True)
        for name, entry in _typed(data, "metrics", dict).items():
            where = f"snapshot.metrics[{name!r}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: must be an object")
            step = entry.get("step")
            if step is not None and type(step) is not int:
                raise ValueError(f"{where}.step: must be an integer or null, got {step!r}")
            raw = entry.get("value")
            if raw is None:
                value = math.nan
            elif type(raw) is str and raw in NON_FINITE_FROM_JSON:
                value = NON_FINITE_FROM_JSON[raw]
            else:
                value = _number(raw, f"{where}.value")
            view.metrics[name] = (value, step, _number(entry.get("timestamp"), f"{where}.timestamp"))
        view.state = copy_state(_typed(data, "state", dict))  # the view merges into it
        counters = _typed(data, "counters", dict)
        for key in ("events_by_kind", "events_by_type"):
            table = counters.get(key)
            if not isinstance(table, dict) or not all(type(n) is int for n in table.values()):
                raise ValueError(f"snapshot.counters.{key}: must map names to integers")
        view.events_by_kind = counters["events_by_kind"]
        view.events_by_type = counters["events_by_type"]
        for key in ("total_steps", "total_episodes"):
            if counters.get(key) is not None and type(counters[key]) is not int:
                raise ValueError(f"snapshot.counters.{key}: must be an integer or null")
        view.total_steps = counters.get("total_steps")
        view.total_episodes = counters.get("total_episodes")
        events = _typed(data, "events", list)
        if not all(isinstance(event, dict) for event in events):
            raise ValueError("snapshot.events: must be a list of objects")
        view.events.extend(events)
        return view


def _storable(text: str) -> bool:
    try:
        check_storable("name", text)
    except ValueError:
        return False
    return True


def _serialisable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _without_unencodable(value: Any) -> Any:
    """A copy of a JSON value without the keys, items and strings JSON cannot hold."""
    if isinstance(value, dict):
        return {
            key: _without_unencodable(item)
            for key, item in value.items()
            if _serialisable(key) and (isinstance(item, (dict, list)) or _serialisable(item))
        }
    if isinstance(value, list):
        return [_without_unencodable(item) for item in value if isinstance(item, (dict, list)) or _serialisable(item)]
    return value


def _typed(data: dict[str, Any], key: str, kind: type, *, optional: bool = False) -> Any:
    value = data.get(key)
    if (value is None and optional) or isinstance(value, kind):
        return value
    raise ValueError(f"snapshot.{key}: must be {'null or ' if optional else ''}{kind.__name__}, got {value!r}")


def _number(value: Any, where: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if type(value) not in (int, float):
        raise ValueError(f"{where}: must be a number, got {value!r}")
    return float(value)


class SnapshotBook:
    """The views of every run the stage has seen (pure: no I/O, no clock).

    Args:
        max_events: the event-log entries each view keeps.
    """

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events
        self._views: dict[str, RunView] = {}
        #: Events of runs whose id the store cannot keep (a lone surrogate, NUL): never held.
        self.refused_events = 0
        self._discarded_by_dropped_views = 0

    def __len__(self) -> int:
        return len(self._views)

    def view(self, run_id: str) -> RunView | None:
        """The run's view (``None``: none held)."""
        return self._views.get(run_id)

    def unknown_runs(self, events: Iterable[Any]) -> list[str]:
        """The runs of ``events`` the book holds no view of, in order of first appearance."""
        views = self._views
        unknown: dict[str, None] = {}
        for event in events:
            run_id = event.run_id
            if run_id not in views and run_id not in unknown and type(event) is not IngestReceipt:
                unknown[run_id] = None
        return [run_id for run_id in unknown if _storable(run_id)]

    def adopt(self, run_id: str, view: RunView | None = None) -> RunView:
        """Hold ``view`` (``None``: an empty one) as the run's view, unless one is held already.

        Returns:
            The run's view now held.
        """
        held = self._views.get(run_id)
        if held is None:
            held = self._views[run_id] = view if view is not None else RunView(run_id, self.max_events)
        return held

    def observe(self, events: Iterable[Any]) -> None:
        """Apply the events of a batch, in order (receipts are bookkeeping and skipped)."""
        views = self._views
        for event in events:
            if type(event) is IngestReceipt:
                continue
            view = views.get(event.run_id)
            if view is None:
                if not _storable(event.run_id):  # metrics leave their run id to the store: refused alone
                    self.refused_events += 1
                    continue
                view = self.adopt(event.run_id)
            view.apply(event)

    def discarded(self) -> int:
        """Metric values, events and state entries the held views left out (see :meth:`RunView.to_json`)."""
        return self._discarded_by_dropped_views + sum(view.discarded for view in self._views.values())

    def changed(self) -> list[RunView]:
        """The views changed since their last save."""
        return [view for view in self._views.values() if view.changed]

    def mark_saved(self, run_id: str, version: int) -> None:
        """Record that the run's view as of ``version`` is saved."""
        view = self._views.get(run_id)
        if view is not None:
            view.saved_version = max(view.saved_version, version)

    def drop_ended(self) -> list[str]:
        """Forget the views of completed and failed runs that hold nothing unsaved.

        Returns:
            Their run ids (a later event of one restores it from its snapshot).
        """
        dropped = [run_id for run_id, view in self._views.items() if view.ended and not view.changed]
        for run_id in dropped:
            self._discarded_by_dropped_views += self._views.pop(run_id).discarded
        return dropped
