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
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from .store.queries import ALERT_QUERY_STATES, RUN_STATUSES

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from .store.manager import DatabaseManager

__all__ = ["app", "main", "parse_cutoff"]

app = typer.Typer(
    name="runwatch",
    help="Watch ML training runs and application sessions live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Exit codes (see the module docstring).
_FAILED = 1
_BAD_ARGUMENT = 2

DbOption = Annotated[Path, typer.Option("--db", envvar="RUNWATCH_DB", help="The SQLite store.", show_default=True)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

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


def _fail(message: str, code: int = _BAD_ARGUMENT) -> typer.Exit:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code=code)


#: The kinds of runs a store holds.
RUN_KINDS = ("training", "session")


def _check_choice(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """Exit 2 with one line when an option's value is not one of ``allowed``."""
    if value is not None and value not in allowed:
        raise _fail(f"{option}: must be one of {', '.join(allowed)}; got {value!r}")


def _describe_os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    return str(exc)


@contextmanager
def _reported(db: Path | None = None) -> Iterator[None]:
    """Turn the errors a user can cause or meet into one line on stderr and exit code 1.

    ``RunwatchError`` covers StoreError (missing or locked store), BackupError
    and UnknownRunError; ``ValueError`` is a refused request (exceptions.py).
    """
    from .exceptions import RunwatchError

    try:
        yield
    except (RunwatchError, ValueError) as exc:
        raise _fail(str(exc), _FAILED) from None
    except sqlite3.Error as exc:  # from code that talks to sqlite3 directly (export)
        raise _fail(f"the database {str(db)!r} cannot be used: {exc}", _FAILED) from None
    except OSError as exc:
        raise _fail(_describe_os_error(exc), _FAILED) from None


def _manager(db: Path) -> DatabaseManager:
    """A manager of the existing store ``db`` (exits with one line when there is none)."""
    from .store.manager import DatabaseManager

    _require_store(db)
    return DatabaseManager(db)


def _require_store(db: Path) -> None:
    # Checked here for a message about the CLI's options rather than the Python API.
    if not db.exists():
        raise _fail(f"no runwatch database at {str(db)!r} (pass --db PATH or set RUNWATCH_DB)", _FAILED)


def _stdout() -> Console:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 200  # tables in a pipe or a file are not cut at 80 columns
    return console


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_json(value: Any) -> None:
    import orjson

    typer.echo(orjson.dumps(_json_safe(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def _json_safe(value: Any) -> Any:
    """Non-finite floats in the wire form of docs/protocol.md (NaN → null, ±Inf → "Infinity")."""
    from .events import json_number

    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


# -- formatting -------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _bytes(count: Any) -> str:
    if not isinstance(count, int):
        return _number(count)
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(count)


_STATUS_STYLES = {
    "running": "green",
    "paused": "yellow",
    "completed": "blue",
    "failed": "red",
    "crashed": "red",
    "hung": "magenta",
}


# -- durations ----------------------------------------------------------------------------

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


# -- pipeline config and serving ----------------------------------------------------------


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
        typer.echo(f"  {component.section}.{component.id} ({component.type_name}){inputs}")


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
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(str(exc), _FAILED) from None
    raise typer.Exit(code)


# -- reading runs -------------------------------------------------------------------------


@app.command()
def runs(
    db: DbOption = Path("monitoring.db"),
    status: Annotated[str | None, typer.Option(help=f"Only runs with this status: {', '.join(RUN_STATUSES)}.")] = None,
    kind: Annotated[str | None, typer.Option(help=f"Only runs of this kind: {', '.join(RUN_KINDS)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs, newest first.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List runs, newest first."""
    _check_choice("--status", status, RUN_STATUSES)
    _check_choice("--kind", kind, RUN_KINDS)
    with _reported(db), _manager(db) as manager:
        rows = manager.get_training_runs(limit=limit, status=status, kind=kind)
    if json_output:
        _print_json(rows)
        return
    from rich.table import Table

    if not rows:
        _stderr().print(f"no runs in {db}")
        return
    table = Table(title=f"runs in {db}", title_justify="left")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("run", "left"),
        ("kind", "left"),
        ("status", "left"),
        ("started (UTC)", "left"),
        ("duration", "right"),
        ("steps", "right"),
        ("episodes", "right"),
        ("final reward", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=header == "run")
    for run in rows:
        end = run["end_time"] or run["updated_at"]
        style = _STATUS_STYLES.get(run["status"], "")
        table.add_row(
            run["run_id"],
            run["kind"],
            f"[{style}]{run['status']}[/]" if style else run["status"],
            _when(run["start_time"]),
            _duration((end - run["start_time"]).total_seconds()),
            str(run["total_steps"]),
            str(run["total_episodes"]),
            _number(run["final_reward"]),
        )
    _stdout().print(table)


@app.command()
def alerts(
    db: DbOption = Path("monitoring.db"),
    run: Annotated[str | None, typer.Option(help="Only this run's alerts.")] = None,
    state: Annotated[
        str | None,
        typer.Option(help=f"Only alerts in this state: {', '.join(ALERT_QUERY_STATES)} [default: pending and firing]."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List alert instances and their state (active ones by default)."""
    _check_choice("--state", state, ALERT_QUERY_STATES)
    with _reported(db), _manager(db) as manager:
        rows = manager.get_alerts(run, state)
    if json_output:
        _print_json(rows)
        return
    from rich.table import Table

    if not rows:
        _stderr().print("no alerts" if state else "no alert is pending or firing")
        return
    table = Table(title=f"alerts in {db}", title_justify="left")
    for header in ("rule", "run", "state", "severity", "value", "since (UTC)", "summary"):
        table.add_column(header, no_wrap=header in ("rule", "run"))
    for alert in rows:
        since = alert.get("active_since") or alert.get("updated_at")
        annotations = alert.get("annotations") or {}
        table.add_row(
            str(alert.get("rule")),
            str(alert.get("run_id")),
            str(alert.get("state")),
            str(alert.get("severity")),
            _number(alert.get("value")),
            _when(datetime.fromtimestamp(since, UTC)) if since else "",
            str(annotations.get("summary") or annotations.get("description") or ""),
        )
    _stdout().print(table)


@app.command()
def show(
    run: Annotated[str, typer.Argument(help="The run id, or the start of it.")],
    db: DbOption = Path("monitoring.db"),
    json_output: JsonOption = False,
) -> None:
    """Show one run: status, times, config, event counts and per-metric statistics.

    RUN may be the start of a run id when only one run's id starts so.
    """
    with _reported(db), _manager(db) as manager:
        summary = manager.get_run_summary(_resolve_run(manager, run))
    if json_output:
        _print_json(summary)
        return
    import orjson
    from rich.table import Table

    console = _stdout()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    style = _STATUS_STYLES.get(summary["status"], "")
    for label, value in (
        ("run", summary["run_id"]),
        ("kind", summary["kind"]),
        ("status", f"[{style}]{summary['status']}[/]" if style else summary["status"]),
        ("started (UTC)", _when(summary["start_time"])),
        ("ended (UTC)", _when(summary["end_time"])),
        ("last heartbeat", _when(summary["last_heartbeat"])),
        ("duration", _duration(summary["duration_seconds"])),
        ("steps", str(summary["total_steps"])),
        ("episodes", str(summary["total_episodes"])),
        ("final reward", _number(summary["final_reward"])),
        ("config", orjson.dumps(summary["config"]).decode()),
        ("metadata", "-" if summary["metadata"] is None else orjson.dumps(summary["metadata"]).decode()),
        ("events", ", ".join(f"{kind} {count}" for kind, count in summary["event_counts"].items()) or "-"),
    ):
        info.add_row(label, value if label == "status" else _escape(value))
    console.print(info)
    if not summary["metrics"]:
        console.print("no metrics")
        return
    table = Table(title="metrics", title_justify="left")
    table.add_column("metric", no_wrap=True)
    for header in ("count", "NaN", "last", "min", "max", "mean", "last step"):
        table.add_column(header, justify="right")
    for name, stats in summary["metrics"].items():
        table.add_row(
            _escape(name),
            str(stats["count"]),
            str(stats["nan_count"]),
            _number(stats["last"]),
            _number(stats["min"]),
            _number(stats["max"]),
            _number(stats["mean"]),
            _number(stats["last_step"]),
        )
    console.print(table)


def _resolve_run(manager: DatabaseManager, text: str) -> str:
    """The run id ``text`` names: itself, or the one id it starts.

    Exits 1 with one line when no id starts with ``text`` (suggesting close
    ones) or several do (listing them).
    """
    import difflib

    if not text:
        raise _fail("RUN: must not be empty")
    ids: list[str] = [row["run_id"] for row in manager.get_training_runs(kind=None)]
    if text in ids:
        return text
    starting = [run_id for run_id in ids if run_id.startswith(text)]
    if len(starting) == 1:
        return starting[0]
    if starting:
        shown = ", ".join(sorted(starting)[:10]) + (", ..." if len(starting) > 10 else "")
        raise _fail(f"{len(starting)} runs start with {text!r}: {shown}; give more of the id", _FAILED)
    close = difflib.get_close_matches(text, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(run_id) for run_id in close)}?" if close else ""
    raise _fail(f"unknown run id {text!r}{hint} (runwatch runs lists them)", _FAILED)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- moving runs between stores -----------------------------------------------------------


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="The run id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The directory the .zip goes to.")] = Path("."),
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Export a run to a .zip (run.json, metrics, events, state history)."""
    from .store.export import export_run

    _require_store(db)
    with _reported(db), _stderr().status(f"exporting {run}..."):
        path = export_run(str(db), run, output)
    typer.echo(str(path))


@app.command("import")
def import_(
    archive: Annotated[Path, typer.Argument(help="A .zip written by `runwatch export`.")],
    rename: Annotated[str | None, typer.Option(help="Store the run under this id instead.")] = None,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Import a run exported from another store (refused if its id exists, unless --rename)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from .store.importer import import_run

    with (
        _reported(db),
        Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), console=_stderr(), transient=True) as bar,
    ):
        task = bar.add_task("import", total=None)
        run_id = import_run(
            str(db), archive, rename=rename, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    typer.echo(f"imported {run_id} into {db}")


# -- store maintenance --------------------------------------------------------------------


@app.command()
def backup(
    directory: Annotated[Path, typer.Argument(help="Where the backup file goes.")],
    tag: Annotated[str | None, typer.Option(help="A label in the backup's file name.")] = None,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Copy the store into DIRECTORY, consistently, while writers keep running."""
    with _reported(db), _manager(db) as manager, _stderr().status(f"backing up {db}..."):
        path = manager.create_backup(directory, tag=tag)
    typer.echo(str(path))


@app.command()
def restore(
    file: Annotated[Path, typer.Argument(help="A backup written by `runwatch backup`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Replace the store with a backup; the current store is kept as a copy."""
    if not file.is_file():
        raise _fail(f"no such backup file: {str(file)!r}", _FAILED)
    if not yes:
        typer.confirm(f"Replace {db} with {file}? (the current store is kept as a copy)", abort=True, err=True)
    from .store.manager import DatabaseManager

    # No _manager(): restoring into a path with no database yet is allowed.
    with _reported(db), DatabaseManager(db) as manager, _stderr().status(f"restoring {file}..."):
        kept = manager.restore_backup(file)
    typer.echo(f"restored {db} from {file}")
    if kept is not None:
        typer.echo(f"the previous store is kept at {kept}")


@app.command()
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
        raise _fail(f"--older-than: {exc}") from None
    with _reported(db), _manager(db) as manager, _stderr().status("cleaning up..."):
        count = manager.cleanup_old_data(cutoff, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {count} record(s) (runs and their rows) of runs last active before {_when(cutoff)} UTC")


@app.command()
def optimize(db: DbOption = Path("monitoring.db")) -> None:
    """Compact the store and refresh the query planner's statistics (runs beside writers)."""
    with _reported(db), _manager(db) as manager, _stderr().status(f"optimizing {db}..."):
        report = manager.optimize_database()
    _print_mapping(report, title=f"optimized {db}")


@app.command()
def migrate(
    to: Annotated[int | None, typer.Option("--to", help="The schema version to reach [default: the newest].")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before migrating down.")] = False,
    db: DbOption = Path("monitoring.db"),
) -> None:
    """Migrate the store's schema up (or, with --to, down: that drops the newer tables' data)."""
    from .store.schema import SCHEMA_VERSION

    if to is not None and not 0 <= to <= SCHEMA_VERSION:
        raise _fail(f"--to must be a schema version from 0 to {SCHEMA_VERSION}, got {to}")
    target = SCHEMA_VERSION if to is None else to
    with _reported(db), _manager(db) as manager:
        before = manager.get_schema_version()
        if before == target:
            typer.echo(f"{db} is at schema version {before}; nothing to do")
            return
        if target < before and not yes:
            typer.confirm(
                f"Migrating {db} down from {before} to {target} drops the newer tables and their data. Continue?",
                abort=True,
                err=True,
            )
        manager.migrate_schema(target)
        after = manager.get_schema_version()
    typer.echo(f"{db}: schema version {before} -> {after}")


@app.command("db-info")
def db_info(db: DbOption = Path("monitoring.db"), json_output: JsonOption = False) -> None:
    """Show the store's file sizes, schema version and rows per table."""
    with _reported(db), _manager(db) as manager:
        info = manager.db_info()
    if json_output:
        _print_json(info)
        return
    _print_mapping(info, title=str(db))


def _print_mapping(data: Mapping[str, Any], *, title: str) -> None:
    """Scalars as one key/value table, each nested mapping as a table of its own."""
    from rich.table import Table

    console = _stdout()
    main = Table(title=title, title_justify="left", show_header=False)
    main.add_column(style="bold")
    main.add_column(justify="right")
    nested: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            nested.append((key, value))
        else:
            main.add_row(_escape(str(key)), _escape(_bytes(value) if "bytes" in key else _number(value)))
    console.print(main)
    for key, values in nested:
        table = Table(title=str(key), title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for name, value in values.items():
            table.add_row(_escape(str(name)), _escape(_number(value)))
        console.print(table)


# -- live events --------------------------------------------------------------------------


@app.command()
def tail(
    url: Annotated[str, typer.Option(help="The runwatch server.", envvar="RUNWATCH_URL")] = "http://127.0.0.1:8080",
    run: Annotated[list[str] | None, typer.Option("--run", help="Only this run (repeatable).")] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Only these kinds, comma-separated: metric, log, state, lifecycle, exception, heartbeat, alert."
        ),
    ] = None,
    metrics: Annotated[str | None, typer.Option(help="Only these metrics, comma-separated (globs: train/*).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print each event as a JSON line.")] = False,
    token: Annotated[str | None, typer.Option(envvar="RUNWATCH_TOKEN", help="Bearer token of the server.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    lines: Annotated[
        int,
        typer.Option(
            "-n",
            "--lines",
            min=0,
            max=1_000_000,
            help="First print the latest N events the server keeps in memory (its max_events), then live ones.",
        ),
    ] = 0,
) -> None:
    """Print live events from a server's /ws websocket, one line each, until Ctrl-C (or --count).

    With -n N the latest N matching events come first, like tail -n N -f:
    no event is missed or repeated between those and the live ones.
    """
    import asyncio

    from .events import EVENT_CLASSES

    kind_list = _split(kinds)
    for kind in kind_list:
        if kind not in EVENT_CLASSES:
            raise _fail(f"--kinds: unknown kind {kind!r} (known: {', '.join(EVENT_CLASSES)})")
    try:
        address = _websocket_url(url, run or [], kind_list, _split(metrics), replay=lines)
    except ValueError as exc:
        raise _fail(f"--url: {exc}") from None
    printer = _json_line if json_output else _pretty_printer()
    try:
        code = asyncio.run(_tail(address, token, count, printer))
    except KeyboardInterrupt:
        code = 0
    except BrokenPipeError:  # the reader went away (`runwatch tail | head`): stop quietly
        _silence_stdout()
        code = 0
    raise typer.Exit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit does not fail again on the broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _websocket_url(url: str, runs: list[str], kinds: list[str], metrics: list[str], *, replay: int = 0) -> str:
    """``http://host:port`` (or ws://, or already ending in /ws) → the /ws URL with the filter (and replay)."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"expected a URL such as http://127.0.0.1:8080, got {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    query = {
        key: ",".join(values) for key, values in (("runs", runs), ("kinds", kinds), ("metrics", metrics)) if values
    }
    if replay:
        query["replay"] = str(replay)
    return urlunsplit((scheme, parts.netloc, path, urlencode(query, safe=",/*"), ""))


async def _tail(address: str, token: str | None, count: int | None, printer: Callable[[dict[str, Any]], None]) -> int:
    """Print events until ``count`` were printed or the server closes; returns the exit code."""
    import orjson
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

    headers = {"Authorization": f"Bearer {token}"} if token else None
    printed = 0
    try:
        async with connect(address, additional_headers=headers, open_timeout=10, max_size=64 * 1024 * 1024) as ws:
            async for message in ws:
                data = orjson.loads(message)
                kind = data.get("type")
                if kind == "subscribed":
                    typer.echo(f"tail: subscribed to {address}", err=True)
                elif kind == "lagged":
                    typer.echo(f"tail: too slow, the server dropped {data.get('dropped')} event(s)", err=True)
                elif kind == "error":
                    typer.echo(f"tail: the server said: {data.get('message')}", err=True)
                elif kind == "batch":
                    for event in data.get("events", ()):
                        printer(event)
                        printed += 1
                        if count is not None and printed >= count:
                            sys.stdout.flush()
                            return 0
                    sys.stdout.flush()
            close_code, reason = ws.close_code, ws.close_reason
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = "; pass --token (or set RUNWATCH_TOKEN)" if status in (401, 403) else ""
        raise _fail(f"{address} refused the websocket with HTTP {status}{hint}", _FAILED) from None
    except InvalidURI as exc:
        raise _fail(f"--url: {exc}") from None
    except ConnectionClosed as exc:
        close_code, reason = exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        message = _describe_os_error(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
        raise _fail(f"cannot connect to {address}: {message}", _FAILED) from None
    sys.stdout.flush()
    typer.echo(f"tail: the server closed the connection ({close_code} {reason})".rstrip(), err=True)
    if count is not None or close_code not in (1000, 1001):
        return _FAILED
    return 0


def _json_line(event: dict[str, Any]) -> None:
    import orjson

    sys.stdout.write(orjson.dumps(event).decode() + "\n")


def _pretty_printer() -> Callable[[dict[str, Any]], None]:
    console = _stdout()

    def print_event(event: dict[str, Any]) -> None:
        console.print(_pretty(event), soft_wrap=True)

    return print_event


def _pretty(event: dict[str, Any]) -> Text:
    """One line: time, run, kind, then what matters for that kind."""
    import orjson
    from rich.text import Text

    def compact(value: Any, limit: int = 160) -> str:
        text = orjson.dumps(value).decode()
        return text if len(text) <= limit else text[: limit - 3] + "..."

    timestamp = event.get("timestamp")
    when = datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S.%f")[:-3] if isinstance(timestamp, float) else "?"
    kind = str(event.get("kind"))
    if kind == "metric":
        values = " ".join(
            f"{name}={'nan' if value is None else _number(value)}"
            for name, value in (event.get("values") or {}).items()
        )
        step = event.get("step")
        detail = f"step={step} {values}" if step is not None else values
    elif kind == "log":
        detail = f"{event.get('level')} {event.get('type')} {compact(event.get('data'))}"
    elif kind == "lifecycle":
        detail = str(event.get("transition"))
        if event.get("final_reward") is not None:
            detail += f" final_reward={_number(event['final_reward'])}"
    elif kind == "state":
        detail = compact(event.get("patch"))
    elif kind == "exception":
        detail = f"{event.get('severity')} {event.get('error_type')}: {event.get('message')}"
    elif kind == "alert":
        detail = (
            f"{event.get('state')} {event.get('rule')} ({event.get('severity')}) value={_number(event.get('value'))}"
        )
    elif kind == "heartbeat":
        detail = " ".join(f"{key}={value}" for key, value in (event.get("counters") or {}).items())
    else:
        detail = compact(event)
    return Text.assemble(
        (when, "dim"), " ", (str(event.get("run_id")), "cyan"), " ", (f"{kind:<9}", "bold"), " ", detail
    )


def main() -> None:
    """Entry point of the ``runwatch`` console script."""
    app()


if __name__ == "__main__":
    main()
