"""Test doubles for the shutdown-signal scenarios, loaded by ``module:Class`` in a ``runwatch serve`` subprocess.

The subprocess finds this module through ``PYTHONPATH`` (the tests directory),
so its pipeline config names the type ``"plugins_for_signals:SlowSink"``.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import Field

from runwatch.pipeline.component import ComponentContext, Sink
from runwatch.pipeline.component import Options as BaseOptions

__all__ = ["SlowSink"]


class SlowSink(Sink):
    """A slow consumer: every write takes ``delay_seconds`` (so its queue, and a drain, last a while)."""

    class Options(BaseOptions):
        delay_seconds: float = Field(0.05, ge=0)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.written_events = 0
        self.writes = 0

    async def write(self, batch: list[Any]) -> None:
        await anyio.sleep(self.options.delay_seconds)
        self.writes += 1
        self.written_events += len(batch)

    def statistics(self) -> dict[str, Any]:
        return {"written_events": self.written_events, "writes": self.writes}
