"""A simulated RL training loop, monitored end to end (``make demo``).

An agent walks a small grid world: every step logs reward, loss, epsilon
and inference time, the game state (position, health, map) and the action,
a rendered frame of the grid (the image ``env/frame``) and, every fourth
step, a histogram of the Q-values of a batch (``q_values``); every episode
logs its total reward and a system reading of its own
(``system/reported/*``; the built-in sampler adds its ``system/*`` series).
Once per run the loss diverges to NaN for a few steps: it is stored and
charted as such, and the default alert rule ``non_finite_metric`` fires and
resolves (both visible in the dashboard's alerts panel).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from .config import MonitorConfig
from .monitor import WebMonitor

__all__ = ["DemoSettings", "run_demo", "simulate_training"]

ACTIONS = ("up", "down", "left", "right", "a", "b", "start")


@dataclass(frozen=True)
class DemoSettings:
    """How long and how fast the simulated loop runs."""

    episodes: int = 30
    steps_per_episode: int = 200
    step_seconds: float = 0.002
    seed: int = 7
    diverge_at_episode: int | None = 12


def _announce_run(url: str | None, run_id: str) -> None:
    if url:
        print(f"  run           {url}/#/runs/{run_id}   (open it now: it updates live)", flush=True)
    else:
        print(f"  run           {run_id}", flush=True)


def _alert_lines(events: list[dict[str, Any]]) -> list[str]:
    """One line per alert that fired: when it fired and, if so, when it resolved."""
    lines: list[str] = []
    fired_at: dict[str, float] = {}
    for event in events:  # oldest first
        data = event["event_data"]
        rule, state = str(data.get("rule")), data.get("state")
        if state == "firing":
            fired_at[rule] = event["timestamp"].timestamp()
            summary = data.get("annotations", {}).get("summary", "")
            lines.append(f"{rule} ({data.get('severity')}) fired: {summary}")
        elif state == "resolved" and rule in fired_at:
            lasted = event["timestamp"].timestamp() - fired_at.pop(rule)
            lines.append(f"{rule} resolved {lasted * 1000:.0f} ms later (the run page's alerts panel keeps it)")
    return lines


def simulate_training(
    monitor: WebMonitor, settings: DemoSettings = DemoSettings(), on_start: Callable[[str], None] | None = None
) -> str:
    """Run the simulated loop on ``monitor``; returns the run id (also given to ``on_start`` once it exists)."""
    rng = random.Random(settings.seed)
    run_id = monitor.start_training(
        config={
            "algorithm": "dqn",
            "learning_rate": 3e-4,
            "gamma": 0.99,
            "episodes": settings.episodes,
            "env": "gridworld-16x16",
        }
    )
    if on_start is not None:
        on_start(run_id)
    loss = 2.0
    noise = np.random.default_rng(settings.seed)
    for episode in range(settings.episodes):
        x, y, hp, total_reward = 8, 8, 100, 0.0
        epsilon = max(0.05, 1.0 - episode / max(1, settings.episodes * 0.7))
        diverging = settings.diverge_at_episode == episode
        for step in range(settings.steps_per_episode):
            started = time.perf_counter()
            action = rng.choice(ACTIONS)
            x = min(15, max(0, x + (action == "right") - (action == "left")))
            y = min(15, max(0, y + (action == "down") - (action == "up")))
            reward = rng.gauss(0.05 * (episode + 1) / settings.episodes, 0.3) + (1.0 if (x, y) == (15, 15) else 0.0)
            hp = max(0, hp - (rng.random() < 0.02) * 10)
            total_reward += reward
            loss = max(0.01, loss * 0.999 + rng.gauss(0, 0.02))
            logged_loss = float("nan") if diverging and 50 <= step < 60 else loss
            inference_time = time.perf_counter() - started + rng.uniform(0.0005, 0.002)
            monitor.update_step(
                step,
                reward,
                action,
                inference_time,
                {"position": {"x": x, "y": y}, "hp": hp, "map": "gridworld", "episode": episode},
            )
            # Right after update_step, so the loss lands on the same step (one row per step in the frame).
            monitor.update_metrics(
                {"loss": logged_loss, "epsilon": epsilon, "q_value": {"mean": 1.0 - loss, "max": 2.0 - loss / 2}},
            )
            # What the agent saw, and the spread of its Q-values, at the same step.
            monitor.log_image("env/frame", render_gridworld(x, y, hp), caption=f"episode {episode} step {step}")
            if step % 4 == 0:
                monitor.log_histogram("q_values", q_values(noise, 1.0 - loss, epsilon), bins=32)
            if settings.step_seconds:
                time.sleep(settings.step_seconds)
            if hp == 0:
                break
        success = total_reward > 0
        monitor.update_episode(episode, total_reward, step + 1, success, {"epsilon": epsilon})
        if episode % 10 == 9:
            monitor.record_event("checkpoint_saved", {"episode": episode, "path": f"checkpoints/ep{episode}.pt"})
        monitor.update_system_metrics(*_system_sample())  # readings of its own, apart from the sampler's
    monitor.stop_training(final_reward=total_reward)
    return run_id


#: The gridworld's frame: 16×16 cells of 8×8 pixels.
_CELL = 8


def render_gridworld(x: int, y: int, hp: int) -> np.ndarray[Any, Any]:
    """A 128×128 RGB frame of the gridworld: the goal in the corner, the agent coloured by its health."""
    frame = np.full((16 * _CELL, 16 * _CELL, 3), 24, np.uint8)
    frame[::_CELL, :, :] = 48  # the grid lines
    frame[:, ::_CELL, :] = 48
    frame[15 * _CELL + 1 :, 15 * _CELL + 1 :] = (240, 200, 40)  # the goal
    health = hp / 100
    frame[y * _CELL + 1 : (y + 1) * _CELL, x * _CELL + 1 : (x + 1) * _CELL] = (
        int(255 * (1 - health)),
        int(80 + 175 * health),
        90,
    )
    return frame


def q_values(rng: np.random.Generator, mean: float, epsilon: float) -> np.ndarray[Any, Any]:
    """Q-values of a batch of 256 states: two modes (good and bad actions) that part as exploration falls."""
    good = rng.normal(mean, 0.15 + epsilon * 0.3, 192)
    bad = rng.normal(mean - 0.8 * (1 - epsilon), 0.2, 64)
    return np.concatenate([good, bad])


def _system_sample() -> tuple[float, float, float]:
    import psutil

    return psutil.cpu_percent(interval=None), psutil.virtual_memory().percent, psutil.disk_usage("/").percent


def run_demo(
    data_dir: Path = Path("runwatch_demo"),
    settings: DemoSettings = DemoSettings(),
    *,
    port: int = 8080,
    keep_open: bool = False,
) -> str:
    """Run the demo into ``data_dir`` with its live dashboard; print where everything is."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = MonitorConfig.load(db_path=str(data_dir / "monitoring.db"), data_dir=str(data_dir), web_port=port)
    print(f"runwatch demo: a simulated RL run of {settings.episodes} episodes")
    monitor = WebMonitor(config)
    if monitor.web_url is None and port != 0:  # the port is taken: any free one will do
        monitor.close()
        config = config.with_changes(web_port=0)
        monitor = WebMonitor(config)
    with monitor:
        url = monitor.web_url
        print(f"  dashboard     {url}/" if url else "  dashboard     (could not listen)")
        # Each demo run in a store gets a seed of its own, so runs made one after another differ
        # (and comparing them shows something).
        previous = monitor.get_training_runs()
        earlier = [run["run_id"] for run in previous[:3]]
        settings = replace(settings, seed=settings.seed + len(previous))
        started = time.perf_counter()
        run_id = simulate_training(monitor, settings, on_start=lambda run_id: _announce_run(url, run_id))
        summary = monitor.get_run_summary(run_id)
        frame = monitor.get_run_metrics(run_id)
        elapsed = time.perf_counter() - started
        stats = monitor.statistics()["components"]
        print(f"  finished      {summary['status']} in {elapsed:.1f} s")
        print(f"  steps         {summary['total_steps']}  episodes {summary['total_episodes']}")
        loss = summary["metrics"].get("loss", {})
        last, low, nans = loss.get("last"), loss.get("min"), loss.get("nan_count")
        print(f"  loss          last {last:.4f}  min {low:.4f}  NaN values {nans}")
        print(f"  metrics       {len(frame)} steps x {frame.shape[1] - 2} metrics (monitor.get_run_metrics(run_id))")
        for line in _alert_lines(monitor.get_run_events(run_id, "alert")):
            print(f"  alert         {line}")
        store = stats.get("store", {})
        print(f"  committed     {store.get('committed_events')} events in {store.get('commits')} transactions")
        print(f"  store         {Path(config.db_path).resolve()}")
        print(f"  read it back  DatabaseManager('{config.db_path}').get_run_metrics('{run_id}')")
        print(
            f"  see it again  runwatch serve --db {config.db_path}   (or: runwatch show {run_id} --db {config.db_path})"
        )
        if earlier and url:
            runs = ",".join(quote(run, safe="") for run in [run_id, *earlier])
            print(f"  compare       {url}/#/compare?runs={runs}   (this run beside the store's earlier ones)")
        if keep_open and url:
            print("  the dashboard stays up; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print()
    return run_id
