"""JetStream behaviours the scale-out design relies on, checked on real nats-server processes.

docs/scale.md builds exactly-once ingest on them: a publish acknowledged by
JetStream is persisted (on a quorum of an R3 stream), a republished
``Nats-Msg-Id`` within the duplicate window is not stored twice, and a pulled
message that is not acknowledged within ``ack_wait`` is delivered again; and
partitions on two more: a work-queue partition resumes right after its last
committed message, and a key-value lease has one holder with a growing token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, RetentionPolicy, StreamConfig
from nats.js.errors import KeyWrongLastSequenceError, NoStreamResponseError

from runwatch.testing.servers import NatsCluster

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")
#: What a JetStream request raises while a stream or the meta group elects a new leader.
_ELECTION_ERRORS = (TimeoutError, NoStreamResponseError, nats.errors.NoRespondersError)


async def _until_answered(request: Callable[[], Awaitable[T]]) -> T:
    """``request()`` retried while the cluster elects a leader (the caller bounds the total time)."""
    while True:
        try:
            return await request()
        except _ELECTION_ERRORS:
            await asyncio.sleep(0.05)  # an election is under way: there is nothing to await but time


@pytest.fixture
async def client(nats_server: NatsCluster) -> AsyncIterator[Client]:
    """A client of the single server, closed afterwards."""
    connection = await nats.connect(servers=nats_server.urls, connect_timeout=5)
    yield connection
    await connection.close()


async def test_republished_message_id_within_the_window_is_stored_once(client: Client) -> None:
    """A publish repeating a Nats-Msg-Id inside the duplicate window is acknowledged as a duplicate of the first."""
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="INGEST", subjects=["ingest.>"], duplicate_window=60.0))
    first = [await js.publish("ingest.r1", f"b{i}".encode(), headers={"Nats-Msg-Id": f"r1/b{i}"}) for i in range(3)]
    again = [await js.publish("ingest.r1", f"b{i}".encode(), headers={"Nats-Msg-Id": f"r1/b{i}"}) for i in range(3)]

    assert [ack.duplicate for ack in first] == [None, None, None]
    assert [ack.duplicate for ack in again] == [True, True, True]
    assert [ack.seq for ack in again] == [ack.seq for ack in first]
    assert (await js.stream_info("INGEST")).state.messages == 3


async def test_republished_message_id_after_the_window_is_stored_again(client: Client) -> None:
    """Past the duplicate window the same Nats-Msg-Id is a new message: storage must be idempotent by itself."""
    window = 0.3
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="INGEST", subjects=["ingest.>"], duplicate_window=window))
    started = time.monotonic()
    first = await js.publish("ingest.r1", b"b0", headers={"Nats-Msg-Id": "r1/b0"})
    async with asyncio.timeout(20):
        while True:
            ack = await js.publish("ingest.r1", b"b0", headers={"Nats-Msg-Id": "r1/b0"})
            if not ack.duplicate:
                break
            await asyncio.sleep(window / 4)  # real time is the subject: the window has to pass

    assert time.monotonic() - started >= window
    assert ack.seq == first.seq + 1
    assert (await js.stream_info("INGEST")).state.messages == 2


async def test_pull_consumer_redelivers_only_what_was_not_acknowledged_within_ack_wait(client: Client) -> None:
    """Of two pulled messages, the acknowledged one is done and the other comes back after ack_wait."""
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="INGEST", subjects=["ingest.>"]))
    for index in range(2):
        await js.publish("ingest.r1", f"b{index}".encode())
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=0.5, max_deliver=5)
    pull = await js.pull_subscribe("ingest.>", durable="writers", config=config)

    first, second = await pull.fetch(2, timeout=5)
    assert [first.data, second.data] == [b"b0", b"b1"]
    assert first.metadata.num_delivered == second.metadata.num_delivered == 1
    await first.ack_sync()

    (again,) = await pull.fetch(1, timeout=10)  # returns once ack_wait has passed
    assert again.data == b"b1"
    assert again.metadata.sequence.stream == second.metadata.sequence.stream
    assert again.metadata.num_delivered == 2
    await again.ack_sync()

    info = await js.consumer_info("INGEST", "writers")
    assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)


async def test_killing_a_cluster_node_during_publishes_loses_no_acknowledged_message(nats_cluster: NatsCluster) -> None:
    """kill -9 of the R3 stream's leader mid-stream: every acknowledged publish is stored once, and ingest goes on."""
    total, kill_after = 1500, 300
    connection = await nats.connect(
        servers=nats_cluster.urls, connect_timeout=5, reconnect_time_wait=0.1, max_reconnect_attempts=-1
    )
    try:
        js = connection.jetstream(timeout=2.0)
        await js.add_stream(StreamConfig(name="INGEST", subjects=["ingest.>"], num_replicas=3))
        leader = nats_cluster.stream_leader("INGEST")
        acknowledged: list[str] = []
        attempts = 0
        async with asyncio.timeout(45):
            for index in range(total):
                message_id = f"r1/b{index}"
                if index == kill_after:
                    nats_cluster.kill(leader)

                async def publish(message_id: str = message_id) -> object:
                    nonlocal attempts
                    attempts += 1
                    # A producer retries a batch with the same id until it is acknowledged.
                    return await js.publish("ingest.r1", message_id.encode(), headers={"Nats-Msg-Id": message_id})

                await _until_answered(publish)
                acknowledged.append(message_id)

            info = await _until_answered(lambda: js.stream_info("INGEST"))
            assert info.state.messages == total
            assert info.cluster is not None and info.cluster.leader != leader

            pull = await _until_answered(lambda: js.pull_subscribe("ingest.>", durable="check"))
            stored: list[str] = []
            while len(stored) < total:
                for message in await _until_answered(lambda: pull.fetch(500, timeout=5)):
                    stored.append(message.data.decode())
                    await message.ack()

            nats_cluster.restart(leader)  # the killed node rejoins and catches up from its peers
            caught_up = nats_cluster.stream_messages_on(leader, "INGEST")
            for _ in range(400):
                if caught_up == total:
                    break
                await asyncio.sleep(0.05)  # catching up is the server's business: poll what it reports
                caught_up = nats_cluster.stream_messages_on(leader, "INGEST")
        assert caught_up == total
        assert stored == acknowledged
        assert attempts > total, "the kill did not interrupt publishing: the test proved nothing"
    finally:
        await connection.close()


