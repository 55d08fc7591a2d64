"""Tests of runwatch.client._sender: the non-blocking queue and sender against the in-process double."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from runwatch.client import (
    MAX_BATCH_BYTES,
    DatacatClient,
)

from ._doubles import TIMEOUT, FakeServer, open_client


def test_non_blocking_delivers_everything_in_order_in_bounded_batches(fake: FakeServer) -> None:
    """Every call arrives once, in call order per session, in batches of at most batch_size."""
    with open_client(fake, batch_size=50) as client:
        first, second = client.create_session(), client.create_session()
        for index in range(1000):
            client.log_event(first if index % 3 else second, "e", {"i": index})
        client.update_state(first, {"status": "running"})
        client.end_session(first)
        assert client.flush(TIMEOUT)
        stats = client.statistics()
    assert [op["data"]["i"] for op in fake.operations[first] if op["op"] == "event"] == [
        i for i in range(1000) if i % 3
    ]
    assert [op["data"]["i"] for op in fake.operations[second]] == [i for i in range(1000) if not i % 3]
    assert fake.operations[first][-2:] == [
        {"op": "state", "state": {"status": "running"}, "timestamp": fake.operations[first][-2]["timestamp"]},
        {"op": "end", "timestamp": fake.operations[first][-1]["timestamp"]},
    ]
    assert all(len(fake_batch) <= 50 for fake_batch in _batch_sizes(fake))
    assert stats.sent == 1002
    assert stats.queued == 0 and stats.dropped == {} and stats.retries == 0


def _batch_sizes(fake: FakeServer) -> list[list[Any]]:
    return [doc["operations"] for method, path, doc in fake.requests if path.endswith("/batch")]


def test_operations_carry_the_call_time(client: DatacatClient, fake: FakeServer) -> None:
    """Each queued operation has the epoch time of its call, so late delivery keeps the true time."""
    fake.operations["s"] = []
    before = time.time()
    client.log_metric("s", "m", 1, tags=["a:b"])
    client.heartbeat("s")
    assert client.flush(TIMEOUT)
    metric, heartbeat = fake.operations["s"]
    assert metric == {"op": "metric", "name": "m", "value": 1, "tags": ["a:b"], "timestamp": metric["timestamp"]}
    assert before <= metric["timestamp"] <= heartbeat["timestamp"] <= time.time()


def test_flush_waits_only_for_earlier_calls_and_times_out_while_the_server_is_down(fake: FakeServer) -> None:
    """flush() returns False at its timeout while batches cannot be delivered, True once they are."""
    fake.operations["s"] = []
    fake.down = True
    with open_client(fake) as client:
        client.log_event("s", "e")
        started = time.monotonic()
        assert client.flush(0.05) is False
        assert time.monotonic() - started < TIMEOUT
        with fake.lock:
            fake.down = False
        assert client.flush(TIMEOUT) is True
    assert fake.names("s") == ["e"]


def test_failed_batches_are_retried_with_the_same_batch_id_and_not_duplicated(fake: FakeServer) -> None:
    """While the server is down, a batch is retried under one batch_id and delivered once when it returns."""
    fake.operations["s"] = []
    fake.down = True
    with open_client(fake) as client:
        for index in range(10):
            client.log_event("s", "e", {"i": index})
        fake.wait_for(lambda: len(fake.requests) >= 3)
        with fake.lock:
            fake.down = False
        assert client.flush(TIMEOUT)
        stats = client.statistics()
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(10))
    assert stats.retries >= 3
    assert "ConnectionRefusedError" in (stats.last_error or "")
    assert stats.sent == 10 and stats.dropped == {}


def test_a_lost_answer_is_retried_and_the_server_dedupes_the_batch(fake: FakeServer) -> None:
    """When the server applied a batch but the answer was lost, the retry is a duplicate, applied once."""
    fake.operations["s"] = []
    fake.lose_answers = 1
    with open_client(fake) as client:
        client.log_event("s", "e")
        assert client.flush(TIMEOUT)
        stats = client.statistics()
    assert fake.names("s") == ["e"]
    assert fake.attempted_batch_ids[0] == fake.attempted_batch_ids[1]
    assert stats.duplicate_batches == 1 and stats.retries == 1 and stats.sent == 1


@pytest.mark.parametrize("status", [pytest.param(503, id="503"), pytest.param(429, id="429")])
def test_overload_answers_are_retried(fake: FakeServer, status: int) -> None:
    """A 503 or 429 answer means try again: the batch is delivered on the next attempt."""
    fake.operations["s"] = []
    fake.status_override.extend([status, status])
    with open_client(fake) as client:
        client.log_event("s", "e")
        assert client.flush(TIMEOUT)
        assert client.statistics().retries == 2
    assert fake.names("s") == ["e"]


def test_a_full_queue_drops_the_newest_calls_and_counts_them(fake: FakeServer) -> None:
    """With the sender stuck, calls beyond max_queue are dropped (newest first) without raising or blocking."""
    fake.operations["s"] = []
    fake.gate = threading.Event()
    with open_client(fake, max_queue=10) as client:
        client.log_event("s", "e", {"i": 0})
        assert fake.entered.wait(TIMEOUT)  # the sender holds call 0 in flight
        for index in range(1, 31):
            client.log_event("s", "e", {"i": index})
        stats = client.statistics()
        assert stats.queued == 10
        assert stats.dropped == {"queue_full": 21}
        fake.gate.set()
        assert client.flush(TIMEOUT)
        assert client.statistics().sent == 10
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(10))


def test_a_refused_batch_is_bisected_so_only_the_bad_call_is_dropped(fake: FakeServer) -> None:
    """A 422 batch is split in halves until the bad operation is alone; the good ones are delivered."""
    fake.operations["s"] = []
    fake.bad_name = "bad"
    with open_client(fake, flush_interval=1.0) as client:
        for index in range(8):
            client.log_event("s", "bad" if index == 5 else "good", {"i": index})
        assert client.flush(TIMEOUT)
        stats = client.statistics()
    assert [op["data"]["i"] for op in fake.operations["s"]] == [0, 1, 2, 3, 4, 6, 7]
    assert stats.dropped == {"rejected": 1}
    assert "422" in (stats.last_error or "")


def test_a_batch_for_an_unknown_session_is_dropped_and_counted(client: DatacatClient, fake: FakeServer) -> None:
    """A 404 refuses the whole batch: it is dropped, counted as rejected, and later calls still flow."""
    fake.operations["known"] = []
    client.log_event("unknown", "e")
    assert client.flush(TIMEOUT)
    client.log_event("known", "e")
    assert client.flush(TIMEOUT)
    assert client.statistics().dropped == {"rejected": 1}
    assert fake.names("known") == ["e"]


def test_calls_after_end_or_close_are_dropped_and_counted(fake: FakeServer) -> None:
    """Non-blocking calls for an ended session or on a closed client are counted drops, not exceptions."""
    fake.operations["s"] = []
    client = open_client(fake)
    client.end_session("s")
    client.log_event("s", "late")
    client.close()
    client.log_event("s", "after-close")
    assert client.statistics().dropped == {"session_ended": 1, "closed": 1}
    assert fake.names("s") == ["end"]


def test_close_drops_and_counts_what_cannot_be_delivered_without_a_spool(fake: FakeServer) -> None:
    """close() gives up at its deadline; undelivered calls are counted as shutdown drops."""
    fake.operations["s"] = []
    fake.down = True
    client = open_client(fake)
    for _ in range(5):
        client.log_event("s", "e")
    started = time.monotonic()
    client.close(timeout=0.05)
    assert time.monotonic() - started < TIMEOUT
    assert client.statistics().dropped == {"shutdown": 5}
    assert client.statistics().queued == 0


def test_an_operation_larger_than_a_batch_body_is_dropped_and_counted(client: DatacatClient, fake: FakeServer) -> None:
    """One call whose JSON exceeds the batch body limit cannot be sent: it is dropped as too_large."""
    fake.operations["s"] = []
    client.log_event("s", "huge", {"blob": "x" * (MAX_BATCH_BYTES + 1)})
    client.log_event("s", "small")
    assert client.flush(TIMEOUT)
    assert client.statistics().dropped == {"too_large": 1}
    assert fake.names("s") == ["small"]


def test_a_batch_id_is_never_reused_for_other_content(fake: FakeServer) -> None:
    """Every attempt under one batch id carries the same operations; a refused batch is split under new ids."""
    fake.operations["s"] = []
    fake.bad_name = "bad"
    fake.lose_answers = 2  # two applied batches are retried under their ids
    with open_client(fake, flush_interval=1.0) as client:
        for index in range(8):
            client.log_event("s", "bad" if index == 5 else "good", {"i": index})
        assert client.flush(TIMEOUT)
    sent: dict[str, set[str]] = {}
    for _, path, document in fake.requests:
        if path.endswith("/batch"):
            sent.setdefault(document["batch_id"], set()).add(json.dumps(document["operations"], sort_keys=True))
    assert len(sent) > 2 and all(len(contents) == 1 for contents in sent.values())
    assert [op["data"]["i"] for op in fake.operations["s"]] == [0, 1, 2, 3, 4, 6, 7]


def test_batch_ids_are_unique_across_clients() -> None:
    """Each client (and each forked child, which builds a new sender) draws its ids from a random prefix."""
    first, second = open_client(FakeServer()), open_client(FakeServer())
    ids = {first._sender._new_batch_id(), first._sender._new_batch_id(), second._sender._new_batch_id()}
    assert len(ids) == 3 and len({batch_id.rsplit("-", 1)[0] for batch_id in ids}) == 2
    first.close(0)
    second.close(0)


def test_datacat_fields_reach_batch_in_runwatchs_form(client: DatacatClient, fake: FakeServer) -> None:
    """Queued datacat fields are folded into data in /batch (the route takes runwatch's fields only)."""
    fake.operations["s"] = []
    client.log_event("s", "e", "ui", "grp", ["l"], "hi", {"k": 1})
    client.log_metric("s", "t", 0.5, metric_type="timer", count=2, unit="seconds")
    assert client.flush(TIMEOUT)
    event, metric = fake.operations["s"]
    assert event["data"] == {"k": 1, "category": "ui", "group": "grp", "labels": ["l"], "message": "hi"}
    assert set(metric) == {"op", "name", "value", "timestamp"}
