"""Figures of runwatch scaled out (docs/scale.md, *Built*): the whole path, on real servers and processes.

    make scale-bench        # or: .venv-scale/bin/python benchmarks/bench_scale.py [--quick]

Everything runs in one invocation on loopback, each figure beside its
baseline from the same run (runwatch/testing starts the servers and
processes). A batch is 500 logging calls × 4 values = 2,000 values, as in
bench_scale_infra.py.

1. **Committed values/s**: ``runwatch worker`` processes (1, then 2) drain a
   single-node JetStream stream holding the batches as serve nodes publish
   them (columns form + zlib), through liveness and alerts into PostgreSQL,
   acknowledging after each commit; timed from the first publish to the last
   row committed. Baseline: the same batches through an embedded pipeline
   (ingest → liveness → alerts → SQLite), eight submitters at once, timed
   until committed.
2. **Producer batch ack latency** p50/p99, one batch at a time over HTTP
   (``POST /api/ingest``): a serve node on the bus answers once JetStream
   persisted the batch (single node; R3 on a 3-node cluster); baseline: an
   embedded ``runwatch serve`` answering once SQLite committed it.
3. **Emit → subscriber latency across nodes**: a small batch posted to node
   B, timed until a websocket subscriber of node A receives it (p50/p99);
   baseline: the same on one embedded node (posted and subscribed there).

Results go to benchmarks/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
import orjson
import psutil
import websockets

from runwatch.events import Metric
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.sources.ingest import INGEST
from runwatch.store.postgres import PostgresStore
from runwatch.store.sqlite import SQLiteStore
from runwatch.testing.processes import running
from runwatch.testing.servers import free_port, open_nats, open_nats_cluster, open_postgres
from runwatch.wire.bus import encode_batch, ingest_subject, message_id

RESULTS = Path(__file__).parent / "results"
CALLS_PER_BATCH = 500
NAMES = ("train/loss", "train/accuracy", "train/lr", "train/reward")
VALUES_PER_BATCH = CALLS_PER_BATCH * len(NAMES)
PARTITIONS = 8
RUNS = 16  # spread over every partition
T0 = 1_800_000_000.0


def batch_calls(run_id: str, index: int) -> list[Metric]:
    """Batch ``index`` of a run: 500 logging calls of 4 metrics."""
    first = index * CALLS_PER_BATCH
    return [
        Metric(
            run_id,
            T0 + (first + call) / 100,
            {NAMES[0]: 1.0 / (first + call + 1), NAMES[1]: call / CALLS_PER_BATCH, NAMES[2]: 3e-4, NAMES[3]: 0.5},
            first + call,
        )
        for call in range(CALLS_PER_BATCH)
    ]


def wire_body(run_id: str, index: int) -> dict[str, Any]:
    events = [
        {"kind": "metric", "run_id": run_id, "timestamp": m.timestamp, "step": m.step, "values": m.values}
        for m in batch_calls(run_id, index)
    ]
    return {"batch_id": f"{run_id}-{index}", "events": events}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 0.5) * 1000, "p99_ms": percentile(samples, 0.99) * 1000, "n": len(samples)}


# -- 1. committed values/s ----------------------------------------------------------------------------


async def sqlite_baseline(batches: int, directory: Path) -> dict[str, Any]:
    """The same batches through an embedded pipeline into SQLite, eight submitters at once (and its CPU per value)."""
    graph = {
        "sources": {"ingest": {"type": "ingest"}},
        "stages": {
            "liveness": {"type": "liveness", "inputs": ["ingest"]},
            "alerts": {"type": "alerts", "inputs": ["liveness"]},
        },
        "sinks": {"store": {"type": "sqlite", "inputs": ["alerts"]}},
    }
    path = directory / "baseline.db"
    context = ComponentContext(db_path=str(path), data_dir=directory / "baseline")
    prepared = [(f"run-{index % RUNS}", index // RUNS) for index in range(batches)]
    events = {key: batch_calls(*key) for key in prepared}
    async with Pipeline(graph, context=context) as pipeline:
        ingest = pipeline.context.services[INGEST]
        started = time.perf_counter()
        cpu_before = time.process_time()
        queue = list(prepared)

        async def submitter() -> None:
            while queue:
                run_id, index = queue.pop()
                await ingest.submit(events[(run_id, index)], f"{run_id}-{index}", digest=f"{run_id}-{index}")

        async with anyio.create_task_group() as tasks:
            for _ in range(8):
                tasks.start_soon(submitter)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
    stored = sum(SQLiteStore(path).run_summary(f"run-{run}")["metrics"][NAMES[0]]["count"] for run in range(RUNS))
    assert stored == batches * CALLS_PER_BATCH
    values = batches * VALUES_PER_BATCH
    return {"values_per_second": values / elapsed, "seconds": elapsed, "cpu_us_per_value": cpu / values * 1e6}


async def publish_all(urls: list[str], batches: int) -> float:
    """Publish the batches as serve nodes do (same subjects, bodies and message ids); when the first went."""
    client = await nats.connect(servers=urls)
    try:
        js = client.jetstream(timeout=30)
        bodies = []
        for index in range(batches):
            run_id, number = f"run-{index % RUNS}", index // RUNS
            digest = f"d{index}"
            body = encode_batch(run_id, f"{run_id}-{number}", digest, time.time(), batch_calls(run_id, number))
            bodies.append((ingest_subject(run_id, PARTITIONS), body, message_id(run_id, f"{run_id}-{number}", digest)))
        started = time.perf_counter()
        pending = [await js.publish_async(subject, body, headers={"Nats-Msg-Id": mid}) for subject, body, mid in bodies]
        await asyncio.gather(*pending)
        return started
    finally:
        await client.close()


def wait_committed(dsn: str, calls: int, timeout: float = 300.0) -> float:
    """Poll the store until it holds ``calls`` logging calls of the runs; when that was seen."""
    store = PostgresStore(dsn)
    deadline = time.monotonic() + timeout
    while True:
        statuses = store.run_statuses([f"run-{run}" for run in range(RUNS)])
        held = sum(store.run_summary(run)["metrics"].get(NAMES[0], {}).get("count", 0) for run in statuses)
        if held >= calls:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {held} of {calls} calls committed after {timeout} s")
        time.sleep(0.05)  # the workers commit on their own schedule: poll the store


def workers_throughput(workers: int, batches: int, directory: Path) -> dict[str, Any]:
    """``workers`` worker processes drain the batches into a fresh PostgreSQL; committed values/s."""
    with open_nats() as nats_server, open_postgres() as postgres:
        dsn = postgres.dsn
        with running(dsn, nats_server.urls, directory / f"w{workers}", partitions=PARTITIONS) as fleet:
            started_workers = fleet.start(serves=0, workers=[f"w{n}" for n in range(workers)], lease_ttl=15.0)
            wait_all_partitions_owned(nats_server.urls)
            processes = [psutil.Process(worker.process.pid) for worker in started_workers]
            cpu_before = sum(cpu_seconds(process) for process in processes)
            started = asyncio.run(publish_all(nats_server.urls, batches))
            done = wait_committed(dsn, batches * CALLS_PER_BATCH)
            cpu = sum(cpu_seconds(process) for process in processes) - cpu_before
    elapsed = done - started
    values = batches * VALUES_PER_BATCH
    return {
        "values_per_second": values / elapsed,
        "seconds": elapsed,
        "workers": workers,
        "worker_cpu_us_per_value": cpu / values * 1e6,
    }


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def wait_all_partitions_owned(urls: list[str], timeout: float = 60.0) -> None:
    async def owned() -> int:
        client = await nats.connect(servers=urls)
        try:
            leases = await client.jetstream().key_value("runwatch_leases")
            try:
                return len(await leases.keys())
            except nats.js.errors.NoKeysError:
                return 0
        finally:
            await client.close()

    deadline = time.monotonic() + timeout
    while asyncio.run(owned()) < PARTITIONS:
        if time.monotonic() > deadline:
            raise RuntimeError("the workers did not take every partition")
        time.sleep(0.2)  # the leases are the workers' business: poll the bucket


# -- 2. producer batch ack latency --------------------------------------------------------------------


def ack_latencies(url: str, samples: int, offset: int) -> dict[str, float]:
    """POST batches one at a time to ``url``; the time until each answer."""
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for index in range(samples):
            body = orjson.dumps(wire_body("latency", offset + index))
            started = time.perf_counter()
            response = client.post("/api/ingest", content=body, headers={"content-type": "application/json"})
            times.append(time.perf_counter() - started)
            assert response.status_code == 202, response.text
    return latency(times)


def embedded_serve(directory: Path) -> tuple[subprocess.Popen[str], str]:
    """An embedded ``runwatch serve`` (SQLite) on a free port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(directory / "embedded.db"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "serving" in line:
            return process, f"http://127.0.0.1:{port}"
    raise RuntimeError("the embedded server did not start")


# -- 3. emit → subscriber latency ---------------------------------------------------------------------


async def cross_node_latency(post_to: str, subscribe_at: str, samples: int) -> dict[str, float]:
    """A small batch posted to one node, timed until a websocket subscriber of another receives it."""
    times = []
    ws_url = subscribe_at.replace("http://", "ws://") + "/ws?runs=ping"
    async with websockets.connect(ws_url) as socket, httpx.AsyncClient(base_url=post_to, timeout=30) as client:
        assert orjson.loads(await socket.recv())["type"] == "subscribed"
        for index in range(samples):
            event = {"kind": "metric", "run_id": "ping", "timestamp": time.time(), "step": index, "values": {"x": 1.0}}
            started = time.perf_counter()
            response = await client.post("/api/ingest", json={"batch_id": f"ping-{index}", "events": [event]})
            assert response.status_code == 202, response.text
            while True:
                message = orjson.loads(await socket.recv())
                if message["type"] == "batch" and any(e.get("step") == index for e in message["events"]):
                    break
            times.append(time.perf_counter() - started)
    return latency(times)


def bus_latencies(urls: list[str], samples: int, directory: Path, label: str) -> dict[str, Any]:
    with open_postgres() as postgres, running(postgres.dsn, urls, directory / label, partitions=PARTITIONS) as fleet:
        node_a, node_b, _ = fleet.start(serves=2, workers=["w0"], lease_ttl=6.0)
        assert node_a.url and node_b.url
        ack_latencies(node_b.url, 5, 0)  # warm-up: connections, first run
        result = {"ack": ack_latencies(node_b.url, samples, 5)}
        result["emit_to_subscriber"] = asyncio.run(cross_node_latency(node_b.url, node_a.url, samples))
        return result


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not figures")
    quick = parser.parse_args().quick
    batches = 32 if quick else 320
    samples = 20 if quick else 200
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "values_per_batch": VALUES_PER_BATCH,
        "batches": batches,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-scale-") as name:
        directory = Path(name)
        results["sqlite_embedded"] = asyncio.run(sqlite_baseline(batches, directory))
        print("sqlite", results["sqlite_embedded"], flush=True)
        for workers in (1, 2):
            key = f"postgres_{workers}_workers"
            results[key] = workers_throughput(workers, batches, directory)
            print(key, results[key], flush=True)

        process, url = embedded_serve(directory)
        try:
            ack_latencies(url, 5, 0)
            results["embedded_ack"] = ack_latencies(url, samples, 5)
            results["embedded_emit_to_subscriber"] = asyncio.run(cross_node_latency(url, url, samples))
        finally:
            process.terminate()
            process.communicate(timeout=30)
        print("embedded", results["embedded_ack"], results["embedded_emit_to_subscriber"], flush=True)
        with open_nats() as single:
            results["bus_single"] = bus_latencies(single.urls, samples, directory, "single")
        print("bus single", results["bus_single"], flush=True)
        with open_nats_cluster(3) as cluster:
            results["bus_r3"] = bus_latencies(cluster.urls, samples, directory, "r3")
        print("bus r3", results["bus_r3"], flush=True)
    results["seconds"] = time.perf_counter() - started
    results["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_scale.json").write_text(json.dumps(results, indent=1))
    print_table(results)


def print_table(results: dict[str, Any]) -> None:
    """The figures as the Markdown tables of docs/scale.md."""
    print(f"\n{results['machine']}, load {results['load_average_at_start'][0]:.2f}, {results['seconds']:.0f} s\n")
    print("| committed values/s, stages + store (2,000-value batches) | values/s | CPU µs per value |")
    print("|---|---|---|")
    baseline = results["sqlite_embedded"]
    print(f"| embedded SQLite (baseline) | {baseline['values_per_second']:,.0f} | {baseline['cpu_us_per_value']:.2f} |")
    for workers in (1, 2):
        figure = results[f"postgres_{workers}_workers"]
        rate, cpu = figure["values_per_second"], figure["worker_cpu_us_per_value"]
        print(f"| bus → {workers} worker(s) → PostgreSQL | {rate:,.0f} | {cpu:.2f} (workers) |")
    print("\n| latency p50 / p99 (ms) | producer batch ack | emit → subscriber |")
    print("|---|---|---|")
    rows = (
        ("embedded serve, SQLite (baseline)", results["embedded_ack"], results["embedded_emit_to_subscriber"]),
        ("bus, 1 NATS node", results["bus_single"]["ack"], results["bus_single"]["emit_to_subscriber"]),
        ("bus, 3-node cluster (R3)", results["bus_r3"]["ack"], results["bus_r3"]["emit_to_subscriber"]),
    )
    for label, ack, emit in rows:
        print(f"| {label} | {ack['p50_ms']:.1f} / {ack['p99_ms']:.1f} | {emit['p50_ms']:.1f} / {emit['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
