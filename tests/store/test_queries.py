"""Tests for runwatch.store.queries: reads of a real store written by the real SQLite sink."""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest

from runwatch.events import ExceptionEvent, Heartbeat, LogEvent, Metric, RunLifecycle, StatePatch
from runwatch.exceptions import StoreError, UnknownRunError
from runwatch.store import queries
from runwatch.store.chunk_reads import read_series
from runwatch.store.schema import prepare_database

from ._helpers import write

TS = 1_700_000_000.0
HOST = socket.gethostname()


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    # Created up front so the connection never makes an empty file of its own;
    # the sink's prepare_database is idempotent.
    prepare_database(str(db))
    connection = sqlite3.connect(db, timeout=5)
    yield connection
    connection.close()


def bits(value: float) -> bytes:
    return struct.pack("<d", value)


# -- run_metrics_frame ----------------------------------------------------------------

SPECIAL_VALUES = [math.nan, math.inf, -math.inf, 0.1 + 0.2, 5e-324, -0.0, 1.7976931348623157e308, -1e-300, 7]


async def test_frame_round_trips_nan_infinities_and_exact_floats(db: Path, conn: sqlite3.Connection) -> None:
    """NaN, ±Inf, subnormals, -0.0 and the largest float come back bit for bit."""
    values = {f"v{i}": value for i, value in enumerate(SPECIAL_VALUES)}
    await write(db, Metric("r", TS, values, step=1), Metric("r", TS + 1, {"v0": 1.5, "v1": math.nan}, step=2))

    frame = queries.run_metrics_frame(conn, "r")

    assert list(frame.columns) == ["timestamp", "step", *values]
    first = frame.iloc[0]
    for name, expected in values.items():
        assert bits(first[name]) == bits(float(expected)) or (math.isnan(expected) and math.isnan(first[name]))
    assert math.isnan(frame.loc[1, "v1"]) and frame.loc[1, "v0"] == 1.5
    assert math.isnan(frame.loc[1, "v2"])  # not logged by the second call


async def test_a_64_bit_integer_beside_a_non_finite_value_is_stored_exactly(db: Path, conn: sqlite3.Connection) -> None:
    """An integer logged in the same call as NaN or ±Inf is stored as the integer (2**53 + 1 is not rounded)."""
    big = 2**53 + 1
    await write(
        db,
        Metric("r", TS, {"count": big, "loss": math.nan}),
        Metric("r", TS + 1, {"count": -big, "loss": math.inf}),
        Metric("r", TS + 2, {"count": 2**63 - 1, "loss": -math.inf}),
    )
    stored = read_series(conn, "r")
    assert stored["count"].points.values.dtype == np.int64
    assert stored["count"].points.values.tolist() == [big, -big, 2**63 - 1]
    assert [bits(value) for value in stored["loss"].points.values.tolist()] == [
        bits(math.nan),
        bits(math.inf),
        bits(-math.inf),
    ]


async def test_summaries_keep_negative_zero(db: Path, conn: sqlite3.Connection) -> None:
    """A metric logged as -0.0 has last, min, max and mean -0.0 in the summary (not 0.0)."""
    await write(db, Metric("r", TS, {"zero": -0.0, "mixed": -0.0}), Metric("r", TS + 1, {"zero": -0.0, "mixed": 1.0}))
    await write(db, Metric("r", TS + 2, {"zero": -0.0}))  # a second transaction combines with the stored figures

    stats = queries.run_summary(conn, "r")["metrics"]
    assert [bits(stats["zero"][key]) for key in ("last", "min", "max", "mean")] == [bits(-0.0)] * 4
    assert bits(stats["mixed"]["min"]) == bits(-0.0) and stats["mixed"]["last"] == 1.0


async def test_frame_has_one_row_per_call_with_fixed_dtypes(db: Path, conn: sqlite3.Connection) -> None:
    """Columns are timestamp (ns, UTC), nullable Int64 step, then float64 metrics; a missing step is <NA>."""
    await write(
        db,
        Metric("r", TS + 0.25, {"loss": 1, "acc": 0.5}, step=2**62),
        Metric("r", TS + 0.5, {"loss": 2.0, "acc": 0.25}),
    )

    frame = queries.run_metrics_frame(conn, "r")

    assert list(frame.dtypes.astype(str)) == ["datetime64[ns, UTC]", "Int64", "float64", "float64"]
    assert frame["timestamp"].tolist() == [
        pd.Timestamp(TS + 0.25, unit="s", tz="UTC"),
        pd.Timestamp(TS + 0.5, unit="s", tz="UTC"),
    ]
    assert frame.loc[0, "step"] == 2**62
    assert frame["step"].isna().tolist() == [False, True]
    assert frame["loss"].tolist() == [1.0, 2.0]


