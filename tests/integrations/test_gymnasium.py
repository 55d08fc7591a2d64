"""RunwatchEpisodeStatistics around a real CartPole-v1, checked against Gymnasium's own RecordEpisodeStatistics."""

from __future__ import annotations

from typing import Any

import pytest

gymnasium = pytest.importorskip("gymnasium")
np = pytest.importorskip("numpy")

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.gymnasium import RunwatchEpisodeStatistics  # noqa: E402

from .conftest import stored_events, stored_metrics, stored_run  # noqa: E402


class CountingRenders(gymnasium.Wrapper):  # type: ignore[misc]
    """Counts render() calls of the environment below it."""

    renders = 0

    def render(self) -> Any:
        self.renders += 1
        return self.env.render()


class ImageMonitor(WebMonitor):
    """A monitor with the log_image hook images will bring; it keeps what it is given (images are not stored yet)."""

    def __init__(self, config: MonitorConfig) -> None:
        super().__init__(config)
        self.images: list[tuple[str, Any, int | None]] = []

    def log_image(self, name: str, image: Any, *, step: int | None = None, caption: str | None = None) -> None:
        self.images.append((name, image, step))


def play(env: Any, steps: int, seed: int = 0) -> list[dict[str, Any] | None]:
    """Random actions for ``steps`` steps; per finished episode, Gymnasium's own statistics (if in the chain)."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    episodes = []
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            episodes.append(info.get("episode"))
            env.reset()
    return episodes


def test_episodes_match_gymnasiums_own_statistics_and_close_completes_the_run(config: MonitorConfig) -> None:
    """Each finished episode's return and length equal RecordEpisodeStatistics'; the wrapper's own run completes."""
    with WebMonitor(config) as monitor:
        wrapper = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor, config={"policy": "random"})
        env = gymnasium.wrappers.RecordEpisodeStatistics(wrapper)

        expected = play(env, 300)
        env.close()

        run_id = wrapper.recorder.run_id
        assert run_id is not None and len(expected) >= 5
        run = stored_run(config, run_id)
        assert run["status"] == "completed"
        assert run["config"] == {
            "env": "CartPole-v1",
            "env_kwargs": {},
            "max_episode_steps": 500,
            "policy": "random",
        }
        assert run["total_episodes"] == len(expected)
        metrics = stored_metrics(config, run_id)
        assert metrics["step"].is_monotonic_increasing
        assert list(metrics["episode/total_reward"]) == [float(e["r"]) for e in expected if e]
        assert list(metrics["episode/steps"]) == [e["l"] for e in expected if e]
        ends = stored_events(config, run_id, "episode_end")
        assert all(end["event_data"]["metadata"]["terminated"] for end in ends)


def test_episodes_go_into_the_run_already_active_and_leave_it_open(config: MonitorConfig) -> None:
    """With a run active on the monitor, episodes are recorded into it and closing the env does not end it."""
    with WebMonitor(config) as monitor:
        run_id = monitor.start_training({"agent": "mine"})
        env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)

        episodes = len(play(env, 100))
        env.close()

        assert monitor.current_run_id == run_id
        monitor.stop_training()
        monitor.flush()
        run = stored_run(config, run_id)
        assert run["config"] == {"agent": "mine"}
        assert run["total_episodes"] == episodes > 0
        assert stored_events(config, run_id, "training_end") == []


def test_frames_reach_a_monitor_with_log_image_at_the_chosen_rate(config: MonitorConfig) -> None:
    """frame_every_steps=5 hands every fifth rendered frame (H×W×3 uint8) to log_image, at the step it was taken."""
    with ImageMonitor(config) as monitor:
        env = RunwatchEpisodeStatistics(
            gymnasium.make("CartPole-v1", render_mode="rgb_array"), monitor, frame_every_steps=5, frame_name="cartpole"
        )
        play(env, 23)
        env.close()

    assert [(name, step) for name, _, step in monitor.images] == [("cartpole", s) for s in (5, 10, 15, 20)]
    frame = monitor.images[0][1]
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


class WithoutLogImage(WebMonitor):
    """A monitor as an older runwatch offers it: no log_image."""

    log_image = None  # type: ignore[assignment]


def test_frames_are_not_even_rendered_for_a_monitor_without_log_image(config: MonitorConfig) -> None:
    """Without a log_image hook on the monitor, asking for frames renders nothing and records nothing."""
    with WithoutLogImage(config) as monitor:
        counting = CountingRenders(gymnasium.make("CartPole-v1", render_mode="rgb_array"))
        env = RunwatchEpisodeStatistics(counting, monitor, frame_every_steps=1)
        play(env, 50)
        env.close()

        assert counting.renders == 0
        assert wrapper_errors(env) == 0


def wrapper_errors(env: RunwatchEpisodeStatistics) -> int:
    return int(env.recorder.statistics()["errors"])


def test_frames_need_an_rgb_array_environment() -> None:
    """Asking for frames of an environment that does not render rgb_array is refused when the wrapper is made."""
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), MonitorConfig(), frame_every_steps=10)
    with pytest.raises(ValueError, match="at least 1"):
        RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1", render_mode="rgb_array"), frame_every_steps=0)


def test_an_exception_leaving_the_with_block_fails_the_wrappers_run(config: MonitorConfig) -> None:
    """Leaving `with env:` on an exception fails the run the wrapper started, with the error as reason."""
    with WebMonitor(config) as monitor:
        with (
            pytest.raises(RuntimeError, match="agent crashed"),
            RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor) as env,
        ):
            play(env, 60)
            raise RuntimeError("agent crashed")

        run_id = env.recorder.run_id
        assert run_id is not None
        run = stored_run(config, run_id)
        assert run["status"] == "failed"
        assert run["metadata"]["reason"] == "RuntimeError: agent crashed"


def test_runwatch_trouble_never_reaches_the_environment_loop(config: MonitorConfig) -> None:
    """With the monitor closed under it, stepping goes on; the wrapper counts its failed records."""
    monitor = WebMonitor(config)
    env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)
    monitor.close()

    episodes = play(env, 100)
    env.close()

    assert env.episode_count == len(episodes) > 0
    assert env.total_steps == 100
    assert wrapper_errors(env) > 0
