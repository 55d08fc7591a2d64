"""Images on the scale-out bus, on a real nats-server and PostgreSQL: their bytes travel in JetStream's object
store (chunked), so an image larger than the servers' max_payload is stored, once, by the worker."""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import nats
import numpy as np
import pytest
from PIL import Image

from runwatch.assemble import BusSettings, bus_serve_pipeline_config, worker_pipeline_config
from runwatch.bus.streams import MEDIA_BUCKET
from runwatch.events import ImageEvent, Metric
from runwatch.exceptions import UnknownRunError
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.sources.ingest import INGEST
from runwatch.store.postgres import PostgresStore
from runwatch.testing.servers import NatsCluster

from .scenario import eventually

pytestmark = pytest.mark.timeout(60)

T0 = 1_800_000_000.0


def png(side: int, seed: int) -> bytes:
    """A noise PNG (it hardly compresses: 1800×1800 RGB is about 9.7 MB, over the servers' 8 MB max_payload)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image(run_id: str, name: str, step: int, data: bytes, side: int) -> ImageEvent:
    return ImageEvent(run_id, T0 + step, name, step, data, "image/png", side, side, hashlib.sha256(data).hexdigest())


@asynccontextmanager
async def pipeline(graph: dict[str, Any], dsn: str) -> AsyncIterator[Pipeline]:
    with tempfile.TemporaryDirectory(prefix="runwatch-node-") as data_dir:
        async with Pipeline(graph, context=ComponentContext(db_path=dsn, data_dir=Path(data_dir))) as running:
            yield running


async def test_an_image_over_max_payload_is_stored_once_and_its_object_removed(
    nats_server: NatsCluster, postgres_dsn: str
) -> None:
    """A batch with a 9.7 MB image (over the servers' max_payload) and a small one, ingested at a serve node,
    is stored by the worker with both byte for byte; the same batch again stores nothing twice; once stored,
    the objects that carried the bytes are removed."""
    await anyio.to_thread.run_sync(PostgresStore(postgres_dsn).prepare)
    bus = BusSettings(tuple(nats_server.urls), partitions=4)
    big, small = png(1800, 1), png(16, 2)
    assert len(big) > 8 * 1000 * 1000
    events = [
        Metric("img", T0, {"loss": 1.0}, 0),
        image("img", "big", 1, big, 1800),
        image("img", "small", 1, small, 16),
        Metric("img", T0 + 2, {"loss": 0.5}, 2),
    ]
    store = PostgresStore(postgres_dsn)
    async with (
        pipeline(bus_serve_pipeline_config(bus), postgres_dsn) as serve,
        pipeline(worker_pipeline_config(bus, postgres_dsn), postgres_dsn) as worker,
    ):
        ingest = serve.context.services[INGEST]
        first = await ingest.submit(events, "b1", digest="d1")
        again = await ingest.submit(events, "b1", digest="d1")

        async def stored() -> bool:
            try:
                return len(await anyio.to_thread.run_sync(store.image_names, "img")) == 2
            except UnknownRunError:  # not stored yet
                return False

        await eventually(stored, timeout=30, pause=0.05)
        client = await nats.connect(servers=nats_server.urls)
        try:
            objects = await client.jetstream().object_store(MEDIA_BUCKET)

            async def removed() -> bool:
                try:
                    return not await objects.list(ignore_deletes=True)
                except nats.js.errors.NotFoundError:  # no object at all
                    return True

            await eventually(removed, timeout=30, pause=0.05)
        finally:
            await client.close()
        statistics = worker.statistics()["components"]["bus"]
    contents = [
        await anyio.to_thread.run_sync(store.image_content, hashlib.sha256(data).hexdigest()) for data in (big, small)
    ]
    rows = await anyio.to_thread.run_sync(lambda: store.images("img", "big"))
    assert (first.accepted, first.duplicate, again.duplicate) == (4, False, True)
    assert contents == [("image/png", big), ("image/png", small)]
    assert len(rows) == 1 and store.run_summary("img")["metrics"]["loss"]["count"] == 2
    assert statistics["fetched_images"] == 2 and statistics["missing_images"] == 0
