"""The remote sink: a producer's events reach a real runwatch server once, through a spool that outlives trouble.

The server is a real monitor serving on a loopback port (its ingest, its store); the producer is a real
pipeline (in-process source → remote sink). Retry and refusal decisions of the sender are also checked with
an in-process transport double, where a real server cannot be made to answer that way on purpose.
"""

from __future__ import annotations

import logging
import math
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from chunk_helpers import stored_calls

from runwatch.config import MonitorConfig
from runwatch.events import LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from runwatch.exceptions import ConfigError
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.remote.sender import SpoolSender
from runwatch.remote.server_url import check_server_url, display_url
from runwatch.remote.sink import RemoteSink, default_spool_root
from runwatch.remote.spool import Spool, spool_directories
from runwatch.sinks.sqlite import process_owner
from runwatch.store.manager import DatabaseManager

TIMEOUT = 20
TS = 1_790_000_000.0
TOKEN = "s3cret-token-for-tests"


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(tmp_path: Path, port: int = 0, token: str | None = None) -> WebMonitor:
    """A real runwatch server (ingest, store) on loopback."""
    return WebMonitor(
        MonitorConfig(
            db_path=str(tmp_path / "server.db"), data_dir=str(tmp_path / "server"), web_port=port, web_token=token
        )
    )


def producer(url: str, tmp_path: Path, **options: Any) -> Pipeline:
    """A producer's graph: everything emitted goes to the server through the spool under tmp_path."""
    sink = {
        "type": "remote",
        "inputs": ["app"],
        "url": url,
        "spool_dir": str(tmp_path / "spool"),
        "batch_interval_seconds": 0.01,
        "retry_max_seconds": 0.2,
        "drain_timeout_seconds": 2.0,
        **options,
    }
    config = {"sources": {"app": {"type": "in_process"}}, "sinks": {"server": sink}}
    return Pipeline(config, context=ComponentContext(db_path=str(tmp_path / "unused.db"), data_dir=tmp_path))


def sink_of(pipeline: Pipeline) -> RemoteSink:
    """The pipeline's remote sink."""
    sink = pipeline.component("server")
    assert isinstance(sink, RemoteSink)
    return sink


async def delivered(pipeline: Pipeline) -> bool:
    """Flush (spool) and wait until the server acknowledged everything."""
    assert await pipeline.flush(TIMEOUT)
    return await anyio.to_thread.run_sync(sink_of(pipeline).wait_delivered, TIMEOUT)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a query on a store."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebMonitor]:
    """A server for one test."""
    monitor = start_server(tmp_path)
    try:
        yield monitor
    finally:
        monitor.close()


def run_events(run_id: str, steps: int) -> list[Any]:
    """A small run: started, ``steps`` metric calls (with NaN and ±Inf), a log, a state patch, completed."""
    values = [{"loss": 1.0 / (i + 1), "odd": math.nan if i % 7 == 0 else float(i)} for i in range(steps)]
    values[1]["odd"] = math.inf
    return [
        RunLifecycle(run_id, TS, RunTransition.STARTED, config={"lr": 0.1}),
        *(Metric(run_id, TS + i, value, step=i) for i, value in enumerate(values)),
        LogEvent(run_id, TS + steps, "checkpoint", data={"step": steps}),
        StatePatch(run_id, TS + steps, {"level": 3}),
        RunLifecycle(run_id, TS + steps + 1, RunTransition.COMPLETED, final_reward=1.5),
    ]


# -- delivery to a real server -------------------------------------------------------------------


