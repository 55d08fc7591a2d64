"""Remote ingest is exactly once: an acknowledgement means stored, a batch id only ever dedupes a true retry.

- The ingest source (a real pipeline over a real SQLite file): a retry of a
  batch still in flight waits for the original's outcome (a duplicate once
  the original is committed, taken as new if it was not); a request that is
  cancelled leaves its batch to that outcome.
- The three routes (``POST /api/ingest``, ``/ws/ingest``, a session's
  ``/batch``) against a real server while another connection holds the
  store's write lock: the retry is not answered until the original commits.
- A real ``runwatch serve`` killed with SIGKILL while the store is held busy,
  with retrying producers (hand-built HTTP, and runwatch's own non-blocking
  client): everything acknowledged is stored, exactly once.
- Batch ids are scoped per run and remembered with a digest of the content:
  batches numbered per run are all stored, a reused id with other content is
  a 409 naming it, a true retry (in any key order) is a duplicate; ids
  recorded before the schema scoped them still dedupe.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from chunk_helpers import stored_calls, stored_steps
from helpers import free_port
from plugins_for_tests import FailingStage
from websockets.asyncio.client import connect

from runwatch.client import DatacatClient
from runwatch.config import MonitorConfig
from runwatch.events import LogEvent, Metric
from runwatch.exceptions import BatchIdConflict, BatchNotStored
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.store.schema import migrate, prepare_database

# Guards every wait; nothing here legitimately takes this long.
TIMEOUT = 20
TS = 1_795_000_000.0
FAILING = f"{FailingStage.__module__}:FailingStage"


# -- helpers -------------------------------------------------------------------------------------


@contextlib.contextmanager
def write_locked(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the store's write lock (as a backup or another writer would)."""
    connection = sqlite3.connect(db, isolation_level=None, timeout=TIMEOUT, check_same_thread=False)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        connection.close()


def count(db: Path, sql: str, *params: Any) -> int:
    """One count from the store, on a fresh read connection."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=TIMEOUT)
    try:
        return int(connection.execute(sql, params).fetchone()[0])
    finally:
        connection.close()


def steps_of(db: Path, run_id: str) -> list[int]:
    """The steps of a run's logging calls, in step order."""
    return sorted(step for step in stored_steps(db, run_id) if step is not None)


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition of the pipeline's counters (nothing signals them) until it holds, bounded."""
    for _ in range(int(TIMEOUT / 0.005)):
        if condition():
            return
        await anyio.sleep(0.005)  # poll interval
    raise AssertionError("the condition never held")


def store_pending(pipeline: Pipeline) -> int:
    """Events the SQLite sink holds uncommitted (the store is locked: the batch is in flight)."""
    pending: int = pipeline.statistics()["components"]["store"]["pending_events"]
    return pending


def waits(source: Any, answered: Callable[[], bool]) -> Callable[[], bool]:
    """A condition: the retry is waiting for the original (or, wrongly, already answered)."""
    return lambda: answered() or source.statistics().get("retries_waited", 0) >= 1


def stats_of(pipeline: Pipeline, component_id: str) -> dict[str, Any]:
    """The runner's counters of one component."""
    stats: dict[str, Any] = pipeline.statistics()["components"][component_id]
    return stats


def metric(run_id: str, step: int) -> Metric:
    """One metric event of ``run_id`` at ``step``."""
    return Metric(run_id, TS + step, {"loss": 1.0 / (step + 1)}, step=step)


def wire_metric(run_id: str, step: int) -> dict[str, Any]:
    """The wire form of :func:`metric`."""
    return {
        "kind": "metric",
        "run_id": run_id,
        "timestamp": TS + step,
        "values": {"loss": 1.0 / (step + 1)},
        "step": step,
    }


def ingest_graph(db: Path, *stages: str) -> dict[str, Any]:
    """The ingest source into the SQLite store at ``db`` (through the given stage types, in order)."""
    graph: dict[str, Any] = {"sources": {"ingest": {"type": "ingest"}}, "stages": {}}
    last = "ingest"
    for index, stage in enumerate(stages):
        graph["stages"][f"s{index}"] = {"type": stage, "inputs": [last]}
        last = f"s{index}"
    graph["sinks"] = {"store": {"type": "sqlite", "inputs": [last], "path": str(db), "flush_interval_seconds": 0.02}}
    return graph


