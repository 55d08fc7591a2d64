"""Tests for the steps carried to calls logged without one, read from chunk summaries or from every call."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from runwatch.events import Metric
from runwatch.store.chunk_store import SQLiteSeriesStore
from runwatch.store.queries.compare import (
    _carry_from_summaries,
    _carry_from_timeline,
    _step_timeline,
    runs_metric_series,
)
from runwatch.store.schema import prepare_database
from runwatch.store.series import SeriesBuilder

TS = 1_700_000_000.0


def random_run(path: Path, seed: int) -> sqlite3.Connection:
    """A run of interleaved metrics, some calls without a step, steps that go back, in chunks of a few points."""
    prepare_database(str(path))
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    connection.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES ('run', ?, ?)", (TS, TS))
    rng = random.Random(seed)
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=rng.choice([1, 3, 7, 50])))
    names = ["loss", "acc", "system/cpu", "lr"]
    step = 0
    for i in range(rng.randint(1, 200)):
        picked = rng.sample(names, rng.randint(1, len(names)))
        stepless = rng.random() < 0.3
        step = step + rng.choice([0, 1, 1, 2, -3])
        values = {name: rng.random() for name in picked}
        store.add_calls([Metric("run", TS + i, values, None if stepless else step)])
        if rng.random() < 0.2:
            store.commit()
    store.commit(seal_all=rng.random() < 0.5)
    return connection


@pytest.mark.parametrize("seed", range(16))
def test_summaries_carry_the_same_steps_as_every_call(tmp_path: Path, seed: int) -> None:
    """The summary path's carried step equals the one found from every stepped call of the run, for any call."""
    connection = random_run(tmp_path / "store.db", seed)
    try:
        last = connection.execute("SELECT max(seq_last) FROM metric_chunks").fetchone()[0]
        calls = np.arange(0, last + 2, dtype=np.int64)
        fast = _carry_from_summaries(connection, 1, calls)
        slow = _carry_from_timeline(calls, _step_timeline(connection, "run"))
        assert fast.tolist() == slow.tolist()
        series = runs_metric_series(connection, ["run"])["run"]
    finally:
        connection.close()
    assert series  # the reads that use it still give every metric
