"""Gymnasium: ``RunwatchEpisodeStatistics``, an environment wrapper.

.. code-block:: python

    from runwatch.integrations.gymnasium import RunwatchEpisodeStatistics

    env = RunwatchEpisodeStatistics(gymnasium.make("CartPole-v1"), monitor)

- Each finished episode (terminated or truncated) is recorded with
  :meth:`WebMonitor.update_episode` (episode numbers 1, 2, ...):
  ``episode/total_reward``, ``episode/steps`` and ``episode/success`` at the
  step ``update_episode`` gives it, the run's episode count, and an
  ``episode_end`` event with ``terminated``, ``truncated`` and
  ``duration_seconds``. ``success`` is the environment's
  ``info["is_success"]`` (the Gymnasium and SB3 convention), else false.
- ``frame_every_steps=N`` hands every N-th frame of ``render()`` to the
  monitor's ``log_image(name, image, step=...)`` at the wrapper's total step
  count — when the monitor has such a method. When it has none, frames are
  neither rendered nor recorded, and the option costs nothing.
- Episodes go into the monitor's active run (an RL library's callback
  started it, or you did). With none active, the wrapper starts its own
  (config: the environment's id and arguments) and ends it in ``close()``:
  ``completed``, or — leaving a ``with env:`` block on an exception —
  ``failed`` (Ctrl-C: ``interrupted: KeyboardInterrupt``).

The wrapper sits around one environment (for a vector of them, wrap each,
as SB3's ``DummyVecEnv`` and ``make_vec_env(wrapper_class=...)`` do).
Errors of the environment itself propagate as usual; runwatch's own trouble
never does. Importing this module imports Gymnasium.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, SupportsFloat

import gymnasium

from ..config import MonitorConfig
from ..monitor import WebMonitor
from ._recorder import RunRecorder

__all__ = ["RunwatchEpisodeStatistics"]


class RunwatchEpisodeStatistics(gymnasium.Wrapper):
    """Records each episode's return and length (and optionally frames) into a runwatch run.

    Args:
        env: the environment to wrap.
        monitor: the :class:`~runwatch.WebMonitor` to record into (left open),
            or a :class:`~runwatch.MonitorConfig` for a monitor the wrapper
            creates on first use and closes in :meth:`close`; ``None``:
            :meth:`MonitorConfig.load`.
        frame_every_steps: record ``render()`` every this many steps (the
            environment must have ``render_mode="rgb_array"``); ``None``
            records no frames.
        frame_name: the image name frames are recorded under.
        run_id: the id of a run the wrapper starts itself; ``None`` generates one.
        config: extra configuration for a run the wrapper starts itself.

    Raises:
        TypeError: ``monitor`` or ``config`` has the wrong type, or
            ``frame_every_steps`` is not an integer.
        ValueError: ``frame_every_steps`` is below 1, ``frame_name`` is empty,
            or frames are asked of an environment that does not render
            ``rgb_array``.
    """

    def __init__(
        self,
        env: gymnasium.Env[Any, Any],
        monitor: WebMonitor | MonitorConfig | None = None,
        *,
        frame_every_steps: int | None = None,
        frame_name: str = "frame",
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(env)
        if frame_every_steps is not None:
            if isinstance(frame_every_steps, bool) or not isinstance(frame_every_steps, int):
                raise TypeError(f"frame_every_steps must be an integer or None, got {frame_every_steps!r}")
            if frame_every_steps < 1:
                raise ValueError(f"frame_every_steps must be at least 1, got {frame_every_steps}")
            if env.render_mode != "rgb_array":
                raise ValueError(
                    f"frame_every_steps needs an environment made with render_mode='rgb_array', not {env.render_mode!r}"
                )
        if not isinstance(frame_name, str) or not frame_name:
            raise ValueError(f"frame_name must be a non-empty string, got {frame_name!r}")
        self.recorder = RunRecorder(monitor, component="gymnasium", run_id=run_id, config=config)
        self.frame_every_steps = frame_every_steps
        self.frame_name = frame_name
        #: Finished episodes, and steps taken, since the wrapper was made.
        self.episode_count = 0
        self.total_steps = 0
        self._episode_return = 0.0
        self._episode_length = 0
        self._episode_start = time.perf_counter()
        # Until the monitor is known to take images, frames are due (None: not known yet).
        self._monitor_takes_frames: bool | None = None if frame_every_steps is not None else False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset the environment and start counting a new episode."""
        observation, info = self.env.reset(seed=seed, options=options)
        self._episode_return = 0.0
        self._episode_length = 0
        self._episode_start = time.perf_counter()
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the environment; at an episode's end, record it."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._episode_length += 1
        self.total_steps += 1
        try:
            self._episode_return += float(reward)
        except Exception as error:  # a reward that is not one number: the return cannot be kept
            self.recorder.report_trouble("step", error)
        every = self.frame_every_steps
        if every is not None and self._monitor_takes_frames is not False and self.total_steps % every == 0:
            self._record_frame()
        if terminated or truncated:
            self._record_episode(bool(terminated), bool(truncated), info)
        return observation, reward, terminated, truncated, info

    def _ensure_run(self) -> WebMonitor | None:
        recorder = self.recorder
        if not recorder.recording:
            monitor = recorder.ensure_monitor()
            # The environment's identity configures a run of the wrapper's own; another's run has its config.
            own_run = monitor is not None and monitor.current_run_id is None
            recorder.start(self._env_config() if own_run else None)
        return recorder.monitor if recorder.recording else None

    def _env_config(self) -> dict[str, Any]:
        spec = self.env.spec
        if spec is None:
            return {"env": type(self.env.unwrapped).__name__}
        return {"env": spec.id, "env_kwargs": dict(spec.kwargs), "max_episode_steps": spec.max_episode_steps}

    def _record_episode(self, terminated: bool, truncated: bool, info: Mapping[str, Any]) -> None:
        self.episode_count += 1
        try:
            monitor = self._ensure_run()
            if monitor is None:
                return
            details = {
                "terminated": terminated,
                "truncated": truncated,
                "duration_seconds": round(time.perf_counter() - self._episode_start, 6),
            }
            success = bool(info.get("is_success", False))
            monitor.update_episode(self.episode_count, self._episode_return, self._episode_length, success, details)
        except Exception as error:
            self.recorder.report_trouble("episode", error)

    def _record_frame(self) -> None:
        try:
            monitor = self._ensure_run()
            if monitor is None:
                return
            if self._monitor_takes_frames is None:
                self._monitor_takes_frames = getattr(monitor, "log_image", None) is not None
                if not self._monitor_takes_frames:
                    return
            frame = self.env.render()
            self.recorder.log_image(self.frame_name, frame, step=self.total_steps)
        except Exception as error:
            self.recorder.report_trouble("frame", error)

    def close(self) -> None:
        """Close the environment; end a run the wrapper started (completed) and a monitor it created."""
        try:
            self.recorder.close(report_adopted=False)
        finally:
            super().close()

    def __exit__(self, *args: Any) -> None:
        """Leaving ``with env:``: as :meth:`close`, but an exception fails a run the wrapper started."""
        error = args[1] if len(args) > 1 and isinstance(args[1], BaseException) else None
        try:
            self.recorder.close(error, report_adopted=False)
        finally:
            super().close()
