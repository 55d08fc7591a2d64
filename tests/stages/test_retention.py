"""Tests for runwatch.stages.retention.RetentionStage, driven by its tick with a fake clock."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from runwatch.events import HistogramEvent, ImageEvent, LogEvent, Metric, RunLifecycle
from runwatch.exceptions import ConfigError
from runwatch.media.images import encode_image, take_image
from runwatch.pipeline import ComponentContext, Pipeline, load_pipeline_config
from runwatch.stages import retention
from runwatch.stages.retention import RetentionStage
from runwatch.store.manager import DatabaseManager

TS = 1_700_000_000.0
DAY = 86_400.0
NOW = TS + 40 * DAY  # the fake clock: the old runs ended 40 days before it


class RecordingOutput:
    """An Output double that records what the stage sends."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    async def send(self, batch: list[Any]) -> None:
        self.batches.append(batch)


def config(**options: Any) -> dict[str, Any]:
    return {
        "sources": {"app": {"type": "in_process"}},
        "stages": {"retention": {"type": "retention", "inputs": ["app"], **options}},
        "sinks": {"store": {"type": "sqlite", "inputs": ["retention"]}},
    }


def make_stage(db: Path, **options: Any) -> RetentionStage:
    """The stage as the pipeline would build it from a config."""
    spec = load_pipeline_config(config(**options)).get("retention")
    stage = spec.cls(spec.id, spec.options, ComponentContext(db_path=str(db)))
    assert isinstance(stage, RetentionStage)
    return stage


async def write(db: Path, *events: Any) -> None:
    """Write ``events`` through the default pipeline."""
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for event in events:
            pipeline.emit(event)
        assert await pipeline.flush(30)


def a_run(run_id: str, start: float, metrics: int = 20, end: str | None = "completed") -> list[Any]:
    events: list[Any] = [RunLifecycle(run_id, start, "started")]
    events += [Metric(run_id, start + 1 + i, {"loss": float(i)}, step=i) for i in range(metrics)]
    if end is not None:
        events.append(RunLifecycle(run_id, start + metrics + 2, end))
    return events


def run_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT run_id FROM runs")}


async def tick_until_idle(stage: RetentionStage, now: float, output: Any) -> int:
    """Tick at ``now`` until the pass in progress ends; returns the number of ticks (bounded)."""
    stage.output = output
    for ticks in range(1, 1001):
        await stage.tick(now)
        if not stage.pass_running:
            return ticks
    raise AssertionError("the retention pass did not end within 1000 ticks")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    anyio.run(
        write,
        path,
        *a_run("old-done", TS),
        *a_run("old-running", TS, end=None),
        *a_run("recent-done", NOW - 5 * DAY),
    )
    return path


# -- configuration -------------------------------------------------------------------------


def test_retention_is_a_builtin_stage_with_documented_defaults(tmp_path: Path) -> None:
    """`type = "retention"` builds a RetentionStage with a one-hour interval and no downsampling by default."""
    stage = make_stage(tmp_path / "x.db", retention_days=30)

    assert stage.options.interval_seconds == 3600
    assert stage.options.downsample_after_days is None
    assert stage.options.downsample_bucket_rows == 100
    assert stage.tick_interval_seconds == retention.TICK_INTERVAL_SECONDS


