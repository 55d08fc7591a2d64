"""The PostgreSQL store's one write path: each batch the store sink hands over, in one transaction.

:class:`PostgresWriter` owns one asyncpg connection on the pipeline's event
loop. A transaction, in order:

1. **Fencing** (when a :class:`FenceProvider` is set: the scale-out worker's
   bus source). For each partition of the bus the batch touches, ``UPDATE
   partition_owners SET token = $t, committed_seq = … WHERE partition = $p
   AND token <= $t``: the row lock orders this transaction against a
   takeover, and a writer whose lease was taken over (a newer token is
   stored) matches nothing. Its events for that partition are then left out
   (counted ``fenced_out``: the partition's new owner stores them) and the
   transaction starts again without them.
2. **Batch keys.** Each ingest receipt claims its key with ``INSERT … ON
   CONFLICT DO NOTHING RETURNING``; the events of a batch whose key was
   already stored (a redelivered message, a producer's retry after the
   bus's duplicate window) are left out, so nothing is stored twice. A
   receipt closes the events sent before it since the previous receipt (the
   bus source sends each message as its events followed by its receipt).
3. The rows: runs created as needed, events and state patches with
   ``COPY`` (binary), metric statistics and run updates with one set-based
   statement each (``unnest``). The same
   :class:`~runwatch.store.encode.BatchEncoder` as the SQLite store's
   encodes them, so both stores hold the same values.
4. Metrics in columnar chunks, as in the SQLite store (docs/store.md): the
   batch's calls become columns, a :class:`~runwatch.store.series.SeriesBuilder`
   appends them to each series' open chunk and plans what the transaction
   writes (sealed chunks, a segment of each open chunk), and
   :class:`~.chunks.PostgresChunkWriter` stores it; a run's open chunks seal
   in the transaction that stores its end. A run this writer writes for the
   first time has the open chunks a previous writer left unsealed adopted
   (a worker that died, or a partition that moved). A failed transaction
   rolls the builder back to where it was before the batch.

The positions of logging calls, events and state patches are store-wide,
one block per stream and transaction (:func:`.schema.take_positions`), so
with a :class:`~runwatch.store.ledger.CommitLedger` each transaction notes
the ranges it writes, and the heartbeats it leaves on run rows, before it
commits (this process's live tail skips them). Each transaction ends with
a ``NOTIFY`` on :data:`COMMITS_CHANNEL`, which tells a tail that something
was committed.

Images and histograms are written in the same transaction, with the same
rules as the SQLite store's (:mod:`runwatch.store.media`): each content once
in ``media_blobs``, a run's images within ``max_image_bytes_per_run`` (each
content counted once per run; refused past it, counted in
:meth:`PostgresWriter.counters`, logged once).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

import anyio
import asyncpg
import orjson

from ...events import ImageEvent, IngestReceipt
from ...exceptions import StoreUnavailable
from ..base import StoreWriter
from ..encode import BatchEncoder, EncodedBatch, metric_stats, runs_with_state_patches
from ..ledger import CommitLedger, LedgerEntry
from ..media import MediaTotals, MediaWriteOutcome, histogram_rows
from ..queries.media import HISTOGRAM_FIELDS
from ..series import BuilderSavepoint, ChunkWrites, SeriesBuilder, group_calls
from .chunks import PostgresChunkWriter, adopt_open_chunks
from .connection import connect, redact_dsn, store_trouble
from .schema import migrate, take_positions

__all__ = ["COMMITS_CHANNEL", "Fence", "FenceProvider", "PostgresWriter"]

logger = logging.getLogger("runwatch.store")

#: The channel every write transaction notifies when it commits (a live tail listens to it).
COMMITS_CHANNEL: Final = "runwatch_commits"


class Fence(NamedTuple):
    """What a transaction writing part of one bus partition must prove first.

    Attributes:
        partition: the partition.
        token: the writer's fencing token for it (its lease's latest revision).
        owner: the writer's name, recorded with the token.
        committed_seq: the highest stream sequence of the partition the
            transaction's batches came from (``None``: none; the stored one stays).
        run_ids: the runs of the batch in this partition: what is left out when
            the fence does not hold.
    """

    partition: int
    token: int
    owner: str
    committed_seq: int | None
    run_ids: frozenset[str]


class FenceProvider(Protocol):
    """Gives the fences of a batch (implemented by the bus source of a worker)."""

    def fences(self, batch: Sequence[Any]) -> list[Fence]:
        """The fences covering every event of ``batch``, one per partition and token."""


_UPDATE_RUNS: Final = """
UPDATE runs SET
    status = CASE
        WHEN u.status IS NOT NULL THEN u.status
        WHEN u.liveness IS NOT NULL AND runs.status IN ('running', 'hung', 'crashed') THEN u.liveness
        ELSE runs.status END,
    kind = COALESCE(u.kind, runs.kind),
    end_time = CASE WHEN u.clear_end THEN NULL ELSE COALESCE(u.end_time, runs.end_time) END,
    config = COALESCE(u.config, runs.config),
    metadata = COALESCE(u.metadata, runs.metadata),
    final_reward = COALESCE(u.final_reward, runs.final_reward),
    updated_at = LEAST(GREATEST(runs.updated_at, u.updated_at), u.now),
    last_heartbeat = COALESCE(u.last_heartbeat, runs.last_heartbeat),
    total_steps = COALESCE(u.total_steps, runs.total_steps),
    total_episodes = COALESCE(u.total_episodes, runs.total_episodes),
    state = COALESCE(u.state, runs.state),
    owner = CASE WHEN u.status = 'running' THEN COALESCE(u.owner, runs.owner) ELSE runs.owner END
