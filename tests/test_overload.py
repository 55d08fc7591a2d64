"""Overload at 10× the sink's capacity: bounded memory, exact accounting, a producer that is never held.

The graph keeps the default graph's policies on its edges — the store behind
a ``block`` buffer (nothing lost past the intake), the websocket hub behind
``drop_oldest`` — plus a test sink throttled to a known rate
(``plugins_for_overload.ThrottledSink``) that sets the whole graph's
capacity: the in-process source feeds every sink, so a full ``block`` buffer
anywhere holds the intake back. What a full intake does is its policy:

- ``drop_newest`` / ``drop_oldest`` shed load at the call: the call stays as
  fast as unloaded, and the shed events are counted (``overflow``);
- ``block`` (the default graph's intake) is backpressure: the training loop
  is slowed to the sink's rate, each call waits at most
  ``block_timeout_seconds`` (then the event is dropped and counted as
  ``block_timeout``, and later overflowing calls drop at once until the
  pipeline takes events again), and nothing is lost.

Each scenario first measures, in the same run, the throttled sink's capacity
and the unloaded producer's per-call times; pass criteria are ratios to them.
"""

from __future__ import annotations

import gc
import math
import sqlite3
import sys
import time
import tracemalloc
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from chunk_helpers import stored_calls
from plugins_for_overload import ThrottledSink
from tiers import soak_timeout, tier

from runwatch import MonitorConfig, WebMonitor
from runwatch.events import Metric
from runwatch.pipeline.config import default_pipeline_config

THROTTLED = f"{ThrottledSink.__module__}:ThrottledSink"

#: The throttled sink's nominal rate; the scenarios use the rate measured in this run.
NOMINAL_CAPACITY = 5_000
OVERLOAD = 10
LOAD_SECONDS = tier(8.0, 60.0)
#: ``block`` only throttles the producer to the sink: a few seconds show it in the short tier.
BLOCK_LOAD_SECONDS = tier(3.0, 60.0)
BLOCK_TIMEOUT_SECONDS = 5.0

# The configured queue limits (events); the memory bound is derived from them.
INTAKE_EVENTS = 4_000
STORE_BUFFER_EVENTS = 4_000
STORE_MAX_PENDING_EVENTS = 4_000
SLOW_BUFFER_EVENTS = 2_000
LIVE_BUFFER_EVENTS = 4_000
QUEUED_EVENTS_LIMIT = (
    INTAKE_EVENTS + STORE_BUFFER_EVENTS + STORE_MAX_PENDING_EVENTS + SLOW_BUFFER_EVENTS + LIVE_BUFFER_EVENTS
)
#: What no queue limit accounts for: allocator slack, SQLite's page cache, the web server, transient batches.
MEMORY_MARGIN_BYTES = 48 << 20
#: Growth allowed over the last half of the load (measurement noise, not a trend).
PLATEAU_SLACK_BYTES = 8 << 20
#: The overloaded producer's p99 call time against the unloaded one, measured in the same run.
P99_RATIO_LIMIT = 25.0

TICK_SECONDS = 0.005
VALUES = ("loss", "acc", "lr", "grad_norm")


def graph(policy: str, capacity: float) -> dict[str, Any]:
    """The default graph's edge policies, with small known bounds and the throttled sink beside the store."""
    return {
        "sources": {
            "app": {
                "type": "in_process",
                "max_events": INTAKE_EVENTS,
                "when_full": policy,
                "block_timeout_seconds": BLOCK_TIMEOUT_SECONDS,
            }
        },
        "sinks": {
            "store": {
                "type": "sqlite",
                "inputs": ["app"],
                "max_events": 2_000,
                "max_pending_events": STORE_MAX_PENDING_EVENTS,
                "flush_interval_seconds": 0.2,
                "buffer": {"max_events": STORE_BUFFER_EVENTS, "when_full": "block"},
            },
            "slow": {
                "type": THROTTLED,
                "inputs": ["app"],
                "events_per_second": capacity,
                "buffer": {"max_events": SLOW_BUFFER_EVENTS, "when_full": "block"},
            },
            "live": {
                "type": "websocket_hub",
                "inputs": ["app"],
                "buffer": {"max_events": LIVE_BUFFER_EVENTS, "when_full": "drop_oldest"},
            },
        },
    }