def pipeline_for(tmp_path: Path, graph: dict[str, Any], shutdown_timeout_seconds: float = 5.0) -> Pipeline:
    """A pipeline whose files stay in ``tmp_path``."""
    context = ComponentContext(db_path=str(tmp_path / "m.db"), data_dir=tmp_path / "data")
    return Pipeline(graph, context=context, shutdown_timeout_seconds=shutdown_timeout_seconds)


# -- the ingest source ---------------------------------------------------------------------------


async def test_a_retry_of_a_batch_in_flight_waits_and_is_a_duplicate_once_the_original_commits(tmp_path: Path) -> None:
    """While the store is held busy the retry is not answered; once the original commits it is a duplicate."""
    db = tmp_path / "m.db"
    events = [metric("inflight", step) for step in range(3)]
    results: dict[str, Any] = {}
    async with pipeline_for(tmp_path, ingest_graph(db)) as pipeline:
        source = pipeline.component("ingest")

        async def submit(name: str) -> None:
            results[name] = await source.submit(events, "b1")

        with write_locked(db) as lock:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(submit, "original")
                await wait_for(lambda: store_pending(pipeline) == 4)  # 3 events and the receipt
                tasks.start_soon(submit, "retry")
                await wait_for(waits(source, lambda: "retry" in results))
                assert results == {}, "answered while the store could not commit"
                assert stored_calls(db) == 0
                lock.execute("ROLLBACK")  # the store is free again
        assert results["original"].accepted == 3 and not results["original"].duplicate
        assert results["retry"].duplicate and results["retry"].accepted == 0
    assert steps_of(db, "inflight") == [0, 1, 2]
    assert count(db, "SELECT count(*) FROM ingest_batches WHERE batch_id = 'b1'") == 1


async def test_a_cancelled_request_leaves_its_batch_in_flight_for_the_retry(tmp_path: Path) -> None:
    """A submitter cancelled after sending (its client went away) does not free the id: the retry
    waits for the batch's own outcome and is a duplicate, stored once."""
    db = tmp_path / "m.db"
    events = [metric("cancelled", step) for step in range(2)]
    async with pipeline_for(tmp_path, ingest_graph(db)) as pipeline:
        source = pipeline.component("ingest")
        with write_locked(db) as lock:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(source.submit, events, "c1")
                await wait_for(lambda: store_pending(pipeline) == 3)
                tasks.cancel_scope.cancel()
            retry: dict[str, Any] = {}

            async def submit_retry() -> None:
                retry["result"] = await source.submit(events, "c1")

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(submit_retry)
                # Waiting for the original, or (wrongly) sent again as a new batch.
                await wait_for(waits(source, lambda: "result" in retry or store_pending(pipeline) > 3))
                assert retry == {}
                lock.execute("ROLLBACK")
        assert retry["result"].duplicate
    assert steps_of(db, "cancelled") == [0, 1]


async def test_a_batch_a_stage_dropped_is_not_stored_and_its_retry_is_taken_as_new(tmp_path: Path) -> None:
    """A batch lost on its way (a stage raised) is answered BatchNotStored, never "stored"; the retry
    waiting on it, and a corrected batch under the same id, are taken as new."""
    db = tmp_path / "m.db"
    poisoned = [metric("dropped", 0), LogEvent("dropped", TS, "boom")]
    async with pipeline_for(tmp_path, ingest_graph(db, FAILING)) as pipeline:
        source = pipeline.component("ingest")
        outcomes: dict[str, Any] = {}

        async def submit(name: str, events: list[Any]) -> None:
            try:
                outcomes[name] = await source.submit(events, "d1")
            except BatchNotStored as exc:
                outcomes[name] = exc

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tasks:
                with write_locked(db) as lock:
                    # A batch the locked store holds pending keeps the barrier behind the poisoned one waiting,
                    # so the retry finds the original in flight.
                    tasks.start_soon(source.submit, [metric("filler", 0)])
                    await wait_for(lambda: pipeline.statistics()["components"]["store"]["pending_events"] == 1)
                    tasks.start_soon(submit, "original", poisoned)
                    await wait_for(lambda: stats_of(pipeline, "s0")["errors"] == 1)  # the stage dropped it
                    tasks.start_soon(submit, "retry", poisoned)
                    await wait_for(waits(source, lambda: "retry" in outcomes))
                    lock.execute("ROLLBACK")
            corrected = await source.submit([metric("dropped", 0), LogEvent("dropped", TS, "fine")], "d1")
    assert isinstance(outcomes["original"], BatchNotStored)
    assert isinstance(outcomes["retry"], BatchNotStored), "the retry was taken as new (and lost the same way)"
    assert corrected.accepted == 2 and not corrected.duplicate
    assert count(db, "SELECT count(*) FROM events WHERE type = 'boom'") == 0
    assert count(db, "SELECT count(*) FROM events WHERE type = 'fine'") == 1


