"""The scale-out bus's components on real servers: the nats sink and source, fencing, partitions, live feeds.

In-process pipelines built from the graphs ``runwatch serve --bus`` and
``runwatch worker`` use (:func:`runwatch.assemble.bus_serve_pipeline_config`,
:func:`runwatch.assemble.worker_pipeline_config`), on a real nats-server and PostgreSQL.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import nats
import orjson
import pytest

from runwatch.assemble import BusSettings, bus_serve_pipeline_config, worker_pipeline_config
from runwatch.events import Heartbeat, IngestReceipt, Metric, RunLifecycle, RunTransition
from runwatch.exceptions import BatchNotStored
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.sinks.websocket import LIVE_FEED, LIVE_HUB, SubscriptionFilter
from runwatch.sources.ingest import INGEST
from runwatch.store.postgres import PostgresStore
from runwatch.store.postgres.writer import Fence, PostgresWriter
from runwatch.testing.servers import NatsCluster
from runwatch.wire.bus import encode_batch, ingest_subject, message_id, partition_of

from .scenario import eventually

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0


def calls(run_id: str, first: int, count: int) -> list[Metric]:
    return [Metric(run_id, T0 + first + i, {"loss": 1.0 / (first + i + 1)}, first + i) for i in range(count)]


@asynccontextmanager
async def pipeline(graph: dict[str, Any], dsn: str) -> AsyncIterator[Pipeline]:
    with tempfile.TemporaryDirectory(prefix="runwatch-node-") as data_dir:
        async with Pipeline(graph, context=ComponentContext(db_path=dsn, data_dir=Path(data_dir))) as running:
            yield running


def owned(worker: Pipeline) -> set[int]:
    return {int(p) for p in worker.statistics()["components"]["bus"]["partitions"]}


async def test_a_batch_is_acknowledged_once_jetstream_persisted_it_and_refused_when_it_cannot_be(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """Ingest through a serve node's graph: answered once the message is in the stream; with NATS gone, not stored."""
    await anyio.to_thread.run_sync(PostgresStore(postgres_dsn).prepare)
    bus = BusSettings(tuple(nats_server.urls), partitions=4)
    graph = bus_serve_pipeline_config(bus)
    graph["sinks"]["bus"]["publish_timeout_seconds"] = 1.0
    async with pipeline(graph, postgres_dsn) as serve:
        ingest = serve.context.services[INGEST]
        events = calls("r1", 0, 5)
        result = await ingest.submit(events, "b1", digest="d1")
        assert (result.accepted, result.duplicate) == (5, False)
        client = await nats.connect(servers=nats_server.urls)
        try:
            js = client.jetstream()
            message = await js.get_msg("RUNWATCH_INGEST_0", 1)
            assert message.subject == ingest_subject("r1", 4)
            assert message.headers is not None and message.headers["Nats-Msg-Id"] == message_id("r1", "b1", "d1")
        finally:
            await client.close()
        nats_server.nodes[0].kill()
        with pytest.raises(BatchNotStored):
            await ingest.submit(calls("r1", 5, 5), "b2", digest="d2")
        assert serve.statistics()["components"]["bus"]["failed_batches"] == 1


