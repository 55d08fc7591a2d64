"""WebMonitor.log_image, log_histogram and update_game_state(frame=) against a real store."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runwatch import MonitorConfig, WebMonitor


def make_config(directory: Path, **changes: object) -> MonitorConfig:
    return MonitorConfig(db_path=str(directory / "runs.db"), data_dir=str(directory / "data"), web_port=0, **changes)


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    with WebMonitor(make_config(tmp_path)) as live:
        live.start_training(run_id="r")
        yield live


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


def frame(shade: int) -> np.ndarray:
    array = np.zeros((144, 160, 3), np.uint8)
    array[:, :, 0] = shade
    array[shade % 144, :, 1] = 255  # a line that moves with the shade
    return array


def test_logged_images_are_stored_by_step_and_read_back_exactly(monitor: WebMonitor) -> None:
    """Frames logged at steps come back from the store pixel for pixel, the latest at or before a step."""
    for step in range(5):
        monitor.log_image("frame", frame(step * 20), step=step, caption=f"step {step}")
    monitor.flush()
    stored = monitor.db.get_run_images("r", "frame")
    assert [(row["step"], row["caption"], row["width"], row["height"]) for row in stored] == [
        (step, f"step {step}", 160, 144) for step in range(5)
    ]
    at_three = monitor.db.get_image("r", "frame", 3)
    assert at_three is not None
    np.testing.assert_array_equal(decoded(at_three["data"]), frame(60))
    stats = monitor.statistics()["media"]
    assert stats["images_encoded"] == 5 and stats["dropped"] == {}


def test_an_image_without_a_step_joins_the_current_step(monitor: WebMonitor) -> None:
    """step=None puts the image at the run's current global step, without advancing it."""
    monitor.update_metrics({"loss": 1.0})
    monitor.update_metrics({"loss": 0.5})
    monitor.log_image("frame", frame(1))
    monitor.update_metrics({"loss": 0.25})
    monitor.flush()
    assert [row["step"] for row in monitor.db.get_run_images("r")] == [1]
    assert monitor.db.get_run_metrics("r")["step"].tolist() == [0, 1, 2]


def test_the_frame_buffer_may_be_reused_right_after_the_call(monitor: WebMonitor) -> None:
    """A loop that draws every frame into one buffer stores each frame as it was at its call."""
    buffer = np.zeros((144, 160, 3), np.uint8)
    for step in range(20):
        buffer[:] = frame(step)
        monitor.log_image("frame", buffer, step=step)
    buffer[:] = 255
    monitor.flush()
    for step in (0, 7, 19):
        image = monitor.db.get_image("r", "frame", step)
        assert image is not None and image["step"] == step
        np.testing.assert_array_equal(decoded(image["data"]), frame(step))


def test_images_past_the_rate_limit_are_dropped_and_counted(tmp_path: Path) -> None:
    """Past max_images_per_second per name the call returns at once; the drops are counted, other names unaffected."""
    with WebMonitor(make_config(tmp_path, max_images_per_second=5.0)) as monitor:
        monitor.start_training(run_id="r")
        for step in range(50):
            monitor.log_image("frame", frame(step), step=step)
        monitor.log_image("other", frame(0), step=0)
        monitor.flush()
        stored = len(monitor.db.get_run_images("r", "frame"))
        dropped = monitor.statistics()["media"]["dropped"]["rate_limited"]
        assert 5 <= stored < 50 and stored + dropped == 50
        assert len(monitor.db.get_run_images("r", "other")) == 1


def test_images_past_the_run_budget_are_refused_by_the_store_and_counted(tmp_path: Path) -> None:
    """A run over max_image_bytes_per_run keeps what fit; the rest is counted, never raised."""
    with WebMonitor(make_config(tmp_path, max_image_bytes_per_run=20_000)) as monitor:
        monitor.start_training(run_id="r")
        rng = np.random.default_rng(0)
        for step in range(5):  # noise does not compress: each PNG is about 70 kB, over the budget alone
            monitor.log_image("noise", rng.integers(0, 256, (144, 160, 3), dtype=np.uint8), step=step)
        monitor.log_image("small", np.zeros((8, 8), np.uint8), step=0)
        monitor.flush()
        assert [row["name"] for row in monitor.db.get_run_images("r")] == ["small"]
        assert monitor.db.get_media_usage("r")["images_over_budget"] == 5
        store = monitor.statistics()["components"]["store"]
        assert store["images_over_budget"] == 5 and store["images_stored"] == 1


