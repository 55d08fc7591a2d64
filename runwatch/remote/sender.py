"""Delivering spooled batches to a runwatch server's ingest: oldest first, each until acknowledged.

One thread per remote sink (or the caller's own thread, for ``runwatch
sync``) posts each record of its spools to ``POST /api/ingest`` (an image
record, one image too large for a batch with its raw bytes, to ``POST
/api/ingest/image``) on a keep-alive connection
(:class:`runwatch.client.HTTPTransport`) and acknowledges it in the spool
once the server answered:

- ``202`` (stored) or ``200`` (a duplicate: the server had it already, e.g.
  the answer to an earlier try was lost): delivered;
- no answer, ``5xx``, ``408``, ``425``, ``429``, and ``401``/``403`` (a token
  the server refuses): not stored; the same record is sent again after a
  capped exponential backoff with jitter (:func:`runwatch.client.backoff_delay`),
  for as long as it takes: records wait in the spool, never in memory;
- ``413`` (a server whose bounds are smaller than this producer's batches):
  the batch is sent in halves, ``<batch_id>.0`` and ``<batch_id>.1`` (each
  halved again if need be): ids that name the part, so a replay stores
  nothing twice (an image record, one event, is refused for good, as below);
- any other ``4xx`` (a body the server refuses: never the case for batches
  runwatch cut itself): logged with the server's message, counted as
  rejected, and skipped so the records behind it can go.

Records go one at a time, in order: a run's events reach the store in the
order they were logged. The token travels in the ``Authorization`` header
only; nothing here logs a header or a body.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from ..client import Transport, backoff_delay, is_retryable
from ..wire.ingest import IMAGE_BODY_TYPE, IMAGE_INGEST_PATH
from .spool import Spool, SpoolRecord

__all__ = ["INGEST_PATH", "Answer", "DeliveryStatistics", "SpoolSender"]

logger = logging.getLogger("runwatch.remote")

#: Where batches go on the server.
INGEST_PATH = "/api/ingest"
#: The first retry waits about this long; later ones double up to ``retry_max_seconds``.
RETRY_BASE_SECONDS = 0.05


class Answer(NamedTuple):
    """The server's final answer to a batch: ``status`` 202 (stored), 200 (``duplicate``: stored before), or a
    4xx that refuses it for good (``message`` says why)."""

    status: int
    duplicate: bool
    message: str | None

    @property
    def stored(self) -> bool:
        """Whether the server has the batch (now or from before)."""
        return self.status in (200, 202)


class DeliveryStatistics(NamedTuple):
    """Counters of a sender.

    Attributes:
        delivered_batches: batches the server acknowledged (stored now or before).
        delivered_events: events in them.
        duplicate_batches: of those, batches the server already had.
        rejected_batches: batches the server refused for good (4xx), skipped.
        rejected_events: events in them.
        retries: failed attempts that were tried again.
        last_error: the last failure, or ``None``.
    """

    delivered_batches: int
    delivered_events: int
    duplicate_batches: int
    rejected_batches: int
    rejected_events: int
    retries: int
    last_error: str | None


class SpoolSender:
    """Sends the records of its spools, oldest spool first (see the module docs).

    Args:
        transport: sends one request (a :class:`runwatch.client.HTTPTransport` to the server).
        token: the server's bearer token, sent in the ``Authorization`` header.
        retry_max_seconds: the longest wait between two tries of a record.
        on_delivered: called (on the sender's thread) after each record is
            acknowledged or skipped, with the record.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        token: str | None = None,
        retry_max_seconds: float = 2.0,
        on_delivered: Callable[[SpoolRecord], Any] | None = None,
    ) -> None:
        self._transport = transport
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._image_headers = {**self._headers, "Content-Type": IMAGE_BODY_TYPE}
        self.retry_max_seconds = retry_max_seconds
        self._on_delivered = on_delivered
        self._spools: list[Spool] = []
        self._condition = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._delivered_batches = 0
        self._delivered_events = 0
        self._duplicate_batches = 0
        self._rejected_batches = 0
        self._rejected_events = 0
        self._retries = 0
        self._failures = 0  # consecutive failed tries (for logging at powers of two)
        self._last_error: str | None = None

    # -- spools -------------------------------------------------------------------------------

    def add(self, spool: Spool) -> None:
        """Deliver ``spool``'s records too, after those of the spools added before it."""
        with self._condition:
            self._spools.append(spool)
        self.notify()

    @property
    def spools(self) -> list[Spool]:
        """The spools this sender delivers, in order."""
        with self._condition:
            return list(self._spools)

    def notify(self) -> None:
        """New records were appended: look again now."""
        self._wake.set()

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (a daemon: it never keeps the interpreter alive)."""
        self._thread = threading.Thread(target=self._deliver_until_stopped, name="runwatch-remote-sender", daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Deliver what the spools hold for up to ``timeout`` seconds, then stop the thread.

        What is not delivered by then stays in the spools.
        """
        self._deadline = time.monotonic() + max(0.0, timeout)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, timeout) + 1.0)
            if self._thread.is_alive():  # a request is still waiting for its answer
                closing = getattr(self._transport, "close", None)
                if closing is not None:
                    closing()  # its socket fails: the thread sees an error and stops
                self._thread.join(1.0)

    def deliver(self, timeout: float | None = None) -> bool:
        """Deliver every record in the caller's thread (``runwatch sync``); ``True`` once none is left.

        Args:
            timeout: give up after this many seconds (``None``: never).
        """
        self._deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            spool, record = self._next()
            if record is None:
                return True
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return False
            assert spool is not None
            self._deliver_one(spool, record)

    def wait_delivered(self, timeout: float | None) -> bool:
        """Wait until every record spooled before the call is acknowledged (or skipped).

        Returns:
            ``False`` when ``timeout`` seconds passed first (the server is away, say).
        """
        with self._condition:
            targets = [(spool, spool.acknowledged + spool.unacked_records) for spool in self._spools]
            return self._condition.wait_for(
                lambda: all(spool.acknowledged >= target for spool, target in targets), timeout
            )

    def _deliver_until_stopped(self) -> None:
        while True:
            self._wake.clear()
            spool, record = self._next()
            if record is None:
                if self._stopping.is_set():
                    return
                self._wake.wait(0.5)
                continue
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return
            assert spool is not None
            self._deliver_one(spool, record)

    def _next(self) -> tuple[Spool | None, SpoolRecord | None]:
        for spool in self.spools:
            record = spool.first()
            if record is not None:
                return spool, record
        return None, None

    def _deliver_one(self, spool: Spool, record: SpoolRecord) -> None:
        """Send one record until it is acknowledged, skipped, or the deadline passes."""
        try:
            body = spool.read(record)
        except OSError as exc:  # the disk lost it: nothing to send again
            logger.error("runwatch: a spooled batch in %s cannot be read (%s); skipped", spool.directory, exc)
            self._finish(spool, record)
            return
        if self.send(body, record.events, image=record.image) is not None:
            self._finish(spool, record)

    def send(self, body: bytes, events: int, *, image: bool = False, timeout: float | None = None) -> Answer | None:
        """Post one batch body until the server takes it, refuses it for good, or the deadline passes.

        Args:
            body: the ingest request body.
            events: how many events it holds (for the counters).
            image: ``body`` is an image body (``POST /api/ingest/image``), not a batch.
            timeout: give up after this many seconds (``None``: at the
                sender's deadline, if any: see :meth:`close` and :meth:`deliver`).

        Returns:
            The server's final answer, or ``None`` when the deadline passed first.
        """
        own_deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            answer = self._post(body, events, image)
            if answer is not None and answer.status == 413 and events > 1:
                return self._send_halves(body, own_deadline)
            if answer is not None:
                return answer
            attempt += 1
            self._retries += 1
            delay = backoff_delay(
                attempt - 1, base_seconds=RETRY_BASE_SECONDS, max_seconds=self.retry_max_seconds, jitter=random.random()
            )
            # Read at each try: close() sets the sender's deadline while a send is already retrying.
            deadline = self._deadline if own_deadline is None else own_deadline
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                delay = min(delay, left)
            if self._stopping.is_set():
                time.sleep(delay)  # closing: keep trying, at the same pace, until the deadline
            else:
                self._stopping.wait(delay)  # close() cuts the wait short: one more try at once

    def _send_halves(self, body: bytes, deadline: float | None) -> Answer | None:
        """Send a batch the server found too large as two halves (see the module docs); their joint answer."""
        document = orjson.loads(body)
        batch_id, events = document.get("batch_id"), document["events"]
        half = len(events) // 2
        answers = []
        for index, part in enumerate((events[:half], events[half:])):
            part_id = None if batch_id is None else f"{batch_id}.{index}"
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            answer = self.send(orjson.dumps({"batch_id": part_id, "events": part}), len(part), timeout=timeout)
            if answer is None:
                return None  # sent again later, whole: a half stored now is then a duplicate
            answers.append(answer)
        refused = [answer for answer in answers if not answer.stored]
        if refused:
            return refused[0]
        duplicate = all(answer.duplicate for answer in answers)
        return Answer(200 if duplicate else 202, duplicate, None)

    def _post(self, body: bytes, events: int, image: bool = False) -> Answer | None:
        """One try: the server's final answer, or ``None`` to try again."""
        path, headers = (IMAGE_INGEST_PATH, self._image_headers) if image else (INGEST_PATH, self._headers)
        try:
            status, reply = self._transport("POST", path, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return None
        if status in (200, 202):
            if self._failures:
                logger.warning("runwatch: the server takes batches again")
                self._failures = 0
            duplicate = status == 200 and _is_duplicate(reply)
            self._delivered_batches += 1
            self._delivered_events += events
            self._duplicate_batches += duplicate
            return Answer(status, duplicate, None)
        message = _error_message(reply)
        if status == 413 and events > 1:
            return Answer(status, False, message)  # too large for this server: sent in halves by send()
        if is_retryable(status) or status in (401, 403):
            self._failed(f"HTTP {status}: {message}")
            return None
        self._rejected_batches += 1
        self._rejected_events += events
        self._last_error = f"HTTP {status}: {message}"
        logger.error("runwatch: the server refused a batch of %d event(s) for good: %s", events, message)
        return Answer(status, False, message)

    def _failed(self, error: str) -> None:
        self._last_error = error
        self._failures += 1
        if self._failures & (self._failures - 1) == 0:  # 1, 2, 4, 8...: no log storm while the server is away
            logger.warning("runwatch: sending to the server failed (%d time(s) in a row): %s", self._failures, error)

    def _finish(self, spool: Spool, record: SpoolRecord) -> None:
        spool.acknowledge(record)
        with self._condition:
            self._condition.notify_all()
        if self._on_delivered is not None:
            self._on_delivered(record)

    @property
    def failing(self) -> bool:
        """Whether the latest try failed (the server is away or refusing): records wait."""
        return self._failures > 0

    def statistics(self) -> DeliveryStatistics:
        """The counters now."""
        return DeliveryStatistics(
            self._delivered_batches,
            self._delivered_events,
            self._duplicate_batches,
            self._rejected_batches,
            self._rejected_events,
            self._retries,
            self._last_error,
        )


def _is_duplicate(answer: bytes) -> bool:
    try:
        return bool(orjson.loads(answer).get("duplicate"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


def _error_message(answer: bytes) -> str:
    """The message of runwatch's error body, or the start of whatever the answer was."""
    try:
        error = orjson.loads(answer)["error"]
        field = f" (field {error['field']})" if error.get("field") else ""
        return f"{error['message']}{field}"
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return answer[:200].decode("utf-8", "replace") or "no message"
