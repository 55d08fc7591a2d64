"""Remote mode's queries and media against a real runwatch server on loopback.

A producer in remote mode records runs with metrics (NaN, ±Inf, calls without a step), histograms
and images into a real server; every query it makes must return what the embedded query (a
DatabaseManager on the server's file) returns for the same run, and an image it logged must be
served by the server byte for byte.
"""

from __future__ import annotations

import io
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from runwatch.config import MonitorConfig
from runwatch.events import Metric
from runwatch.exceptions import UnknownRunError
from runwatch.monitor import WebMonitor
from runwatch.remote.reader import RestReader
from runwatch.remote.sink import default_spool_root
from runwatch.store.manager import DatabaseManager

TOKEN = "remote-queries-token-0123"
TIMEOUT = 30
RUNS = ["rq-main", "rq-other"]


def png(shade: int, size: tuple[int, int] = (24, 16)) -> bytes:
    """A small PNG of one shade (its bytes are what the server must serve back)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 7)).save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(tmp_path: Path, **settings: Any) -> WebMonitor:
    """A runwatch server (token required) on a loopback port, storing into tmp_path."""
    config = MonitorConfig(
        db_path=str(tmp_path / "server.db"), data_dir=str(tmp_path / "data"), web_port=0, web_token=TOKEN, **settings
    )
    return WebMonitor(config)


def remote(server_url: str, tmp_path: Path, **settings: Any) -> WebMonitor:
    """A producer in remote mode: its spool under tmp_path, its local store path never created."""
    config = MonitorConfig(
        db_path=str(tmp_path / "never.db"),
        data_dir=str(tmp_path / "producer"),
        server_url=server_url,
        server_token=TOKEN,
        **settings,
    )
    return WebMonitor(config)


def served_bytes(server: WebMonitor, digest: str) -> tuple[str, bytes]:
    """The content type and bytes GET /api/media/{digest} answers."""
    request = urllib.request.Request(
        f"{server.web_url}/api/media/{digest}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        return answer.headers["Content-Type"], answer.read()


class Recorded:
    """The server, its file, and the open remote producer that recorded RUNS into it."""

    def __init__(self, server: WebMonitor, producer: WebMonitor, images: dict[int, bytes]) -> None:
        self.server = server
        self.producer = producer
        self.db = DatabaseManager(server.config.db_path)
        self.images = images  # step → the PNG logged as "samples" at that step


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    """Two runs recorded in remote mode: metrics with NaN, ±Inf and stepless calls, histograms, images."""
    tmp = tmp_path_factory.mktemp("remote-queries")
    server = start_server(tmp / "server")
    assert server.web_url is not None
    producer = remote(server.web_url, tmp, max_images_per_second=None)
    images = {step: png(40 * step) for step in range(5)}
    try:
        run = producer.start_training({"lr": 0.1}, run_id=RUNS[0])
        for step in range(300):
            values: dict[str, Any] = {"loss": 1.0 / (step + 1), "acc": step / 300}
            if step == 7:
                values["loss"] = math.nan
            if step == 8:
                values.update(spike=math.inf, dip=-math.inf)
            if step == 9:
                values["odd, name & more"] = 3.5
            producer.update_metrics(values)
            if step % 50 == 0:
                # A call stored without a step takes the step of the call before it.
                producer.emit_event(Metric(run, time.time(), {"loss": 5.0, "system/gpu": 0.5}, None))
        producer.update_metrics({"loss": 0.25}, step=1000)  # a jump
        rng = np.random.default_rng(3)
        for step in range(5):
            producer.log_histogram("q_values", rng.normal(step, 1.0, 500), step=step * 10, bins=16)
            producer.log_image("samples", images[step], step=step, caption=f"sample {step}")
        producer.log_histogram("q_values", [1.5, 2.5, math.nan, math.inf, -math.inf], step=60)  # NaN, ±Inf in no bin
        producer.log_histogram("q_values", [math.nan, -math.inf], step=70)  # no finite value: no bins
        producer.update_game_state({"level": 2}, frame_number=3, frame=np.full((10, 12, 3), 90, np.uint8))
        producer.stop_training(final_reward=1.0)
        producer.start_training(run_id=RUNS[1])
        for step in range(40):
            producer.update_metrics({"reward": float(step), "loss": 2.0 - step / 40})
        producer.stop_training()
        assert producer.wait_delivered(TIMEOUT)
        yield Recorded(server, producer, images)
    finally:
        producer.close()
        server.close()


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(None, id="every metric"),
        pytest.param(["loss"], id="one metric"),
        pytest.param(["spike", "acc", "loss"], id="several, in the order given"),
        pytest.param(["system/gpu"], id="only stepless calls"),
        pytest.param(["nowhere"], id="a metric no run logged"),
        pytest.param([], id="no metric"),
        pytest.param(["odd, name & more", "loss", "loss"], id="a name with a comma, a name twice"),
    ],
)
def test_get_runs_metrics_over_rest_is_the_embedded_frame(recorded: Recorded, names: list[str] | None) -> None:
    """get_runs_metrics in remote mode gives the embedded long frame: rows, order, dtypes, NaN, ±Inf, carried steps."""
    remote_frame = recorded.producer.get_runs_metrics(RUNS, names)
    embedded = recorded.db.get_runs_metrics(RUNS, names)
    pd.testing.assert_frame_equal(remote_frame, embedded)
    if names is None:
        assert len(embedded) > 600 and np.isinf(embedded["value"]).sum() == 2 and embedded["value"].isna().sum() == 1


def test_remote_runs_metrics_refuse_what_the_embedded_refuse(recorded: Recorded) -> None:
    """An unknown run, too many runs or a run id of the wrong type fail alike in both modes."""
    for call in (recorded.producer.get_runs_metrics, recorded.db.get_runs_metrics):
        with pytest.raises(UnknownRunError):
            call([RUNS[0], "no-such-run"])
        with pytest.raises(UnknownRunError):
            call(["no-such-run"], [])
        with pytest.raises(ValueError, match="at most 50"):
            call([f"r{i}" for i in range(51)])
        with pytest.raises(TypeError):
            call("rq-main")  # type: ignore[arg-type]


@pytest.mark.parametrize("align", ["step", "call"])
def test_get_run_metrics_over_rest_is_the_embedded_frame(recorded: Recorded, align: str) -> None:
    """get_run_metrics in remote mode gives the embedded frame for both alignments."""
    for names in (None, ["loss", "system/gpu"]):
        pd.testing.assert_frame_equal(
            recorded.producer.get_run_metrics(RUNS[0], names, align=align),
            recorded.db.get_run_metrics(RUNS[0], names, align=align),
        )


def test_get_run_histograms_over_rest_is_the_embedded_frame(recorded: Recorded) -> None:
    """get_run_histograms in remote mode gives the embedded frame: summary columns, dtypes, edges and counts."""
    remote_frame = recorded.producer.get_run_histograms(RUNS[0], "q_values")
    embedded = recorded.db.get_run_histograms(RUNS[0], "q_values")
    assert len(embedded) == 7 and list(remote_frame.columns) == list(embedded.columns)
    arrays = ["bin_edges", "counts"]
    pd.testing.assert_frame_equal(remote_frame.drop(columns=arrays), embedded.drop(columns=arrays))
    for column in arrays:
        for mine, theirs in zip(remote_frame[column], embedded[column], strict=True):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert embedded["posinf_count"].iloc[5] == 1 and len(embedded["counts"].iloc[6]) == 0
    empty = recorded.producer.get_run_histograms(RUNS[0], "never-logged")
    pd.testing.assert_frame_equal(empty, recorded.db.get_run_histograms(RUNS[0], "never-logged"))
    assert recorded.producer.db.get_histogram_names(RUNS[0]) == recorded.db.get_histogram_names(RUNS[0])


def test_image_reads_over_rest_are_the_embedded_ones(recorded: Recorded) -> None:
    """Image lists, the image at a step with its bytes, and contents by digest are the embedded ones."""
    reader = recorded.producer.db
    assert isinstance(reader, RestReader)
    db = recorded.db
    every = db.get_run_images(RUNS[0])
    assert [image["name"] for image in every] == ["frame"] + ["samples"] * 5
    assert reader.get_run_images(RUNS[0]) == every
    assert reader.get_run_images(RUNS[0], "samples", start_step=1, end_step=3) == db.get_run_images(
        RUNS[0], "samples", start_step=1, end_step=3
    )
    for step in (None, 0, 2, 100):
        assert reader.get_image(RUNS[0], "samples", step) == db.get_image(RUNS[0], "samples", step)
    assert reader.get_image(RUNS[0], "samples", -1) is None and db.get_image(RUNS[0], "samples", -1) is None
    assert reader.get_image(RUNS[0], "nothing") is None
    frame = db.get_image(RUNS[0], "frame")
    assert frame is not None and frame["step"] == 3 and (frame["width"], frame["height"]) == (12, 10)
    digest = every[1]["digest"]
    assert reader.get_image_data(digest) == db.get_image_data(digest) == ("image/png", recorded.images[0])
    assert reader.get_image_data(digest.upper()) == db.get_image_data(digest.upper())
    assert reader.get_image_data("0" * 64) is None and db.get_image_data("0" * 64) is None
    assert reader.get_image_data("not a digest") is None and db.get_image_data("not a digest") is None
    with pytest.raises(UnknownRunError):
        reader.get_image("no-such-run", "samples")


def test_an_image_logged_remotely_is_served_byte_exact(recorded: Recorded) -> None:
    """Every image the producer logged is listed by the server's REST API and served byte for byte."""
    images = recorded.db.get_run_images(RUNS[0], "samples")
    assert [image["step"] for image in images] == list(range(5))
    for image in images:
        content_type, data = served_bytes(recorded.server, image["digest"])
        assert content_type == "image/png" and data == recorded.images[image["step"]]
        assert image["caption"] == f"sample {image['step']}"


