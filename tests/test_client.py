"""Tests for runwatch.client: the pure core, the non-blocking sender against an in-process
double of the server, and every endpoint against a real ``runwatch serve`` subprocess."""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from runwatch.client import (
    MAX_BATCH_BYTES,
    ClientClosedError,
    DatacatClient,
    DatacatConnectionError,
    DatacatError,
    HeartbeatWatch,
    Session,
    backoff_delay,
    create_session,
    exception_data,
    is_bisectable,
    is_retryable,
    plan_batches,
)

# Guards every wait; nothing here legitimately takes this long.
TIMEOUT = 20.0
SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "002_b2b18d50e8730478.txt"


# -- an in-process double of the sessions API -------------------------------------------


class FakeServer:
    """A transport that answers like docs/sessions.md, in memory, with switches for failures.

    Attributes:
        down: raise ConnectionRefusedError instead of answering.
        gate: when set to an Event, requests wait on it (the sender blocks).
        lose_answers: apply this many batches, then fail as if the answer was lost.
        bad_name: a batch holding an event or metric of this name is refused with 422.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.operations: dict[str, list[dict[str, Any]]] = {}
        self.batch_ids: list[str] = []  # applied, in order
        self.attempted_batch_ids: list[str] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.ended: set[str] = set()
        self.down = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lose_answers = 0
        self.bad_name: str | None = None
        self.status_override: deque[int] = deque()
        self.created = 0

    def __call__(self, method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        document = json.loads(body) if body else None
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        with self.lock:
            self.requests.append((method, path, document))
            self.lock.notify_all()
            if self.down:
                raise ConnectionRefusedError(111, "Connection refused")
            status, answer = self._answer(method, path, document)
        if status == 200 and path.endswith("/batch") and self.lose_answers:
            self.lose_answers -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return status, json.dumps(answer).encode()

    def _answer(self, method: str, path: str, document: Any) -> tuple[int, Any]:
        parts = [unquote(part) for part in urlsplit(path).path.split("/")[1:]]
        if parts == ["api", "sessions"]:
            self.created += 1
            session_id = f"s{self.created}"
            self.operations[session_id] = []
            return 201, {"session_id": session_id, "session": {"id": session_id, "metadata": document}}
        session_id = parts[2]
        if session_id not in self.operations:
            return 404, {"error": {"status": 404, "message": f"unknown session {session_id!r}", "field": None}}
        if method == "GET":
            return 200, {"id": session_id, "operations": self.operations[session_id]}
        action = parts[3]
        if session_id in self.ended:
            return 409, {"error": {"status": 409, "message": "the session has ended", "field": None}}
        if action != "batch":
            self.operations[session_id].append({"op": action, **(document or {})})
            if action == "end":
                self.ended.add(session_id)
            return 200, {"ok": True}
        self.attempted_batch_ids.append(document["batch_id"])
        if self.status_override:
            status = self.status_override.popleft()
            return status, {"error": {"status": status, "message": "forced", "field": None}}
        if document["batch_id"] in self.batch_ids:
            return 200, {"accepted": 0, "duplicate": True}
        operations = document["operations"]
        if self.bad_name is not None and any(op.get("name") == self.bad_name for op in operations):
            return 422, {"error": {"status": 422, "message": "bad name", "field": "operations[0].name"}}
        self.batch_ids.append(document["batch_id"])
        self.operations[session_id].extend(operations)
        if any(op["op"] == "end" for op in operations):
            self.ended.add(session_id)
        return 200, {"accepted": len(operations), "duplicate": False}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait (bounded) until ``predicate`` holds after some request."""
        with self.lock:
            assert self.lock.wait_for(predicate, timeout), "timed out waiting for the fake server"

    def names(self, session_id: str) -> list[str]:
        """The names of the session's applied events and metrics, in order."""
        return [op.get("name", op["op"]) for op in self.operations[session_id]]


@pytest.fixture
def fake() -> FakeServer:
    """A fresh in-process server double."""
    return FakeServer()


def open_client(fake: FakeServer, **options: Any) -> DatacatClient:
    """A non-blocking client on ``fake``, with fast retries and batching."""
    options = {"blocking": False, "flush_interval": 0.01, "retry_max_seconds": 0.02, **options}
    return DatacatClient("http://fake.invalid", transport=fake, **options)


@pytest.fixture
def client(fake: FakeServer) -> Iterator[DatacatClient]:
    """A non-blocking client on the fake server, closed afterwards."""
    with open_client(fake) as client:
        yield client


# -- the pure core -----------------------------------------------------------------------


