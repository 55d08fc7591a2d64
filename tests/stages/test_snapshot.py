"""Tests for runwatch.stages.snapshot: the pure view without a loop, then the stage in a real pipeline."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest

from runwatch.events import (
    AlertEvent,
    Heartbeat,
    IngestReceipt,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
)
from runwatch.exceptions import ConfigError
from runwatch.pipeline import ComponentContext, Pipeline, load_pipeline_config
from runwatch.stages.snapshot import (
    SNAPSHOTS,
    RunView,
    SnapshotBook,
    SnapshotStage,
    snapshot_file_name,
)
from runwatch.store.export import export_run
from runwatch.store.schema import migrate, prepare_database

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
TIMEOUT = 10  # guards every wait; nothing here legitimately takes this long


def training(run_id: str = "r", ts: float = T0) -> list[Any]:
    """A run's first events: started, two metric calls, two state patches, a log event, a heartbeat."""
    return [
        RunLifecycle(run_id, ts, RunTransition.STARTED, config={"lr": 0.1}),
        Metric(run_id, ts + 1, {"loss": 0.5, "acc": 0.9}, step=1),
        Metric(run_id, ts + 2, {"loss": 0.25}, step=2),
        StatePatch(run_id, ts + 2, {"game": {"level": 1, "hp": 3}}),
        StatePatch(run_id, ts + 3, {"game": {"hp": 2}}),
        LogEvent(run_id, ts + 3, "episode_end", data={"episode": 1}),
        Heartbeat(run_id, ts + 4, {"total_steps": 2, "total_episodes": 1}),
    ]


# -- the pure core -----------------------------------------------------------------------------------


def test_view_holds_latest_metrics_merged_state_counters_and_the_event_log() -> None:
    """A view keeps each metric's latest value with step and time, the merged state, counters and the log."""
    book = SnapshotBook(max_events=10)
    book.observe([*training(), IngestReceipt("r", T0, "batch-1", 7)])

    view = book.view("r")
    assert view is not None
    data = view.to_dict()
    assert data["metrics"] == {
        "loss": {"value": 0.25, "step": 2, "timestamp": T0 + 2},
        "acc": {"value": 0.9, "step": 1, "timestamp": T0 + 1},
    }
    assert data["state"] == {"game": {"level": 1, "hp": 2}}
    assert data["counters"] == {
        "events_total": 7,
        "events_by_kind": {"lifecycle": 1, "metric": 2, "state": 2, "log": 1, "heartbeat": 1},
        "events_by_type": {"episode_end": 1},
        "total_steps": 2,
        "total_episodes": 1,
    }
    assert [event["kind"] for event in data["events"]] == ["lifecycle", "log"]
    assert (data["status"], data["run_kind"], data["updated_at"]) == ("running", "training", T0 + 4)


def test_view_keeps_only_the_last_max_events_and_follows_the_run_status() -> None:
    """The event log is bounded; lifecycle events and liveness verdicts set the status."""
    book = SnapshotBook(max_events=2)
    book.observe([RunLifecycle("r", T0, "started"), LogEvent("r", T0 + 1, "application_appears_hung", "warning")])
    view = book.view("r")
    assert view is not None and view.status == "hung"

    book.observe([AlertEvent("r", T0 + 2, "nan_loss", "firing"), RunLifecycle("r", T0 + 3, "completed")])

    assert [event["kind"] for event in view.to_dict()["events"]] == ["alert", "lifecycle"]
    assert view.status == "completed" and view.ended


