"""Images and histograms in a real SQLite store: budget, reads, cleanup, export and import."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image

from runwatch.events import HistogramEvent, ImageEvent, RunLifecycle
from runwatch.media.histograms import bin_values, take_values
from runwatch.media.images import encode_image, take_image
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.store import media
from runwatch.store.export import export_run
from runwatch.store.importer import ArchiveError, import_run
from runwatch.store.lifecycle import cleanup_old_data, count_old_data
from runwatch.store.manager import DatabaseManager

TS = 1_700_000_000.0
DAY = 86_400.0


async def _start_runs(db: Path, runs: dict[str, str | None]) -> None:
    async with Pipeline(None, context=ComponentContext(db_path=str(db))) as pipeline:
        for run_id, end in runs.items():
            pipeline.emit(RunLifecycle(run_id, TS, "started"))
            if end is not None:
                pipeline.emit(RunLifecycle(run_id, TS + 1, end))
        assert await pipeline.flush(30)


def start_runs(db: Path, runs: dict[str, str | None]) -> None:
    """Create runs through the real pipeline; a run with an end status is finished at TS + 1."""
    anyio.run(_start_runs, db, runs)


def image_event(run_id: str, step: int, shade: int, name: str = "frame", caption: str | None = None) -> ImageEvent:
    encoded = encode_image(take_image(np.full((6, 8, 3), shade, np.uint8)))
    return ImageEvent(
        run_id,
        TS + step,
        name,
        step,
        encoded.data,
        encoded.mime,
        encoded.width,
        encoded.height,
        encoded.digest,
        caption,
    )


def histogram_event(run_id: str, step: int, values: Any, name: str = "q", bins: int = 8) -> HistogramEvent:
    b = bin_values(take_values(values), bins)
    fields = (b.size, b.nan_count, b.posinf_count, b.neginf_count, b.min, b.max, b.sum, b.low, b.high, b.counts)
    return HistogramEvent(run_id, TS + step, name, step, *fields)


def write(db: Path, events: Iterable[Any], budget: int | None = None) -> media.MediaWriteOutcome:
    """Write image and histogram events in one transaction, as the store's writer does."""
    events = list(events)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        pks = dict(conn.execute("SELECT run_id, id FROM runs").fetchall())
        outcome = media.write_images(
            conn, pks, [e for e in events if isinstance(e, ImageEvent)], max_image_bytes_per_run=budget
        )
        media.write_histograms(conn, pks, [e for e in events if isinstance(e, HistogramEvent)], outcome=outcome)
        conn.execute("COMMIT")
        return outcome
    finally:
        conn.close()


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    start_runs(path, {"a": None, "b": None})
    return path


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


def test_images_read_back_by_run_name_and_step(db: Path) -> None:
    """Every image is listed with its metadata; fetching by step gives the latest at or before it, with its bytes."""
    write(db, [image_event("a", step, shade=step * 10, caption=f"s{step}") for step in (0, 2, 4)])
    manager = DatabaseManager(db)
    listed = manager.get_run_images("a", "frame")
    assert [(row["step"], row["caption"], row["width"], row["height"]) for row in listed] == [
        (0, "s0", 8, 6),
        (2, "s2", 8, 6),
        (4, "s4", 8, 6),
    ]
    assert listed[0]["timestamp"].timestamp() == TS and listed[0]["mime"] == "image/png"
    at_three = manager.get_image("a", "frame", step=3)
    assert at_three is not None and at_three["step"] == 2
    assert decoded(at_three["data"])[0, 0].tolist() == [20, 20, 20]
    latest = manager.get_image("a", "frame")
    assert latest is not None and latest["step"] == 4
    assert manager.get_image("a", "frame", step=-1) is None
    assert manager.get_image("a", "other") is None
    mime, data = manager.get_image_data(listed[1]["digest"])  # type: ignore[misc]
    assert mime == "image/png" and hashlib.sha256(data).hexdigest() == listed[1]["digest"]
    assert manager.get_run_images("a", start_step=1, end_step=3)[0]["step"] == 2


