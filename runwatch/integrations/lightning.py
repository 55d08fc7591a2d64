"""PyTorch Lightning: ``RunwatchLogger``, a ``lightning.pytorch`` ``Logger``.

.. code-block:: python

    from runwatch.integrations.lightning import RunwatchLogger

    trainer = lightning.pytorch.Trainer(logger=RunwatchLogger(monitor), max_epochs=3)
    trainer.fit(model, train_loader)

- ``self.log(...)`` values reach the run as metrics at Lightning's step.
- Hyperparameters (``save_hyperparameters()``, a datamodule's) become the run's config.
- Each checkpoint ``ModelCheckpoint`` saves is a ``checkpoint_saved`` event.
- The trainer's outcome becomes the run's status: a finished ``fit`` →
  ``completed``; an exception → ``failed`` with the error as reason; Ctrl-C →
  ``failed`` with reason ``interrupted: KeyboardInterrupt``.

Only the process of global rank 0 records, as with Lightning's own loggers.
Importing this module imports Lightning (the ``lightning`` package).
"""

from __future__ import annotations

import sys
from argparse import Namespace
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..config import MonitorConfig
from ..monitor import WebMonitor, new_run_id
from ._recorder import Outcome, RunRecorder, finite_or_none, outcome_of

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["RunwatchLogger"]


class RunwatchLogger(Logger):
    """A Lightning logger recording into a runwatch run.

    Args:
        monitor: the :class:`~runwatch.WebMonitor` to record into (left open),
            or a :class:`~runwatch.MonitorConfig` for a monitor the logger
            creates on first use (``None``: :meth:`MonitorConfig.load`); close
            it with :meth:`close`.
        run_id: the run's id (an existing run's id resumes it); ``None``
            generates one, known at once as :attr:`version`.
        config: extra run configuration, merged over the hyperparameters.

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
        super().__init__()
        # Lightning may ask for the version (checkpoint paths, progress bar) before anything is logged.
        self._version = run_id if run_id is not None else new_run_id()
        self.recorder = RunRecorder(monitor, component="lightning", run_id=self._version, config=config)
        self._last_step: int | None = None
        self._checkpoints_seen: set[str] = set()

    # -- Logger's identity -------------------------------------------------------------

    @property
    def name(self) -> str:
        """``runwatch``."""
        return "runwatch"

    @property
    def version(self) -> str:
        """The run's id (the adopted run's id when the monitor had one active)."""
        return self.recorder.run_id or self._version

    @property
    @rank_zero_experiment
    def experiment(self) -> WebMonitor | None:
        """The monitor (created here when the logger owns it); ``None`` if it could not be."""
        # Lightning touches this at setup, before the hyperparameters: no run starts here.
        return self.recorder.ensure_monitor()

    # -- what Lightning reports --------------------------------------------------------

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters: the config of the run that starts (or resumes) here."""
        if isinstance(params, Namespace):
            params = vars(params)
        self.recorder.start(params if isinstance(params, Mapping) else {"hyperparameters": params})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Metrics at Lightning's step (numbers only; others are counted and left out)."""
        if step is not None:
            self._last_step = step
        self.recorder.log_metrics(metrics, step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """One ``checkpoint_saved`` event per checkpoint file not reported before."""
        try:
            scores = dict(getattr(checkpoint_callback, "best_k_models", {}) or {})
            best_path = getattr(checkpoint_callback, "best_model_path", "") or None
            paths = [*scores, best_path, getattr(checkpoint_callback, "last_model_path", "")]
            common = {
                "monitor": getattr(checkpoint_callback, "monitor", None),
                "step": self._last_step,
                "best_model_path": best_path,
                "best_model_score": finite_or_none(getattr(checkpoint_callback, "best_model_score", None)),
            }
        except Exception as error:  # a checkpoint callback of another shape
            self.recorder.report_trouble("after_save_checkpoint", error)
            return
        for path in dict.fromkeys(str(p) for p in paths if p):
            if path not in self._checkpoints_seen:
                self._checkpoints_seen.add(path)
                score = finite_or_none(scores[path]) if path in scores else None
                self.recorder.log_event("checkpoint_saved", {"path": path, "score": score, **common})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning's outcome → the run's status.

        Lightning says ``"success"`` (or ``"finished"`` before a cluster
        requeue) or ``"failed"``; on failure it calls this while handling the
        exception, which tells an interruption (Ctrl-C) from an error.
        """
        error = sys.exc_info()[1]
        if status == "failed":
            outcome, reason = outcome_of(error) if error is not None else (Outcome.FAILED, "training failed")
        else:
            outcome, reason = Outcome.COMPLETED, None
        self.recorder.finish(outcome, reason)

    def close(self) -> None:
        """End a run still open (``completed``) and close a monitor the logger created."""
        self.recorder.close()