def test_snapshot_round_trip_keeps_the_view_including_non_finite_values() -> None:
    """A view rebuilt from its strict-JSON snapshot equals the original, NaN and ±Inf included."""
    book = SnapshotBook(max_events=10)
    book.observe([*training(), Metric("r", T0 + 5, {"nan": math.nan, "up": math.inf, "down": -math.inf})])
    view = book.view("r")
    assert view is not None
    text = orjson.dumps(view.to_dict())

    restored = RunView.from_dict(orjson.loads(text), max_events=10)

    assert orjson.dumps(restored.to_dict()) == text
    assert math.isnan(restored.metrics["nan"][0]) and restored.metrics["up"][0] == math.inf
    assert not restored.changed, "a restored view counts as saved"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(lambda d: d.update(format="other/1"), "snapshot.format", id="format"),
        pytest.param(lambda d: d.update(run_id=3), "snapshot.run_id", id="run-id"),
        pytest.param(lambda d: d["metrics"]["loss"].update(value="high"), "snapshot.metrics['loss'].value", id="value"),
        pytest.param(lambda d: d["metrics"]["loss"].update(step=1.5), "snapshot.metrics['loss'].step", id="step"),
        pytest.param(lambda d: d.update(state=[]), "snapshot.state", id="state"),
        pytest.param(lambda d: d["counters"].update(events_by_kind={"x": "1"}), "events_by_kind", id="counters"),
        pytest.param(lambda d: d.update(events=[1]), "snapshot.events", id="events"),
    ],
)
def test_a_malformed_snapshot_is_refused_naming_the_key(mutate: Any, message: str) -> None:
    """from_dict raises ValueError naming the first key that is not what to_dict writes."""
    book = SnapshotBook(max_events=10)
    book.observe(training())
    view = book.view("r")
    assert view is not None
    data = orjson.loads(orjson.dumps(view.to_dict()))
    mutate(data)

    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RunView.from_dict(data, max_events=10)


def test_only_changed_views_are_due_and_saved_ended_runs_leave_memory() -> None:
    """A saved view is not due again until it changes; a completed run's saved view is dropped."""
    book = SnapshotBook(max_events=10)
    book.observe([*training("a"), *training("b")])
    for view in book.changed():
        book.mark_saved(view.run_id, view.version)

    book.observe([Metric("a", T0 + 9, {"loss": 0.1}), RunLifecycle("b", T0 + 9, "completed")])

    assert sorted(view.run_id for view in book.changed()) == ["a", "b"]
    assert book.drop_ended() == [], "b's completion is not saved yet"
    b = book.view("b")
    assert b is not None
    book.mark_saved("b", b.version)
    assert book.drop_ended() == ["b"] and book.view("b") is None and book.view("a") is not None


@pytest.mark.parametrize(
    ("run_id", "expected"),
    [
        pytest.param("run-1.a_b", "snapshot_run-1.a_b_20231114T221320.000000Z.json", id="kept"),
        pytest.param("a/../b c", "snapshot_a_.._b_c-9f3fd56c_20231114T221320.000000Z.json", id="sanitised"),
    ],
)
def test_file_names_are_safe_unique_and_sort_by_time(run_id: str, expected: str) -> None:
    """The run id is kept when safe, else sanitised with a hash; the UTC stamp is fixed-width."""
    assert snapshot_file_name(run_id, T0) == expected
    assert snapshot_file_name(run_id, T0 + 0.5) > snapshot_file_name(run_id, T0 + 0.25)


# -- the stage in a real pipeline --------------------------------------------------------------------


def graph(
    *, store_inputs: tuple[str, ...] = ("snap",), stage_path: str | None = None, **options: Any
) -> dict[str, Any]:
    """in_process → snapshot stage → sqlite store (or the store beside the stage, as a side branch)."""
    stage: dict[str, Any] = {"type": "snapshot", "inputs": ["app"], **options}
    if stage_path is not None:
        stage["path"] = stage_path
    return {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"snap": stage},
        "sinks": {"store": {"type": "sqlite", "inputs": list(store_inputs)}},
    }


def pipeline(tmp_path: Path, **options: Any) -> Pipeline:
    """A pipeline whose store and snapshot files are in tmp_path."""
    context = ComponentContext(db_path=str(tmp_path / "store.db"), data_dir=tmp_path / "data")
    return Pipeline(graph(**options), context=context, shutdown_timeout_seconds=5)


def stage_of(running: Pipeline) -> SnapshotStage:
    """The snapshot stage of a pipeline built by :func:`pipeline`."""
    stage = running.component("snap")
    assert isinstance(stage, SnapshotStage)
    return stage