async def test_a_batch_published_twice_past_the_duplicate_window_is_stored_once(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """The same batch as two messages (another message id each, as after the window): one stored, both acknowledged."""
    bus = BusSettings(tuple(nats_server.urls), partitions=4, lease_ttl_seconds=2)
    async with pipeline(worker_pipeline_config(bus, postgres_dsn), postgres_dsn) as worker:
        body = encode_batch("r1", "b1", "d1", T0, calls("r1", 0, 10))
        client = await nats.connect(servers=nats_server.urls)
        try:
            js = client.jetstream()
            for attempt in ("first", "retry-after-the-window"):
                await js.publish(ingest_subject("r1", 4), body, headers={"Nats-Msg-Id": attempt})

            async def drained() -> bool:
                return (await js.stream_info("RUNWATCH_INGEST_0")).state.messages == 0

            await eventually(drained, timeout=30)  # both acknowledged: a work queue keeps only what is not
        finally:
            await client.close()
        store = PostgresStore(postgres_dsn)
        assert store.run_summary("r1")["metrics"]["loss"]["count"] == 10
        assert worker.statistics()["components"]["store"]["duplicate_events"] == 10


class _Fixed:
    """A fence provider with one token for partition 0 (what a worker whose lease moved on would give)."""

    def __init__(self, token: int) -> None:
        self.token = token

    def fences(self, batch: Any) -> list[Fence]:
        return [Fence(0, self.token, "stale", None, frozenset(event.run_id for event in batch))]


async def test_a_writer_whose_lease_moved_on_is_fenced_out(postgres_dsn: str) -> None:
    """A newer owner's token in the store: the stale owner's writes are left out and counted; the new owner's stored."""
    store = PostgresStore(postgres_dsn)
    await anyio.to_thread.run_sync(store.prepare)
    assert await anyio.to_thread.run_sync(store.claim_partition, 0, 7, "new-owner") == 0
    assert await anyio.to_thread.run_sync(store.claim_partition, 0, 5, "stale") is None  # older token: refused
    writer = PostgresWriter(postgres_dsn, "h:1:1.0", fences=_Fixed(5))
    await writer.open()
    try:
        batch = [*calls("r1", 0, 3), IngestReceipt("r1", T0, "b1", 3, "d")]
        assert await writer.write(batch) == []
        assert writer.fenced_out_events == 4
        writer.fences = _Fixed(7)
        assert await writer.write(batch) == [("r1", "b1")]
    finally:
        await writer.aclose()
    assert store.run_summary("r1")["metrics"]["loss"]["count"] == 3
    assert [row["owner"] for row in store.partition_owners()] == ["stale"]  # the token holder that wrote last


async def test_workers_share_the_partitions_and_a_stopping_worker_hands_its_share_over(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """Two workers own two partitions each; one stops, releasing its leases: the other takes them in its next round."""
    w1 = BusSettings(tuple(nats_server.urls), partitions=4, lease_ttl_seconds=3, name="w1")
    w2 = BusSettings(tuple(nats_server.urls), partitions=4, lease_ttl_seconds=3, name="w2")
    async with pipeline(worker_pipeline_config(w2, postgres_dsn), postgres_dsn) as second:
        async with pipeline(worker_pipeline_config(w1, postgres_dsn), postgres_dsn) as first:

            async def shared() -> bool:
                return len(owned(first)) == 2 and len(owned(second)) == 2

            await eventually(shared, timeout=30, pause=0.05)
            assert owned(first).isdisjoint(owned(second))

        async def all_taken() -> bool:
            return owned(second) == {0, 1, 2, 3}

        await eventually(all_taken, timeout=30, pause=0.05)
    released = first.statistics()["components"]["bus"]
    assert (released["leases_released"], released["leases_lost"]) == (2, 0)  # handed over, not left to expire


async def test_liveness_is_judged_once_per_run_by_the_owner_of_its_partition(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """Two workers, silent runs in every partition: each run is marked hung exactly once, by its partition's owner."""
    bus = BusSettings(tuple(nats_server.urls), partitions=4, lease_ttl_seconds=3)
    runs = [f"run-{index}" for index in range(8)]
    assert {partition_of(run_id, 4) for run_id in runs} == {0, 1, 2, 3}

    def graph(name: str) -> dict[str, Any]:
        built = worker_pipeline_config(BusSettings(bus.urls, 4, 3, name), postgres_dsn)
        built["stages"]["liveness"].update(heartbeat_timeout_seconds=0.5, crash_timeout_seconds=600)
        built["stages"]["liveness"]["check_interval_seconds"] = 0.1
        return built

    serve_graph = bus_serve_pipeline_config(bus)
    async with (
        pipeline(serve_graph, postgres_dsn) as serve,
        pipeline(graph("w1"), postgres_dsn) as first,
        pipeline(graph("w2"), postgres_dsn) as second,
    ):

        async def shared() -> bool:
            return len(owned(first)) == 2 and len(owned(second)) == 2

        await eventually(shared, timeout=30, pause=0.05)
        ingest = serve.context.services[INGEST]
        now = time.time()
        for run_id in runs:
            events = [RunLifecycle(run_id, now, RunTransition.STARTED), Heartbeat(run_id, now)]
            await ingest.submit(events, f"{run_id}-start", digest=run_id)
        store = PostgresStore(postgres_dsn)

        async def all_hung() -> bool:
            statuses = await anyio.to_thread.run_sync(store.run_statuses, runs)
            return set(statuses.values()) == {"hung"} and len(statuses) == len(runs)

        await eventually(all_hung, timeout=30, pause=0.1)
        verdicts = {run_id: len(store.run_events(run_id, "application_appears_hung")) for run_id in runs}
    assert verdicts == dict.fromkeys(runs, 1)
    judged = [worker.statistics()["components"]["liveness"]["hung_total"] for worker in (first, second)]
    assert sum(judged) == len(runs) and all(judged)  # both judged, each its own runs


async def test_events_ingested_at_one_node_reach_the_subscribers_of_another_with_cursors(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """Ingest at node B: node A's hub publishes the events to its subscriber, each message with a cursor;
    a cursor older than what A keeps is read back from the live stream."""
    await anyio.to_thread.run_sync(PostgresStore(postgres_dsn).prepare)
    bus = BusSettings(tuple(nats_server.urls), partitions=4)
    small = bus_serve_pipeline_config(bus, replay_events=10)  # node A keeps only the last 10 events
    other = bus_serve_pipeline_config(bus)
    async with pipeline(small, postgres_dsn) as node_a, pipeline(other, postgres_dsn) as node_b:
        hub = node_a.context.services[LIVE_HUB]
        subscriber = hub.subscribe(SubscriptionFilter(runs=("r1",)))
        ingest = node_b.context.services[INGEST]
        for index in range(4):
            await ingest.submit(calls("r1", index * 10, 10), f"b{index}", digest=f"d{index}")
        received: list[int] = []
        cursors: list[int] = []
        with anyio.fail_after(10):
            while len(received) < 40:
                message = orjson.loads(await subscriber.next_message())
                received += [event["step"] for event in message["events"]]
                cursors.append(message["cursor"])
        assert received == list(range(40)) and cursors == sorted(cursors)
        late = hub.subscribe(SubscriptionFilter(runs=("r1",)))
        assert not hub.replay_after(late, 1)  # A keeps the last 10 events only
        feed = node_a.context.services[LIVE_FEED]
        assert hub.cursor is not None
        backlog = await feed.read_range(1, hub.cursor)
        assert backlog is not None and [event.step for event in backlog] == list(range(10, 40))


def test_the_graphs_name_the_nats_source_and_sink_by_one_type() -> None:
    """``type = "nats"`` is the bus source under [sources] and the bus sink under [sinks]; a missing
    option is refused naming its key."""
    from runwatch.exceptions import ConfigError
    from runwatch.pipeline.config import load_pipeline_config
    from runwatch.sinks.nats import NatsSink
    from runwatch.sinks.postgres import PostgresSink
    from runwatch.sources.nats import NatsSource

    bus = BusSettings(("nats://127.0.0.1:4222",))
    serve = load_pipeline_config(bus_serve_pipeline_config(bus))
    assert (serve.get("live").cls, serve.get("bus").cls) == (NatsSource, NatsSink)
    worker = load_pipeline_config(worker_pipeline_config(bus, "postgresql://runwatch@127.0.0.1/runwatch"))
    assert (worker.get("bus").cls, worker.get("store").cls, worker.get("live").cls) == (
        NatsSource,
        PostgresSink,
        NatsSink,
    )
    broken = worker_pipeline_config(bus, "postgresql://runwatch@127.0.0.1/runwatch")
    del broken["sources"]["bus"]["urls"]
    with pytest.raises(ConfigError, match=r"sources\.bus\.urls"):
        load_pipeline_config(broken)
