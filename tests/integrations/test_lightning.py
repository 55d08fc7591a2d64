"""RunwatchLogger driving a real PyTorch Lightning training of a 2-layer network on the CPU."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.lightning import RunwatchLogger  # noqa: E402

from .conftest import stored_events, stored_metrics, stored_run  # noqa: E402

pytestmark = [
    # Lightning's advice for real trainings (worker count, tiny batch counts) is noise for a 6-step one.
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*number of training batches.*"),
    pytest.mark.filterwarnings("ignore:.*GPU available but not used.*"),
]


class TwoLayerNet(pl.LightningModule):
    """A 2-layer regression network; ``fail_at`` raises that exception at that step."""

    def __init__(self, hidden: int = 8, lr: float = 0.05, fail_at: int | None = None, failure: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters("hidden", "lr")
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.fail_at = fail_at
        self.failure = failure

    def training_step(self, batch: Any, batch_index: int) -> Any:
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise self.failure
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader() -> Any:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)


def trainer(tmp_path: Path, logger: RunwatchLogger, max_steps: int = 6, **kwargs: Any) -> Any:
    return pl.Trainer(
        logger=logger,
        max_steps=max_steps,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


@pytest.fixture
def restore_sigint() -> Iterator[None]:
    """Lightning ignores SIGINT after a KeyboardInterrupt (to shut down gracefully): put it back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def test_fit_records_metrics_with_steps_hyperparameters_checkpoints_and_completion(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """A finished fit leaves a completed run with the hyperparameters as config, stepped losses and checkpoints."""
    logger = RunwatchLogger(monitor, config={"dataset": "sum-of-4"})
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=3, save_top_k=-1)

    trainer(tmp_path, logger, callbacks=[checkpoints]).fit(TwoLayerNet(), loader())

    run = stored_run(config, logger.version)
    assert run["status"] == "completed"
    assert run["config"] == {"hidden": 8, "lr": 0.05, "dataset": "sum-of-4"}
    metrics = stored_metrics(config, logger.version)
    losses = metrics.dropna(subset=["train_loss"])
    assert list(losses["step"]) == [0, 1, 2, 3, 4, 5]
    assert losses["train_loss"].notna().all()
    saved = [event["event_data"] for event in stored_events(config, logger.version, "checkpoint_saved")]
    assert [Path(data["path"]).name for data in saved] == ["epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt"]
    assert all(Path(data["path"]).exists() for data in saved)
    assert logger.recorder.statistics()["errors"] == 0


def test_an_exception_in_training_fails_the_run_with_the_error_as_reason(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """An error raised at step 3 reaches the caller, and the run is failed with that error, its steps 0-2 kept."""
    logger = RunwatchLogger(monitor)

    with pytest.raises(RuntimeError, match="diverged"):
        trainer(tmp_path, logger).fit(TwoLayerNet(fail_at=3, failure=RuntimeError("diverged")), loader())

    run = stored_run(config, logger.version)
    assert run["status"] == "failed"
    assert run["metadata"]["reason"] == "RuntimeError: diverged"
    assert list(stored_metrics(config, logger.version).dropna(subset=["train_loss"])["step"]) == [0, 1, 2]


def test_ctrl_c_fails_the_run_as_interrupted(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor, restore_sigint: None
) -> None:
    """A KeyboardInterrupt (Lightning shuts down and exits 1) leaves the run failed with reason 'interrupted'."""
    logger = RunwatchLogger(monitor)

    with pytest.raises(SystemExit):
        trainer(tmp_path, logger).fit(TwoLayerNet(fail_at=2, failure=KeyboardInterrupt()), loader())

    run = stored_run(config, logger.version)
    assert run["status"] == "failed"
    assert run["metadata"]["reason"] == "interrupted: KeyboardInterrupt"


def test_test_after_fit_resumes_the_same_run(tmp_path: Path, config: MonitorConfig, monitor: WebMonitor) -> None:
    """trainer.test() after fit() records its metrics into the fit's run, which ends completed again."""

    class Evaluated(TwoLayerNet):
        def test_step(self, batch: Any, batch_index: int) -> None:
            x, y = batch
            self.log("test_loss", torch.nn.functional.mse_loss(self.net(x), y))

    logger = RunwatchLogger(monitor)
    fitted = trainer(tmp_path, logger)
    model = Evaluated()
    fitted.fit(model, loader())
    fitted.test(model, loader(), verbose=False)

    assert stored_run(config, logger.version)["status"] == "completed"
    assert "test_loss" in stored_metrics(config, logger.version).columns
    assert [e["event_type"] for e in stored_events(config, logger.version) if e["kind"] == "lifecycle"] == [
        "run_started",
        "run_completed",
        "run_resumed",
        "run_completed",
    ]


def test_a_run_the_user_started_is_recorded_into_and_left_to_them(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """With a run already active, the logger records into it, notes the outcome as an event and does not end it."""
    run_id = monitor.start_training({"owner": "me"})
    logger = RunwatchLogger(monitor)

    trainer(tmp_path, logger).fit(TwoLayerNet(), loader())

    assert logger.version == run_id
    assert monitor.current_run_id == run_id
    monitor.stop_training()
    monitor.flush()
    run = stored_run(config, run_id)
    assert run["config"] == {"owner": "me"}
    assert run["metrics"]["train_loss"]["count"] == 6
    [hyperparameters] = stored_events(config, run_id, "hyperparameters")
    assert hyperparameters["event_data"] == {"hidden": 8, "lr": 0.05}
    [end] = stored_events(config, run_id, "training_end")
    assert end["event_data"]["outcome"] == "completed"


def test_a_monitor_config_makes_the_logger_own_its_monitor(tmp_path: Path, config: MonitorConfig) -> None:
    """Given a MonitorConfig, the logger creates the monitor on first use and closes it in close()."""
    logger = RunwatchLogger(config)

    trainer(tmp_path, logger).fit(TwoLayerNet(), loader())
    own = logger.experiment
    logger.close()

    assert isinstance(own, WebMonitor)
    assert own.statistics()["running"] is False
    assert stored_run(config, logger.version)["status"] == "completed"


def test_runwatch_trouble_never_reaches_the_training_loop(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """With the monitor closed under it, training still finishes; the logger counts its failed calls."""
    logger = RunwatchLogger(monitor)
    monitor.close()

    fitted = trainer(tmp_path, logger)
    fitted.fit(TwoLayerNet(), loader())

    assert fitted.global_step == 6
    assert logger.recorder.statistics()["errors"] > 0