async def test_frame_flattens_nested_metric_names(db: Path, conn: sqlite3.Connection) -> None:
    """Nested metrics become ``group/name`` columns."""
    await write(db, Metric("r", TS, {"train": {"loss": 1.0, "opt": {"lr": 0.1}}, "eval": {"loss": 2.0}}))

    frame = queries.run_metrics_frame(conn, "r")

    assert list(frame.columns[2:]) == ["train/loss", "train/opt/lr", "eval/loss"]
    assert frame.iloc[0, 2:].tolist() == [1.0, 0.1, 2.0]


async def test_frame_rows_with_different_metric_sets_get_nan_cells(db: Path, conn: sqlite3.Connection) -> None:
    """Interleaved calls with different metric sets keep their order; cells a call did not log are NaN."""
    await write(
        db,
        Metric("r", TS + 0, {"loss": 1.0, "acc": 0.1}, step=0),
        Metric("r", TS + 1, {"loss": 2.0}, step=1),
        Metric("r", TS + 2, {"acc": 0.3, "lr": 0.01}, step=2),
        Metric("r", TS + 3, {"loss": 4.0, "acc": 0.4}, step=3),
        Metric("r", TS + 4, {"loss": 5.0}, step=4),
    )

    frame = queries.run_metrics_frame(conn, "r")

    assert list(frame.columns) == ["timestamp", "step", "loss", "acc", "lr"]
    assert frame["step"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(frame["loss"], [1.0, 2.0, np.nan, 4.0, 5.0])
    np.testing.assert_array_equal(frame["acc"], [0.1, np.nan, 0.3, 0.4, np.nan])
    np.testing.assert_array_equal(frame["lr"], [np.nan, np.nan, 0.01, np.nan, np.nan])


async def test_frame_keeps_runs_apart(db: Path, conn: sqlite3.Connection) -> None:
    """Only the asked run's calls are returned, though rows of runs interleave."""
    await write(
        db,
        Metric("a", TS, {"x": 1.0}),
        Metric("b", TS, {"x": 100.0}),
        Metric("a", TS + 1, {"x": 2.0}),
    )

    assert queries.run_metrics_frame(conn, "a")["x"].tolist() == [1.0, 2.0]
    assert queries.run_metrics_frame(conn, "b")["x"].tolist() == [100.0]


async def test_metric_names_select_columns_in_order_and_rows_that_logged_them(
    db: Path, conn: sqlite3.Connection
) -> None:
    """With metric_names only those columns appear, and only calls that logged one of them."""
    await write(
        db,
        Metric("r", TS + 0, {"loss": 1.0, "acc": 0.1}, step=0),
        Metric("r", TS + 1, {"loss": 2.0}, step=1),
        Metric("r", TS + 2, {"acc": 0.3, "lr": 0.01}, step=2),
    )

    frame = queries.run_metrics_frame(conn, "r", ["lr", "acc"])

    assert list(frame.columns) == ["timestamp", "step", "lr", "acc"]
    assert frame["step"].tolist() == [0, 2]
    np.testing.assert_array_equal(frame["lr"], [np.nan, 0.01])
    assert frame["acc"].tolist() == [0.1, 0.3]


@pytest.mark.parametrize(
    ("names", "columns", "rows"),
    [
        pytest.param(["nope"], ["nope"], 0, id="unknown-name"),
        pytest.param(["loss", "nope"], ["loss", "nope"], 1, id="known-and-unknown"),
        pytest.param([], [], 0, id="empty"),
        pytest.param(("loss", "loss"), ["loss"], 1, id="duplicates"),
    ],
)
async def test_metric_names_edge_cases(
    db: Path, conn: sqlite3.Connection, names: Any, columns: list[str], rows: int
) -> None:
    """Unknown names give all-NaN columns, no names give no rows, duplicates collapse."""
    await write(db, Metric("r", TS, {"loss": 1.0}))

    frame = queries.run_metrics_frame(conn, "r", names)

    assert list(frame.columns) == ["timestamp", "step", *columns]
    assert len(frame) == rows
    if "nope" in columns:
        assert frame["nope"].isna().all() and frame["nope"].dtype == np.float64


@pytest.mark.parametrize(
    "bad",
    [pytest.param("loss", id="a-string"), pytest.param([1], id="not-strings"), pytest.param(3, id="not-iterable")],
)
async def test_metric_names_must_be_strings(db: Path, conn: sqlite3.Connection, bad: Any) -> None:
    """A bare string or non-string names are a TypeError, not a silent mismatch."""
    await write(db, Metric("r", TS, {"loss": 1.0}))

    with pytest.raises(TypeError, match="metric_names"):
        queries.run_metrics_frame(conn, "r", bad)


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [
        pytest.param(TS + 1, TS + 3, [1, 2, 3], id="epoch-floats-inclusive"),
        pytest.param(int(TS) + 2, None, [2, 3, 4], id="int-start-only"),
        pytest.param(None, datetime(2023, 11, 14, 22, 13, 21), [0, 1], id="naive-datetime-is-utc"),
        pytest.param(
            datetime(2023, 11, 15, 0, 13, 22, tzinfo=timezone(timedelta(hours=2))), None, [2, 3, 4], id="aware-datetime"
        ),
        pytest.param(pd.Timestamp(TS + 4, unit="s"), None, [4], id="pandas-timestamp"),
        pytest.param(TS + 3, TS + 1, [], id="empty-range"),
    ],
)
async def test_time_filters(db: Path, conn: sqlite3.Connection, start: Any, end: Any, steps: list[int]) -> None:
    """start_time and end_time bound the calls' timestamps inclusively; naive datetimes are UTC."""
    assert datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp() == TS
    await write(db, *(Metric("r", TS + i, {"x": float(i)}, step=i) for i in range(5)))

    frame = queries.run_metrics_frame(conn, "r", start_time=start, end_time=end)

    assert frame["step"].tolist() == steps
    if steps:
        assert frame["x"].tolist() == [float(step) for step in steps]
    else:  # columns come from the calls returned
        assert list(frame.columns) == ["timestamp", "step"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param("2023-01-01", TypeError, id="string"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param(math.nan, ValueError, id="nan"),
    ],
)
async def test_bad_time_filters_are_rejected(
    db: Path, conn: sqlite3.Connection, value: Any, error: type[Exception]
) -> None:
    """A time filter that is not a datetime or a finite number names the argument."""
    await write(db, Metric("r", TS, {"x": 1.0}))

    with pytest.raises(error, match="start_time"):
        queries.run_metrics_frame(conn, "r", start_time=value)


