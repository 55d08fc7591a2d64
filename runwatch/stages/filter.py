"""A stage that passes on only the events that match."""

from __future__ import annotations

import fnmatch
from typing import Any

from ..events import Metric
from ..pipeline.component import ComponentContext, Stage
from ..pipeline.component import Options as BaseOptions

__all__ = ["FilterStage"]


class FilterStage(Stage):
    """Keeps events by kind, run id and metric name (globs); drops the rest.

    Options:
        kinds: event kinds to keep (``metric``, ``log``...); empty keeps all.
        runs: run id globs to keep; empty keeps all.
        metrics: metric name globs; a metric event keeps only matching values
            and is dropped when none match. Empty keeps all values.
    """

    takes_receipts = True  # internal ingest receipts: kept or dropped like any event (by kind "receipt")

    class Options(BaseOptions):
        kinds: list[str] = []
        runs: list[str] = []
        metrics: list[str] = []

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.filtered_events = 0

    async def write(self, batch: list[Any]) -> None:
        kept = [event for event in map(self._select, batch) if event is not None]
        self.filtered_events += len(batch) - len(kept)
        await self.output.send(kept)

    def _select(self, event: Any) -> Any:
        options = self.options
        if options.kinds and event.kind not in options.kinds:
            return None
        if options.runs and not any(fnmatch.fnmatchcase(event.run_id, p) for p in options.runs):
            return None
        if options.metrics and type(event) is Metric:
            values = {
                name: value
                for name, value in event.values.items()
                if any(fnmatch.fnmatchcase(name, p) for p in options.metrics)
            }
            if not values:
                return None
            if len(values) != len(event.values):
                return event._replace(values=values)
        return event

    def statistics(self) -> dict[str, Any]:
        return {"filtered_events": self.filtered_events}
