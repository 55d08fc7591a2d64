"""Web figures of runwatch, in one run, each beside its baseline.

    python benchmarks/bench_web.py [--quick]

1. Emit → websocket subscriber latency (p50, p99) with 50 subscribers while a
   training thread logs 100,000 metric values/s (25,000 calls of 4 values),
   paced for 10 s. Subscribers run in a separate process (their own GIL) and
   compare each event's timestamp with their receive time (same clock).
2. ``GET /api/runs/{id}/metrics?max_points=2000`` over a 1M-point series:
   the first (cold) request and the median of later (warm) ones.
3. Committed throughput with one subscriber that never reads, beside the same
   run with no subscriber.
4. Acknowledged remote ingest (``POST /api/ingest``, batches of 500 metric
   events, one client) with 10 subscribers whose 1,000-pattern run filters
   match nothing, beside the same server with no subscriber; and the longest
   ``update_metrics`` call of a ``WebMonitor`` logging 25,000 calls/s for 5 s
   beside 5 such subscribers, and how long its ``flush()`` then takes, beside
   the same with none.

Everything stays on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from runwatch import MonitorConfig, WebMonitor

RESULTS = Path(__file__).parent / "results"


def monitor_for(directory: Path, name: str) -> WebMonitor:
    return WebMonitor(MonitorConfig(db_path=str(directory / f"{name}.db"), data_dir=str(directory / name), web_port=0))


# -- 1. latency --------------------------------------------------------------------------


def subscriber_process(url: str, count: int, seconds: float, wire_format: str, ready, results) -> None:  # type: ignore[no-untyped-def]
    """Run ``count`` subscribers; report per-event latencies in ms.

    Each event's latency is its receive time minus its emit timestamp (same
    clock). Up to 16 events spread evenly over each message are sampled (so
    the subscriber process keeps up), the first — the oldest, the message's
    worst case — always among them.
    """
    import orjson
    import websockets

    async def one(latencies: list[float]) -> None:
        async with websockets.connect(url, max_size=2**26) as socket:
            await socket.send(json.dumps({"subscribe": {"kinds": ["metric"], "format": wire_format}}))
            await socket.recv()  # "subscribed"
            ready.put(1)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(socket.recv(), timeout=max(0.1, deadline - time.monotonic()))
                except TimeoutError:
                    break
                now = time.time()
                message = orjson.loads(raw)
                if message.get("type") == "columns":
                    timestamps = [t for block in message["metrics"] for t in block["timestamps"]]
                elif message.get("type") == "batch":
                    timestamps = [event["timestamp"] for event in message["events"]]
                else:
                    continue
                if timestamps:
                    stride = max(1, len(timestamps) // 16)
                    latencies.extend((now - timestamp) * 1000 for timestamp in timestamps[::stride])
                    received[0] += len(timestamps)

    received = [0]

    async def main() -> None:
        lists: list[list[float]] = [[] for _ in range(count)]
        await asyncio.gather(*(one(latencies) for latencies in lists))
        results.put(([value for latencies in lists for value in latencies], received[0]))

    asyncio.run(main())


def paced_producer(monitor: WebMonitor, calls_per_second: int, seconds: float) -> int:
    """Log 4-value metrics at a fixed rate (in 10 ms slices); returns the calls made."""
    per_slice = calls_per_second // 100
    started = time.perf_counter()
    made = 0
    for slice_index in range(int(seconds * 100)):
        for _ in range(per_slice):
            monitor.update_metrics({"loss": 0.5, "accuracy": 0.9, "reward": float(made), "lr": 3e-4})
            made += 1
        pause = started + (slice_index + 1) / 100 - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return made


def bench_latency(
    directory: Path,
    subscribers: int,
    seconds: float,
    calls_per_second: int = 25_000,
    wire_format: str = "columns",
    gc_freeze: bool = False,
) -> dict[str, float | str | bool]:
    with monitor_for(directory, f"latency-{wire_format}") as monitor:
        monitor.start_training({"bench": "latency"})
        url = monitor.web_url.replace("http://", "ws://") + "/ws"  # type: ignore[union-attr]
        context = multiprocessing.get_context("spawn")
        ready, results = context.Queue(), context.Queue()
        process = context.Process(
            target=subscriber_process, args=(url, subscribers, seconds + 3, wire_format, ready, results)
        )
        process.start()
        for _ in range(subscribers):
            ready.get(timeout=60)
        if gc_freeze:  # the application's one-line recipe (see docs/speed.md): set-up objects leave full collections
            gc.freeze()
        try:
            made = paced_producer(monitor, calls_per_second, seconds)
        finally:
            gc.unfreeze()
        latencies, received = results.get(timeout=120)
        process.join(30)
        lagged = monitor.statistics()["components"]["live"].get("subscriber_dropped_events", 0)
    latencies.sort()
    samples = len(latencies)
    return {
        "format": wire_format,
        "gc_freeze": gc_freeze,
        "subscribers": subscribers,
        "values_per_s": made * 4 / seconds,
        "latency_samples": samples,
        "events_received": received,
        "events_expected": made * subscribers,
        "events_dropped_for_lag": lagged,
        "latency_p50_ms": latencies[samples // 2],
        "latency_p99_ms": latencies[int(samples * 0.99)],
        "latency_max_ms": latencies[-1],
    }


# -- 2. metrics query over 1M points --------------------------------------------------------


def bench_query(directory: Path, points: int) -> dict[str, float]:
    with monitor_for(directory, "query") as monitor:
        run_id = monitor.start_training({"bench": "query"})
        for i in range(points):
            monitor.update_metrics({"loss": 1.0 / (i + 1) + (5.0 if i == points // 3 else 0.0)})
        monitor.flush(timeout=600)
        url = f"{monitor.web_url}/api/runs/{run_id}/metrics?names=loss&max_points=2000"
        with httpx.Client(timeout=120) as client:
            started = time.perf_counter()
            first = client.get(url)
            cold = time.perf_counter() - started
            warm = []
            for _ in range(10):
                started = time.perf_counter()
                response = client.get(url)
                warm.append(time.perf_counter() - started)
        series = first.json()["series"]["loss"]
        assert response.status_code == 200 and series["total_points"] == points, series["total_points"]
        assert max(v for v in series["v"] if isinstance(v, float)) > 5.0, "the spike was lost"
    return {"points": points, "cold_ms": cold * 1000, "warm_median_ms": statistics.median(warm) * 1000}


# -- 3. a subscriber that never reads -------------------------------------------------------


def committed_rate(monitor: WebMonitor, calls: int) -> float:
    started = time.perf_counter()
    for i in range(calls):
        monitor.update_metrics({"loss": 0.5, "accuracy": 0.9, "reward": float(i), "lr": 3e-4})
    assert monitor.flush(timeout=600)
    return calls * 4 / (time.perf_counter() - started)


def never_reading_subscriber(url: str, stop: threading.Event) -> None:
    """Handshake, subscribe to everything, then never read a byte."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    stop.wait(600)
    connection.close()