async def test_metric_named_like_a_fixed_column_is_renamed(db: Path, conn: sqlite3.Connection) -> None:
    """A metric called ``step`` gets the column ``metric:step`` and the call's own step stays."""
    await write(db, Metric("r", TS, {"step": 99.0, "loss": 1.0}, step=3))

    frame = queries.run_metrics_frame(conn, "r")

    assert list(frame.columns) == ["timestamp", "step", "metric:step", "loss"]
    assert frame.loc[0, "step"] == 3 and frame.loc[0, "metric:step"] == 99.0


async def test_frame_of_run_without_metrics_is_empty_with_fixed_columns(db: Path, conn: sqlite3.Connection) -> None:
    """A run with no metric calls gives an empty frame that still has typed timestamp and step columns."""
    await write(db, RunLifecycle("r", TS, "started"))

    frame = queries.run_metrics_frame(conn, "r")

    assert frame.empty
    assert list(frame.columns) == ["timestamp", "step"]
    assert list(frame.dtypes.astype(str)) == ["datetime64[ns, UTC]", "Int64"]


async def test_frame_matches_a_per_row_reference_on_many_mixed_calls(db: Path, conn: sqlite3.Connection) -> None:
    """A few hundred calls over several metric sets and special values equal a slow per-call reference."""
    rng = np.random.default_rng(7)
    pool = ["a", "b", "c", "d/e"]
    specials = [math.nan, math.inf, -math.inf]
    events = []
    for i in range(300):
        names = [name for name in pool if rng.random() < 0.6] or ["a"]
        values = {name: (specials[i % 3] if rng.random() < 0.1 else float(rng.normal())) for name in names}
        events.append(Metric("r", TS + i / 10, values, step=i if i % 7 else None))
    await write(db, *events)

    frame = queries.run_metrics_frame(conn, "r")

    assert len(frame) == len(events)
    for row, event in zip(frame.itertuples(index=False), events, strict=True):
        record = dict(zip(frame.columns, row, strict=True))
        assert (record["step"] is pd.NA) == (event.step is None)
        for name in pool:
            if name in event.values:
                assert bits(record[name]) == bits(event.values[name]) or math.isnan(event.values[name])
            else:
                assert math.isnan(record[name])


