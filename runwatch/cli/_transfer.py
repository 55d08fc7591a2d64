"""``runwatch export`` and ``runwatch import`` (a run between stores, as a .zip archive), and
``runwatch sync`` (runs recorded offline, or left in a spool, up to a server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store.backends import store_location
from ._common import FAILED, DbOption, fail, reported, require_store, stderr_console


def export(
    run: Annotated[str, typer.Argument(help="The run id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The directory the .zip goes to.")] = Path("."),
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Export a run to a .zip (run.json, metrics, events, state history)."""
    from ..store.backends import open_store

    require_store(db)
    with reported(db), stderr_console().status(f"exporting {run}..."):
        path = open_store(store_location(db)).export_run(run, output)
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
            store_location(db),
            archive,
            rename=rename,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    typer.echo(f"imported {run_id} into {store_location(db)}")


def sync(
    path: Annotated[Path, typer.Argument(help="A store (.db) written offline, or a spool directory.")],
    to: Annotated[str, typer.Option("--to", help="The runwatch server, e.g. http://box:8080.")],
    run: Annotated[list[str] | None, typer.Option("--run", help="Only this run of the store (repeatable).")] = None,
    token: Annotated[str | None, typer.Option(envvar="RUNWATCH_TOKEN", help="Bearer token of the server.")] = None,
    patience: Annotated[
        float, typer.Option(min=0.1, help="Seconds to keep retrying one batch while the server is away.")
    ] = 60.0,
) -> None:
    """Upload runs recorded offline (or a spool left by remote producers) to a server.

    Idempotent: running it twice stores nothing twice, and an interrupted sync
    resumes where it stopped. The last partial batch of a run that is still
    live waits until the run has ended.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..remote.server_url import check_server_url, display_url
    from ..remote.sync import sync_path

    try:
        check_server_url(to)
    except ValueError as exc:
        raise fail(f"--to: {exc}") from None
    if run and path.is_dir():
        raise fail("--run selects runs of a store; a spool directory is sent whole")
    with (
        reported(path),
        Progress(
            TextColumn("syncing"), BarColumn(), MofNCompleteColumn(), console=stderr_console(), transient=True
        ) as bar,
    ):
        task = bar.add_task("sync", total=None)
        report = sync_path(
            path,
            to,
            token=token,
            run_ids=run,
            patience_seconds=patience,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    where = display_url(to)
    sent = f"{report.stored_events} event(s) stored in {report.stored_batches} batch(es)"
    there = f"{report.duplicate_events} already there"
    runs = f"{report.runs} run(s), " if report.runs else ""
    typer.echo(f"synced {path} to {where}: {runs}{sent}, {there}")
    if report.held_back_events:
        typer.echo(f"{report.held_back_events} event(s) of live runs wait until those runs end", err=True)
    if report.busy_spools:
        typer.echo(f"{report.busy_spools} spool(s) are still in use by running producers: left to them", err=True)
    for batch_id in report.conflicts:
        typer.echo(f"error: the server holds batch {batch_id} with other content: not sent again", err=True)
    for reason in report.rejected:
        typer.echo(f"error: the server refused {reason}", err=True)
    if not report.complete:
        raise fail(f"{where} could not be reached for {patience:g} s; run the same sync again to resume", FAILED)
    if not report.ok:
        raise typer.Exit(FAILED)
