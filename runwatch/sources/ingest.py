"""The ingest source: batches from remote producers (``POST /api/ingest``, ``/ws/ingest``)."""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from typing import Any, Final

import anyio
from pydantic import Field

from ..events import REMOTE_OWNER, IngestReceipt, RunLifecycle, RunTransition
from ..exceptions import PipelineNotRunning
from ..pipeline.component import ComponentContext, Output, Source
from ..pipeline.component import Options as BaseOptions
from ..store import forksafe

__all__ = ["SERVICE_NAME", "IngestResult", "IngestSource"]

SERVICE_NAME = "ingest"


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


class IngestSource(Source):
    """Feeds validated remote batches into the graph and acknowledges once committed.

    A batch with a ``batch_id`` is stored at most once: the id is committed in
    the same transaction as the batch's events (see ``IngestReceipt``), and a
    retry of a stored or in-flight id is answered as a duplicate.

    Options:
        recent_batch_ids: how many batch ids are remembered in memory (older
            ones are still found in the store).
    """

    class Options(BaseOptions):
        recent_batch_ids: int = Field(100_000, ge=1)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self._output: Any = None
        self._recent: OrderedDict[str, bool] = OrderedDict()
        self.accepted_events = 0
        self.duplicate_batches = 0
        context.services.setdefault(SERVICE_NAME, self)

    async def run(self, output: Output, stopping: anyio.Event) -> None:
        self._output = output
        try:
            await stopping.wait()
        finally:
            self._output = None

    async def submit(self, events: list[Any], batch_id: str | None = None) -> IngestResult:
        """Send validated events into the graph; return once they are committed.

        Raises:
            PipelineNotRunning: the pipeline is stopping or stopped.
        """
        output = self._output
        if output is None:
            raise PipelineNotRunning("runwatch is shutting down")
        events = owned_by_their_producer(events)
        if batch_id is not None:
            if batch_id in self._recent or await self._already_stored(batch_id):
                self.duplicate_batches += 1
                return IngestResult(0, batch_id, True)
            self._remember(batch_id)
            if events:
                events = [*events, IngestReceipt(events[0].run_id, time.time(), batch_id, len(events))]
        try:
            await output.send(events)
            committed = anyio.Event()
            output.flush_marker(committed.set)
            await committed.wait()
        except BaseException:
            if batch_id is not None:
                self._recent.pop(batch_id, None)  # not stored: a retry must be taken
            raise
        accepted = len(events) - (1 if batch_id is not None and events else 0)
        self.accepted_events += accepted
        return IngestResult(accepted, batch_id, False)

    def _remember(self, batch_id: str) -> None:
        self._recent[batch_id] = True
        while len(self._recent) > self.options.recent_batch_ids:
            self._recent.popitem(last=False)

    async def _already_stored(self, batch_id: str) -> bool:
        path = self.context.db_path

        def lookup() -> bool:
            connection = forksafe.connect(path, timeout=5)
            try:
                row = connection.execute("SELECT 1 FROM ingest_batches WHERE batch_id = ?", (batch_id,)).fetchone()
            except sqlite3.OperationalError:  # no such table yet: nothing stored
                return False
            finally:
                connection.close()
            return row is not None

        return await anyio.to_thread.run_sync(lookup)

    def statistics(self) -> dict[str, Any]:
        return {"accepted_events": self.accepted_events, "duplicate_batches": self.duplicate_batches}
