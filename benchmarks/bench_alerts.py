"""Alert stage figures, each beside its baseline, in one run.

    python benchmarks/bench_alerts.py [--quick]

1. Committed throughput (values/s from the first emit until ``flush()``
   returns) of one training thread logging 4 scalars per call (plus a
   heartbeat every 100 calls) through ``in_process → alerts → sqlite``:
   with 50 rules active, beside the same graph with 0 rules and the graph
   without the stage. The three run interleaved, several rounds; medians.
   Also the process CPU time per committed value (all threads), which a
   machine shared with other work disturbs less than wall-clock rates.
2. NaN → alert latency: from ``emit()`` of a NaN loss to the firing alert
   reaching a sink beside the store, p50/p99, while another thread logs
   100,000 values/s, and with nothing else running; beside the latency of
   the NaN metric itself to that sink, and of a graph without the stage
   (the two graphs interleaved over the rounds, probes pooled).

Built on :class:`runwatch.Pipeline` with a config dict. Results print as a
table and go to ``benchmarks/results/alerts.json``. Every loop is bounded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from runwatch import Heartbeat, Metric, Pipeline, PipelineThread, RunLifecycle
from runwatch.events import AlertEvent
from runwatch.pipeline.component import ComponentContext, Sink

RESULTS = Path(__file__).parent / "results"
_runs = itertools.count()
NAMES = ("loss", "accuracy", "reward", "lr")


def fifty_rules() -> list[dict[str, Any]]:
    """47 configured rules + the 3 defaults: a realistic mix, most watching the logged metrics."""
    rules: list[dict[str, Any]] = []

    def add(kind: str, **fields: Any) -> None:
        rules.append({"kind": kind, "name": f"{kind}_{len(rules)}", **fields})

    for name, op, threshold in [
        ("loss", ">", 10), ("loss", ">", 100), ("loss", "<", -1), ("loss", ">=", 1e6), ("loss", "==", -5),
        ("accuracy", "<", 0.01), ("accuracy", ">", 1.0), ("accuracy", "<", -1),
        ("accuracy", "!=", 0.9), ("accuracy", "<=", 0),
        ("reward", "<", -1000), ("reward", ">", 1e12), ("reward", "<", -1e6),
        ("reward", "==", -1), ("reward", "<=", -5000),
        ("lr", ">", 1), ("lr", "<", 0), ("lr", ">", 0.1), ("lr", "==", 0), ("lr", ">=", 10),
    ]:  # fmt: skip
        add("threshold", metric=name, op=op, threshold=threshold, annotations={"summary": "{metric}={value:.3g}"})
    for name in ("val/loss", "val/accuracy", "grad_norm", "system/cpu_percent", "system/memory_percent",
                 "episode_length", "entropy", "kl", "value_loss", "policy_loss"):  # fmt: skip
        add("threshold", metric=name, op=">", threshold=1e3, for_seconds=60)
    add("threshold", metric="*", op=">", threshold=1e15)
    add("threshold", metric="system/*", op=">", threshold=95, for_seconds=300)
    for name, op, threshold in [("loss", ">", 5), ("reward", "<", -100), ("accuracy", "<", 0.05), ("lr", ">", 0.1)]:
        add("threshold", metric=name, op=op, threshold=threshold, aggregate="mean", window_seconds=60)
    add("non_finite", metrics=["loss", "reward"], severity="page")
    add("non_finite", metrics=["grad/*"])
    add("rate", levels=["warning"], op=">=", limit=50, window_seconds=60, severity="info")
    add("rate", kinds=["log"], types=["episode_*"], limit=1000, window_seconds=10)
    add("rate", kinds=["exception"], limit=5, window_seconds=300)
    add("absence", target="metric", metric="loss", duration_seconds=300)
    add("absence", target="event", duration_seconds=600)
    add("stagnation", metric="loss", mode="min", steps=100_000)
    add("stagnation", metric="reward", mode="max", window_seconds=3600)
    add("anomaly", metric="loss", z=8, window_values=200)
    add("anomaly", metric="reward", z=8, window_values=200)
    assert len(rules) == 47
    return rules


def graph(directory: Path, name: str, alerts: dict[str, Any] | None, probe: bool = False) -> dict[str, Any]:
    """in_process → [alerts] → sqlite (and a LatencySink beside the store when ``probe``)."""
    upstream = "app" if alerts is None else "alerts"
    config: dict[str, Any] = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"store": {"type": "sqlite", "inputs": [upstream], "path": str(directory / f"{name}.db")}},
    }
    if alerts is not None:
        config["stages"] = {
            "alerts": {"type": "alerts", "inputs": ["app"], "state_path": str(directory / f"{name}.json"), **alerts}
        }
    if probe:
        config["sinks"]["probe"] = {"type": f"{LatencySink.__module__}:LatencySink", "inputs": [upstream]}
    return config


def start(directory: Path, name: str, config: dict[str, Any]) -> PipelineThread:
    context = ComponentContext(db_path=str(directory / f"{name}.db"), data_dir=directory / name)
    thread = PipelineThread(Pipeline(config, context=context), name=f"bench-{name}")
    thread.start()
    return thread


VARIANTS: dict[str, dict[str, Any] | None] = {
    "no_stage": None,
    "alerts_0_rules": {"default_rules": False},
    "alerts_50_rules": {"rules": None},  # filled in by main(): 47 + the 3 defaults
}


def bench_throughput(directory: Path, calls: int, rounds: int) -> dict[str, Any]:
    """Committed values/s per variant, interleaved over ``rounds``; medians and ratios."""
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    alert_events = 0
    for round_ in range(rounds):
        for variant, alerts in VARIANTS.items():
            name = f"{variant}-{round_}"
            thread = start(directory, name, graph(directory, name, alerts))
            try:
                run_id = f"throughput-{round_}"
                emit = thread.emit
                emit(RunLifecycle(run_id, time.time(), "started"))
                started, cpu_started = time.perf_counter(), time.process_time()
                for i in range(calls):
                    now = time.time()
                    emit(Metric(run_id, now, {"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4}))
                    if i % 100 == 0:
                        emit(Heartbeat(run_id, now, {"total_steps": i}))
                assert thread.flush(timeout=600), "flush timed out"
                elapsed = time.perf_counter() - started
                samples[variant].append(calls * len(NAMES) / elapsed)
                cpu[variant].append((time.process_time() - cpu_started) / (calls * len(NAMES)) * 1e6)
                stats = thread.pipeline.statistics()["components"]
                if "alerts" in stats:
                    alert_events += stats["alerts"]["alert_events_total"]
                    assert stats["alerts"]["evaluation_errors_total"] == 0
            finally:
                thread.close()
    medians = {variant: statistics.median(values) for variant, values in samples.items()}
    cpu_medians = {variant: statistics.median(values) for variant, values in cpu.items()}
    return {
        "cpu_us_per_value": cpu_medians,
        "cpu_ratio_no_stage_to_50_rules": cpu_medians["no_stage"] / cpu_medians["alerts_50_rules"],
        "values_per_round": calls * len(NAMES),
        "rounds": rounds,
        "values_per_s": medians,
        "samples_values_per_s": samples,
        "ratio_50_rules_to_no_stage": medians["alerts_50_rules"] / medians["no_stage"],
        "ratio_50_rules_to_0_rules": medians["alerts_50_rules"] / medians["alerts_0_rules"],
        "alert_events_during_throughput": alert_events,
    }


class LatencySink(Sink):
    """Records when each probe's NaN metric, and its firing alert, reach a sink (perf_counter, the emitter's clock)."""

    metrics: dict[str, float] = {}
    alerts: dict[str, float] = {}

    async def write(self, batch: list[Any]) -> None:
        now = time.perf_counter()
        for event in batch:
            kind = type(event)
            if kind is AlertEvent and event.state == "firing" and event.rule == "non_finite_metric":
                LatencySink.alerts.setdefault(event.run_id, now)
            elif kind is Metric and event.run_id.startswith("probe-"):
                LatencySink.metrics.setdefault(event.run_id, now)


def latencies_ms(emitted: dict[str, float], arrived: dict[str, float]) -> list[float]:
    """Arrival − emit in ms per probe; ``inf`` for a probe whose event never arrived."""
    return [(arrived[run] - at) * 1000 if run in arrived else math.inf for run, at in emitted.items()]


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p99/max in ms, and how many never arrived."""
    ordered = sorted(latencies)
    arrived = [value for value in ordered if value != math.inf]
    return {
        "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": arrived[-1] if arrived else math.inf,
        "missing": float(len(ordered) - len(arrived)),
    }