async def test_step_frame_matches_a_per_step_reference_on_many_mixed_calls(db: Path, conn: sqlite3.Connection) -> None:
    """Hundreds of calls with repeated, unordered and missing steps merge exactly as a slow per-step reference does."""
    rng = np.random.default_rng(11)
    pool = ["a", "b", "c"]
    events = []
    for i in range(400):
        names = [name for name in pool if rng.random() < 0.5] or ["a"]
        values = {name: (math.nan if rng.random() < 0.1 else float(rng.normal())) for name in names}
        step = None if i % 9 == 0 else int(rng.integers(0, 60))
        events.append(Metric("r", TS + i / 10, values, step=step))
    await write(db, *events)

    frame = queries.run_metrics_frame(conn, "r", align="step")

    reference: dict[int, dict[str, Any]] = {}
    current = next(event.step for event in events if event.step is not None)  # calls before any step join the first
    for event in events:  # storage order: a call without a step joins the step in progress
        current = current if event.step is None else event.step
        row = reference.setdefault(current, {})
        row.update(event.values)
        row["timestamp"] = event.timestamp
    assert frame["step"].tolist() == sorted(reference)
    for record in frame.to_dict("records"):
        expected = reference[record["step"]]
        assert record["timestamp"].timestamp() == pytest.approx(expected["timestamp"])
        for name in pool:
            if name not in expected:
                assert math.isnan(record[name])
            else:
                assert bits(record[name]) == bits(expected[name]) or math.isnan(expected[name])


async def test_step_frame_of_calls_without_steps_is_one_row_per_call(db: Path, conn: sqlite3.Connection) -> None:
    """A run that never logged a step comes back one row per call, steps NA, whatever the alignment."""
    await write(db, Metric("r", TS, {"a": 1.0}), Metric("r", TS + 1, {"a": 2.0}))

    frame = queries.run_metrics_frame(conn, "r", align="step")

    assert frame["a"].tolist() == [1.0, 2.0]
    assert frame["step"].isna().all()


# -- run_summary ----------------------------------------------------------------------


async def test_summary_has_run_fields_and_metric_statistics(db: Path, conn: sqlite3.Connection) -> None:
    """The summary carries the run's fields, event counts, and per-metric stats with NaN ignored."""
    await write(
        db,
        RunLifecycle("r", TS, "started", config={"lr": 0.1}, metadata={"host": "h"}),
        Metric("r", TS + 1, {"loss": 4.0, "nan_only": math.nan, "acc": 0.5}, step=1),
        Metric("r", TS + 2, {"loss": math.nan, "nan_only": math.nan, "acc": math.nan}, step=2),
        Metric("r", TS + 3, {"loss": 2.0, "nan_only": math.nan, "acc": math.inf}, step=3),
        LogEvent("r", TS + 4, "episode_end", data={"reward": 1.0}),
        LogEvent("r", TS + 5, "episode_end", data={"reward": 2.0}),
        Heartbeat("r", TS + 6, {"total_steps": 30, "total_episodes": 2}),
        StatePatch("r", TS + 7, {"level": 3}),
        RunLifecycle("r", TS + 10, "completed", final_reward=7.5),
    )

    summary = queries.run_summary(conn, "r")

    assert summary["run_id"] == "r" and summary["status"] == "completed" and summary["kind"] == "training"
    assert (summary["start_time"], summary["end_time"], summary["duration_seconds"]) == (TS, TS + 10, 10.0)
    assert summary["config"] == {"lr": 0.1} and summary["metadata"] == {"host": "h"}
    assert (summary["final_reward"], summary["total_steps"], summary["total_episodes"]) == (7.5, 30, 2)
    assert summary["last_heartbeat"] == TS + 6 and summary["state"] == {"level": 3}
    assert summary["event_counts"] == {"episode_end": 2, "run_completed": 1, "run_started": 1}
    loss = summary["metrics"]["loss"]
    assert {key: loss[key] for key in ("last", "min", "max", "mean", "count", "nan_count", "last_step")} == {
        "last": 2.0,
        "min": 2.0,
        "max": 4.0,
        "mean": 3.0,
        "count": 3,
        "nan_count": 1,
        "last_step": 3,
    }
    assert loss["last_timestamp"] == TS + 3
    nan_only = summary["metrics"]["nan_only"]
    assert math.isnan(nan_only["last"])
    assert (nan_only["min"], nan_only["max"], nan_only["mean"]) == (None, None, None)
    assert (nan_only["count"], nan_only["nan_count"]) == (3, 3)
    assert summary["metrics"]["acc"]["max"] == math.inf and summary["metrics"]["acc"]["last"] == math.inf


