"""``runwatch serve``, ``runwatch worker`` and ``runwatch demo``: run a pipeline (with its web app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store.backends import store_location
from ._common import FAILED, fail


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo's store goes.")] = Path("runwatch_demo"),
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to simulate.")] = 30,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Dashboard port (0: any free port).")] = 8080,
    keep_open: Annotated[bool, typer.Option(help="Keep serving the dashboard after the run, until Ctrl-C.")] = False,
) -> None:
    """Run a simulated RL training loop, monitored end to end, with its live dashboard."""
    from ..demo import DemoSettings, run_demo

    run_demo(data_dir, DemoSettings(episodes=episodes), port=port, keep_open=keep_open)


def serve(
    config: Annotated[
        Path | None, typer.Option(help="A monitor config (TOML/JSON) with an optional [pipeline].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port [default: 8080].")] = None,
    db: Annotated[
        Path | None, typer.Option(envvar="RUNWATCH_DB", help="SQLite store [default: monitoring.db].")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory [default: monitor_data].")] = None,
    session_heartbeat_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            help="Seconds of silence after which a datacat session is suspended [default: 60].",
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="A PEM certificate: serve HTTPS and WSS directly (else plain HTTP).")
    ] = None,
    ssl_keyfile: Annotated[
        Path | None, typer.Option(help="Its private key [default: in the certificate file].")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(envvar="RUNWATCH_STORE", help="The store: a postgresql:// URL (scale-out) or a SQLite file."),
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(envvar="RUNWATCH_BUS", help="NATS servers of the scale-out bus: nats://h1:4222,nats://h2:4222."),
    ] = None,
    partitions: Annotated[int, typer.Option(min=1, max=4096, help="Partitions of the bus (as the workers').")] = 16,
) -> None:
    """Run the pipeline and the web app (REST, websockets, dashboard, datacat's routes) until SIGINT/SIGTERM.

    Port 8080, the default, is a preference: when another program holds it the
    server takes a free port and says so; a --port you give is kept (taken:
    exit 1, naming who holds it). A runwatch already serving the same store on
    the port is pointed to, and this one exits 0.

    With --bus (and --store postgresql://…) this is a stateless node of a scale-out deployment: ingest is
    persisted in NATS JetStream, workers store it, live events come from the bus (docs/scale.md).
    """
    from ..assemble import BusSettings
    from ..config import MonitorConfig
    from ..exceptions import ConfigError
    from ..server import run_server

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["web_host"] = host
    if port is not None:
        overrides["web_port"] = port
    if db is not None and store is not None:
        raise fail("--db and --store name the same thing: give one")
    if db is not None:
        overrides["db_path"] = store_location(db)
    if store is not None:
        overrides["db_path"] = store_location(store)
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if session_heartbeat_timeout is not None:
        overrides["session_heartbeat_timeout_seconds"] = session_heartbeat_timeout
    if ssl_certfile is not None:
        overrides["web_ssl_certfile"] = str(ssl_certfile)
    if ssl_keyfile is not None:
        overrides["web_ssl_keyfile"] = str(ssl_keyfile)
    try:
        settings = MonitorConfig.from_file(config, **overrides) if config else MonitorConfig.load(**overrides)
        bus_settings = None if bus is None else BusSettings.parse(bus, partitions=partitions)
    except (ConfigError, ValueError, TypeError) as exc:
        raise fail(str(exc)) from None
    try:
        code = run_server(settings, bus=bus_settings)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc), FAILED) from None
    raise typer.Exit(code)


def worker(
    store: Annotated[
        str, typer.Option(envvar="RUNWATCH_STORE", help="The shared store: postgresql://user@host/database.")
    ],
    bus: Annotated[str, typer.Option(envvar="RUNWATCH_BUS", help="NATS servers: nats://h1:4222,nats://h2:4222.")],
    name: Annotated[str | None, typer.Option(help="This worker's name [default: <host>:<pid>].")] = None,
    partitions: Annotated[int, typer.Option(min=1, max=4096, help="Partitions of the bus (as the serve nodes').")] = 16,
    lease_ttl: Annotated[
        float, typer.Option(min=0.1, max=3600, help="Seconds a partition lease outlives its last renewal.")
    ] = 15.0,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="This worker's own directory (alert state) [default: monitor_data/worker-<name>]."),
    ] = None,
) -> None:
    """Store what the scale-out bus holds: own a share of its partitions, run liveness and alerts, write the store.

    Runs until SIGINT/SIGTERM, then commits what is in flight and gives its partitions up (docs/scale.md).
    """
    from ..assemble import BusSettings
    from ..exceptions import ConfigError
    from ..server import run_worker

    try:
        settings = BusSettings.parse(bus, partitions=partitions, lease_ttl_seconds=lease_ttl, name=name)
        code = run_worker(store_location(store), settings, data_dir=data_dir)
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc), FAILED) from None
    raise typer.Exit(code)
