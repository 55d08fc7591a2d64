"""Figures of the scale-out infrastructure (docs/scale.md): NATS JetStream and PostgreSQL on loopback.

    make scale-bench        # or: .venv-scale/bin/python benchmarks/bench_scale_infra.py [--quick]

Everything runs in one invocation, on servers this script starts itself
(runwatch/testing/servers.py) on 127.0.0.1, each figure beside its baseline. The
servers share the machine's cores with the clients, so beside wall-clock rates
the CPU time of the servers (per batch, per value, per delivery) and of the
workers (per value) is reported: the steadier basis of a capacity model.

1. Encoding of one producer batch (500 metric calls × 4 values): ingest JSON
   (today's wire form) and the columns form, raw and zlib level 1: bytes,
   encode and decode time; and today's validation of that batch
   (``parse_ingest_body``), a serve node's main cost.
2. JetStream publish, single node and a 3-node cluster with an R3 stream:
   ack latency p50/p99 one batch at a time, then throughput with 64 batches
   in flight (``publish_async``), with each batch's ``Nats-Msg-Id``.
3. Pull consumer fetch + explicit ack, with and without decoding the batches.
4. PostgreSQL bulk writes with asyncpg ``COPY`` (default durability: fsync
   and synchronous commit on), one transaction per batch with its batch key:
   (a) today's layout, a row per logging call with a JSON array of values,
   (b) the chunk layout of docs/store.md (a ``bytea`` segment per series per
   batch, with summaries), and sealed 16,384-point chunks for bytes per value;
   1 and 2 concurrent writers; embedded SQLite (today's layout, WAL,
   synchronous=NORMAL) as the baseline. Bytes per value on disk and in WAL.
5. Writer workers end to end: K worker processes (1, 2) share a durable pull
   consumer over a pre-filled stream, decode, store with the batch key, commit,
   then acknowledge.
6. Live fan-out over NATS core subjects between cluster nodes: delivered
   messages/s and server CPU per delivered message for 1, 8 and 32 subscriber
   connections; cross-node latency p50/p99 at a paced rate.

Chunk rows are encoded by the chunk store's own codecs (runwatch.store.chunks)
into the columns of runwatch.store.chunk_schema, with PostgreSQL types
(``bigint``, ``double precision``, ``bytea``). Results go to
benchmarks/results/bench_scale_infra.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import nats
import numpy as np
import orjson
import psutil
from nats.aio.client import __version__ as nats_client_version
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig

from runwatch.store.chunk_schema import CHUNK_COLUMNS
from runwatch.store.chunks import ChunkColumns, ColumnCache, EncodedChunk, encode_chunk
from runwatch.testing.servers import (
    NatsCluster,
    PostgresServer,
    nats_server_binary,
    open_nats,
    open_nats_cluster,
    open_postgres,
    postgres_bin_dir,
)

RESULTS = Path(__file__).parent / "results"
CALLS_PER_BATCH = 500
NAMES = ("train/loss", "train/accuracy", "train/lr", "train/reward")
VALUES_PER_BATCH = CALLS_PER_BATCH * len(NAMES)
SUBJECT = "runwatch.ingest"


# --------------------------------------------------------------------------- data


def make_columns(run_index: int, batch_index: int) -> dict[str, Any]:
    """One batch of a training run as columns: steps, times (s) and one float64 array per metric."""
    rng = np.random.default_rng(run_index * 1_000_003 + batch_index)
    first = batch_index * CALLS_PER_BATCH
    steps = np.arange(first, first + CALLS_PER_BATCH, dtype=np.int64)
    times = 1.8e9 + run_index + steps * 0.004 + rng.uniform(0, 0.001, CALLS_PER_BATCH)
    progress = steps / 1e6
    loss = 2.5 * np.exp(-3 * progress) + rng.normal(0, 0.05, CALLS_PER_BATCH)
    accuracy = np.floor(np.clip(0.2 + progress + rng.normal(0, 0.02, CALLS_PER_BATCH), 0, 1) * 256) / 256
    lr = 3e-4 * 0.5 * (1 + np.cos(np.pi * progress))
    reward = rng.normal(1.0, 0.3, CALLS_PER_BATCH).astype(np.float32).astype(np.float64)
    return {"steps": steps, "times": times, "values": [loss, accuracy, lr, reward]}


def wire_events(run_id: str, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch as /api/ingest events: one metric event per logging call."""
    values = list(zip(*(column.tolist() for column in columns["values"]), strict=True))
    return [
        {"kind": "metric", "run_id": run_id, "timestamp": t, "step": s, "values": dict(zip(NAMES, v, strict=True))}
        for s, t, v in zip(columns["steps"].tolist(), columns["times"].tolist(), values, strict=True)
    ]


