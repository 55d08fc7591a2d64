"""Stored rows of a PostgreSQL store's ``events`` and ``state_history`` back as typed events (the live tail).

The decoders are :mod:`runwatch.store.replay`'s; logging calls come back from
chunks through :mod:`runwatch.store.calls`, as in the SQLite store.
"""

from __future__ import annotations

from typing import Any

from ..replay import decode_event_row, decode_state_row

__all__ = ["decode_row"]


def decode_row(table: str, run_id: str, row: Any) -> Any:
    """The event of one row of ``events`` or ``state_history`` (its columns after the position and run id).

    Raises:
        ValueError / TypeError / KeyError: the row does not decode.
    """
    if table == "events":
        return decode_event_row(run_id, *row)
    return decode_state_row(run_id, *row)