async def emit_all(running: Pipeline, events: list[Any]) -> None:
    """Emit events and wait until the stage has seen them and the store has committed them."""
    for event in events:
        running.emit(event)
    assert await running.flush(TIMEOUT)


async def tick(running: Pipeline, now: float) -> None:
    """Drive the stage's tick at ``now`` (the runner would only tick after 300 s)."""
    with anyio.fail_after(TIMEOUT):
        await stage_of(running).tick(now)


def snapshot_files(tmp_path: Path) -> list[str]:
    """Every file in the snapshot directory, sorted (temporary files included)."""
    directory = tmp_path / "data"
    return sorted(os.listdir(directory)) if directory.exists() else []


def snapshot_rows(tmp_path: Path) -> list[tuple[str, float, str]]:
    """(run id, ts, data) of every stored snapshot, oldest first."""
    with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as conn:
        sql = "SELECT r.run_id, s.ts, s.data FROM snapshots s JOIN runs r ON r.id = s.run ORDER BY s.ts, s.id"
        return conn.execute(sql).fetchall()


async def rows(tmp_path: Path) -> list[tuple[str, float, str]]:
    """:func:`snapshot_rows`, read off the loop."""
    return await anyio.to_thread.run_sync(snapshot_rows, tmp_path)


async def test_tick_writes_each_changed_run_as_a_file_and_a_row(tmp_path: Path) -> None:
    """A tick saves each changed run as snapshot_<run>_<UTC>.json (strict JSON) and a row; unchanged runs wait."""
    async with pipeline(tmp_path) as running:
        await emit_all(running, [*training("r"), *training("other")])
        await tick(running, T0 + 300)
        await emit_all(running, [Metric("r", T0 + 400, {"loss": 0.125}, step=3)])
        await tick(running, T0 + 600)
        stored = await rows(tmp_path)

    assert snapshot_files(tmp_path) == [
        "snapshot_other_20231114T221820.000000Z.json",
        "snapshot_r_20231114T221820.000000Z.json",
        "snapshot_r_20231114T222320.000000Z.json",
    ]
    assert [(run_id, ts) for run_id, ts, _ in stored] == [("r", T0 + 300), ("other", T0 + 300), ("r", T0 + 600)]
    latest = (tmp_path / "data" / "snapshot_r_20231114T222320.000000Z.json").read_bytes()
    assert stored[-1][2].encode() == latest
    data = orjson.loads(latest)  # orjson refuses NaN/Infinity tokens: this is strict JSON
    assert data["run_id"] == "r" and data["taken_at"] == T0 + 600
    assert data["metrics"]["loss"] == {"value": 0.125, "step": 3, "timestamp": T0 + 400}
    assert data["state"] == {"game": {"level": 1, "hp": 2}}
    assert data["counters"]["events_by_kind"]["metric"] == 3 and data["counters"]["total_steps"] == 2
    assert [event["kind"] for event in data["events"]] == ["lifecycle", "log"]


async def test_an_event_no_snapshot_can_hold_is_left_out_alone_and_later_runs_are_still_saved(tmp_path: Path) -> None:
    """A metric with a lone surrogate in its run id or name is left out (counted); every other run is saved."""
    async with pipeline(tmp_path) as running:
        await emit_all(
            running,
            [
                *training("before"),
                Metric("bad\udcff", T0 + 1, {"loss": 1.0}),  # metrics leave run ids and names to the store
                Metric("before", T0 + 5, {"frame_\udcff": 1.0, "loss": 0.75}),
            ],
        )
        await tick(running, T0 + 300)
        await emit_all(running, training("later", T0 + 400))
        await tick(running, T0 + 600)
        statistics = stage_of(running).statistics()
        stored = await rows(tmp_path)

    assert [(run_id, ts) for run_id, ts, _ in stored] == [("before", T0 + 300), ("later", T0 + 600)]
    assert orjson.loads(stored[0][2])["metrics"]["loss"]["value"] == 0.75
    assert orjson.loads(stored[1][2])["state"] == {"game": {"level": 1, "hp": 2}}
    assert statistics["unencodable_items_total"] == 2 and statistics["unsavable_views_total"] == 0


