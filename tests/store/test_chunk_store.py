"""Tests for runwatch.store.chunk_store: chunks in a real SQLite file, written, read back, survived."""

from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from runwatch.events import Metric
from runwatch.exceptions import StoreError, UnknownRunError
from runwatch.store.chunk_reads import read_series, read_summaries
from runwatch.store.chunk_schema import chunk_tables_exist
from runwatch.store.chunk_store import SQLiteSeriesStore
from runwatch.store.schema import SCHEMA_VERSION, current_version, migrate, prepare_database
from runwatch.store.series import SeriesBuilder

TS = 1_700_000_000.0


def open_store(path: Path) -> sqlite3.Connection:
    prepare_database(str(path))
    connection = sqlite3.connect(path, isolation_level=None, timeout=5)
    connection.execute("PRAGMA synchronous = NORMAL")
    return connection


def add_run(connection: sqlite3.Connection, run_id: str, start: float = TS) -> None:
    connection.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES (?, ?, ?)", (run_id, start, start))


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_store(tmp_path / "store.db")
    add_run(connection, "run-1")
    add_run(connection, "run-2")
    yield connection
    connection.close()


def loss(i: int) -> float:
    return 2.5 * math.exp(-i / 500) + math.sin(i * 12.9898) * 0.01


def training_calls(count: int, start: int = 0, run_id: str = "run-1") -> list[Metric]:
    calls = []
    for i in range(start, start + count):
        values: dict[str, float | int] = {"loss": loss(i), "samples": i * 32}
        if i % 10 == 0:
            values["eval/accuracy"] = (i % 97) / 97
        calls.append(Metric(run_id, TS + i * 0.01, values, i))
    return calls


def test_chunk_tables_are_the_schemas_newest_step(tmp_path: Path) -> None:
    """A new store has the chunk tables; stepping down a version removes them, stepping up brings them back."""
    connection = open_store(tmp_path / "store.db")
    assert current_version(connection) == SCHEMA_VERSION == 10
    assert chunk_tables_exist(connection)
    assert migrate(connection, 9) == [9]
    assert not chunk_tables_exist(connection)
    assert migrate(connection) == [10]
    assert chunk_tables_exist(connection)


def test_written_series_read_back_exactly(connection: sqlite3.Connection) -> None:
    """Points written in several commits read back in order, values bit for bit, integers as int64."""
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=100, block_points=16))
    for start in range(0, 1000, 250):
        store.write_batch(training_calls(250, start))
    series = store.read_series("run-1")
    assert list(series) == ["loss", "samples", "eval/accuracy"]  # in order of first appearance
    assert series["loss"].points.values.tolist() == [loss(i) for i in range(1000)]
    assert series["samples"].points.values.dtype == np.int64
    assert series["samples"].points.values.tolist() == [i * 32 for i in range(1000)]
    accuracy = series["eval/accuracy"].points
    assert accuracy.seq.tolist() == list(range(0, 1000, 10)) and accuracy.step.tolist() == list(range(0, 1000, 10))
    assert series["loss"].points.time_us.tolist() == [round((TS + i * 0.01) * 1e6) for i in range(1000)]


@pytest.mark.parametrize(
    ("by", "start", "end", "expected"),
    [
        pytest.param("seq", 95, 310, range(95, 311), id="seq"),
        pytest.param("step", None, 42, range(43), id="step end only"),
        pytest.param("time", TS + 5.0, TS + 5.05, range(500, 506), id="time"),
    ],
)
def test_range_reads_cut_at_the_points(
    connection: sqlite3.Connection, by: str, start: float | None, end: float | None, expected: range
) -> None:
    """A range read returns exactly the points inside the range, from the chunks that overlap it."""
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=64))
    store.write_batch(training_calls(1000))
    points = store.read_series("run-1", ["loss"], start=start, end=end, by=by)["loss"].points  # type: ignore[arg-type]
    assert points.seq.tolist() == list(expected)
    assert points.values.tolist() == [loss(i) for i in expected]