def bench_slow_subscriber(directory: Path, calls: int) -> dict[str, float]:
    """Alternate undisturbed and disturbed runs (warm-up and drift cancel out); best of each.

    The disturbed run is measured in steady state: after the subscriber is
    subscribed and its queue has overflowed once (before that, the hub still
    serialises for it, like for any subscriber).
    """
    undisturbed_runs, disturbed_runs, dropped = [], [], 0
    for round_index in range(2):
        with monitor_for(directory, f"undisturbed{round_index}") as monitor:
            monitor.start_training({"bench": "undisturbed"})
            committed_rate(monitor, calls // 10)  # warm up
            undisturbed_runs.append(committed_rate(monitor, calls))
        with monitor_for(directory, f"disturbed{round_index}") as monitor:
            monitor.start_training({"bench": "disturbed"})
            stop = threading.Event()
            thread = threading.Thread(target=never_reading_subscriber, args=(monitor.web_url, stop), daemon=True)
            thread.start()
            # Steady state: wait until it is subscribed, then warm up until its queue has overflowed.
            live = monitor.pipeline_thread.pipeline.component("live")
            for _ in range(200):  # at most ~10 s
                if live.statistics()["subscribers"]:
                    break
                time.sleep(0.05)
            for _ in range(20):
                committed_rate(monitor, calls // 10)
                if live.statistics()["subscriber_dropped_events"]:
                    break
            disturbed_runs.append(committed_rate(monitor, calls))
            dropped += monitor.statistics()["components"]["live"].get("subscriber_dropped_events", 0)
            stop.set()
    undisturbed, disturbed = max(undisturbed_runs), max(disturbed_runs)
    return {
        "undisturbed_values_per_s": undisturbed,
        "with_never_reading_subscriber_values_per_s": disturbed,
        "ratio": disturbed / undisturbed,
        "subscriber_dropped_events": dropped,
    }


# -- 4. subscribers with large filters --------------------------------------------------------


def filter_subscriber_process(url: str, count: int, patterns: int, globs: int, ready, stop) -> None:  # type: ignore[no-untyped-def]
    """Run ``count`` subscribers, each with a run filter of ``patterns`` entries that match nothing:
    ``globs`` of them globs, the rest exact run ids."""
    import websockets

    async def one(index: int) -> None:
        runs = [f"nomatch-{index}-{n}-*" for n in range(globs)] + [
            f"nomatch-{index}-{n}" for n in range(globs, patterns)
        ]
        async with websockets.connect(url, max_size=2**26) as socket:
            await socket.send(json.dumps({"subscribe": {"runs": runs}}))
            while True:  # the first "subscribed" answers the connection (no filter yet): wait for ours
                message = json.loads(await socket.recv())
                if message.get("type") == "error":
                    raise RuntimeError(f"subscribe refused: {message}")
                if message.get("type") == "subscribed" and message["filter"]["runs"]:
                    break
            ready.put(1)
            while not stop.is_set():
                try:
                    await asyncio.wait_for(socket.recv(), timeout=0.2)
                except TimeoutError:
                    pass
                except websockets.ConnectionClosed:  # a server too busy to answer pings closes it
                    return

    async def run_all() -> None:
        await asyncio.gather(*(one(index) for index in range(count)))

    asyncio.run(run_all())


def start_filter_subscribers(url: str, count: int, patterns: int, globs: int) -> tuple[object, object]:
    """A process with ``count`` large-filter subscribers, once all are subscribed; and its stop event."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    process = context.Process(target=filter_subscriber_process, args=(url, count, patterns, globs, ready, stop))
    process.start()
    for _ in range(count):
        ready.get(timeout=120)
    return process, stop


def acknowledged_ingest_rate(base_url: str, seconds: float, run_id: str, batch_size: int = 500) -> float:
    """Events/s acknowledged by ``POST /api/ingest`` from one client into ``run_id`` (bounded in time and count)."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        started = time.perf_counter()
        sent = 0
        for number in range(100_000):
            if time.perf_counter() - started >= seconds:
                break
            now = time.time()
            events = [
                {"kind": "metric", "run_id": run_id, "timestamp": now, "values": {"loss": 0.5}, "step": step}
                for step in range(number * batch_size, (number + 1) * batch_size)
            ]
            response = client.post("/api/ingest", json={"batch_id": f"{run_id}-{number}", "events": events})
            assert response.status_code == 202, response.text
            sent += batch_size
        return sent / (time.perf_counter() - started)


def bench_filter_subscribers(
    directory: Path, subscribers: int = 10, patterns: int = 1000, globs: int = 100, seconds: float = 5.0
) -> dict[str, float]:
    """Acknowledged ingest with and without large-filter subscribers, then a producer beside half of them."""
    with monitor_for(directory, "filters-none") as monitor:
        base_url = str(monitor.web_url)
        acknowledged_ingest_rate(base_url, 1.0, "warm-up")
        undisturbed = acknowledged_ingest_rate(base_url, seconds, "undisturbed")
    with monitor_for(directory, "filters") as monitor:
        base_url = str(monitor.web_url)
        process, stop = start_filter_subscribers(
            base_url.replace("http://", "ws://") + "/ws", subscribers, patterns, globs
        )
        try:
            acknowledged_ingest_rate(base_url, 1.0, "warm-up")
            disturbed = acknowledged_ingest_rate(base_url, seconds, "disturbed")
        finally:
            stop.set()  # type: ignore[attr-defined]
            process.join(30)  # type: ignore[attr-defined]
    alone = longest_producer_call(directory, "producer-alone", 0, patterns, globs, seconds)
    beside = longest_producer_call(directory, "producer-beside", subscribers // 2, patterns, globs, seconds)
    return {
        "subscribers": subscribers,
        "patterns_per_filter": patterns,
        "globs_per_filter": globs,
        "undisturbed_events_per_s": undisturbed,
        "with_filter_subscribers_events_per_s": disturbed,
        "ratio": disturbed / undisturbed,
        "producer_longest_call_ms": beside["longest_call_ms"],
        "producer_longest_call_alone_ms": alone["longest_call_ms"],
        "producer_flush_seconds": beside["flush_seconds"],
        "producer_flush_alone_seconds": alone["flush_seconds"],
        "producer_dropped_events": beside["dropped_events"],
    }


def longest_producer_call(
    directory: Path,
    name: str,
    subscribers: int,
    patterns: int,
    globs: int,
    seconds: float,
    calls_per_second: int = 25_000,
) -> dict[str, float]:
    """The longest ``update_metrics`` call of a producer paced at ``calls_per_second``, beside the subscribers."""
    with monitor_for(directory, name) as monitor:
        monitor.start_training({"bench": name})
        url = str(monitor.web_url).replace("http://", "ws://") + "/ws"
        process, stop = start_filter_subscribers(url, subscribers, patterns, globs) if subscribers else (None, None)
        try:
            longest, made = 0.0, 0
            per_slice = calls_per_second // 100
            started = time.perf_counter()
            for slice_index in range(int(seconds * 100)):
                for _ in range(per_slice):
                    before = time.perf_counter()
                    monitor.update_metrics({"loss": 0.5, "accuracy": 0.9, "reward": float(made), "lr": 3e-4})
                    longest = max(longest, time.perf_counter() - before)
                    made += 1
                pause = started + (slice_index + 1) / 100 - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            before = time.perf_counter()
            assert monitor.flush(timeout=600)
            flush_seconds = time.perf_counter() - before
            intake = monitor.statistics()["components"]["app"].get("intake", {})
            dropped = sum(intake.get("dropped_events", {}).values())
        finally:
            if process is not None:
                stop.set()  # type: ignore[attr-defined]
                process.join(30)  # type: ignore[attr-defined]
    return {"longest_call_ms": longest * 1000, "flush_seconds": flush_seconds, "dropped_events": dropped}


def print_filter_figures(figures: dict[str, float]) -> None:
    """The large-filter figures, two lines."""
    print(
        f"acknowledged ingest with {figures['subscribers']} subscribers of {figures['patterns_per_filter']}-entry "
        f"run filters ({figures['globs_per_filter']} globs) matching nothing: "
        f"{figures['with_filter_subscribers_events_per_s']:,.0f} events/s vs "
        f"{figures['undisturbed_events_per_s']:,.0f} with none (ratio {figures['ratio']:.2f})"
    )
    print(
        f"  update_metrics at 25,000 calls/s beside {figures['subscribers'] // 2} such subscribers: longest call "
        f"{figures['producer_longest_call_ms']:.1f} ms vs {figures['producer_longest_call_alone_ms']:.1f} ms "
        "with none; "
        f"then flush() {figures['producer_flush_seconds']:.2f} s vs {figures['producer_flush_alone_seconds']:.2f} s; "
        f"dropped at intake {figures['producer_dropped_events']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--only-latency", action="store_true", help="run only the latency figure")
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--calls-per-second", type=int, default=25_000, help="4 values per call")
    parser.add_argument("--format", choices=["columns", "events"], default="columns", help="--only-latency's format")
    parser.add_argument("--gc-freeze", action="store_true", help="--only-latency: gc.freeze() after set-up")
    parser.add_argument("--only-filters", action="store_true", help="run only the large-filter figure")
    parser.add_argument("--filter-globs", type=int, default=100, help="--only-filters: globs among the 1,000 entries")
    args = parser.parse_args()
    if args.only_filters:
        with tempfile.TemporaryDirectory(prefix="runwatch-bench-web-") as tmp:
            seconds = 3.0 if args.quick else 5.0
            print_filter_figures(bench_filter_subscribers(Path(tmp), globs=args.filter_globs, seconds=seconds))
        return
    if args.only_latency:
        with tempfile.TemporaryDirectory(prefix="runwatch-bench-web-") as tmp:
            print(bench_latency(Path(tmp), args.subscribers, 3.0, args.calls_per_second, args.format, args.gc_freeze))
        return
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-web-") as tmp:
        directory = Path(tmp)
        seconds = 3.0 if args.quick else 10.0
        results["latency"] = bench_latency(directory, args.subscribers, seconds, args.calls_per_second, "columns")
        results["latency_gc_frozen"] = bench_latency(
            directory, args.subscribers, seconds, args.calls_per_second, "columns", gc_freeze=True
        )
        results["latency_events_format"] = bench_latency(
            directory, args.subscribers, seconds, args.calls_per_second, "events"
        )
        results["query"] = bench_query(directory, 100_000 if args.quick else 1_000_000)
        results["slow_subscriber"] = bench_slow_subscriber(directory, 50_000 if args.quick else 300_000)
        results["filter_subscribers"] = bench_filter_subscribers(directory, seconds=3.0 if args.quick else 5.0)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(results, indent=2))
    query, slow = results["query"], results["slow_subscriber"]
    print(f"runwatch web benchmark — {results['date']}, {results['machine']}")
    for latency in (results["latency"], results["latency_gc_frozen"], results["latency_events_format"]):
        frozen = ", gc.freeze() after set-up" if latency["gc_freeze"] else ""
        print(
            f"emit → subscriber ({latency['format']} format{frozen}), {latency['subscribers']} subscribers at "
            f"{latency['values_per_s']:,.0f} values/s: p50 {latency['latency_p50_ms']:.1f} ms  "
            f"p99 {latency['latency_p99_ms']:.1f} ms  max {latency['latency_max_ms']:.1f} ms"
        )
        print(
            f"  events received {latency['events_received']:,} of {latency['events_expected']:,}; "
            f"dropped for lag {latency['events_dropped_for_lag']:,}"
        )
    print(
        f"metrics query, {query['points']:,}-point series → 2000 points: "
        f"cold {query['cold_ms']:.0f} ms, warm median {query['warm_median_ms']:.1f} ms"
    )
    print(
        f"ingest with a never-reading subscriber: {slow['with_never_reading_subscriber_values_per_s']:,.0f} values/s "
        f"vs {slow['undisturbed_values_per_s']:,.0f} undisturbed (ratio {slow['ratio']:.2f})"
    )
    print_filter_figures(results["filter_subscribers"])  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
