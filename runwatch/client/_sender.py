"""The non-blocking mode (I/O): a bounded queue of calls and the thread that delivers them.

A call is checked and copied in the application's thread, then appended to the queue
(no lock, no I/O). One sender thread per client (and per process) takes up to
``batch_size`` calls, groups them per session into batches with globally unique ids
and posts each to ``/api/sessions/{id}/batch``. A batch keeps its id across retries,
so the server applies it once. Nothing here raises into the application: trouble is
counted and logged, and visible in :meth:`Sender.statistics`.

A server without ``/batch`` (datacat answers it ``404 Not found``) gets each operation
as its own request in datacat's form, in call order, with the same retries; datacat
has no idempotency key, so a request whose answer was lost may be stored twice there.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._batching import (
    MAX_BATCH_BYTES,
    RETRY_BASE_SECONDS,
    Batch,
    backoff_delay,
    encode_batch,
    is_bisectable,
    is_retryable,
    plan_batches,
)
from ._errors import describe
from ._spool import read_spool, spool_files, write_spool
from ._transport import Transport
from ._wire import datacat_request, error_message, is_missing_route, session_path

__all__ = ["ClientStatistics", "Sender"]

logger = logging.getLogger("runwatch.client")


class ClientStatistics(NamedTuple):
    """Counters of a client, in calls (operations).

    Attributes:
        queued: calls accepted and not yet delivered (queue plus the batch in flight).
        max_queue: the bound of ``queued``.
        sent: calls delivered (including ones the server had already stored).
        dropped: calls given up, by reason: ``queue_full``, ``rejected`` (the
            server answered 4xx), ``too_large``, ``session_ended``, ``closed``
            (a call after close), ``shutdown`` (undelivered at close, no spool).
        retries: failed attempts that were retried (a retry that succeeds is not a drop).
        batches: batches delivered.
        duplicate_batches: delivered batches the server already had (a retry
            after a lost answer).
        spooled: calls written to ``spool_dir`` at close.
        replayed: calls read back from ``spool_dir``.
        last_error: the last failure, or ``None``.
    """

    queued: int
    max_queue: int
    sent: int
    dropped: dict[str, int]
    retries: int
    batches: int
    duplicate_batches: int
    spooled: int
    replayed: int
    last_error: str | None


class _Marker:
    """A flush request; travels the queue so it keeps its place among calls."""

    __slots__ = ("delivered", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.delivered = False


class _Aborted(Exception):
    """The sender must stop now (close() deadline passed)."""


class Sender:
    """The queue and sender thread of one non-blocking client, in one process.

    Args:
        transport: sends the requests.
        headers: sent with every request (content type, token).
        base_url: the server, for messages.
        max_queue: the most calls held (queued plus in flight).
        block_when_full: a call waits for room in a full queue instead of being dropped.
        batch_size: the most operations in one batch.
        flush_interval: the longest a call waits for more to share its batch, in seconds.
        spool_dir: where undelivered calls go at close, and come back from (``None``: no spool).
        retry_max_seconds: the longest wait between two retries.
        state_changes: ``(session_id, patch) -> bool``, whether a state update
            changes anything (repeats are not sent to a datacat server).
    """

    def __init__(
        self,
        transport: Transport,
        headers: Mapping[str, str],
        base_url: str,
        *,
        max_queue: int,
        block_when_full: bool = False,
        batch_size: int,
        flush_interval: float,
        spool_dir: Path | None,
        retry_max_seconds: float,
        state_changes: Callable[[str, dict[str, Any]], bool] = lambda session_id, patch: True,
    ) -> None:
        self.transport = transport
        self.headers = headers
        self.base_url = base_url
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spool_dir = spool_dir
        self.retry_max_seconds = retry_max_seconds
        self.block_when_full = block_when_full
        self._state_changes = state_changes
        self.closed = False
        self._broken = False  # the thread died of a bug: nothing more is sent
        self._room = threading.Condition()
        self._room_waiters = 0
        # Set when the server has no /batch route (datacat): each operation is one request.
        self._per_operation = False
        self._queue: deque[tuple[str, dict[str, Any]] | _Marker] = deque()
        self._held = 0  # calls taken by the sender and not yet resolved
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._abort = threading.Event()
        self._sleeping = False
        self._stopping = False
        self._ended: set[str] = set()
        # Batch ids are globally unique: a random prefix per sender (and per process, since a
        # forked child gets a new Sender) and a counter, so no id is ever reused for other content.
        self._batch_prefix = uuid.uuid4().hex
        self._batch_numbers = itertools.count(1)
        self._sent = 0
        self._dropped: dict[str, int] = {}
        self._queue_full_drops = 0  # counted in the app thread: see _drop_full
        self._queue_full_logged = 0
        self._retries = 0
        self._batches = 0
        self._duplicates = 0
        self._spooled = 0
        self._replayed = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None

    def resume_spooled(self) -> None:
        """Start sending what an earlier process left in ``spool_dir`` (creating the directory)."""
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            if spool_files(self.spool_dir):
                self._start()

    # -- the application's side -------------------------------------------------------

    def enqueue(self, session_id: str, operation: dict[str, Any]) -> None:
        """Queue one call; never blocks, never raises (a full queue drops and counts it)."""
        # The hot path: no lock, no I/O; deque.append is atomic under the GIL.
        if self.closed:
            self.drop("closed")
            return
        if session_id in self._ended:
            self.drop("session_ended")
            return
        queue = self._queue
        if len(queue) + self._held >= self.max_queue:
            if not self.block_when_full or not self._wait_for_room():
                self._drop_full()
                return
            if self.closed:
                self.drop("closed")
                return
        queue.append((session_id, operation))
        if self._thread is None:
            self._start()
        elif self._sleeping and len(queue) >= self.batch_size:
            self._wake.set()

    def _wait_for_room(self) -> bool:
        """Wait until the queue has room (or the client closed); ``False`` if waiting cannot help."""
        if self._thread is threading.current_thread() or self._thread is None or self._broken:
            return False
        with self._room:
            self._room_waiters += 1
            try:
                self._room.wait_for(
                    lambda: self.closed or self._broken or len(self._queue) + self._held < self.max_queue
                )
            finally:
                self._room_waiters -= 1
        return not self._broken

    def _notify_room(self) -> None:
        if self._room_waiters:
            with self._room:
                self._room.notify_all()

    def mark_ended(self, session_id: str) -> None:
        """Later calls for this session are dropped and counted (its end is queued)."""
        self._ended.add(session_id)

    def drop(self, reason: str, count: int = 1) -> None:
        """Count calls given up for ``reason``."""
        with self._count_lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _drop_full(self) -> None:
        with self._count_lock:
            self._queue_full_drops += 1

    def count_sent(self, count: int = 1) -> None:
        """Count calls delivered by blocking requests (so ``sent`` means the same in both modes)."""
        with self._count_lock:
            self._sent += count

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="runwatch-client-sender", daemon=True)
                thread.start()
                self._thread = thread

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every call queued before this one is delivered (or refused and counted).

        Returns:
            ``True`` when done; ``False`` on timeout, or when the sender stopped
            with calls still undelivered.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return not self._queue and self._held == 0
        marker = _Marker()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout) and marker.delivered

    def statistics(self) -> ClientStatistics:
        """A snapshot of the counters (see :class:`ClientStatistics`)."""
        with self._count_lock:
            dropped = dict(self._dropped)
            if self._queue_full_drops:
                dropped["queue_full"] = self._queue_full_drops
        queued = sum(1 for item in list(self._queue) if not isinstance(item, _Marker)) + self._held
        return ClientStatistics(
            queued=queued,
            max_queue=self.max_queue,
            sent=self._sent,
            dropped=dropped,
            retries=self._retries,
            batches=self._batches,
            duplicate_batches=self._duplicates,
            spooled=self._spooled,
            replayed=self._replayed,
            last_error=self._last_error,
        )

    def close(self, deadline: float, request_timeout: float) -> None:
        """Stop taking calls; deliver what is queued for up to ``deadline`` seconds, then spool or drop it.

        Args:
            deadline: the longest wait for delivery, in seconds.
            request_timeout: the socket timeout (the most one request in flight can take).
        """
        self.closed = True
        self._notify_room()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        self._stopping = True
        self._wake.set()
        thread.join(deadline)
        if thread.is_alive():
            self._abort.set()
            self._wake.set()
            thread.join(request_timeout + 1.0)  # at most one request in flight

    # -- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self.spool_dir is not None:
                self._replay_spool()
            while True:
                queue = self._queue
                if not queue and self._stopping:
                    return
                if len(queue) < self.batch_size and not self._stopping:
                    self._sleeping = True
                    if len(queue) < self.batch_size:
                        self._wake.wait(self.flush_interval)
                    self._sleeping = False
                    self._wake.clear()
                self._report_drops()
                calls, markers = self._take_round()
                if calls:
                    batches, too_large = plan_batches(
                        calls,
                        max_operations=self.batch_size,
                        max_bytes=MAX_BATCH_BYTES,
                        new_batch_id=self._new_batch_id,
                    )
                    if too_large:
                        self._give_up(len(too_large), "too_large", f"an operation over {MAX_BATCH_BYTES} bytes")
                    try:
                        self._deliver(deque(batches))
                    except _Aborted:
                        for marker in markers:
                            marker.done.set()  # delivered stays False
                        raise
                for marker in markers:
                    marker.delivered = True
                    marker.done.set()
        except _Aborted as exc:
            self._save_undelivered(exc.args[0] if exc.args else ())
        except BaseException as exc:  # a bug: never silent, and flush() must not hang
            self._last_error = f"sender failed: {describe(exc)}"
            logger.exception("runwatch client: the sender thread failed; later calls are not sent")
            self._broken = True
            self._release_markers()
            self._notify_room()

    def _new_batch_id(self) -> str:
        return f"{self._batch_prefix}-{next(self._batch_numbers)}"

    def _take_round(self) -> tuple[list[tuple[str, dict[str, Any]]], list[_Marker]]:
        """Up to batch_size calls from the queue, stopping after a flush marker."""
        calls: list[tuple[str, dict[str, Any]]] = []
        markers: list[_Marker] = []
        queue = self._queue
        while queue and len(calls) < self.batch_size:
            item = queue[0]
            if isinstance(item, _Marker):
                queue.popleft()
                markers.append(item)
                break
            self._held += 1  # before the pop, so the bound never under-counts
            queue.popleft()
            calls.append(item)
        return calls, markers

    def _deliver(self, work: deque[Batch]) -> None:
        """Send each batch until it is delivered or refused; retry the rest with backoff."""
        attempt = 0
        while work:
            batch = work[0]
            if self._abort.is_set():
                raise _Aborted(work)
            if self._per_operation:
                self._deliver_operations(work)
                continue
            path = session_path(batch.session_id, "/batch")
            try:
                status, data = self.transport("POST", path, batch.body, self.headers)
            except Exception as exc:  # OSError, HTTPException, or anything an injected transport raises
                error = f"{self.base_url} unreachable: {describe(exc)}"
            else:
                if status < 300:
                    work.popleft()
                    self._delivered(batch, data)
                    attempt = 0
                    continue
                if is_missing_route(status, data):
                    logger.info("runwatch client: %s has no /batch route; sending each call alone", self.base_url)
                    self._per_operation = True  # nothing was applied: the same calls go one by one
                    continue
                message, field = error_message(status, data)
                error = f"HTTP {status}: {message}" + (f" (field {field})" if field else "")
                if not is_retryable(status):
                    work.popleft()
                    if is_bisectable(status) and len(batch.operations) > 1:
                        # Nothing of a refused batch was applied: find the bad operations by halves.
                        half = len(batch.operations) // 2
                        for part in (batch.operations[half:], batch.operations[:half]):
                            work.appendleft(self._rebatch(batch.session_id, part))
                    else:
                        self._give_up(len(batch.operations), "rejected", f"batch {batch.batch_id}: {error}")
                    continue
            self._wait_before_retry(attempt, error, work)
            attempt += 1

    def _wait_before_retry(self, attempt: int, error: str, work: deque[Batch]) -> None:
        """Count a failed attempt and wait with backoff; raises _Aborted when close() gives up."""
        self._retries += 1
        self._last_error = error
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning("runwatch client: %s; retrying with backoff", error)
        delay = backoff_delay(
            attempt, base_seconds=RETRY_BASE_SECONDS, max_seconds=self.retry_max_seconds, jitter=random.random()
        )
        self._report_drops()
        if self._abort.wait(delay):
            raise _Aborted(work)

    def _deliver_operations(self, work: deque[Batch]) -> None:
        """Send the first batch's operations one by one in datacat's form (a server without /batch)."""
        batch = work[0]
        operations = batch.operations
        while operations:
            operation = operations[0]
            if operation["op"] == "state" and not self._state_changes(batch.session_id, operation["state"]):
                operations.pop(0)  # a repeated state: datacat's daemon drops it too
                self._resolved(1)
                continue
            suffix, document = datacat_request(operation)
            path = session_path(batch.session_id, suffix)
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
            attempt = 0
            while True:
                if self._abort.is_set():
                    work[0] = self._rebatch(batch.session_id, operations)  # what is left, under a new id
                    raise _Aborted(work)
                try:
                    status, data = self.transport("POST", path, body, self.headers)
                except Exception as exc:  # as in _deliver
                    error = f"{self.base_url} unreachable: {describe(exc)}"
                else:
                    if status < 300:
                        operations.pop(0)
                        self._resolved(1)
                        break
                    error = f"HTTP {status}: {error_message(status, data)[0]}"
                    if not is_retryable(status):
                        operations.pop(0)
                        self._give_up(1, "rejected", f"{operation['op']} of session {batch.session_id}: {error}")
                        break
                try:
                    self._wait_before_retry(attempt, error, work)
                except _Aborted:
                    work[0] = self._rebatch(batch.session_id, operations)
                    raise
                attempt += 1
        work.popleft()
        self._batches += 1

    def _resolved(self, count: int) -> None:
        """``count`` operations reached the server."""
        self._held -= count
        self._sent += count
        self._notify_room()
        if self._failing_since is not None:
            logger.warning(
                "runwatch client: delivering again after %.1f s of failures",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None

    def _rebatch(self, session_id: str, operations: list[dict[str, Any]]) -> Batch:
        batch_id = self._new_batch_id()
        return Batch(session_id, batch_id, list(operations), encode_batch(batch_id, operations))

    def _delivered(self, batch: Batch, data: bytes) -> None:
        duplicate = False
        try:
            duplicate = bool(json.loads(data).get("duplicate"))
        except Exception:  # an answer without a body still means delivered
            pass
        self._batches += 1
        self._duplicates += duplicate
        self._resolved(len(batch.operations))

    def _give_up(self, count: int, reason: str, error: str) -> None:
        self._held -= count
        self._notify_room()
        self.drop(reason, count)
        self._last_error = error
        logger.warning("runwatch client: dropped %d call(s) (%s): %s", count, reason, error)

    def _report_drops(self) -> None:
        dropped = self._queue_full_drops
        if dropped != self._queue_full_logged:
            logger.warning(
                "runwatch client: the queue is full (max_queue=%d): %d call(s) dropped so far",
                self.max_queue,
                dropped,
            )
            self._queue_full_logged = dropped

    def _release_markers(self) -> None:
        for item in list(self._queue):
            if isinstance(item, _Marker):
                item.done.set()

    # -- the spool --------------------------------------------------------------------

    def _save_undelivered(self, work: Iterable[Batch] = ()) -> None:
        """At an aborted close: spool (or drop) the batches in flight and the queue."""
        pending = list(work)
        calls = [item for item in self._queue if not isinstance(item, _Marker)]
        self._release_markers()
        self._queue.clear()
        batches, too_large = plan_batches(
            calls, max_operations=self.batch_size, max_bytes=MAX_BATCH_BYTES, new_batch_id=self._new_batch_id
        )
        pending += batches
        count = sum(len(batch.operations) for batch in pending)
        if too_large:
            self.drop("too_large", len(too_large))
        if not count:
            return
        if self.spool_dir is not None:
            try:
                write_spool(self.spool_dir, pending)
            except OSError as exc:
                self._last_error = f"spool: {describe(exc)}"
                logger.warning("runwatch client: cannot spool %d call(s): %s", count, exc)
            else:
                self._spooled += count
                self._held = 0
                self._notify_room()
                logger.warning("runwatch client: %d undelivered call(s) spooled to %s", count, self.spool_dir)
                return
        self.drop("shutdown", count)
        self._held = 0
        self._notify_room()
        logger.warning("runwatch client: %d undelivered call(s) dropped at close", count)

    def _replay_spool(self) -> None:
        assert self.spool_dir is not None
        for path in spool_files(self.spool_dir):
            claimed = path.with_name(f"{path.name}.sending-{os.getpid()}")
            try:
                path.rename(claimed)  # atomic: one process sends each file
                batches = read_spool(claimed)
            except OSError:
                continue  # another process took it
            except ValueError as exc:
                logger.warning("runwatch client: ignoring corrupt spool file %s: %s", claimed, exc)
                claimed.rename(claimed.with_suffix(".corrupt"))
                continue
            count = sum(len(batch.operations) for batch in batches)
            self._held += count
            self._replayed += count
            work = deque(batches)
            try:
                self._deliver(work)
            except _Aborted:
                self._held -= sum(len(batch.operations) for batch in work)
                write_spool(self.spool_dir, work)
                claimed.unlink()
                raise _Aborted(()) from None
            claimed.unlink()