def open_monitor(tmp: Path, policy: str, capacity: float) -> WebMonitor:
    """A monitor on the overload graph; heartbeats only when asked (so every event is the test's)."""
    config = MonitorConfig(
        db_path=str(tmp / "overload.db"),
        data_dir=str(tmp / "data"),
        web_port=0,
        update_interval=3600.0,
        pipeline=graph(policy, capacity),
    )
    return WebMonitor(config)


def percentile(samples: list[int], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))])


class Drive:
    """What one paced load phase did: per-call times (ns), calls made, RSS samples (seconds, bytes)."""

    def __init__(self, capacity: int) -> None:
        # Preallocated (and touched) so that recording the times does not itself grow the heap.
        self.times = array("q", [0]) * capacity
        self.calls = 0
        self.rss: list[tuple[float, int]] = []
        self.seconds = 0.0

    @property
    def call_ns(self) -> list[int]:
        """Per-call times in nanoseconds."""
        return self.times[: self.calls].tolist()


def drive(
    monitor: WebMonitor, rate: float, seconds: float, sample_rss: bool = False, burst: int | None = None
) -> Drive:
    """Call ``update_metrics`` at ``rate`` calls/s for ``seconds``, timing every call.

    Paced in bursts of ``burst`` calls (default: 5 ms worth); a producer held
    back (``block``) simply falls behind the schedule. Every loop here is
    bounded by ``seconds``.
    """
    result = Drive(int(rate * seconds * 1.5) + 1000)
    times = result.times
    process = psutil.Process()
    update = monitor.update_metrics
    clock = time.perf_counter_ns
    per_tick = burst or max(1, round(rate * TICK_SECONDS))
    tick_seconds = per_tick / rate
    started = time.monotonic()
    end = started + seconds
    next_tick = started
    next_sample = started
    values = dict.fromkeys(VALUES, 0.5)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if sample_rss and now >= next_sample:
            result.rss.append((now - started, process.memory_info().rss))
            next_sample = now + 0.1
        calls = result.calls
        if calls + per_tick > len(times):
            break
        for index in range(calls, calls + per_tick):
            values["loss"] = 1.0 / (index + 1)
            before = clock()
            update(values)
            times[index] = clock() - before
        result.calls = calls + per_tick
        next_tick += tick_seconds
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the producer, not synchronising with the pipeline
    result.seconds = time.monotonic() - started
    return result


def bytes_per_queued_event() -> float:
    """What one queued event of this scenario costs in memory (tracemalloc, in this run)."""
    count = 5_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = [Metric("run", 1.0 + i, dict.fromkeys(VALUES, 0.5)) for i in range(count)]
        batch_refs = [list(events), list(events)]  # a queued event is referenced from a few batch lists
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del events, batch_refs
    return (after - before) / count