def test_import_uses_the_standard_library_only() -> None:
    """Importing runwatch.client loads no third-party module (pandas, anyio, orjson, pydantic...)."""
    code = "import sys, runwatch.client\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    top_level = set(result.stdout.split())
    assert {"pandas", "anyio", "orjson", "pydantic", "numpy", "typer"}.isdisjoint(top_level)
    # Only the standard library, runwatch itself and the import machinery of an editable install:
    assert {name for name in top_level - set(sys.stdlib_module_names) if not name.startswith("_")} == {"runwatch"}


def test_payloads_are_copied_so_later_changes_do_not_leak(client: DatacatClient, fake: FakeServer) -> None:
    """A dict changed after the call is sent as it was at the call."""
    data = {"nested": {"list": [1, 2]}, "n": 1}
    client.log_event("s0", "e", data)
    data["nested"]["list"].append(3)
    data["n"] = 2
    fake.operations["s0"] = []
    assert client.flush(TIMEOUT)
    assert fake.operations["s0"][0]["data"] == {"nested": {"list": [1, 2]}, "n": 1}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda c: c.log_event("", "e"), TypeError, "session_id", id="empty-session-id"),
        pytest.param(lambda c: c.log_event(None, "e"), TypeError, "session_id", id="none-session-id"),
        pytest.param(lambda c: c.log_event("s", 3), TypeError, "name", id="name-not-str"),
        pytest.param(lambda c: c.log_event("s", ""), ValueError, "name", id="empty-name"),
        pytest.param(lambda c: c.log_metric("s", "m" * 201, 1.0), ValueError, "1 to 200", id="long-name"),
        pytest.param(lambda c: c.log_event("s", "e", [1]), TypeError, "data must be a dict", id="data-list"),
        pytest.param(lambda c: c.log_event("s", "e", {"x": object()}), TypeError, r"data\.x", id="data-object"),
        pytest.param(
            lambda c: c.log_event("s", "e", {"a": [{"b": math.nan}]}),
            ValueError,
            r"data\.a\[0\]\.b",
            id="data-nan-path",
        ),
        pytest.param(lambda c: c.log_event("s", "e", {1: 2}), TypeError, "keys must be strings", id="data-int-key"),
        pytest.param(lambda c: c.log_event("s", "e", level="loud"), ValueError, "level", id="bad-level"),
        pytest.param(lambda c: c.log_metric("s", "m", "1"), TypeError, "real number", id="value-str"),
        pytest.param(lambda c: c.log_metric("s", "m", True), TypeError, "real number", id="value-bool"),
        pytest.param(lambda c: c.log_metric("s", "m", math.inf), ValueError, "finite", id="value-inf"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags="a"), TypeError, "tags", id="tags-str"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags=[1]), TypeError, "tags", id="tags-int"),
        pytest.param(lambda c: c.update_state("s", "running"), TypeError, "state must be a dict", id="state-str"),
        pytest.param(lambda c: c.log_exception("s"), ValueError, "no.*exception|none is being", id="no-exception"),
        pytest.param(
            lambda c: c.log_event("s", "e", {"files": ["ok", "f\udcff"]}),
            ValueError,
            r"^data\.files\[1\] must be valid unicode",
            id="data-lone-surrogate",
        ),
        pytest.param(
            lambda c: c.update_state("s", {"f\udcff": 1}), ValueError, r"^state keys must be valid", id="state-key"
        ),
        pytest.param(lambda c: c.log_event("s", "e\udcff"), ValueError, "name must be valid unicode", id="name-lone"),
        pytest.param(lambda c: c.log_metric("s", "m", 1.0, tags=["\udcff"]), ValueError, "tags", id="tag-lone"),
    ],
)
@pytest.mark.parametrize("blocking", [pytest.param(True, id="blocking"), pytest.param(False, id="non-blocking")])
def test_bad_arguments_raise_at_the_call(
    fake: FakeServer, blocking: bool, call: Callable[[DatacatClient], None], error: type[Exception], match: str
) -> None:
    """A caller's mistake raises TypeError/ValueError at the call in both modes, and nothing is queued."""
    with open_client(fake, blocking=blocking) as client:
        with pytest.raises(error, match=match):
            call(client)
        assert client.statistics().queued == 0
    assert fake.requests == []


