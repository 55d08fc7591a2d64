"""Connecting to NATS, and the streams and buckets of the bus (created when missing, checked when present).

=========================  ==========================================================================
``RUNWATCH_INGEST_<s>``    ``s`` of ``streams``: the ingest subjects of partitions ``p ≡ s mod streams``
                           (``runwatch.ingest.<p>.*``); work-queue retention (a message leaves when
                           its worker acknowledges it), file storage, ``discard: new`` at the byte
                           budget (a full stream refuses publishes: serve nodes answer 503), no age
                           limit, a two-minute duplicate window
``RUNWATCH_LIVE``          ``runwatch.live.*``: live events; kept 15 minutes (or up to a byte cap,
                           oldest dropped first): the horizon of websocket resumes
``runwatch_leases``        key-value bucket: partition leases (key ``p<n>``, value the worker's
                           name); its TTL frees the leases of a worker that died
``runwatch_workers``       key-value bucket: a key per live worker, refreshed while it runs
``runwatch_media``         object store: the bytes of the images of messages not yet stored (a
                           message names its images' objects; the worker that stored it removes
                           them); file storage, no byte bound of its own: it holds what the ingest
                           streams' backlog (bounded by their ``max_bytes``) refers to
=========================  ==========================================================================

Serve nodes and workers all call :func:`ensure_bus`; whoever comes first
creates, the others find the same configuration. A stream that exists with
other subjects (another partition count) is an error naming it, never a
silent reconfiguration.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from ..exceptions import ConfigError
from ..wire.bus import INGEST_PREFIX, LIVE_PREFIX

__all__ = [
    "LEASES_BUCKET",
    "LIVE_STREAM",
    "MEDIA_BUCKET",
    "WORKERS_BUCKET",
    "BusLayout",
    "connect",
    "ensure_bus",
    "ingest_stream_name",
]

logger = logging.getLogger("runwatch.bus")

LIVE_STREAM: Final = "RUNWATCH_LIVE"
LEASES_BUCKET: Final = "runwatch_leases"
WORKERS_BUCKET: Final = "runwatch_workers"
MEDIA_BUCKET: Final = "runwatch_media"
#: How long JetStream drops a republished message id as a duplicate.
DUPLICATE_WINDOW_SECONDS: Final = 120.0
#: How long the live stream keeps events (the horizon of a websocket resume).
LIVE_MAX_AGE_SECONDS: Final = 15 * 60.0
#: The largest message (a batch of up to 10,000 events, compressed, fits well within).
MAX_MESSAGE_BYTES: Final = 8 << 20


@dataclass(frozen=True)
class BusLayout:
    """How the bus is laid out: every serve node and worker of a deployment must agree on it.

    Attributes:
        partitions: partitions of the runs (fixed once the streams exist).
        streams: ingest streams the partitions are spread over.
        replicas: replicas of each stream and bucket (3 on a cluster of 3 or more servers).
        max_bytes: the disk budget of each ingest stream (bytes); past it publishes are refused.
        live_max_bytes: the byte cap of the live stream.
        lease_ttl_seconds: how long a lease outlives its last renewal.
    """

    partitions: int = 16
    streams: int = 1
    replicas: int = 1
    max_bytes: int = 1 << 30
    live_max_bytes: int = 256 << 20
    lease_ttl_seconds: float = 15.0

    def stream_of(self, partition: int) -> str:
        """The ingest stream holding ``partition``."""
        return ingest_stream_name(partition % self.streams)

    def partition_subject(self, partition: int) -> str:
        """``runwatch.ingest.<partition>.*``: the subjects of one partition."""
        return f"{INGEST_PREFIX}.{partition}.*"


def ingest_stream_name(index: int) -> str:
    """``RUNWATCH_INGEST_<index>``."""
    return f"RUNWATCH_INGEST_{index}"


async def connect(urls: list[str], *, name: str) -> Client:
    """A client of the cluster at ``urls`` that reconnects on its own, for good.

    Raises:
        ConnectionError: no server answered.
    """

    async def error_callback(exc: Exception) -> None:
        # Reconnecting after a server's loss is routine: one line, not a traceback.
        logger.warning("runwatch: NATS connection (%s): %s: %s", name, type(exc).__name__, exc)

    try:
        return await _connect(urls, name, error_callback)
    except (OSError, nats.errors.Error) as exc:
        raise ConnectionError(f"cannot reach the NATS servers {', '.join(urls)}: {type(exc).__name__}: {exc}") from exc


async def _connect(urls: list[str], name: str, error_callback: Any) -> Client:
    return await nats.connect(
        servers=urls,
        name=name,
        connect_timeout=5,
        reconnect_time_wait=0.25,
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        error_cb=error_callback,
        # Publishes made while reconnecting wait in a buffer, bounded; beyond it they fail (and are retried).
        pending_size=64 << 20,
    )


async def ensure_bus(js: JetStreamContext, layout: BusLayout, *, leases: bool = False) -> None:
    """Create the streams (and with ``leases`` the key-value buckets) when missing; check them when present.

    Raises:
        ConfigError: a stream exists with another layout, or the servers cannot hold it.
    """
    for index in range(layout.streams):
        subjects = [layout.partition_subject(p) for p in range(layout.partitions) if p % layout.streams == index]
        await _ensure_stream(
            js,
            StreamConfig(
                name=ingest_stream_name(index),
                subjects=subjects,
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=layout.replicas,
                discard=DiscardPolicy.NEW,
                max_bytes=layout.max_bytes,
                max_msg_size=MAX_MESSAGE_BYTES,
                duplicate_window=DUPLICATE_WINDOW_SECONDS,
            ),
        )
    await _ensure_stream(
        js,
        StreamConfig(
            name=LIVE_STREAM,
            subjects=[f"{LIVE_PREFIX}.*"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=layout.replicas,
            discard=DiscardPolicy.OLD,
            max_age=LIVE_MAX_AGE_SECONDS,
            max_bytes=layout.live_max_bytes,
            max_msg_size=MAX_MESSAGE_BYTES,
        ),
    )
    await _ensure_media_bucket(js, layout)
    if leases:
        for bucket in (LEASES_BUCKET, WORKERS_BUCKET):
            await _ensure_bucket(js, bucket, layout)


async def _ensure_media_bucket(js: JetStreamContext, layout: BusLayout) -> None:
    try:
        await js.object_store(MEDIA_BUCKET)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        config = ObjectStoreConfig(bucket=MEDIA_BUCKET, storage=StorageType.FILE, replicas=layout.replicas)
        with contextlib.suppress(BadRequestError):  # created meanwhile by another node
            await js.create_object_store(MEDIA_BUCKET, config=config)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    assert config.name is not None
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:  # created meanwhile by another node: check it below
            info = await js.stream_info(config.name)
        except APIError as exc:
            raise ConfigError(
                "max_bytes",
                f"the NATS servers refused the stream {config.name} ({exc.description}); a stream reserves"
                f" max_bytes ({config.max_bytes} bytes) of each replica's JetStream storage",
            ) from None
    existing = sorted(info.config.subjects or [])
    if existing != sorted(config.subjects or []):
        raise ConfigError(
            "partitions",
            f"the NATS stream {config.name} exists with other subjects ({len(existing)}, e.g. {existing[:2]});"
            " every serve node and worker must use the same partitions and streams",
        )


async def _ensure_bucket(js: JetStreamContext, bucket: str, layout: BusLayout) -> Any:
    try:
        return await js.key_value(bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        config = KeyValueConfig(bucket=bucket, history=1, ttl=layout.lease_ttl_seconds, replicas=layout.replicas)
        return await js.create_key_value(config)
    # An existing bucket keeps its TTL: workers of one deployment must agree on lease_ttl_seconds.
