"""Stable-Baselines3 + Gymnasium → runwatch: PPO on CartPole-v1 for a few rollouts.

    pip install runwatch stable-baselines3 gymnasium torch
    python examples/integrations/with_stable_baselines3.py [--db runwatch_examples/monitoring.db]

The callback starts the run (PPO's hyperparameters as config) and sends
everything SB3's logger records (``rollout/*``, ``train/*``, ``time/*``) at
``num_timesteps``; the wrapper around the environment records each
episode's return and length into the same run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium
from stable_baselines3 import PPO

from runwatch import MonitorConfig, WebMonitor
from runwatch.integrations.gymnasium import RunwatchEpisodeStatistics
from runwatch.integrations.stable_baselines3 import RunwatchCallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runwatch_examples/monitoring.db"))
    parser.add_argument("--steps", type=int, default=2048, help="PPO's total_timesteps")
    options = parser.parse_args()
    db = options.db
    db.parent.mkdir(parents=True, exist_ok=True)

    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(db.parent / "data"), web_port=0)) as monitor:
        env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)
        with RunwatchCallback(monitor, config={"note": "example"}) as callback:
            model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=4, seed=0, device="cpu")
            model.learn(options.steps, callback=callback)
        env.close()
        run_id = callback.recorder.run_id
        assert run_id is not None
        summary = monitor.get_run_summary(run_id)
        rewards = summary["metrics"]["episode/total_reward"]
        print(f"run {run_id}: {summary['status']}, {summary['total_episodes']} episodes, best return {rewards['max']}")
    print(f"look at it: runwatch show {run_id} --db {db}   (or: runwatch serve --db {db})")


if __name__ == "__main__":
    main()
