"""Helpers of the store's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runwatch.pipeline import ComponentContext, Pipeline


async def write(db: Path, *events: Any) -> None:
    """Write ``events`` through the default pipeline (in-process source → SQLite sink)."""
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for event in events:
            pipeline.emit(event)
        assert await pipeline.flush(10)
