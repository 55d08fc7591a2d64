"""Images too large for an ingest batch reach a real server on loopback: remote mode, `runwatch sync`, retries.

An image whose batch (bytes in base64) is over the remote sink's ``max_batch_bytes`` travels alone with its
raw bytes to ``POST /api/ingest/image``; each test reads what the server stored back from its file and
compares the bytes with what the producer logged.
"""

from __future__ import annotations

import hashlib
import io
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
from PIL import Image

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
