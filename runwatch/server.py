"""``runwatch serve``: the pipeline and the web app in one process, until a signal.

The event loop runs in a daemon thread (as for :class:`~runwatch.WebMonitor`);
the main thread owns signal handling. The first SIGINT or SIGTERM stops
intake (REST answers 503), closes websocket subscribers with 1001, drains
every queue into the store and exits 0. A second signal exits at once with
status 1, logging how many events were still queued.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from .config import MonitorConfig

__all__ = ["run_server"]

logger = logging.getLogger("runwatch")


def pipeline_config_of(config: MonitorConfig) -> Any:
    """The monitor's pipeline graph: its own, or the default one sized by its settings."""
    if config.pipeline is not None:
        return config.pipeline
    from .pipeline.config import default_pipeline_config

    return default_pipeline_config(
        alerts=True,
        snapshots=True,
        system=True,
        snapshot_interval_seconds=config.snapshot_interval,
        max_snapshots=config.max_snapshots,
        max_events=config.max_events,
    )


def start_server(config: MonitorConfig, *, required: bool = True) -> Any:
    """Build and start the pipeline thread with the web companion; returns the thread."""
    from .pipeline.component import ComponentContext
    from .pipeline.runtime import Pipeline
    from .pipeline.thread import PipelineThread
    from .store.manager import DatabaseManager
    from .web.server import WebSettings, web_companion

    context = ComponentContext(db_path=config.db_path, data_dir=Path(config.data_dir))
    pipeline = Pipeline(pipeline_config_of(config), context=context)
    web = WebSettings(host=config.web_host, port=config.web_port, token=config.web_token)
    thread = PipelineThread(pipeline, companions=[web_companion(web, config.db_path, required=required)])
    thread.start()
    try:
        with DatabaseManager(config.db_path) as db:
            crashed = db.mark_crashed_runs()
        if crashed:
            logger.warning("runwatch: marked %d run(s) whose process is gone as crashed", len(crashed))
    except Exception:  # detection is best effort; serving matters more
        logger.exception("runwatch: checking for crashed runs failed")
    return thread


def queued_events(thread: Any) -> int:
    """Events accepted but not yet committed (buffers, intake, sink pending)."""
    total = 0
    for entry in thread.pipeline.statistics()["components"].values():
        total += entry.get("buffer", {}).get("buffered_events", 0)
        total += entry.get("intake", {}).get("buffered_events", 0)
        total += entry.get("pending_events", 0)
    return total


def run_server(config: MonitorConfig) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(level=logging.DEBUG if config.debug else logging.INFO, format="%(message)s")
    thread = start_server(config)
    server = thread.companion_values[0]
    print(f"runwatch: serving {Path(config.db_path).resolve()} at {server.url}", flush=True)
    if server.token and not config.web_token:
        print(f"runwatch: access token (not bound to loopback): {server.token}", flush=True)
    stop = threading.Event()
    signals_seen: list[int] = []

    def on_signal(number: int, frame: FrameType | None) -> None:
        signals_seen.append(number)
        if len(signals_seen) > 1:
            lost = queued_events(thread)
            logger.error("runwatch: second signal: exiting now; %d queued event(s) not committed", lost)
            sys.stdout.flush()
            os._exit(1)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            if not thread.running:
                logger.error("runwatch: the pipeline stopped unexpectedly")
                return 1
        print("runwatch: stopping: draining queues into the store", flush=True)
        thread.close()
        print("runwatch: stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