async def test_a_partition_takeover_resumes_right_after_the_last_committed_message(client: Client) -> None:
    """Purge a partition up to its committed sequence and recreate its consumer: the rest comes first, in order."""
    js = client.jetstream()
    await js.add_stream(StreamConfig(name="INGEST", subjects=["ingest.*.*"], retention=RetentionPolicy.WORK_QUEUE))
    for index in range(10):
        await js.publish("ingest.p1.r1", f"b{index}".encode())
    await js.publish("ingest.p2.r2", b"other partition")
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0)
    dead_owner = await js.pull_subscribe("ingest.p1.*", durable="writer-p1", config=config)
    fetched = await dead_owner.fetch(6, timeout=5)
    for message in fetched[:2]:
        await message.ack_sync()
    committed = fetched[4].metadata.sequence.stream  # committed b0-b4, acknowledged only b0 and b1, then died

    await js.purge_stream("INGEST", subject="ingest.p1.*", seq=committed + 1)  # keeps sequences above `committed`
    await js.delete_consumer("INGEST", "writer-p1")
    new_owner = await js.pull_subscribe("ingest.p1.*", durable="writer-p1", config=config)
    resumed = await new_owner.fetch(10, timeout=5)

    assert [message.data for message in resumed] == [f"b{index}".encode() for index in range(5, 10)]
    assert all(message.metadata.num_delivered == 1 for message in resumed)  # at once, not after ack_wait
    assert (await js.stream_info("INGEST")).state.messages == 6  # b5-b9 and the other partition's message


async def test_a_lease_has_one_holder_only_its_holder_renews_it_and_it_expires(client: Client) -> None:
    """A key-value lease: a second claim fails, a stale renewal fails, and after the TTL another worker claims it."""
    js = client.jetstream()
    leases = await js.create_key_value(KeyValueConfig(bucket="leases", history=1, ttl=0.5))
    token = await leases.create("p1", b"worker-a")
    with pytest.raises(KeyWrongLastSequenceError):
        await leases.create("p1", b"worker-b")
    renewed = await leases.update("p1", b"worker-a", last=token)
    with pytest.raises(KeyWrongLastSequenceError):
        await leases.update("p1", b"worker-b", last=token)  # a paused holder's stale token

    async with asyncio.timeout(20):
        while True:  # the TTL passes on the server's clock: nothing to await but time
            try:
                taken_over = await leases.create("p1", b"worker-b")
                break
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.1)
    assert token < renewed < taken_over  # revisions only grow: usable as fencing tokens
    assert (await leases.get("p1")).value == b"worker-b"