async def test_a_batch_cut_off_by_the_shutdown_deadline_is_not_acknowledged(tmp_path: Path) -> None:
    """A stop past its deadline with the store held busy answers the waiting batch BatchNotStored (never
    stored-then-lost); after a restart the same batch id is taken as new and stored."""
    db = tmp_path / "m.db"
    events = [metric("deadline", step) for step in range(2)]
    outcome: dict[str, Any] = {}
    pipeline = pipeline_for(tmp_path, ingest_graph(db), shutdown_timeout_seconds=0.5)
    stop = anyio.Event()

    async def run_pipeline(*, task_status: Any) -> None:
        async with pipeline:  # started and stopped in this task (its task group belongs to it)
            task_status.started()
            await stop.wait()

    async def submit() -> None:
        try:
            outcome["result"] = await pipeline.component("ingest").submit(events, "s1")
        except BatchNotStored as exc:
            outcome["result"] = exc

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tasks:
            await tasks.start(run_pipeline)
            with write_locked(db):
                tasks.start_soon(submit)
                await wait_for(lambda: store_pending(pipeline) == 3)
                stop.set()
                await wait_for(lambda: "result" in outcome)
    assert isinstance(outcome["result"], BatchNotStored)
    assert stored_calls(db) == 0
    async with pipeline_for(tmp_path, ingest_graph(db)) as restarted:
        with anyio.fail_after(TIMEOUT):
            again = await restarted.component("ingest").submit(events, "s1")
    assert again.accepted == 2 and not again.duplicate
    assert steps_of(db, "deadline") == [0, 1]


# -- the three routes, with the store held busy ---------------------------------------------------


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    """A monitor serving on a free loopback port."""
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as running:
        yield running


def post(monitor: WebMonitor, path: str, body: Any, timeout: float = TIMEOUT) -> httpx.Response:
    """POST JSON to the monitor's server on a fresh connection."""
    with httpx.Client(base_url=str(monitor.web_url), timeout=timeout) as client:
        return client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def ingest_stats(monitor: WebMonitor) -> dict[str, Any]:
    """The ingest source's counters."""
    stats: dict[str, Any] = monitor.statistics()["components"]["ingest"]
    return stats


async def wait_for_stats(monitor: WebMonitor, condition: Callable[[dict[str, Any]], bool]) -> None:
    """Poll the monitor's ingest counters until ``condition`` holds (bounded)."""
    await wait_for(lambda: condition(ingest_stats(monitor)))


async def send_ws_batch(monitor: WebMonitor, batch: dict[str, Any]) -> dict[str, Any]:
    """Send one batch on /ws/ingest and return its answer."""
    url = str(monitor.web_url).replace("http://", "ws://") + "/ws/ingest"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps(batch))
        with anyio.fail_after(TIMEOUT):
            answer: dict[str, Any] = json.loads(await ws.recv())
    return answer


def session_with_batch(monitor: WebMonitor) -> tuple[str, Callable[[], Any]]:
    """A new session, and a sender of one fixed /batch to it (returns status code and body)."""
    created = post(monitor, "/api/sessions", {"product": "retry", "version": "1"})
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    body = {"batch_id": "s-1", "operations": [{"op": "metric", "name": "x", "value": 1.0}, {"op": "heartbeat"}]}

    def send() -> tuple[int, dict[str, Any]]:
        response = post(monitor, f"/api/sessions/{session_id}/batch", body)
        return response.status_code, response.json()

    return session_id, send