async def test_summary_last_value_follows_call_order_across_metric_sets(db: Path, conn: sqlite3.Connection) -> None:
    """``last`` is the value of the latest call even when calls with different metric sets interleave in one batch."""
    await write(
        db,
        Metric("r", TS + 1, {"loss": 1.0, "acc": 0.5}, step=1),
        Metric("r", TS + 2, {"loss": 2.0}, step=2),
        Metric("r", TS + 3, {"loss": 3.0, "acc": 0.7}, step=3),
    )

    loss = queries.run_summary(conn, "r")["metrics"]["loss"]

    assert (loss["last"], loss["last_step"], loss["last_timestamp"]) == (3.0, 3, TS + 3)


async def test_summary_of_an_active_run_has_defaults(db: Path, conn: sqlite3.Connection) -> None:
    """A run known only from a metric has no end time, an empty config and state, and lasts to its last update."""
    await write(db, Metric("r", TS, {"x": 1.0}), Metric("r", TS + 4, {"x": 2.0}))

    summary = queries.run_summary(conn, "r")

    assert summary["status"] == "running" and summary["end_time"] is None
    assert summary["config"] == {} and summary["state"] == {} and summary["metadata"] is None
    assert summary["duration_seconds"] == 4.0
    assert summary["event_counts"] == {}


# -- events, state --------------------------------------------------------------------


async def write_events(db: Path) -> None:
    await write(
        db,
        RunLifecycle("r", TS, "started"),
        LogEvent("r", TS + 1, "episode_end", data={"reward": 1.0, "nested": {"k": [1, 2]}}),
        LogEvent("r", TS + 2, "checkpoint", level="debug"),
        ExceptionEvent("r", TS + 3, "ValueError", "boom", severity="critical"),
        LogEvent("r", TS + 4, "episode_end", level="warning", data={"reward": 2.0}),
        LogEvent("other", TS + 1, "episode_end"),
    )


async def test_events_come_oldest_first_with_parsed_data(db: Path, conn: sqlite3.Connection) -> None:
    """Every event of the run, oldest first, with type, parsed data, time, level and kind."""
    await write_events(db)

    events = queries.run_events(conn, "r")

    assert [e["event_type"] for e in events] == ["run_started", "episode_end", "checkpoint", "error", "episode_end"]
    assert events[1]["event_data"] == {"reward": 1.0, "nested": {"k": [1, 2]}}
    assert [e["timestamp"] for e in events] == [TS + i for i in range(5)]
    assert [e["kind"] for e in events] == ["lifecycle", "log", "log", "exception", "log"]
    assert events[3]["level"] == "critical" and events[3]["event_data"]["message"] == "boom"
    assert set(events[0]) == {"id", "event_type", "event_data", "timestamp", "level", "kind"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({"event_type": "episode_end"}, [TS + 1, TS + 4], id="type"),
        pytest.param({"start_time": TS + 2, "end_time": TS + 3}, [TS + 2, TS + 3], id="time-range"),
        pytest.param({"event_type": "episode_end", "start_time": TS + 2}, [TS + 4], id="type-and-time"),
        pytest.param({"kind": "log"}, [TS + 1, TS + 2, TS + 4], id="kind"),
        pytest.param({"level": "debug"}, [TS + 2], id="level"),
        pytest.param({"limit": 2}, [TS, TS + 1], id="limit"),
        pytest.param({"event_type": "nothing"}, [], id="no-match"),
    ],
)
async def test_event_filters(db: Path, conn: sqlite3.Connection, kwargs: dict[str, Any], expected: list[float]) -> None:
    """Filters by type, time, kind and level combine, and limit keeps the oldest."""
    await write_events(db)

    assert [e["timestamp"] for e in queries.run_events(conn, "r", **kwargs)] == expected


