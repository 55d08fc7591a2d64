"""Tests for runwatch.store.frames: DataFrames from series arrays (pure, no database)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from runwatch.store.base import Series
from runwatch.store.chunks import ChunkColumns
from runwatch.store.frames import long_frame, per_call_frame, series_frame, step_frame

T0 = 1_700_000_000_000_000


def series(
    name: str, seq: list[int], values: list[float], steps: list[int | None] | None = None, run_id: str = "r"
) -> Series:
    steps = list(seq) if steps is None else steps
    valid = np.array([s is not None for s in steps], dtype=np.bool_)
    points = ChunkColumns(
        np.array(seq, dtype=np.int64),
        np.array([0 if s is None else s for s in steps], dtype=np.int64),
        None if valid.all() else valid,
        T0 + np.array(seq, dtype=np.int64) * 1000,
        np.array(values),
    )
    return Series(run_id, name, points)


def test_per_call_frame_aligns_metrics_on_calls() -> None:
    """Metrics logged by different calls share rows only where the calls are the same."""
    frame = per_call_frame(
        {"loss": series("loss", [0, 1, 2, 3], [4.0, 3.0, 2.0, 1.0]), "eval": series("eval", [1, 3], [0.5, 0.7])},
        ["loss", "eval", "never"],
    )
    assert list(frame.columns) == ["timestamp", "step", "loss", "eval", "never"]
    assert frame["loss"].tolist() == [4.0, 3.0, 2.0, 1.0]
    assert np.array_equal(frame["eval"].to_numpy(), [np.nan, 0.5, np.nan, 0.7], equal_nan=True)
    assert frame["never"].isna().all()
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].iloc[1] == pd.Timestamp(T0 + 1000, unit="us", tz="UTC")
    assert frame["step"].dtype == "Int64" and frame["step"].tolist() == [0, 1, 2, 3]


def test_per_call_frame_keeps_missing_steps_missing() -> None:
    """A call without a step shows <NA>, not 0."""
    frame = per_call_frame({"x": series("x", [0, 1], [1.0, 2.0], [None, 7])})
    assert frame["step"].isna().tolist() == [True, False] and frame["step"].iloc[1] == 7


def test_metrics_named_like_fixed_columns_are_renamed() -> None:
    """A metric called ``step`` cannot hide the call's own step column."""
    frame = per_call_frame({"step": series("step", [0], [9.0])})
    assert list(frame.columns) == ["timestamp", "step", "metric:step"] and frame["metric:step"].tolist() == [9.0]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20), st.floats(allow_nan=False)),
        min_size=1,
        max_size=60,
    )
)
def test_step_frame_takes_each_metrics_last_value_per_step(logged: list[tuple[str, int, float]]) -> None:
    """Merged per step, each metric shows the last value it logged at that step (pandas groupby as reference)."""
    by_name: dict[str, tuple[list[int], list[float], list[int]]] = {}
    for seq, (name, step, value) in enumerate(logged):
        seqs, values, steps = by_name.setdefault(name, ([], [], []))
        seqs.append(seq)
        values.append(value)
        steps.append(step)
    frame = step_frame({name: series(name, s, v, st_) for name, (s, v, st_) in by_name.items()})
    reference = (
        pd.DataFrame(logged, columns=["name", "step", "value"]).groupby(["step", "name"])["value"].last().unstack()
    )
    assert frame["step"].tolist() == reference.index.tolist()
    for name in by_name:
        assert np.array_equal(frame[name].to_numpy(), reference[name].to_numpy(), equal_nan=True)


def test_long_frame_holds_several_runs() -> None:
    """Runs and metrics stack in long form with categorical labels, each series in order."""
    frame = long_frame(
        [
            series("loss", [0, 1], [1.0, 0.5], run_id="r1"),
            series("loss", [0, 1, 2], [2.0, 1.0, 0.1], run_id="r2"),
            series("acc", [1], [0.9], [None], run_id="r2"),
        ]
    )
    assert frame["run_id"].tolist() == ["r1", "r1", "r2", "r2", "r2", "r2"]
    assert frame["metric"].tolist() == ["loss"] * 5 + ["acc"]
    assert isinstance(frame["run_id"].dtype, pd.CategoricalDtype)
    assert frame["value"].tolist() == [1.0, 0.5, 2.0, 1.0, 0.1, 0.9]
    assert frame["step"].isna().tolist() == [False] * 5 + [True]


def test_series_frame_keeps_integer_values() -> None:
    """One metric's frame keeps int64 values as int64."""
    points = ChunkColumns(
        np.arange(3, dtype=np.int64),
        np.arange(3, dtype=np.int64),
        None,
        T0 + np.arange(3, dtype=np.int64),
        np.array([2**62, 1, 2], dtype=np.int64),
    )
    frame = series_frame(Series("r", "n", points))
    assert frame["n"].dtype == np.int64 and frame["n"].iloc[0] == 2**62