def test_remote_images_keep_the_rate_limit_and_the_servers_budget(tmp_path: Path) -> None:
    """Images past the per-name rate are dropped at the producer, past the run's byte budget refused by the
    server and counted there; every other image the producer encoded is stored (none is lost on the way)."""
    frames = [png(shade, (64, 64)) for shade in range(0, 250, 10)]
    budget = sum(len(data) for data in frames[:3])
    server = start_server(tmp_path / "server", max_image_bytes_per_run=budget)
    try:
        assert server.web_url is not None
        with remote(server.web_url, tmp_path / "limited", max_images_per_second=1.0) as producer:
            producer.start_training(run_id="limited")
            for data in frames:
                producer.log_image("burst", data)
            producer.stop_training()
            assert producer.wait_delivered(TIMEOUT)
            limited = producer.statistics()["media"]
        with remote(server.web_url, tmp_path / "budget", max_images_per_second=None) as producer:
            producer.start_training(run_id="budget")
            for step, data in enumerate(frames):
                producer.log_image("many", data, step=step)
            producer.stop_training()
            assert producer.wait_delivered(TIMEOUT)
            budgeted = producer.statistics()["media"]
            listed = producer.db.get_run_images("budget")
            usage = producer.db.get_media_usage("budget")
        with DatabaseManager(server.config.db_path) as db:
            assert limited["dropped"].get("rate_limited", 0) >= 1
            assert len(db.get_run_images("limited")) == limited["images_encoded"] >= 1
            counted = db.get_media_usage("budget")
            stored = db.get_run_images("budget")
    finally:
        server.close()
    assert budgeted["images_encoded"] == len(frames) and not budgeted["dropped"]
    assert counted["images_over_budget"] > 0 and counted["image_bytes"] <= budget
    assert len(stored) + counted["images_over_budget"] == len(frames)
    assert listed == stored and usage == counted


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_images_spooled_by_a_killed_producer_reach_the_server_byte_exact(tmp_path: Path) -> None:
    """A producer process that spooled images while no server listened, then was killed with SIGKILL, loses
    none of them: `runwatch sync` of its spool (a real subprocess) stores them, served byte for byte."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "producer"
    frames = [png(shade) for shade in (11, 99, 201)]
    for index, data in enumerate(frames):
        (tmp_path / f"frame{index}.png").write_bytes(data)
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        import numpy as np
        from runwatch import MonitorConfig, WebMonitor
        monitor = WebMonitor(MonitorConfig(data_dir={str(data_dir)!r}, server_url={url!r}, server_token={TOKEN!r}))
        run = monitor.start_training()
        print(run, flush=True)
        for index in range(3):
            monitor.update_metrics({{"loss": float(index)}})
            monitor.log_image("frame", Path({str(tmp_path)!r}, f"frame{{index}}.png").read_bytes())
            monitor.log_histogram("h", np.arange(10.0) * index, bins=4)
        assert monitor.flush(30)  # on this disk: spooled and fsync-ed
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT, check=False, cwd=tmp_path
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id = killed.stdout.strip()
    spool = default_spool_root(data_dir, url)
    server = WebMonitor(
        MonitorConfig(
            db_path=str(tmp_path / "server.db"), data_dir=str(tmp_path / "server"), web_port=port, web_token=TOKEN
        )
    )
    try:
        synced = subprocess.run(
            [sys.executable, "-m", "runwatch.cli", "sync", str(spool), "--to", url],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            check=False,
            env={**os.environ, "RUNWATCH_TOKEN": TOKEN},
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
        with DatabaseManager(server.config.db_path) as db:
            images = db.get_run_images(run_id, "frame")
            histograms = db.get_run_histograms(run_id, "h")
            metrics = db.get_run_metrics(run_id)
        served = [served_bytes(server, image["digest"])[1] for image in images]
    finally:
        server.close()
    assert served == frames
    assert len(histograms) == 3 and histograms["size"].tolist() == [10, 10, 10]
    assert metrics["loss"].tolist() == [0.0, 1.0, 2.0]


def assert_same_histograms(mine: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Two get_run_histograms frames hold the same values, dtypes, edges and counts."""
    arrays = ["bin_edges", "counts"]
    assert list(mine.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(mine.drop(columns=arrays), theirs.drop(columns=arrays))
    for column in arrays:
        for left, right in zip(mine[column], theirs[column], strict=True):
            assert left.dtype == right.dtype and np.array_equal(left, right)


def test_sync_of_a_store_uploads_its_images_and_histograms_once(tmp_path: Path) -> None:
    """`runwatch sync` of an embedded store carries its images (byte-exact) and histograms; a second sync
    finds every batch there and stores nothing again."""
    from runwatch.remote.sync import MEDIA_CHUNK_ROWS, sync_path

    offline = tmp_path / "offline.db"
    frames = [png(shade) for shade in range(0, 250, 2)]  # more than one chunk with the repeats below
    config = MonitorConfig(
        db_path=str(offline), data_dir=str(tmp_path / "offline"), web_port=0, max_images_per_second=None
    )
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="offline-media")
        for step in range(MEDIA_CHUNK_ROWS + 30):
            monitor.update_metrics({"loss": 1.0 / (step + 1)})
            monitor.log_image("frame", frames[step % len(frames)], caption=None if step % 3 else f"s{step}")
            if step % 20 == 0:
                monitor.log_histogram("w", np.linspace(-1.0, step, 50), bins=8)
        monitor.log_histogram("w", [math.nan, math.inf], step=9999)
        monitor.stop_training()
    server = start_server(tmp_path / "server")
    try:
        assert server.web_url is not None
        first = sync_path(offline, server.web_url, token=TOKEN, patience_seconds=TIMEOUT)
        again = sync_path(offline, server.web_url, token=TOKEN, patience_seconds=TIMEOUT)
        with DatabaseManager(offline) as source, DatabaseManager(server.config.db_path) as target:
            images = target.get_run_images("offline-media")
            assert images == source.get_run_images("offline-media") and len(images) == MEDIA_CHUNK_ROWS + 30
            assert_same_histograms(
                target.get_run_histograms("offline-media", "w"), source.get_run_histograms("offline-media", "w")
            )
        served = {image["digest"]: served_bytes(server, image["digest"])[1] for image in images[: len(frames)]}
    finally:
        server.close()
    assert first.ok and again.ok and again.stored_batches == 0 and again.duplicate_batches >= 4
    assert all(data in frames for data in served.values()) and len(served) == len(frames)


