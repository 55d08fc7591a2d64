"""datacat's sessions on runwatch: what datacat's server does with a session, over runwatch's store and pipeline.

The web's datacat routes (:mod:`runwatch.web.datacat`) read a request and
answer it; :class:`DatacatSessions` does what datacat's server does in
between: a create first marks the machine's suspended sessions crashed
(datacat's crash detection) and stores that with the new session in one
commit; every write checks the session exists and is answered once stored
(through the pipeline's ``ingest`` source, so alerts, the live hub and the
dashboard see it); reads build datacat's session document from the stored
rows with the liveness flags of the moment (:mod:`runwatch.wire.datacat`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio.to_thread

from ..store.base import Store
from ..wire.datacat import CreateBody, crash_detected_event, create_events, session_document
from ..wire.gojson import Struct

__all__ = ["DatacatSessions"]

_T = TypeVar("_T")


class DatacatSessions:
    """datacat's sessions in a store, written through a pipeline.

    Args:
        store: the store the sessions are read from.
        submit: stores a list of events and returns once they are committed
            (the ``ingest`` source's ``submit``).
        heartbeat_timeout_seconds: silence after which a session that
            heartbeated is suspended (a session's own timeout wins).

    Raises (every method):
        UnknownRunError: no session has the id.
        StoreError: the store cannot be read.
    """

    def __init__(
        self,
        store: Store,
        submit: Callable[[list[Any]], Awaitable[object]],
        *,
        heartbeat_timeout_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.submit = submit
        self.heartbeat_timeout_seconds = heartbeat_timeout_seconds

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def create(self, session_id: str, body: CreateBody, now: float) -> None:
        """Create a session; with a ``machine_id``, that machine's suspended sessions (which did not
        resume: the machine came back with a new one) are marked crashed in the same commit."""
        events: list[Any] = []
        if body.machine_id:
            suspended = await self._read(
                self.store.suspended_sessions_of_machine, body.machine_id, now, self.heartbeat_timeout_seconds
            )
            events += [crash_detected_event(old, body.machine_id, now) for old in suspended]
        events += create_events(session_id, body, now)
        await self.submit(events)

    async def write(self, session_id: str, events: list[Any]) -> None:
        """Store a session's events (taken after its end too, as datacat takes them)."""
        await self._read(self.store.session_run_status, session_id)
        await self.submit(events)

    async def document(self, session_id: str, now: float) -> Struct:
        """datacat's document of one session at ``now``."""
        (rows,) = await self._read(self.store.whole_sessions, [session_id])
        return session_document(**rows, now=now, timeout_seconds=self.heartbeat_timeout_seconds)

    async def documents(self, now: float, session_ids: Sequence[str] | None = None) -> list[Struct]:
        """datacat's documents of every session (or of ``session_ids``) at ``now``, oldest first."""
        sessions = await self._read(self.store.whole_sessions, session_ids)
        timeout = self.heartbeat_timeout_seconds
        return [session_document(**rows, now=now, timeout_seconds=timeout) for rows in sessions]
