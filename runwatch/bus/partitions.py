"""Which partitions a worker owns, and what it has in flight from each (pure: no I/O, no clock).

Runs are hashed to partitions (:func:`runwatch.wire.bus.partition_of`);
each partition has one owner among the workers, which holds its lease (a
key of the ``runwatch_leases`` bucket; the lease's revision is the owner's
fencing token). :class:`Ownership` is one worker's view: the partitions it
owns with their tokens, the messages it has sent down its pipeline and not
yet seen committed, and what it should claim or release.

The bookkeeping of a message: it is *in flight* from when the source sends
its events until the store reports its batch key committed; then it is
acknowledged to JetStream. A message at or below the partition's committed
sequence, or already in flight, is not sent again (a redelivery). When a
lease is lost, everything in flight from that partition is forgotten: its
writes are fenced out, and the partition's next owner gets the messages
again from the stream.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InFlight", "Owned", "Ownership", "target_partitions"]


def target_partitions(partitions: int, live_workers: int) -> int:
    """How many partitions each of ``live_workers`` workers aims to own: an even share, rounded up."""
    return math.ceil(partitions / max(1, live_workers))


@dataclass
class InFlight:
    """A message whose events were sent down the pipeline, not yet committed."""

    partition: int
    seq: int
    key: tuple[str, str]
    message: Any  # the JetStream message (acknowledged once committed)


@dataclass
class Owned:
    """A partition this worker holds the lease of.

    Attributes:
        partition: the partition.
        token: the lease's latest revision: the fencing token of every write.
        committed_seq: the highest stream sequence known committed.
        in_flight: stream sequence → what is in flight.
        releasing: set when the partition is to be given up once nothing is in flight.
        pending_messages: what the consumer had left after the last fetch (for lag and catching up).
    """

    partition: int
    token: int
    committed_seq: int
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    releasing: bool = False
    pending_messages: int = 0


class Ownership:
    """One worker's partitions and its messages in flight (see the module docs).

    Args:
        partitions: the partitions of the bus.
        name: this worker's name (recorded with its tokens).
    """

    def __init__(self, partitions: int, name: str) -> None:
        self.partitions = partitions
        self.name = name
        self.owned: dict[int, Owned] = {}
        self._by_key: dict[tuple[str, str], list[InFlight]] = {}
        #: Bumped whenever the set of owned partitions changes.
        self.generation = 0

    # -- leases ------------------------------------------------------------------------------

    def acquired(self, partition: int, token: int, committed_seq: int) -> Owned:
        """The lease of ``partition`` was taken with ``token``; messages up to ``committed_seq`` are stored."""
        owned = self.owned[partition] = Owned(partition, token, committed_seq)
        self.generation += 1
        return owned

    def renewed(self, partition: int, token: int) -> None:
        """The lease of ``partition`` was renewed: its revision is the new token."""
        owned = self.owned.get(partition)
        if owned is not None:
            owned.token = token

    def lost(self, partition: int) -> list[InFlight]:
        """The lease of ``partition`` is gone (expired, taken, or released): forget what was in flight."""
        owned = self.owned.pop(partition, None)
        if owned is None:
            return []
        self.generation += 1
        forgotten = list(owned.in_flight.values())
        for entry in forgotten:
            self._unlink(entry)
        return forgotten

    def to_claim(self, live_workers: int, free: Iterable[int]) -> list[int]:
        """Free partitions to try to claim so that this worker reaches its share."""
        wanted = target_partitions(self.partitions, live_workers) - len(self.owned)
        return list(free)[: max(0, wanted)]

    def to_release(self, live_workers: int) -> list[int]:
        """Owned partitions beyond this worker's share (the highest numbers), to give up."""
        extra = len(self.owned) - target_partitions(self.partitions, live_workers)
        return sorted(self.owned, reverse=True)[: max(0, extra)]

    # -- messages ----------------------------------------------------------------------------

    def admit(self, partition: int, seq: int, key: tuple[str, str], message: Any) -> bool:
        """A fetched message: whether to send its events (``False``: committed already, or in flight).

        A redelivery of a message in flight replaces the one to acknowledge (the newest delivery's).
        """
        owned = self.owned.get(partition)
        if owned is None or seq <= owned.committed_seq:
            return False
        entry = owned.in_flight.get(seq)
        if entry is not None:
            entry.message = message
            return False
        entry = InFlight(partition, seq, key, message)
        owned.in_flight[seq] = entry
        self._by_key.setdefault(key, []).append(entry)
        return True

    def committed(self, keys: Iterable[tuple[str, str]]) -> list[Any]:
        """Batch keys were committed: the messages to acknowledge now."""
        done: list[Any] = []
        for key in keys:
            for entry in self._by_key.pop(key, ()):
                owned = self.owned.get(entry.partition)
                if owned is None or owned.in_flight.get(entry.seq) is not entry:
                    continue
                del owned.in_flight[entry.seq]
                owned.committed_seq = max(owned.committed_seq, entry.seq)
                done.append(entry.message)
        return done

    def _unlink(self, entry: InFlight) -> None:
        entries = self._by_key.get(entry.key)
        if entries is not None:
            entries[:] = [other for other in entries if other is not entry]
            if not entries:
                del self._by_key[entry.key]

    # -- fencing -----------------------------------------------------------------------------

    def token_of(self, partition: int) -> int:
        """The token writes of ``partition`` carry: the lease's, or 0 when it is not owned (never valid)."""
        owned = self.owned.get(partition)
        return 0 if owned is None else owned.token

    def in_flight_seq(self, key: tuple[str, str]) -> tuple[int, int] | None:
        """``(partition, seq)`` of the message in flight with this batch key (``None``: none)."""
        entries = self._by_key.get(key)
        if not entries:
            return None
        return entries[-1].partition, entries[-1].seq

    def in_flight_count(self, partitions: Sequence[int] | None = None) -> int:
        """Messages in flight (of ``partitions``, or of all)."""
        chosen = self.owned.values() if partitions is None else [self.owned[p] for p in partitions if p in self.owned]
        return sum(len(owned.in_flight) for owned in chosen)
