"""Downsampling: old metric points of finished runs replaced by per-bucket rollups.

A rollup (table ``metric_rollups``, schema version 3) summarises one metric
over a bucket of consecutive logging calls of one run: the calls' number
(``first_row``/``last_row``: the run's call numbers), step and time ranges,
how many values were logged (NaN included), how many were NaN, and min,
max and mean of the others. The bucket's points leave the run's chunks in
the same transaction (:mod:`runwatch.store.chunk_edit`), so a downsampled
call is counted exactly once. ``metric_stats`` (every value ever logged,
summarised) is not touched, and runs without old calls keep every point as
it was. (Chunks already carry a 256:1 rollup of their own, the block
summaries charts read; rollups are for stores that must shrink.)

Same concurrency rules as :mod:`runwatch.store.lifecycle`: short write
transactions, a pause after each, bounded memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from ..exceptions import StoreError, UnknownRunError
from .base import MaintenancePass
from .chunk_edit import PointRange, remove_points
from .chunk_schema import CHUNK_VERSION
from .chunks import ChunkRow, decode_chunk
from .codecs import CodecError
from .lifecycle import (
    ACTIVE_SQL,
    DEFAULT_BATCH_ROWS,
    LOCK_WAIT_SECONDS,
    check_cutoff,
    check_positive_int,
    run_pass,
    table_names,
    write_transaction,
)
from .queries import check_run_id
from .schema import current_version

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_BUCKET_ROWS",
    "ROLLUP_COLUMNS",
    "DownsampleBuckets",
    "DownsamplePass",
    "FirstCalls",
    "check_rollup_names",
    "downsample_metrics",
    "metric_rollups",
    "rollup_frame",
    "rollup_rows",
]

#: Logging calls summarised by one rollup row.
DEFAULT_BUCKET_ROWS: Final = 100


class DownsampleBuckets(MaintenancePass):
    """What every backend's downsample pass shares: its arguments checked, its counters, and how many of a
    run's first calls one transaction replaces (see :class:`DownsamplePass`; the backend reads and writes).

    Args:
        older_than: the cutoff, epoch seconds.
        bucket_rows: logging calls per rollup bucket (at least 2).
        batch_rows: about the most calls replaced per transaction (rounded
            down to whole buckets, at least one bucket).
    """

    def __init__(self, older_than: float, *, bucket_rows: int, batch_rows: int) -> None:
        self.older_than = check_cutoff(older_than)
        self.bucket_rows = check_positive_int("bucket_rows", bucket_rows, 2)
        check_positive_int("batch_rows", batch_rows)
        self.chunk_rows = max(1, batch_rows // bucket_rows) * bucket_rows
        self.removed_rows = 0
        self.written_rollups = 0
        self._after = 0
        self._run: int | None = None
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the pass has nothing left to downsample."""
        return self._done

    def counters(self) -> dict[str, int]:
        """``downsampled_rows`` and ``written_rollups`` so far."""
        return {"downsampled_rows": self.removed_rows, "written_rollups": self.written_rollups}

    def _old_calls(self, times_us: npt.NDArray[np.int64]) -> int:
        """How many of the run's first calls (their times given, in call order) to replace now."""
        cutoff_us = round(self.older_than * 1e6)
        newer = np.flatnonzero(times_us >= cutoff_us)
        old = int(newer[0]) if len(newer) else len(times_us)
        if old == len(times_us) and old <= self.chunk_rows:
            return old  # the run's last calls: a short last bucket is fine
        return min(old, self.chunk_rows) // self.bucket_rows * self.bucket_rows


