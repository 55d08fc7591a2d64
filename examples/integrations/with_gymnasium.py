"""Gymnasium → runwatch: a hand-written loop on CartPole-v1, each episode recorded by a wrapper.

    pip install runwatch "gymnasium[classic-control]"
    python examples/integrations/with_gymnasium.py [--db runwatch_examples/monitoring.db]

With no run active on the monitor, the wrapper starts its own (config: the
environment's id) and ends it when the environment closes. ``frame_every_steps``
asks for every N-th rendered frame; it reaches a monitor that has a
``log_image`` method, and otherwise costs nothing (not even the render).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium

from runwatch import MonitorConfig, WebMonitor
from runwatch.integrations.gymnasium import RunwatchEpisodeStatistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runwatch_examples/monitoring.db"))
    parser.add_argument("--episodes", type=int, default=20)
    options = parser.parse_args()
    db = options.db
    db.parent.mkdir(parents=True, exist_ok=True)

    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(db.parent / "data"), web_port=0)) as monitor:
        raw = gymnasium.make("CartPole-v1", render_mode="rgb_array")
        with RunwatchEpisodeStatistics(raw, monitor, frame_every_steps=10, config={"policy": "lean"}) as env:
            observation, _ = env.reset(seed=0)
            while env.episode_count < options.episodes:
                action = int(observation[2] > 0)  # push the cart toward where the pole leans
                observation, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    observation, _ = env.reset()
        run_id = env.recorder.run_id
        assert run_id is not None
        summary = monitor.get_run_summary(run_id)
        rewards = summary["metrics"]["episode/total_reward"]
        print(f"run {run_id}: {summary['status']}, {summary['total_episodes']} episodes, mean return {rewards['mean']}")
    print(f"look at it: runwatch show {run_id} --db {db}   (or: runwatch serve --db {db})")


if __name__ == "__main__":
    main()