async def test_events_after_id_page_in_storage_order(db: Path, conn: sqlite3.Connection) -> None:
    """Paging with after_id returns every later-stored event once, even one with an older timestamp."""
    await write_events(db)
    await write(db, LogEvent("r", TS - 100, "late"))

    first = queries.run_events(conn, "r", limit=3, after_id=0)
    rest = queries.run_events(conn, "r", after_id=first[-1]["id"])

    assert [e["event_type"] for e in first] == ["run_started", "episode_end", "checkpoint"]
    assert [e["event_type"] for e in rest] == ["error", "episode_end", "late"]
    assert queries.run_events(conn, "r")[0]["event_type"] == "late"  # by time without after_id


async def test_state_and_history(db: Path, conn: sqlite3.Connection) -> None:
    """The current state merges every patch; the history lists patches oldest first, limited to the latest."""
    await write(
        db,
        StatePatch("r", TS + 1, {"a": 1, "nested": {"x": 1}}),
        StatePatch("r", TS + 2, {"nested": {"y": 2}}),
        StatePatch("r", TS + 3, {"a": None, "b": [1, 2]}),
    )

    assert queries.run_state(conn, "r") == {"nested": {"x": 1, "y": 2}, "b": [1, 2]}
    history = queries.state_history(conn, "r")
    assert [(h["timestamp"], h["patch"]) for h in history] == [
        (TS + 1, {"a": 1, "nested": {"x": 1}}),
        (TS + 2, {"nested": {"y": 2}}),
        (TS + 3, {"a": None, "b": [1, 2]}),
    ]
    assert [h["timestamp"] for h in queries.state_history(conn, "r", limit=2)] == [TS + 2, TS + 3]


# -- list_runs and argument errors ------------------------------------------------------


async def test_list_runs_newest_first_with_filters(db: Path, conn: sqlite3.Connection) -> None:
    """Runs come newest first and filter by status and kind; limit keeps the newest."""
    await write(
        db,
        RunLifecycle("old", TS, "started"),
        RunLifecycle("mid", TS + 10, "started", run_kind="session"),
        RunLifecycle("new", TS + 20, "started"),
        RunLifecycle("old", TS + 30, "completed", final_reward=1.0),
    )

    runs = queries.list_runs(conn)

    assert [r["run_id"] for r in runs] == ["new", "mid", "old"]
    assert set(runs[0]) == {
        "run_id",
        "kind",
        "status",
        "start_time",
        "end_time",
        "updated_at",
        "last_heartbeat",
        "total_steps",
        "total_episodes",
        "final_reward",
    }
    assert runs[2]["end_time"] == TS + 30 and runs[2]["final_reward"] == 1.0 and runs[2]["start_time"] == TS
    assert [r["run_id"] for r in queries.list_runs(conn, status="completed")] == ["old"]
    assert [r["run_id"] for r in queries.list_runs(conn, kind="session")] == ["mid"]
    assert [r["run_id"] for r in queries.list_runs(conn, status="running", kind="training")] == ["new"]
    assert [r["run_id"] for r in queries.list_runs(conn, limit=2)] == ["new", "mid"]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: queries.run_summary(c, "nope"), id="summary"),
        pytest.param(lambda c: queries.run_metrics_frame(c, "nope"), id="metrics"),
        pytest.param(lambda c: queries.run_events(c, "nope"), id="events"),
        pytest.param(lambda c: queries.run_state(c, "nope"), id="state"),
        pytest.param(lambda c: queries.state_history(c, "nope"), id="history"),
    ],
)
async def test_unknown_run_raises(db: Path, conn: sqlite3.Connection, call: Any) -> None:
    """Every per-run query raises UnknownRunError (a ValueError) naming the id."""
    await write(db, Metric("r", TS, {"x": 1.0}))

    with pytest.raises(UnknownRunError, match="'nope'") as caught:
        call(conn)
    assert caught.value.run_id == "nope" and isinstance(caught.value, ValueError)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "3"])
def test_bad_limit_raises_value_error(conn: sqlite3.Connection, limit: Any) -> None:
    """A limit that is not a positive int is a ValueError naming limit."""
    with pytest.raises(ValueError, match="limit"):
        queries.list_runs(conn, limit=limit)