@pytest.mark.parametrize("route", ["ingest", "ws-ingest", "session-batch"])
async def test_each_route_answers_a_retry_only_once_the_original_is_committed(
    monitor: WebMonitor, tmp_path: Path, route: str
) -> None:
    """On every ingest route, with the store write-locked by another connection, neither the original
    nor its retry is answered; released, the original is acknowledged and the retry is a duplicate."""
    db = tmp_path / "m.db"
    answers: dict[str, Any] = {}
    if route == "session-batch":
        session_id, send_batch = await anyio.to_thread.run_sync(session_with_batch, monitor)

        async def send(name: str) -> None:
            answers[name] = await anyio.to_thread.run_sync(send_batch)

    else:
        batch = {"batch_id": "r-1", "events": [wire_metric(f"route-{route}", step) for step in range(4)]}

        async def send(name: str) -> None:
            if route == "ingest":
                response = await anyio.to_thread.run_sync(post, monitor, "/api/ingest", batch)
                answers[name] = (response.status_code, response.json())
            else:
                answers[name] = await send_ws_batch(monitor, batch)

    with write_locked(db) as lock:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send, "original")
            # Its events and its receipt (and, for a new run over ingest, the run's start), pending in the store.
            in_flight = 3 if route == "session-batch" else 5
            await wait_for(lambda: monitor.statistics()["components"]["store"]["pending_events"] >= in_flight)
            tasks.start_soon(send, "retry")
            await wait_for_stats(monitor, lambda stats: "retry" in answers or stats.get("retries_waited", 0) >= 1)
            assert answers == {}, f"answered while the store could not commit: {answers}"
            lock.execute("ROLLBACK")
    if route == "ingest":
        assert answers["original"][0] == 202 and answers["retry"] == (
            200,
            {"accepted": 0, "batch_id": "r-1", "duplicate": True},
        )
        assert steps_of(db, "route-ingest") == [0, 1, 2, 3]
    elif route == "ws-ingest":
        assert answers["original"]["accepted"] == 4 and answers["retry"]["duplicate"] is True
        assert steps_of(db, "route-ws-ingest") == [0, 1, 2, 3]
    else:
        assert answers["original"] == (200, {"accepted": 2, "duplicate": False})
        assert answers["retry"] == (200, {"accepted": 0, "duplicate": True})
        assert stored_calls(db, session_id) == 1


# -- kill -9 of a real server while the store is busy ------------------------------------------------


