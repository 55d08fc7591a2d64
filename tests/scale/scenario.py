"""A producer and checks shared by the scale tier's fault tests.

:class:`Producer` posts numbered batches of logging calls to serve nodes the
way a remote producer does: each batch has a fixed id and content, and is
sent again (same id, same content) after a 503 or a lost connection until it
is acknowledged, so every batch ends up acknowledged exactly once from the
producer's side. :func:`wait_stored` and :func:`assert_stored_once` read the
PostgreSQL store back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from runwatch.store.postgres import PostgresStore

T0 = 1_800_000_000.0


@dataclass
class Producer:
    """Posts batches ``0..batches-1`` of ``calls`` logging calls each, spread over ``runs`` runs.

    Batch ``i`` belongs to run ``run-<i % runs>`` and logs steps ``i * calls ... i * calls + calls - 1``.
    """

    urls: list[str]
    batches: int
    calls: int = 20
    runs: int = 8  # run-0 ... run-7 fall in every one of 4 partitions
    retry_seconds: float = 60.0
    acknowledged: list[int] = field(default_factory=list)
    retries: int = 0
    answered_at: dict[int, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    _milestones: dict[int, threading.Event] = field(default_factory=dict)

    def reached(self, count: int) -> threading.Event:
        """Set once ``count`` batches are acknowledged (or the producer ended); for the test to wait on."""
        return self._milestones.setdefault(count, threading.Event())

    def _acknowledge(self, index: int) -> None:
        self.acknowledged.append(index)
        self.answered_at[index] = time.monotonic()
        milestone = self._milestones.get(len(self.acknowledged))
        if milestone is not None:
            milestone.set()

    def run_of(self, index: int) -> str:
        return f"run-{index % self.runs}"

    def body(self, index: int) -> dict[str, Any]:
        run_id = self.run_of(index)
        events = [
            {
                "kind": "metric",
                "run_id": run_id,
                "timestamp": T0 + index + call / 1000,
                "step": index * self.calls + call,
                "values": {"loss": 1.0 / (index * self.calls + call + 1), "accuracy": call / self.calls},
            }
            for call in range(self.calls)
        ]
        return {"batch_id": f"batch-{index}", "events": events}

    def post(self, client: httpx.Client, index: int, node: int) -> None:
        """Send batch ``index`` until it is acknowledged (trying the nodes in turn from ``node``)."""
        deadline = time.monotonic() + self.retry_seconds
        body = self.body(index)
        attempt = 0
        while True:
            url = self.urls[(node + attempt) % len(self.urls)]
            attempt += 1
            try:
                response = client.post(f"{url}/api/ingest", json=body, timeout=10)
                if response.status_code in (200, 202):
                    self._acknowledge(index)
                    return
                if response.status_code != 503:
                    raise AssertionError(f"batch {index}: {response.status_code} {response.text}")
            except httpx.TransportError:
                pass  # the node died or restarted: the batch goes again, to another node
            self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {index} was not acknowledged within {self.retry_seconds} s")
            time.sleep(0.05)  # a producer's back-off before a retry: time is the subject here

    def run(self) -> None:
        """Post every batch in order (alternating between the nodes), then return."""
        try:
            with httpx.Client() as client:
                for index in range(self.batches):
                    if self.stop.is_set():
                        return
                    self.post(client, index, index)
        finally:
            for milestone in self._milestones.values():
                milestone.set()  # nobody waits for a count that will never come


def stored_calls(store: PostgresStore, runs: int) -> int:
    """Logging calls the store holds over the producer's runs."""
    total = 0
    for run in range(runs):
        statuses = store.run_statuses([f"run-{run}"])
        if statuses:
            total += int(store.run_summary(f"run-{run}")["metrics"].get("loss", {}).get("count", 0))
    return total


def wait_stored(store: PostgresStore, producer: Producer, timeout: float = 60.0) -> None:
    """Wait (bounded) until the store holds at least every call of every acknowledged batch."""
    expected = len(producer.acknowledged) * producer.calls
    deadline = time.monotonic() + timeout
    while stored_calls(store, producer.runs) < expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"stored {stored_calls(store, producer.runs)} of {expected} calls in {timeout} s")
        time.sleep(0.2)  # the workers commit on their own schedule: poll what the store holds


def assert_stored_once(store: PostgresStore, producer: Producer) -> None:
    """Every call of every acknowledged batch is stored exactly once (no step twice, none missing)."""
    for run in range(producer.runs):
        run_id = f"run-{run}"
        expected = sorted(
            index * producer.calls + call
            for index in producer.acknowledged
            if producer.run_of(index) == run_id
            for call in range(producer.calls)
        )
        frame = store.run_metrics(run_id)
        steps = sorted(int(step) for step in frame["step"])
        assert steps == expected, f"{run_id}: {len(steps)} calls stored, {len(expected)} expected"
        assert store.run_summary(run_id)["metrics"]["loss"]["count"] == len(expected)


async def eventually(condition: Callable[[], Awaitable[bool]], *, timeout: float, pause: float = 0.01) -> None:
    """Ask ``condition`` until it holds (a server's state: nothing to await but its answers), bounded.

    Raises:
        TimeoutError: it did not hold within ``timeout`` seconds.
    """
    import anyio

    with anyio.fail_after(timeout):
        while True:
            if await condition():
                return
            await anyio.sleep(pause)
