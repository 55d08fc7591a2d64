"""The in-process source: events handed over by threads of this process."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from pydantic import Field

from ..pipeline.bridge import DEFAULT_INTAKE_MAX_BYTES, ThreadBridge
from ..pipeline.component import ComponentContext, Source
from ..pipeline.component import Options as BaseOptions
from ..pipeline.config import MIN_MAX_BYTES

__all__ = ["InProcessSource"]


class InProcessSource(Source):
    """Takes events from ``Pipeline.emit`` and the facades, from any thread (through its :attr:`bridge`).

    Options:
        max_events: the intake queue's bound in events.
        max_bytes: the intake queue's bound in bytes of the events' estimated memory
            (64 MiB; a metric counts 512 bytes, so metrics meet ``max_events`` first).
        when_full: ``block`` (the producer waits), ``drop_newest`` or ``drop_oldest``.
        block_timeout_seconds: the longest a blocked producer waits before the
            event is dropped with reason ``block_timeout``.
        poll_interval_seconds: how often the loop drains the queue while
            events flow (the producer wakes it early past a high-water mark).
    """

    class Options(BaseOptions):
        max_events: int = Field(100_000, ge=1)
        max_bytes: int = Field(DEFAULT_INTAKE_MAX_BYTES, ge=MIN_MAX_BYTES)
        when_full: Literal["block", "drop_newest", "drop_oldest"] = "block"
        block_timeout_seconds: float = Field(30.0, gt=0)
        poll_interval_seconds: float = Field(0.005, gt=0, le=1.0)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.bridge = self._bridge = ThreadBridge(
            max_events=options.max_events,
            policy=options.when_full,
            block_timeout_seconds=options.block_timeout_seconds,
            max_bytes=options.max_bytes,
        )

    async def run(self, stopping: anyio.Event) -> None:
        bridge = self._bridge
        bridge.attach()
        poll = self.options.poll_interval_seconds
        try:
            while True:
                await bridge.wait_for_events(poll)
                closed = bridge.closed
                await self._forward()
                if closed:
                    await self._forward()
                    return
        finally:
            bridge.detach()

    async def _forward(self) -> None:
        output = self.output
        for segment in self._bridge.drain():
            if isinstance(segment, list):
                await output.send(segment)
            else:
                output.send_flush_barrier(segment)

    def statistics(self) -> dict[str, Any]:
        return {"intake": self._bridge.statistics()._asdict()}

    def lost_events(self) -> dict[str, int]:
        return dict(self._bridge.statistics().dropped_events)
