"""Hugging Face transformers → runwatch: a tiny BERT, built from a config (no download), trained a few steps.

    pip install runwatch transformers accelerate torch
    python examples/integrations/with_transformers.py [--db runwatch_examples/monitoring.db]

The training arguments become the run's config, every ``Trainer.log`` its
metrics at the global step, each checkpoint an event; leaving the callback's
``with`` block on an exception fails the run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import transformers

from runwatch import MonitorConfig, WebMonitor
from runwatch.integrations.transformers import RunwatchCallback


class Parity(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """8-token sequences labelled by whether their first token is even."""

    def __init__(self, size: int) -> None:
        self.ids = torch.randint(0, 64, (size, 8))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.ids[index], "labels": torch.tensor(int(self.ids[index][0]) % 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runwatch_examples/monitoring.db"))
    db = parser.parse_args().db
    db.parent.mkdir(parents=True, exist_ok=True)

    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
    )
    args = transformers.TrainingArguments(
        output_dir=str(db.parent / "transformers"),
        max_steps=20,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=10,
        save_steps=10,
        per_device_train_batch_size=8,
        report_to=[],  # runwatch records through its callback
        use_cpu=True,
        disable_tqdm=True,
    )
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(db.parent / "data"), web_port=0)) as monitor:
        with RunwatchCallback(monitor, config={"task": "parity"}) as callback:
            trainer = transformers.Trainer(
                model=transformers.BertForSequenceClassification(config),
                args=args,
                train_dataset=Parity(160),
                eval_dataset=Parity(32),
                callbacks=[callback],
            )
            trainer.train()
        run_id = callback.recorder.run_id
        assert run_id is not None
        summary = monitor.get_run_summary(run_id)
        print(f"run {run_id}: {summary['status']}, eval_loss {summary['metrics']['eval_loss']['last']:.4f}")
    print(f"look at it: runwatch show {run_id} --db {db}   (or: runwatch serve --db {db})")


if __name__ == "__main__":
    main()