FROM unnest($1::bigint[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::text[],
            $9::text[], $10::float8[], $11::float8[], $12::float8[], $13::bigint[], $14::bigint[], $15::text[],
            $16::text[], $17::float8[])
    AS u(id, run_id, clear_end, status, liveness, kind, end_time, config, metadata, final_reward, updated_at,
         last_heartbeat, total_steps, total_episodes, state, owner, now)
WHERE runs.id = u.id AND runs.run_id = u.run_id
RETURNING runs.id
"""
# As the SQLite writer's statement: a lifecycle status always applies, a liveness verdict only to a
# live run; a (re)started run takes its owner; updated_at never passes the commit time; a row id
# cached for a run that cleanup removed matches no row (the transaction then starts again).

_UPSERT_METRIC_STATS: Final = """
INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts, last_step)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[], $6::float8[],
                     $7::float8[], $8::float8[], $9::float8[], $10::bigint[])
ON CONFLICT (run, name) DO UPDATE SET
    count = metric_stats.count + excluded.count,
    nan_count = metric_stats.nan_count + excluded.nan_count,
    -- A NULL sum beside non-NaN values means the sum is NaN (+Inf plus -Inf): it stays NaN.
    sum = CASE
        WHEN (metric_stats.count > metric_stats.nan_count AND metric_stats.sum IS NULL)
          OR (excluded.count > excluded.nan_count AND excluded.sum IS NULL) THEN NULL
        WHEN metric_stats.sum IS NULL THEN excluded.sum
        WHEN excluded.sum IS NULL THEN metric_stats.sum
        ELSE metric_stats.sum + excluded.sum END,
    min = LEAST(metric_stats.min, excluded.min),
    max = GREATEST(metric_stats.max, excluded.max),
    last = excluded.last, last_ts = excluded.last_ts, last_step = excluded.last_step
