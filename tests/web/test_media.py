"""The media routes on a real server over loopback: image lists and bytes, histogram series."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from runwatch import MonitorConfig, WebMonitor
from runwatch.events import ImageEvent
from runwatch.pipeline.component import ComponentContext
from runwatch.sinks.websocket import SubscriptionFilter, WebsocketHub


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A monitor whose run 'r' logged 3 frames, one map image and 2 histograms, with its web interface."""
    directory: Path = tmp_path_factory.mktemp("media-web")
    config = MonitorConfig(db_path=str(directory / "runs.db"), data_dir=str(directory / "data"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="r")
        for step in range(3):
            monitor.log_image("frame", np.full((6, 8, 3), step * 50, np.uint8), step=step, caption=f"s{step}")
        monitor.log_image("maps/world", np.zeros((4, 4), np.uint8), step=1)
        monitor.log_histogram("q", [0.0, 1.0, 1.0, float("inf")], step=0, bins=2)
        monitor.log_histogram("q", [2.0, 3.0], step=5, bins=2)
        monitor.flush()
        assert monitor.web_url is not None
        with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
            yield client


def test_image_names_list_each_name_with_its_latest_image(served: httpx.Client) -> None:
    """/images names every image series with its count, step range and latest image's URL."""
    body = served.get("/api/runs/r/images").json()
    by_name = {entry["name"]: entry for entry in body["names"]}
    assert set(by_name) == {"frame", "maps/world"}
    frame = by_name["frame"]
    assert (frame["count"], frame["first_step"], frame["last_step"]) == (3, 0, 2)
    assert frame["latest"]["step"] == 2 and frame["latest"]["url"] == f"/api/media/{frame['latest']['digest']}"


def test_image_list_and_at_step_give_metadata_by_step(served: httpx.Client) -> None:
    """/images/list gives a name's images by step; /images/at the latest at or before a step, else 404."""
    listed = served.get("/api/runs/r/images/list", params={"name": "frame", "start_step": 1}).json()["images"]
    assert [(row["step"], row["caption"], row["width"], row["height"]) for row in listed] == [
        (1, "s1", 8, 6),
        (2, "s2", 8, 6),
    ]
    at = served.get("/api/runs/r/images/at", params={"name": "frame", "step": 1}).json()
    assert at["step"] == 1 and at["mime"] == "image/png"
    missing = served.get("/api/runs/r/images/at", params={"name": "frame", "step": -1})
    assert missing.status_code == 404 and "at or before step -1" in missing.json()["error"]["message"]
    assert served.get("/api/runs/nope/images").status_code == 404


def test_image_bytes_are_served_by_digest_with_immutable_caching(served: httpx.Client) -> None:
    """/api/media/{digest} answers the PNG with its type, an ETag and immutable caching; the ETag gets a 304."""
    at = served.get("/api/runs/r/images/at", params={"name": "frame"}).json()
    response = served.get(at["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert hashlib.sha256(response.content).hexdigest() == at["digest"]
    assert "immutable" in response.headers["cache-control"] and response.headers["etag"] == f'"{at["digest"]}"'
    with Image.open(io.BytesIO(response.content)) as picture:
        assert np.asarray(picture)[0, 0].tolist() == [100, 100, 100]
    cached = served.get(at["url"], headers={"If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""


@pytest.mark.parametrize(
    ("digest", "status"), [pytest.param("0" * 64, 404, id="unknown"), pytest.param("xyz", 422, id="not a digest")]
)
def test_unknown_or_malformed_digests_are_refused(served: httpx.Client, digest: str, status: int) -> None:
    """An unknown content is 404; a digest that is no SHA-256 is 422 naming the field."""
    response = served.get(f"/api/media/{digest}")
    assert response.status_code == status
    if status == 422:
        assert response.json()["error"]["field"] == "digest"


def test_histogram_series_give_bins_and_summary_by_step(served: httpx.Client) -> None:
    """/histograms names the series; /histograms/series gives each step's bins, counts and summary."""
    names = served.get("/api/runs/r/histograms").json()["names"]
    assert names == [{"name": "q", "count": 2, "first_step": 0, "last_step": 5}]
    series = served.get("/api/runs/r/histograms/series", params={"name": "q"}).json()["histograms"]
    assert [(h["step"], h["counts"], h["low"], h["high"], h["posinf_count"]) for h in series] == [
        (0, [1, 2], 0.0, 1.0, 1),
        (5, [1, 1], 2.0, 3.0, 0),
    ]
    assert (
        served.get("/api/runs/r/histograms/series", params={"name": "q", "start_step": 1}).json()["histograms"][0][
            "step"
        ]
        == 5
    )


def test_media_routes_validate_their_parameters(served: httpx.Client) -> None:
    """A missing name, a step that is no integer or a max_count below 1 is a 422."""
    assert served.get("/api/runs/r/images/list").status_code == 422
    assert served.get("/api/runs/r/histograms/series", params={"name": "q", "start_step": "x"}).status_code == 422
    refused = served.get("/api/runs/r/histograms/series", params={"name": "q", "max_count": 0})
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "max_count"
    thinned = served.get("/api/runs/r/histograms/series", params={"name": "q", "max_count": 1}).json()["histograms"]
    assert [h["step"] for h in thinned] == [5]


async def test_live_subscribers_get_images_without_bytes_and_fetch_them_by_digest(tmp_path: Path) -> None:
    """A /ws subscriber to images and histograms gets each as it is logged (no bytes); the digest's URL serves them."""
    import anyio
    import websockets

    config = MonitorConfig(db_path=str(tmp_path / "runs.db"), data_dir=str(tmp_path / "data"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="live")
        assert monitor.web_url is not None
        url = monitor.web_url.replace("http", "ws", 1) + "/ws"
        async with websockets.connect(url) as socket:
            await socket.send(orjson.dumps({"subscribe": {"kinds": ["image", "histogram"]}}))
            await socket.recv()  # subscribed
            await anyio.to_thread.run_sync(lambda: monitor.log_image("frame", np.full((4, 4), 9, np.uint8), step=3))
            await anyio.to_thread.run_sync(lambda: monitor.log_histogram("q", [1.0, 2.0], step=3, bins=2))
            seen: dict[str, dict] = {}
            with anyio.fail_after(10):
                while len(seen) < 2:
                    message = orjson.loads(await socket.recv())
                    for event in message.get("events", []):
                        seen[event["kind"]] = event
        image, histogram = seen["image"], seen["histogram"]
        assert "data" not in image and (image["name"], image["step"], image["width"]) == ("frame", 3, 4)
        assert histogram["counts"] == [1, 1] and histogram["step"] == 3
        monitor.flush()
        async with httpx.AsyncClient(base_url=monitor.web_url) as client:
            response = await client.get(f"/api/media/{image['digest']}")
        assert response.status_code == 200 and hashlib.sha256(response.content).hexdigest() == image["digest"]


def image_event(step: int, size: int, run_id: str = "r") -> ImageEvent:
    data = bytes([step % 256]) * size  # the hub keeps bytes as they are: no PNG needed here
    return ImageEvent(run_id, 1.0 + step, "frame", step, data, "image/png", 1, 1, hashlib.sha256(data).hexdigest())


async def test_the_hub_keeps_the_latest_image_bytes_within_its_bound_and_replays_images_without_them() -> None:
    """The hub answers the bytes of its latest images up to recent_image_bytes (oldest out first); the events
    it keeps for replay hold no image bytes."""
    hub = WebsocketHub("live", WebsocketHub.Options(recent_image_bytes=2500), ComponentContext())
    images = [image_event(step, 1000) for step in range(3)]
    await hub.write(images)  # nobody subscribed: kept at once
    assert hub.recent_image(images[0].digest) is None  # 3000 bytes > 2500: the oldest went
    assert [hub.recent_image(image.digest) for image in images[1:]] == [
        ("image/png", image.data) for image in images[1:]
    ]
    assert hub.recent_image("0" * 64) is None
    subscriber = hub.subscribe(SubscriptionFilter(kinds=("image",)))
    assert hub.replay(subscriber, 10) == 3
    replayed = orjson.loads(subscriber._queue[0][0])["events"]
    assert [(event["step"], "data" in event) for event in replayed] == [(0, False), (1, False), (2, False)]
    assert all(event.data == b"" for event in hub._recent)


async def test_a_live_frame_is_served_before_the_store_commits_it(tmp_path: Path) -> None:
    """/api/media/{digest} answers a frame as soon as the websocket hub has announced it, before the store has
    committed it (here the store sink commits every 30 s, or at a flush)."""
    import anyio
    import websockets

    graph = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": ["app"], "flush_interval_seconds": 30},
            "live": {"type": "websocket_hub", "inputs": ["app"]},
        },
    }
    config = MonitorConfig(
        db_path=str(tmp_path / "runs.db"), data_dir=str(tmp_path / "data"), web_port=0, pipeline=graph
    )
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="r")
        assert monitor.web_url is not None
        async with websockets.connect(monitor.web_url.replace("http", "ws", 1) + "/ws") as socket:
            await socket.send(orjson.dumps({"subscribe": {"kinds": ["image"]}}))
            await socket.recv()  # subscribed
            await anyio.to_thread.run_sync(lambda: monitor.log_image("frame", np.full((4, 4), 9, np.uint8), step=1))
            with anyio.fail_after(10):
                events: list[dict[str, Any]] = []
                while not events:
                    events = orjson.loads(await socket.recv()).get("events", [])
        async with httpx.AsyncClient(base_url=monitor.web_url) as client:
            stored = (await client.get("/api/runs/r/images")).json()["names"]
            response = await client.get(f"/api/media/{events[0]['digest']}")
            unknown = await client.get(f"/api/media/{'0' * 64}")
    assert stored == []  # not committed yet
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert hashlib.sha256(response.content).hexdigest() == events[0]["digest"]
    assert "immutable" in response.headers["cache-control"]
    assert unknown.status_code == 404