def test_bad_status_and_run_id(conn: sqlite3.Connection) -> None:
    """An unknown status is a ValueError; a run id that is not a non-empty string is a TypeError."""
    with pytest.raises(ValueError, match="status must be one of"):
        queries.list_runs(conn, status="done")
    with pytest.raises(TypeError, match="run_id"):
        queries.run_summary(conn, "")
    with pytest.raises(TypeError, match="run_id"):
        queries.run_events(conn, 3)  # type: ignore[arg-type]


# -- mark_crashed_runs ----------------------------------------------------------------


def live_owner() -> str:
    return f"{HOST}:{os.getpid()}:{psutil.Process().create_time():.3f}"


def set_owner(conn: sqlite3.Connection, run_id: str, owner: str | None) -> None:
    with conn:
        conn.execute("UPDATE runs SET owner = ? WHERE run_id = ?", (owner, run_id))


def status_of(conn: sqlite3.Connection, run_id: str) -> str:
    return str(conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])


async def test_mark_crashed_runs_only_marks_dead_owners_on_this_host(
    db: Path, conn: sqlite3.Connection, dead_owner: str
) -> None:
    """Active runs of a dead process here become crashed; live, foreign, finished or unknown owners are untouched."""
    await write(
        db,
        RunLifecycle("dead", TS, "started"),
        Heartbeat("dead", TS + 5),
        Metric("dead", TS + 7, {"x": 1.0}),
        RunLifecycle("dead-paused", TS, "started"),
        RunLifecycle("dead-paused", TS + 1, "paused"),
        RunLifecycle("live", TS, "started"),
        RunLifecycle("foreign", TS, "started"),
        RunLifecycle("finished", TS, "started"),
        RunLifecycle("finished", TS + 2, "completed"),
        RunLifecycle("garbled", TS, "started"),
    )
    for run_id in ("dead", "dead-paused", "finished"):
        set_owner(conn, run_id, dead_owner)
    set_owner(conn, "foreign", "some-other-host:1:1.000")
    set_owner(conn, "garbled", "not an owner")
    assert queries.run_summary(conn, "live")["owner"] == live_owner()  # the sink wrote this process

    crashed = queries.mark_crashed_runs(conn)

    assert crashed == ["dead", "dead-paused"]
    statuses = {run["run_id"]: run["status"] for run in queries.list_runs(conn)}
    assert statuses == {
        "dead": "crashed",
        "dead-paused": "crashed",
        "live": "running",
        "foreign": "running",
        "finished": "completed",
        "garbled": "running",
    }
    summary = queries.run_summary(conn, "dead")
    assert summary["end_time"] == TS + 7  # the last sign of life, later than the heartbeat
    (event,) = queries.run_events(conn, "dead", "run_crashed")
    assert event["kind"] == "lifecycle" and event["level"] == "error" and event["timestamp"] == TS + 7
    assert event["event_data"]["owner"] == dead_owner and "is gone" in event["event_data"]["reason"]
    assert event["event_data"]["previous_status"] == "running"
    assert queries.mark_crashed_runs(conn) == []  # idempotent
    assert not conn.in_transaction


async def test_mark_crashed_runs_detects_a_reused_pid(db: Path, conn: sqlite3.Connection) -> None:
    """A live pid whose process started at another time is not the owner: the run is crashed."""
    await write(db, RunLifecycle("r", TS, "started"))
    created = psutil.Process().create_time()
    set_owner(conn, "r", f"{HOST}:{os.getpid()}:{created - 3600:.3f}")

    assert queries.mark_crashed_runs(conn) == ["r"]
    assert status_of(conn, "r") == "crashed"


async def test_mark_crashed_runs_honours_host_argument(db: Path, conn: sqlite3.Connection, dead_owner: str) -> None:
    """Only runs of the given host name are examined."""
    await write(db, RunLifecycle("r", TS, "started"))
    set_owner(conn, "r", dead_owner)

    assert queries.mark_crashed_runs(conn, host="elsewhere") == []
    assert status_of(conn, "r") == "running"
    assert queries.mark_crashed_runs(conn, host=HOST) == ["r"]


def test_mark_crashed_runs_refuses_an_open_transaction(conn: sqlite3.Connection) -> None:
    """It must own its write transaction, so a connection inside one is refused."""
    conn.execute("BEGIN")
    with pytest.raises(StoreError, match="transaction"):
        queries.mark_crashed_runs(conn)
    conn.rollback()