def test_numpy_scalars_are_accepted_as_numbers() -> None:
    """numpy integers, floats and bools are converted to JSON numbers and booleans."""
    numpy = pytest.importorskip("numpy")
    fake = FakeServer()
    fake.operations["s"] = []
    with open_client(fake) as client:
        client.log_metric("s", "m", numpy.float32(0.5))
        client.log_event("s", "e", {"i": numpy.int64(3), "f": numpy.float64(1.5), "b": numpy.bool_(True)})
        assert client.flush(TIMEOUT)
    metric, event = fake.operations["s"]
    assert metric["value"] == 0.5
    assert event["data"] == {"i": 3, "f": 1.5, "b": True}


def test_exception_data_has_type_message_traceback_and_extra() -> None:
    """The exception event's data names the type and message, carries the traceback and the extra keys."""
    try:
        raise KeyError("missing")
    except KeyError:
        data = exception_data(extra_data={"context": "user_action", "type": "ignored"})
    assert data["type"] == "KeyError"
    assert data["message"] == "'missing'"
    assert "Traceback (most recent call last)" in data["traceback"]
    assert 'raise KeyError("missing")' in data["traceback"]
    assert data["context"] == "user_action"


def test_exception_data_escapes_a_non_utf8_file_name_instead_of_refusing_it() -> None:
    """An exception whose message holds a lone surrogate is logged with it escaped as \\udcxx."""
    name = os.fsdecode(b"ckpt_\xff.pt")
    data = exception_data(ValueError(f"cannot load {name}"))
    assert data["message"] == "cannot load ckpt_\\udcff.pt"
    json.dumps(data, ensure_ascii=False).encode()  # encodable: the batch it joins can be sent


def test_exception_data_accepts_an_exception_instance_and_an_unprintable_one() -> None:
    """An exception object works as exc_info, even one whose __str__ raises."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    data = exception_data(Unprintable())
    assert data["type"] == "Unprintable"
    assert data["message"] == "<unprintable Unprintable>"


def test_plan_batches_groups_by_session_in_call_order_and_bounds_count() -> None:
    """Calls are grouped per session in order, at most max_operations per batch, each with a new id."""
    calls = [("a", {"i": 0}), ("b", {"i": 1}), ("a", {"i": 2}), ("a", {"i": 3}), ("a", {"i": 4})]
    ids = iter(range(100))
    batches, too_large = plan_batches(calls, max_operations=2, max_bytes=10_000, new_batch_id=lambda: f"id{next(ids)}")
    assert [(b.session_id, [op["i"] for op in b.operations]) for b in batches] == [
        ("a", [0, 2]),
        ("a", [3, 4]),
        ("b", [1]),
    ]
    assert len({b.batch_id for b in batches}) == 3
    assert json.loads(batches[0].body) == {"batch_id": batches[0].batch_id, "operations": [{"i": 0}, {"i": 2}]}
    assert too_large == []


def test_plan_batches_splits_by_bytes_and_sets_aside_single_operations_too_large() -> None:
    """A batch over max_bytes is halved until it fits; one operation over the limit is set aside."""
    calls = [("a", {"x": "y" * 100}) for _ in range(8)] + [("a", {"x": "z" * 1000})]
    counter = iter(range(1000))
    batches, too_large = plan_batches(calls, max_operations=100, max_bytes=400, new_batch_id=lambda: str(next(counter)))
    assert all(len(b.body) <= 400 for b in batches)
    assert sum(len(b.operations) for b in batches) == 8
    assert too_large == [{"x": "z" * 1000}]


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    """Retry delays double from the base, stop at the cap, and jitter spreads them over [half, full]."""
    full = [backoff_delay(n, base_seconds=0.1, max_seconds=1.0, jitter=0.999999) for n in range(6)]
    assert full == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0], rel=1e-5)
    assert backoff_delay(3, base_seconds=0.1, max_seconds=1.0, jitter=0.0) == pytest.approx(0.4)
    assert backoff_delay(10_000, base_seconds=0.1, max_seconds=30.0, jitter=0.0) == 15.0


@pytest.mark.parametrize(
    ("status", "retry", "bisect"),
    [
        pytest.param(500, True, False, id="500"),
        pytest.param(503, True, False, id="503"),
        pytest.param(429, True, False, id="429"),
        pytest.param(404, False, False, id="404"),
        pytest.param(409, False, False, id="409"),
        pytest.param(401, False, False, id="401"),
        pytest.param(422, False, True, id="422"),
        pytest.param(413, False, True, id="413"),
    ],
)
def test_status_classification(status: int, retry: bool, bisect: bool) -> None:
    """5xx and 429 are retried; 400/413/422 are bisected; other 4xx refuse the batch for good."""
    assert is_retryable(status) is retry
    assert is_bisectable(status) is bisect


def test_heartbeat_watch_reports_hung_once_and_recovered_once() -> None:
    """The watch says hung once after the timeout, stays quiet, then says recovered once after a beat."""
    watch = HeartbeatWatch(10.0, now=100.0)
    assert watch.check(105.0) is None
    assert watch.check(110.0) == "hung"
    assert watch.check(120.0) is None
    assert watch.check(500.0) is None
    watch.beat(501.0)
    assert watch.check(502.0) == "recovered"
    assert watch.check(503.0) is None
    assert watch.check(511.0) == "hung"


# -- blocking mode against the double ---------------------------------------------------


def test_blocking_errors_carry_status_message_and_field(fake: FakeServer) -> None:
    """A 4xx answer raises DatacatError with the server's status, message and field."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        with pytest.raises(DatacatError) as caught:
            client.log_event("nope", "e")
    assert caught.value.status == 404
    assert "unknown session" in caught.value.message
    assert str(caught.value).startswith("HTTP 404: unknown session")


