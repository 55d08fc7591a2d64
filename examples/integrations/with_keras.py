"""Keras 3 → runwatch: a 2-layer network fitted for two epochs (any backend; torch here).

    pip install runwatch keras torch
    KERAS_BACKEND=torch python examples/integrations/with_keras.py [--db runwatch_examples/monitoring.db]

fit's parameters and the optimizer become the run's config, each batch's
logs ``batch/*`` and each epoch's ``epoch/*`` metrics at a global batch step;
leaving the callback's ``with`` block on an exception fails the run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras  # noqa: E402
import numpy as np  # noqa: E402

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.integrations.keras import RunwatchCallback  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("runwatch_examples/monitoring.db"))
    db = parser.parse_args().db
    db.parent.mkdir(parents=True, exist_ok=True)

    x = np.random.default_rng(0).normal(size=(512, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.02), loss="mse", metrics=["mae"])
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(db.parent / "data"), web_port=0)) as monitor:
        with RunwatchCallback(monitor, config={"data": "sum of 4 features"}, log_every_batches=4) as callback:
            model.fit(x, y, batch_size=32, epochs=2, validation_split=0.25, callbacks=[callback], verbose=0)
        run_id = callback.recorder.run_id
        assert run_id is not None
        summary = monitor.get_run_summary(run_id)
        print(f"run {run_id}: {summary['status']}, val_loss {summary['metrics']['epoch/val_loss']['last']:.4f}")
    print(f"look at it: runwatch show {run_id} --db {db}   (or: runwatch serve --db {db})")


if __name__ == "__main__":
    main()
