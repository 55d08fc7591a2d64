"""Helpers of the notifier tests: alert events at a fixed time, and component contexts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runwatch.events import AlertEvent
from runwatch.pipeline.component import ComponentContext

# Guards every wait in these tests; nothing here legitimately takes this long.
TIMEOUT = 10
#: The time the alerts of these tests happen at (seconds since the epoch).
T0 = 1_700_000_000.0


def alert(state: str, at: float = 0.0, *, rule: str = "loss_nan", run_id: str = "r1", **fields: Any) -> AlertEvent:
    """An alert event ``at`` seconds after T0."""
    return AlertEvent(run_id, T0 + at, rule, state, **fields)


def context(tmp_path: Path | None = None) -> ComponentContext:
    """A component context whose files stay in tmp_path."""
    if tmp_path is None:
        return ComponentContext()
    return ComponentContext(db_path=str(tmp_path / "db.sqlite"), data_dir=tmp_path / "data")
