"""Removing points from stored chunks: retention by time, downsampling by logging calls.

Synchronous ``sqlite3`` code for maintenance, run inside the caller's write
transaction. A chunk wholly inside what goes is deleted; a chunk that
straddles the boundary is decoded, cut, and written again as one sealed
chunk holding the points that stay (the same first call number if its first
point stays). Every other chunk is left as it is.

A live writer keeps the open part of each chunk in memory and rewrites its
unsealed segment rows as the chunk grows: cutting one of those would bring
the cut points back (or collide with the writer's next segment). So
``sealed_only`` leaves unsealed rows alone: use it for runs that may be
written to (sessions); runs that ended have sealed chunks only (their end
seals them), and a crashed writer's segments are no longer rewritten.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..exceptions import StoreError
from .chunk_store import chunk_statements
from .chunks import ChunkColumns, ChunkRow, decode_chunk, encode_chunk
from .codecs import CodecError
from .series import ChunkWrite, ChunkWrites

__all__ = ["REMOVAL_COLUMNS", "PointRange", "Removal", "plan_removal", "remove_points"]

_COLUMNS: Final = frozenset({"seq", "step", "time", "value", "tags"})


@dataclass(frozen=True, slots=True)
class PointRange:
    """The points to remove: those before ``before_us`` (µs since the epoch), or with a call number in
    ``[seq_low, seq_high]`` (either bound may be None; both None: no seq bound)."""

    before_us: int | None = None
    seq_low: int | None = None
    seq_high: int | None = None


def remove_points(
    connection: sqlite3.Connection, run: int, points: PointRange, *, sealed_only: bool = False
) -> npt.NDArray[np.int64]:
    """Remove the run's points in ``points`` from every series of the run.

    A series left without points keeps its row (a writer may still add to it under that id).

    Args:
        connection: a connection inside a write transaction.
        run: the run's key in ``runs``.
        points: what to remove.
        sealed_only: leave unsealed segment rows alone (see the module docs).

    Returns:
        The call numbers that lost at least one point, sorted and unique.

    Raises:
        StoreError: a chunk cannot be decoded.
    """
    where = ["s.run = ?"]
    params: list[Any] = [run]
    if points.before_us is not None:
        where.append("c.time_min < ?")
        params.append(points.before_us)
    if points.seq_low is not None:
        where.append("c.seq_last >= ?")
        params.append(points.seq_low)
    if points.seq_high is not None:
        where.append("c.seq_first <= ?")
        params.append(points.seq_high)
    if sealed_only:
        where.append("c.sealed = 1")
    rows = connection.execute(
        f"SELECT {REMOVAL_COLUMNS} FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
        f" WHERE {' AND '.join(where)}",
        params,
    ).fetchall()
    removal = plan_removal(rows, run, points)
    deleted, rewrites, ids = removal.deleted, removal.rewrites, removal.ids
    for start in range(0, len(deleted), 500):
        part = deleted[start : start + 500]
        connection.execute(f"DELETE FROM metric_chunks WHERE rowid IN ({', '.join('?' * len(part))})", part)
    for sql, params_ in chunk_statements(rewrites, ids):
        connection.execute(sql, params_)
    return removal.removed_seqs()


#: The columns of a chunk row :func:`plan_removal` takes, in order.
REMOVAL_COLUMNS: Final = (
    "c.rowid, s.id, s.name, c.block_points, c.count, c.value_type, c.seqs, c.steps, c.step_mask,"
    " c.times, c.vals, c.tags"
)


@dataclass
class Removal:
    """What removing points from a run's chunk rows takes: rows to delete, cut chunks to insert (sealed)."""

    deleted: list[int] = field(default_factory=list)
    rewrites: ChunkWrites = field(default_factory=ChunkWrites)
    ids: dict[tuple[int, str], int] = field(default_factory=dict)
    removed: list[npt.NDArray[np.int64]] = field(default_factory=list)

    def removed_seqs(self) -> npt.NDArray[np.int64]:
        """The call numbers that lost at least one point, sorted and unique."""
        if not self.removed:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(self.removed))


def plan_removal(rows: Sequence[Sequence[Any]], run: int, points: PointRange) -> Removal:
    """The rows (:data:`REMOVAL_COLUMNS`) of ``run`` that lose points in ``points``, and what is written
    in place of those that keep some (pure code: each backend runs it its own way).

    Raises:
        StoreError: a chunk cannot be decoded.
    """
    out = Removal()
    removed, deleted, rewrites, ids = out.removed, out.deleted, out.rewrites, out.ids
    for rowid, series, name, block_points, *stored in rows:
        try:
            columns = decode_chunk(ChunkRow(*stored), _COLUMNS)
        except CodecError as exc:
            raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
        gone = np.ones(len(columns), dtype=np.bool_)
        if points.before_us is not None:
            gone &= columns.time_us < points.before_us
        if points.seq_low is not None:
            gone &= columns.seq >= points.seq_low
        if points.seq_high is not None:
            gone &= columns.seq <= points.seq_high
        if not gone.any():
            continue
        removed.append(columns.seq[gone])
        deleted.append(rowid)
        kept = np.flatnonzero(~gone)
        if len(kept):
            rest = ChunkColumns(
                columns.seq[kept],
                columns.step[kept],
                None if columns.step_valid is None else columns.step_valid[kept],
                columns.time_us[kept],
                columns.values[kept],
                None if columns.tags is None else [columns.tags[i] for i in kept.tolist()],
            )
            key = (run, name)
            ids[key] = series
            rewrites.inserts.append(ChunkWrite(key, True, encode_chunk(rest, block_points=block_points)))
    return out