@pytest.fixture(scope="module")
def capacity(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The throttled sink's capacity in events/s, measured in this run under saturation (~1.5 s)."""
    tmp = tmp_path_factory.mktemp("capacity")
    monitor = open_monitor(tmp, "block", NOMINAL_CAPACITY)
    try:
        monitor.start_training(run_id="calibrate")
        slow = monitor.pipeline_thread.pipeline.component("slow")
        assert isinstance(slow, ThrottledSink)
        # Saturate (block: the producer waits on the sink), measuring over the last second.
        drive(monitor, 3 * NOMINAL_CAPACITY, 0.5)
        start = time.monotonic()
        drive(monitor, 3 * NOMINAL_CAPACITY, 1.0)
        measured = slow.rate_since(start)  # between write completions: no partial batch in the window
        assert monitor.pipeline_thread.flush(timeout=30)
    finally:
        monitor.close()
    assert 0.5 * NOMINAL_CAPACITY < measured < 1.5 * NOMINAL_CAPACITY, measured
    return measured


def store_metric_rows(db: Path) -> int:
    """Logging calls committed to the store."""
    return stored_calls(db)


def plateau_growth(rss: list[tuple[float, int]]) -> float:
    """Least-squares RSS growth (bytes) across the last half of the samples."""
    half = rss[len(rss) // 2 :]
    xs = [t for t, _ in half]
    ys = [float(r) for _, r in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return slope * (xs[-1] - xs[0])


def report(policy: str, figures: dict[str, Any]) -> None:
    """Print the measured figures (shown with ``pytest -s``; kept for the soak log)."""
    print(f"\noverload[{policy}]: " + ", ".join(f"{k}={v}" for k, v in figures.items()), file=sys.stderr)


@pytest.fixture
def tmp_monitor(tmp_path: Path, request: pytest.FixtureRequest, capacity: float) -> Iterator[WebMonitor]:
    """A monitor on the overload graph with the parametrised intake policy, closed afterwards."""
    monitor = open_monitor(tmp_path, request.param, capacity)
    try:
        yield monitor
    finally:
        monitor.close()


@pytest.mark.soak
@soak_timeout(45, 240)
@pytest.mark.parametrize("tmp_monitor", ["drop_newest", "drop_oldest", "block"], indirect=True)
def test_overload_at_ten_times_capacity(tmp_monitor: WebMonitor, capacity: float, tmp_path: Path) -> None:
    """At 10× capacity memory stays bounded and flat, accounting is exact, the producer is never held, queues drain."""
    monitor = tmp_monitor
    intake = monitor.pipeline_thread.pipeline.intake.bridge
    policy = intake.policy.value
    monitor.start_training(run_id="overload")
    thread = monitor.pipeline_thread
    assert thread.flush(timeout=30)  # the run's start (lifecycle + heartbeat) is committed before the load

    # Unloaded calibration in this run: the same calls in the same bursts, at half the capacity.
    burst = round(OVERLOAD * capacity * TICK_SECONDS)
    unloaded = drive(monitor, capacity / 2, tier(0.75, 3.0), burst=burst)
    assert thread.flush(timeout=30)
    unloaded_p99 = percentile(unloaded.call_ns, 0.99)

    per_event = bytes_per_queued_event()
    bound = QUEUED_EVENTS_LIMIT * per_event + MEMORY_MARGIN_BYTES
    baseline_rss = psutil.Process().memory_info().rss

    seconds = BLOCK_LOAD_SECONDS if policy == "block" else LOAD_SECONDS
    loaded = drive(monitor, OVERLOAD * capacity, seconds, sample_rss=True, burst=burst)
    flush_started = time.monotonic()
    assert thread.flush(timeout=60), "the queues did not drain after the load stopped"
    drain_seconds = time.monotonic() - flush_started

    stats = monitor.statistics()["components"]
    app, store, slow, live = (stats[name] for name in ("app", "store", "slow", "live"))
    counts = app["intake"]
    emitted = 2 + unloaded.calls + loaded.calls  # start_training: a lifecycle event and a heartbeat

    # Accounting: received = stored + dropped (by reason) + rejected (none: caller mistakes raise at the call).
    received = counts["accepted_events"] + sum(counts["dropped_events"].values())
    assert received == emitted
    assert counts["buffered_events"] == 0
    store_dropped = (
        sum(store["buffer"]["dropped_events"].values())
        + sum(store["dropped_events"].values())
        + sum(store["store_dropped_events"].values())
        + sum(app["dropped_events"].values())
    )
    assert store["buffer"]["buffered_events"] == 0 and store["pending_events"] == 0
    assert store_dropped == 0, store
    assert store["committed_events"] == counts["accepted_events"]
    assert slow["written_events"] == counts["accepted_events"]
    assert store_metric_rows(tmp_path / "overload.db") == counts["accepted_events"] - 2
    assert received == store["committed_events"] + sum(counts["dropped_events"].values())
    hub = live["buffer"]
    assert hub["received_events"] == hub["delivered_events"] + sum(hub["dropped_events"].values())
    assert set(counts["dropped_events"]) <= {"overflow", "block_timeout"}

    # Memory: bounded by the queue limits plus a margin, and flat over the last half of the load.
    peak_growth = max(rss for _, rss in loaded.rss) - baseline_rss
    growth_last_half = plateau_growth(loaded.rss)
    assert peak_growth <= bound, f"RSS grew {peak_growth / 2**20:.1f} MiB; bound {bound / 2**20:.1f} MiB"
    assert growth_last_half <= PLATEAU_SLACK_BYTES, f"RSS still rising: {growth_last_half / 2**20:.1f} MiB"

    loaded_p99 = percentile(loaded.call_ns, 0.99)
    accepted_rate = (counts["accepted_events"] - 2 - unloaded.calls) / loaded.seconds
    figures = {
        "capacity/s": round(capacity),
        "offered/s": round(loaded.calls / loaded.seconds),
        "accepted/s": round(accepted_rate),
        "received": received,
        "stored": store["committed_events"],
        "dropped": counts["dropped_events"],
        "unloaded_p99_us": round(unloaded_p99 / 1000, 2),
        "loaded_p99_us": round(loaded_p99 / 1000, 2),
        "p99_ratio": round(loaded_p99 / unloaded_p99, 2),
        "max_call_ms": round(max(loaded.call_ns) / 1e6, 2),
        "rss_baseline_MiB": round(baseline_rss / 2**20, 1),
        "rss_peak_growth_MiB": round(peak_growth / 2**20, 1),
        "rss_last_half_growth_MiB": round(growth_last_half / 2**20, 2),
        "bound_MiB": round(bound / 2**20, 1),
        "drain_s": round(drain_seconds, 2),
    }
    report(policy, figures)

    if policy == "block":
        # Backpressure: the producer is slowed to the sink's rate, each call waits a bounded time, nothing is lost.
        assert counts["dropped_events"] == {}
        assert max(loaded.call_ns) <= (BLOCK_TIMEOUT_SECONDS + 1) * 1e9
        # What the queues absorb at the start, then the sink's rate.
        assert loaded.calls <= 1.25 * capacity * loaded.seconds + QUEUED_EVENTS_LIMIT, "the producer was not held back"
        assert loaded.calls >= 0.5 * capacity * loaded.seconds
    else:
        # Load shedding: the call stays about as fast as unloaded; the excess is dropped and counted.
        assert counts["dropped_events"]["overflow"] > 0
        assert loaded.calls / loaded.seconds > 0.5 * OVERLOAD * capacity, "the producer was held back"
        assert loaded_p99 <= P99_RATIO_LIMIT * unloaded_p99, figures
        assert accepted_rate * loaded.seconds <= 1.25 * capacity * loaded.seconds + QUEUED_EVENTS_LIMIT


# -- large events against a write-locked store: the byte bounds ------------------------------------

#: The byte bounds of the locked-store scenario (small, so a few seconds fill them).
INTAKE_BYTES = 8 << 20
BUFFER_BYTES = 4 << 20
PENDING_BYTES = 8 << 20
LOCKED_SECONDS = tier(3.0, 45.0)


def game_state(step: int) -> dict[str, Any]:
    """A game state of about 2.7 KB of JSON (a 20×20 board, 32 units, a few scalars)."""
    return {
        "board": [[(step + row * 7 + col) % 5 for col in range(20)] for row in range(20)],
        "units": [{"x": float(i), "y": float(i) / 2, "hp": 100 - i, "kind": "scout"} for i in range(32)],
        "score": step,
        "frame": f"frame-{step:08d}",
    }


def byte_bounded_graph(policy: str) -> tuple[dict[str, Any], int]:
    """The monitor's default graph with small byte bounds on every buffer; and their sum."""
    graph = default_pipeline_config(alerts=True, snapshots=True)
    graph["sources"]["app"].update({"max_bytes": INTAKE_BYTES, "when_full": policy, "block_timeout_seconds": 0.5})
    buffered = [*graph["stages"].values(), *graph["sinks"].values()]
    for component in buffered:
        component["buffer"] = {**component.get("buffer", {}), "max_bytes": BUFFER_BYTES}
    graph["sinks"]["store"]["max_pending_bytes"] = PENDING_BYTES
    return graph, INTAKE_BYTES + BUFFER_BYTES * len(buffered) + PENDING_BYTES


@pytest.mark.soak
@soak_timeout(45, 240)
@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_large_states_against_a_write_locked_store_stay_within_the_byte_bounds(tmp_path: Path, policy: str) -> None:
    """With the store write-locked, ~2.7 KB game states logged as fast as the loop can are held within the
    buffers' byte bounds: RSS grows by at most their sum plus a margin, every queue stays within its bound,
    the intake's policy decides at the bound, and once the lock goes everything accepted is stored."""
    graph, configured_bytes = byte_bounded_graph(policy)
    config = MonitorConfig(
        db_path=str(tmp_path / "locked.db"), data_dir=str(tmp_path / "data"), web_port=0, pipeline=graph
    )
    process = psutil.Process()
    with WebMonitor(config) as monitor:
        run_id = monitor.start_training(run_id="locked")
        assert monitor.flush(30)
        pipeline = monitor.pipeline_thread.pipeline
        gc.collect()
        baseline = process.memory_info().rss
        peak, calls, over_bound = baseline, 0, []
        lock = sqlite3.connect(tmp_path / "locked.db", timeout=30, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # another writer holds the store: nothing commits
        try:
            end = time.monotonic() + LOCKED_SECONDS
            while time.monotonic() < end:
                monitor.update_game_state(game_state(calls), frame_number=calls)
                calls += 1
                if calls % 200 == 0:
                    peak = max(peak, process.memory_info().rss)
                    for name, entry in pipeline.statistics()["components"].items():
                        queue = entry.get("intake") or entry.get("buffer")
                        if queue and queue["buffered_bytes"] > queue["max_bytes"] + (64 << 10):
                            over_bound.append((name, queue["buffered_bytes"], queue["max_bytes"]))
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert monitor.flush(60)
        stats = monitor.statistics()["components"]
        stored = len(monitor.db.get_run_events(run_id, "run_started"))  # the store is readable again
    intake = stats["app"]["intake"]
    growth = peak - baseline
    print(
        f"\nlocked[{policy}]: {calls} calls, RSS +{growth / 2**20:.1f} MiB, bounds {configured_bytes / 2**20:.0f} MiB,"
        f" dropped {intake['dropped_events']}",
        file=sys.stderr,
    )
    assert not over_bound, over_bound
    assert growth <= configured_bytes + MEMORY_MARGIN_BYTES, f"RSS grew {growth / 2**20:.1f} MiB"
    assert stored == 1
    emitted = 2 + calls  # the run's start: a lifecycle event and a heartbeat (update_interval keeps others away)
    dropped = intake["dropped_events"]
    assert stats["store"]["committed_events"] + sum(dropped.values()) >= emitted
    assert intake["accepted_events"] == stats["store"]["committed_events"]
    expected_reason = {"block": "block_timeout", "drop_oldest": "overflow", "drop_newest": "overflow"}[policy]
    assert set(dropped) == {expected_reason}, dropped