def test_blocking_connection_errors_raise_a_connection_error(fake: FakeServer) -> None:
    """An unreachable server raises DatacatConnectionError, which is a ConnectionError with no status."""
    fake.down = True
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        with pytest.raises(ConnectionError) as caught:
            client.heartbeat("s1")
    assert isinstance(caught.value, DatacatConnectionError)
    assert caught.value.status is None


def test_blocking_calls_after_close_raise(fake: FakeServer) -> None:
    """A blocking call on a closed client raises ClientClosedError."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientClosedError):
        client.heartbeat("s1")


def test_create_session_puts_unknown_keywords_into_metadata(fake: FakeServer) -> None:
    """Known session fields pass through; other keywords become metadata; hostname defaults to this host."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        client.create_session(product="app", metadata={"a": 1}, user="alice")
    body = fake.requests[0][2]
    assert body["product"] == "app"
    assert body["metadata"] == {"a": 1, "user": "alice"}
    assert body["hostname"]


def test_token_is_sent_as_a_bearer_header_in_both_modes() -> None:
    """A token goes into every request's Authorization header, blocking or not."""
    seen: list[str | None] = []

    def transport(method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        seen.append(headers.get("Authorization"))
        return 200, b'{"ok": true}'

    for blocking in (True, False):
        with DatacatClient("http://fake.invalid", "secret", transport=transport, blocking=blocking) as client:
            client.heartbeat("s")
            assert client.flush(TIMEOUT)
    assert seen == ["Bearer secret", "Bearer secret"]


def test_unreachable_server_at_create_session_raises(fake: FakeServer) -> None:
    """create_session is a blocking request in both modes, so an unreachable server raises."""
    fake.down = True
    with open_client(fake) as client, pytest.raises(DatacatConnectionError):
        client.create_session()


# -- non-blocking mode against the double -----------------------------------------------


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


def test_the_spool_keeps_undelivered_calls_for_the_next_client(fake: FakeServer, tmp_path: Path) -> None:
    """Calls undelivered at close are spooled and sent by the next client with their original batch ids."""
    fake.operations["s"] = []
    fake.down = True
    first = open_client(fake, spool_dir=tmp_path)
    for index in range(5):
        first.log_event("s", "e", {"i": index})
    fake.wait_for(lambda: len(fake.requests) >= 1)
    first.close(timeout=0.05)
    assert first.statistics().spooled == 5
    assert len(list(tmp_path.glob("*.jsonl"))) == 1
    tried = {doc["batch_id"] for _, _, doc in fake.requests}
    with fake.lock:
        fake.down = False
    with open_client(fake, spool_dir=tmp_path) as second:
        assert second.flush(TIMEOUT)
        assert second.statistics().replayed == 5
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(5))
    assert tried & set(fake.batch_ids), "the batch in flight keeps its batch_id in the spool"
    assert list(tmp_path.iterdir()) == []


def test_a_spooled_batch_that_was_applied_before_is_not_applied_twice(fake: FakeServer, tmp_path: Path) -> None:
    """A batch whose answer was lost, then spooled, is a duplicate on replay: applied once."""
    fake.operations["s"] = []
    fake.lose_answers = 10**9  # every answer is lost
    first = open_client(fake, spool_dir=tmp_path)
    first.log_event("s", "e")
    fake.wait_for(lambda: len(fake.batch_ids) == 1)
    first.close(timeout=0.05)
    fake.lose_answers = 0
    with open_client(fake, spool_dir=tmp_path) as second:
        assert second.flush(TIMEOUT)
        assert second.statistics().duplicate_batches == 1
    assert fake.names("s") == ["e"]


