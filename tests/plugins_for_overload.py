"""Test doubles for the reliability scenarios (overload, slow subscribers, host safety).

Loaded by ``module:Class`` from pipeline configs; the tests build the type
string from ``__module__`` so it follows however pytest imported this module,
and the subprocess scenarios put this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import anyio
import orjson
from pydantic import Field

from runwatch.pipeline.component import ComponentContext, Sink, Stage
from runwatch.pipeline.component import Options as BaseOptions
from runwatch.wire import event_to_wire

__all__ = ["PickySerialiserSink", "RaisingStage", "StuckSink", "ThrottledSink"]


class ThrottledSink(Sink):
    """A sink with a known capacity: it takes ``events_per_second`` events per second, no more.

    Each write sleeps for as long as its batch "costs" at that rate (a virtual
    clock, so sleep granularity does not change the long-run rate).
    """

    class Options(BaseOptions):
        events_per_second: float = Field(2000.0, gt=0)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.written_events = 0
        #: (monotonic time, written_events) after each write: the rate is measured between two writes.
        self.history: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._free_at = 0.0

    async def write(self, batch: list[Any]) -> None:
        now = time.monotonic()
        self._free_at = max(self._free_at, now) + len(batch) / self.options.events_per_second
        await anyio.sleep(self._free_at - now)
        self.written_events += len(batch)
        self.history.append((time.monotonic(), self.written_events))

    def rate_since(self, since: float) -> float:
        """Events per second written between the first write completed after ``since`` and the last one."""
        window = [entry for entry in self.history if entry[0] >= since]
        if len(window) < 2:
            return 0.0
        (t0, w0), (t1, w1) = window[0], window[-1]
        return (w1 - w0) / (t1 - t0)

    def statistics(self) -> dict[str, Any]:
        return {"written_events": self.written_events}


class StuckSink(Sink):
    """A stuck sink: its first write never returns (until cancelled by the shutdown deadline)."""

    def __init__(self, id: str, options: Any, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.entered = anyio.Event()

    async def write(self, batch: list[Any]) -> None:
        self.entered.set()
        await anyio.sleep_forever()


class RaisingStage(Stage):
    """Passes batches on, but raises on every batch holding a log event of type ``boom``."""

    async def write(self, batch: list[Any]) -> None:
        for event in batch:
            if getattr(event, "type", None) == "boom":
                raise RuntimeError("stage fault injected by the test")
        await self.output.send(batch)


class PickySerialiserSink(Sink):
    """Serialises every event to JSON; its serialiser fails on metric values named ``poison``."""

    def __init__(self, id: str, options: Any, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.serialised_events = 0

    async def write(self, batch: list[Any]) -> None:
        for event in batch:
            orjson.dumps(event_to_wire(event), default=_refuse)
            if "poison" in (getattr(event, "values", None) or {}):
                raise ValueError("serialiser fault injected by the test")
        self.serialised_events += len(batch)

    def statistics(self) -> dict[str, Any]:
        return {"serialised_events": self.serialised_events}


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not serialisable")