def test_a_repeated_content_is_stored_once_and_counted_once_per_run(db: Path) -> None:
    """The same frame logged often is one blob; a run's budget counts it once, another run's once more."""
    frames = [image_event("a", step, shade=7) for step in range(5)] + [image_event("b", 0, shade=7)]
    outcome = write(db, frames)
    size = len(frames[0].data)
    assert (outcome.images_stored, outcome.new_blob_bytes) == (6, size)
    assert count(db, "media_blobs") == 1 and count(db, "images") == 6
    manager = DatabaseManager(db)
    assert manager.get_media_usage("a") == {"image_bytes": size, "images_over_budget": 0}
    assert manager.get_media_usage("b") == {"image_bytes": size, "images_over_budget": 0}


def test_the_budget_refuses_new_content_counts_it_and_still_takes_known_content(db: Path) -> None:
    """Past a run's budget a new content is refused and counted; one the run holds still costs nothing."""
    first = image_event("a", 0, shade=1)
    budget = len(first.data) + 10  # room for one content only
    outcome = write(
        db, [first, image_event("a", 1, shade=2), image_event("a", 2, shade=1), image_event("b", 0, 2)], budget
    )
    assert (outcome.images_stored, outcome.images_over_budget, outcome.over_budget_runs) == (3, 1, {"a"})
    manager = DatabaseManager(db)
    assert [row["step"] for row in manager.get_run_images("a")] == [0, 2]
    assert manager.get_media_usage("a") == {"image_bytes": len(first.data), "images_over_budget": 1}
    assert [row["step"] for row in manager.get_run_images("b")] == [0]  # its own budget


def test_histograms_come_back_as_a_dataframe_matching_numpy(db: Path) -> None:
    """get_run_histograms gives per step the counts and edges numpy computes, and the summary."""
    rng = np.random.default_rng(1)
    values = [rng.normal(loc=step, size=500) for step in range(3)]
    with_nan = np.append(values[2], [np.nan, np.inf])
    write(
        db, [histogram_event("a", 0, values[0]), histogram_event("a", 1, values[1]), histogram_event("a", 2, with_nan)]
    )
    frame = DatabaseManager(db).get_run_histograms("a", "q")
    assert frame["step"].tolist() == [0, 1, 2]
    for step in range(3):
        counts, edges = np.histogram(values[step], bins=8)
        np.testing.assert_array_equal(frame["counts"][step], counts)
        np.testing.assert_allclose(frame["bin_edges"][step], edges)
        assert frame["mean"][step] == pytest.approx(values[step].mean())
    assert frame.loc[2, ["size", "nan_count", "posinf_count", "neginf_count"]].tolist() == [502, 1, 1, 0]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert DatabaseManager(db).get_run_histograms("a", "absent").empty
    assert [entry["name"] for entry in DatabaseManager(db).get_histogram_names("a")] == ["q"]


def test_a_histogram_without_finite_values_reads_back_without_bins(db: Path) -> None:
    """Only NaN: no bins, NaN summary, the NaN counted."""
    write(db, [histogram_event("a", 0, [np.nan, np.nan])])
    frame = DatabaseManager(db).get_run_histograms("a", "q")
    assert frame["counts"][0].size == 0 and frame["bin_edges"][0].size == 0
    assert np.isnan(frame["min"][0]) and np.isnan(frame["mean"][0]) and frame["nan_count"][0] == 2


def test_cleanup_removes_a_runs_media_and_only_the_blobs_nobody_else_names(tmp_path: Path) -> None:
    """An old run's images, histograms and usage go; a content shared with a kept run stays, its own goes."""
    db = tmp_path / "store.db"
    start_runs(db, {"old": "completed", "kept": None})
    shared = image_event("old", 0, shade=5)
    write(db, [shared, image_event("old", 1, shade=6), histogram_event("old", 0, [1.0, 2.0])])
    write(db, [image_event("kept", 0, shade=5), histogram_event("kept", 0, [3.0])])
    expected = count_old_data_of(db)
    with sqlite3.connect(db, isolation_level=None) as conn:
        assert count_old_data(conn, TS + DAY) == expected
        assert cleanup_old_data(conn, TS + DAY, batch_rows=1) == expected
    assert count(db, "images") == 1 and count(db, "histograms") == 1 and count(db, "media_usage") == 1
    with sqlite3.connect(db) as conn:
        assert [row[0] for row in conn.execute("SELECT digest FROM media_blobs")] == [shared.digest]