def test_a_view_whose_log_cannot_be_serialised_drops_that_entry_alone() -> None:
    """An alert whose labels hold a metric name (unchecked) is left out of the snapshot, counted; the rest stays."""
    book = SnapshotBook(max_events=10)
    book.observe(
        [
            *training(),
            AlertEvent("r", T0 + 5, "non_finite", "firing", labels={"metric": "frame_\udcff"}),
        ]
    )
    view = book.view("r")
    assert view is not None
    data = orjson.loads(view.to_json(taken_at=T0 + 10))
    assert [event["kind"] for event in data["events"]] == ["lifecycle", "log"]
    assert data["state"] == {"game": {"level": 1, "hp": 2}} and data["taken_at"] == T0 + 10
    assert book.discarded() == 1


async def test_files_are_fsynced_temporaries_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is a hidden temporary in the same directory, fsynced before os.replace; none is left behind."""
    calls: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append(("fsync", fd))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append(("replace", (Path(src), Path(dst))))
        orjson.loads(Path(src).read_bytes())  # complete before it is renamed
        real_replace(src, dst)

    async with pipeline(tmp_path) as running:
        await emit_all(running, training())
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        await tick(running, T0 + 300)
        monkeypatch.undo()

    renames = [args for kind, args in calls if kind == "replace"]
    assert len(renames) == 1
    src, dst = renames[0]
    assert src.parent == dst.parent == tmp_path / "data" and src.name.startswith(".")
    assert calls[0][0] == "fsync" and calls.index(("replace", (src, dst))) > 0, "fsync before the rename"
    assert snapshot_files(tmp_path) == [dst.name]
    assert oct(dst.stat().st_mode & 0o777) == oct(0o600)


async def test_a_failed_write_leaves_no_file_nor_row_and_the_run_is_saved_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the rename fails the tick raises, nothing half-written stays, and the next tick saves the run."""

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    async with pipeline(tmp_path) as running:
        await emit_all(running, training())
        monkeypatch.setattr(os, "replace", refuse)
        with pytest.raises(OSError, match="No space left"):
            await tick(running, T0 + 300)
        monkeypatch.undo()
        assert snapshot_files(tmp_path) == [] and await rows(tmp_path) == []

        await tick(running, T0 + 600)
        stored = await rows(tmp_path)

    assert snapshot_files(tmp_path) == ["snapshot_r_20231114T222320.000000Z.json"]
    assert [ts for _, ts, _ in stored] == [T0 + 600]


async def test_rotation_keeps_the_newest_max_snapshots_files_and_rows(tmp_path: Path) -> None:
    """With max_snapshots = 3, five saves leave the three newest files and rows of the run."""
    async with pipeline(tmp_path, max_snapshots=3) as running:
        await emit_all(running, training())
        for index in range(1, 6):
            await emit_all(running, [Metric("r", T0 + 300 * index - 1, {"loss": 1 / index})])
            await tick(running, T0 + 300 * index)
        stored = await rows(tmp_path)
        stats = running.statistics()["components"]["snap"]

    assert [ts for _, ts, _ in stored] == [T0 + 900, T0 + 1200, T0 + 1500]
    assert snapshot_files(tmp_path) == [
        "snapshot_r_20231114T222820.000000Z.json",
        "snapshot_r_20231114T223320.000000Z.json",
        "snapshot_r_20231114T223820.000000Z.json",
    ]
    assert (stats["snapshots_written_total"], stats["snapshots_rotated_total"]) == (5, 2)


