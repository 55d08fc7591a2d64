"""The composition root: every pipeline runwatch runs is built here, one function per profile.

A profile is a use of runwatch, and the graph it needs:

- :func:`assemble_monitor` — the embedded monitor of a training script
  (:class:`~runwatch.WebMonitor`): the user's graph or the default one
  (in-process and remote intake, the system sampler, liveness, alerts,
  snapshots, the store and the live hub), with the web interface beside it
  when its port is free; in remote mode (``server_url``), in-process intake
  and the system sampler into the ``remote`` sink, and no web interface;
- :func:`assemble_server` — ``runwatch serve``: the same graph, following
  what other processes commit to the store too, the web interface required;
- :func:`assemble_sessions` — a :class:`~runwatch.sessions.SessionMonitor`:
  the default graph without the web's components and snapshots (the
  monitor evaluates its alert rules as it records, and stores their events);
  in remote mode, the in-process intake into the ``remote`` sink;
- scale-out (docs/scale.md): :func:`assemble_server` given a :class:`BusSettings`
  — a stateless serve node: ingest into the bus, the bus's live stream into
  the websocket hub (:func:`bus_serve_pipeline_config`); and
  :func:`assemble_worker` — ``runwatch worker``: its partitions of the bus →
  liveness → alerts → the PostgreSQL store (:func:`worker_pipeline_config`).

Each returns an :class:`Assembly`: typed handles on what was built (the
store, the pipeline, its thread, the services its components offer, the web
server), not started. Nothing else in runwatch builds a pipeline for a facade;
components find each other only through typed services
(:class:`~runwatch.pipeline.component.ServiceKey`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

from .alerts.engine import AlertEngine
from .alerts.stage import ALERT_ENGINE
from .config import MonitorConfig
from .pipeline.component import ComponentContext, Services
from .pipeline.config import PipelineSpec, default_pipeline_config, load_pipeline_config
from .pipeline.runtime import Pipeline
from .pipeline.thread import PipelineThread
from .sinks.websocket import LIVE_HUB, WebsocketHub
from .sources.ingest import INGEST, IngestSource
from .stages.snapshot import SNAPSHOTS, SnapshotStage
from .store.backends import is_postgres_url, open_store
from .store.base import Store
from .store.schema import make_private_dirs

__all__ = [
    "WEB_INTERFACE",
    "Assembly",
    "BusSettings",
    "WebInterface",
    "assemble_monitor",
    "assemble_server",
    "assemble_sessions",
    "assemble_worker",
    "bus_serve_pipeline_config",
    "monitor_pipeline_config",
    "remote_pipeline_config",
    "sessions_pipeline_config",
    "worker_pipeline_config",
]

logger = logging.getLogger("runwatch")

#: Component types a sessions pipeline leaves out: the web's (remote ingest, the live hub) and
#: snapshots (application sessions keep no snapshot files).
_NOT_FOR_SESSIONS: Final = frozenset({"ingest", "websocket_hub", "snapshot"})

#: The web interface served beside a monitor's pipeline, by name (``module:function``, called with
#: the :class:`~runwatch.config.MonitorConfig` and ``required=``): resolved when a profile with a web
#: interface is built, as the pipeline resolves its component types, so the composition root
#: does not depend on the web layer above it and ``import runwatch`` never loads the web stack.
WEB_INTERFACE: Final = "runwatch.web.server:monitor_web_companion"


class WebInterface(Protocol):
    """What a running web interface tells its facade (a :class:`runwatch.web.server.WebServer`)."""

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8080``."""
        ...

    @property
    def token(self) -> str | None:
        """The bearer token its data endpoints require (``None``: none)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether the port was held by a runwatch serving the same store: nothing is served here, and
        ``url`` is that server's."""
        ...


#: A web interface companion of the pipeline's thread (see :class:`~runwatch.pipeline.thread.PipelineThread`).
WebCompanion = Callable[[Pipeline], contextlib.AbstractAsyncContextManager[WebInterface | None]]