"""

_FENCE: Final = """
UPDATE partition_owners SET token = $2, owner = $3, committed_seq = GREATEST(committed_seq, COALESCE($4, 0))
WHERE partition = $1 AND token <= $2
RETURNING partition
"""

_CLAIM_RECEIPTS: Final = """
INSERT INTO ingest_batches (scope, batch_id, digest, received_at, events)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bigint[])
ON CONFLICT (scope, batch_id) DO NOTHING
RETURNING scope, batch_id
"""

_EVENT_COLUMNS: Final = ("id", "run", "ts", "kind", "type", "level", "data", "detail")
_STATE_COLUMNS: Final = ("id", "run", "ts", "patch", "detail")
_IMAGE_COLUMNS: Final = ("run", "name", "step", "ts", "digest", "width", "height", "caption")
_HISTOGRAM_COLUMNS: Final = ("run", *HISTOGRAM_FIELDS)
_FLOAT_OF: Final = {"inf": float("inf"), "-inf": float("-inf")}


class PostgresWriter(StoreWriter):
    """Writes batches of events into a PostgreSQL store, one transaction each (see the module docs).

    Args:
        dsn: the store's URL.
        owner: ``host:pid:start-time`` of this process: the owner of the runs it starts.
        max_image_bytes_per_run: a run's image budget in bytes (``None``: none).
        fences: gives the bus fences of each batch (``None``: no fencing).
    """

    def __init__(
        self,
        dsn: str,
        owner: str,
        *,
        max_image_bytes_per_run: int | None = None,
        fences: FenceProvider | None = None,
    ) -> None:
        self.dsn = dsn
        self.location = redact_dsn(dsn)
        self.fences = fences
        self._owner = owner
        self._max_image_bytes_per_run = max_image_bytes_per_run
        self._media = MediaTotals(max_image_bytes_per_run)  # committed image and histogram counters
        self._connection: asyncpg.Connection | None = None
        self._opened = False
        self._encoder = BatchEncoder()
        self._run_ids: dict[str, int] = {}
        #: the open chunks of every series this writer writes (see the module docs)
        self.builder = SeriesBuilder()
        self._chunks = PostgresChunkWriter()
        self._taken_over: set[int] = set()  # runs whose unsealed chunks this writer has adopted
        #: Events left out because their partition's fence did not hold (a newer owner stores them).
        self.fenced_out_events = 0
        #: Events left out because their batch key was already stored.
        self.duplicate_events = 0

    async def open(self) -> None:
        connection = await connect(self.dsn)
        try:
            await migrate(connection)
        except BaseException:
            await _close(connection)
            raise
        self._connection = connection
        self._opened = True

    async def aclose(self) -> None:
        self._opened = False
        connection, self._connection = self._connection, None
        if connection is not None:
            with anyio.CancelScope(shield=True):
                await _close(connection)

    async def write(self, batch: Sequence[Any], *, ledger: CommitLedger | None = None) -> list[tuple[str, str]]:
        if not self._opened:
            raise StoreUnavailable(f"the writer of {self.location!r} is not open")
        try:
            connection = await self._connected()
            try:
                return await self._write_fenced(connection, list(batch), ledger)
            except _StaleRunIds:
                # Runs were removed (``runwatch cleanup``) since their ids were cached: create them anew.
                self._forget_store()
                return await self._write_fenced(connection, list(batch), ledger)
        except Exception as exc:
            if store_trouble(exc):  # unreachable, restarted, conflict...: the batch may be written again later
                if self._connection is not None and self._connection.is_closed():
                    self._connection = None
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def _connected(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = None
            self._connection = await connect(self.dsn)
            self._forget_store()  # a restored or recreated store may have other row ids
        return self._connection

    def _forget_store(self) -> None:
        """Forget run and series ids and open chunks: they are read again (open chunks adopted from their
        segments, every point of which was committed)."""
        self._run_ids.clear()
        self.builder = SeriesBuilder()
        self._chunks = PostgresChunkWriter()
        self._taken_over.clear()

    def unstorable(self, batch: Sequence[Any]) -> list[int]:
        return self._encoder.unstorable(batch)

    # -- one transaction ------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return self._media.counters()

    async def _write_fenced(
        self, connection: asyncpg.Connection, batch: list[Any], ledger: CommitLedger | None
    ) -> list[tuple[str, str]]:
        while True:
            fences = self.fences.fences(batch) if self.fences is not None else []
            try:
                return await self._transaction(connection, batch, fences, ledger)
            except _FencedOut as lost:
                left_out = lost.run_ids
                # Their new owner adopts their open chunks from the store: keep nothing of them here.
                moved = {self._run_ids[run_id] for run_id in left_out if run_id in self._run_ids}
                self.builder.forget_runs(moved)
                self._taken_over -= moved
                kept = [event for event in batch if event.run_id not in left_out]
                self.fenced_out_events += len(batch) - len(kept)
                batch = kept

    async def _transaction(
        self, connection: asyncpg.Connection, batch: list[Any], fences: list[Fence], ledger: CommitLedger | None
    ) -> list[tuple[str, str]]:
        transaction = connection.transaction()
        await transaction.start()
        new_runs: list[str] = []
        builder = self.builder
        savepoint: BuilderSavepoint | None = None
        writes: ChunkWrites | None = None
        taken_over = set(self._taken_over)
        entry = ledger.begin() if ledger is not None else None
        try:
            await self._check_fences(connection, fences)
            receipts, batch = await self._claim_batches(connection, batch)
            now = time.time()  # run times are capped at the commit (see BatchEncoder.encode)
            new_runs = await self._ensure_runs(connection, batch, now)
            state = await self._load_state(connection, batch)
            encoded = self._encoder.encode(batch, self._run_ids, state, now)
            savepoint = builder.savepoint()
            await self._take_over_runs(connection, encoded)
            await self._add_metrics(connection, encoded, entry)
            writes = builder.prepare(seal_runs=encoded.ending_runs)
            await self._chunks.write(connection, builder.series_keys(), writes)
            await self._execute(connection, encoded, now, entry)
            media = await self._write_media(connection, encoded)
            await connection.execute(f"NOTIFY {COMMITS_CHANNEL}")
            with anyio.CancelScope(shield=True):  # once sent, its outcome must be known: committed or not
                await transaction.commit()
            self._chunks.committed()
            if writes is not None:
                builder.confirm(writes)
            if encoded.ending_runs:  # sealed: nothing is kept per ended run (a resumed one is read anew)
                builder.forget_runs(encoded.ending_runs)
                self._chunks.series.forget_runs(encoded.ending_runs)
                self._taken_over -= encoded.ending_runs
            if media is not None:
                self._media.add(media)
            if entry is not None:
                assert ledger is not None
                ledger.settle(entry, committed=True)
            return receipts
        except BaseException:
            if entry is not None:
                assert ledger is not None
                ledger.settle(entry, committed=False)
            self._chunks.rolled_back()  # series created in this transaction are gone
            if writes is not None:
                builder.abort(writes)
            if savepoint is not None:  # the batch is written again (or left out): add it once
                builder.rollback(savepoint)
            self._taken_over = taken_over  # adopted rows are back in the store: adopt them again
            for run_id in new_runs:  # their rows were rolled back too
                self._run_ids.pop(run_id, None)
            if not connection.is_closed():
                with anyio.CancelScope(shield=True):
                    try:
                        await transaction.rollback()
                    except Exception:  # the transaction may already be gone with the connection
                        pass
            raise

    async def _check_fences(self, connection: asyncpg.Connection, fences: list[Fence]) -> None:
        lost: set[str] = set()
        # In partition order: two writers touching the same partitions take their row locks in one order.
        for fence in sorted(fences, key=lambda fence: (fence.partition, fence.token)):
            held = await connection.fetchval(_FENCE, fence.partition, fence.token, fence.owner, fence.committed_seq)
            if held is None:
                lost |= fence.run_ids
        if lost:
            raise _FencedOut(lost)

    async def _claim_batches(
        self, connection: asyncpg.Connection, batch: list[Any]
    ) -> tuple[list[tuple[str, str]], list[Any]]:
        """Claim each receipt's batch key; the keys, and the batch without the batches stored before."""
        receipts = [event for event in batch if type(event) is IngestReceipt]
        if not receipts:
            return [], batch
        rows = await connection.fetch(
            _CLAIM_RECEIPTS,
            [r.run_id for r in receipts],
            [r.batch_id for r in receipts],
            [r.digest for r in receipts],
            [r.timestamp for r in receipts],
            [r.events for r in receipts],
        )
        claimed = {(row["scope"], row["batch_id"]) for row in rows}
        keys = [(r.run_id, r.batch_id) for r in receipts]
        if len(claimed) == len(keys):  # every key new, none twice
            return keys, batch
        kept: list[Any] = []
        group: list[Any] = []
        for event in batch:
            if type(event) is IngestReceipt:
                if (event.run_id, event.batch_id) in claimed:
                    claimed.discard((event.run_id, event.batch_id))  # a second receipt of one key is a repeat
                    kept += group
                    kept.append(event)
                else:
                    self.duplicate_events += len(group)
                group = []
            else:
                group.append(event)
        kept += group  # events after the last receipt belong to no batch: always stored
        return keys, kept

    async def _ensure_runs(self, connection: asyncpg.Connection, batch: list[Any], now: float) -> list[str]:
        run_ids = self._run_ids
        missing = {event.run_id for event in batch} - run_ids.keys()
        if not missing:
            return []
        first_seen: dict[str, float] = {}
        for event in batch:
            if event.run_id in missing and event.run_id not in first_seen:
                first_seen[event.run_id] = min(event.timestamp, now)
        # No owner yet: a run is owned by whoever starts it (its lifecycle event sets the owner).
        names = list(first_seen)
        times = [first_seen[name] for name in names]
        await connection.execute(
            "INSERT INTO runs (run_id, start_time, updated_at)"
            " SELECT * FROM unnest($1::text[], $2::float8[], $2::float8[]) ON CONFLICT (run_id) DO NOTHING",
            names,
            times,
        )
        for row in await connection.fetch("SELECT run_id, id FROM runs WHERE run_id = ANY($1::text[])", names):
            run_ids[row["run_id"]] = row["id"]
        return sorted(missing)

    async def _load_state(self, connection: asyncpg.Connection, batch: list[Any]) -> dict[int, Any]:
        wanted = runs_with_state_patches(batch)
        if not wanted:
            return {}
        ids = [self._run_ids[run_id] for run_id in wanted]
        rows = await connection.fetch("SELECT id, state FROM runs WHERE id = ANY($1::bigint[])", ids)
        return {row["id"]: orjson.loads(row["state"]) for row in rows}

    async def _execute(
        self, connection: asyncpg.Connection, encoded: EncodedBatch, now: float, entry: LedgerEntry | None
    ) -> None:
        if encoded.event_rows is not None:
            rows = orjson.loads(encoded.event_rows)
            first = await take_positions(connection, "events", len(rows))
            # A log event's row has its detail as a 7th element; exceptions and alerts have none.
            event_records = [
                (
                    number,
                    run,
                    ts,
                    kind,
                    type_,
                    level,
                    orjson.dumps(data).decode(),
                    _detail_text(rest[0] if rest else None),
                )
                for number, (run, ts, kind, type_, level, data, *rest) in enumerate(rows, first)
            ]
            await connection.copy_records_to_table("events", records=event_records, columns=_EVENT_COLUMNS)
            if entry is not None:
                entry.ranges.append(("events", first, first + len(rows) - 1))
        if encoded.state_rows is not None:
            rows = orjson.loads(encoded.state_rows)
            first = await take_positions(connection, "state_history", len(rows))
            patches = [
                (number, run, ts, orjson.dumps(patch).decode(), _detail_text(rest[0] if rest else None))
                for number, (run, ts, patch, *rest) in enumerate(rows, first)
            ]
            await connection.copy_records_to_table("state_history", records=patches, columns=_STATE_COLUMNS)
            if entry is not None:
                entry.ranges.append(("state_history", first, first + len(rows) - 1))
        if encoded.run_updates:
            if entry is not None:
                entry.heartbeats.update(
                    (update.run_id, update.last_heartbeat)
                    for update in encoded.run_updates.values()
                    if update.last_heartbeat is not None
                )
            updated = await connection.fetch(_UPDATE_RUNS, *_update_columns(encoded, self._owner, now))
            if len(updated) != len(encoded.run_updates):  # a cached row id is gone, or now another run's
                raise _StaleRunIds

    async def _write_media(self, connection: asyncpg.Connection, encoded: EncodedBatch) -> MediaWriteOutcome | None:
        if not encoded.images and not encoded.histograms:
            return None
        outcome = MediaWriteOutcome()
        if encoded.images:
            await self._write_images(connection, encoded.images, outcome)
        if encoded.histograms:
            await connection.copy_records_to_table(
                "histograms", records=histogram_rows(self._run_ids, encoded.histograms), columns=_HISTOGRAM_COLUMNS
            )
            outcome.histograms_stored += len(encoded.histograms)
        return outcome

    async def _write_images(
        self, connection: asyncpg.Connection, images: list[ImageEvent], outcome: MediaWriteOutcome
    ) -> None:
        """The images of a batch, in order, each within its run's budget (the rules of :func:`..media.image_plan`)."""
        run_ids = self._run_ids
        runs = sorted({run_ids[event.run_id] for event in images})
        await connection.execute(
            "INSERT INTO media_usage (run) SELECT unnest($1::bigint[]) ON CONFLICT (run) DO NOTHING", runs
        )
        # Locked to the commit: the budget is spent in run order, whoever else writes the run.
        usage = {
            row["run"]: row["image_bytes"]
            for row in await connection.fetch(
                "SELECT run, image_bytes FROM media_usage WHERE run = ANY($1::bigint[]) ORDER BY run FOR UPDATE", runs
            )
        }
        held = {
            (row["run"], row["digest"])
            for row in await connection.fetch(
                "SELECT DISTINCT run, digest FROM images WHERE run = ANY($1::bigint[]) AND digest = ANY($2::text[])",
                runs,
                sorted({event.digest for event in images}),
            )
        }
        budget = self._max_image_bytes_per_run
        refused: dict[int, int] = defaultdict(int)
        blobs: dict[str, ImageEvent] = {}
        rows = []
        for event in images:
            run = run_ids[event.run_id]
            if (run, event.digest) not in held:
                size = len(event.data)
                if budget is not None and usage[run] + size > budget:
                    refused[run] += 1
                    outcome.images_over_budget += 1
                    if outcome.over_budget_runs is None:
                        outcome.over_budget_runs = set()
                    outcome.over_budget_runs.add(event.run_id)
                    continue
                usage[run] += size
                held.add((run, event.digest))
                blobs.setdefault(event.digest, event)
            rows.append(
                (run, event.name, event.step, event.timestamp, event.digest, event.width, event.height, event.caption)
            )
        if blobs:
            new = await connection.fetch(
                "INSERT INTO media_blobs (digest, mime, size, data)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])"
                " ON CONFLICT (digest) DO NOTHING RETURNING size",
                list(blobs),
                [event.mime for event in blobs.values()],
                [len(event.data) for event in blobs.values()],
                [bytes(event.data) for event in blobs.values()],
            )
            outcome.new_blob_bytes += sum(row["size"] for row in new)
        await connection.execute(
            "UPDATE media_usage SET image_bytes = u.bytes, images_over_budget = images_over_budget + u.refused"
            " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(run, bytes, refused)"
            " WHERE media_usage.run = u.run",
            runs,
            [usage[run] for run in runs],
            [refused.get(run, 0) for run in runs],
        )
        if rows:
            await connection.copy_records_to_table("images", records=rows, columns=_IMAGE_COLUMNS)
        outcome.images_stored += len(rows)

    async def _take_over_runs(self, connection: asyncpg.Connection, encoded: EncodedBatch) -> None:
        """Runs this writer writes for the first time: adopt the open chunks a previous writer left unsealed."""
        run_ids = self._run_ids
        runs = ({run_ids[call.run_id] for call in encoded.metric_calls} | encoded.ending_runs) - self._taken_over
        if runs:
            self._taken_over |= runs
            await adopt_open_chunks(connection, self.builder, runs)

    async def _add_metrics(
        self, connection: asyncpg.Connection, encoded: EncodedBatch, entry: LedgerEntry | None
    ) -> None:
        """Number the batch's logging calls store-wide, update their statistics, add them to open chunks."""
        calls = encoded.metric_calls
        if not calls:
            return
        first = await take_positions(connection, "metric_rows", len(calls))
        if entry is not None:
            entry.ranges.append(("metric_rows", first, first + len(calls) - 1))
        groups = group_calls(calls, self._run_ids, first)
        await connection.execute(_UPSERT_METRIC_STATS, *_stats_columns(metric_stats(groups)))
        self.builder.add_groups(groups)


