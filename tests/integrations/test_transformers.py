"""RunwatchCallback driving a real transformers Trainer on a tiny BERT built from a config (no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.transformers import RunwatchCallback  # noqa: E402

from .conftest import stored_events, stored_metrics, stored_run  # noqa: E402


def tiny_bert() -> Any:
    """A 2-layer BERT classifier with 16-wide hidden states, initialised at random from its config."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


class Sentences(torch.utils.data.Dataset):  # type: ignore[misc]
    """Random 8-token sequences labelled by whether their first token is even."""

    def __init__(self, size: int = 32) -> None:
        generator = torch.Generator().manual_seed(1)
        self.ids = torch.randint(0, 40, (size, 8), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids = self.ids[index]
        return {"input_ids": ids, "labels": torch.tensor(int(ids[0]) % 2)}


def make_trainer(tmp_path: Path, callback: RunwatchCallback, model: Any = None, **arguments: Any) -> Any:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=6,
        logging_steps=1,
        save_steps=3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **arguments,
    )
    return transformers.Trainer(
        model=model if model is not None else tiny_bert(),
        args=args,
        train_dataset=Sentences(),
        eval_dataset=Sentences(16),
        callbacks=[callback],
    )


def test_train_records_arguments_stepped_losses_checkpoints_and_completion(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """A finished train() leaves a completed run: arguments and model config as config, loss per step, checkpoints."""
    callback = RunwatchCallback(monitor, config={"task": "parity"})

    make_trainer(tmp_path, callback).train()

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert run["status"] == "completed"
    assert run["config"]["learning_rate"] == 1e-3
    assert run["config"]["max_steps"] == 6
    assert run["config"]["model_config"]["hidden_size"] == 16
    assert run["config"]["task"] == "parity"
    losses = stored_metrics(config, run_id).dropna(subset=["loss"])
    assert list(losses["step"]) == [1, 2, 3, 4, 5, 6]
    assert {"learning_rate", "grad_norm", "train_runtime"} <= set(run["metrics"])
    saved = [event["event_data"] for event in stored_events(config, run_id, "checkpoint_saved")]
    assert [Path(data["path"]).name for data in saved] == ["checkpoint-3", "checkpoint-6"]
    assert all(Path(data["path"]).is_dir() for data in saved)


def test_evaluate_after_train_lands_in_the_completed_run(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """trainer.evaluate() after train() records eval_loss at the final step without reopening the run."""
    callback = RunwatchCallback(monitor)
    trainer = make_trainer(tmp_path, callback)
    trainer.train()

    trainer.evaluate()
    monitor.flush()

    run_id = callback.recorder.run_id
    assert run_id is not None
    assert stored_run(config, run_id)["status"] == "completed"
    evaluated = stored_metrics(config, run_id).dropna(subset=["eval_loss"])
    assert list(evaluated["step"]) == [6]


def test_an_exception_in_train_fails_the_run_when_the_callback_block_exits(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """An error raised by the model at its fourth forward pass fails the run with that error, steps 1-3 kept."""

    class Failing(transformers.BertForSequenceClassification):  # type: ignore[misc]
        calls = 0

        def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
            Failing.calls += 1
            if Failing.calls == 4:
                raise FloatingPointError("loss is NaN")
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)

    model = Failing(tiny_bert().config)
    with pytest.raises(FloatingPointError), RunwatchCallback(monitor) as callback:
        make_trainer(tmp_path, callback, model).train()

    run_id = callback.recorder.run_id
    assert run_id is not None
    run = stored_run(config, run_id)
    assert run["status"] == "failed"
    assert run["metadata"]["reason"] == "FloatingPointError: loss is NaN"
    assert list(stored_metrics(config, run_id).dropna(subset=["loss"])["step"]) == [1, 2, 3]


def test_a_second_train_after_a_failed_one_marks_the_first_failed(
    tmp_path: Path, config: MonitorConfig, monitor: WebMonitor
) -> None:
    """Without the with-block, train() called again after one that raised fails the run, then resumes it."""

    class FailsOnce(transformers.BertForSequenceClassification):  # type: ignore[misc]
        calls = 0

        def forward(self, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
            FailsOnce.calls += 1
            if FailsOnce.calls == 2:
                raise RuntimeError("flaky disk")
            return super().forward(input_ids=input_ids, labels=labels, **kwargs)

    callback = RunwatchCallback(monitor)
    trainer = make_trainer(tmp_path, callback, FailsOnce(tiny_bert().config))
    with pytest.raises(RuntimeError):
        trainer.train()
    trainer.train()

    run_id = callback.recorder.run_id
    assert run_id is not None
    lifecycle = [e["event_type"] for e in stored_events(config, run_id) if e["kind"] == "lifecycle"]
    assert lifecycle == ["run_started", "run_failed", "run_resumed", "run_completed"]
    assert stored_run(config, run_id)["status"] == "completed"


def test_runwatch_trouble_never_reaches_the_trainer(tmp_path: Path, monitor: WebMonitor) -> None:
    """With the monitor closed under it, train() still runs all its steps; the callback counts its failed calls."""
    callback = RunwatchCallback(monitor)
    monitor.close()

    trainer = make_trainer(tmp_path, callback)
    trainer.train()

    assert trainer.state.global_step == 6
    assert callback.recorder.statistics()["errors"] > 0