def test_an_operation_larger_than_a_batch_body_is_dropped_and_counted(client: DatacatClient, fake: FakeServer) -> None:
    """One call whose JSON exceeds the batch body limit cannot be sent: it is dropped as too_large."""
    fake.operations["s"] = []
    client.log_event("s", "huge", {"blob": "x" * (MAX_BATCH_BYTES + 1)})
    client.log_event("s", "small")
    assert client.flush(TIMEOUT)
    assert client.statistics().dropped == {"too_large": 1}
    assert fake.names("s") == ["small"]


# -- Session and the heartbeat monitor against the double --------------------------------


def test_heartbeat_monitor_logs_hung_once_then_recovered(fake: FakeServer) -> None:
    """With an injected clock, silence past the timeout logs application_appears_hung once, a heartbeat recovers."""
    clock = [1000.0]
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        session._clock = lambda: clock[0]
        session.start_heartbeat_monitor(timeout=10, check_interval=0.005)
        clock[0] += 11
        fake.wait_for(lambda: "application_appears_hung" in fake.names(session.session_id))
        session.heartbeat()
        fake.wait_for(lambda: "application_recovered" in fake.names(session.session_id))
        session.stop_heartbeat_monitor()
        names = fake.names(session.session_id)
    hung = [op for op in fake.operations[session.session_id] if op.get("name") == "application_appears_hung"]
    assert names.count("application_appears_hung") == 1
    assert names.index("application_appears_hung") < names.index("application_recovered")
    assert hung[0]["level"] == "warning"
    assert hung[0]["data"]["detected_by"] == "client"
    assert hung[0]["data"]["seconds_since_heartbeat"] >= 10


def test_session_heartbeats_reach_the_server_at_most_once_per_interval(fake: FakeServer) -> None:
    """Calling heartbeat() in a tight loop sends one heartbeat per interval, not one per call."""
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        clock = [0.0]
        session._clock = lambda: clock[0]
        for _ in range(100):
            session.heartbeat()
        clock[0] += 1.0
        session.heartbeat()
    assert fake.names(session.session_id) == ["heartbeat", "heartbeat"]


def test_session_context_manager_logs_the_exception_then_ends(fake: FakeServer) -> None:
    """An exception leaving `with session:` is logged as an exception event, then the session ends."""
    client = DatacatClient("http://fake.invalid", transport=fake)
    with pytest.raises(ZeroDivisionError), Session(client, client.create_session(), owns_client=True) as session:
        1 / 0  # noqa: B018
    assert fake.names(session.session_id) == ["exception", "end"]
    session.end()  # idempotent
    assert fake.names(session.session_id) == ["exception", "end"]


def test_monitor_survives_a_server_that_is_down(fake: FakeServer) -> None:
    """A failed hung-event request is logged by the monitor, which keeps running and logs recovery later."""
    clock = [0.0]
    with DatacatClient("http://fake.invalid", transport=fake) as client:
        session = Session(client, client.create_session())
        session._clock = lambda: clock[0]
        session.start_heartbeat_monitor(timeout=5, check_interval=0.005)
        with fake.lock:
            fake.down = True
        clock[0] = 6.0
        fake.wait_for(lambda: (fake.requests[-1][2] or {}).get("name") == "application_appears_hung")
        with fake.lock:
            fake.down = False
        clock[0] = 7.0
        session._last_heartbeat_sent = 7.0  # keep heartbeat() local: only the monitor talks
        session.heartbeat()
        fake.wait_for(lambda: "application_recovered" in fake.names(session.session_id))
        session.stop_heartbeat_monitor()


# -- against a real `runwatch serve` -------------------------------------------------------


class ServerProcess:
    """A ``runwatch serve`` subprocess on loopback; ``port=0`` picks a free port."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        command = [sys.executable, "-m", "runwatch.cli", "serve", "--port", str(port)]
        command += ["--db", str(directory / "s.db"), "--data-dir", str(directory / "d")]
        self._stderr = open(directory / "stderr.txt", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        lines: queue.Queue[str] = queue.Queue()
        # Drain stdout for the server's whole life, so its pipe never fills.
        self._reader = threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True)
        self._reader.start()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("runwatch serve did not print its URL in time") from None
            found = re.search(r"runwatch: serving .* at (http://127\.0\.0\.1:(\d+))", line)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                return

    def stop(self) -> None:
        """SIGTERM, then wait (bounded) for the drain; kill if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)  # EOF once the server exited
        self.process.stdout.close()
        self._stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for this module's tests."""
    process = ServerProcess(tmp_path_factory.mktemp("server"))
    yield process
    process.stop()


