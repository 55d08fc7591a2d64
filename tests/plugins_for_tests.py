"""Test doubles: custom components loaded by ``module:Class`` from pipeline configs.

The tests refer to them as ``f"{RecordingSink.__module__}:RecordingSink"`` so
the type string follows however pytest imported this module.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread

from runwatch.pipeline.component import ComponentContext, Sink, Stage
from runwatch.pipeline.component import Options as BaseOptions
from runwatch.sinks.websocket import WebsocketHub

__all__ = [
    "BlockingSink",
    "FailingStage",
    "GatedHub",
    "GatedSink",
    "NotAComponent",
    "RecordingSink",
    "RecordingStage",
]


class RecordingSink(Sink):
    """Keeps every batch it is given and counts flushes and closes."""

    class Options(BaseOptions):
        label: str = ""
        batch_limit: int = 1000

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.batches: list[list[Any]] = []
        self.flushes = 0
        self.started = False
        self.closed = False

    @property
    def events(self) -> list[Any]:
        """Every event written, in order."""
        return [event for batch in self.batches for event in batch]

    async def start(self) -> None:
        self.started = True

    async def write(self, batch: list[Any]) -> None:
        self.batches.append(batch)

    async def flush(self) -> None:
        self.flushes += 1

    async def aclose(self) -> None:
        self.closed = True

    def statistics(self) -> dict[str, Any]:
        return {"recorded_events": len(self.events)}


class FailingStage(Stage):
    """Passes batches on, but raises on any batch holding a log event of type ``fail_on_type``."""

    class Options(BaseOptions):
        fail_on_type: str = "boom"

    async def write(self, batch: list[Any]) -> None:
        for event in batch:
            if getattr(event, "type", None) == self.options.fail_on_type:
                raise RuntimeError(f"stage refused a {self.options.fail_on_type!r} event")
        await self.output.send(batch)


class RecordingStage(Stage):
    """Passes batches on, keeping every event it was given."""

    def __init__(self, id: str, options: Any, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.events: list[Any] = []

    async def write(self, batch: list[Any]) -> None:
        self.events.extend(batch)
        await self.output.send(batch)


class GatedSink(RecordingSink):
    """A slow sink: each write waits until the test sets ``gate`` (then it records the batch)."""

    def __init__(self, id: str, options: RecordingSink.Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.gate = anyio.Event()
        self.entered = anyio.Event()

    async def write(self, batch: list[Any]) -> None:
        self.entered.set()
        await self.gate.wait()
        await super().write(batch)


class BlockingSink(RecordingSink):
    """A stuck sink: its first write never returns (it awaits an event nobody sets)."""

    def __init__(self, id: str, options: RecordingSink.Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.entered = anyio.Event()
        self.cancelled = False

    async def write(self, batch: list[Any]) -> None:
        self.entered.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


class GatedHub(WebsocketHub):
    """A websocket hub stuck in its first write until the test sets ``gate`` (a ``threading.Event``,
    so a test may open it from any thread); the loop stays free meanwhile (the wait is on a worker thread)."""

    def __init__(self, id: str, options: WebsocketHub.Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.written_events = 0

    async def write(self, batch: list[Any]) -> None:
        self.entered.set()
        await anyio.to_thread.run_sync(self.gate.wait)
        self.written_events += len(batch)
        await super().write(batch)


class NotAComponent:
    """A class that is not a Source, Stage or Sink."""
