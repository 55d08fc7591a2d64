"""Images too large for an ingest batch reach a real server on loopback: remote mode, `runwatch sync`, retries.

An image whose batch (bytes in base64) is over the remote sink's ``max_batch_bytes`` travels alone with its
raw bytes to ``POST /api/ingest/image``; each test reads what the server stored back from its file and
compares the bytes with what the producer logged.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from runwatch.config import MonitorConfig
from runwatch.events import ImageEvent
from runwatch.media.images import MAX_IMAGE_BYTES, encode_image, take_image
from runwatch.monitor import WebMonitor
from runwatch.remote.sink import default_spool_root
from runwatch.store.manager import DatabaseManager
from runwatch.wire.ingest import IMAGE_BODY_TYPE, IMAGE_INGEST_PATH, image_body
from tests.helpers import free_port

TOKEN = "large-images-token-0123"
TIMEOUT = 30


def noise(side: int, seed: int = 0) -> np.ndarray[Any, Any]:
    """An RGB noise frame (its PNG hardly compresses: 600×600 is about 1.08 MB, over one batch)."""
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def png_of(array: np.ndarray[Any, Any]) -> bytes:
    """The PNG runwatch makes of an array (what the server must store, byte for byte)."""
    return encode_image(take_image(array)).data


def server_config(tmp_path: Path, port: int = 0, **settings: Any) -> MonitorConfig:
    """A runwatch server (token required) on a loopback port, storing into tmp_path."""
    return MonitorConfig(
        db_path=str(tmp_path / "server.db"), data_dir=str(tmp_path / "data"), web_port=port, web_token=TOKEN, **settings
    )


def remote(server_url: str, tmp_path: Path, **settings: Any) -> WebMonitor:
    """A producer in remote mode, its spool under tmp_path."""
    config = MonitorConfig(
        db_path=str(tmp_path / "never.db"),
        data_dir=str(tmp_path / "producer"),
        server_url=server_url,
        server_token=TOKEN,
        max_images_per_second=None,
        **settings,
    )
    return WebMonitor(config)


def served_bytes(base_url: str, digest: str) -> bytes:
    """The bytes GET /api/media/{digest} answers."""
    request = urllib.request.Request(f"{base_url}/api/media/{digest}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        data: bytes = answer.read()
        return data


def post_image(base_url: str, body: bytes, content_type: str = IMAGE_BODY_TYPE) -> tuple[int, dict[str, Any]]:
    """POST an image body; the status and the JSON answer."""
    request = urllib.request.Request(
        base_url + IMAGE_INGEST_PATH,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_an_image_too_large_for_a_batch_reaches_a_runwatch_serve_in_order(tmp_path: Path) -> None:
    """A 600×600 noise frame logged in remote mode (its batch over max_batch_bytes: dropped as too_large
    before) is stored by a `runwatch serve` subprocess byte for byte, between the metrics around it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", "serve", "--db", str(tmp_path / "s.db"), "--port", str(port)],
        env={**os.environ, "RUNWATCH_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    frame = noise(600)
    expected = png_of(frame)
    assert (len(expected) + 2) // 3 * 4 > 1000 << 10  # too large for a batch in base64
    try:
        with remote(url, tmp_path) as producer:
            run = producer.start_training(run_id="big-frame")
            producer.update_metrics({"loss": 1.0}, step=1)
            producer.log_image("big", frame, step=3)
            producer.update_metrics({"loss": 0.5}, step=4)
            producer.stop_training()
            assert producer.wait_delivered(TIMEOUT)
            remote_images = producer.db.get_run_images(run, "big")
            sink = producer.statistics()["components"]["server"]
        with DatabaseManager(str(tmp_path / "s.db")) as db:
            images = db.get_run_images(run, "big")
            losses = db.get_run_metrics(run)["loss"].tolist()
        served = served_bytes(url, images[0]["digest"])
    finally:
        serve.terminate()
        _, errors = serve.communicate(timeout=TIMEOUT)
    assert serve.returncode == 0, errors.decode()
    assert [(image["step"], image["width"], image["height"]) for image in images] == [(3, 600, 600)]
    assert served == expected and images[0]["digest"] == hashlib.sha256(expected).hexdigest()
    assert remote_images == images  # the reader API reads the same back over REST
    assert losses == [1.0, 0.5]
    assert sink["dropped_events"] == {} and sink["rejected_events"] == 0


def test_a_large_image_spooled_by_a_killed_producer_is_stored_once_by_sync_run_twice(tmp_path: Path) -> None:
    """A producer killed with SIGKILL after spooling a large image while no server listened loses nothing:
    `runwatch sync` of its spool stores it; the same body posted again (a retry whose answer was lost) is
    answered as a duplicate and stored nothing twice."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "producer"
    frame = noise(620, seed=5)
    np.save(tmp_path / "frame.npy", frame)
    script = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from runwatch import MonitorConfig, WebMonitor
        monitor = WebMonitor(MonitorConfig(data_dir={str(data_dir)!r}, server_url={url!r}, server_token={TOKEN!r}))
        run = monitor.start_training(run_id="killed")
        monitor.update_metrics({{"loss": 1.0}})
        monitor.log_image("big", np.load({str(tmp_path / "frame.npy")!r}), step=1)
        monitor.update_metrics({{"loss": 2.0}})
        assert monitor.flush(30)  # on this disk: spooled and fsync-ed
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    spool = default_spool_root(data_dir, url)
    with WebMonitor(server_config(tmp_path / "server", port)) as server:
        synced = subprocess.run(
            [sys.executable, "-m", "runwatch.cli", "sync", str(spool), "--to", url],
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            env={**os.environ, "RUNWATCH_TOKEN": TOKEN},
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
        with DatabaseManager(server.config.db_path) as db:
            images = db.get_run_images("killed", "big")
            losses = db.get_run_metrics("killed")["loss"].tolist()
        expected = png_of(frame)
        event = ImageEvent(
            "killed", images[0]["timestamp"].timestamp(), "big", 1, expected, "image/png", 620, 620, images[0]["digest"]
        )
        first = post_image(url, image_body("retried", event))
        again = post_image(url, image_body("retried", event))
        with DatabaseManager(server.config.db_path) as db:
            after = db.get_run_images("killed", "big")
        served = served_bytes(url, images[0]["digest"])
    assert served == expected and len(images) == 1 and losses == [1.0, 2.0]
    assert first[0] == 202 and again == (200, {"accepted": 0, "batch_id": "retried", "duplicate": True})
    assert len(after) == 2  # the one posted by hand, once


def test_the_servers_run_image_budget_holds_for_large_images(tmp_path: Path) -> None:
    """Large images count against the server store's max_image_bytes_per_run as any image does: past it
    they are refused and counted, a content the run holds already costs nothing."""
    frames = [noise(600, seed) for seed in range(3)]
    sizes = [len(png_of(frame)) for frame in frames]
    with WebMonitor(server_config(tmp_path / "server", max_image_bytes_per_run=sizes[0] + sizes[1])) as server:
        assert server.web_url is not None
        with remote(server.web_url, tmp_path) as producer:
            run = producer.start_training(run_id="budget")
            for step, frame in enumerate([*frames, frames[0]]):
                producer.log_image("big", frame, step=step)
            producer.stop_training()
            assert producer.wait_delivered(TIMEOUT)
            usage = producer.db.get_media_usage(run)
            steps = [image["step"] for image in producer.db.get_run_images(run, "big")]
    assert steps == [0, 1, 3]
    assert usage["image_bytes"] == sizes[0] + sizes[1] and usage["images_over_budget"] == 1


def test_sync_of_a_store_uploads_a_large_image_once(tmp_path: Path) -> None:
    """`runwatch sync` of an embedded store sends an image too large for a batch body alone, byte for byte;
    a second sync finds it there (a duplicate) and stores nothing again."""
    from runwatch.remote.sync import sync_path

    offline = tmp_path / "offline.db"
    frame = noise(640, seed=9)
    config = MonitorConfig(db_path=str(offline), data_dir=str(tmp_path / "offline"), max_images_per_second=None)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="offline-big")
        monitor.log_image("small", np.zeros((8, 8), np.uint8), step=0)
        monitor.log_image("big", frame, step=1)
        monitor.update_metrics({"loss": 1.0})
        monitor.stop_training()
    with WebMonitor(server_config(tmp_path / "server")) as server:
        assert server.web_url is not None
        first = sync_path(offline, server.web_url, token=TOKEN, patience_seconds=TIMEOUT)
        again = sync_path(offline, server.web_url, token=TOKEN, patience_seconds=TIMEOUT)
        with DatabaseManager(offline) as source, DatabaseManager(server.config.db_path) as target:
            images = target.get_run_images("offline-big")
            assert images == source.get_run_images("offline-big")
        by_name = {image["name"]: image for image in images}
        served = served_bytes(server.web_url, by_name["big"]["digest"])
    assert sorted(by_name) == ["big", "small"] and len(images) == 2 and served == png_of(frame)
    assert first.ok and again.ok and again.stored_batches == 0 and first.stored_events == again.duplicate_events


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        pytest.param(
            lambda header, data: (header, data[:-1] + b"\x00"), 422, "event.digest", id="bytes not the digest"
        ),
        pytest.param(lambda header, data: (header, b""), 422, "event.data", id="no bytes"),
        pytest.param(
            lambda header, data: (header.replace(b'"kind":"image"', b'"kind":"metric"'), data),
            422,
            "event.kind",
            id="not an image",
        ),
        pytest.param(
            lambda header, data: (header.replace(b'"batch_id"', b'"batch"'), data), 422, "batch", id="unknown"
        ),
        pytest.param(lambda header, data: (header[:-1], data), 400, None, id="malformed JSON"),
        pytest.param(lambda header, data: (b"", data.replace(b"\n", b" ")), 400, None, id="no JSON line"),
    ],
)
def test_a_bad_image_body_is_refused_naming_the_field_and_stores_nothing(
    tmp_path: Path, change: Any, status: int, field: str | None
) -> None:
    """A malformed image body is answered 400/422 naming what is wrong; nothing of it is stored."""
    data = png_of(noise(16))
    event = ImageEvent("bad-body", 1.0, "big", 1, data, "image/png", 16, 16, hashlib.sha256(data).hexdigest())
    header, _, raw = image_body("b", event).partition(b"\n")
    header, raw = change(header, raw)
    body = header + b"\n" + raw if header else raw
    with WebMonitor(server_config(tmp_path)) as server:
        assert server.web_url is not None
        answer = post_image(server.web_url, body)
        with DatabaseManager(server.config.db_path) as db:
            runs = [run["run_id"] for run in db.get_training_runs()]
    assert answer[0] == status and answer[1]["error"]["field"] == field
    assert "bad-body" not in runs


def test_an_array_whose_png_is_over_the_image_bound_is_dropped_and_counted(tmp_path: Path) -> None:
    """An array whose PNG comes out over MAX_IMAGE_BYTES (noise hardly compresses) is dropped on the media
    thread as too_large, embedded as remote (no server could take it), and never raised into the loop."""
    side = int((MAX_IMAGE_BYTES / 3) ** 0.5) + 64
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"))
    with WebMonitor(config) as monitor:
        run = monitor.start_training(run_id="huge")
        monitor.log_image("huge", noise(side), step=0)
        monitor.log_image("fine", np.zeros((4, 4), np.uint8), step=0)
        monitor.stop_training()
        dropped = monitor.statistics()["media"]["dropped"]
        names = [image["name"] for image in monitor.db.get_run_images(run)]
    assert dropped == {"too_large": 1} and names == ["fine"]
