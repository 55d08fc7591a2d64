"""``make scale-demo``: runwatch scaled out on one machine, everything real (docs/scale.md).

Starts a 3-node NATS JetStream cluster and a PostgreSQL server on loopback
(:mod:`runwatch.testing.servers`; as root, PostgreSQL runs as an unprivileged
account), two ``runwatch serve`` nodes and two ``runwatch worker`` processes
on them, then three simulated training jobs that send their batches to the
serve nodes in turn, as remote producers do (a batch refused with 503 goes
again, same id, to the other node). It prints both dashboards' addresses at
once: open either, and watch all three runs move; one job's loss turns NaN
for a few steps, and the alert its worker raises shows on both. At the end
it prints what the shared store holds and which worker owns which
partitions, and keeps everything up until Ctrl-C.
"""

from __future__ import annotations

import math
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .testing.processes import running
from .testing.servers import open_nats_cluster, open_postgres

__all__ = ["run_scale_demo"]

#: Simulated logging calls per batch (one batch per episode).
STEPS_PER_EPISODE = 50


def simulate_job(index: int, nodes: list[str], episodes: int, done: list[str]) -> None:
    """One training job: a run started, an episode per batch (metrics, a heartbeat, an episode event), ended."""
    run_id = f"scale-demo-job-{index + 1}"
    rng = random.Random(index)
    loss = 2.0 + index / 2
    with httpx.Client(timeout=10) as client:

        def send(number: int, events: list[dict[str, Any]]) -> None:
            body = {"batch_id": f"{run_id}-{number}", "events": events}
            for attempt in range(200):  # every batch is acknowledged in the end: retried, same id, other node
                node = nodes[(number + attempt) % len(nodes)]
                try:
                    if client.post(f"{node}/api/ingest", json=body).status_code in (200, 202):
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)  # a producer's back-off before the retry
            raise RuntimeError(f"{run_id}: batch {number} was never acknowledged")

        now = time.time()
        config = {"algorithm": "ppo", "learning_rate": 3e-4 * (index + 1), "job": index + 1}
        send(0, [{"kind": "lifecycle", "run_id": run_id, "timestamp": now, "transition": "started", "config": config}])
        reward = 0.0
        for episode in range(episodes):
            now = time.time()
            events: list[dict[str, Any]] = []
            for step_in_episode in range(STEPS_PER_EPISODE):
                step = episode * STEPS_PER_EPISODE + step_in_episode
                loss = max(0.01, loss * 0.998 + rng.gauss(0, 0.01))
                reward += rng.gauss(0.02 * (index + 1), 0.2)
                diverging = index == 0 and episode == episodes // 3 and step_in_episode < 5
                values = {"loss": None if diverging else loss, "reward": reward, "lr": config["learning_rate"]}
                events.append({"kind": "metric", "run_id": run_id, "timestamp": now, "step": step, "values": values})
            events.append({"kind": "heartbeat", "run_id": run_id, "timestamp": now, "counters": {"total_steps": step}})
            events.append(
                {
                    "kind": "log",
                    "run_id": run_id,
                    "timestamp": now,
                    "type": "episode_end",
                    "level": "info",
                    "data": {"episode": episode, "reward": reward},
                }
            )
            send(episode + 1, events)
            time.sleep(0.25)
        final = {"kind": "lifecycle", "run_id": run_id, "timestamp": time.time(), "transition": "completed"}
        send(episodes + 1, [{**final, "final_reward": reward if math.isfinite(reward) else None}])
    done.append(run_id)


def run_scale_demo(*, jobs: int = 3, episodes: int = 60, keep_open: bool = True) -> None:
    """Run the demo (see the module docs); returns after Ctrl-C (or at once without ``keep_open``)."""
    print("runwatch scale-out demo: starting a 3-node NATS cluster and PostgreSQL on loopback", flush=True)
    with (
        open_nats_cluster(3) as cluster,
        open_postgres(fsync=False) as postgres,
        tempfile.TemporaryDirectory(prefix="runwatch-scale-demo-") as directory,
        running(postgres.dsn, cluster.urls, Path(directory), partitions=8) as fleet,
    ):
        started = fleet.start(serves=2, workers=["worker-1", "worker-2"], lease_ttl=5.0)
        nodes = [process.url for process in started[:2] if process.url]
        print(f"  NATS          {', '.join(cluster.urls)} (JetStream, R3 streams)")
        print(f"  PostgreSQL    {postgres.dsn}")
        for number, url in enumerate(nodes, start=1):
            print(f"  dashboard     {url}/   (serve node {number}: open it now, every run moves live on both)")
        print("  workers       worker-1, worker-2 (8 partitions shared by lease)")
        print(f"  jobs          {jobs} simulated training runs of {episodes} episodes, sent to both nodes", flush=True)
        done: list[str] = []
        threads = [
            threading.Thread(target=simulate_job, args=(index, nodes, episodes, done), daemon=True)
            for index in range(jobs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _report(postgres.dsn, done)
        if keep_open:
            print("  everything stays up; press Ctrl-C to stop (the servers and processes go with it)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print()


def _report(dsn: str, runs: list[str]) -> None:
    """What the shared store holds once the workers committed everything (bounded wait)."""
    from .store.manager import DatabaseManager

    with DatabaseManager(dsn) as db:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the workers commit on their own schedule: poll the store
            statuses = db.store.run_statuses(runs)
            if len(statuses) == len(runs) and set(statuses.values()) == {"completed"}:
                break
            time.sleep(0.2)
        for run_id in sorted(runs):
            summary = db.get_run_summary(run_id)
            loss = summary["metrics"].get("loss", {})
            print(
                f"  stored        {run_id}: {summary['status']}, {loss.get('count', 0)} losses"
                f" ({loss.get('nan_count', 0)} NaN), {sum(summary['event_counts'].values())} events"
            )
        for alert in db.store.alert_events(limit=10):
            print(f"  alert         {alert['run_id']}: {alert['rule']} {alert['state']}")
        owners: list[dict[str, Any]] = getattr(db.store, "partition_owners", list)()
        by_worker: dict[str, list[int]] = {}
        for row in owners:
            by_worker.setdefault(row["owner"], []).append(row["partition"])
        for worker, partitions in sorted(by_worker.items()):
            print(f"  partitions    {worker}: {sorted(partitions)}")


if __name__ == "__main__":
    run_scale_demo()
