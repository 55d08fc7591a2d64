"""The ledger of a process's own commits, so that its live tail of the same store skips them.

A process that writes a store and follows it too (``runwatch serve``: its
own events went to the live views through the pipeline already) must not see
its own rows come back from the tail. Its store writer notes, inside each
transaction and *before* committing, the positions it wrote in each stream
(a table's ids, the metric row numbers) and the heartbeats it left on run
rows; the tail asks the ledger about each row it reads. A row of a
transaction not settled yet is held back until the ledger knows whether it
committed (see :class:`~runwatch.store.base.StoreTail`).

Backend-neutral: a stream is any append-only sequence with increasing
positions. Only one thread (the pipeline's event loop) uses a ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["FOREIGN", "OWN", "PENDING", "CommitLedger", "LedgerEntry"]

#: What a :class:`CommitLedger` says of a row: another writer's, this process's, or not known yet.
FOREIGN: Final = 0
OWN: Final = 1
PENDING: Final = 2


@dataclass
class LedgerEntry:
    """The rows and heartbeats of one transaction of this process's writer."""

    ranges: list[tuple[str, int, int]] = field(default_factory=list)  # (stream, first position, last position)
    heartbeats: dict[str, float] = field(default_factory=dict)  # run id → last_heartbeat written
    settled: bool = False
    settled_mark: int = 0  # the ledger's mark once settled (see CommitLedger.mark)


class CommitLedger:
    """What this process's own store writer wrote (see the module docs).

    The writer calls :meth:`begin` inside its transaction, records each
    stream's position range and each run heartbeat it writes on the entry,
    and calls :meth:`settle` once the transaction committed or rolled back.
    The tail asks :meth:`owner` per row.
    """

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []
        self._commits = 0

    def mark(self) -> int:
        """A mark of the commits settled so far: take one before a read, give it to :meth:`forget` after."""
        return self._commits

    def begin(self) -> LedgerEntry:
        """A new, unsettled entry (its rows are :data:`PENDING` until settled)."""
        entry = LedgerEntry()
        self._entries.append(entry)
        return entry

    def settle(self, entry: LedgerEntry, *, committed: bool) -> None:
        """The entry's transaction committed (its rows are :data:`OWN`) or not (forgotten)."""
        if committed:
            self._commits += 1
            entry.settled, entry.settled_mark = True, self._commits
        else:
            self._entries = [other for other in self._entries if other is not entry]

    def owner(self, stream: str, position: int) -> int:
        """:data:`OWN`, :data:`PENDING` or :data:`FOREIGN` for one row of ``stream``."""
        for entry in self._entries:
            for name, first, last in entry.ranges:
                if name == stream and first <= position <= last:
                    return OWN if entry.settled else PENDING
        return FOREIGN

    def settled_ranges(self) -> list[tuple[str, int, int]]:
        """The ``(stream, first, last)`` ranges of committed transactions: this process's own rows for sure."""
        return [span for entry in self._entries if entry.settled for span in entry.ranges]

    def heartbeat_owner(self, run_id: str, value: float) -> int:
        """Whose heartbeat left ``run_id``'s row at ``value``: :data:`OWN`, :data:`PENDING` or :data:`FOREIGN`."""
        found = FOREIGN
        for entry in self._entries:
            if entry.heartbeats.get(run_id) == value:
                if not entry.settled:
                    return PENDING
                found = OWN
        return found

    def forget(self, positions: dict[str, int], read_mark: int) -> None:
        """Drop what the tail has passed: settled ranges below each stream's cursor, and entries
        left with heartbeats only once a read that began after their commit has seen them.

        Args:
            positions: per stream, the first position the tail has not read yet.
            read_mark: :meth:`mark` taken before that read began.
        """
        kept: list[LedgerEntry] = []
        for entry in self._entries:
            if entry.settled:
                entry.ranges = [r for r in entry.ranges if r[2] >= positions.get(r[0], 0)]
                if not entry.ranges and entry.settled_mark <= read_mark:
                    continue  # committed before the read: it saw these heartbeats (or newer ones)
            kept.append(entry)
        self._entries = kept

    def __len__(self) -> int:
        return len(self._entries)