async def test_a_restart_restores_the_view_from_the_latest_snapshot_when_the_run_returns(tmp_path: Path) -> None:
    """A new pipeline on the same store and data dir continues a resumed run's view from its latest snapshot."""
    async with pipeline(tmp_path) as first:
        await emit_all(first, training())
        await tick(first, T0 + 300)
        await emit_all(first, [Metric("r", T0 + 400, {"acc": 0.95}, step=2)])
        await tick(first, T0 + 600)

    async with pipeline(tmp_path) as second:
        stage = stage_of(second)
        assert stage.current_view("r") is None, "nothing is read before the run's events arrive"
        await emit_all(second, [RunLifecycle("r", T0 + 700, "resumed"), Metric("r", T0 + 701, {"loss": 0.1}, step=3)])
        view = stage.current_view("r")
        stats = second.statistics()["components"]["snap"]

    assert view is not None
    assert view["metrics"] == {
        "loss": {"value": 0.1, "step": 3, "timestamp": T0 + 701},
        "acc": {"value": 0.95, "step": 2, "timestamp": T0 + 400},
    }
    assert view["state"] == {"game": {"level": 1, "hp": 2}}
    assert view["counters"]["events_by_kind"] == {"lifecycle": 2, "metric": 4, "state": 2, "log": 1, "heartbeat": 1}
    assert [event["transition"] for event in view["events"] if event["kind"] == "lifecycle"] == ["started", "resumed"]
    assert view["status"] == "running" and stats["views_restored_total"] == 1


async def test_closing_saves_views_changed_since_the_last_tick(tmp_path: Path) -> None:
    """Views changed after the last tick are saved when the pipeline closes, so a restart misses nothing."""
    async with pipeline(tmp_path) as running:
        await emit_all(running, training())

    stored = await rows(tmp_path)
    assert [run_id for run_id, _, _ in stored] == ["r"]
    assert orjson.loads(stored[0][2])["counters"]["events_total"] == 7
    assert len(snapshot_files(tmp_path)) == 1


async def test_the_stage_is_a_service_whose_restore_loads_the_latest_stored_snapshot(tmp_path: Path) -> None:
    """The SNAPSHOTS service is the stage while it runs; restore() loads the latest snapshot and adopts it."""
    async with pipeline(tmp_path) as first:
        await emit_all(first, training())
        await tick(first, T0 + 300)
        assert first.context.services[SNAPSHOTS] is stage_of(first)
    assert SNAPSHOTS not in first.context.services

    async with pipeline(tmp_path) as second:
        stage = second.context.services[SNAPSHOTS]
        snapshot = await stage.restore("r")
        missing = await stage.restore("never-seen")
        view = stage.current_view("r")

    assert snapshot is not None and snapshot["taken_at"] == T0 + 300
    assert missing is None
    assert view is not None and view == {key: value for key, value in snapshot.items() if key != "taken_at"}


async def test_a_run_the_store_does_not_hold_yet_is_saved_at_a_later_tick(tmp_path: Path) -> None:
    """Without the run's row in the store nothing is written; once the row exists the next tick saves it."""
    other = tmp_path / "other.db"
    await anyio.to_thread.run_sync(prepare_database, str(other))
    async with pipeline(tmp_path, stage_path=str(other)) as running:
        await emit_all(running, training())
        await tick(running, T0 + 300)
        assert snapshot_files(tmp_path) == []
        with contextlib.closing(sqlite3.connect(other)) as conn, conn:
            conn.execute("INSERT INTO runs (run_id, start_time, updated_at) VALUES ('r', ?, ?)", (T0, T0))
        await tick(running, T0 + 600)
        stats = running.statistics()["components"]["snap"]

    assert snapshot_files(tmp_path) == ["snapshot_r_20231114T222320.000000Z.json"]
    assert (stats["snapshots_deferred_total"], stats["snapshots_written_total"]) == (1, 1)


async def test_an_unusable_stored_snapshot_is_logged_and_the_view_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A latest snapshot that is not valid JSON is counted and logged; the run's view starts empty."""
    async with pipeline(tmp_path) as first:
        await emit_all(first, training())
    with contextlib.closing(sqlite3.connect(tmp_path / "store.db")) as conn, conn:
        conn.execute("UPDATE snapshots SET data = '{not json'")

    with caplog.at_level(logging.ERROR, logger="runwatch.snapshots"):
        async with pipeline(tmp_path) as second:
            await emit_all(second, [Metric("r", T0 + 700, {"loss": 0.1})])
            view = stage_of(second).current_view("r")
            stats = second.statistics()["components"]["snap"]

    assert view is not None and view["counters"]["events_total"] == 1
    assert stats["restore_errors_total"] == 1 and "unusable snapshot" in caplog.text