class DownsamplePass(DownsampleBuckets):
    """Replaces the old metric points of inactive runs by rollups, one transaction per :meth:`step`.

    A logging call is old when its time is before the cutoff; only runs
    that are not active are touched. Each run's old calls, in call order,
    are cut into buckets of ``bucket_rows`` calls; every bucket becomes one
    ``metric_rollups`` row per metric it holds (call range, step and time
    range, count, NaN count, min, max, mean), in the same transaction that
    removes the bucket's points from the run's chunks. Only whole buckets
    are taken while newer calls follow; a shorter last bucket only at the
    end of a run. Calls logged after a newer one (a timestamp going back)
    stay until that one is old.

    ``metric_stats`` (the summary of all values ever logged) is not changed,
    and runs without old calls keep every point.

    Args:
        older_than: the cutoff, epoch seconds.
        bucket_rows: logging calls per rollup bucket (at least 2).
        batch_rows: about the most calls replaced per transaction (rounded
            down to whole buckets, at least one bucket).
        lock_wait_seconds: how long each transaction waits for the write lock.

    Attributes:
        removed_rows: logging calls replaced so far.
        written_rollups: rollup rows written so far.

    Raises:
        StoreError: (from :meth:`step`) the store predates schema version 10.
    """

    def __init__(
        self,
        older_than: float,
        *,
        bucket_rows: int = DEFAULT_BUCKET_ROWS,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        lock_wait_seconds: float = LOCK_WAIT_SECONDS,
    ) -> None:
        super().__init__(older_than, bucket_rows=bucket_rows, batch_rows=batch_rows)
        self.lock_wait_seconds = lock_wait_seconds
        self._checked = False

    def step(self, conn: sqlite3.Connection) -> bool:
        """Replace up to one batch of old calls of one run in one transaction.

        Returns:
            ``False`` once nothing is left to do.
        """
        if self._done:
            return False
        if not self._checked:
            if current_version(conn) < CHUNK_VERSION:
                raise StoreError(
                    f"downsampling needs schema version {CHUNK_VERSION} or later (this store has"
                    f" {current_version(conn)}); call init_database() or migrate_schema()"
                )
            self._checked = True
        cutoff_us = round(self.older_than * 1e6)
        params: dict[str, Any] = {"cutoff": cutoff_us, "after": self._after}
        if self._run is None:
            # Runs whose first remaining call is old: the rest have nothing to do.
            found = conn.execute(
                f"SELECT id FROM runs WHERE id > :after AND status NOT IN ({ACTIVE_SQL})"
                " AND (SELECT c.time_first FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
                " WHERE s.run = runs.id ORDER BY c.seq_first LIMIT 1) < :cutoff"
                " ORDER BY id LIMIT 1",
                params,
            ).fetchone()
            if found is None:
                self._done = True
                return False
            self._run = int(found[0])
        run = self._run
        with write_transaction(conn, lock_wait_seconds=self.lock_wait_seconds):
            active = conn.execute(f"SELECT 1 FROM runs WHERE id = ? AND status IN ({ACTIVE_SQL})", (run,)).fetchone()
            calls = None if active else _first_calls(conn, run, self.chunk_rows + 1)
            taken = None if calls is None else self._old_calls(calls[1])
            if calls is None or not taken:
                self._after, self._run = run, None
                return True
            seqs = calls[0][:taken]
            self.written_rollups += _write_rollups(conn, run, seqs, self.bucket_rows)
            remove_points(conn, run, PointRange(seq_low=int(seqs[0]), seq_high=int(seqs[-1])))
            self.removed_rows += taken
        return True


