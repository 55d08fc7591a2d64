"""``runwatch serve`` and ``runwatch worker``: a pipeline (and for serve the web app) until a signal.

The event loop runs in a daemon thread (as for :class:`~runwatch.WebMonitor`);
the main thread owns signal handling. The first SIGINT or SIGTERM stops
intake (REST answers 503), closes websocket subscribers with 1001, drains
every queue into the store and exits 0. A second signal exits at once with
status 1, logging how many events were still queued.

Scale-out (docs/scale.md): with a bus (``--bus nats://…``), ``serve`` is a
stateless node — ingest publishes to NATS JetStream and is answered on the
PubAck, websocket subscribers get live events from the bus's live stream,
REST reads the shared PostgreSQL store — and ``runwatch worker`` owns
partitions of the runs: bus → liveness → alerts → PostgreSQL. The composition
root builds both (:func:`runwatch.assemble.assemble_server`,
:func:`runwatch.assemble.assemble_worker`).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from .assemble import Assembly, BusSettings, assemble_server, assemble_worker
from .config import MonitorConfig
from .sinks.sqlite import SQLiteSink
from .store.backends import is_postgres_url, redact_dsn

__all__ = ["run_server", "run_worker"]

logger = logging.getLogger("runwatch")


def start_server(config: MonitorConfig, *, bus: BusSettings | None = None) -> Assembly:
    """Build ``runwatch serve``'s pipeline and web interface (the composition root's serve profile),
    start them, and mark runs whose process is gone as crashed; returns the running assembly.

    With ``bus``, a node of a scale-out deployment: the store's tables are created if missing (the
    node reads them before any worker may have), and no run is this host's to judge.

    Raises:
        ValueError: a bus without a PostgreSQL store.
    """
    assembly = assemble_server(config, bus=bus)
    if bus is not None:
        assembly.store.prepare()
        assembly.start()
        return assembly
    assembly.start()
    try:
        crashed = assembly.store.mark_crashed_runs()
        if crashed:
            logger.warning("runwatch: marked %d run(s) whose process is gone as crashed", len(crashed))
    except Exception:  # detection is best effort; serving matters more
        logger.exception("runwatch: checking for crashed runs failed")
    return assembly


def queued_events(assembly: Assembly) -> dict[str, int]:
    """Per sink: events accepted but not yet written by it.

    That is the sink's own input buffer, the batch it is writing and its
    uncommitted events, plus every queue upstream of it (stage buffers, source intakes), each counted once. Sinks are
    counted apart because an event waiting for a slow sink may long be committed
    by the store: a sum over every queue would count it once per sink.
    (An ingested batch's receipt travels as one more event.)
    """
    pipeline = assembly.pipeline
    components = pipeline.statistics()["components"]
    spec = pipeline.spec

    def queued_at(component_id: str) -> int:
        entry = components.get(component_id, {})
        # A sink that keeps its own pending events (the SQLite sink) holds the batch in flight
        # among them; any other holds just the batch in flight.
        held: int = max(int(entry.get("pending_events") or 0), entry.get("in_flight_events", 0))
        buffered: int = entry.get("buffer", {}).get("buffered_events", 0)
        intake: int = entry.get("intake", {}).get("buffered_events", 0)
        return buffered + intake + held

    return {
        component.id: sum(queued_at(component_id) for component_id in spec.upstream_of(component.id))
        for component in spec.components
        if component.section == "sinks"
    }


def store_sinks(assembly: Assembly) -> list[str]:
    """The ids of the graph's SQLite sinks (what "committed" refers to)."""
    return [c.id for c in assembly.pipeline.spec.components if c.section == "sinks" and issubclass(c.cls, SQLiteSink)]


def run_server(config: MonitorConfig, *, bus: BusSettings | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(level=logging.DEBUG if config.debug else logging.INFO, format="%(message)s")
    assembly = start_server(config, bus=bus)
    server = assembly.web_server
    assert server is not None  # the serve profile's web interface is required: it started or raised
    if server.shared:  # another runwatch serves this store already (it said where)
        assembly.close()
        return 0
    on_bus = "" if bus is None else f" on the bus {','.join(bus.urls)}"
    announce = [f"runwatch: serving {_shown_store(config.db_path)}{on_bus} at {server.url}"]
    if server.token and not config.web_token:
        announce.append(f"runwatch: access token (not bound to loopback): {server.token}")
    return _run_until_signal(assembly, announce, "draining queues into the store")


def run_worker(store: str, bus: BusSettings, *, data_dir: Path | None = None) -> int:
    """Run a worker (its partitions of the bus → liveness → alerts → the store) until SIGINT/SIGTERM.

    ``data_dir`` (default ``monitor_data/worker-<name>``) keeps the worker's alert state: a directory of
    its own (two workers on one machine must not share one).

    Raises:
        ValueError: ``store`` is not a PostgreSQL URL.
        ConfigError: the graph's options are invalid.
    """
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if data_dir is None:
        name = bus.name or f"{socket.gethostname()}-{os.getpid()}"
        data_dir = Path("monitor_data") / ("worker-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in name))
    assembly = assemble_worker(store, bus, data_dir=data_dir)
    assembly.start()
    name = getattr(assembly.pipeline.component("bus"), "name", "")
    announce = [f"runwatch: worker {name} writing {_shown_store(store)} from the bus {','.join(bus.urls)}"]
    return _run_until_signal(assembly, announce, "committing what is in flight")


def _shown_store(location: str) -> str:
    return redact_dsn(location) if is_postgres_url(location) else str(Path(location).resolve())


def _run_until_signal(assembly: Assembly, announce: list[str], draining: str) -> int:
    """Announce, then wait for SIGINT/SIGTERM: the first drains and exits 0, a second exits 1 at once."""
    stop = threading.Event()
    signals_seen: list[int] = []

    def on_signal(number: int, frame: FrameType | None) -> None:
        signals_seen.append(number)
        if len(signals_seen) > 1:
            try:
                queued = queued_events(assembly)
                stores = store_sinks(assembly)
                lost = max((queued[sink] for sink in stores), default=max(queued.values(), default=0))
                per_sink = ", ".join(f"{sink}={count}" for sink, count in queued.items()) or "none"
                logger.error(
                    "runwatch: second signal: exiting now; %d queued event(s) not committed to the store; "
                    "still queued per sink: %s",
                    lost,
                    per_sink,
                )
            except Exception:  # counting must never stand between a second signal and the exit
                logger.exception("runwatch: second signal: exiting now; could not count the queued events")
            sys.stdout.flush()
            os._exit(1)
        stop.set()

    # This process is ours: everything alive after start-up (imports, the app) lives until exit,
    # so full collections need not walk it again — each would pause the loop ~50 ms otherwise.
    gc.freeze()
    # Handlers go in before the URL is announced: whoever waits for that line may signal at once.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    for line in announce:
        print(line, flush=True)
    try:
        while not stop.wait(0.5):
            if not assembly.running:
                logger.error("runwatch: the pipeline stopped unexpectedly")
                return 1
        print(f"runwatch: stopping: {draining}", flush=True)
        assembly.close()
        print("runwatch: stopped", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
