"""Store maintenance: ``backup``, ``restore``, ``cleanup``, ``optimize``, ``migrate``, ``db-info``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    FAILED,
    DbOption,
    JsonOption,
    escape,
    fail,
    format_bytes,
    format_number,
    format_time,
    open_manager,
    print_json,
    reported,
    stderr_console,
    stdout_console,
)


def backup(
    directory: Annotated[Path, typer.Argument(help="Where the backup file goes.")],
    tag: Annotated[str | None, typer.Option(help="A label in the backup's file name.")] = None,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Copy the store into DIRECTORY, consistently, while writers keep running."""
    with reported(db), open_manager(db) as manager, stderr_console().status(f"backing up {db}..."):
        path = manager.create_backup(directory, tag=tag)
    typer.echo(str(path))


def restore(
    file: Annotated[Path, typer.Argument(help="A backup written by `runwatch backup`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Replace the store with a backup; the current store is kept as a copy."""
    if not file.is_file():
        raise fail(f"no such backup file: {str(file)!r}", FAILED)
    if not yes:
        typer.confirm(f"Replace {db} with {file}? (the current store is kept as a copy)", abort=True, err=True)
    from ..store.manager import DatabaseManager

    # No open_manager(): restoring into a path with no database yet is allowed.
    with reported(db), DatabaseManager(db) as manager, stderr_console().status(f"restoring {file}..."):
        kept = manager.restore_backup(file)
    typer.echo(f"restored {db} from {file}")
    if kept is not None:
        typer.echo(f"the previous store is kept at {kept}")


def cleanup(
    older_than: Annotated[
        str,
        typer.Option(
            help="Delete runs last active before this: a duration back from now (30d, 12h, 90m, 2w) or an ISO date."
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Delete finished runs last active before a cutoff, with their metrics, events and state history.

    Running and paused runs are never deleted. Deletion goes in short
    transactions, so a server may keep writing meanwhile; run `optimize`
    afterwards to give the space back to the file system.
    """
    try:
        cutoff = parse_cutoff(older_than, datetime.now(UTC))
    except ValueError as exc:
        raise fail(f"--older-than: {exc}") from None
    with reported(db), open_manager(db) as manager, stderr_console().status("cleaning up..."):
        count = manager.cleanup_old_data(cutoff, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {count} record(s) (runs and their rows) of runs last active before {format_time(cutoff)} UTC")


def optimize(db: DbOption = Path("monitoring.db")) -> None:
    """Compact the store and refresh the query planner's statistics (runs beside writers)."""
    with reported(db), open_manager(db) as manager, stderr_console().status(f"optimizing {db}..."):
        report = manager.optimize_database()
    print_mapping(report, title=f"optimized {db}")


def migrate(
    to: Annotated[int | None, typer.Option("--to", help="The schema version to reach [default: the newest].")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before migrating down.")] = False,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Migrate the store's schema up (or, with --to, down: what newer versions added is dropped; metrics are kept)."""
    from ..store.schema import SCHEMA_VERSION

    if to is not None and not 0 <= to <= SCHEMA_VERSION:
        raise fail(f"--to must be a schema version from 0 to {SCHEMA_VERSION}, got {to}")
    target = SCHEMA_VERSION if to is None else to
    with reported(db), open_manager(db) as manager:
        before = manager.get_schema_version()
        if before == target:
            typer.echo(f"{db} is at schema version {before}; nothing to do")
            return
        if target < before and not yes:
            typer.confirm(
                f"Migrating {db} down from {before} to {target} drops what the newer versions added (their tables"
                " and columns, with their data); metrics are kept. Continue?",
                abort=True,
                err=True,
            )
        manager.migrate_schema(target)
        after = manager.get_schema_version()
    typer.echo(f"{db}: schema version {before} -> {after}")


def db_info(db: DbOption = Path("monitoring.db"), json_output: JsonOption = False) -> None:
    """Show the store's file sizes, schema version and rows per table."""
    with reported(db), open_manager(db) as manager:
        info = manager.db_info()
    if json_output:
        print_json(info)
        return
    print_mapping(info, title=str(db))


def print_mapping(data: Mapping[str, Any], *, title: str) -> None:
    """Scalars as one key/value table, each nested mapping as a table of its own."""
    from rich.table import Table

    console = stdout_console()
    main = Table(title=title, title_justify="left", show_header=False)
    main.add_column(style="bold")
    main.add_column(justify="right")
    nested: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            nested.append((key, value))
        else:
            main.add_row(escape(str(key)), escape(format_bytes(value) if "bytes" in key else format_number(value)))
    console.print(main)
    for key, values in nested:
        table = Table(title=str(key), title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for name, value in values.items():
            table.add_row(escape(str(name)), escape(format_number(value)))
        console.print(table)


# -- cutoffs ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_cutoff(text: str, now: datetime) -> datetime:
    """The point in time ``text`` names: a duration back from ``now`` or an ISO date.

    Args:
        text: ``30d``, ``12h``, ``90m``, ``2w``, ``45s`` (units may combine:
            ``1d12h``), or an ISO 8601 date or date-time (naive means UTC).
        now: the current time (aware).

    Returns:
        An aware ``datetime``, not after ``now``.

    Raises:
        ValueError: ``text`` is neither, names a zero duration, or lies in the future.
    """
    cleaned = text.strip().lower()
    if cleaned and _DURATION.sub("", cleaned).strip() == "":
        seconds = sum(float(amount) * _UNIT_SECONDS[unit] for amount, unit in _DURATION.findall(cleaned))
        if seconds <= 0:
            raise ValueError(f"the duration {text!r} must be longer than zero")
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"expected a duration such as 30d, 12h, 90m or 2w, or an ISO date such as 2026-01-31; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise ValueError(f"{text!r} is in the future")
    return moment