def _first_calls(
    conn: sqlite3.Connection, run: int, count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """The call numbers and times of the run's first ``count`` calls (fewer at its end), or None if it has none.

    Reads chunk summaries first, then decodes the call and time columns of
    chunks in call order only until the first ``count`` calls are known.
    """
    chunks = conn.execute(
        "SELECT c.rowid, c.seq_first, c.count, c.value_type FROM metric_series AS s"
        " JOIN metric_chunks AS c ON c.series = s.id WHERE s.run = ? ORDER BY c.seq_first",
        (run,),
    ).fetchall()
    found = FirstCalls(count)
    for rowid, seq_first, chunk_count, value_type in chunks:
        if not found.needs(seq_first):
            break  # every later chunk starts after the first ``count`` calls
        row = conn.execute("SELECT seqs, times FROM metric_chunks WHERE rowid = ?", (rowid,)).fetchone()
        found.add(chunk_count, value_type, row[0], row[1])
    return found.result()


class FirstCalls:
    """The call numbers and times of a run's first ``count`` calls, from the run's chunks in call order
    (each backend reads the chunks, one at a time, while :meth:`needs` says so)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._seqs: list[npt.NDArray[np.int64]] = []
        self._times: list[npt.NDArray[np.int64]] = []
        self._known = np.empty(0, dtype=np.int64)
        self._first = np.empty(0, dtype=np.int64)

    def needs(self, seq_first: int) -> bool:
        """Whether a chunk starting at call ``seq_first`` may hold one of the first calls."""
        known = self._known
        return not (len(known) >= self.count and seq_first > known[self.count - 1])

    def add(self, chunk_count: int, value_type: int, seqs: bytes, times: bytes) -> None:
        """Decode a chunk's call and time columns.

        Raises:
            StoreError: the chunk cannot be decoded.
        """
        try:
            points = decode_chunk(
                ChunkRow(chunk_count, value_type, seqs, None, None, times, b"", None), frozenset({"seq", "time"})
            )
        except CodecError as exc:
            raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
        self._seqs.append(points.seq)
        self._times.append(points.time_us)
        self._known, self._first = np.unique(np.concatenate(self._seqs), return_index=True)

    def result(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
        """The first calls' numbers and times, or ``None`` when no chunk was added."""
        if not self._seqs:
            return None
        return self._known[: self.count], np.concatenate(self._times)[self._first[: self.count]]


def _write_rollups(conn: sqlite3.Connection, run: int, calls: npt.NDArray[np.int64], bucket_rows: int) -> int:
    """One rollup per (bucket of ``bucket_rows`` of ``calls``, metric); the rows written."""
    low, high = int(calls[0]), int(calls[-1])
    rows = conn.execute(
        "SELECT s.name, c.count, c.value_type, c.seqs, c.steps, c.step_mask, c.times, c.vals, NULL"
        " FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
        " WHERE s.run = ? AND c.seq_last >= ? AND c.seq_first <= ? ORDER BY s.name, c.seq_first",
        (run, low, high),
    ).fetchall()
    out = rollup_rows(rows, run, calls, bucket_rows)
    conn.executemany(
        "INSERT INTO metric_rollups (run, name, first_row, last_row, first_step, last_step, start_ts, end_ts,"
        " count, nan_count, min, max, mean) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        out,
    )
    return len(out)


def rollup_rows(
    rows: Sequence[Sequence[Any]], run: int, calls: npt.NDArray[np.int64], bucket_rows: int
) -> list[tuple[Any, ...]]:
    """The ``metric_rollups`` rows (run, name, first_row … mean) of ``calls`` from the chunk rows holding them
    (``name, count, value_type, seqs, steps, step_mask, times, vals, tags`` by name then call order)."""
    low, high = int(calls[0]), int(calls[-1])
    by_name: dict[str, list[Any]] = {}
    for row in rows:
        by_name.setdefault(row[0], []).append(row[1:])
    out: list[tuple[Any, ...]] = []
    for name, chunk_rows in by_name.items():
        parts = []
        for stored in chunk_rows:
            try:
                parts.append(decode_chunk(ChunkRow(*stored), frozenset({"seq", "step", "time", "value"})))
            except CodecError as exc:
                raise StoreError(f"a metric chunk cannot be decoded: {exc}") from None
        seq = np.concatenate([p.seq for p in parts])
        keep = (seq >= low) & (seq <= high)
        seq = seq[keep]
        step = np.concatenate([p.step for p in parts])[keep]
        valid = np.concatenate([np.ones(len(p.seq), np.bool_) if p.step_valid is None else p.step_valid for p in parts])
        valid = valid[keep]
        time_us = np.concatenate([p.time_us for p in parts])[keep]
        values = np.concatenate([p.values.astype(np.float64) for p in parts])[keep]
        bucket = np.searchsorted(calls, seq) // bucket_rows
        for index in np.unique(bucket).tolist():
            at = bucket == index
            x = values[at]
            finite = x[~np.isnan(x)]
            steps = step[at][valid[at]]
            with np.errstate(invalid="ignore"):
                mean = float(finite.mean()) if len(finite) else None
            out.append(
                (
                    run,
                    name,
                    int(seq[at][0]),
                    int(seq[at][-1]),
                    int(steps.min()) if len(steps) else None,
                    int(steps.max()) if len(steps) else None,
                    int(time_us[at].min()) / 1e6,
                    int(time_us[at].max()) / 1e6,
                    int(at.sum()),
                    int(len(x) - len(finite)),
                    float(finite.min()) if len(finite) else None,
                    float(finite.max()) if len(finite) else None,
                    None if mean is None or mean != mean else mean,  # +Inf and -Inf: no mean (NULL)
                )
            )
    return out


def downsample_metrics(
    conn: sqlite3.Connection,
    older_than: float,
    *,
    bucket_rows: int = DEFAULT_BUCKET_ROWS,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    pause_seconds: float | None = None,
) -> dict[str, int]:
    """Replace the metric rows older than ``older_than`` of inactive runs by rollups.

    See :class:`DownsamplePass`.

    Returns:
        ``{"removed_rows": ..., "written_rollups": ...}``.

    Raises:
        StoreError: the store predates schema version 3.
        sqlite3.OperationalError: the write lock stayed taken for ``LOCK_WAIT_SECONDS``.
    """
    job = DownsamplePass(older_than, bucket_rows=bucket_rows, batch_rows=batch_rows)
    run_pass(job, conn, pause_seconds=pause_seconds)
    return {"removed_rows": job.removed_rows, "written_rollups": job.written_rollups}


#: The keys of a rollup returned by :func:`metric_rollups`.
ROLLUP_COLUMNS: Final = (
    "name",
    "first_row",
    "last_row",
    "first_step",
    "last_step",
    "start_ts",
    "end_ts",
    "count",
    "nan_count",
    "min",
    "max",
    "mean",
)


def check_rollup_names(metric_names: object) -> None:
    """``metric_names`` of :func:`metric_rollups`: a list of strings or ``None`` (TypeError otherwise)."""
    if metric_names is not None and (
        isinstance(metric_names, str) or not all(type(name) is str for name in metric_names)  # type: ignore[attr-defined]
    ):
        raise TypeError(f"metric_names must be a list of strings or None, got {metric_names!r}")


def metric_rollups(
    conn: sqlite3.Connection, run_id: str, metric_names: list[str] | None = None
) -> list[dict[str, Any]]:
    """The rollups of a run's downsampled metric rows, by metric then row.

    Args:
        conn: a connection to the store.
        run_id: the run.
        metric_names: only these metrics; ``None`` for all.

    Returns:
        One dict per rollup with the keys ``name``, ``first_row``,
        ``last_row``, ``first_step``, ``last_step``, ``start_ts``,
        ``end_ts`` (epoch seconds), ``count`` (values, NaN included),
        ``nan_count``, ``min``, ``max`` and ``mean`` (over the values that
        are not NaN; ``None`` when there are none, and ``mean`` also when
        both +Inf and -Inf were logged). Empty for a store before version 3.

    Raises:
        TypeError: a bad ``run_id`` or ``metric_names``.
        UnknownRunError: no run has this id.
    """
    check_run_id(run_id)
    check_rollup_names(metric_names)
    found = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if found is None:
        raise UnknownRunError(run_id)
    run = int(found[0])
    if "metric_rollups" not in table_names(conn):
        return []
    sql = f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM metric_rollups WHERE run = ?"
    params: list[Any] = [run]
    if metric_names is not None:
        sql += f" AND name IN ({', '.join('?' * len(metric_names))})"
        params.extend(metric_names)
    rows = conn.execute(sql + " ORDER BY name, first_row", params).fetchall()
    return [dict(zip(ROLLUP_COLUMNS, row, strict=True)) for row in rows]


def rollup_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """``get_metric_rollups``' DataFrame from the rows :func:`metric_rollups` gives (a remote reader
    rebuilds the same rows from the REST API, so both frames come from here)."""
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(ROLLUP_COLUMNS))
    for column in ("first_row", "last_row", "count", "nan_count"):
        frame[column] = frame[column].astype("int64")
    for column in ("first_step", "last_step"):
        frame[column] = frame[column].astype("Int64")
    for column in ("min", "max", "mean"):
        frame[column] = frame[column].astype("float64")
    for old, new in (("start_ts", "start_time"), ("end_ts", "end_time")):
        frame[new] = pd.to_datetime(frame.pop(old).astype("float64"), unit="s", utc=True).astype("datetime64[ns, UTC]")
    columns = ["name", "first_row", "last_row", "first_step", "last_step", "start_time", "end_time"]
    return frame[columns + ["count", "nan_count", "min", "max", "mean"]]