async def test_export_includes_the_runs_snapshots(tmp_path: Path) -> None:
    """export_run(include_snapshots=True) puts the run's stored snapshots into the archive; False leaves them out."""
    async with pipeline(tmp_path) as running:
        await emit_all(running, [*training("r"), *training("other")])
        await tick(running, T0 + 300)
        await emit_all(running, [Metric("r", T0 + 400, {"loss": 0.1})])
        await tick(running, T0 + 600)
        stored = await rows(tmp_path)

    db = str(tmp_path / "store.db")
    with_snapshots = await anyio.to_thread.run_sync(lambda: export_run(db, "r", tmp_path / "with"))
    without = await anyio.to_thread.run_sync(lambda: export_run(db, "r", tmp_path / "without", include_snapshots=False))

    with zipfile.ZipFile(with_snapshots) as archive:
        names = [name for name in archive.namelist() if name.startswith("snapshots/")]
        contents = [archive.read(name) for name in names]
    assert names == ["snapshots/snapshot_1700000300.000.json", "snapshots/snapshot_1700000600.000.json"]
    assert contents == [data.encode() for run_id, _, data in stored if run_id == "r"]
    with zipfile.ZipFile(without) as archive:
        assert not any(name.startswith("snapshots/") for name in archive.namelist())


async def test_as_a_side_branch_beside_the_store_the_stage_sees_everything_and_flush_still_completes(
    tmp_path: Path,
) -> None:
    """The stage as a leaf (the store fed by the source directly) keeps views and saves them; flush barriers pass."""
    async with pipeline(tmp_path, store_inputs=("app",)) as running:
        await emit_all(running, training())
        await tick(running, T0 + 300)
        view = stage_of(running).current_view("r")

    assert view is not None and view["counters"]["events_total"] == 7
    assert snapshot_files(tmp_path) == ["snapshot_r_20231114T221820.000000Z.json"]


# -- options and schema ------------------------------------------------------------------------------


def test_snapshot_is_a_builtin_stage_with_documented_defaults(tmp_path: Path) -> None:
    """Type "snapshot" has defaults 300 s / 100 / 1000, the data dir and the store; it ticks at its interval."""
    options = load_pipeline_config(graph()).get("snap").options
    assert (options.snapshot_interval_seconds, options.max_snapshots, options.max_events) == (300.0, 100, 1000)
    assert (options.directory, options.path) == (None, None)

    stage = SnapshotStage("snap", options, ComponentContext(db_path="x.db", data_dir=tmp_path))
    assert (stage.tick_interval_seconds, stage.directory, stage.path) == (300.0, tmp_path, "x.db")


@pytest.mark.parametrize(
    ("options", "path"),
    [
        pytest.param({"snapshot_interval_seconds": 0}, "stages.snap.snapshot_interval_seconds", id="interval"),
        pytest.param({"max_snapshots": 0}, "stages.snap.max_snapshots", id="max-snapshots"),
        pytest.param({"max_events": "many"}, "stages.snap.max_events", id="max-events"),
        pytest.param({"every": 5}, "stages.snap.every", id="unknown"),
    ],
)
def test_bad_options_name_their_key_path(options: dict[str, Any], path: str) -> None:
    """An invalid or unknown option is a ConfigError naming stages.<id>.<key>."""
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(graph(**options))
    assert caught.value.path == path


def test_schema_version_4_adds_the_snapshots_table_and_its_down_step_removes_it(tmp_path: Path) -> None:
    """Migrating to 4 creates snapshots(id, run, ts, data) with its (run, ts) index; stepping down to 3 drops both."""
    with contextlib.closing(sqlite3.connect(tmp_path / "m.db")) as conn:
        migrate(conn, 4)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(snapshots)")]
        index = [row[2] for row in conn.execute("PRAGMA index_info(snapshots_run_ts)")]
        migrate(conn, 3)
        left = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'snapshots%'").fetchall()

    assert columns == ["id", "run", "ts", "data"] and index == ["run", "ts"]
    assert left == []
