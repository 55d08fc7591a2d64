"""Keras 3: ``RunwatchCallback``, a ``keras.callbacks.Callback``.

.. code-block:: python

    from runwatch.integrations.keras import RunwatchCallback

    with RunwatchCallback(monitor) as callback:
        model.fit(x, y, epochs=5, callbacks=[callback])

- ``fit``'s parameters (epochs, steps per epoch), the model's name and size,
  and the optimizer's config become the run's config.
- Each batch's logs reach the run as ``batch/<name>`` and each epoch's
  (validation included) as ``epoch/<name>`` plus ``epoch/epoch``, at a
  global step that counts training batches across ``fit`` calls.
  ``log_every_batches`` thins the batch metrics.
- ``on_train_end`` completes the run (also after ``EarlyStopping``). Keras
  has no hook for an exception, so use the callback as a context manager:
  an exception leaving the block fails the run with the error as reason,
  Ctrl-C with ``interrupted: KeyboardInterrupt``. Without it, an unfinished
  run is failed when ``fit`` is called again with the same callback, or when
  its monitor closes.

Works with any Keras 3 backend (runwatch's tests use torch). Importing this
module imports Keras.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import keras

from ..config import MonitorConfig
from ..monitor import WebMonitor
from ._recorder import Outcome, RunRecorder

__all__ = ["RunwatchCallback"]


class RunwatchCallback(keras.callbacks.Callback):
    """A Keras callback recording ``fit`` into a runwatch run.

    Args:
        monitor: the :class:`~runwatch.WebMonitor` to record into (left open),
            or a :class:`~runwatch.MonitorConfig` for a monitor the callback
            creates on first use and closes at the end of its ``with`` block
            (or in :meth:`close`); ``None``: :meth:`MonitorConfig.load`.
        run_id: the run's id (an existing run's id resumes it); ``None``
            generates one.
        config: extra run configuration, merged over what ``fit`` reports.
        log_every_batches: record batch metrics every this many batches;
            ``0`` records epoch metrics only.

    Raises:
        TypeError: ``monitor``, ``config`` or ``log_every_batches`` has the wrong type.
        ValueError: ``run_id`` is empty or ``log_every_batches`` is negative.
    """

    def __init__(
        self,
        monitor: WebMonitor | MonitorConfig | None = None,
        *,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
        log_every_batches: int = 1,
    ) -> None:
        if isinstance(log_every_batches, bool) or not isinstance(log_every_batches, int):
            raise TypeError(f"log_every_batches must be an integer, got {log_every_batches!r}")
        if log_every_batches < 0:
            raise ValueError(f"log_every_batches must be 0 or more, got {log_every_batches}")
        super().__init__()
        self.recorder = RunRecorder(monitor, component="keras", run_id=run_id, config=config)
        self.log_every_batches = log_every_batches
        #: Training batches seen, across fit() calls: the step metrics are recorded at.
        self.global_step = 0

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Start (or resume) the run with fit's parameters, the model and its optimizer as config."""
        config: dict[str, Any] = {}
        try:
            config.update(self.params or {})
            model = self.model
            config["model"] = model.name
            config["parameters"] = model.count_params()
            if model.optimizer is not None:
                config["optimizer"] = {"class": type(model.optimizer).__name__, **model.optimizer.get_config()}
        except Exception as error:  # a model of another shape: start the run with what was gathered
            self.recorder.report_trouble("on_train_begin", error)
        self.recorder.begin(config)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Batch logs as ``batch/<name>`` at the global step."""
        self.global_step += 1
        every = self.log_every_batches
        if logs and every and self.global_step % every == 0:
            self.recorder.log_metrics({"batch": logs}, self.global_step)
        else:
            self.recorder.keep_alive()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Epoch logs (validation included) as ``epoch/<name>``, with ``epoch/epoch``, at the global step."""
        self.recorder.log_metrics({"epoch": {**(logs or {}), "epoch": epoch}}, self.global_step)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """fit() returned: the run completes."""
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