def count_old_data_of(db: Path) -> int:
    """The run row of 'old' plus its rows in every table, counted independently of the code under test."""
    with sqlite3.connect(db) as conn:
        (run,) = conn.execute("SELECT id FROM runs WHERE run_id = 'old'").fetchone()
        tables = ("events", "state_history", "metric_stats", "images", "histograms", "media_usage")
        return 1 + sum(conn.execute(f"SELECT count(*) FROM {t} WHERE run = ?", (run,)).fetchone()[0] for t in tables)


def test_export_and_import_carry_images_and_histograms(db: Path, tmp_path: Path) -> None:
    """A run's images (each content once in the archive) and histograms come back exactly in another store."""
    write(
        db,
        [image_event("a", 0, 1, caption="start"), image_event("a", 1, 1), image_event("a", 2, 9, name="map")]
        + [histogram_event("a", step, [step, step + 1.0, np.inf]) for step in range(3)],
    )
    archive = export_run(str(db), "a", tmp_path / "out")
    with zipfile.ZipFile(archive) as opened:
        assert len([name for name in opened.namelist() if name.startswith("media/")]) == 2
    target = tmp_path / "target.db"
    assert import_run(str(target), archive, rename="copy") == "copy"
    source, copy = DatabaseManager(db), DatabaseManager(target)
    assert copy.get_run_images("copy") == source.get_run_images("a")
    assert copy.get_media_usage("copy") == source.get_media_usage("a")
    for step in (0, 2):
        assert copy.get_image("copy", "frame", step) == source.get_image("a", "frame", step)
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(copy.get_run_histograms("copy", "q"), source.get_run_histograms("a", "q"))


def test_import_refuses_an_image_content_that_does_not_match_its_name(db: Path, tmp_path: Path) -> None:
    """A tampered content under media/ fails the import, and nothing of the run is stored."""
    write(db, [image_event("a", 0, 1)])
    archive = export_run(str(db), "a", tmp_path / "out")
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(tampered, "w") as out:
        for info in source.infolist():
            data = source.read(info.filename)
            out.writestr(info, data + b"x" if info.filename.startswith("media/") else data)
    target = tmp_path / "target.db"
    with pytest.raises(ArchiveError, match="does not hash to its name"):
        import_run(str(target), tampered)
    assert count(target, "runs") == 0 and count(target, "media_blobs") == 0


def test_an_older_store_reads_as_having_no_media(tmp_path: Path) -> None:
    """A store at schema version 6 (no media tables) is read without migrating: no images, no histograms."""
    db = tmp_path / "old.db"
    start_runs(db, {"a": None})
    DatabaseManager(db).migrate_schema(6)
    manager = DatabaseManager(db)
    assert manager.get_run_images("a") == [] and manager.get_image("a", "frame") is None
    assert manager.get_run_histograms("a", "q").empty
    assert manager.get_schema_version() == 6


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(lambda m: m.get_run_histograms("a", 3), TypeError, id="histogram name"),
        pytest.param(lambda m: m.get_image("a", "frame", step="3"), TypeError, id="image step"),
        pytest.param(lambda m: m.get_run_images("nope"), ValueError, id="unknown run"),
        pytest.param(lambda m: m.get_image_data(b"ab"), TypeError, id="bytes digest"),
    ],
)
def test_bad_read_arguments_are_refused(db: Path, call: Any, error: type[Exception]) -> None:
    """A wrong argument to a media read is a TypeError or ValueError."""
    with pytest.raises(error):
        call(DatabaseManager(db))
