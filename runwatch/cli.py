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
) -> None:
    """Run a simulated RL training loop, monitored end to end."""
    from .demo import DemoSettings, run_demo

    run_demo(data_dir, DemoSettings(episodes=episodes))


def main() -> None:
    """Entry point of the ``runwatch`` console script."""
    app()


if __name__ == "__main__":
    main()