async def test_a_remote_image_reaches_the_servers_live_subscribers_and_is_served(tmp_path: Path) -> None:
    """The dashboard's live feed: a /ws subscriber of the server gets a remote producer's image and histogram
    as they arrive (the image without its bytes), and the digest's URL serves the bytes the producer logged."""
    import anyio
    import orjson
    import websockets

    server = start_server(tmp_path / "server")
    logged = png(123)
    try:
        assert server.web_url is not None
        url = server.web_url.replace("http", "ws", 1) + "/ws"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with remote(server.web_url, tmp_path) as producer:
            producer.start_training(run_id="live-remote")
            async with websockets.connect(url, additional_headers=headers) as socket:
                await socket.send(orjson.dumps({"subscribe": {"kinds": ["image", "histogram"]}}))
                await socket.recv()  # subscribed
                await anyio.to_thread.run_sync(lambda: producer.log_image("frame", logged, step=2))
                await anyio.to_thread.run_sync(lambda: producer.log_histogram("q", [1.0, 2.0, 3.0], step=2, bins=3))
                seen: dict[str, dict[str, Any]] = {}
                with anyio.fail_after(TIMEOUT):
                    while not {"image", "histogram"} <= seen.keys():
                        message = orjson.loads(await socket.recv())
                        for event in message.get("events", []):
                            seen[event["kind"]] = event
            producer.stop_training()
        image, histogram = seen["image"], seen["histogram"]
        assert "data" not in image and (image["run_id"], image["name"], image["step"]) == ("live-remote", "frame", 2)
        assert histogram["counts"] == [1, 1, 1]
        assert await anyio.to_thread.run_sync(served_bytes, server, image["digest"]) == ("image/png", logged)
    finally:
        server.close()