def columns_message(run_id: str, columns: dict[str, Any]) -> dict[str, Any]:
    """The batch in the websocket ``columns`` form: parallel arrays, one per metric."""
    return {
        "run_id": run_id,
        "names": list(NAMES),
        "steps": columns["steps"].tolist(),
        "timestamps": columns["times"].tolist(),
        "values": [column.tolist() for column in columns["values"]],
    }


ENCODINGS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
    "json": (orjson.dumps, orjson.loads),
    "json+zlib1": (lambda body: zlib.compress(orjson.dumps(body), 1), lambda data: orjson.loads(zlib.decompress(data))),
    "columns": (orjson.dumps, orjson.loads),
    "columns+zlib1": (
        lambda body: zlib.compress(orjson.dumps(body), 1),
        lambda data: orjson.loads(zlib.decompress(data)),
    ),
}


def batch_body(encoding: str, run_id: str, batch_index: int, columns: dict[str, Any]) -> Any:
    if encoding.startswith("columns"):
        return {"batch_id": f"b{batch_index}", **columns_message(run_id, columns)}
    return {"batch_id": f"b{batch_index}", "events": wire_events(run_id, columns)}


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` so far (10 ms ticks)."""
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def postgres_processes(postgres: PostgresServer) -> list[psutil.Process]:
    """The postmaster and every backend and helper process it runs now."""
    assert postgres.process is not None
    postmaster = psutil.Process(postgres.process.pid)
    return [postmaster, *postmaster.children(recursive=True)]


def nats_processes(cluster: NatsCluster) -> list[psutil.Process]:
    return [psutil.Process(node.process.pid) for node in cluster.nodes if node.process is not None]


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_median(function: Callable[[], Any], repeat: int) -> float:
    """Median CPU seconds of ``repeat`` calls (CPU, not wall: other processes share the cores)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- 1. encoding


def bench_encoding(repeat: int) -> dict[str, Any]:
    """Bytes and CPU of each encoding, and today's ingest validation of the same batch (a serve node's work)."""
    from runwatch.web.api import parse_ingest_body

    columns = make_columns(0, 7)
    body = orjson.dumps(batch_body("json", "run-0000", 7, columns))
    results: dict[str, Any] = {
        "ingest_parse_us": timed_median(lambda: parse_ingest_body(body, 10_000), max(5, repeat // 10)) * 1e6
    }
    for name, (encode, decode) in ENCODINGS.items():
        body = batch_body(name, "run-0000", 7, columns)  # noqa: PLW2901 - each encoding's own body
        data = encode(body)
        results[name] = {
            "bytes": len(data),
            "bytes_per_value": len(data) / VALUES_PER_BATCH,
            "encode_us": timed_median(lambda body=body, encode=encode: encode(body), repeat) * 1e6,
            "decode_us": timed_median(lambda data=data, decode=decode: decode(data), repeat) * 1e6,
        }
    return results


# --------------------------------------------------------------------------- 2./3. JetStream


def encoded_batches(encoding: str, runs: int, batches: int) -> list[tuple[str, str, bytes]]:
    """(subject, message id, payload) of ``batches`` batches spread over ``runs`` runs."""
    encode = ENCODINGS[encoding][0]
    out = []
    for index in range(batches):
        run_id = f"run-{index % runs:04d}"
        batch_index = index // runs
        body = batch_body(encoding, run_id, batch_index, make_columns(index % runs, batch_index))
        out.append((f"{SUBJECT}.{run_id}", f"{run_id}/b{batch_index}", encode(body)))
    return out


async def _fresh_stream(js: Any, replicas: int) -> None:
    try:
        await js.delete_stream("INGEST")
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(
        StreamConfig(
            name="INGEST",
            subjects=[f"{SUBJECT}.>"],
            num_replicas=replicas,
            duplicate_window=120.0,
            max_age=7 * 24 * 3600.0,
        )
    )


async def bench_publish(
    servers: NatsCluster, replicas: int, batches: list[tuple[str, str, bytes]], sequential: int
) -> dict[str, Any]:
    """Ack latency one at a time, then throughput with 64 in flight; the stream keeps the last run's messages."""
    connection = await nats.connect(servers=servers.urls, max_reconnect_attempts=-1)
    processes = nats_processes(servers)
    try:
        js = connection.jetstream(timeout=10.0, publish_async_max_pending=64)
        await _fresh_stream(js, replicas)
        latencies = []
        for subject, message_id, payload in batches[:sequential]:
            start = time.perf_counter()
            await js.publish(subject, payload, headers={"Nats-Msg-Id": "seq-" + message_id})
            latencies.append(time.perf_counter() - start)
        await _fresh_stream(js, replicas)

        sent_at: dict[int, float] = {}
        acked_latency: list[float] = []
        futures = []
        cpu_before = cpu_seconds(processes)
        start = time.perf_counter()
        for index, (subject, message_id, payload) in enumerate(batches):
            sent_at[index] = time.perf_counter()
            future = await js.publish_async(subject, payload, headers={"Nats-Msg-Id": message_id})
            future.add_done_callback(lambda _, index=index: acked_latency.append(time.perf_counter() - sent_at[index]))
            futures.append(future)
        acks = await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(processes) - cpu_before
        assert len({ack.seq for ack in acks}) == len(batches)
        payload_bytes = sum(len(payload) for _, _, payload in batches)
        return {
            "ack_ms_p50": percentile(latencies, 0.5) * 1e3,
            "ack_ms_p99": percentile(latencies, 0.99) * 1e3,
            "batches_per_s": len(batches) / elapsed,
            "values_per_s": len(batches) * VALUES_PER_BATCH / elapsed,
            "mb_per_s": payload_bytes / elapsed / 1e6,
            "pipelined_ack_ms_p50": percentile(acked_latency, 0.5) * 1e3,
            "pipelined_ack_ms_p99": percentile(acked_latency, 0.99) * 1e3,
            "server_cpu_us_per_batch": server_cpu / len(batches) * 1e6,
        }
    finally:
        await connection.close()


async def bench_fetch(urls: list[str], decode: Callable[[bytes], Any] | None, durable: str) -> dict[str, Any]:
    """A pull consumer reads the whole stream in fetches of 100, acknowledging each message."""
    connection = await nats.connect(servers=urls)
    try:
        js = connection.jetstream(timeout=10.0)
        total = (await js.stream_info("INGEST")).state.messages
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=60.0)
        pull = await js.pull_subscribe(f"{SUBJECT}.>", durable=durable, config=config)
        received = 0
        start = time.perf_counter()
        while received < total:
            messages = await pull.fetch(100, timeout=10)
            for message in messages:
                if decode is not None:
                    decode(message.data)
                received += 1
                if received < total:
                    await message.ack()
                else:
                    await message.ack_sync()  # the server has every ack before this one returns
        elapsed = time.perf_counter() - start
        return {"batches_per_s": received / elapsed, "values_per_s": received * VALUES_PER_BATCH / elapsed}
    finally:
        await connection.close()


# --------------------------------------------------------------------------- 4. PostgreSQL layouts

ROWS_SCHEMA = """
CREATE TABLE ingest_batches (run bigint NOT NULL, batch_id text NOT NULL, digest bytea NOT NULL,
                             events integer NOT NULL, PRIMARY KEY (run, batch_id));
CREATE TABLE metric_rows (run bigint NOT NULL, row bigint NOT NULL, step bigint, ts double precision NOT NULL,
                          keyset integer NOT NULL, vals text NOT NULL, tags text, PRIMARY KEY (run, row));
"""
CHUNKS_SCHEMA = """
CREATE TABLE ingest_batches (run bigint NOT NULL, batch_id text NOT NULL, digest bytea NOT NULL,
                             events integer NOT NULL, PRIMARY KEY (run, batch_id));
CREATE TABLE metric_chunks (
    series bigint NOT NULL, seq_first bigint NOT NULL, seq_last bigint NOT NULL, sealed boolean NOT NULL,
    format smallint NOT NULL, count integer NOT NULL, nan_count integer NOT NULL, value_type smallint NOT NULL,
    value_min double precision, value_max double precision, value_sum double precision, value_last double precision,
    step_first bigint, step_last bigint, step_min bigint, step_max bigint,
    time_first bigint NOT NULL, time_last bigint NOT NULL, time_min bigint NOT NULL, time_max bigint NOT NULL,
    block_points integer NOT NULL, blocks bytea NOT NULL,
    seqs bytea NOT NULL, steps bytea, step_mask bytea, times bytea NOT NULL, vals bytea NOT NULL, tags bytea,
    PRIMARY KEY (series, seq_first));
"""
CHUNK_TABLE = ["series", *CHUNK_COLUMNS]
TABLES = {"rows": ("ingest_batches", "metric_rows"), "chunks": ("ingest_batches", "metric_chunks")}
#: ``metric_chunks`` columns whose EncodedChunk attribute has another name.
_CHUNK_ATTRIBUTES = {"value_min": "min", "value_max": "max", "value_sum": "sum", "value_last": "last"}


def chunk_record(series: int, sealed: bool, chunk: EncodedChunk) -> tuple[Any, ...]:
    """A ``metric_chunks`` row of ``chunk``: ``series``, then CHUNK_COLUMNS in order."""
    return (
        series,
        *(sealed if name == "sealed" else getattr(chunk, _CHUNK_ATTRIBUTES.get(name, name)) for name in CHUNK_COLUMNS),
    )


def chunk_records(run: int, seq_first: int, columns: dict[str, Any], sealed: bool) -> list[tuple[Any, ...]]:
    """One chunk row per metric of ``columns``, encoded by the chunk store's codecs (call columns encoded once)."""
    steps = columns["steps"]
    times_us = np.round(columns["times"] * 1e6).astype(np.int64)
    seqs = np.arange(seq_first, seq_first + len(steps), dtype=np.int64)
    cache = ColumnCache()
    return [
        chunk_record(
            run * 8 + index, sealed, encode_chunk(ChunkColumns(seqs, steps, None, times_us, values), cache=cache)
        )
        for index, values in enumerate(columns["values"])
    ]


def row_records(run: int, columns: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Today's layout: a row per logging call, its values as a JSON array (keyset 1 = the four names)."""
    values = zip(*(column.tolist() for column in columns["values"]), strict=True)
    return [
        (run, step, step, ts, 1, orjson.dumps(list(v)).decode(), None)
        for step, ts, v in zip(columns["steps"].tolist(), columns["times"].tolist(), values, strict=True)
    ]


def batch_digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


async def store_in_postgres(connection: asyncpg.Connection, layout: str, batches: list[tuple[int, int, Any]]) -> int:
    """Store decoded batches (run, batch index, columns) in one transaction each; returns values stored."""
    stored = 0
    for run, batch_index, columns in batches:
        async with connection.transaction():
            claimed = await connection.fetchval(
                "INSERT INTO ingest_batches VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
                run,
                f"b{batch_index}",
                batch_digest(columns["times"].tobytes()),
                CALLS_PER_BATCH,
            )
            if not claimed:
                continue
            if layout == "rows":
                await connection.copy_records_to_table("metric_rows", records=row_records(run, columns))
            else:
                records = chunk_records(run, batch_index * CALLS_PER_BATCH, columns, sealed=False)
                await connection.copy_records_to_table("metric_chunks", records=records, columns=CHUNK_TABLE)
        stored += VALUES_PER_BATCH
    return stored


async def reset_tables(dsn: str, layout: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DROP TABLE IF EXISTS ingest_batches, metric_rows, metric_chunks")
        await connection.execute(ROWS_SCHEMA if layout == "rows" else CHUNKS_SCHEMA)
    finally:
        await connection.close()


async def table_bytes(connection: asyncpg.Connection, layout: str) -> int:
    """Heap + TOAST + indexes of the layout's data table (the batch-key table counted apart)."""
    return int(await connection.fetchval(f"SELECT pg_total_relation_size('{TABLES[layout][1]}')"))


async def bench_postgres_writes(
    postgres: PostgresServer, layout: str, writers: int, batches_per_writer: int
) -> dict[str, Any]:
    dsn = postgres.dsn
    await reset_tables(dsn, layout)
    data = [
        [
            (writer * 100 + run, index, make_columns(run, index))
            for index in range(batches_per_writer)
            for run in range(2)
        ]
        for writer in range(writers)
    ]
    connections = [await asyncpg.connect(dsn) for _ in range(writers)]
    try:
        lsn_before = await connections[0].fetchval("SELECT pg_current_wal_insert_lsn()")
        processes = postgres_processes(postgres)
        cpu_before = cpu_seconds(processes)
        start = time.perf_counter()
        stored = await asyncio.gather(
            *(store_in_postgres(c, layout, d) for c, d in zip(connections, data, strict=True))
        )
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(processes) - cpu_before
        wal = await connections[0].fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", lsn_before)
        await connections[0].execute("CHECKPOINT")
        size = await table_bytes(connections[0], layout)
        keys = int(await connections[0].fetchval("SELECT pg_total_relation_size('ingest_batches')"))
    finally:
        for connection in connections:
            await connection.close()
    values = sum(stored)
    return {
        "values_per_s": values / elapsed,
        "batches_per_s": values / VALUES_PER_BATCH / elapsed,
        "bytes_per_value": size / values,
        "batch_key_bytes_per_value": keys / values,
        "wal_bytes_per_value": float(wal) / values,
        "server_cpu_us_per_value": server_cpu / values * 1e6,
    }


async def bench_sealed_chunks(dsn: str, calls: int) -> dict[str, Any]:
    """Bytes per value once a run's chunks are sealed: 16,384-point chunks of one long run."""
    await reset_tables(dsn, "chunks")
    batches = [make_columns(0, index) for index in range(calls // CALLS_PER_BATCH)]
    columns = {
        "steps": np.concatenate([b["steps"] for b in batches]),
        "times": np.concatenate([b["times"] for b in batches]),
        "values": [np.concatenate([b["values"][i] for b in batches]) for i in range(len(NAMES))],
    }
    records = []
    for start in range(0, calls, 16_384):
        part = {
            "steps": columns["steps"][start : start + 16_384],
            "times": columns["times"][start : start + 16_384],
            "values": [v[start : start + 16_384] for v in columns["values"]],
        }
        records += chunk_records(0, start, part, sealed=True)
    connection = await asyncpg.connect(dsn)
    try:
        start_time = time.perf_counter()
        await connection.copy_records_to_table("metric_chunks", records=records, columns=CHUNK_TABLE)
        elapsed = time.perf_counter() - start_time
        size = await table_bytes(connection, "chunks")
        # the encoded columns and block summaries: the last seven fields, None where a column is absent
        blob_bytes = sum(len(blob) for record in records for blob in record[-7:] if blob is not None)
    finally:
        await connection.close()
    values = calls * len(NAMES)
    return {
        "bytes_per_value": size / values,
        "blob_bytes_per_value": blob_bytes / values,
        "values_per_s": values / elapsed,
    }


def bench_sqlite_baseline(batches: int) -> dict[str, Any]:
    """Embedded SQLite, today's layout and settings (WAL, synchronous=NORMAL): one writer, a commit per batch."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "store.db"
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE metric_rows (run INTEGER NOT NULL, row INTEGER NOT NULL, step INTEGER, ts REAL NOT NULL,"
            " keyset INTEGER NOT NULL, vals TEXT NOT NULL, tags TEXT, PRIMARY KEY (run, row)) WITHOUT ROWID"
        )
        connection.execute(
            "CREATE TABLE ingest_batches (run INTEGER, batch_id TEXT, digest BLOB, events INTEGER,"
            " PRIMARY KEY (run, batch_id)) WITHOUT ROWID"
        )
        data = [(run, index, make_columns(run, index)) for index in range(batches) for run in range(2)]
        start = time.perf_counter()
        for run, index, columns in data:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(
                "INSERT INTO ingest_batches VALUES (?, ?, ?, ?)",
                (run, f"b{index}", batch_digest(columns["times"].tobytes()), CALLS_PER_BATCH),
            )
            connection.executemany("INSERT INTO metric_rows VALUES (?, ?, ?, ?, ?, ?, ?)", row_records(run, columns))
            connection.execute("COMMIT")
        elapsed = time.perf_counter() - start
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.close()
        values = len(data) * VALUES_PER_BATCH
        return {"values_per_s": values / elapsed, "bytes_per_value": path.stat().st_size / values}


# --------------------------------------------------------------------------- 5. workers end to end


def worker_process(urls: list[str], dsn: str, layout: str, durable: str, go: Any, report: Any) -> None:
    try:
        asyncio.run(_worker(urls, dsn, layout, durable, go, report))
    except BaseException as error:
        report.put(f"worker failed: {error!r}")  # the parent stops at once instead of waiting out its timeout
        raise


async def _worker(urls: list[str], dsn: str, layout: str, durable: str, go: Any, report: Any) -> None:
    """Fetch up to 10 batches, decode, store each with its key in one transaction, commit, then ack them."""
    decode = ENCODINGS["json+zlib1"][1]
    connection = await nats.connect(servers=urls)
    database = await asyncpg.connect(dsn)
    try:
        js = connection.jetstream(timeout=10.0)
        pull = await js.pull_subscribe_bind(durable=durable, stream="INGEST")
        report.put("ready")
        await asyncio.to_thread(go.wait, 120)
        start = time.perf_counter()
        cpu_start = time.process_time()
        values = 0
        idle = 0
        while idle < 2:
            try:
                messages = await pull.fetch(10, timeout=0.5)
            except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
                idle += 1
                continue
            idle = 0
            decoded = []
            for message in messages:
                body = decode(message.data)
                run = int(body["events"][0]["run_id"].split("-")[1])
                events = body["events"]
                columns = {
                    "steps": np.fromiter((e["step"] for e in events), np.int64, len(events)),
                    "times": np.fromiter((e["timestamp"] for e in events), np.float64, len(events)),
                    "values": [np.fromiter((e["values"][n] for e in events), np.float64, len(events)) for n in NAMES],
                }
                decoded.append((run, int(body["batch_id"][1:]), columns))
            values += await store_in_postgres(database, layout, decoded)
            for message in messages:  # only after the commit
                await message.ack()
            end = time.perf_counter()
        await connection.flush()
        report.put((start, end, values, time.process_time() - cpu_start))
    finally:
        await database.close()
        await connection.close()


async def _prepare_consumer(urls: list[str], durable: str) -> None:
    connection = await nats.connect(servers=urls)
    try:
        config = ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=60.0
        )
        await connection.jetstream().add_consumer("INGEST", config)
    finally:
        await connection.close()


def bench_workers(urls: list[str], dsn: str, layout: str, workers: int) -> dict[str, Any]:
    durable = f"writers-{layout}-{workers}"
    asyncio.run(reset_tables(dsn, layout))
    asyncio.run(_prepare_consumer(urls, durable))
    context = multiprocessing.get_context("spawn")
    go, report = context.Event(), context.Queue()
    processes = [
        context.Process(target=worker_process, args=(urls, dsn, layout, durable, go, report)) for _ in range(workers)
    ]
    for process in processes:
        process.start()
    # The clock starts once every worker has imported and connected.
    readiness = [report.get(timeout=120) for _ in processes]
    if readiness != ["ready"] * workers:
        raise RuntimeError(f"workers did not start: {readiness}")
    go.set()
    outcomes = [report.get(timeout=300) for _ in processes]
    for outcome in outcomes:
        if isinstance(outcome, str):
            raise RuntimeError(outcome)
    for process in processes:
        process.join(60)
    start = min(o[0] for o in outcomes)
    end = max(o[1] for o in outcomes)
    values = sum(o[2] for o in outcomes)
    return {
        "values_per_s": values / (end - start),
        "values": values,
        "per_worker": [o[2] for o in outcomes],
        "worker_cpu_us_per_value": sum(o[3] for o in outcomes) / values * 1e6,
    }


# --------------------------------------------------------------------------- 6. fan-out


class LiveSubscribers:
    """``count`` NATS connections to the cluster's other nodes, each subscribed to ``subject``.

    Probe messages (a ``probe`` header) tell when the subscription has reached
    the publisher's node (interest crosses the cluster's routes asynchronously);
    other messages are counted, and their ``sent`` header (if any) gives a latency.
    """

    def __init__(self, expected_per_subscriber: int) -> None:
        self.expected = expected_per_subscriber
        self.progress = asyncio.Event()
        self.received: list[int] = []
        self.probed: list[bool] = []
        self.latencies: list[float] = []
        self.all_probed = asyncio.Event()
        self.all_received = asyncio.Event()
        self.connections: list[Any] = []

    async def open(self, urls: Sequence[str], subject: str, count: int) -> None:
        for index in range(count):
            connection = await nats.connect(servers=[urls[index % len(urls)]])
            self.received.append(0)
            self.probed.append(False)
            await connection.subscribe(subject, cb=self._handler(index), pending_msgs_limit=self.expected + 1000)
            self.connections.append(connection)

    def _handler(self, index: int) -> Callable[[Any], Any]:
        async def handle(message: Any) -> None:
            headers = message.headers
            if headers and "probe" in headers:
                self.probed[index] = True
                if all(self.probed):
                    self.all_probed.set()
                return
            if headers and "sent" in headers:
                self.latencies.append(time.perf_counter() - float(headers["sent"]))
            self.received[index] += 1
            self.progress.set()
            if self.received[index] == self.expected and all(r >= self.expected for r in self.received):
                self.all_received.set()

        return handle

    async def wait_for_interest(self, publisher: Any, subject: str) -> None:
        async with asyncio.timeout(20):
            while not self.all_probed.is_set():
                await publisher.publish(subject, b"", headers={"probe": "1"})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await self.all_probed.wait()

    async def wait_until_within(self, sent: int, window: int) -> None:
        """Flow control: wait until every subscriber is fewer than ``window`` messages behind ``sent``.

        NATS core has no backpressure: a subscriber more than its pending limit
        behind is cut off by the server as a slow consumer.
        """
        while min(self.received) < sent - window:
            self.progress.clear()
            await self.progress.wait()

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


async def bench_fanout(cluster: NatsCluster, subscriber_counts: Sequence[int], deliveries: int) -> dict[str, Any]:
    """Publisher on node 1, subscribers spread over nodes 2 and 3; each message is a 25 ms live batch (50 calls).

    Each subscriber count gets about ``deliveries`` deliveries in all (the server's CPU time has 10 ms ticks).
    """
    columns = make_columns(0, 0)
    live = {
        "steps": columns["steps"][:50],
        "times": columns["times"][:50],
        "values": [v[:50] for v in columns["values"]],
    }
    payload = orjson.dumps({"type": "batch", "format": "columns", **columns_message("run-0000", live)})
    server_processes = nats_processes(cluster)
    other_nodes = [node.url for node in cluster.nodes[1:]]
    publisher = await nats.connect(servers=[cluster.nodes[0].url])
    results: dict[str, Any] = {"payload_bytes": len(payload)}
    try:
        for count in subscriber_counts:
            messages = deliveries // count
            subject = f"runwatch.live.fanout-{count}"
            subscribers = LiveSubscribers(messages)
            await subscribers.open(other_nodes, subject, count)
            await subscribers.wait_for_interest(publisher, subject)
            cpu_before = cpu_seconds(server_processes)
            start = time.perf_counter()
            for sent in range(1, messages + 1):
                await publisher.publish(subject, payload)
                if sent % 256 == 0:
                    await subscribers.wait_until_within(sent, window=2048)
            await publisher.flush()
            async with asyncio.timeout(120):
                await subscribers.all_received.wait()
            elapsed = time.perf_counter() - start
            server_cpu = cpu_seconds(server_processes) - cpu_before
            results[f"subscribers_{count}"] = {
                "deliveries_per_s": messages * count / elapsed,
                "server_cpu_us_per_delivery": server_cpu / (messages * count) * 1e6,
            }
            await subscribers.close()

        # Cross-node latency at a live pace: a message every 5 ms to 8 subscribers on the other nodes.
        paced = 400
        subscribers = LiveSubscribers(paced)
        await subscribers.open(other_nodes, "runwatch.live.paced", 8)
        await subscribers.wait_for_interest(publisher, "runwatch.live.paced")
        for _ in range(paced):
            await publisher.publish("runwatch.live.paced", payload, headers={"sent": repr(time.perf_counter())})
            await asyncio.sleep(0.005)  # the pace of a live stream (the hub's 25 ms window, with room)
        async with asyncio.timeout(30):
            await subscribers.all_received.wait()
        results["cross_node_latency_ms_p50"] = percentile(subscribers.latencies, 0.5) * 1e3
        results["cross_node_latency_ms_p99"] = percentile(subscribers.latencies, 0.99) * 1e3
        await subscribers.close()
    finally:
        await publisher.close()
    return results


# --------------------------------------------------------------------------- main


def versions(postgres: PostgresServer) -> dict[str, str]:
    nats_version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    pg_version = subprocess.run(
        [str(postgres_bin_dir() / "postgres"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "nats_server": nats_version,
        "postgres": pg_version,
        "nats_py": nats_client_version,
        "asyncpg": asyncpg.__version__,
    }


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the servers' context managers stop them and remove their directories.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    arguments = parser.parse_args()
    quick = arguments.quick
    publish_batches = 100 if quick else 600
    sequential = 50 if quick else 300
    pg_batches = 10 if quick else 100
    sealed_calls = 50_000 if quick else 400_000
    fanout_deliveries = 6_400 if quick else 64_000

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "calls_per_batch": CALLS_PER_BATCH,
        "values_per_batch": VALUES_PER_BATCH,
    }
    started = time.perf_counter()
    results["encoding"] = bench_encoding(20 if quick else 200)
    results["ingest_parse_us"] = results["encoding"].pop("ingest_parse_us")
    print("encoding:", json.dumps(results["encoding"], indent=1))

    batches = {name: encoded_batches(name, 8, publish_batches) for name in ("json", "json+zlib1")}
    with open_postgres() as postgres:
        results["versions"] = versions(postgres)
        with open_nats() as single, open_nats_cluster(3) as cluster:
            for label, servers, replicas in (("single", single, 1), ("r3", cluster, 3)):
                for encoding in ("json", "json+zlib1"):
                    key = f"publish_{label}_{encoding}"
                    results[key] = asyncio.run(bench_publish(servers, replicas, batches[encoding], sequential))
                    print(key, results[key])
                # the stream now holds the json+zlib1 batches
                for decoding in (None, ENCODINGS["json+zlib1"][1]):
                    key = f"fetch_ack_{label}" + ("_decoded" if decoding else "")
                    durable = "bench-decoded" if decoding else "bench"
                    results[key] = asyncio.run(bench_fetch(servers.urls, decoding, durable))
                    print(key, results[key])

            results["sqlite_rows_1_writer"] = bench_sqlite_baseline(pg_batches)
            print("sqlite", results["sqlite_rows_1_writer"])
            for layout in ("rows", "chunks"):
                for writers in (1, 2):
                    key = f"postgres_{layout}_{writers}_writers"
                    results[key] = asyncio.run(bench_postgres_writes(postgres, layout, writers, pg_batches))
                    print(key, results[key])
            results["postgres_sealed_chunks"] = asyncio.run(bench_sealed_chunks(postgres.dsn, sealed_calls))
            print("sealed", results["postgres_sealed_chunks"])

            # Workers end to end over the R3 stream (it holds publish_batches json+zlib1 batches).
            for layout in ("rows", "chunks"):
                for workers in (1, 2):
                    key = f"workers_{layout}_{workers}"
                    results[key] = bench_workers(cluster.urls, postgres.dsn, layout, workers)
                    print(key, results[key])

            results["fanout"] = asyncio.run(bench_fanout(cluster, (1, 8, 32), fanout_deliveries))
            print("fanout", results["fanout"])
    results["seconds"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scale_infra.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    """The figures as the Markdown tables of docs/scale.md."""

    def row(*cells: Any) -> None:
        print("| " + " | ".join(str(cell) for cell in cells) + " |")

    print(f"\n{results['machine']}, load {results['load_average_at_start'][0]:.2f}; {results['versions']}\n")
    row("encoding of one batch (500 calls × 4)", "bytes", "B/value", "encode CPU µs", "decode CPU µs")
    row(*["---"] * 5)
    for name, f in results["encoding"].items():
        row(name, f"{f['bytes']:,}", f"{f['bytes_per_value']:.2f}", f"{f['encode_us']:.0f}", f"{f['decode_us']:.0f}")
    print()
    print(
        f"\ntoday's ingest validation of the json batch (parse_ingest_body): {results['ingest_parse_us']:.0f} CPU µs\n"
    )
    row(
        "JetStream",
        "ack p50 / p99 ms",
        "batches/s (64 in flight)",
        "values/s",
        "MB/s",
        "in-flight ack p50 / p99 ms",
        "server CPU µs/batch",
    )
    row(*["---"] * 7)
    for label in ("single", "r3"):
        for encoding in ("json", "json+zlib1"):
            f = results[f"publish_{label}_{encoding}"]
            row(
                f"{label}, publish {encoding}",
                f"{f['ack_ms_p50']:.2f} / {f['ack_ms_p99']:.2f}",
                f"{f['batches_per_s']:,.0f}",
                f"{f['values_per_s']:,.0f}",
                f"{f['mb_per_s']:.0f}",
                f"{f['pipelined_ack_ms_p50']:.1f} / {f['pipelined_ack_ms_p99']:.1f}",
                f"{f['server_cpu_us_per_batch']:.0f}",
            )
        for suffix, what in (("", "pull fetch + ack"), ("_decoded", "pull fetch + decode + ack")):
            f = results[f"fetch_ack_{label}{suffix}"]
            row(f"{label}, {what}", "", f"{f['batches_per_s']:,.0f}", f"{f['values_per_s']:,.0f}", "", "", "")
    print()
    row(
        "store writes (a transaction per batch, with its key)",
        "values/s",
        "B/value on disk",
        "WAL B/value",
        "server CPU µs/value",
    )
    row(*["---"] * 5)
    f = results["sqlite_rows_1_writer"]
    row("SQLite, rows, 1 writer (baseline)", f"{f['values_per_s']:,.0f}", f"{f['bytes_per_value']:.1f}", "", "")
    for layout in ("rows", "chunks"):
        for writers in (1, 2):
            f = results[f"postgres_{layout}_{writers}_writers"]
            row(
                f"PostgreSQL, {layout}, {writers} writer{'s' if writers > 1 else ''}",
                f"{f['values_per_s']:,.0f}",
                f"{f['bytes_per_value']:.2f}",
                f"{f['wal_bytes_per_value']:.2f}",
                f"{f['server_cpu_us_per_value']:.3f}",
            )
    f = results["postgres_sealed_chunks"]
    sizes = f"{f['bytes_per_value']:.2f} (blobs {f['blob_bytes_per_value']:.2f})"
    row("PostgreSQL, sealed 16,384-point chunks (one COPY)", f"{f['values_per_s']:,.0f}", sizes, "", "")
    print()
    row("workers end to end (R3 stream → PostgreSQL)", "committed values/s", "worker CPU µs/value")
    row("---", "---", "---")
    for layout in ("rows", "chunks"):
        for workers in (1, 2):
            f = results[f"workers_{layout}_{workers}"]
            row(
                f"{layout}, {workers} worker{'s' if workers > 1 else ''}",
                f"{f['values_per_s']:,.0f}",
                f"{f['worker_cpu_us_per_value']:.3f}",
            )
    f = results["fanout"]
    print()
    row(f"fan-out, {f['payload_bytes']:,} B messages", "deliveries/s", "server CPU µs per delivery")
    row("---", "---", "---")
    for key, figures in f.items():
        if key.startswith("subscribers_"):
            count = key.split("_")[1]
            row(
                f"{count} subscriber(s)",
                f"{figures['deliveries_per_s']:,.0f}",
                f"{figures['server_cpu_us_per_delivery']:.1f}",
            )
    latency = f"{f['cross_node_latency_ms_p50']:.2f} / {f['cross_node_latency_ms_p99']:.2f}"
    print(f"\ncross-node latency, 8 subscribers, a message every 5 ms, p50 / p99: {latency} ms")
    print(f"\ntotal {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