@pytest.mark.parametrize(
    ("options", "path"),
    [
        pytest.param({}, "stages.retention.retention_days", id="missing-retention"),
        pytest.param({"retention_days": 0}, "stages.retention.retention_days", id="zero-days"),
        pytest.param({"retention_days": 1, "interval_seconds": -1}, "stages.retention.interval_seconds", id="interval"),
        pytest.param(
            {"retention_days": 1, "downsample_after_days": 0}, "stages.retention.downsample_after_days", id="downsample"
        ),
        pytest.param(
            {"retention_days": 1, "downsample_bucket_rows": 1}, "stages.retention.downsample_bucket_rows", id="bucket"
        ),
        pytest.param({"retention_days": "30"}, "stages.retention.retention_days", id="string-days"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, Any], path: str) -> None:
    """Every invalid option is refused at load time with its key path."""
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(config(**options))
    assert caught.value.path == path


# -- passing batches -----------------------------------------------------------------------


async def test_process_passes_every_batch_through_unchanged(tmp_path: Path) -> None:
    """The stage forwards each batch as it came, the same list object."""
    stage = make_stage(tmp_path / "x.db", retention_days=1)
    output = RecordingOutput()
    batch = [Metric("r", TS, {"loss": 1.0})]

    stage.output = output  # type: ignore[assignment]
    await stage.write(batch)

    assert output.batches == [batch] and output.batches[0] is batch


async def test_events_flow_to_the_store_through_the_stage_in_a_running_pipeline(tmp_path: Path) -> None:
    """In a pipeline app → retention → store, every emitted event is committed."""
    db = tmp_path / "flow.db"
    async with Pipeline(config(retention_days=30), context=ComponentContext(db_path=str(db))) as pipeline:
        for i in range(500):
            pipeline.emit(Metric("r", TS + i, {"loss": float(i)}))
        with anyio.fail_after(30):
            assert await pipeline.flush(30)

    assert DatabaseManager(db).get_run_summary("r")["metrics"]["loss"]["count"] == 500


# -- ticks ---------------------------------------------------------------------------------


async def test_tick_removes_an_old_completed_run_and_keeps_active_and_recent_ones(db: Path) -> None:
    """The first tick removes the finished run older than retention_days with its rows; the others stay."""
    stage = make_stage(db, retention_days=30)

    await tick_until_idle(stage, NOW, RecordingOutput())

    assert run_ids(db) == {"old-running", "recent-done"}
    stats = stage.statistics()
    assert stats["retention_passes_total"] == 1
    assert stats["retention_removed_runs_total"] == 1
    # the run, its series and its one sealed chunk, its statistics, 2 lifecycle events
    assert stats["retention_removed_records_total"] == 1 + 1 + 1 + 1 + 2
    assert stats["retention_last_pass_started_at"] == NOW
    assert stats["retention_last_error"] is None


async def test_a_pass_starts_only_every_interval_seconds(db: Path) -> None:
    """Between two due times a tick does nothing; at the next due time it removes what became old."""
    stage = make_stage(db, retention_days=30, interval_seconds=600)
    output = RecordingOutput()
    await tick_until_idle(stage, NOW, output)
    later = NOW + 26 * DAY  # recent-done is now 31 days old

    stage.output = output  # type: ignore[assignment]
    await stage.tick(NOW + 599)  # not due yet (also checked: no pass starts)
    assert not stage.pass_running
    assert "recent-done" in run_ids(db)
    await tick_until_idle(stage, later, output)

    assert run_ids(db) == {"old-running"}
    assert stage.statistics()["retention_passes_total"] == 2


async def test_a_large_pass_is_spread_over_ticks_in_small_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny work budget, each tick removes one small batch and the pass resumes on the next tick."""
    db = tmp_path / "big.db"
    notes = [LogEvent("old-done", TS + 1 + i, "note") for i in range(60)]
    await write(db, *a_run("old-done", TS, metrics=5), *notes, *a_run("recent", NOW, metrics=5))
    monkeypatch.setattr(retention, "WORK_SECONDS_PER_TICK", 0.0)
    stage = make_stage(db, retention_days=30)
    stage.batch_rows = 10
    output = RecordingOutput()

    ticks = await tick_until_idle(stage, NOW, output)

    assert ticks >= 6  # 60 events, 10 per transaction, one transaction per tick
    assert run_ids(db) == {"recent"}
    # the run, its series and sealed chunk, its statistics, 60 notes and 2 lifecycle events
    assert stage.statistics()["retention_removed_records_total"] == 1 + 1 + 1 + 1 + 60 + 2


def image(run_id: str, at: float, shade: int) -> ImageEvent:
    encoded = encode_image(take_image(np.full((4, 4), shade, np.uint8)))
    fields = (encoded.data, encoded.mime, encoded.width, encoded.height, encoded.digest)
    return ImageEvent(run_id, at, "frame", int(at - TS), *fields, None)


async def test_retention_removes_an_old_runs_images_histograms_and_unshared_contents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spread over ticks, retention takes an old run's images, histograms and the contents only it named;
    a content a kept run also logged stays readable."""
    db = tmp_path / "media.db"
    old = [image("old-done", TS + 1 + i, shade=i) for i in range(12)]
    histogram = HistogramEvent("old-done", TS + 2, "q", 0, 2, 0, 0, 0, 0.0, 1.0, 1.0, 0.0, 1.0, (1, 1))
    kept = image("recent", NOW + 1, shade=0)  # the content of the old run's first image
    await write(db, *a_run("old-done", TS, metrics=2), *old, histogram, *a_run("recent", NOW, metrics=1), kept)
    monkeypatch.setattr(retention, "WORK_SECONDS_PER_TICK", 0.0)
    stage = make_stage(db, retention_days=30)
    stage.batch_rows = 5

    ticks = await tick_until_idle(stage, NOW + 2, RecordingOutput())

    assert ticks >= 3 and run_ids(db) == {"recent"}
    manager = DatabaseManager(db)
    assert manager.get_image_data(old[1].digest) is None
    assert manager.get_image_data(kept.digest) == ("image/png", kept.data)
    with sqlite3.connect(db) as conn:
        left = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("images", "histograms")
        }
    assert left == {"images": 1, "histograms": 0}