def test_get_metric_rollups_over_rest_is_the_embedded_frame(tmp_path: Path) -> None:
    """After the server's store downsampled a remote run, its rollups read remotely are the embedded frame."""
    from datetime import UTC, datetime

    server = start_server(tmp_path / "server")
    try:
        assert server.web_url is not None
        with remote(server.web_url, tmp_path) as producer:
            producer.start_training(run_id="rolled")
            for step in range(120):
                value = math.inf if step == 33 else math.nan if step == 34 else float(step)
                producer.update_metrics({"loss": value, "acc": step / 120})
            producer.stop_training()
            assert producer.wait_delivered(TIMEOUT)
            with DatabaseManager(server.config.db_path) as db:
                assert db.downsample_metrics(datetime.now(UTC), bucket_rows=10)["written_rollups"] > 0
                for names in (None, ["loss"], []):
                    embedded = db.get_metric_rollups("rolled", names)
                    pd.testing.assert_frame_equal(producer.db.get_metric_rollups("rolled", names), embedded)
                assert math.isinf(db.get_metric_rollups("rolled", ["loss"])["max"].iloc[3])
            with pytest.raises(UnknownRunError):
                producer.db.get_metric_rollups("no-such-run")
            with pytest.raises(TypeError):
                producer.db.get_metric_rollups("rolled", "loss")  # type: ignore[arg-type]
    finally:
        server.close()
