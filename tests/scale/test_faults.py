"""Faults of a scale-out deployment, on real servers and real processes (docs/scale.md, *Exactly once*).

Each test runs ``runwatch serve`` nodes and ``runwatch worker`` processes
against real NATS and PostgreSQL servers on loopback, feeds them through
``/api/ingest`` as a remote producer does (a refused or unanswered batch is
sent again with the same id), breaks something in the middle, and then reads
the store back: every acknowledged batch must be stored, and stored once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import nats
import orjson
import pytest
import websockets
from nats.js.errors import NoKeysError, NotFoundError

from runwatch.store.postgres import PostgresStore
from runwatch.testing.processes import running
from runwatch.testing.servers import NatsCluster, PostgresServer

from .scenario import Producer, assert_stored_once, eventually, wait_stored

pytestmark = pytest.mark.timeout(150)


async def _lease_holders(js: Any) -> dict[str, str]:
    """Partition lease key → the worker holding it."""
    leases = await js.key_value("runwatch_leases")
    try:
        keys = await leases.keys()
    except NoKeysError:
        return {}
    holders = {}
    for key in keys:
        with contextlib.suppress(NotFoundError):  # released since it was listed
            holders[key] = (await leases.get(key)).value.decode()
    return holders


async def _ack_pending_of(js: Any, worker: str) -> int:
    """Messages the worker fetched from its partitions and has not acknowledged yet."""
    pending = 0
    for key, holder in (await _lease_holders(js)).items():
        if holder == worker:
            with contextlib.suppress(NotFoundError):  # taken a moment ago: its consumer is being made again
                info = await js.consumer_info("RUNWATCH_INGEST_0", f"writer-{key}")
                pending += info.num_ack_pending
    return pending


async def test_a_worker_killed_between_fetch_and_ack_leaves_every_event_stored_once(
    nats_server: NatsCluster, postgres_dsn: str, tmp_path: Path
) -> None:
    """kill -9 of a worker holding fetched, unacknowledged messages: its partitions move, nothing is stored twice."""
    with running(postgres_dsn, nats_server.urls, tmp_path) as fleet:
        # Leases of 5 s: short enough for the survivor to take over at once, long enough that renewals
        # on a loaded machine do not lapse and move partitions back and forth during ingest.
        serve, doomed, _ = fleet.start(serves=1, workers=["w1", "w2"], lease_ttl=5.0)
        assert serve.url is not None
        producer = Producer([serve.url], batches=300)
        client = await nats.connect(servers=nats_server.urls)
        try:
            js = client.jetstream()

            async def shared() -> bool:
                return set((await _lease_holders(js)).values()) == {"w1", "w2"}

            async def holding_unacknowledged() -> bool:
                return await _ack_pending_of(js, "w1") > 0

            await eventually(shared, timeout=30)  # the two workers share the partitions before ingest starts
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(anyio.to_thread.run_sync, producer.run)
                await eventually(holding_unacknowledged, timeout=60, pause=0.002)  # between a fetch and its ack
                doomed.kill()
                killed_after = len(producer.acknowledged)
        finally:
            await client.close()
        store = PostgresStore(postgres_dsn)
        await anyio.to_thread.run_sync(wait_stored, store, producer)
        await anyio.to_thread.run_sync(assert_stored_once, store, producer)
        owners = {row["owner"] for row in store.partition_owners()}
    assert killed_after < producer.batches, "the kill came after all ingest: the test proved nothing"
    assert owners == {"w2"}  # every partition moved to the survivor


async def test_killing_a_nats_node_during_ingest_loses_no_acknowledged_batch(
    nats_cluster: NatsCluster, postgres_dsn: str, tmp_path: Path
) -> None:
    """kill -9 of the ingest stream's leader (R3) mid-ingest: every acknowledged batch stored once; ingest goes on."""
    with running(postgres_dsn, nats_cluster.urls, tmp_path) as fleet:
        # Leases outlive the election of a new leader for the lease bucket (seconds on a loaded machine).
        serve, _, _ = fleet.start(serves=1, workers=["w1", "w2"], lease_ttl=10.0)
        assert serve.url is not None
        producer = Producer([serve.url], batches=240)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, producer.run)
            assert await anyio.to_thread.run_sync(producer.reached(60).wait, 60)
            leader = nats_cluster.stream_leader("RUNWATCH_INGEST_0")
            nats_cluster.kill(leader)
            killed_at = len(producer.acknowledged)
        store = PostgresStore(postgres_dsn)
        await anyio.to_thread.run_sync(wait_stored, store, producer)
        await anyio.to_thread.run_sync(assert_stored_once, store, producer)
    assert len(producer.acknowledged) == producer.batches
    assert producer.batches - killed_at > 100  # ingest went on after the kill


async def test_a_postgres_restart_during_ingest_is_waited_out_and_nothing_is_lost(
    nats_server: NatsCluster, postgres: PostgresServer, tmp_path: Path
) -> None:
    """PostgreSQL stopped as in a crash mid-ingest and started again: workers back off, resume, store all once."""
    with running(postgres.dsn, nats_server.urls, tmp_path) as fleet:
        serve, worker = fleet.start(serves=1, workers=["w1"])
        assert serve.url is not None
        producer = Producer([serve.url], batches=240)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(anyio.to_thread.run_sync, producer.run)
            assert await anyio.to_thread.run_sync(producer.reached(60).wait, 60)
            await anyio.to_thread.run_sync(postgres.restart, "immediate")
            restarted_at = len(producer.acknowledged)
        store = PostgresStore(postgres.dsn)
        await anyio.to_thread.run_sync(wait_stored, store, producer)
        await anyio.to_thread.run_sync(assert_stored_once, store, producer)
        assert worker.process.poll() is None  # it waited the restart out
    assert producer.batches - restarted_at > 100


async def test_websocket_subscribers_of_a_killed_node_resume_from_their_cursor_on_another(
    nats_server: NatsCluster, postgres_dsn: str, tmp_path: Path
) -> None:
    """kill -9 of a subscriber's node: it resumes on another with ?after=<cursor>, missing nothing, nothing twice."""
    with running(postgres_dsn, nats_server.urls, tmp_path) as fleet:
        doomed, other, _ = fleet.start(serves=2, workers=["w1"])
        assert doomed.url is not None and other.url is not None
        producer = Producer([other.url], batches=150, runs=1)
        expected = producer.batches * producer.calls
        steps: list[int] = []
        cursor = 0
        resumed_from = None

        async def follow(url: str, stop_after: int | None) -> None:
            nonlocal cursor
            query = "runs=run-0" if resumed_from is None else f"runs=run-0&after={cursor}"
            async with websockets.connect(url.replace("http://", "ws://") + f"/ws?{query}") as socket:
                assert orjson.loads(await socket.recv())["type"] == "subscribed"
                if stop_after is not None:
                    subscribed.set()
                async for text in socket:
                    message = orjson.loads(text)
                    assert message["type"] == "batch", message
                    steps.extend(event["step"] for event in message["events"] if event["kind"] == "metric")
                    cursor = message["cursor"]
                    if stop_after is not None and len(steps) >= stop_after:
                        return
                    if len(steps) >= expected:
                        return

        subscribed = anyio.Event()
        with anyio.fail_after(90):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(follow, doomed.url, 400)
                await subscribed.wait()
                tasks.start_soon(anyio.to_thread.run_sync, producer.run)
            doomed.kill()
            resumed_from = cursor
            await follow(other.url, None)
    assert resumed_from > 0 and len(steps) == len(set(steps)) == expected
    assert steps == sorted(steps)
