"""Figures of the non-blocking session client (runwatch.client), each beside its target.

    python benchmarks/bench_client.py [--quick]

1. Per-call cost in the application thread: ``log_metric`` and ``log_event``
   (a two-key dict) on a non-blocking client whose sender is delivering to a
   ``runwatch serve`` subprocess at the same time. Each call is timed alone
   (``perf_counter_ns``, the timer's own cost subtracted); median, p99 and
   p99.9. Target: median and p99 <= 3 us.
2. Events/s delivered by one client over loopback HTTP: the app thread logs
   ``log_event`` calls as fast as it can; the clock stops when ``flush()``
   says the server committed all of them; the store is then counted to check
   that every event is there exactly once. Target: >= 20,000 events/s.

Everything stays on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

from runwatch.client import DatacatClient

RESULTS = Path(__file__).parent / "results"
TIMEOUT = 120.0


def start_server(directory: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "runwatch.cli", "serve", "--port", "0"]
    command += ["--db", str(directory / "s.db"), "--data-dir", str(directory / "d")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:  # the URL is the first line; the server prints little else
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if found:
            return process, found.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("runwatch serve did not start")


def stop_server(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def timer_overhead(samples: int = 200_000) -> int:
    clock = time.perf_counter_ns
    out = []
    for _ in range(samples):
        start = clock()
        out.append(clock() - start)
    out.sort()
    return out[len(out) // 2]


def percentiles(values: list[int], overhead: int) -> dict[str, float]:
    values = sorted(values)
    n = len(values)

    def at(q: float) -> float:
        return max(0, values[min(n - 1, int(n * q))] - overhead) / 1000

    return {"median_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999)}


def _empty(*args: Any) -> None:
    return None


def bench_per_call(url: str, calls: int, rate: float | None) -> dict[str, Any]:
    """Per-call cost of log_metric and log_event while the sender delivers to the server.

    Args:
        rate: calls per second (busy-waiting between calls, like an application
            doing work), or ``None`` for a tight loop, where the app thread
            competes with the sender thread for the GIL all the time.
    """
    overhead = timer_overhead()
    clock = time.perf_counter_ns
    gap = 0 if rate is None else int(1e9 / rate)
    results: dict[str, Any] = {"calls": calls, "calls_per_s": rate, "timer_overhead_ns": overhead}
    for name in ("log_metric", "log_event"):
        # max_queue holds every call, so none is dropped (a drop is cheaper and would flatter the figure).
        with DatacatClient(url, blocking=False, max_queue=calls + 1) as client:
            session_id = client.create_session(product="bench")
            for index in range(1000):  # warm up: start the sender, open its connection
                client.log_metric(session_id, "warmup", index)
            client.flush(TIMEOUT)
            call = partial(client.log_metric, session_id, "loss", 0.25) if name == "log_metric" else None
            event = partial(client.log_event, session_id, "click")
            # Calling through partial() adds the same cost to every call: measure it and take it off too.
            empty = partial(_empty, session_id, "click")
            base_cost = []
            for _ in range(20_000):
                start = clock()
                empty()
                base_cost.append(clock() - start)
            base_cost.sort()
            cost = base_cost[len(base_cost) // 2]
            times = []
            append = times.append
            started = time.perf_counter()
            next_call = clock()
            for index in range(calls):
                if gap:
                    next_call += gap
                    while clock() < next_call:
                        pass
                if call is not None:
                    start = clock()
                    call()
                else:
                    data = {"button": "submit", "n": index}
                    start = clock()
                    event(data)
                append(clock() - start)
            elapsed = time.perf_counter() - started
            delivered = client.flush(TIMEOUT)
            stats = client.statistics()
        figures = percentiles(times, cost)
        if rate is None:
            figures["loop_mean_us"] = elapsed / calls * 1e6 - cost / 1000
        results[name] = {**figures, "delivered": delivered, "dropped": stats.dropped}
    return results


def count_events(client: DatacatClient, session_id: str, name: str) -> tuple[int, int]:
    """(events named ``name``, distinct ``data.i`` among them) in the store."""
    seen: set[int] = set()
    total = 0
    cursor = None
    while True:
        page = client.get_session(session_id, events_limit=10_000, events_cursor=cursor, metrics_limit=1)
        for event in page["events"]:
            if event["name"] == name:
                total += 1
                seen.add(event["data"]["i"])
        cursor = page["events_next_cursor"]
        if cursor is None:
            return total, len(seen)


def bench_throughput(url: str, events: int, batch_size: int) -> dict[str, Any]:
    """Events/s one client delivers over loopback HTTP, committed by the server."""
    with DatacatClient(url, blocking=False, max_queue=events + 1, batch_size=batch_size) as client:
        session_id = client.create_session(product="bench")
        started = time.perf_counter()
        for index in range(events):
            client.log_event(session_id, "tick", {"i": index})
        logged = time.perf_counter() - started
        delivered = client.flush(TIMEOUT)
        elapsed = time.perf_counter() - started
        stats = client.statistics()
        stored, distinct = count_events(client, session_id, "tick")
    return {
        "events": events,
        "batch_size": batch_size,
        "events_per_s": events / elapsed,
        "app_thread_seconds": logged,
        "seconds_to_delivered": elapsed,
        "delivered": delivered,
        "stored": stored,
        "stored_distinct": distinct,
        "batches": stats.batches,
        "retries": stats.retries,
        "dropped": stats.dropped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = parser.parse_args()
    calls = 20_000 if args.quick else 200_000
    paced_calls = 10_000 if args.quick else 50_000
    events = 20_000 if args.quick else 200_000
    results: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_server(Path(tmp))
        try:
            results["per_call"] = bench_per_call(url, calls, None)
            results["per_call_paced"] = bench_per_call(url, paced_calls, 10_000.0)
            results["throughput"] = [bench_throughput(url, events, size) for size in (500, 2000)]
        finally:
            stop_server(process)
    print("per-call cost in the app thread, sender delivering to the server (target <= 3 us):")
    for key, title in (
        ("per_call", f"tight loop, {calls:,} calls"),
        ("per_call_paced", f"10,000 calls/s, {paced_calls:,} calls"),
    ):
        print(f"  {title}:")
        for name in ("log_metric", "log_event"):
            figures = results[key][name]
            mean = f"   loop mean {figures['loop_mean_us']:.2f} us" if "loop_mean_us" in figures else ""
            print(
                f"    {name:<11} median {figures['median_us']:.2f} us   p99 {figures['p99_us']:.2f} us   "
                f"p99.9 {figures['p999_us']:.2f} us{mean}   dropped {figures['dropped'] or 0}"
            )
    print("delivered over loopback HTTP by one client (target >= 20,000 events/s):")
    for figures in results["throughput"]:
        print(
            f"  batch_size {figures['batch_size']:>5}: {figures['events_per_s']:,.0f} events/s "
            f"({figures['events']:,} events in {figures['seconds_to_delivered']:.2f} s, app thread "
            f"{figures['app_thread_seconds']:.2f} s); stored {figures['stored']:,} "
            f"({figures['stored_distinct']:,} distinct), retries {figures['retries']}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / ("client-quick.json" if args.quick else "client.json")).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