@dataclass(frozen=True)
class Assembly:
    """What a profile built: typed handles on its parts (not started until :meth:`start`).

    Attributes:
        profile: ``monitor``, ``serve``, ``sessions`` or ``worker``.
        store: the store the pipeline writes.
        pipeline: the pipeline.
        thread: the thread its event loop runs on (with the web server beside it, if any).
    """

    profile: str
    store: Store
    pipeline: Pipeline
    thread: PipelineThread

    def start(self, timeout: float = 30.0) -> None:
        """Start the pipeline (and the web server) on its thread; returns once everything runs.

        Raises:
            Exception: whatever stopped a component or the web server from starting.
        """
        self.thread.start(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop the web server, drain the pipeline and join its thread. Idempotent."""
        self.thread.close(timeout)

    @property
    def running(self) -> bool:
        """Whether the pipeline's thread is alive and the pipeline runs."""
        return self.thread.running

    @property
    def services(self) -> Services:
        """The services the pipeline's components offer now."""
        return self.pipeline.context.services

    @property
    def alerts(self) -> AlertEngine | None:
        """The alert engine of the graph's alerts stage, while it runs."""
        return self.services.get(ALERT_ENGINE)

    @property
    def snapshots(self) -> SnapshotStage | None:
        """The snapshot stage, while it runs."""
        return self.services.get(SNAPSHOTS)

    @property
    def ingest(self) -> IngestSource | None:
        """The remote-ingest source, while it runs."""
        return self.services.get(INGEST)

    @property
    def live_hub(self) -> WebsocketHub | None:
        """The websocket hub, while it runs."""
        return self.services.get(LIVE_HUB)

    @property
    def active_runs(self) -> set[str]:
        """The runs this process's producers have active (the system sampler samples for them)."""
        return self.pipeline.context.active_runs

    @property
    def web_server(self) -> WebInterface | None:
        """The running web server (``None`` without one, or when its port was taken)."""
        values = self.thread.companion_values
        server: WebInterface | None = values[0] if values else None
        return server


# -- graphs ---------------------------------------------------------------------------------------


def monitor_pipeline_config(config: MonitorConfig, *, serve: bool = False) -> PipelineSpec | dict[str, Any]:
    """The monitor's pipeline graph: its own, or the default one sized by its settings.

    The graph's shutdown deadline is ``config.shutdown_timeout_seconds``,
    unless the user's own pipeline config sets a top-level
    ``shutdown_timeout_seconds``: that one wins. With ``serve`` (``runwatch
    serve``) the default graph also follows what other processes commit to
    the store (a ``store_tail`` source into the live hub, and liveness for
    every live run of the store): the server is live for every run in its
    store, whoever writes it. On a PostgreSQL store the store sink is the
    ``postgres`` one.

    Raises:
        ConfigError: the user's pipeline config is invalid.
    """
    if config.pipeline is not None:
        spec = load_pipeline_config(config.pipeline)
        if spec.shutdown_timeout_seconds is None:
            spec = replace(spec, shutdown_timeout_seconds=config.shutdown_timeout_seconds)
        return spec
    if config.server_url is not None:
        return remote_pipeline_config(config)
    graph = default_pipeline_config(
        alerts=True,
        snapshots=True,
        system=True,
        snapshot_interval_seconds=config.snapshot_interval,
        max_snapshots=config.max_snapshots,
        max_events=config.max_events,
        system_interval_seconds=config.update_interval,
        max_image_bytes_per_run=config.max_image_bytes_per_run,
        tail=serve,
    )
    if is_postgres_url(config.db_path):
        graph["sinks"]["store"]["type"] = "postgres"  # the default graph's store sink, on PostgreSQL
    graph["shutdown_timeout_seconds"] = config.shutdown_timeout_seconds
    return graph


def remote_pipeline_config(config: MonitorConfig) -> dict[str, Any]:
    """Remote mode's graph (``config.server_url``): what the process records (and the system
    sampler's readings of its runs) goes to the server through the ``remote`` sink and its spool;
    the server stores, judges liveness, evaluates alerts and serves the dashboard."""
    assert config.server_url is not None
    graph = _remote_graph(config.server_url, config.server_token)
    graph["sources"]["system"] = {"type": "system", "interval_seconds": config.update_interval}
    graph["sinks"]["server"]["inputs"].append("system")
    graph["shutdown_timeout_seconds"] = config.shutdown_timeout_seconds
    return graph


def _remote_graph(url: str, token: str | None) -> dict[str, Any]:
    """The in-process intake into the ``remote`` sink: everything recorded goes to the server at ``url``."""
    sink: dict[str, Any] = {"type": "remote", "inputs": ["app"], "url": url}
    if token is not None:
        sink["token"] = token
    return {"sources": {"app": {"type": "in_process"}}, "sinks": {"server": sink}}


def sessions_pipeline_config() -> dict[str, Any]:
    """A session monitor's graph: the default one without the web's components and snapshots."""
    config = default_pipeline_config()
    removed = {
        component_id
        for section in ("sources", "stages", "sinks")
        for component_id, body in config.get(section, {}).items()
        if body.get("type") in _NOT_FOR_SESSIONS
    }
    out: dict[str, Any] = {}
    for section, table in config.items():
        out[section] = {}
        for component_id, body in table.items():
            if component_id in removed:
                continue
            body = dict(body)
            if "inputs" in body:
                body["inputs"] = [i for i in body["inputs"] if i not in removed]
            out[section][component_id] = body
    return out


@dataclass(frozen=True)
class BusSettings:
    """Where the scale-out bus is and how it is laid out (serve nodes and workers must agree).

    Attributes:
        urls: NATS server URLs (``nats://host:4222``); any of a cluster's.
        partitions: partitions of the runs.
        lease_ttl_seconds: how long a worker's partition lease outlives its last renewal.
        name: a worker's name (default ``<host>:<pid>``).
    """

    urls: tuple[str, ...]
    partitions: int = 16
    lease_ttl_seconds: float = 15.0
    name: str | None = None

    @classmethod
    def parse(cls, text: str, **options: Any) -> BusSettings:
        """``nats://a:4222,nats://b:4222`` → settings (a URL without a scheme gets ``nats://``).

        Raises:
            ValueError: no URL, or one with another scheme.
        """
        urls = tuple(part.strip() for part in text.split(",") if part.strip())
        if not urls:
            raise ValueError("--bus: give at least one NATS server URL (nats://host:4222)")
        urls = tuple(url if "://" in url else f"nats://{url}" for url in urls)
        for url in urls:
            if not url.startswith(("nats://", "tls://")):
                raise ValueError(f"--bus: {url!r} is not a NATS URL (nats://host:port)")
        return cls(urls, **options)

    def options(self) -> dict[str, Any]:
        """The bus options every ``nats`` component of the graphs takes."""
        return {"urls": list(self.urls), "partitions": self.partitions, "lease_ttl_seconds": self.lease_ttl_seconds}


def bus_serve_pipeline_config(bus: BusSettings, *, replay_events: int = 50_000) -> dict[str, Any]:
    """A serve node's graph on the bus: ingest → ``nats`` (persisted, then answered), and the bus's
    live stream → the websocket hub (which keeps ``replay_events`` events for resumes)."""
    return {
        "sources": {
            "ingest": {"type": "ingest"},
            "live": {"type": "nats", "stream": "live", **bus.options()},
        },
        "sinks": {
            "bus": {"type": "nats", "inputs": ["ingest"], **bus.options()},
            "hub": {
                "type": "websocket_hub",
                "inputs": ["live"],
                "replay_events": replay_events,
                "buffer": {"max_events": 100_000, "when_full": "drop_oldest"},
            },
        },
    }


def worker_pipeline_config(bus: BusSettings, store: str) -> dict[str, Any]:
    """A worker's graph: its partitions of the bus → liveness → alerts → the PostgreSQL store, and what
    the stages derive (alerts, liveness verdicts) → the bus's live stream."""
    source: dict[str, Any] = {"type": "nats", **bus.options()}
    if bus.name is not None:
        source["name"] = bus.name
    return {
        "sources": {"bus": source},
        "stages": {
            "liveness": {"type": "liveness", "inputs": ["bus"]},
            "alerts": {"type": "alerts", "inputs": ["liveness"]},
        },
        "sinks": {
            "store": {"type": "postgres", "inputs": ["alerts"], "dsn": store},
            "live": {
                "type": "nats",
                "stream": "live",
                "events": "derived",
                "inputs": ["alerts"],
                **bus.options(),
                "buffer": {"max_events": 100_000, "when_full": "drop_oldest"},
            },
        },
    }


# -- profiles -------------------------------------------------------------------------------------


def _context(db_path: str, data_dir: Path) -> ComponentContext:
    return ComponentContext(db_path=db_path, data_dir=data_dir, open_store=open_store)


def _private_data_dir(data_dir: str | Path) -> None:
    try:
        make_private_dirs(data_dir)  # snapshots and alert state are private
    except OSError as exc:  # the stages that write there report it; monitoring still starts
        logger.error("runwatch: cannot create the data directory %s: %s", data_dir, exc)


def _web_interface(config: MonitorConfig, *, required: bool) -> WebCompanion:
    """The web interface companion for ``config`` (see :data:`WEB_INTERFACE`)."""
    module_name, _, attribute = WEB_INTERFACE.partition(":")
    make: Callable[..., WebCompanion] = getattr(importlib.import_module(module_name), attribute)
    return make(config, required=required)


def _with_web(
    profile: str, config: MonitorConfig, *, required: bool, thread_name: str, bus: BusSettings | None = None
) -> Assembly:
    _private_data_dir(config.data_dir)
    context = _context(config.db_path, Path(config.data_dir))
    graph: PipelineSpec | dict[str, Any]
    if bus is not None:
        bus_graph = bus_serve_pipeline_config(bus, replay_events=max(config.max_events, 50_000))
        bus_graph["shutdown_timeout_seconds"] = config.shutdown_timeout_seconds
        graph = bus_graph
    else:
        graph = monitor_pipeline_config(config, serve=profile == "serve")
    pipeline = Pipeline(graph, context=context)
    # Remote mode serves no dashboard of its own: the server's is where its runs are.
    web = [] if profile == "monitor" and config.server_url is not None else [_web_interface(config, required=required)]
    thread = PipelineThread(pipeline, companions=web, name=thread_name)
    return Assembly(profile, context.store, pipeline, thread)


def assemble_monitor(config: MonitorConfig) -> Assembly:
    """The embedded monitor's pipeline, with the web interface beside it (skipped, logged, when its
    port is taken: a training loop must not die because a dashboard port is busy); in remote mode
    (``config.server_url``) the remote graph, without a web interface.

    Raises:
        ConfigError: the monitor's pipeline config is invalid.
    """
    return _with_web("monitor", config, required=False, thread_name="runwatch-pipeline")


def assemble_server(config: MonitorConfig, *, bus: BusSettings | None = None) -> Assembly:
    """``runwatch serve``'s pipeline and web interface (which must be able to listen); with ``bus``, a
    stateless node of a scale-out deployment (its store must be the workers' PostgreSQL).

    Raises:
        ConfigError: the pipeline config is invalid.
        ValueError: a bus without a PostgreSQL store.
    """
    if bus is not None and not is_postgres_url(config.db_path):
        raise ValueError("--bus needs the workers' shared store: --store postgresql://user@host/database")
    return _with_web("serve", config, required=True, thread_name="runwatch", bus=bus)


def assemble_worker(
    store: str, bus: BusSettings, *, data_dir: Path, shutdown_timeout_seconds: float = 10.0
) -> Assembly:
    """``runwatch worker``: a share of the bus's partitions → liveness → alerts → the PostgreSQL store at
    ``store``; ``data_dir`` is the worker's own (its alert state).

    Raises:
        ValueError: ``store`` is not a PostgreSQL URL.
        ConfigError: the graph's options are invalid.
    """
    if not is_postgres_url(store):
        raise ValueError("--store: a worker writes a shared PostgreSQL store: postgresql://user@host/database")
    _private_data_dir(data_dir)
    graph = worker_pipeline_config(bus, store)
    graph["shutdown_timeout_seconds"] = shutdown_timeout_seconds
    context = _context(store, data_dir)
    pipeline = Pipeline(graph, context=context)
    return Assembly("worker", context.store, pipeline, PipelineThread(pipeline, name="runwatch worker"))


def assemble_sessions(db_path: str, *, server_url: str | None = None, server_token: str | None = None) -> Assembly:
    """A session monitor's pipeline on the store at ``db_path`` (no web interface of its own); with
    ``server_url`` (remote mode) into that server through the ``remote`` sink and its spool, which
    goes to ``monitor_data`` beside ``db_path``."""
    data_dir = (Path(db_path) if db_path == "." else Path(db_path).parent) / "monitor_data"
    context = _context(db_path, data_dir)
    graph = sessions_pipeline_config() if server_url is None else _remote_graph(server_url, server_token)
    pipeline = Pipeline(graph, context=context)
    thread = PipelineThread(pipeline, name="runwatch-sessions")
    return Assembly("sessions", context.store, pipeline, thread)
