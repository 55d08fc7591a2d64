"""``runwatch export`` and ``runwatch import``: move a run between stores as a .zip archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import DbOption, reported, require_store, stderr_console


def export(
    run: Annotated[str, typer.Argument(help="The run id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The directory the .zip goes to.")] = Path("."),
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Export a run to a .zip (run.json, metrics, events, state history)."""
    from ..store.export import export_run

    require_store(db)
    with reported(db), stderr_console().status(f"exporting {run}..."):
        path = export_run(str(db), run, output)
    typer.echo(str(path))


def import_(
    archive: Annotated[Path, typer.Argument(help="A .zip written by `runwatch export`.")],
    rename: Annotated[str | None, typer.Option(help="Store the run under this id instead.")] = None,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Import a run exported from another store (refused if its id exists, unless --rename)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from ..store.importer import import_run

    with (
        reported(db),
        Progress(
            TextColumn("importing"), BarColumn(), DownloadColumn(), console=stderr_console(), transient=True
        ) as bar,
    ):
        task = bar.add_task("import", total=None)
        run_id = import_run(
            str(db), archive, rename=rename, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    typer.echo(f"imported {run_id} into {db}")
