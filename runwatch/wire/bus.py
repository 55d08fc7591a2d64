"""The message form of a batch on the scale-out bus (NATS JetStream), and how runs map to subjects.

Pure code: no I/O. A serve node encodes each ingested batch (of one run) as
one message; the worker owning the run's partition decodes it. The same
bytes go to the live stream for the web nodes' websocket subscribers.

**Body.** zlib (level 1) of a JSON object::

    {"v": 1, "run_id": ..., "batch_id": ..., "digest": ..., "received_at": <epoch seconds>,
     "items": [<item>, ...]}

where each item is either ``{"m": <block>}``, consecutive metric events of the
run with the same names and tags as columns — ``{"names": [...], "tags":
{...} | null, "steps": [...], "timestamps": [...], "values": [[...], ...]}``
(one column per name; NaN is ``null``, ±Inf ``"Infinity"``/``"-Infinity"``)
— or the wire form of any other event (:func:`runwatch.wire.event_to_wire`),
in the batch's order. Columns are 2.3× smaller than one object per event
and decode 4× faster (docs/scale.md, *Measured*); zlib shrinks them 2.6× more
for a fraction of a millisecond.

**Images.** An image's bytes never travel in a message (a JetStream message
is bounded by the servers' ``max_payload``, 1 MiB by default; an image may
have 32 MiB): the serve node puts them in the bus's object store (which
cuts them in chunks) under :func:`image_blob_name`, and the image's item is
its wire form without ``data`` and with ``"blob": <name>``. Decoding gives
a :class:`PendingImage` in the image's place; :func:`with_image_bytes`
replaces it by the image once the bytes are fetched.

**Subjects.** A run id may hold any character, and a subject token may not
hold ``.``, ``*``, ``>`` or white space, so a subject names a run by
:func:`run_token` (the first 16 hex digits of BLAKE2b of its id); the run id
itself travels in the body. The run's partition is ``int(token[:8], 16) mod
partitions``.

**Message ids.** ``Nats-Msg-Id`` = :func:`message_id` of the batch key and
content digest: a retry of the same batch (same key, same content) is a
duplicate JetStream drops within its window; the same key with other
content is another message (the worker's batch key refuses it).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from typing import Any, Final, NamedTuple

import orjson

from ..events import ImageEvent, Metric
from ..exceptions import WireError
from .documents import json_number
from .events import event_from_dict, event_to_wire, image_from_wire

__all__ = [
    "BUS_FORMAT_VERSION",
    "BusBatch",
    "PendingImage",
    "decode_batch",
    "encode_batch",
    "image_blob_name",
    "image_blob_names",
    "ingest_subject",
    "live_subject",
    "message_id",
    "partition_of",
    "run_token",
    "with_image_bytes",
]

#: The ``v`` of a body this code writes and reads.
BUS_FORMAT_VERSION: Final = 1
#: The subject prefix of ingested batches (``runwatch.ingest.<partition>.<run token>``).
INGEST_PREFIX: Final = "runwatch.ingest"
#: The subject prefix of live events (``runwatch.live.<run token>``).
LIVE_PREFIX: Final = "runwatch.live"

_NON_FINITE: Final = {"Infinity": float("inf"), "-Infinity": float("-inf")}


class BusBatch(NamedTuple):
    """A decoded message: the events of one run's batch and its key.

    Attributes:
        run_id: the run of every event.
        batch_id: the batch's id (unique within the run).
        digest: the content digest of what the producer sent.
        received_at: when the serve node took the batch (epoch seconds).
        events: the events, in the batch's order.
    """

    run_id: str
    batch_id: str
    digest: str
    received_at: float
    events: list[Any]


class PendingImage(NamedTuple):
    """An image of a decoded message whose bytes are in the object store under ``blob``.

    Attributes:
        run_id: its run.
        item: its wire form (without ``data``).
        blob: the object's name.
    """

    run_id: str
    item: dict[str, Any]
    blob: str


def image_blob_name(msg_id: str, index: int) -> str:
    """The object store name of the ``index``-th image (from 0) of the message ``msg_id``.

    Named by the message, not by the content: a worker removes a message's objects once it stored
    the message, which must never take the bytes of another message of the same content.
    """
    return f"{msg_id}.{index}"


def image_blob_names(batch: BusBatch) -> list[str]:
    """The objects a decoded message's images wait for, in order."""
    return [event.blob for event in batch.events if type(event) is PendingImage]


def with_image_bytes(batch: BusBatch, blobs: dict[str, bytes]) -> tuple[BusBatch, int]:
    """``batch`` with each pending image built from its bytes in ``blobs``; and how many were left out
    (their objects are gone, or their bytes are not the image's: its digest or media type)."""
    events: list[Any] = []
    missing = 0
    for event in batch.events:
        if type(event) is not PendingImage:
            events.append(event)
            continue
        data = blobs.get(event.blob)
        if data is None:
            missing += 1
            continue
        try:
            events.append(image_from_wire(event.item, data))
        except (TypeError, ValueError):
            missing += 1
    return batch._replace(events=events), missing