def all_events(client: DatacatClient, session_id: str) -> list[dict[str, Any]]:
    """Every event of a session, oldest first, read page by page."""
    events: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = client.get_session(session_id, events_limit=10_000, events_cursor=cursor, metrics_limit=1)
        events += page["events"]
        cursor = page["events_next_cursor"]
        if cursor is None:
            return events[::-1]
    raise AssertionError("too many pages")


def all_metrics(client: DatacatClient, session_id: str) -> list[dict[str, Any]]:
    """Every metric value of a session, oldest first, read page by page."""
    metrics: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = client.get_session(session_id, metrics_limit=10_000, metrics_cursor=cursor, events_limit=1)
        metrics += page["metrics"]
        cursor = page["metrics_next_cursor"]
        if cursor is None:
            return metrics[::-1]
    raise AssertionError("too many pages")


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a server-side condition until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.02)  # polling interval of a bounded wait, not synchronisation


def test_every_endpoint_against_the_server(server: ServerProcess) -> None:
    """create, state, event, metric, heartbeat, get and end round-trip through a real server."""
    with DatacatClient(server.url) as client:
        session_id = client.create_session(product="app", version="1.2", metadata={"a": 1}, user="alice")
        created = client.get_session(session_id)
        assert created["id"] == session_id
        assert (created["product"], created["version"], created["metadata"]) == (
            "app",
            "1.2",
            {"a": 1, "user": "alice"},
        )
        assert created["hostname"] and created["status"] == "active" and created["active"] is True
        client.update_state(session_id, {"status": "running"})
        client.log_event(session_id, "user_login", {"user": "alice"}, level="warning")
        client.log_metric(session_id, "cpu_usage", 45.2, tags=["app:myapp"])
        client.log_metric(session_id, "plain", 3)
        client.heartbeat(session_id)
        session = client.get_session(session_id)
        assert session["state"] == {"status": "running"}
        assert [(e["name"], e["level"], e["data"]) for e in session["events"]] == [
            ("user_login", "warning", {"user": "alice"})
        ]
        assert [(m["name"], m["value"], m["tags"]) for m in all_metrics(client, session_id)] == [
            ("cpu_usage", 45.2, ["app:myapp"]),
            ("plain", 3.0, []),
        ]
        assert session["last_heartbeat"] is not None
        client.end_session(session_id)
        ended = client.get_session(session_id)
        assert ended["status"] == "ended" and ended["active"] is False and ended["ended_at"]
        with pytest.raises(DatacatError) as caught:
            client.log_event(session_id, "late")
        assert caught.value.status == 409
        with pytest.raises(DatacatError) as caught:
            client.get_session("no-such-session")
        assert caught.value.status == 404
        assert len(client._transport._connections) == 1  # type: ignore[attr-defined]  # one keep-alive connection


@pytest.mark.parametrize(
    ("patches", "expected"),
    [
        pytest.param(
            [{"window_state": {"open": ["w1", "w2"], "active": "w1"}}, {"window_state": {"open": ["w1", "w2", "w3"]}}],
            {"window_state": {"open": ["w1", "w2", "w3"], "active": "w1"}},
            id="nested-objects-merge-lists-replace",
        ),
        pytest.param([{"a": 1, "b": 2}, {"b": None}], {"a": 1}, id="null-deletes"),
        pytest.param([{"a": {"x": 1}}, {"a": 5}], {"a": 5}, id="scalar-replaces-object"),
        pytest.param([{"a": 5}, {"a": {"x": 1}}], {"a": {"x": 1}}, id="object-replaces-scalar"),
        pytest.param(
            [{"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": None, "e": 3}}}],
            {"a": {"b": {"c": 1, "e": 3}}},
            id="deep-delete-and-add",
        ),
        pytest.param([{"a": 1}, {}], {"a": 1}, id="empty-patch"),
        pytest.param([{"gone": None}], {}, id="delete-missing-key"),
    ],
)
@pytest.mark.parametrize("blocking", [pytest.param(True, id="blocking"), pytest.param(False, id="non-blocking")])
def test_state_deep_merge(server: ServerProcess, blocking: bool, patches: list[dict[str, Any]], expected: Any) -> None:
    """State patches merge as the contract says: objects merge, lists and scalars replace, null deletes."""
    with DatacatClient(server.url, blocking=blocking, flush_interval=0.01) as client:
        session_id = client.create_session()
        for patch in patches:
            client.update_state(session_id, patch)
        session = client.get_session(session_id)
    assert session["state"] == expected
    assert len(session["state_history"]) == len(patches)


