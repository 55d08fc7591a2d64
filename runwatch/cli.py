"""The ``runwatch`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="runwatch",
    help="Watch ML training runs and application sessions live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@app.command("check-config")
def check_config(
    file: Annotated[
        Path, typer.Argument(help="A pipeline config (TOML or JSON), or a monitor config with [pipeline].")
    ],
) -> None:
    """Validate a pipeline config file and print its graph."""
    from .exceptions import ConfigError
    from .pipeline.config import load_pipeline_config

    try:
        spec = load_pipeline_config(file)
    except ConfigError as exc:
        raise _fail(f"{file}: {exc}") from None
    typer.echo(f"{file}: ok ({len(spec.components)} components)")
    for component in spec.components:
        inputs = f" <- {', '.join(component.inputs)}" if component.inputs else ""
        typer.echo(f"  {component.section}.{component.id} ({component.type}){inputs}")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo's store goes.")] = Path("runwatch_demo"),
    episodes: Annotated[int, typer.Option(min=1, help="Episodes to simulate.")] = 30,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Dashboard port (0: any free port).")] = 8080,
    keep_open: Annotated[bool, typer.Option(help="Keep serving the dashboard after the run, until Ctrl-C.")] = False,
) -> None:
    """Run a simulated RL training loop, monitored end to end, with its live dashboard."""
    from .demo import DemoSettings, run_demo

    run_demo(data_dir, DemoSettings(episodes=episodes), port=port, keep_open=keep_open)


@app.command()
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
) -> None:
    """Run the pipeline and the web app (REST, websockets, dashboard) until SIGINT/SIGTERM."""
    from .config import MonitorConfig
    from .exceptions import ConfigError
    from .server import run_server

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["web_host"] = host
    if port is not None:
        overrides["web_port"] = port
    if db is not None:
        overrides["db_path"] = str(db)
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    try:
        settings = MonitorConfig.from_file(config, **overrides) if config else MonitorConfig.load(**overrides)
    except (ConfigError, ValueError, TypeError) as exc:
        raise _fail(str(exc)) from None
    try:
        code = run_server(settings)
    except (ConfigError, OSError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``runwatch`` console script."""
    app()


if __name__ == "__main__":
    main()