async def test_events_reach_the_server_once_in_order_and_the_spool_goes_away(
    server: WebMonitor, tmp_path: Path
) -> None:
    """A run sent through the spool is stored exactly as logged (NaN, ±Inf, steps, events, state, status)."""
    assert server.web_url is not None
    async with producer(server.web_url, tmp_path, max_batch_events=500) as pipeline:
        for event in run_events("remote-run", 3000):
            pipeline.emit(event)
        assert await delivered(pipeline)
        stats = pipeline.statistics()["components"]["server"]
        assert stats["spool_events"] == 0 and stats["delivered_events"] == 3004
        assert stats["spooled_batches"] >= 7  # cut into batches of at most 500
    assert spool_directories(tmp_path / "spool") == []  # all delivered: nothing left on disk
    with DatabaseManager(server.config.db_path) as db:
        frame = db.get_run_metrics("remote-run", align="call")
        summary = db.get_run_summary("remote-run")
    assert list(frame["step"]) == list(range(3000))
    assert frame["loss"].tolist() == [1.0 / (i + 1) for i in range(3000)]
    assert math.isnan(frame["odd"][0]) and frame["odd"][1] == math.inf and frame["odd"][2] == 2.0
    assert summary["status"] == "completed" and summary["final_reward"] == 1.5
    assert summary["config"] == {"lr": 0.1} and summary["state"] == {"level": 3}
    assert summary["event_counts"]["checkpoint"] == 1


async def test_batches_larger_than_the_server_takes_are_sent_in_halves_and_stored_once(
    server: WebMonitor, tmp_path: Path
) -> None:
    """A producer cutting 30,000-event batches (the server takes 10,000 events and 1 MiB per request) has
    them refused with 413 and sent in halves under ids naming each part: every event stored once, none
    rejected."""
    assert server.web_url is not None
    options = {"max_batch_events": 30_000, "max_batch_bytes": 16 << 20, "batch_interval_seconds": 60.0}
    async with producer(server.web_url, tmp_path, **options) as pipeline:
        for event in run_events("halved", 30_000):
            pipeline.emit(event)
        assert await delivered(pipeline)
        stats = pipeline.statistics()["components"]["server"]
    assert stats["spooled_batches"] == 2 and stats["rejected_batches"] == 0  # 30,000 events, then the last 4
    assert stats["delivered_batches"] >= 4  # 413s split it down to parts the server takes
    with DatabaseManager(server.config.db_path) as db:
        frame = db.get_run_metrics("halved", align="call")
    assert frame["step"].tolist() == list(range(30_000))


async def test_a_started_run_is_owned_by_the_producing_process(server: WebMonitor, tmp_path: Path) -> None:
    """The server records the producer's host:pid:start as owner, so it can tell when that process is gone."""
    assert server.web_url is not None
    async with producer(server.web_url, tmp_path) as pipeline:
        pipeline.emit(RunLifecycle("owned", TS, RunTransition.STARTED))
        assert await delivered(pipeline)
    assert rows(Path(server.config.db_path), "SELECT owner FROM runs WHERE run_id = 'owned'") == [(process_owner(),)]


async def test_a_server_that_comes_up_later_gets_everything_once(tmp_path: Path) -> None:
    """Events spooled while no server listens are delivered once it starts; nothing is lost or doubled."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with producer(url, tmp_path) as pipeline:
        for event in run_events("late", 500):
            pipeline.emit(event)
        assert await pipeline.flush(TIMEOUT)  # spooled
        sink = sink_of(pipeline)
        assert not await anyio.to_thread.run_sync(sink.wait_delivered, 0.5)
        stats = pipeline.statistics()["components"]["server"]
        assert stats["health"] == "degraded" and stats["spool_events"] == 504 and stats["retries"] >= 1
        monitor = await anyio.to_thread.run_sync(lambda: start_server(tmp_path, port))
        try:
            assert await anyio.to_thread.run_sync(sink.wait_delivered, TIMEOUT)
            count = stored_calls(monitor.config.db_path)
        finally:
            await anyio.to_thread.run_sync(monitor.close)
    assert count == 500


async def test_what_a_closed_producer_left_is_sent_by_the_next_one(tmp_path: Path) -> None:
    """A producer that closes while the server is away leaves its spool; the next one of that root sends it first."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with producer(url, tmp_path, drain_timeout_seconds=0.2) as first:
        for event in run_events("first", 200):
            first.emit(event)
    left = spool_directories(tmp_path / "spool")
    assert len(left) == 1 and any(left[0].glob("*.seg"))
    monitor = await anyio.to_thread.run_sync(lambda: start_server(tmp_path, port))
    try:
        async with producer(url, tmp_path) as second:
            assert sink_of(second).statistics()["adopted_spools"] == 1
            for event in run_events("second", 100):
                second.emit(event)
            assert await delivered(second)
        counts = [(run_id, stored_calls(monitor.config.db_path, run_id)) for run_id in ("first", "second")]
    finally:
        await anyio.to_thread.run_sync(monitor.close)
    assert sorted(counts) == [("first", 200), ("second", 100)]
    assert spool_directories(tmp_path / "spool") == []


