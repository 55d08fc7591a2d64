"""The ``runwatch`` command line.

Commands that read or change a store take ``--db PATH`` (or ``RUNWATCH_DB``;
default ``monitoring.db``). Output for people is Rich tables; ``--json``
gives machine-readable output on stdout, and progress and notes go to stderr.

A mistake or a failure is reported as ONE line on stderr (``error: ...``),
never a traceback. Exit codes: 0 done; 1 the operation failed (unknown run,
missing file, corrupt backup or archive, locked or unusable store, server
unreachable; also a declined confirmation); 2 a bad argument (a duration, a
schema version, a status, kind or state, an invalid config) or a usage error
reported by Click.

Help is Click's plain layout (``rich_markup_mode=None``): Rich's markup would
read ``[default: ...]`` and ``[pipeline]`` in help texts as tags and drop them.

One module per command group: ``_config`` (check-config), ``_serve`` (demo,
serve, worker), ``_runs`` (runs, show), ``_alerts``, ``_transfer`` (export, import, sync),
``_maintenance`` (backup, restore, cleanup, optimize, migrate, db-info) and
``_tail``; ``_common`` holds the exit codes, error reporting, consoles and
formatting they share. The commands are registered here, in the order
``runwatch --help`` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ._alerts import alerts
from ._config import check_config
from ._maintenance import backup, cleanup, db_info, migrate, optimize, parse_cutoff, restore
from ._runs import runs, show
from ._serve import demo, serve, worker
from ._tail import tail
from ._transfer import export, import_, sync

__all__ = ["app", "main", "parse_cutoff"]

app = typer.Typer(
    name="runwatch",
    help="Watch ML training runs and application sessions live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"runwatch {__version__}")
        raise typer.Exit


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Watch ML training runs and application sessions live."""


# pipeline config and serving
app.command("check-config")(check_config)
app.command()(demo)
app.command()(serve)
app.command()(worker)
# reading runs and alerts
app.command()(runs)
app.command()(alerts)
app.command()(show)
# moving runs between stores
app.command()(export)
app.command("import")(import_)
app.command()(sync)
# store maintenance
app.command()(backup)
app.command()(restore)
app.command()(cleanup)
app.command()(optimize)
app.command()(migrate)
app.command("db-info")(db_info)
# live events
app.command()(tail)


def main() -> None:
    """Entry point of the ``runwatch`` console script."""
    app()
