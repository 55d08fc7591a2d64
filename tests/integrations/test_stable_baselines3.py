"""RunwatchCallback and RunwatchOutputFormat driving a real Stable-Baselines3 PPO on CartPole-v1 for 256 steps."""

from __future__ import annotations

from typing import Any

import pytest

sb3 = pytest.importorskip("stable_baselines3")
gymnasium = pytest.importorskip("gymnasium")

from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.logger import Logger  # noqa: E402

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.gymnasium import RunwatchEpisodeStatistics  # noqa: E402
from runwatch.integrations.stable_baselines3 import RunwatchCallback, RunwatchOutputFormat  # noqa: E402

from .conftest import stored_events, stored_metrics, stored_run  # noqa: E402


def ppo(env: Any) -> Any:
    """A small PPO: 64-step rollouts, one epoch per update, seeded, on the CPU."""
    return sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu", verbose=0)


class RecordsOwnValue(BaseCallback):  # type: ignore[misc]
    """Records a value of its own with SB3's logger at every step, as user code does."""

    def _on_step(self) -> bool:
        self.logger.record("custom/steps_seen", self.num_timesteps)
        self.logger.record("custom/hidden", 1.0, exclude="runwatch")
        return True


class FailsAt(BaseCallback):  # type: ignore[misc]
    """Raises ``error`` at step ``at``."""

    def __init__(self, at: int, error: BaseException) -> None:
        super().__init__()
        self.at, self.error = at, error

    def _on_step(self) -> bool:
        if self.num_timesteps == self.at:
            raise self.error
        return True


def test_learn_records_hyperparameters_logger_values_episodes_and_completion(
    config: MonitorConfig, monitor: WebMonitor
) -> None:
    """PPO for 256 steps: config from the algorithm, SB3's logger values at each rollout, episodes, completed."""
    env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)
    callback = RunwatchCallback(monitor, config={"purpose": "test"})

    ppo(env).learn(256, callback=[callback, RecordsOwnValue()])

    run_id = callback.recorder.run_id
    assert run_id is not None and env.recorder.run_id == run_id
    run = stored_run(config, run_id)
    assert run["status"] == "completed"
    keys = ("algorithm", "policy", "env", "total_timesteps", "n_steps", "gamma")
    assert {key: run["config"][key] for key in keys} == {
        "algorithm": "PPO",
        "policy": "ActorCriticPolicy",
        "env": "CartPole-v1",
        "total_timesteps": 256,
        "n_steps": 64,
        "gamma": 0.99,
    }
    assert run["config"]["purpose"] == "test"
    metrics = stored_metrics(config, run_id)
    assert list(metrics.dropna(subset=["time/fps"])["step"]) == [64, 128, 192, 256]
    assert list(metrics.dropna(subset=["custom/steps_seen"])["custom/steps_seen"]) == [64, 128, 192, 256]
    assert "custom/hidden" not in metrics.columns
    assert "train/value_loss" in metrics.columns
    assert run["total_episodes"] == env.episode_count > 0
    assert len(stored_events(config, run_id, "episode_end")) == env.episode_count


def test_an_exception_in_learn_fails_the_run_when_the_callback_block_exits(
    config: MonitorConfig, monitor: WebMonitor
) -> None:
    """An error raised at step 100 reaches the caller and the run is failed with it, the first rollout kept."""
    env = gymnasium.make("CartPole-v1")
    with pytest.raises(ValueError, match="bad observation"), RunwatchCallback(monitor) as callback:
        ppo(env).learn(256, callback=[callback, FailsAt(100, ValueError("bad observation"))])

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert run["status"] == "failed"
    assert run["metadata"]["reason"] == "ValueError: bad observation"
    assert list(stored_metrics(config, run_id).dropna(subset=["time/fps"])["step"]) == [64]


def test_ctrl_c_in_learn_fails_the_run_as_interrupted(config: MonitorConfig, monitor: WebMonitor) -> None:
    """A KeyboardInterrupt leaving the callback's block fails the run with reason 'interrupted: KeyboardInterrupt'."""
    with pytest.raises(KeyboardInterrupt), RunwatchCallback(monitor) as callback:
        ppo(gymnasium.make("CartPole-v1")).learn(256, callback=[callback, FailsAt(10, KeyboardInterrupt())])

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert (run["status"], run["metadata"]["reason"]) == ("failed", "interrupted: KeyboardInterrupt")


def test_the_output_format_alone_sends_sb3_logger_dumps(config: MonitorConfig, monitor: WebMonitor) -> None:
    """RunwatchOutputFormat in a logger set on the model records each dump at num_timesteps; close() completes."""
    output = RunwatchOutputFormat(monitor, config={"format": "only"})
    model = ppo(gymnasium.make("CartPole-v1"))
    model.set_logger(Logger(folder=None, output_formats=[output]))

    model.learn(128)
    output.close()

    run_id = output.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert (run["status"], run["config"]) == ("completed", {"format": "only"})
    assert list(stored_metrics(config, run_id).dropna(subset=["time/fps"])["step"]) == [64, 128]


def test_runwatch_trouble_never_reaches_learn(monitor: WebMonitor) -> None:
    """With the monitor closed under it, learn() runs all 256 steps; the callback counts its failed calls."""
    callback = RunwatchCallback(monitor)
    monitor.close()

    model = ppo(gymnasium.make("CartPole-v1")).learn(256, callback=callback)

    assert model.num_timesteps == 256
    assert callback.recorder.statistics()["errors"] > 0


def test_the_wrapper_inside_sb3_adds_episodes_but_no_config_event(config: MonitorConfig, monitor: WebMonitor) -> None:
    """The Gymnasium wrapper recording into the callback's run leaves the run's config to the callback."""
    env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)
    callback = RunwatchCallback(monitor)

    ppo(env).learn(128, callback=callback)

    run_id = callback.recorder.run_id
    assert run_id is not None
    assert stored_events(config, run_id, "hyperparameters") == []
    assert len(stored_events(config, run_id, "episode_end")) == env.episode_count > 0