def run_token(run_id: str) -> str:
    """The subject token of a run: 16 hex digits of BLAKE2b of its id."""
    return hashlib.blake2b(run_id.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def partition_of(run_id: str, partitions: int) -> int:
    """The run's partition among ``partitions``."""
    return int(run_token(run_id)[:8], 16) % partitions


def ingest_subject(run_id: str, partitions: int) -> str:
    """``runwatch.ingest.<partition>.<run token>``: where a batch of ``run_id`` is published."""
    return f"{INGEST_PREFIX}.{partition_of(run_id, partitions)}.{run_token(run_id)}"


def live_subject(run_id: str) -> str:
    """``runwatch.live.<run token>``: where live events of ``run_id`` are published."""
    return f"{LIVE_PREFIX}.{run_token(run_id)}"


def message_id(run_id: str, batch_id: str, digest: str) -> str:
    """The ``Nats-Msg-Id`` of a batch: its key's hash, then its content digest's."""
    key = hashlib.blake2b(f"{run_id}\x00{batch_id}".encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{key}.{digest[:32]}"


def encode_batch(
    run_id: str, batch_id: str, digest: str, received_at: float, events: Iterable[Any], *, msg_id: str | None = None
) -> bytes:
    """The message body of a batch of ``run_id``'s events (see the module docs).

    Args:
        msg_id: the message's id: its images name their objects by it
            (:func:`image_blob_name`); ``None``: images are left out (a
            live-only message, whose bytes no object holds).

    Raises:
        ValueError: an event of another run.
    """
    items: list[dict[str, Any]] = []
    block: dict[str, Any] | None = None
    block_key: tuple[Any, ...] | None = None
    images = 0
    for event in events:
        if event.run_id != run_id:
            raise ValueError(f"a bus message holds one run's events: {event.run_id!r} is not {run_id!r}")
        if type(event) is ImageEvent:
            block = block_key = None
            if msg_id is not None:
                items.append({**event_to_wire(event), "blob": image_blob_name(msg_id, images)})
                images += 1
            continue
        if type(event) is not Metric:
            block = block_key = None
            items.append(event_to_wire(event))
            continue
        _, timestamp, values, step, tags = event
        key = (tuple(values), None if tags is None else tuple(tags.items()))
        if key != block_key:
            block_key = key
            block = {"names": list(values), "tags": tags, "steps": [], "timestamps": [], "values": [[] for _ in values]}
            items.append({"m": block})
        assert block is not None
        block["steps"].append(step)
        block["timestamps"].append(timestamp)
        total = sum(values.values())
        finite = total - total == 0.0
        for column, value in zip(block["values"], values.values(), strict=True):
            column.append(value if finite else json_number(value))
    document = {
        "v": BUS_FORMAT_VERSION,
        "run_id": run_id,
        "batch_id": batch_id,
        "digest": digest,
        "received_at": received_at,
        "items": items,
    }
    return zlib.compress(orjson.dumps(document), 1)


def decode_batch(body: bytes) -> BusBatch:
    """A message body back to its batch (events built and checked as from the wire; an image as a
    :class:`PendingImage`: see :func:`with_image_bytes`).

    Raises:
        WireError: the body is not a bus message of this version, or an event in it is invalid.
    """
    try:
        document = orjson.loads(zlib.decompress(body))
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise WireError(400, f"not a runwatch bus message: {exc}") from None
    if not isinstance(document, dict) or document.get("v") != BUS_FORMAT_VERSION:
        raise WireError(400, f"not a runwatch bus message of version {BUS_FORMAT_VERSION}")
    try:
        run_id = document["run_id"]
        events: list[Any] = []
        for item in document["items"]:
            block = item.get("m")
            if block is None and "blob" in item:
                blob = item.pop("blob")
                events.append(PendingImage(run_id, item, blob if type(blob) is str else str(blob)))
                continue
            if block is None:
                events.append(event_from_dict(item))
                continue
            names, tags = block["names"], block["tags"]
            columns = block["values"]
            for index, (step, timestamp) in enumerate(zip(block["steps"], block["timestamps"], strict=True)):
                values = {name: _number(column[index]) for name, column in zip(names, columns, strict=True)}
                events.append(Metric(run_id, timestamp, values, step, tags))
        return BusBatch(run_id, document["batch_id"], document["digest"], float(document["received_at"]), events)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise WireError(422, f"invalid runwatch bus message: {type(exc).__name__}: {exc}") from None


def _number(value: Any) -> Any:
    if value is None:
        return float("nan")
    if type(value) is str:
        return _NON_FINITE[value]
    return value
