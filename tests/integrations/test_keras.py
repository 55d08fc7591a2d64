"""RunwatchCallback driving a real Keras 3 fit (torch backend) of a 2-layer network on the CPU."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.keras import RunwatchCallback  # noqa: E402

from .conftest import stored_metrics, stored_run  # noqa: E402


def two_layer_net() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    return model


def data(size: int) -> tuple[Any, Any]:
    x = np.random.default_rng(0).normal(size=(size, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


class FailsAtBatch(keras.callbacks.Callback):  # type: ignore[misc]
    """Raises ``error`` at the end of batch ``at`` of the first epoch."""

    def __init__(self, at: int, error: BaseException) -> None:
        super().__init__()
        self.at, self.error = at, error

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if batch == self.at:
            raise self.error


def fit(model: Any, callbacks: list[Any], epochs: int = 2) -> Any:
    return model.fit(*data(32), batch_size=8, epochs=epochs, validation_data=data(16), callbacks=callbacks, verbose=0)


def test_fit_records_config_batch_and_epoch_metrics_and_completion(config: MonitorConfig, monitor: WebMonitor) -> None:
    """Two epochs of four batches: batch losses at steps 1-8, epoch losses at 4 and 8, fit's config, completed."""
    callback = RunwatchCallback(monitor, config={"data": "sum"})

    fit(two_layer_net(), [callback])

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert run["status"] == "completed"
    assert (run["config"]["epochs"], run["config"]["steps"], run["config"]["data"]) == (2, 4, "sum")
    assert run["config"]["optimizer"]["class"] == "SGD"
    assert run["config"]["optimizer"]["learning_rate"] == pytest.approx(0.05)
    assert run["config"]["parameters"] == 4 * 8 + 8 + 8 + 1
    metrics = stored_metrics(config, run_id)
    assert list(metrics.dropna(subset=["batch/loss"])["step"]) == list(range(1, 9))
    epochs = metrics.dropna(subset=["epoch/val_loss"])
    assert list(epochs["step"]) == [4, 8]
    assert list(epochs["epoch/epoch"]) == [0, 1]
    assert epochs["epoch/loss"].notna().all()


def test_log_every_batches_thins_batch_metrics(config: MonitorConfig, monitor: WebMonitor) -> None:
    """log_every_batches=3 records batch metrics at steps 3 and 6 only; epochs are still recorded."""
    callback = RunwatchCallback(monitor, log_every_batches=3)

    fit(two_layer_net(), [callback])

    run_id = callback.recorder.run_id
    assert run_id is not None
    metrics = stored_metrics(config, run_id)
    assert list(metrics.dropna(subset=["batch/loss"])["step"]) == [3, 6]
    assert list(metrics.dropna(subset=["epoch/loss"])["step"]) == [4, 8]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(ArithmeticError("loss exploded"), "ArithmeticError: loss exploded", id="error"),
        pytest.param(KeyboardInterrupt(), "interrupted: KeyboardInterrupt", id="ctrl-c"),
    ],
)
def test_an_exception_in_fit_fails_the_run_when_the_callback_block_exits(
    config: MonitorConfig, monitor: WebMonitor, error: BaseException, reason: str
) -> None:
    """An exception raised at the third batch fails the run with its reason; the batches before it are kept."""
    with pytest.raises(type(error)), RunwatchCallback(monitor) as callback:
        fit(two_layer_net(), [callback, FailsAtBatch(2, error)])

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert (run["status"], run["metadata"]["reason"]) == ("failed", reason)
    assert list(stored_metrics(config, run_id).dropna(subset=["batch/loss"])["step"]) == [1, 2, 3]


def test_runwatch_trouble_never_reaches_fit(monitor: WebMonitor) -> None:
    """With the monitor closed under it, fit() runs both epochs; the callback counts its failed calls."""
    callback = RunwatchCallback(monitor)
    monitor.close()

    history = fit(two_layer_net(), [callback])

    assert len(history.history["loss"]) == 2
    assert callback.recorder.statistics()["errors"] > 0


def test_log_every_batches_is_checked() -> None:
    """A negative or non-integer log_every_batches is refused when the callback is made."""
    with pytest.raises(ValueError, match="0 or more"):
        RunwatchCallback(log_every_batches=-1)
    with pytest.raises(TypeError, match="integer"):
        RunwatchCallback(log_every_batches=1.5)  # type: ignore[arg-type]
