"""Hugging Face transformers: ``RunwatchCallback``, a ``TrainerCallback``.

.. code-block:: python

    from runwatch.integrations.transformers import RunwatchCallback

    with RunwatchCallback(monitor) as callback:
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
        trainer.train()

- The training arguments (``TrainingArguments.to_dict()``, tokens masked)
  become the run's config, the model's config under ``model_config``.
- Every ``Trainer.log`` (loss, learning rate, grad norm, ``eval_*``...)
  reaches the run as metrics at ``state.global_step``.
- Each checkpoint is a ``checkpoint_saved`` event.
- ``on_train_end`` completes the run. The Trainer has no hook for an
  exception, so use the callback as a context manager (as above): an
  exception leaving the block fails the run with the error as reason, Ctrl-C
  with ``interrupted: KeyboardInterrupt``. Without it, an unfinished run is
  failed when ``train()`` is called again with the same callback, or when its
  monitor closes (an uncaught exception fails it, a clean exit completes it).

Only the main process (``state.is_world_process_zero``) records.
Importing this module imports transformers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..config import MonitorConfig
from ..monitor import WebMonitor
from ._recorder import Outcome, RunRecorder, finite_or_none

__all__ = ["RunwatchCallback"]


class RunwatchCallback(TrainerCallback):
    """A ``transformers.Trainer`` callback recording into a runwatch run.

    Args:
        monitor: the :class:`~runwatch.WebMonitor` to record into (left open),
            or a :class:`~runwatch.MonitorConfig` for a monitor the callback
            creates on first use and closes at the end of its ``with`` block
            (or in :meth:`close`); ``None``: :meth:`MonitorConfig.load`.
        run_id: the run's id (an existing run's id resumes it); ``None``
            generates one.
        config: extra run configuration, merged over the training arguments.

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
    ) -> None:
        self.recorder = RunRecorder(monitor, component="transformers", run_id=run_id, config=config)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Start (or resume) the run with the training arguments as config."""
        if not state.is_world_process_zero:
            return
        config: dict[str, Any] = {}
        try:
            config.update(args.to_dict())
            model_config = getattr(model, "config", None)
            if model_config is not None and hasattr(model_config, "to_dict"):
                config["model_config"] = model_config.to_dict()
        except Exception as error:  # arguments of another shape: start the run without them
            self.recorder.report_trouble("on_train_begin", error)
        self.recorder.begin(config)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Logged values as metrics at the global step (after ``train()``, into the ended run)."""
        if state.is_world_process_zero and logs:
            self.recorder.log_metrics(logs, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Keep the run's heartbeat going between logging steps."""
        if state.is_world_process_zero:
            self.recorder.keep_alive()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A ``checkpoint_saved`` event with the checkpoint's directory."""
        if not state.is_world_process_zero:
            return
        try:
            data = {
                "path": os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"),
                "step": state.global_step,
                "best_model_checkpoint": state.best_model_checkpoint,
                "best_metric": finite_or_none(state.best_metric),
            }
        except Exception as error:  # arguments or state of another shape
            self.recorder.report_trouble("on_save", error)
            return
        self.recorder.log_event("checkpoint_saved", data)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Training finished (also when stopped early on purpose): the run completes."""
        if state.is_world_process_zero:
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