def bench_latency(directory: Path, probes: int, load_values_per_s: int, with_stage: bool) -> dict[str, Any]:
    """emit(NaN loss) → firing alert at a sink, one probe every 20 ms, beside an optional paced load.

    Also measured, for the same probes: when the NaN metric itself reached the
    sink. Without the stage (``with_stage=False``) only that is measured: the
    pipeline's own emit → sink latency, the baseline.
    """
    LatencySink.metrics, LatencySink.alerts = {}, {}
    name = f"latency-{load_values_per_s}-{with_stage}-{next(_runs)}"  # a fresh state file: nothing restored
    alerts = {"rules": VARIANTS["alerts_50_rules"]["rules"]} if with_stage else None  # type: ignore[index]
    thread = start(directory, name, graph(directory, name, alerts, probe=True))
    stop = threading.Event()
    produced = 0

    def load() -> None:
        nonlocal produced
        calls_per_tick = load_values_per_s // len(NAMES) // 100  # 100 ticks/s
        next_tick = time.perf_counter()
        i = 0
        while not stop.is_set():
            now = time.time()
            for _ in range(calls_per_tick):
                values = {"loss": 1.0 / (i + 1), "accuracy": 0.9, "reward": float(i), "lr": 3e-4}
                thread.emit(Metric("load", now, values))
                i += 1
            produced += calls_per_tick * len(NAMES)
            next_tick += 0.01
            time.sleep(max(0.0, next_tick - time.perf_counter()))

    loader = threading.Thread(target=load, name="bench-load") if load_values_per_s else None
    emitted: dict[str, float] = {}
    try:
        if loader is not None:
            loader.start()
            time.sleep(0.5)  # reach the steady load before probing
        started = time.perf_counter()
        for i in range(probes):
            run_id = f"probe-{i}"
            emitted[run_id] = time.perf_counter()
            thread.emit(Metric(run_id, time.time(), {"loss": math.nan}))
            time.sleep(0.02)
        duration = time.perf_counter() - started
        stop.set()
        if loader is not None:
            loader.join()
        assert thread.flush(timeout=600), "flush timed out"
    finally:
        stop.set()
        thread.close()
    result: dict[str, Any] = {
        "load_values_per_s_achieved": produced / duration,
        "metric_at_sink": latencies_ms(emitted, LatencySink.metrics),
    }
    if with_stage:
        result["alert_at_sink"] = latencies_ms(emitted, LatencySink.alerts)
    return result


