"""The ``nats`` sink: publishes batches to the scale-out bus (NATS JetStream, docs/scale.md).

Purpose: a serve node's way to the workers. Status: beta. Delivery:
exactly once (a batch is acknowledged only once JetStream has persisted it;
retries deduplicated by message id, and by batch key at the worker). Egress:
batch. State: stateless.

``stream = "ingest"`` (a serve node): every batch that reaches the sink (an
ingested batch with its receipt, or events of this process) becomes one
message per run on ``runwatch.ingest.<partition>.<run token>``, with
``Nats-Msg-Id`` from its batch key and content digest. The sink waits for
each message's PubAck — on an R3 stream, a quorum of replicas has it —
retrying with the same message id while a stream elects a leader, up to
``publish_timeout_seconds``; only then does it report the batch's receipt
committed, so ``/api/ingest`` answers 202 only for persisted batches. The
bytes of a message's images go first, into the bus's object store
(``runwatch_media``, chunked: an image of any size fits whatever the
servers' ``max_payload``), each under a name derived from the message's id
(:func:`~runwatch.wire.bus.image_blob_name`); the message carries the
images without their bytes, and is published only once they are stored. A
batch not persisted in time (or refused: the stream is full) is not
reported, and its producer gets 503 and retries. The messages of one run go
out in order; runs in parallel. Then each persisted message is published
(best effort, no wait) to the live stream ``runwatch.live.<run token>``,
where every serve node's websocket hub takes it.

``stream = "live"`` (a worker): events go to the live stream only — with
``events = "derived"``, only what the worker's stages derived (alerts,
liveness verdicts): the serve nodes published the rest already.

Example (what ``runwatch serve --bus`` builds)::

    [sinks.bus]
    type = "nats"
    inputs = ["ingest"]
    urls = ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
    partitions = 16
    publish_timeout_seconds = 5

Statistics: ``published_messages``, ``stored_images`` (objects put),
``duplicate_messages`` (JetStream had
them: a retry), ``publish_retries``, ``failed_batches``, ``live_messages``,
``live_failures`` (live messages that could not be handed to the client).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final, Literal

import anyio
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError
from pydantic import Field

from ..bus.streams import MEDIA_BUCKET, BusLayout, connect, ensure_bus
from ..events import AlertEvent, ImageEvent, IngestReceipt, LogEvent
from ..pipeline.component import ComponentContext, Sink
from ..pipeline.component import Options as BaseOptions
from ..store.encode import LIVENESS_STATUS
from ..wire.bus import encode_batch, image_blob_name, ingest_subject, live_subject, message_id

__all__ = ["BusOptions", "NatsSink", "bus_layout"]

logger = logging.getLogger("runwatch.bus")

#: What a publish may meet while a stream elects a leader or a server reconnects: worth retrying.
_RETRY: Final = (NatsError, NoStreamResponseError, ServiceUnavailableError, TimeoutError, OSError)
#: The first pause between two attempts of a publish (doubling up to a second).
_FIRST_BACKOFF_SECONDS: Final = 0.05


class BusOptions(BaseOptions):
    """Where the bus is and how it is laid out (every serve node and worker must agree).

    Attributes:
        urls: the NATS servers (any of a cluster's; the client finds the rest).
        partitions: partitions of the runs (fixed when the streams are created).
        streams: ingest streams the partitions are spread over.
        replicas: replicas of each stream (default: 3 when ``urls`` names at least 3 servers, else 1).
        max_bytes: the byte budget of each ingest stream: past it, publishes are refused (503).
        lease_ttl_seconds: how long a partition's lease outlives its last renewal (workers).
    """

    urls: list[str] = Field(min_length=1)
    partitions: int = Field(16, ge=1, le=4096)
    streams: int = Field(1, ge=1, le=64)
    replicas: int | None = Field(None, ge=1, le=5)
    max_bytes: int = Field(1 << 30, ge=1 << 20)
    lease_ttl_seconds: float = Field(15.0, gt=0, le=3600)


def bus_layout(options: BusOptions) -> BusLayout:
    """The :class:`~runwatch.bus.streams.BusLayout` that ``options`` describe."""
    replicas = options.replicas if options.replicas is not None else (3 if len(options.urls) >= 3 else 1)
    return BusLayout(
        partitions=options.partitions,
        streams=min(options.streams, options.partitions),
        replicas=replicas,
        max_bytes=options.max_bytes,
        lease_ttl_seconds=options.lease_ttl_seconds,
    )


class NatsSink(Sink):
    """Publishes batches to the bus (see the module docs).

    Options (beside :class:`BusOptions`):
        stream: ``ingest`` (a serve node) or ``live`` (a worker's derived events).
        events: with ``stream = "live"``: ``all``, or ``derived`` (alerts and liveness verdicts only).
        publish_timeout_seconds: how long one batch may take to be persisted, retries included.
    """

    takes_receipts = True  # a batch's receipt is reported once all its messages are persisted

    class Options(BusOptions):
        stream: Literal["ingest", "live"] = "ingest"
        events: Literal["all", "derived"] = "all"
        publish_timeout_seconds: float = Field(5.0, gt=0, le=300)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.layout = bus_layout(options)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._media: Any = None  # the object store of images' bytes
        self._node = uuid.uuid4().hex[:12]  # names this process's own batches (those without a producer's id)
        self._counter = 0
        self._dropped: dict[str, int] = {}
        self.published_messages = 0
        self.stored_images = 0
        self.duplicate_messages = 0
        self.publish_retries = 0
        self.failed_batches = 0
        self.live_messages = 0
        self.live_failures = 0
        self.last_error: str | None = None
        if options.stream == "ingest":
            context.receipts.add_recorder()

    async def start(self) -> None:
        self._client = await connect(self.options.urls, name=f"runwatch {self.id}")
        self._js = self._client.jetstream(timeout=min(2.0, self.options.publish_timeout_seconds))
        await ensure_bus(self._js, self.layout)
        if self.options.stream == "ingest":
            self._media = await self._js.object_store(MEDIA_BUCKET)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await client.drain()  # sends what is buffered (live publishes), then closes

    # -- writing --------------------------------------------------------------------------------

    async def write(self, batch: list[Any]) -> None:
        if self.options.stream == "live":
            await self._publish_live(self._chosen(batch))
            return
        groups = list(self._groups(batch))
        messages: dict[str, list[_Message]] = {}  # run → its messages, in order
        for index, (run_id, batch_id, digest, received_at, events, _) in enumerate(groups):
            for part_run, part in _by_run(events):
                part_id = batch_id if part_run == run_id else f"{batch_id}\x1f{run_id}"
                msg_id = message_id(part_run, part_id, digest)
                body = encode_batch(part_run, part_id, digest, received_at, part, msg_id=msg_id)
                subject = ingest_subject(part_run, self.layout.partitions)
                images = [event.data for event in part if type(event) is ImageEvent]
                blobs = [(image_blob_name(msg_id, n), data) for n, data in enumerate(images)]
                messages.setdefault(part_run, []).append((index, subject, body, msg_id, blobs))
        failed: set[int] = set()
        deadline = time.monotonic() + self.options.publish_timeout_seconds
        async with anyio.create_task_group() as tasks:
            for run_messages in messages.values():
                tasks.start_soon(self._publish_run, run_messages, deadline, failed)
        committed = []
        for index, (run_id, batch_id, _, _, events, receipt) in enumerate(groups):
            if index in failed:
                self.failed_batches += 1
                self._dropped["publish_failed"] = self._dropped.get("publish_failed", 0) + len(events)
            elif receipt is not None:
                committed.append((run_id, batch_id))
        if committed:
            self.context.receipts.committed(committed)
        for run_id, run_messages in messages.items():
            for index, _, body, _, _ in run_messages:
                if index not in failed:  # the same bytes: every serve node's hub decodes them once
                    await self._publish_live_body(live_subject(run_id), body)

    async def _publish_run(self, run_messages: list[_Message], deadline: float, failed: set[int]) -> None:
        """Publish one run's messages in order (each after its images' bytes); a message that fails fails
        the rest of its run too."""
        for position, (_, subject, body, msg_id, blobs) in enumerate(run_messages):
            if not await self._put_blobs(blobs, deadline) or not await self._publish(subject, body, msg_id, deadline):
                failed.update(entry[0] for entry in run_messages[position:])
                return

    async def _put_blobs(self, blobs: list[tuple[str, bytes]], deadline: float) -> bool:
        """Store a message's images' bytes, in order; whether all are stored."""
        for name, data in blobs:
            if not await self._put_blob(name, data, deadline):
                return False
        return True

    async def _put_blob(self, name: str, data: bytes, deadline: float) -> bool:
        """Store an image's bytes in the object store (retried) before ``deadline``; whether they are.

        Putting the same name again (a retried batch) stores the same bytes again: nothing changes.
        """
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                with anyio.fail_after(left):
                    await self._media.put(name, data)
            except (APIError, *_RETRY) as exc:
                self._failed(exc)
            else:
                self.stored_images += 1
                return True
            self.publish_retries += 1
            await anyio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(1.0, backoff * 2)

    async def _publish(self, subject: str, body: bytes, msg_id: str, deadline: float) -> bool:
        """One message until JetStream persisted it (retried with its id) or ``deadline``; whether it was."""
        js = self._js
        assert js is not None
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                ack = await js.publish(subject, body, timeout=min(left, 2.0), headers={"Nats-Msg-Id": msg_id})
            except APIError as exc:
                if not isinstance(exc, (NoStreamResponseError, ServiceUnavailableError)):
                    self._failed(exc)  # refused (the stream is full): no retry will change that soon
                    return False
                self._failed(exc)
            except _RETRY as exc:
                self._failed(exc)
            else:
                self.published_messages += 1
                if ack.duplicate:
                    self.duplicate_messages += 1
                return True
            self.publish_retries += 1
            await anyio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(1.0, backoff * 2)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.publish_retries & (self.publish_retries - 1) == 0:  # 1, 2, 4...: no log storm
            logger.warning("runwatch: %s: publishing to NATS failed (%s); retrying", self.id, self.last_error)

    def _groups(self, batch: list[Any]) -> Iterator[tuple[str, str, str, float, list[Any], IngestReceipt | None]]:
        """The batch's ingested batches (events closed by their receipt) and this process's own events.

        Yields ``(run_id, batch_id, digest, received_at, events, receipt)``; events
        without a receipt get a batch id of this process (``<node>:<n>``).
        """
        events: list[Any] = []
        for event in batch:
            if type(event) is IngestReceipt:
                yield event.run_id, event.batch_id, event.digest, event.timestamp, events, event
                events = []
            else:
                events.append(event)
        if events:
            self._counter += 1
            yield events[0].run_id, f"{self._node}:{self._counter}", "", time.time(), events, None

    # -- live -----------------------------------------------------------------------------------

    def _chosen(self, batch: list[Any]) -> list[Any]:
        if self.options.events == "all":
            return [event for event in batch if type(event) is not IngestReceipt]
        return [
            event
            for event in batch
            if type(event) is AlertEvent or (type(event) is LogEvent and event.type in LIVENESS_STATUS)
        ]

    async def _publish_live(self, events: list[Any]) -> None:
        for run_id, part in _by_run(events):
            self._counter += 1
            body = encode_batch(run_id, f"{self._node}:{self._counter}", "", time.time(), part)
            await self._publish_live_body(live_subject(run_id), body)

    async def _publish_live_body(self, subject: str, body: bytes) -> None:
        """Hand a live message to the client's outgoing buffer: a core publish (the live stream stores
        it), which waits for no answer; a failure loses a live view's message, never a stored one."""
        client = self._client
        if client is None:
            return
        try:
            await client.publish(subject, body)
        except _RETRY as exc:
            self.live_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self.live_messages += 1

    # -- statistics -----------------------------------------------------------------------------

    def lost_events(self) -> dict[str, int]:
        return dict(self._dropped)

    def statistics(self) -> dict[str, Any]:
        return {
            "stream": self.options.stream,
            "partitions": self.layout.partitions,
            "published_messages": self.published_messages,
            "stored_images": self.stored_images,
            "duplicate_messages": self.duplicate_messages,
            "publish_retries": self.publish_retries,
            "failed_batches": self.failed_batches,
            "live_messages": self.live_messages,
            "live_failures": self.live_failures,
            "last_error": self.last_error,
        }


#: A message to publish: its group's index in the batch, subject, body, message id, and its images' objects.
_Message = tuple[int, str, bytes, str, list[tuple[str, bytes]]]


def _by_run(events: list[Any]) -> list[tuple[str, list[Any]]]:
    """``events`` split by run, each run's in order, runs in order of first appearance."""
    runs: dict[str, list[Any]] = {}
    for event in events:
        runs.setdefault(event.run_id, []).append(event)
    return list(runs.items())
