"""PyTorch Lightning → runwatch: a 2-layer network fitted for a few steps on the CPU.

    pip install runwatch lightning torch
    python examples/integrations/with_lightning.py [--db runwatch_examples/monitoring.db]

The hyperparameters become the run's config, ``self.log`` values its metrics
at Lightning's step, each checkpoint an event, and the trainer's outcome its
status.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch

from runwatch import MonitorConfig, WebMonitor
from runwatch.integrations.lightning import RunwatchLogger


class TwoLayerNet(pl.LightningModule):
    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()  # → the run's config
        self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)  # → a metric at the trainer's global step
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runwatch_examples/monitoring.db"))
    db = parser.parse_args().db
    db.parent.mkdir(parents=True, exist_ok=True)

    x = torch.randn(256, 4)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=16)
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(db.parent / "data"), web_port=0)) as monitor:
        logger = RunwatchLogger(monitor, config={"dataset": "sum of 4 features"})
        trainer = pl.Trainer(
            logger=logger,
            max_epochs=2,
            log_every_n_steps=4,
            accelerator="cpu",
            enable_progress_bar=False,
            default_root_dir=str(db.parent / "lightning"),
        )
        trainer.fit(TwoLayerNet(), data)
        summary = monitor.get_run_summary(logger.version)
        print(f"run {logger.version}: {summary['status']}, train_loss {summary['metrics']['train_loss']['last']:.4f}")
    print(f"look at it: runwatch show {logger.version} --db {db}   (or: runwatch serve --db {db})")


if __name__ == "__main__":
    main()