async def test_tick_downsamples_old_rows_when_configured(db: Path) -> None:
    """With downsample_after_days, the old rows of finished runs newer than the retention become rollups."""
    await write(db, *a_run("mid-done", NOW - 10 * DAY, metrics=250))
    stage = make_stage(db, retention_days=30, downsample_after_days=7, downsample_bucket_rows=100)
    manager = DatabaseManager(db)
    recent_before = manager.get_run_metrics("recent-done")

    await tick_until_idle(stage, NOW, RecordingOutput())

    rollups = manager.get_metric_rollups("mid-done")
    assert rollups["count"].tolist() == [100, 100, 50]
    assert manager.get_run_metrics("mid-done").empty
    assert manager.get_run_metrics("recent-done").equals(recent_before)  # 5 days old: kept raw
    stats = stage.statistics()
    assert stats["retention_downsampled_rows_total"] == 250
    assert stats["retention_written_rollups_total"] == 3
    assert "old-done" not in run_ids(db)


async def test_a_busy_store_cuts_the_slice_short_and_the_pass_resumes_later(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick that cannot get the write lock counts a busy slice without failing; the next tick finishes the pass."""
    monkeypatch.setattr(retention, "LOCK_WAIT_SECONDS", 0.01)
    stage = make_stage(db, retention_days=30)
    output = RecordingOutput()
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        stage.output = output  # type: ignore[assignment]
        await stage.tick(NOW)
        assert stage.pass_running
        assert stage.statistics()["retention_busy_total"] == 1
        assert len(run_ids(db)) == 3
    finally:
        blocker.close()

    await tick_until_idle(stage, NOW + 1, output)

    assert run_ids(db) == {"old-running", "recent-done"}
    assert stage.statistics()["retention_last_error"] is None


async def test_an_unusable_store_fails_the_tick_for_the_runner_to_count(tmp_path: Path) -> None:
    """A file that is not a database raises from tick (not swallowed) and is named in the last error."""
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 1000)
    stage = make_stage(bad, retention_days=1)

    with pytest.raises(sqlite3.DatabaseError):
        stage.output = RecordingOutput()  # type: ignore[assignment]
        await stage.tick(NOW)
    assert "DatabaseError" in stage.statistics()["retention_last_error"]


async def test_tick_without_a_store_creates_nothing(tmp_path: Path) -> None:
    """Before the sink created the store, a pass finds nothing to do and creates no file."""
    missing = tmp_path / "none.db"
    stage = make_stage(missing, retention_days=1)

    await tick_until_idle(stage, NOW, RecordingOutput())

    assert not missing.exists()
    assert stage.statistics()["retention_passes_total"] == 1