def test_summaries_come_from_chunk_rows(connection: sqlite3.Connection) -> None:
    """Per-metric figures from chunk summaries equal figures computed from the points."""
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=128))
    calls = training_calls(700)
    calls.append(Metric("run-1", TS + 8, {"loss": math.nan}, 700))
    store.write_batch(calls)
    summary = read_summaries(connection, "run-1", ["loss", "samples"])
    values = np.array([loss(i) for i in range(700)])
    assert summary["loss"].count == 701 and summary["loss"].nan_count == 1
    assert summary["loss"].min == values.min() and summary["loss"].max == values.max()
    assert summary["loss"].sum == pytest.approx(values.sum(), rel=1e-12)
    assert math.isnan(summary["loss"].last)  # type: ignore[arg-type]
    assert summary["samples"].sum == sum(i * 32 for i in range(700)) and type(summary["samples"].sum) is int
    assert summary["loss"].chunks == 6 and summary["loss"].step_last == 700


def test_runs_do_not_mix(connection: sqlite3.Connection) -> None:
    """Two runs' calls in one batch land in their own series, numbered store-wide in batch order."""
    store = SQLiteSeriesStore(connection)
    mixed = [call for pair in zip(training_calls(50), training_calls(50, run_id="run-2"), strict=True) for call in pair]
    store.write_batch(mixed)
    for offset, run_id in enumerate(("run-1", "run-2")):
        points = store.read_series(run_id, ["loss"])["loss"].points
        assert points.seq.tolist() == list(range(offset, 100, 2))


def test_columns_from_a_batch_path_are_stored_like_calls(connection: sqlite3.Connection) -> None:
    """A producer handing over columns gets the same series as one logging calls, numbered after them."""
    store = SQLiteSeriesStore(connection)
    store.write_batch(training_calls(10))
    times = np.round((TS + 1 + np.arange(5) * 0.01) * 1e6).astype(np.int64)
    store.add_columns("run-1", ["loss", "samples"], [np.linspace(0, 1, 5), np.arange(5, dtype=np.int64)], time_us=times)
    store.commit()
    points = store.read_series("run-1", ["loss", "samples"])
    assert points["loss"].points.seq.tolist() == list(range(15))
    assert points["loss"].points.values.tolist()[10:] == np.linspace(0, 1, 5).tolist()
    assert points["samples"].points.values.dtype == np.int64
    assert points["loss"].points.step_valid is not None and not points["loss"].points.step_valid[10:].any()
    with pytest.raises(ValueError, match="float64 or int64"):
        store.add_columns("run-1", ["x"], [np.zeros(5, dtype=np.float32)], time_us=times)
    with pytest.raises(ValueError, match="pair up"):
        store.add_columns("run-1", ["x"], [np.zeros(4)], time_us=times)


def test_series_mixing_integers_and_floats_read_back_exactly(connection: sqlite3.Connection) -> None:
    """Float-exact integers beside floats read as float64; integers beyond 2**53 keep every digit."""
    store = SQLiteSeriesStore(connection)
    small = [0.5, 3, 1.25, 2**53]
    big = [0.5, 2**53 + 1, -(2**63), 1.25]
    store.write_batch(
        [Metric("run-1", TS + i, {"small": a, "big": b}, i) for i, (a, b) in enumerate(zip(small, big, strict=True))]
    )
    series = store.read_series("run-1", ["small", "big"])
    assert series["small"].points.values.dtype == np.float64
    assert series["small"].points.values.tolist() == [0.5, 3.0, 1.25, float(2**53)]
    assert series["big"].points.values.dtype == object
    assert series["big"].points.values.tolist() == big
    assert [type(v) for v in series["big"].points.values.tolist()] == [float, int, int, float]


