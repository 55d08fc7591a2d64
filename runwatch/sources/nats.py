"""The ``nats`` source: batches from the scale-out bus (NATS JetStream, docs/scale.md).

Purpose: a worker's intake, or a serve node's live feed. Status: beta.
Delivery: exactly once into the store (with the ``postgres`` sink).
Egress: batch. State: stateful (partition leases).

``stream = "ingest"`` (``runwatch worker``): the worker owns some of the
bus's partitions — an even share of them among the live workers — by lease
(``runwatch_leases`` bucket; the lease's revision is its fencing token). For
each owned partition it fetches the messages of the partition's durable pull
consumer in stream order, and sends each as its events followed by an ingest
receipt, so the store sink commits the batch with its key. Only once the
store reports the key committed is the message acknowledged; a message at or
below the partition's committed sequence, or already in flight, is not sent
again. It offers the store sink the fences of each batch
(:data:`~runwatch.sinks.postgres.FENCES`) and the liveness stage the runs it
owns (:data:`~runwatch.stages.liveness.RUN_OWNERSHIP`).

Taking a partition over: create its lease key (fails while another worker
holds it), record the token in the store (:meth:`PostgresStore.claim_partition
<runwatch.store.postgres.PostgresStore.claim_partition>`: from then on the
previous owner's writes are fenced out) and read the partition's committed
sequence in the same statement, purge the stream's messages of the partition
up to it (committed, not yet acknowledged by a dead owner), and recreate the
partition's consumer: the uncommitted messages come first, in order, at once.
A lease that cannot be renewed (taken over, or unreachable past its TTL) is
given up: the partition's fetching stops and what was in flight is forgotten
(its writes are fenced out; the next owner gets the messages again).
Partitions beyond the worker's share are released once nothing of them is in
flight. On stop, leases are released after the pipeline has drained, so
another worker takes the partitions at once.

``stream = "live"`` (``runwatch serve --bus``): follows the live stream from
now with an ordered consumer and feeds every message to the websocket hub
with its sequence (the cursor of websocket resumes); offers the hub
:data:`~runwatch.sinks.websocket.LIVE_FEED` to read older sequences back.

Statistics: ``partitions`` (owned: token, committed sequence, in flight,
pending in the stream), ``fetched_messages``, ``skipped_messages``
(committed already or in flight), ``acknowledged_messages``,
``invalid_messages``, ``leases_taken``, ``leases_lost``, ``leases_released``,
``fetched_images`` (image bytes read from the object store, where the serve
node put them: see :mod:`runwatch.sinks.nats`), ``missing_images`` (images
whose object was gone, or held other bytes: the batch is stored without
them, counted, logged). A message's objects are removed once the message is
acknowledged. The live feed carries no image (its bytes are in no message):
subscribers see an image once it is stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import (
    APIError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ObjectDeletedError,
    ObjectNotFoundError,
)
from pydantic import Field

from ..bus.partitions import Owned, Ownership
from ..bus.streams import LEASES_BUCKET, LIVE_STREAM, MEDIA_BUCKET, WORKERS_BUCKET, connect, ensure_bus
from ..events import IngestReceipt
from ..exceptions import ConfigError, WireError
from ..pipeline.component import ComponentContext, Source
from ..pipeline.component import Options as BaseOptions
from ..sinks.nats import BusOptions, bus_layout
from ..sinks.postgres import FENCES
from ..sinks.websocket import LIVE_FEED, LIVE_HUB
from ..stages.liveness import RUN_OWNERSHIP
from ..store.postgres.writer import Fence
from ..wire.bus import (
    LIVE_PREFIX,
    PendingImage,
    decode_batch,
    image_blob_names,
    partition_of,
    with_image_bytes,
)

__all__ = ["NatsSource"]

logger = logging.getLogger("runwatch.bus")

#: What a bus call may meet while a server is lost or a stream elects a leader: worth trying again.
_TRANSIENT: Final = (NatsError, APIError, TimeoutError, OSError)
#: The most live-stream messages a websocket resume reads back.
MAX_READ_BACK_MESSAGES: Final = 10_000


class FetchOptions(BaseOptions):
    """How a partition's messages are fetched.

    Attributes:
        max_messages: messages per fetch.
        timeout_seconds: how long a fetch waits for messages.
    """

    max_messages: int = Field(100, ge=1, le=10_000)
    timeout_seconds: float = Field(1.0, gt=0, le=30)


class NatsSource(Source):
    """Batches from the bus: a worker's partitions, or a serve node's live feed (see the module docs).

    Options (beside :class:`~runwatch.sinks.nats.BusOptions`):
        stream: ``ingest`` (a worker) or ``live`` (a serve node's websocket hub).
        name: this worker's name (default ``<host>:<pid>``): recorded with its leases and tokens.
        fetch: ``max_messages`` and ``timeout_seconds`` of each fetch.
        ack_wait_seconds: how long JetStream waits for a fetched message's acknowledgement
            before delivering it again (longer than a commit takes).
        max_in_flight_messages: messages of one partition sent and not yet committed; fetching
            pauses there.
    """

    emits_receipts = True

    class Options(BusOptions):
        stream: Literal["ingest", "live"] = "ingest"
        name: str | None = Field(None, min_length=1, max_length=200)
        fetch: FetchOptions = FetchOptions.model_validate({})
        ack_wait_seconds: float = Field(30.0, gt=0, le=3600)
        max_in_flight_messages: int = Field(1_000, ge=1)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.layout = bus_layout(options)
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}"
        # Key-value keys allow few characters: the worker's presence key is its name's hash.
        self._presence_key = "w" + hashlib.blake2b(self.name.encode(), digest_size=8).hexdigest()
        self.ownership = Ownership(self.layout.partitions, self.name)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._media: Any = None  # the object store of images' bytes
        self._blobs_of: dict[str, list[str]] = {}  # a delivered message (its reply subject) → its images' objects
        self.fetched_images = 0
        self.missing_images = 0
        self._leases: Any = None
        self._workers: Any = None
        self._to_ack: list[Msg] = []
        self._ack_wanted = anyio.Event()
        self._committed_wake = anyio.Event()
        self._send_lock = anyio.Lock()
        self._tasks: Any = None
        self._renewed_at: dict[int, float] = {}
        self._partition_of: dict[str, int] = {}
        self._stopping = False
        self.fetched_messages = 0
        self.skipped_messages = 0
        self.acknowledged_messages = 0
        self.invalid_messages = 0
        self.leases_taken = 0
        self.leases_lost = 0
        self.leases_released = 0
        self.live_messages = 0
        self.last_error: str | None = None
        if options.stream == "ingest":
            context.services.provide(FENCES, self)
            context.services.provide(RUN_OWNERSHIP, self)
            context.receipts.listen(self._receipts_committed)
        else:
            context.services.provide(LIVE_FEED, self)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.options.stream == "ingest":
            store = self.context.store
            if not hasattr(store, "claim_partition"):
                raise ConfigError(
                    f"sources.{self.id}", "a worker's bus source needs a PostgreSQL store (--store postgresql://…)"
                )
            await anyio.to_thread.run_sync(store.prepare)  # the partition owners' table
        self._client = await connect(self.options.urls, name=f"runwatch {self.id} {self.name}")
        self._js = self._client.jetstream(timeout=5.0)
        await ensure_bus(self._js, self.layout, leases=self.options.stream == "ingest")
        if self.options.stream == "ingest":
            # Lease calls answer within a fraction of the TTL, or count as failed: a round never outlasts it.
            leasing = self._client.jetstream(timeout=min(5.0, self.layout.lease_ttl_seconds / 4))
            self._leases = await leasing.key_value(LEASES_BUCKET)
            self._workers = await leasing.key_value(WORKERS_BUCKET)
            self._media = await self._js.object_store(MEDIA_BUCKET)

    async def run(self, stopping: anyio.Event) -> None:
        if self.options.stream == "live":
            await self._follow_live(stopping)
            return
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            tasks.start_soon(self._acknowledge, name=f"runwatch {self.id} acks")
            tasks.start_soon(self._manage_leases, stopping, name=f"runwatch {self.id} leases")
            await stopping.wait()
            self._stopping = True
            tasks.cancel_scope.cancel()

    async def aclose(self) -> None:
        """After the pipeline drained: acknowledge what was committed, give the leases up, disconnect."""
        client, self._client = self._client, None
        if client is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            if self.options.stream == "ingest":
                await self._ack_pending()
                for partition in list(self.ownership.owned):
                    await self._release(partition)
                with contextlib.suppress(*_TRANSIENT):
                    await self._workers.delete(self._presence_key)
            await client.drain()

    # -- leases ---------------------------------------------------------------------------------

    async def _manage_leases(self, stopping: anyio.Event) -> None:
        """Every third of the lease TTL: renew, announce this worker, release extras, claim a fair share."""
        interval = self.layout.lease_ttl_seconds / 3
        while not stopping.is_set():
            try:
                await self._renew()
                await self._workers.put(self._presence_key, self.name.encode())
                live = await self._live_workers()
                await self._rebalance(live)
            except _TRANSIENT as exc:
                self._trouble(exc)
                self._give_up_stale()
            with anyio.move_on_after(interval):
                await stopping.wait()

    async def _live_workers(self) -> int:
        try:
            return len(await self._workers.keys())
        except NoKeysError:
            return 1

    async def _renew(self) -> None:
        for partition, owned in list(self.ownership.owned.items()):
            try:
                token = await self._leases.update(f"p{partition}", self.name.encode(), last=owned.token)
            except (KeyWrongLastSequenceError, NotFoundError):
                self._lose(partition, "taken over or expired")
                continue
            except _TRANSIENT as exc:
                self._trouble(exc)
                continue
            self.ownership.renewed(partition, token)
            self._renewed_at[partition] = time.monotonic()
        self._give_up_stale()

    def _give_up_stale(self) -> None:
        """A lease not renewed within its TTL may be another worker's by now: stop using it."""
        now = time.monotonic()
        for partition in list(self.ownership.owned):
            if now - self._renewed_at.get(partition, now) > self.layout.lease_ttl_seconds:
                self._lose(partition, "not renewed within its TTL")

    async def _rebalance(self, live: int) -> None:
        for partition in self.ownership.to_release(live):
            self.ownership.owned[partition].releasing = True
        for partition, owned in list(self.ownership.owned.items()):
            if owned.releasing and not owned.in_flight:
                await self._release(partition)
        if any(owned.releasing for owned in self.ownership.owned.values()):
            return  # give up the extras first, then look for free ones
        held = await self._held_by_others()
        free = [p for p in range(self.layout.partitions) if p not in held and p not in self.ownership.owned]
        random.shuffle(free)  # workers starting together try different partitions first
        for partition in self.ownership.to_claim(live, free):
            await self._claim(partition)

    async def _held_by_others(self) -> set[int]:
        """The partitions whose lease another worker holds now."""
        try:
            keys = await self._leases.keys()
        except NoKeysError:
            return set()
        held = set()
        for key in keys:
            if not key.startswith("p"):
                continue
            try:
                entry = await self._leases.get(key)
            except NotFoundError:  # expired or released since it was listed
                continue
            if entry.value != self.name.encode():
                held.add(int(key[1:]))
        return held

    async def _claim(self, partition: int) -> None:
        """Take ``partition`` over (see the module docs); nothing happens if another worker is quicker.

        A lease still in this worker's name that it gave up (a renewal whose answer was lost while a
        NATS server failed over) is taken back under its current revision, as a takeover like any other.
        """
        js = self._js
        assert js is not None and self._tasks is not None
        key = f"p{partition}"
        try:
            token = await self._leases.create(key, self.name.encode())
        except KeyWrongLastSequenceError:
            try:
                entry = await self._leases.get(key)
                if entry.value != self.name.encode():
                    return  # claimed meanwhile
                token = await self._leases.update(key, self.name.encode(), last=entry.revision)
            except (KeyWrongLastSequenceError, NotFoundError):
                return
        store: Any = self.context.store
        committed = await anyio.to_thread.run_sync(store.claim_partition, partition, token, self.name)
        if committed is None:  # a newer token is stored: this lease is stale already
            with contextlib.suppress(*_TRANSIENT):
                await self._leases.delete(key, last=token)
            return
        stream = self.layout.stream_of(partition)
        subject = self.layout.partition_subject(partition)
        if committed > 0:  # committed, maybe not acknowledged by a dead owner: never delivered again
            await js.purge_stream(stream, seq=committed + 1, subject=subject)
        durable = f"writer-p{partition}"
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, durable)
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.options.ack_wait_seconds,
            max_ack_pending=max(self.options.max_in_flight_messages, self.options.fetch.max_messages) * 2,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=subject,
        )
        subscription = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
        owned = self.ownership.acquired(partition, token, committed)
        self._renewed_at[partition] = time.monotonic()
        self.leases_taken += 1
        logger.info("runwatch: %s took partition %d (token %d, committed %d)", self.name, partition, token, committed)
        self._tasks.start_soon(self._consume, owned, subscription, name=f"runwatch {self.id} p{partition}")

    async def _release(self, partition: int) -> None:
        owned = self.ownership.owned.get(partition)
        if owned is None:
            return
        self.ownership.lost(partition)
        self._renewed_at.pop(partition, None)
        self.leases_released += 1
        with contextlib.suppress(*_TRANSIENT):
            await self._leases.delete(f"p{partition}", last=owned.token)

    def _lose(self, partition: int, reason: str) -> None:
        if partition in self.ownership.owned:
            forgotten = self.ownership.lost(partition)
            self._renewed_at.pop(partition, None)
            self.leases_lost += 1
            logger.warning(
                "runwatch: %s lost partition %d (%s); %d message(s) in flight left to its next owner",
                self.name,
                partition,
                reason,
                len(forgotten),
            )

    # -- consuming ------------------------------------------------------------------------------

    async def _consume(self, owned: Owned, subscription: Any) -> None:
        """Fetch one partition's messages in order while this worker owns it."""
        ownership = self.ownership
        partition = owned.partition
        options = self.options
        backoff = 0.05
        try:
            while ownership.owned.get(partition) is owned and not owned.releasing:
                if len(owned.in_flight) >= options.max_in_flight_messages:
                    self._committed_wake = anyio.Event()
                    with anyio.move_on_after(1.0):
                        await self._committed_wake.wait()
                    continue
                try:
                    messages = await subscription.fetch(
                        options.fetch.max_messages, timeout=options.fetch.timeout_seconds
                    )
                except TimeoutError:
                    owned.pending_messages = 0  # nothing left: caught up
                    continue
                except _TRANSIENT as exc:
                    self._trouble(exc)
                    await anyio.sleep(backoff)
                    backoff = min(1.0, backoff * 2)
                    continue
                backoff = 0.05
                for message in messages:
                    if ownership.owned.get(partition) is not owned:
                        return  # lost meanwhile: the rest is the next owner's
                    await self._take(owned, message)
        finally:
            with contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()

    async def _take(self, owned: Owned, message: Msg) -> None:
        self.fetched_messages += 1
        metadata = message.metadata
        seq = metadata.sequence.stream
        owned.pending_messages = metadata.num_pending
        try:
            batch = decode_batch(message.data)
        except WireError as exc:
            self.invalid_messages += 1
            self.last_error = f"invalid message {seq} on {message.subject}: {exc}"
            logger.error("runwatch: %s: %s (dropped)", self.id, self.last_error)
            await message.term()  # never delivered again: no code of this version can read it
            return
        key = (batch.run_id, batch.batch_id)
        if not self.ownership.admit(owned.partition, seq, key, message):
            self.skipped_messages += 1
            if seq <= owned.committed_seq:
                await message.ack()  # stored already: an acknowledgement that was lost
            return
        names = image_blob_names(batch)
        if names:
            blobs = await self._fetch_images(owned, names)
            if blobs is None:
                return  # the partition was lost meanwhile: the next owner gets the message again
            batch, missing = with_image_bytes(batch, blobs)
            self.fetched_images += len(blobs)
            if missing:
                self.missing_images += missing
                logger.error(
                    "runwatch: %s: %d image(s) of batch %r of run %r have no bytes in the object store; stored"
                    " without them",
                    self.id,
                    missing,
                    batch.batch_id,
                    batch.run_id,
                )
            self._blobs_of[message.reply] = names
        receipt = IngestReceipt(batch.run_id, batch.received_at, batch.batch_id, len(batch.events), batch.digest)
        async with self._send_lock:  # partitions interleave whole batches, never parts of one
            await self.output.send([*batch.events, receipt])

    async def _fetch_images(self, owned: Owned, names: list[str]) -> dict[str, bytes] | None:
        """The bytes of a message's images by object name (those that exist), retried while the store is
        away; ``None`` once the partition is no longer this worker's."""
        blobs: dict[str, bytes] = {}
        backoff = 0.05
        for name in names:
            while True:
                if self.ownership.owned.get(owned.partition) is not owned:
                    return None
                try:
                    result = await self._media.get(name)
                except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
                    break  # gone: counted by the caller
                except _TRANSIENT as exc:
                    self._trouble(exc)
                    await anyio.sleep(backoff)
                    backoff = min(1.0, backoff * 2)
                    continue
                if result.data:
                    blobs[name] = result.data
                break
        return blobs

    def _receipts_committed(self, keys: list[tuple[str, str]]) -> None:
        done = self.ownership.committed(keys)
        if done:
            self._to_ack.extend(done)
            self._ack_wanted.set()
            self._committed_wake.set()

    async def _acknowledge(self) -> None:
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted = anyio.Event()
            await self._ack_pending()

    async def _ack_pending(self) -> None:
        pending, self._to_ack = self._to_ack, []
        for message in pending:
            try:
                await message.ack()  # a lost acknowledgement: a redelivery, skipped as committed
            except _TRANSIENT as exc:
                self._trouble(exc)
                continue
            self.acknowledged_messages += 1
            for name in self._blobs_of.pop(message.reply, ()):
                try:  # stored: the bytes are the store's now (a leftover object only takes space)
                    await self._media.delete(name)
                except (ObjectNotFoundError, ObjectDeletedError, NotFoundError):
                    pass
                except _TRANSIENT as exc:
                    self._trouble(exc)

    # -- what the store sink and the liveness stage ask ----------------------------------------------

    def fences(self, batch: Sequence[Any]) -> list[Fence]:
        """The fences of a batch: per partition, this worker's token for it (0 if not owned) and the
        highest stream sequence of its messages in the batch."""
        runs: dict[int, set[str]] = {}
        for run_id in {event.run_id for event in batch}:
            runs.setdefault(self._partition(run_id), set()).add(run_id)
        seqs: dict[int, int] = {}
        for receipt in [event for event in batch if type(event) is IngestReceipt]:
            found = self.ownership.in_flight_seq((receipt.run_id, receipt.batch_id))
            if found is not None and found[1] > seqs.get(found[0], 0):
                seqs[found[0]] = found[1]
        return [
            Fence(partition, self.ownership.token_of(partition), self.name, seqs.get(partition), frozenset(run_ids))
            for partition, run_ids in runs.items()
        ]

    @property
    def generation(self) -> int:
        return self.ownership.generation

    def owns(self, run_id: str) -> bool:
        return self._partition(run_id) in self.ownership.owned

    def caught_up(self) -> bool:
        return all(owned.pending_messages == 0 for owned in self.ownership.owned.values())

    def _partition(self, run_id: str) -> int:
        partition = self._partition_of.get(run_id)
        if partition is None:
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            partition = self._partition_of[run_id] = partition_of(run_id, self.layout.partitions)
        return partition

    # -- the live feed (serve) ----------------------------------------------------------------------

    async def _follow_live(self, stopping: anyio.Event) -> None:
        """Feed every live message from now on to the websocket hub, with its sequence."""
        hub = self.context.services.get(LIVE_HUB)
        js = self._js
        assert js is not None
        if hub is None:
            raise ConfigError(f"sources.{self.id}", "a live bus source needs a websocket_hub sink in the graph")
        subscription = await js.subscribe(
            f"{LIVE_PREFIX}.*", stream=LIVE_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        try:
            with anyio.CancelScope() as scope:

                async def stop() -> None:
                    await stopping.wait()
                    scope.cancel()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(stop)
                    async for message in subscription.messages:
                        self._feed(hub, message)
                        if subscription.pending_msgs == 0:
                            # Caught up: out now rather than at the hub's next tick (a burst still
                            # goes out as one message per filter, at the end of the burst or the tick).
                            hub.publish()
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()

    def _feed(self, hub: Any, message: Msg) -> None:
        try:
            batch = decode_batch(message.data)
        except WireError as exc:
            self.invalid_messages += 1
            self.last_error = f"invalid live message on {message.subject}: {exc}"
            return
        self.live_messages += 1
        events = [event for event in batch.events if type(event) is not PendingImage]  # no bytes: not live
        hub.feed(events, message.metadata.sequence.stream)

    async def read_range(self, after: int, through: int) -> list[Any] | None:
        """The live stream's events after ``after`` up to ``through`` (see
        :class:`~runwatch.sinks.websocket.LiveFeed`)."""
        js = self._js
        if js is None or through <= after:
            return [] if js is not None else None
        if through - after > MAX_READ_BACK_MESSAGES:
            return None
        info = await js.stream_info(LIVE_STREAM)
        if info.state.first_seq > after + 1:
            return None  # the stream no longer holds the first of them: the cursor expired
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)
        subscription = await js.subscribe(f"{LIVE_PREFIX}.*", stream=LIVE_STREAM, ordered_consumer=True, config=config)
        events: list[Any] = []
        try:
            with anyio.fail_after(10):
                async for message in subscription.messages:
                    seq = message.metadata.sequence.stream
                    if seq > through:
                        break
                    with contextlib.suppress(WireError):
                        events.extend(e for e in decode_batch(message.data).events if type(e) is not PendingImage)
                    if seq >= through:
                        break
        except TimeoutError:
            return None
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(*_TRANSIENT):
                await subscription.unsubscribe()
        return events

    # -- statistics -----------------------------------------------------------------------------

    def _trouble(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.debug("runwatch: %s: %s", self.id, self.last_error)

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "stream": self.options.stream,
            "fetched_messages": self.fetched_messages,
            "skipped_messages": self.skipped_messages,
            "acknowledged_messages": self.acknowledged_messages,
            "invalid_messages": self.invalid_messages,
            "fetched_images": self.fetched_images,
            "missing_images": self.missing_images,
            "last_error": self.last_error,
        }
        if self.options.stream == "live":
            stats["live_messages"] = self.live_messages
            return stats
        stats.update(
            worker=self.name,
            leases_taken=self.leases_taken,
            leases_lost=self.leases_lost,
            leases_released=self.leases_released,
            partitions={
                str(partition): {
                    "token": owned.token,
                    "committed_seq": owned.committed_seq,
                    "in_flight": len(owned.in_flight),
                    "pending": owned.pending_messages,
                }
                for partition, owned in sorted(self.ownership.owned.items())
            },
        )
        return stats