def test_get_session_pages_the_state_history(server: ServerProcess) -> None:
    """get_session passes state_history_limit and state_history_cursor; the pages hold every patch once."""
    with DatacatClient(server.url) as client:
        session_id = client.create_session()
        for n in range(3):
            client.update_state(session_id, {"n": n})
        newest = client.get_session(session_id, state_history_limit=2)
        older = client.get_session(
            session_id, state_history_limit=2, state_history_cursor=newest["state_history_next_cursor"]
        )
    assert [entry["patch"] for entry in newest["state_history"]] == [{"n": 1}, {"n": 2}]
    assert [entry["patch"] for entry in older["state_history"]] == [{"n": 0}]
    assert older["state_history_next_cursor"] is None and newest["state"] == {"n": 2}


def test_exception_logging_against_the_server(server: ServerProcess) -> None:
    """log_exception stores an error-level `exception` event with type, message, traceback and extra data."""
    session = create_session(server.url)
    try:
        {}["missing"]  # noqa: B018
    except KeyError:
        session.log_exception(extra_data={"context": "user_action"})
    (event,) = session.get()["events"]
    session.end()
    assert (event["name"], event["level"]) == ("exception", "error")
    assert event["data"]["type"] == "KeyError"
    assert event["data"]["message"] == "'missing'"
    assert "KeyError: 'missing'" in event["data"]["traceback"]
    assert event["data"]["context"] == "user_action"


def test_heartbeat_monitor_against_the_server(server: ServerProcess) -> None:
    """A silent application gets one application_appears_hung event, then application_recovered after a heartbeat."""
    session = create_session(server.url)
    session.start_heartbeat_monitor(timeout=0.3, check_interval=0.02)

    def names() -> list[str]:
        return [e["name"] for e in session.get()["events"] if e["data"].get("detected_by") == "client"]

    wait_until(lambda: "application_appears_hung" in names())
    session.heartbeat()
    wait_until(lambda: "application_recovered" in names())
    session.stop_heartbeat_monitor()
    assert names() == ["application_recovered", "application_appears_hung"]  # newest first
    session.end()


def test_non_blocking_delivers_everything_to_the_server(server: ServerProcess) -> None:
    """Thousands of non-blocking calls are all stored, once each, and the session ends last."""
    with DatacatClient(server.url, blocking=False, batch_size=200) as client:
        session_id = client.create_session()
        for index in range(3000):
            client.log_event(session_id, "tick", {"i": index})
            if index % 3 == 0:
                client.log_metric(session_id, "value", index, tags=["t:1"])
        client.update_state(session_id, {"done": True})
        client.end_session(session_id)
        assert client.flush(TIMEOUT)
        events = all_events(client, session_id)
        metrics = all_metrics(client, session_id)
        session = client.get_session(session_id)
        stats = client.statistics()
    assert [e["data"]["i"] for e in events if e["name"] == "tick"] == list(range(3000))
    assert [m["value"] for m in metrics] == [float(i) for i in range(0, 3000, 3)]
    assert session["state"] == {"done": True} and session["status"] == "ended"
    assert stats.sent == 3000 + 1000 + 2 and stats.dropped == {} and stats.queued == 0


def test_non_blocking_session_survives_a_server_restart(tmp_path: Path) -> None:
    """Calls made while the server restarts are retried and stored once each: none lost, none duplicated."""
    first = ServerProcess(tmp_path / "server")
    client = DatacatClient(first.url, blocking=False, flush_interval=0.01, retry_max_seconds=0.2, max_queue=100_000)
    try:
        session_id = client.create_session()
        for index in range(2000):
            client.log_event(session_id, "tick", {"i": index})
        first.stop()  # SIGTERM while batches are (probably) in flight
        for index in range(2000, 4000):
            client.log_event(session_id, "tick", {"i": index})
        started = time.monotonic()
        while client.statistics().retries == 0:  # the server is gone: the client is retrying
            assert time.monotonic() - started < TIMEOUT
            time.sleep(0.01)  # polling interval of a bounded wait
        second = ServerProcess(tmp_path / "server", port=first.port)
        try:
            assert client.flush(TIMEOUT)
            ticks = [e["data"]["i"] for e in all_events(client, session_id) if e["name"] == "tick"]
            stats = client.statistics()
        finally:
            second.stop()
    finally:
        client.close(0)
    assert len(ticks) == 4000
    assert sorted(ticks) == list(range(4000))
    assert stats.sent == 4000 and stats.dropped == {} and stats.retries > 0