def test_reads_refuse_bad_arguments(connection: sqlite3.Connection) -> None:
    """Unknown runs and bad arguments raise errors that name the problem."""
    with pytest.raises(UnknownRunError):
        read_series(connection, "nope")
    with pytest.raises(TypeError, match="names"):
        read_series(connection, "run-1", "loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="by must be"):
        read_series(connection, "run-1", by="row")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        read_series(connection, "run-1", start=math.nan, by="time")
    with pytest.raises(ValueError, match="integer"):
        read_series(connection, "run-1", start=1.5, by="step")
    with pytest.raises(ValueError, match="columns"):
        read_series(connection, "run-1", columns=("value", "colour"))


def test_a_failed_commit_keeps_every_point_for_the_retry(connection: sqlite3.Connection, tmp_path: Path) -> None:
    """While another writer holds the lock the commit fails; the retry stores everything once."""
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=100))
    store.write_batch(training_calls(150))
    store.add_calls(training_calls(100, 150))  # numbered now (the store's counter), written at the commit
    blocker = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    connection.execute("PRAGMA busy_timeout = 10")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        store.commit()
    blocker.execute("ROLLBACK")
    blocker.close()
    store.commit()
    points = store.read_series("run-1", ["loss"])["loss"].points
    assert points.seq.tolist() == list(range(250))


def test_a_corrupt_chunk_is_a_store_error(connection: sqlite3.Connection) -> None:
    """A damaged column blob raises StoreError, not wrong numbers."""
    store = SQLiteSeriesStore(connection)
    store.write_batch(training_calls(100))
    connection.execute("UPDATE metric_chunks SET vals = substr(vals, 1, 10)")
    with pytest.raises(StoreError, match="cannot be decoded"):
        store.read_series("run-1", ["loss"])


def test_store_needs_autocommit_and_chunk_tables(tmp_path: Path) -> None:
    """The store refuses a connection in implicit-transaction mode or a database without chunk tables."""
    prepare_database(str(tmp_path / "plain.db"))
    with pytest.raises(ValueError, match="autocommit"):
        SQLiteSeriesStore(sqlite3.connect(tmp_path / "plain.db"))
    older = sqlite3.connect(tmp_path / "plain.db", isolation_level=None)
    migrate(older, 8)
    with pytest.raises(StoreError, match="chunk tables"):
        SQLiteSeriesStore(older)


WRITER = textwrap.dedent(
    """
    import math, sqlite3, sys
    from runwatch.events import Metric
    from runwatch.store.chunk_store import SQLiteSeriesStore
    from runwatch.store.series import SeriesBuilder

    connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
    connection.execute("PRAGMA synchronous = NORMAL")
    store = SQLiteSeriesStore(connection, SeriesBuilder(chunk_points=1000, max_open_segments=4))
    start = int(sys.argv[2])
    for batch in range(10_000):
        calls = [
            Metric("run-1", 1.7e9 + i, {"loss": math.sin(i) / (i + 1), "n": i}, i)
            for i in range(start + batch * 37, start + (batch + 1) * 37)
        ]
        store.write_batch(calls)
        print(start + (batch + 1) * 37, flush=True)  # acknowledged: committed up to here
    """
)


def run_writer_until_killed(path: Path, start: int, acknowledgements: int) -> int:
    """Start a writer process, read ``acknowledgements`` commit acknowledgements, kill -9 it."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(start)], stdout=subprocess.PIPE, text=True)
    acknowledged = start
    try:
        assert process.stdout is not None
        for _ in range(acknowledgements):
            line = process.stdout.readline()
            assert line, "the writer exited early"
            acknowledged = int(line)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    return acknowledged


@pytest.mark.timeout(120)
def test_acknowledged_points_survive_kill_9(tmp_path: Path) -> None:
    """Every point a commit acknowledged is readable after kill -9; a new writer continues after it."""
    path = tmp_path / "store.db"
    connection = open_store(path)
    add_run(connection, "run-1")
    connection.close()
    first = run_writer_until_killed(path, 0, 60)
    connection = sqlite3.connect(path, isolation_level=None)
    points = read_series(connection, "run-1", ["loss", "n"])
    stored = len(points["n"].points.seq)
    assert stored >= first  # a commit may have landed after its acknowledgement was read
    assert points["n"].points.values.tolist() == list(range(stored))
    assert points["n"].points.seq.tolist() == list(range(stored))
    expected = [math.sin(i) / (i + 1) for i in range(stored)]
    assert points["loss"].points.values.tolist() == expected
    # The open chunk's segments of the dead writer stay readable; a new writer numbers calls after them.
    second = run_writer_until_killed(path, stored, 5)
    points = read_series(connection, "run-1", ["n"])["n"].points
    assert points.values.tolist() == list(range(len(points.values)))
    assert len(points.values) >= second
    connection.close()
