"""The ingest source: batches from remote producers (``POST /api/ingest``, ``/ws/ingest``, session ``/batch``).

A batch with a ``batch_id`` is stored at most once and acknowledged only once
stored:

- Batch ids are scoped per run: the key of a batch is ``(run_id of its first
  event, batch_id)``, so producers that number batches per run never collide.
- Its receipt (:class:`~runwatch.events.IngestReceipt`, carrying a digest of
  the batch's content) is committed in the same transaction as its events;
  the store sink reports each committed receipt (``context.receipts``).
- The batch is answered "stored" once its receipt was committed and a flush
  barrier sent behind it has passed every acknowledging sink; if the barrier
  passes without the receipt (a sink dropped it) or the pipeline stops first,
  it is answered "not stored" and nothing of it is.
- A retry of a batch still in flight waits for that outcome: a duplicate once
  the original is stored, taken as new if the original was not. A retry of a
  stored batch is a duplicate; the same id with other content is a
  :class:`~runwatch.exceptions.BatchIdConflict`, never a silent drop.

The outcome of a batch is the pipeline's, not its request's: a request that
is cancelled (its client went away) leaves the batch in flight, and a retry
waits for it all the same.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from pydantic import Field

from ..events import REMOTE_OWNER, IngestReceipt, RunLifecycle, RunTransition
from ..exceptions import BatchIdConflict, BatchNotStored, PipelineNotRunning
from ..pipeline.component import ComponentContext, ServiceKey, Source
from ..pipeline.component import Options as BaseOptions
from ..wire import content_digest, event_to_wire

__all__ = ["INGEST", "IngestResult", "IngestSource"]

logger = logging.getLogger("runwatch.ingest")

#: The source, offered to the web app (remote ingest submits to it).
INGEST: ServiceKey[IngestSource] = ServiceKey("ingest")


class IngestResult:
    """What happened to a submitted batch."""

    __slots__ = ("accepted", "batch_id", "duplicate")

    def __init__(self, accepted: int, batch_id: str | None, duplicate: bool) -> None:
        self.accepted = accepted
        self.batch_id = batch_id
        self.duplicate = duplicate


_OWNING: Final = (RunTransition.STARTED, RunTransition.RESUMED)


def owned_by_their_producer(events: list[Any]) -> list[Any]:
    """Runs (re)started over the network belong to their producer, not to the server storing them.

    A ``started``/``resumed`` event that names no owner gets :data:`REMOTE_OWNER`,
    so the server's own pid never becomes the owner (a restarted server would
    otherwise find "its" runs' owner gone and mark live remote runs crashed).
    """
    if not any(type(event) is RunLifecycle and event.owner is None for event in events):
        return events
    return [
        event._replace(owner=REMOTE_OWNER)
        if type(event) is RunLifecycle and event.owner is None and event.transition in _OWNING
        else event
        for event in events
    ]


_Key = tuple[str, str]


class _InFlight:
    """One keyed batch between its submission and its outcome (only the loop touches it)."""

    __slots__ = ("committed", "digest", "key", "settled", "stored_digest")

    def __init__(self, key: _Key, digest: str) -> None:
        self.key = key
        self.digest = digest
        self.committed = False  # its receipt was committed
        self.settled = anyio.Event()
        self.stored_digest: str | None = None  # what the store holds under this key, when not ``digest``


class IngestSource(Source):
    """Feeds validated remote batches into the graph and acknowledges once committed (see the module docs).

    Options:
        recent_batch_ids: how many stored batch keys are remembered in memory
            (older ones are still found in the store).
    """

    emits_receipts = True

    class Options(BaseOptions):
        recent_batch_ids: int = Field(100_000, ge=1)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self._output: Any = None
        self._in_flight: dict[_Key, _InFlight] = {}
        self._stored: OrderedDict[_Key, str] = OrderedDict()  # recently stored keys → content digest
        self.accepted_events = 0
        self.duplicate_batches = 0
        self.conflicting_batches = 0
        self.retries_waited = 0
        self.batches_not_stored = 0
        #: Runs this source has stored events of (``/api/health`` names their writers "via ingest").
        self.served_runs: set[str] = set()
        context.services.provide(INGEST, self)
        context.receipts.listen(self._receipts_committed)

    async def run(self, stopping: anyio.Event) -> None:
        self._output = self.output  # taking batches until the pipeline stops
        try:
            await stopping.wait()
        finally:
            self._output = None

    async def aclose(self) -> None:
        # Every sink is closed: nothing more will be committed. What is left is stored only if its
        # receipt was reported (without a receipt-storing sink, nothing tells: not stored).
        for entry in list(self._in_flight.values()):
            self._settle(entry)

    async def submit(
        self,
        events: list[Any],
        batch_id: str | None = None,
        *,
        digest: str | None = None,
        admit: Callable[[list[Any]], Awaitable[list[Any]]] | None = None,
    ) -> IngestResult:
        """Send validated events into the graph; return once they are committed.

        Args:
            events: the batch, validated completely.
            batch_id: the producer's id for the batch (unique within the run of
                its first event), or ``None`` (no retry protection).
            digest: :func:`content_digest` of what the producer sent (default:
                of the events' wire forms); a retry must give the same one.
            admit: called with the events once the batch is known to be new
                (not a retry of a stored batch), before anything is sent;
                returns the events to send (it may add some: the producer's
                own count is what is answered), and what it raises refuses
                the batch (nothing is stored).

        Raises:
            BatchIdConflict: the id was used in the run for different content.
            BatchNotStored: the batch was not committed (send it again).
            PipelineNotRunning: the pipeline is stopping or stopped.
        """
        if batch_id is not None and events and digest is None:
            digest = content_digest([event_to_wire(event) for event in events])
        produced = len(events)
        if batch_id is None or not events:
            if admit is not None:
                events = await admit(events)
            return await self._submit_unkeyed(owned_by_their_producer(events), batch_id, produced)
        assert digest is not None
        key = (events[0].run_id, batch_id)
        while (original := self._in_flight.get(key)) is not None:
            # A retry of a batch still in flight: its outcome decides.
            self.retries_waited += 1
            await original.settled.wait()
            if original.committed:
                known = original.stored_digest if original.stored_digest is not None else original.digest
                return self._answer_stored(key, digest, known)
        entry = _InFlight(key, digest)
        self._in_flight[key] = entry
        output: Any = None
        sent = False
        try:
            stored: str | None = self._stored.get(key)
            if stored is None:
                stored = await self._stored_digest(key)
            if stored is not None:
                entry.committed = True
                entry.stored_digest = stored
                self._settle(entry)
                return self._answer_stored(key, digest, stored)
            if admit is not None:
                events = await admit(events)
            events = owned_by_their_producer(events)
            output = self._output
            if output is None:
                raise PipelineNotRunning("runwatch is shutting down")
            receipt = IngestReceipt(key[0], time.time(), batch_id, len(events), digest)
            sent = True
            await output.send([*events, receipt])
        except BaseException:
            if not sent:  # nothing of it reached the graph
                self._settle(entry)
            raise
        finally:
            if sent:  # even if the send was cut short: part of it may be in the graph; the barrier tells
                output.send_flush_barrier(lambda: self._barrier_passed(entry))
        await entry.settled.wait()  # cancelled here (the client left): the batch's outcome is settled all the same
        if not entry.committed:
            self.batches_not_stored += 1
            reason = "the pipeline stopped first" if self._output is None else "the store did not take it"
            raise BatchNotStored(batch_id, reason)
        self.accepted_events += produced
        self.served_runs.update({event.run_id for event in events})
        return IngestResult(produced, batch_id, False)

    async def _submit_unkeyed(self, events: list[Any], batch_id: str | None, produced: int) -> IngestResult:
        output = self._output
        if output is None:
            raise PipelineNotRunning("runwatch is shutting down")
        await output.send(events)
        committed = anyio.Event()
        output.send_flush_barrier(committed.set)
        await committed.wait()
        self.accepted_events += produced
        self.served_runs.update({event.run_id for event in events})
        return IngestResult(produced, batch_id, False)

    def _answer_stored(self, key: _Key, digest: str, stored_digest: str) -> IngestResult:
        """A batch whose key is stored: a duplicate if the content is the same (or unknown: before v5)."""
        if stored_digest and stored_digest != digest:
            self.conflicting_batches += 1
            raise BatchIdConflict(key[1], key[0])
        self.duplicate_batches += 1
        return IngestResult(0, key[1], True)

    # -- outcomes (on the loop) ------------------------------------------------------------

    def _receipts_committed(self, keys: list[_Key]) -> None:
        for key in keys:
            entry = self._in_flight.get(key)
            if entry is not None:
                entry.committed = True

    def _barrier_passed(self, entry: _InFlight) -> None:
        """Every acknowledging sink has committed what was ahead of the batch's barrier."""
        if self.context.receipts.recorders == 0:
            entry.committed = True  # no sink stores receipts: the barrier is all there is to go by
        self._settle(entry)

    def _settle(self, entry: _InFlight) -> None:
        """The batch's outcome is final (stored if its receipt was committed): wake whoever waits."""
        if entry.settled.is_set():
            return
        if self._in_flight.get(entry.key) is entry:
            del self._in_flight[entry.key]
        if entry.committed:
            self._remember(entry.key, entry.stored_digest if entry.stored_digest is not None else entry.digest)
        entry.settled.set()

    def _remember(self, key: _Key, digest: str) -> None:
        self._stored[key] = digest
        self._stored.move_to_end(key)
        while len(self._stored) > self.options.recent_batch_ids:
            self._stored.popitem(last=False)

    async def _stored_digest(self, key: _Key) -> str | None:
        """The digest stored under ``key`` (``""`` for an id recorded before ids were scoped), or ``None``.

        Raises:
            StoreUnavailable: the store stayed locked: not knowing is not "not stored".
        """
        return await anyio.to_thread.run_sync(self.context.store.stored_batch_digest, key[0], key[1])

    def statistics(self) -> dict[str, Any]:
        return {
            "accepted_events": self.accepted_events,
            "duplicate_batches": self.duplicate_batches,
            "conflicting_batches": self.conflicting_batches,
            "in_flight_batches": len(self._in_flight),
            "retries_waited": self.retries_waited,
            "batches_not_stored": self.batches_not_stored,
        }