def wait_for_child(pid: int, timeout: float = TIMEOUT) -> int:
    """The exit code of a forked child; kills it and fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)  # polling interval of a bounded wait
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not finish in time")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_gives_the_child_its_own_queue_and_connection(server: ServerProcess) -> None:
    """A forked child starts with an empty queue and its own sender; parent and child calls are stored once each."""
    with DatacatClient(server.url, blocking=False, flush_interval=5.0) as client:
        session_id = client.create_session()
        for index in range(100):
            client.log_event(session_id, "parent", {"i": index})  # still queued at the fork (flush_interval)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
            pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                empty = client.statistics().queued == 0
                for index in range(50):
                    client.log_event(session_id, "child", {"i": index})
                delivered = client.flush(TIMEOUT)
                code = 0 if empty and delivered and client.statistics().sent == 50 else 2
            finally:
                os._exit(code)
        for index in range(100, 200):
            client.log_event(session_id, "parent", {"i": index})
        assert wait_for_child(pid) == 0
        assert client.flush(TIMEOUT)
        events = all_events(client, session_id)
    assert sorted(e["data"]["i"] for e in events if e["name"] == "parent") == list(range(200))
    assert sorted(e["data"]["i"] for e in events if e["name"] == "child") == list(range(50))


def seed_examples() -> list[str]:
    """The Python code blocks of the datacat seed that are examples (not install commands)."""
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), re.S)
    return [block for block in blocks if "from datacat import" in block]


# Names the seed's heartbeat example leaves to the reader, and a sleep that does not wait.
EXAMPLE_PRELUDE = """
import time as _time
_time.sleep = lambda seconds: None
class _Running:
    left = 3
    def __bool__(self):
        self.left -= 1
        return self.left >= 0
running = _Running()
def do_work():
    pass
"""


@pytest.mark.skipif(not SEED.exists(), reason="the seed documents are not checked out beside the project")
def test_seed_examples_run_unchanged(server: ServerProcess, tmp_path: Path) -> None:
    """Each example of the datacat seed runs with only its import swapped (and the server's URL)."""
    examples = seed_examples()
    assert len(examples) == 4
    for number, example in enumerate(examples):
        code = re.sub(r"from datacat import .*", "from runwatch.client import create_session, DatacatClient", example)
        code = code.replace("http://localhost:8080", server.url)
        script = tmp_path / f"example_{number}.py"
        script.write_text(EXAMPLE_PRELUDE + code)
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, f"example {number} failed:\n{result.stderr}"
        if number == 0:
            session_id = result.stdout.split("Session ID:")[1].split()[0]
            with DatacatClient(server.url) as client:
                session = client.get_session(session_id)
            assert session["state"] == {
                "status": "running",
                "version": "1.0.0",
                "window_state": {"open": ["w1", "w2", "w3"], "active": "w1"},
            }
            assert [e["name"] for e in session["events"]] == ["user_action"]
            assert [(m["name"], m["value"]) for m in session["metrics"]] == [("memory_usage", 1024.5)]
            assert session["status"] == "ended"


def test_interpreter_exit_flushes_what_is_queued(server: ServerProcess, tmp_path: Path) -> None:
    """A program that exits without flush() or close() still delivers its queued calls (atexit)."""
    script = tmp_path / "app.py"
    script.write_text(
        "from runwatch.client import DatacatClient\n"
        f"client = DatacatClient({server.url!r}, blocking=False, flush_interval=5.0)\n"
        "session_id = client.create_session()\n"
        "print(session_id, flush=True)\n"
        "for index in range(1000):\n"
        "    client.log_event(session_id, 'tick', {'i': index})\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    with DatacatClient(server.url) as client:
        events = all_events(client, result.stdout.strip())
    assert [e["data"]["i"] for e in events] == list(range(1000))


def test_interpreter_exit_with_the_server_down_spools_within_the_deadline(fake: FakeServer, tmp_path: Path) -> None:
    """With the server unreachable, exit waits only exit_timeout_seconds, spools, and a later process sends it."""
    spool = tmp_path / "spool"
    script = tmp_path / "app.py"
    script.write_text(
        "from runwatch.client import DatacatClient\n"
        "client = DatacatClient('http://127.0.0.1:9', blocking=False, retry_max_seconds=0.05,\n"  # discard port
        f"                       exit_timeout_seconds=0.3, spool_dir={str(spool)!r})\n"
        "for index in range(10):\n"
        "    client.log_event('s', 'tick', {'i': index})\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < TIMEOUT / 2
    assert "spooled" in result.stderr
    fake.operations["s"] = []
    with open_client(fake, spool_dir=spool) as client:
        assert client.flush(TIMEOUT)
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(10))
