"""A sink that discards everything (for benchmarks and tests)."""

from __future__ import annotations

from typing import Any

from ..pipeline.component import Sink

__all__ = ["BlackholeSink"]


class BlackholeSink(Sink):
    """Counts and discards every event."""

    takes_receipts = True  # internal ingest receipts: discarded and counted like any event

    discarded_events = 0

    async def write(self, batch: list[Any]) -> None:
        self.discarded_events += len(batch)

    def statistics(self) -> dict[str, Any]:
        return {"discarded_events": self.discarded_events}