class Serve:
    """A ``runwatch serve`` subprocess on a fixed loopback port; its output lines are collected."""

    def __init__(self, db: Path, port: int, data_dir: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(db), "--data-dir", str(data_dir)]
            + ["--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            found = re.search(r"runwatch: serving .* at (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                return
        self.kill()
        raise AssertionError(f"runwatch serve did not start: {seen}")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye (nothing if it is gone already)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def serve_paths(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """A prepared store, a port and a data directory for ``runwatch serve`` subprocesses."""
    db = tmp_path / "serve.db"
    prepare_database(str(db))
    yield db, free_port(), tmp_path / "data"


def test_kill_9_while_the_store_is_busy_loses_nothing_acknowledged(serve_paths: tuple[Path, int, Path]) -> None:
    """Producers retry each batch (same batch_id) after a timeout until it is acknowledged; the server is
    killed with SIGKILL while another connection holds the store's write lock, then restarted: every
    acknowledged batch is stored, and once all are acknowledged each is stored exactly once."""
    db, port, data_dir = serve_paths
    batches = {f"k-{n}": [wire_metric("killed", n * 10 + i) for i in range(10)] for n in range(3)}
    acknowledged: dict[str, int] = {}

    def try_all(base_url: str, timeout: float) -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            for batch_id, events in batches.items():
                if batch_id in acknowledged:
                    continue
                for _attempt in range(2):  # the first attempt times out while the store is busy: retry once
                    try:
                        response = client.post("/api/ingest", json={"batch_id": batch_id, "events": events})
                    except httpx.TransportError:
                        continue
                    if response.status_code < 300:
                        acknowledged[batch_id] = response.status_code
                        break

    server = Serve(db, port, data_dir)
    try:
        with write_locked(db):
            try_all(server.url, timeout=0.5)
            server.kill()  # mid-commit attempt: the lock never let it write
        lost = [
            batch_id
            for batch_id in acknowledged
            if count(db, "SELECT count(*) FROM ingest_batches WHERE batch_id = ?", batch_id) == 0
        ]
        assert not lost, f"acknowledged ({acknowledged}) but never stored: {lost}"
        server = Serve(db, port, data_dir)
        for _round in range(5):
            try_all(server.url, timeout=TIMEOUT)
            if len(acknowledged) == len(batches):
                break
    finally:
        server.kill()
    assert sorted(acknowledged) == sorted(batches)
    assert steps_of(db, "killed") == list(range(30)), "every batch stored exactly once"


def test_the_non_blocking_client_never_flushes_true_for_calls_not_stored(serve_paths: tuple[Path, int, Path]) -> None:
    """runwatch's own client, retrying after timeouts while the store is busy, gets flush() False (not
    True for a duplicate answer); after a SIGKILL and a restart its retries store every call once."""
    db, port, data_dir = serve_paths
    server = Serve(db, port, data_dir)
    client = DatacatClient(server.url, timeout=0.5, blocking=False, retry_max_seconds=0.2, flush_interval=0.05)
    try:
        session_id = DatacatClient(server.url, timeout=TIMEOUT).create_session(product="busy")
        with write_locked(db):
            for n in range(50):
                client.log_metric(session_id, "calls", float(n))
            flushed_while_busy = client.flush(timeout=3)
            stored_while_busy = stored_calls(db)
            server.kill()
        assert not (flushed_while_busy and stored_while_busy < 50), "flush() said delivered; nothing was stored"
        assert not flushed_while_busy
        server = Serve(db, port, data_dir)
        assert client.flush(timeout=TIMEOUT), client.statistics()
    finally:
        client.close()
        server.kill()
    assert stored_calls(db, session_id) == 50


# -- batch ids: scoped per run, with a content digest ------------------------------------------------


def test_batches_numbered_per_run_are_all_stored(monitor: WebMonitor, tmp_path: Path) -> None:
    """A producer numbering its batches b0, b1, ... per run has every step of both runs stored."""
    for run_id in ("per-run-a", "per-run-b"):
        for number in range(3):
            events = [wire_metric(run_id, number * 5 + i) for i in range(5)]
            response = post(monitor, "/api/ingest", {"batch_id": f"b{number}", "events": events})
            assert response.status_code == 202, response.text
    for run_id in ("per-run-a", "per-run-b"):
        assert steps_of(tmp_path / "m.db", run_id) == list(range(15)), run_id


def test_a_reused_batch_id_with_other_content_is_409_naming_it_and_a_true_retry_is_a_duplicate(
    monitor: WebMonitor, tmp_path: Path
) -> None:
    """The same id in the same run with different events is refused (409, field batch_id, naming it); the
    same events again, even with keys in another order, are a duplicate; nothing is dropped silently."""
    first = {"batch_id": "reuse-1", "events": [wire_metric("reuse", 0)]}
    assert post(monitor, "/api/ingest", first).status_code == 202
    other = post(monitor, "/api/ingest", {"batch_id": "reuse-1", "events": [wire_metric("reuse", 1)]})
    assert other.status_code == 409
    error = other.json()["error"]
    assert error["field"] == "batch_id" and "reuse-1" in error["message"]
    reordered = {"events": [dict(reversed(list(wire_metric("reuse", 0).items())))], "batch_id": "reuse-1"}
    again = post(monitor, "/api/ingest", reordered)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert steps_of(tmp_path / "m.db", "reuse") == [0]


async def test_ws_ingest_and_session_batch_refuse_a_reused_id_with_other_content(monitor: WebMonitor) -> None:
    """/ws/ingest answers an error naming the batch (status 409) and stays open; a session /batch is a 409."""
    url = str(monitor.web_url).replace("http://", "ws://") + "/ws/ingest"
    async with connect(url, open_timeout=TIMEOUT) as ws:
        for events, expected in (([wire_metric("ws-reuse", 0)], "ack"), ([wire_metric("ws-reuse", 1)], "error")):
            await ws.send(json.dumps({"batch_id": "w-1", "events": events}))
            with anyio.fail_after(TIMEOUT):
                answer = json.loads(await ws.recv())
            assert answer["type"] == expected, answer
        assert answer["status"] == 409 and answer["batch_id"] == "w-1" and answer["field"] == "batch_id"
        await ws.send(json.dumps({"batch_id": "w-2", "events": [wire_metric("ws-reuse", 1)]}))
        with anyio.fail_after(TIMEOUT):
            assert json.loads(await ws.recv())["type"] == "ack"

    def session_reuse() -> tuple[int, int, int]:
        session_id = post(monitor, "/api/sessions", {"product": "reuse", "version": "1"}).json()["session_id"]
        path = f"/api/sessions/{session_id}/batch"
        first = post(monitor, path, {"batch_id": "x", "operations": [{"op": "event", "name": "a"}]})
        retry = post(monitor, path, {"batch_id": "x", "operations": [{"op": "event", "name": "a"}]})
        other = post(monitor, path, {"batch_id": "x", "operations": [{"op": "event", "name": "b"}]})
        return first.status_code, retry.json()["duplicate"], other.status_code

    assert await anyio.to_thread.run_sync(session_reuse) == (200, True, 409)


def test_ids_recorded_before_scoping_still_dedupe_after_the_migration(tmp_path: Path) -> None:
    """A store whose ingest_batches predate scoped ids migrates forward with its rows kept (a retry of
    such an id is still a duplicate, in any run) and back again without losing an id."""
    db = tmp_path / "m.db"
    connection = sqlite3.connect(db)
    try:
        migrate(connection, 4)
        connection.execute("INSERT INTO ingest_batches (batch_id, received_at, events) VALUES ('old-1', 1, 3)")
        connection.commit()
    finally:
        connection.close()
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as migrated:
        retry = post(migrated, "/api/ingest", {"batch_id": "old-1", "events": [wire_metric("any-run", 0)]})
        fresh = post(migrated, "/api/ingest", {"batch_id": "new-1", "events": [wire_metric("any-run", 1)]})
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    assert fresh.status_code == 202
    connection = sqlite3.connect(db)
    try:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(ingest_batches)")]
        migrate(connection, 4)
        kept = sorted(row[0] for row in connection.execute("SELECT batch_id FROM ingest_batches"))
    finally:
        connection.close()
    assert columns == ["scope", "batch_id", "digest", "received_at", "events"]
    assert kept == ["new-1", "old-1"]


def test_submit_refuses_a_reused_id_with_other_content_from_python(tmp_path: Path) -> None:
    """IngestSource.submit raises BatchIdConflict (a ValueError naming the id and the run) for other content."""

    async def main() -> None:
        async with pipeline_for(tmp_path, ingest_graph(tmp_path / "m.db")) as pipeline:
            source = pipeline.component("ingest")
            with anyio.fail_after(TIMEOUT):
                await source.submit([metric("py", 0)], "p-1")
                assert (await source.submit([metric("py", 0)], "p-1")).duplicate
                with pytest.raises(BatchIdConflict) as caught:
                    await source.submit([metric("py", 1)], "p-1")
        assert isinstance(caught.value, ValueError)
        assert caught.value.batch_id == "p-1" and caught.value.scope == "py"

    anyio.run(main)


def test_a_retry_of_a_stored_batch_that_started_and_ended_its_run_is_a_duplicate(
    monitor: WebMonitor, tmp_path: Path
) -> None:
    """A retry is recognised before the run rules look at it: a stored batch holding ``started`` for a
    run it also completed is a duplicate, not a refused restart of an ended run."""
    lifecycle = {"kind": "lifecycle", "run_id": "whole-run", "timestamp": TS}
    batch = {
        "batch_id": "whole-1",
        "events": [
            {**lifecycle, "transition": "started"},
            wire_metric("whole-run", 0),
            {**lifecycle, "timestamp": TS + 1, "transition": "completed"},
        ],
    }
    first = post(monitor, "/api/ingest", batch)
    assert first.status_code == 202 and first.json()["accepted"] == 3
    again = post(monitor, "/api/ingest", batch)
    assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
    assert steps_of(tmp_path / "m.db", "whole-run") == [0]
