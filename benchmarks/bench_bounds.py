"""Memory of a training process whose store is write-locked while it logs large game states.

    python benchmarks/bench_bounds.py [--seconds 45] [--quick]

A child process runs a ``WebMonitor`` with its default graph (every byte
bound at its default) and calls ``update_game_state`` with a ~2.7 KB JSON
state as fast as it can for ``--seconds``, sampling its own RSS. In the
``locked`` scenario another connection holds the store's write lock the
whole time, so nothing commits and every queue fills up to its bounds; the
baseline, in the same run, is the same load with the store free. The figure
to read: RSS growth of the locked run against the sum of the configured byte
bounds (the intake, each stage and sink buffer, the store's pending events).

Results print as a table and go to ``benchmarks/results/bounds.json``.
Every loop is bounded in time; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

CHILD = """
import gc, json, sqlite3, sys, time
import psutil
from runwatch import MonitorConfig, WebMonitor

db, data, seconds, locked = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "locked"

def game_state(step):
    return {
        "board": [[(step + row * 7 + col) % 5 for col in range(20)] for row in range(20)],
        "units": [{"x": float(i), "y": float(i) / 2, "hp": 100 - i, "kind": "scout"} for i in range(32)],
        "score": step,
        "frame": f"frame-{step:08d}",
    }

process = psutil.Process()
with WebMonitor(MonitorConfig(db_path=db, data_dir=data, web_port=0)) as monitor:
    monitor.start_training(run_id="bounds")
    monitor.flush(60)
    gc.collect()
    baseline = process.memory_info().rss
    lock = sqlite3.connect(db, timeout=60, isolation_level=None)
    if locked:
        lock.execute("BEGIN IMMEDIATE")
    calls, peak, samples = 0, baseline, []
    started = time.monotonic()
    end = started + seconds
    next_sample = started
    while (now := time.monotonic()) < end:
        monitor.update_game_state(game_state(calls), frame_number=calls)
        calls += 1
        if now >= next_sample:
            rss = process.memory_info().rss
            peak = max(peak, rss)
            samples.append([round(now - started, 2), rss])
            next_sample = now + 1.0
    if locked:
        lock.execute("ROLLBACK")
    lock.close()
    components = monitor.statistics()["components"]
    bounds = sum(
        entry[key]["max_bytes"] for entry in components.values() for key in ("intake", "buffer") if key in entry
    )
    bounds += monitor.pipeline_thread.pipeline.component("store").options.max_pending_bytes
    dropped = components["app"]["intake"]["dropped_events"]
    monitor.flush(120)
print(json.dumps({"calls": calls, "baseline": baseline, "peak": peak, "bounds": bounds, "dropped": dropped,
                  "state_json_bytes": len(json.dumps(game_state(0))), "samples": samples}))
"""


def run(scenario: str, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        output = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(tmp) / "b.db"), str(Path(tmp) / "d"), str(seconds), scenario],
            capture_output=True,
            text=True,
            timeout=seconds + 300,
            check=True,
        )
    result: dict[str, object] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="how long each scenario logs")
    parser.add_argument("--quick", action="store_true", help="10 s per scenario")
    args = parser.parse_args()
    seconds = 10.0 if args.quick else args.seconds
    figures = {scenario: run(scenario, seconds) for scenario in ("free", "locked")}
    mib = 2**20
    print(f"update_game_state with a {figures['locked']['state_json_bytes']}-byte JSON state for {seconds:.0f} s")
    for scenario, result in figures.items():
        baseline, peak, bounds = (int(str(result[key])) / mib for key in ("baseline", "peak", "bounds"))
        print(
            f"  store {scenario:6}  {result['calls']:>7} calls  RSS {baseline:6.0f} MiB → peak {peak:6.0f} MiB"
            f" (+{peak - baseline:.0f})   byte bounds {bounds:.0f} MiB   dropped {result['dropped']}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bounds.json").write_text(
        json.dumps({"seconds": seconds, "python": platform.python_version(), "scenarios": figures}, indent=1)
    )


if __name__ == "__main__":
    main()
