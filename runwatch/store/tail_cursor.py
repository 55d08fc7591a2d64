"""What every backend's live tail shares: the streams, the cursors, the window and what a read tells.

The SQLite tail (:mod:`.tail`) and the PostgreSQL one
(:mod:`.postgres.tail`) notice commits and read rows each their own way;
both inherit :class:`CursorTail`, which keeps the cursor of each stream,
the window (``max_rows``) and the heartbeats already told, and turns what a
read found into its :class:`~runwatch.store.base.TailRead`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from .base import RunProgress, StoredRow, StoreTail, TailRead
from .calls import Call
from .replay import metric_of_call

__all__ = ["LIVE_STATUSES", "TAIL_TABLES", "CursorTail", "metric_rows_of", "without"]

#: The streams the tail follows (``metric_rows``: logging calls, by number).
TAIL_TABLES: Final = ("metric_rows", "events", "state_history")

#: Run statuses whose progress (heartbeat, counters) the tail follows.
LIVE_STATUSES: Final = ("running", "paused", "hung")


class CursorTail(StoreTail):
    """A tail's cursors, window and told heartbeats (see the module docs).

    Args:
        max_rows: the most rows of each stream one read returns.
    """

    def __init__(self, *, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.max_rows = max_rows
        self.positions = {}
        self._heartbeats: dict[str, float] = {}

    @property
    def streams(self) -> tuple[str, ...]:
        return TAIL_TABLES

    def took_heartbeat(self, run_id: str, value: float) -> None:
        self._heartbeats[run_id] = value

    @staticmethod
    def _skipped(skip: Sequence[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
        """The caller's own ranges by stream (those of other streams are ignored)."""
        skipped: dict[str, list[tuple[int, int]]] = {table: [] for table in TAIL_TABLES}
        for stream, first, last in skip:
            if stream in skipped:
                skipped[stream].append((first, last))
        return skipped

    def _tail_read(
        self,
        rows: dict[str, list[StoredRow]],
        ends: dict[str, int],
        live: list[RunProgress],
        more: bool,
        undecodable: int,
        skipped: dict[str, list[tuple[int, int]]],
        *,
        calls_full: bool = False,
    ) -> TailRead:
        """What a read found, with the live runs' progress that is news and the skipped rows it passed.

        ``calls_full``: the window of logging calls was full, so calls after it wait for the next read.
        """
        if calls_full and _hold_rows_after_calls(rows, ends):
            more = True
        known = self._heartbeats
        for run_id in known.keys() - {row.run_id for row in live}:
            del known[run_id]  # ended: a heartbeat after a resume is news again
        progress = [row for row in live if row.last_heartbeat > known.get(row.run_id, -1.0)]
        passed = sum(
            max(0, min(last + 1, ends[table]) - max(first, self.positions[table]))
            for table, ranges in skipped.items()
            for first, last in ranges
        )
        return TailRead(rows, ends, progress, more, undecodable, passed)


def _hold_rows_after_calls(rows: dict[str, list[StoredRow]], ends: dict[str, int]) -> bool:
    """Leave the events and state patches stamped after the last call read for a later read; whether any were.

    A run's ``completed`` event must not reach a live subscriber before the calls logged ahead of it,
    which a full window of calls has not read yet. Rows are cut in position order, so none is skipped.
    """
    calls = rows["metric_rows"]
    if not calls:
        return False
    horizon = max(row.event.timestamp for row in calls)
    held = False
    for stream in ("events", "state_history"):
        found = rows[stream]
        for index, row in enumerate(found):
            if row.event.timestamp > horizon:
                rows[stream], ends[stream] = found[:index], row.position
                held = True
                break
    return held


def metric_rows_of(calls: Iterable[Call]) -> tuple[list[StoredRow], int]:
    """The stored rows of logging calls, and how many could not be decoded (left out)."""
    found: list[StoredRow] = []
    bad = 0
    for call in calls:
        try:
            event = metric_of_call(call)
        except (ValueError, TypeError, KeyError):
            bad += 1
            continue
        found.append(StoredRow("metric_rows", call.seq, event))
    return found, bad


def without(start: int, end: int, skip: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sub-ranges ``[low, high)`` of ``[start, end)`` outside every inclusive range of ``skip``."""
    pieces = []
    low = start
    for first, last in sorted(skip):
        if last < low or first >= end:
            continue
        if first > low:
            pieces.append((low, first))
        low = max(low, last + 1)
    if low < end:
        pieces.append((low, end))
    return pieces