def _detail_text(detail: Any) -> str | None:
    """An event's detail as stored: JSON text, or ``None`` for runwatch's own events."""
    return None if detail is None else orjson.dumps(detail).decode()


def _float(value: Any) -> float | None:
    """A JSON-carried statistic back to a float (``"inf"``/``"-inf"`` → ±Inf; ``None`` stays)."""
    return _FLOAT_OF[value] if type(value) is str else value


def _stats_columns(stats: list[list[Any]]) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for run, name, count, nan_count, total, low, high, last, last_ts, last_step in stats:
        for column, value in zip(
            columns,
            (run, name, count, nan_count, _float(total), _float(low), _float(high), _float(last), last_ts, last_step),
            strict=True,
        ):
            column.append(value)
    return columns


def _update_columns(encoded: EncodedBatch, owner: str, now: float) -> list[list[Any]]:
    columns: list[list[Any]] = [[] for _ in range(17)]
    for run, update in encoded.run_updates.items():
        values = update.row(run, owner, now)
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


async def _close(connection: asyncpg.Connection) -> None:
    try:
        with anyio.move_on_after(2):
            await connection.close()
    except Exception:  # the server may be gone: nothing to say goodbye to
        pass
    if not connection.is_closed():
        connection.terminate()


class _StaleRunIds(Exception):
    """A run row the writer's cache points to was deleted (or its id reused by another run)."""


class _FencedOut(Exception):
    """A partition's fence did not hold: its events must be left out."""

    def __init__(self, run_ids: set[str]) -> None:
        super().__init__(f"fenced out: {len(run_ids)} run(s)")
        self.run_ids = run_ids
