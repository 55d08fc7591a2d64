"""End to end: a training loop logs a NaN loss; the alert fires everywhere within a second."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import anyio
import httpx
from websockets.asyncio.client import connect

from runwatch import MonitorConfig, WebMonitor


async def test_a_nan_loss_fires_an_alert_in_the_api_the_events_and_on_a_subscriber_within_a_second(
    tmp_path: Path,
) -> None:
    """With the default rules a NaN loss fires non_finite_metric on /ws, in /api/alerts and in the events."""
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    monitor = await anyio.to_thread.run_sync(WebMonitor, config)
    try:
        run_id = await anyio.to_thread.run_sync(monitor.start_training)
        url = monitor.web_url.replace("http://", "ws://") + f"/ws?runs={run_id}&kinds=alert"
        async with connect(url, open_timeout=10) as ws:
            assert json.loads(await ws.recv())["type"] == "subscribed"
            await anyio.to_thread.run_sync(monitor.update_metrics, {"loss": 0.5})
            emitted = time.monotonic()
            await anyio.to_thread.run_sync(monitor.update_metrics, {"loss": float("nan")})
            with anyio.fail_after(5):
                while True:
                    message = json.loads(await ws.recv())
                    alerts = [e for e in message.get("events", []) if e["state"] == "firing"]
                    if alerts:
                        break
            on_websocket = time.monotonic() - emitted
            assert alerts[0]["rule"] == "non_finite_metric" and alerts[0]["labels"] == {"metric": "loss"}
            assert on_websocket < 1.0, f"the alert took {on_websocket:.3f} s to reach the subscriber"

        async with httpx.AsyncClient(base_url=monitor.web_url, timeout=10) as client:
            with anyio.fail_after(5):
                while True:  # the store commits within its flush interval (0.5 s)
                    active = (await client.get("/api/alerts", params={"run_id": run_id})).json()["alerts"]
                    if active:
                        break
                    await asyncio.sleep(0.05)  # polling the REST API is the behaviour under test
            in_api = time.monotonic() - emitted
        assert [(a["rule"], a["state"], a["severity"]) for a in active] == [("non_finite_metric", "firing", "critical")]
        assert in_api < 1.0, f"the alert took {in_api:.3f} s to show in /api/alerts"
        events = await anyio.to_thread.run_sync(monitor.get_run_events, run_id, "alert")
        assert [e["event_data"]["state"] for e in events] == ["firing"]
    finally:
        await anyio.to_thread.run_sync(monitor.close)