def bench_latency_rounds(directory: Path, probes: int, load_values_per_s: int, rounds: int) -> dict[str, Any]:
    """The stage and no-stage runs interleaved over ``rounds``; percentiles of the pooled probes."""
    pooled: dict[str, list[float]] = {"alert_at_sink": [], "metric_at_sink": [], "no_stage_metric_at_sink": []}
    rates = []
    for _ in range(rounds):
        bare = bench_latency(directory, probes, load_values_per_s, with_stage=False)
        pooled["no_stage_metric_at_sink"] += bare["metric_at_sink"]
        staged = bench_latency(directory, probes, load_values_per_s, with_stage=True)
        pooled["alert_at_sink"] += staged["alert_at_sink"]
        pooled["metric_at_sink"] += staged["metric_at_sink"]
        rates += [bare["load_values_per_s_achieved"], staged["load_values_per_s_achieved"]]
    return {
        "probes": probes * rounds,
        "rounds": rounds,
        "load_values_per_s_achieved": statistics.median(rates),
        **{what: percentiles(values) for what, values in pooled.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    args = parser.parse_args()
    VARIANTS["alerts_50_rules"] = {"rules": fifty_rules()}
    calls, rounds, probes = (25_000, 1, 100) if args.quick else (250_000, 5, 200)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "rules": 50,
    }
    with tempfile.TemporaryDirectory(prefix="runwatch-bench-alerts-") as tmp:
        directory = Path(tmp)
        results["throughput"] = bench_throughput(directory, calls, rounds)
        for label, load in (("under_load", 100_000), ("idle", 0)):
            results[f"latency_{label}"] = bench_latency_rounds(directory, probes, load, rounds)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "alerts.json").write_text(json.dumps(results, indent=2))
    t = results["throughput"]
    v = t["values_per_s"]
    print(f"runwatch alerts benchmark — {results['date']}, {results['machine']}, SQLite {results['sqlite']}")
    print(f"committed throughput, {t['values_per_round']:,} values x {t['rounds']} rounds (medians):")
    print(f"  no alerts stage            {v['no_stage']:>12,.0f} values/s")
    print(f"  alerts stage, 0 rules      {v['alerts_0_rules']:>12,.0f} values/s")
    print(f"  alerts stage, 50 rules     {v['alerts_50_rules']:>12,.0f} values/s")
    print(
        f"  ratio 50 rules / no stage  {t['ratio_50_rules_to_no_stage']:.2f}   "
        f"/ 0 rules {t['ratio_50_rules_to_0_rules']:.2f}   (target ≥ 0.80)"
    )
    c = t["cpu_us_per_value"]
    print(
        f"  process CPU per value      no stage {c['no_stage']:.2f} µs, 0 rules {c['alerts_0_rules']:.2f} µs,"
        f" 50 rules {c['alerts_50_rules']:.2f} µs   (no stage / 50 rules {t['cpu_ratio_no_stage_to_50_rules']:.2f})"
    )
    for label in ("under_load", "idle"):
        latency = results[f"latency_{label}"]
        rate = latency["load_values_per_s_achieved"]
        load = f" ({rate:,.0f} values/s from another thread)" if label == "under_load" else ""
        print(f"latency from emit(), {label}{load}, {latency['probes']} probes in {latency['rounds']} rounds:")
        for what, key in (
            ("NaN → firing alert at a sink, 50 rules", "alert_at_sink"),
            ("  the NaN metric itself at that sink", "metric_at_sink"),
            ("  baseline: metric at a sink, no stage", "no_stage_metric_at_sink"),
        ):
            figures = latency[key]
            print(
                f"  {what:<40} p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
                f"  max {figures['max_ms']:6.1f} ms  missing {figures['missing']:.0f}"
            )
    print("  (target: NaN → alert p99 ≤ 100 ms)")


if __name__ == "__main__":
    main()