def test_histograms_are_binned_and_stored_per_step(monitor: WebMonitor) -> None:
    """log_histogram stores bins per step that match numpy's; get_run_histograms reads them as a DataFrame."""
    rng = np.random.default_rng(2)
    batches = [rng.normal(loc=step, size=1000) for step in range(4)]
    for step, values in enumerate(batches):
        monitor.log_histogram("q_values", values, step=step, bins=16)
    monitor.log_histogram("q_values", [1.0, 2.0, float("nan")], step=4, bins=2)
    frame_ = monitor.get_run_histograms("r", "q_values")  # waits for the media thread's binning
    assert frame_["step"].tolist() == [0, 1, 2, 3, 4]
    counts, edges = np.histogram(batches[2], bins=16)
    np.testing.assert_array_equal(frame_["counts"][2], counts)
    np.testing.assert_allclose(frame_["bin_edges"][2], edges)
    assert frame_.loc[4, "nan_count"] == 1 and frame_["counts"][4].tolist() == [1, 1]
    assert monitor.statistics()["media"]["histograms_binned"] == 5


def test_histograms_of_the_largest_floats_are_stored(monitor: WebMonitor) -> None:
    """Values near the float64 limits are binned and stored (an overflowing sum is +Inf), not dropped."""
    largest = float(np.finfo(np.float64).max)
    monitor.log_histogram("huge", [1e308, 1e308], step=0, bins=4)
    monitor.log_histogram("huge", [-largest, largest], step=1, bins=4)
    monitor.log_histogram("huge", [largest, largest, 1.0], step=2, bins=4)
    frame_ = monitor.get_run_histograms("r", "huge")
    assert frame_["step"].tolist() == [0, 1, 2]
    assert [counts.tolist() for counts in frame_["counts"]] == [[0, 0, 2, 0], [1, 0, 0, 1], [1, 0, 0, 2]]
    assert monitor.statistics()["media"]["histograms_binned"] == 3


def test_update_game_state_takes_the_frame_at_its_frame_number(monitor: WebMonitor) -> None:
    """frame= stores the image 'frame' at step frame_number, beside the state patch."""
    monitor.update_game_state({"hp": 10}, frame_number=120, frame=frame(3))
    monitor.update_game_state({"hp": 9}, frame_number=121)
    monitor.flush()
    images = monitor.db.get_run_images("r", "frame")
    assert [row["step"] for row in images] == [120]
    assert monitor.db.get_run_state("r")["game_state"] == {"hp": 9}


def test_a_bad_frame_records_nothing_of_the_call(monitor: WebMonitor) -> None:
    """A refused frame raises before the state patch is recorded."""
    with pytest.raises(ValueError, match="frame must have shape"):
        monitor.update_game_state({"hp": 1}, frame_number=1, frame=np.zeros((4, 4, 2), np.uint8))
    monitor.flush()
    assert "game_state" not in monitor.db.get_run_state("r")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(lambda m: m.log_image("", frame(0)), ValueError, "name", id="empty name"),
        pytest.param(lambda m: m.log_image(3, frame(0)), TypeError, "name", id="number name"),
        pytest.param(lambda m: m.log_image("f", frame(0), step=1.5), TypeError, "step", id="float step"),
        pytest.param(lambda m: m.log_image("f", frame(0), caption=b"x"), TypeError, "caption", id="bytes caption"),
        pytest.param(lambda m: m.log_image("f", "frame.png"), TypeError, "numpy array", id="a path"),
        pytest.param(lambda m: m.log_histogram("q", ["a"]), TypeError, "values", id="strings"),
        pytest.param(lambda m: m.log_histogram("q", [1.0], bins=0), ValueError, "bins", id="no bins"),
        pytest.param(lambda m: m.log_histogram("q\x00", [1.0]), ValueError, "NUL", id="NUL in name"),
    ],
)
def test_bad_arguments_raise_at_the_call(monitor: WebMonitor, call, error: type[Exception], match: str) -> None:
    """A caller's mistake is a TypeError or ValueError at the call, naming what was wrong."""
    with pytest.raises(error, match=match):
        call(monitor)


def test_media_calls_need_an_active_run(tmp_path: Path) -> None:
    """Without a run, log_image and log_histogram raise ValueError like every recording call."""
    with WebMonitor(make_config(tmp_path)) as monitor:
        with pytest.raises(ValueError, match="no active run"):
            monitor.log_image("frame", frame(0))
        with pytest.raises(ValueError, match="no active run"):
            monitor.log_histogram("q", [1.0])


def test_stop_training_commits_the_images_logged_before_it(tmp_path: Path) -> None:
    """Images queued for encoding when the run stops are in the store once stop_training returns."""
    with WebMonitor(make_config(tmp_path)) as monitor:
        monitor.start_training(run_id="r")
        for step in range(30):
            monitor.log_image("frame", frame(step), step=step)
        monitor.stop_training()
        assert len(monitor.db.get_run_images("r", "frame")) == 30


def test_importing_runwatch_does_not_import_numpy_or_pillow() -> None:
    """The media code is imported by the first image or histogram, not by ``import runwatch``."""
    import subprocess

    code = "import sys, runwatch; print('numpy' in sys.modules, 'PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert result.stdout.split() == ["False", "False"]
