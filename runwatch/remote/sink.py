"""The remote sink: events go to a runwatch server's ingest, through a bounded on-disk spool.

Purpose: a training process on any machine records into one ``runwatch
serve`` (the workspace). Status: beta. Delivery: exactly once per batch id,
end to end (the server stores a batch once and answers only once it is
committed; see docs/protocol.md), for everything spooled. Egress: batch.
State: stateful (the spool on disk).

Example::

    [sources.app]
    type = "in_process"

    [sinks.server]
    type = "remote"
    inputs = ["app"]
    url = "http://training-box:8080"

==========================  =======  ========  ============  ==========================================
option                      type     required  default       meaning
==========================  =======  ========  ============  ==========================================
url                         string   yes                     the server (``http://`` or ``https://``,
                                                             no credentials in it)
token                       string   no        none          its bearer token (sent in a header only)
spool_dir                   string   no        see below     the spool root
max_spool_bytes             integer  no        1 GiB         records waiting on disk, at most
segment_bytes               integer  no        16 MiB        spool segment size
max_batch_events            integer  no        5000          events per batch (the server takes 10,000)
max_batch_bytes             integer  no        1000 KiB      body size per batch (the server takes 1 MiB
                                                             by default; a smaller bound is met by
                                                             sending halves)
batch_interval_seconds      number   no        0.02          how long events wait to be cut into a batch
fsync_interval_seconds      number   no        1             seconds between fsyncs of the spool
timeout_seconds             number   no        10            socket timeout of one request
retry_max_seconds           number   no        2             the longest wait between two tries
drain_timeout_seconds       number   no        5             at close: how long to keep sending
==========================  =======  ========  ============  ==========================================

How: ``write`` turns events into their wire form (a started or resumed
run names this process as its owner, ``host:pid:start-time``) and keeps them
in memory; every ``batch_interval_seconds``, at ``max_batch_events``, at a
flush and at close they are cut into batches (each a new, unique batch id:
``<spool name>-<n>``) and each batch is appended to the spool with one
``write()``. A thread sends the spool's batches in order (see
:mod:`.sender`); the spool keeps each until the server acknowledged it. A
flush returns once everything before it is spooled and fsync-ed, so the
monitor's commit points (``start_training``...) mean "on this disk";
:meth:`RemoteSink.wait_delivered` waits for the server.

The spool root defaults to ``<data_dir>/spool/<server>`` (one per server);
each process gets its own spool in it and, when it starts, adopts the spools
of processes of the same root that are gone (a producer killed with
``kill -9``, or one that closed while the server was away) and sends them
first. ``runwatch sync <root> --to <url>`` sends them too.

An image too large for a batch (its event, bytes in base64, over
``max_batch_bytes``) travels alone: the batches before it are cut, and it is
spooled as an image record, its raw bytes after a line of JSON, which the
sender posts to ``POST /api/ingest/image`` (the server takes up to
``max_image_body_bytes`` there, 32 MiB of image by default, and 1 MiB on
every other route) under a batch id of its own: stored once, as a batch is,
and in order with the events around it.

Losses (all counted in ``statistics()`` and ``lost_events()``):
``spool_full`` (past ``max_spool_bytes``: the newest batch is dropped, not
the producer blocked), ``too_large`` (one event other than an image over
``max_batch_bytes``, or an image whose line of JSON, its caption mostly,
is over 64 KiB),
``spool_error`` (the spool's disk failed), ``rejected`` (the server refused
a batch for good: counted by the sender). A ``kill -9`` loses what was not
yet spooled: at most one ``batch_interval_seconds`` of events plus what
waited in the pipeline's queues (the in-process intake is drained every
5 ms); see docs/workspace.md for the measured figure.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from pydantic import Field, SecretStr, field_validator

from ..client import HTTPTransport
from ..events import ImageEvent, RunLifecycle, RunTransition
from ..pipeline.component import ComponentContext, ServiceKey, Sink
from ..pipeline.component import Options as BaseOptions
from ..wire import dumps, event_to_ingest, event_to_wire
from ..wire.ingest import MAX_IMAGE_HEADER_BYTES, image_body
from .sender import DeliveryStatistics, SpoolSender
from .server_url import check_server_url, display_url
from .spool import DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES, Spool, spool_directories

__all__ = ["REMOTE_SINK", "RemoteSink", "default_spool_root"]

logger = logging.getLogger("runwatch.remote")

#: The sink, offered to the monitor (a remote-mode monitor waits on it before reading).
REMOTE_SINK: ServiceKey[RemoteSink] = ServiceKey("remote")

_OWNING: Final = (RunTransition.STARTED, RunTransition.RESUMED)
#: More than a batch adds around one event: ``{"batch_id": <up to 200 characters>, "events": [...]}`` and ``"data"``.
_BATCH_FRAME_BYTES: Final = 256


def default_spool_root(data_dir: Path, url: str) -> Path:
    """``<data_dir>/spool/<host>-<port>-<hash of the URL>``: one root per server."""
    parts = urlsplit(url)
    name = "".join(c if c.isalnum() or c in "-." else "_" for c in f"{parts.hostname}-{parts.port or parts.scheme}")
    digest = hashlib.blake2b(display_url(url).encode(), digest_size=4).hexdigest()
    return data_dir / "spool" / f"{name}-{digest}"


class RemoteSink(Sink):
    """Spools events and sends them to a runwatch server (see the module docs)."""

    counts_own_losses = True  # write() keeps what it takes until it is spooled, or counts it

    class Options(BaseOptions):
        url: str
        token: SecretStr | None = None
        spool_dir: str | None = None
        max_spool_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1 << 20)
        segment_bytes: int = Field(DEFAULT_SEGMENT_BYTES, ge=64 << 10)
        max_batch_events: int = Field(5_000, ge=1, le=100_000)
        max_batch_bytes: int = Field(1000 << 10, ge=4 << 10, le=64 << 20)
        batch_interval_seconds: float = Field(0.02, gt=0, le=60, allow_inf_nan=False)
        fsync_interval_seconds: float = Field(1.0, gt=0, allow_inf_nan=False)
        timeout_seconds: float = Field(10.0, gt=0, allow_inf_nan=False)
        retry_max_seconds: float = Field(2.0, gt=0, allow_inf_nan=False)
        drain_timeout_seconds: float = Field(5.0, ge=0, allow_inf_nan=False)

        @field_validator("url")
        @classmethod
        def _valid_url(cls, value: str) -> str:
            return check_server_url(value)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.tick_interval_seconds = options.batch_interval_seconds
        self.url = options.url
        root = Path(options.spool_dir) if options.spool_dir else default_spool_root(context.data_dir, self.url)
        self.spool_root = root
        self._spool: Spool | None = None
        self._sender: SpoolSender | None = None
        self._transport: Any = None
        self._pending: list[dict[str, Any]] = []
        self._owner: str | None = None
        self._batches_cut = 0
        self._spooled_events = 0
        self._adopted: list[Spool] = []
        self._dropped: dict[str, int] = {}
        self._drops: dict[str, int] = {}  # times each reason dropped (for logging)
        self._next_sync = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        from ..sinks.sqlite import process_owner

        self._owner = process_owner()
        options = self.options
        own, self._adopted = await anyio.to_thread.run_sync(self._open_spools)
        self._spool = own
        self._transport = HTTPTransport(self.url, timeout=options.timeout_seconds)
        token = options.token.get_secret_value() if options.token is not None else None
        self._sender = SpoolSender(self._transport, token=token, retry_max_seconds=options.retry_max_seconds)
        for spool in [*self._adopted, own]:  # what earlier processes left goes first
            self._sender.add(spool)
        self._sender.start()
        self.context.services.provide(REMOTE_SINK, self)
        left = sum(spool.unacked_events for spool in self._adopted)
        if left:
            logger.warning(
                "runwatch: sending %d event(s) that earlier processes spooled for %s", left, display_url(self.url)
            )

    def _open_spools(self) -> tuple[Spool, list[Spool]]:
        segment = self.options.segment_bytes
        own = Spool.create(self.spool_root, segment_bytes=segment)
        adopted = []
        for directory in spool_directories(self.spool_root):
            if directory != own.directory:
                spool = Spool.adopt(directory, segment_bytes=segment)
                if spool is not None:
                    adopted.append(spool)
        return own, adopted

    async def aclose(self) -> None:
        """Spool what is left, keep sending for up to ``drain_timeout_seconds``, then stop."""
        if self._spool is None:
            return
        self.context.services.withdraw(REMOTE_SINK, self)
        try:
            self._cut()
            await anyio.to_thread.run_sync(self._sync_spool)
        finally:
            drain = self.options.drain_timeout_seconds
            remaining = anyio.current_effective_deadline() - anyio.current_time()
            drain = max(0.0, min(drain, remaining - 0.5))
            sender, spool = self._sender, self._spool
            self._sender = self._spool = None
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close_sending, sender, spool, drain)

    def _close_sending(self, sender: SpoolSender | None, spool: Spool, drain: float) -> None:
        if sender is not None:
            sender.close(drain)
        left = spool.unacked_events + sum(adopted.unacked_events for adopted in self._adopted)
        if left:
            logger.warning(
                "runwatch: %d event(s) not delivered to %s stay spooled in %s; the next run with this spool sends"
                " them, or: runwatch sync %s --to %s",
                left,
                display_url(self.url),
                self.spool_root,
                self.spool_root,
                display_url(self.url),
            )
        for each in [*self._adopted, spool]:
            each.close()
        if self._transport is not None:
            self._transport.close()

    # -- taking events -------------------------------------------------------------------------

    async def write(self, batch: list[Any]) -> None:
        pending = self._pending
        owner = self._owner
        for event in batch:
            if type(event) is RunLifecycle and event.owner is None and event.transition in _OWNING:
                event = event._replace(owner=owner)  # the server can tell when this process is gone
            elif type(event) is ImageEvent and self._travels_alone(event):
                self._cut()  # what came before it goes first
                self._spool_image(event)
                pending = self._pending
                continue
            pending.append(event_to_ingest(event))  # an image with its bytes
        if len(pending) >= self.options.max_batch_events:
            self._cut()

    async def tick(self, now: float) -> None:
        self._cut()
        if time.monotonic() >= self._next_sync:
            self._next_sync = time.monotonic() + self.options.fsync_interval_seconds
            await anyio.to_thread.run_sync(self._sync_spool)

    async def flush(self) -> None:
        """Everything taken so far is spooled and fsync-ed when this returns."""
        self._cut()
        await anyio.to_thread.run_sync(self._sync_spool)

    def _sync_spool(self) -> None:
        spool = self._spool
        if spool is not None:
            try:
                spool.sync()
            except OSError as exc:
                logger.error("runwatch: syncing the spool %s failed: %s", spool.directory, exc)

    def _cut(self) -> None:
        """Cut what is pending into batches and append each to the spool."""
        pending, self._pending = self._pending, []
        limit = self.options.max_batch_events
        for start in range(0, len(pending), limit):
            self._spool_batch(pending[start : start + limit])

    def _travels_alone(self, image: ImageEvent) -> bool:
        """Whether an image's batch would be over ``max_batch_bytes`` (its bytes in base64, the batch's frame)."""
        ingest_bytes = (len(image.data) + 2) // 3 * 4 + len(dumps(event_to_wire(image)).encode()) + _BATCH_FRAME_BYTES
        return bool(ingest_bytes > self.options.max_batch_bytes)

    def _spool_image(self, image: ImageEvent) -> None:
        """Spool an image as an image record (see the module docs)."""
        body = image_body(self._batch_id(), image)
        header_bytes = len(body) - len(image.data) - 1
        if header_bytes > MAX_IMAGE_HEADER_BYTES:
            self._drop("too_large", 1)
            logger.error(
                "runwatch: dropped an image whose fields take %d bytes of JSON (its caption?): more than %d",
                header_bytes,
                MAX_IMAGE_HEADER_BYTES,
            )
            return
        self._append(body, 1, image=True)

    def _batch_id(self) -> str:
        return f"{self._spool.name if self._spool else 'closed'}-{self._batches_cut}"

    def _spool_batch(self, events: list[dict[str, Any]]) -> None:
        body = dumps({"batch_id": self._batch_id(), "events": events}).encode()
        if len(body) > self.options.max_batch_bytes:
            if len(events) == 1:
                self._drop("too_large", 1)
                logger.error(
                    "runwatch: dropped an event of %d bytes: larger than max_batch_bytes (%d)",
                    len(body),
                    self.options.max_batch_bytes,
                )
                return
            half = len(events) // 2
            self._spool_batch(events[:half])
            self._spool_batch(events[half:])
            return
        self._append(body, len(events))

    def _append(self, body: bytes, events: int, *, image: bool = False) -> None:
        """Append one record to the spool, or count its events dropped (closed, spool full, disk failed)."""
        spool, sender = self._spool, self._sender
        if spool is None or sender is None:
            self._drop("closed", events)
            return
        spooled = sum(each.unacked_bytes for each in self._spools())
        if spooled + len(body) > self.options.max_spool_bytes:
            self._drop("spool_full", events)
            return
        try:
            spool.append(body, events, image=image)
        except OSError as exc:
            self._drop("spool_error", events)
            logger.error("runwatch: writing to the spool %s failed: %s", spool.directory, exc)
            return
        self._batches_cut += 1
        self._spooled_events += events
        sender.notify()

    def _drop(self, reason: str, count: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count
        times = self._drops[reason] = self._drops.get(reason, 0) + 1
        if reason == "spool_full" and times & (times - 1) == 0:  # 1, 2, 4...: no log storm
            logger.error(
                "runwatch: the spool %s is full (%d bytes waiting for the server, bound %d): dropped %d event(s)"
                " so far",
                self.spool_root,
                sum(spool.unacked_bytes for spool in self._spools()),
                self.options.max_spool_bytes,
                self._dropped[reason],
            )

    def _spools(self) -> list[Spool]:
        return [*self._adopted, *([self._spool] if self._spool is not None else [])]

    # -- delivery -------------------------------------------------------------------------------

    def wait_delivered(self, timeout: float | None) -> bool:
        """Block until everything spooled before the call is acknowledged by the server (any thread but the loop).

        Returns:
            ``False`` when ``timeout`` seconds passed first.
        """
        sender = self._sender
        return True if sender is None else sender.wait_delivered(timeout)

    def delivery(self) -> DeliveryStatistics | None:
        """The sender's counters (``None`` before start or after close)."""
        return None if self._sender is None else self._sender.statistics()

    def lost_events(self) -> dict[str, int]:
        dropped = dict(self._dropped)
        if self._sender is not None:
            rejected = self._sender.statistics().rejected_events
            if rejected:
                dropped["rejected"] = rejected
        return dropped

    def statistics(self) -> dict[str, Any]:
        spools = self._spools()
        delivery = self.delivery()
        waiting = sum(spool.unacked_events for spool in spools)
        stats: dict[str, Any] = {
            "url": display_url(self.url),
            "spool_dir": str(self.spool_root),
            "health": "degraded" if self._sender is not None and self._sender.failing else "ok",
            "pending_events": len(self._pending) + waiting,
            "unspooled_events": len(self._pending),
            "spooled_events": self._spooled_events,
            "spooled_batches": self._batches_cut,
            "spool_events": waiting,
            "spool_bytes": sum(spool.unacked_bytes for spool in spools),
            "adopted_spools": len(self._adopted),
            "dropped_events": dict(self._dropped),
        }
        if delivery is not None:
            stats.update(delivery._asdict())
        return stats
