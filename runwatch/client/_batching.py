"""Batching and retry decisions of the non-blocking mode (pure: no I/O, no clock)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from ._wire import lean_operation

__all__ = [
    "MAX_BATCH_BYTES",
    "RETRY_BASE_SECONDS",
    "Batch",
    "backoff_delay",
    "encode_batch",
    "is_bisectable",
    "is_retryable",
    "plan_batches",
]

#: The largest batch body; the server's default limit is 1 MiB.
MAX_BATCH_BYTES = 512 * 1024
#: The first retry waits about this long; later ones double up to retry_max_seconds.
RETRY_BASE_SECONDS = 0.05


class Batch:
    """Operations of one session, sent as one ``/batch`` request under one ``batch_id``."""

    __slots__ = ("batch_id", "body", "operations", "session_id")

    def __init__(self, session_id: str, batch_id: str, operations: list[dict[str, Any]], body: bytes) -> None:
        self.session_id = session_id
        self.batch_id = batch_id
        self.operations = operations
        self.body = body

    def __repr__(self) -> str:
        return f"Batch({self.session_id!r}, {self.batch_id!r}, {len(self.operations)} operations)"


def encode_batch(batch_id: str, operations: list[dict[str, Any]]) -> bytes:
    """The JSON body of ``POST /api/sessions/{id}/batch``: the operations in runwatch's lean form.

    The same id and operations always give the same body, so a batch retried (or
    replayed from the spool) under its id is the same content.
    """
    document = {"batch_id": batch_id, "operations": [lean_operation(operation) for operation in operations]}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def plan_batches(
    calls: Iterable[tuple[str, dict[str, Any]]],
    *,
    max_operations: int,
    max_bytes: int,
    new_batch_id: Callable[[], str],
) -> tuple[list[Batch], list[dict[str, Any]]]:
    """Group queued calls into batches: per session, in call order, bounded in count and bytes.

    Args:
        calls: ``(session_id, operation)`` pairs in the order they were made.
        max_operations: the most operations in one batch.
        max_bytes: the largest body; a larger batch is split in halves.
        new_batch_id: gives a fresh, globally unique batch id.

    Returns:
        The batches (sessions in order of first appearance), and the
        operations too large to send even alone.
    """
    by_session: dict[str, list[dict[str, Any]]] = {}
    for session_id, operation in calls:
        by_session.setdefault(session_id, []).append(operation)
    batches: list[Batch] = []
    too_large: list[dict[str, Any]] = []
    for session_id, operations in by_session.items():
        for start in range(0, len(operations), max_operations):
            _fit(session_id, operations[start : start + max_operations], max_bytes, new_batch_id, batches, too_large)
    return batches, too_large


def _fit(
    session_id: str,
    operations: list[dict[str, Any]],
    max_bytes: int,
    new_batch_id: Callable[[], str],
    batches: list[Batch],
    too_large: list[dict[str, Any]],
) -> None:
    batch_id = new_batch_id()
    body = encode_batch(batch_id, operations)
    if len(body) <= max_bytes:
        batches.append(Batch(session_id, batch_id, operations, body))
    elif len(operations) == 1:
        too_large.append(operations[0])
    else:
        half = len(operations) // 2
        _fit(session_id, operations[:half], max_bytes, new_batch_id, batches, too_large)
        _fit(session_id, operations[half:], max_bytes, new_batch_id, batches, too_large)


def backoff_delay(attempt: int, *, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """The wait before retry number ``attempt`` (0 first): doubling, capped, with jitter.

    Args:
        attempt: how many retries of this batch came before.
        base_seconds: the first delay before jitter.
        max_seconds: the cap.
        jitter: a number in [0, 1); the delay is between half and all of the
            capped exponential value, so clients that failed together spread out.
    """
    delay = min(max_seconds, base_seconds * 2.0 ** min(attempt, 60))
    return delay * (0.5 + 0.5 * jitter)


def is_retryable(status: int) -> bool:
    """Whether an answer with this status may succeed later (the batch was not applied)."""
    return status >= 500 or status in (408, 425, 429)


def is_bisectable(status: int) -> bool:
    """Whether a refused batch may hold good operations beside a bad one (bad body, too large)."""
    return status in (400, 413, 422)
