"""``runwatch check-config``: validate a pipeline config and print its graph."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import fail


def check_config(
    file: Annotated[
        Path, typer.Argument(help="A pipeline config (TOML or JSON), or a monitor config with [pipeline].")
    ],
) -> None:
    """Validate a pipeline config file and print its graph."""
    from ..exceptions import ConfigError
    from ..pipeline.config import load_pipeline_config

    try:
        spec = load_pipeline_config(file)
    except ConfigError as exc:
        raise fail(f"{file}: {exc}") from None
    typer.echo(f"{file}: ok ({len(spec.components)} components)")
    for component in spec.components:
        inputs = f" <- {', '.join(component.inputs)}" if component.inputs else ""
        typer.echo(f"  {component.section}.{component.id} ({component.type_name}){inputs}")