async def test_the_token_goes_in_a_header_and_never_in_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the right token batches are stored; with a wrong one they wait in the spool (401 is retried); no log
    has it."""
    monitor = await anyio.to_thread.run_sync(lambda: start_server(tmp_path, token=TOKEN))
    caplog.set_level(logging.DEBUG)
    try:
        assert monitor.web_url is not None
        async with producer(monitor.web_url, tmp_path / "good", token=TOKEN) as good:
            good.emit(Metric("tokened", TS, {"x": 1.0}))
            assert await delivered(good)
        async with producer(monitor.web_url, tmp_path / "bad", token="wrong-token-xyz", drain_timeout_seconds=0) as bad:
            bad.emit(Metric("refused", TS, {"x": 1.0}))
            assert await bad.flush(TIMEOUT)
            assert not await anyio.to_thread.run_sync(sink_of(bad).wait_delivered, 1.0)
            stats = bad.statistics()["components"]["server"]
            assert stats["last_error"].startswith("HTTP 401") and stats["spool_events"] == 1
            assert stats["rejected_batches"] == 0
    finally:
        await anyio.to_thread.run_sync(monitor.close)
    assert rows(Path(monitor.config.db_path), "SELECT run_id FROM runs") == [("tokened",)]
    text = caplog.text + repr(stats)
    assert TOKEN not in text and "wrong-token-xyz" not in text
    assert len(spool_directories(tmp_path / "bad" / "spool")) == 1  # kept for a later try


def test_a_url_with_credentials_or_another_scheme_is_refused_naming_the_option(tmp_path: Path) -> None:
    """A token in the URL would end up in logs: the config is refused at load, naming the key."""
    for url in ("http://user:secret@host:8080", "ftp://host", "http://host/?token=x", "http://:80"):
        with pytest.raises(ConfigError, match="sinks.server.url"):
            producer(url, tmp_path)
    assert check_server_url("https://host:8443/prefix/") == "https://host:8443/prefix"


def test_the_default_spool_root_is_per_server_and_names_no_secret(tmp_path: Path) -> None:
    """Two servers get two spool roots under the data directory; the name shows host and port only."""
    one = default_spool_root(tmp_path, "http://box-a:8080")
    two = default_spool_root(tmp_path, "http://box-b:8080")
    assert one != two and one.parent == tmp_path / "spool" and one.name.startswith("box-a-8080-")
    assert display_url("https://[::1]:9000/x") == "https://[::1]:9000/x"


async def test_an_event_larger_than_a_batch_is_dropped_and_counted(server: WebMonitor, tmp_path: Path) -> None:
    """One event over max_batch_bytes cannot be sent: it is dropped (too_large), the others go."""
    assert server.web_url is not None
    async with producer(server.web_url, tmp_path, max_batch_bytes=4096) as pipeline:
        pipeline.emit(LogEvent("big", TS, "blob", data={"text": "x" * 10_000}))
        pipeline.emit(LogEvent("big", TS + 1, "small", data={"n": 1}))
        assert await delivered(pipeline)
        assert sink_of(pipeline).lost_events() == {"too_large": 1}
    stored = rows(Path(server.config.db_path), "SELECT type FROM events WHERE kind = 'log'")
    assert stored == [("small",)]


async def test_a_full_spool_drops_the_newest_and_counts_them(tmp_path: Path) -> None:
    """Past max_spool_bytes (the server away) new batches are dropped and counted, never blocking the producer."""
    url = f"http://127.0.0.1:{free_port()}"
    async with producer(url, tmp_path, max_spool_bytes=1 << 20, drain_timeout_seconds=0) as pipeline:
        for step in range(30_000):
            pipeline.emit(Metric("flood", TS + step, {"a_rather_long_metric_name": float(step)}, step=step))
        assert await pipeline.flush(TIMEOUT)
        stats = pipeline.statistics()["components"]["server"]
    assert stats["spool_bytes"] <= 1 << 20
    dropped = stats["dropped_events"]["spool_full"]
    assert dropped > 0 and dropped + stats["spool_events"] == 30_000


# -- the sender's decisions (an in-process transport double) ----------------------------------------


class ScriptedTransport:
    """Answers each request with the next scripted status (or raises it), recording what was sent."""

    def __init__(self, answers: list[int | type[BaseException]]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, bytes | None, dict[str, str]]] = []

    def __call__(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, bytes]:
        self.requests.append((path, body, dict(headers)))
        answer = self.answers.pop(0) if self.answers else 202
        if not isinstance(answer, int):
            raise answer("no answer")
        if answer == 200:
            return 200, b'{"accepted": 0, "duplicate": true}'
        if answer >= 400:
            return answer, b'{"error": {"status": %d, "message": "no", "field": "events[0]"}}' % answer
        return answer, b'{"accepted": 1, "duplicate": false}'


def spooled(tmp_path: Path, *bodies: bytes) -> Spool:
    """A spool holding one record per body (one event each)."""
    spool = Spool.create(tmp_path)
    for body in bodies:
        spool.append(body, 1)
    return spool


def test_the_sender_retries_until_stored_and_keeps_the_order(tmp_path: Path) -> None:
    """No answer, 503 and 429 are tried again (same bytes); then the next record goes; order is kept."""
    transport = ScriptedTransport([ConnectionRefusedError, 503, 429, 202, 202])
    sender = SpoolSender(transport, token=TOKEN, retry_max_seconds=0.01)
    sender.add(spooled(tmp_path, b"one", b"two"))
    assert sender.deliver(TIMEOUT)
    assert [body for _, body, _ in transport.requests] == [b"one"] * 4 + [b"two"]
    assert all(headers["Authorization"] == f"Bearer {TOKEN}" for _, _, headers in transport.requests)
    stats = sender.statistics()
    assert (stats.delivered_batches, stats.retries, stats.rejected_batches) == (2, 3, 0)


def test_the_sender_counts_duplicates_and_skips_what_the_server_refuses_for_good(tmp_path: Path) -> None:
    """200 duplicate is delivered (already stored); 422 is rejected, counted and skipped so later records go."""
    transport = ScriptedTransport([200, 422, 202])
    sender = SpoolSender(transport, retry_max_seconds=0.01)
    sender.add(spooled(tmp_path, b"dup", b"bad", b"good"))
    assert sender.deliver(TIMEOUT)
    stats = sender.statistics()
    assert (stats.delivered_batches, stats.duplicate_batches, stats.rejected_batches) == (2, 1, 1)
    assert stats.last_error == "HTTP 422: no (field events[0])"
    assert "Authorization" not in transport.requests[0][2]


def test_the_sender_gives_up_at_its_deadline_and_keeps_the_record(tmp_path: Path) -> None:
    """A server that never answers: deliver() returns False at its deadline; the record stays spooled."""
    transport = ScriptedTransport([503] * 1000)
    sender = SpoolSender(transport, retry_max_seconds=0.05)
    spool = spooled(tmp_path, b"waiting")
    sender.add(spool)
    assert not sender.deliver(0.3)
    assert spool.unacked_records == 1


def test_closing_stops_a_send_that_is_already_retrying(tmp_path: Path) -> None:
    """close() ends a send retrying against an absent server by its drain deadline: no thread outlives it."""
    from runwatch.client import HTTPTransport

    spool = Spool.create(tmp_path / "spool")
    spool.append(b'{"batch_id": "b-0", "events": []}', 0)
    transport = HTTPTransport(f"http://127.0.0.1:{free_port()}", timeout=1.0)  # nothing listens: refused
    sender = SpoolSender(transport, retry_max_seconds=0.05)
    sender.add(spool)
    sender.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while sender.statistics().retries < 3:  # the send is retrying
            assert time.monotonic() < deadline
            time.sleep(0.01)
        sender.close(0.2)
        assert sender._thread is not None and not sender._thread.is_alive()
    finally:
        transport.close()
        spool.close()
