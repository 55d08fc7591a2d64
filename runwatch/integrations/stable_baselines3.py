"""Stable-Baselines3: ``RunwatchCallback`` and ``RunwatchOutputFormat``.

.. code-block:: python

    from runwatch.integrations.stable_baselines3 import RunwatchCallback

    with RunwatchCallback(monitor) as callback:
        PPO("MlpPolicy", env).learn(100_000, callback=callback)

- The algorithm's hyperparameters (``n_steps``, ``gamma``, ``learning_rate``,
  ``policy_kwargs``...), its class, the policy, the environment id and
  ``total_timesteps`` become the run's config.
- Everything SB3's own logger records (``logger.record``: ``rollout/*``,
  ``train/*``, ``time/*``, and your own keys) reaches the run as metrics at
  ``num_timesteps``: the callback adds a :class:`RunwatchOutputFormat` to the
  model's logger. A key recorded with ``exclude="runwatch"`` is left out.
- ``learn()`` returning completes the run (also when a callback stopped it).
  SB3 has no hook for an exception, so use the callback as a context manager:
  an exception leaving the block fails the run with the error as reason,
  Ctrl-C with ``interrupted: KeyboardInterrupt``. Without it, an unfinished
  run is failed when ``learn()`` is called again with the same callback, or
  when its monitor closes.

Per-episode returns and lengths come from
:class:`runwatch.integrations.gymnasium.RunwatchEpisodeStatistics` around the
environment; it records into the callback's run. Importing this module
imports Stable-Baselines3.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from ..config import MonitorConfig
from ..monitor import WebMonitor
from ._recorder import Outcome, RunRecorder

__all__ = ["RunwatchCallback", "RunwatchOutputFormat"]

#: The name a key's ``exclude`` gives to leave it out of runwatch (as "tensorboard" does for TensorBoard).
FORMAT_NAME = "runwatch"
#: Public attributes of an algorithm that describe its progress, not its configuration.
_NOT_CONFIG = frozenset({"num_timesteps", "start_time", "verbose", "tensorboard_log"})


class RunwatchOutputFormat(KVWriter):
    """An SB3 logger output format sending each ``dump`` to a runwatch run as metrics.

    The callback adds one to the model's logger by itself. On its own, pass it
    to ``stable_baselines3.common.logger.Logger(folder, output_formats=[...])``
    and ``model.set_logger(...)``; its run then ends in :meth:`close`.

    Args:
        monitor: the :class:`~runwatch.WebMonitor` (or
            :class:`~runwatch.MonitorConfig`, or ``None``) to record into, as
            for the callback.
        run_id: the run's id; ``None`` generates one.
        config: the run's configuration.
        recorder: record through this recorder instead (the callback's);
            ``monitor``, ``run_id`` and ``config`` must then be left out.
    """

    def __init__(
        self,
        monitor: WebMonitor | MonitorConfig | None = None,
        *,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        recorder: RunRecorder | None = None,
    ) -> None:
        if recorder is not None:
            if monitor is not None or run_id is not None or config is not None:
                raise TypeError("pass either recorder or monitor/run_id/config, not both")
            self.recorder, self._owns_recorder = recorder, False
        else:
            self.recorder = RunRecorder(monitor, component="stable_baselines3", run_id=run_id, config=config)
            self._owns_recorder = True

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        """One ``logger.dump(step)``: the numeric values, at ``step`` (SB3 passes ``num_timesteps``)."""
        try:
            if any(FORMAT_NAME in (excluded or ()) for excluded in key_excluded.values()):
                key_values = {k: v for k, v in key_values.items() if FORMAT_NAME not in (key_excluded.get(k) or ())}
        except Exception as error:  # exclusions of another shape: send everything
            self.recorder.report_trouble("write", error)
        self.recorder.log_metrics(key_values, step)

    def close(self) -> None:
        """End a run this format started on its own (completed) and close a monitor it created."""
        if self._owns_recorder:
            self.recorder.close()


def algorithm_config(model: Any, total_timesteps: Any = None) -> dict[str, Any]:
    """An SB3 algorithm's configuration: class, policy, environment and public hyperparameters."""
    config: dict[str, Any] = {"algorithm": type(model).__name__}
    policy = getattr(model, "policy", None)
    if policy is not None:
        config["policy"] = type(policy).__name__
    env = model.get_env() if hasattr(model, "get_env") else None
    if env is not None:
        try:
            spec = env.get_attr("spec", 0)[0]
            if spec is not None:
                config["env"] = spec.id
        except Exception:  # an environment without a spec (a custom VecEnv) has no id to report
            pass
    if total_timesteps is not None:
        config["total_timesteps"] = total_timesteps
    for name, value in vars(model).items():
        if name.startswith("_") or name in _NOT_CONFIG or name in config:
            continue
        if value is None or isinstance(value, (bool, int, float, str)) or name == "policy_kwargs":
            config[name] = value
    config["device"] = str(getattr(model, "device", ""))
    return config


class RunwatchCallback(BaseCallback):
    """An SB3 callback recording a ``learn()`` into a runwatch run.

    Args:
        monitor: the :class:`~runwatch.WebMonitor` to record into (left open),
            or a :class:`~runwatch.MonitorConfig` for a monitor the callback
            creates on first use and closes at the end of its ``with`` block
            (or in :meth:`close`); ``None``: :meth:`MonitorConfig.load`.
        run_id: the run's id (an existing run's id resumes it); ``None``
            generates one.
        config: extra run configuration, merged over the algorithm's.
        verbose: SB3's verbosity for this callback.

    Raises:
        TypeError: ``monitor`` or ``config`` has the wrong type.
        ValueError: ``run_id`` is empty.
    """

    def __init__(
        self,
        monitor: WebMonitor | MonitorConfig | None = None,
        *,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.recorder = RunRecorder(monitor, component="stable_baselines3", run_id=run_id, config=config)
        self.output_format = RunwatchOutputFormat(recorder=self.recorder)

    def _on_training_start(self) -> None:
        try:
            config = algorithm_config(self.model, self.locals.get("total_timesteps"))
        except Exception as error:  # an algorithm of another shape: start the run without its config
            self.recorder.report_trouble("on_training_start", error)
            config = {}
        self.recorder.begin(config)
        try:
            formats = self.model.logger.output_formats
            if not any(output is self.output_format for output in formats):
                formats.append(self.output_format)
        except Exception as error:
            self.recorder.report_trouble("on_training_start", error)

    def _on_step(self) -> bool:
        self.recorder.keep_alive()
        return True

    def _on_training_end(self) -> None:
        self.recorder.finish(Outcome.COMPLETED)

    def close(self, error: BaseException | None = None) -> None:
        """End an unfinished run with the outcome of ``error`` and close a monitor the callback created."""
        self.recorder.close(error)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc)
