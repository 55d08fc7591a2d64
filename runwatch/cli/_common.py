"""What every command shares: exit codes, one-line errors, consoles, JSON output, formatting.

A mistake or a failure is reported as ONE line on stderr (``error: ...``),
never a traceback; :func:`fail` builds that line and the exit it raises.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..store.backends import is_postgres_url, store_location

if TYPE_CHECKING:
    from rich.console import Console

    from ..store.manager import DatabaseManager

# Exit codes (see the package docstring).
FAILED = 1
BAD_ARGUMENT = 2

DbOption = Annotated[
    Path,
    typer.Option(
        "--db", envvar="RUNWATCH_DB", help="The store: a SQLite file, or a postgresql:// URL.", show_default=True
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def fail(message: str, code: int = BAD_ARGUMENT) -> typer.Exit:
    """Print ``message`` as one ``error:`` line on stderr; returns the exit to raise."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(code=code)


def check_choice(option: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """Exit 2 with one line when an option's value is not one of ``allowed``."""
    if value is not None and value not in allowed:
        raise fail(f"{option}: must be one of {', '.join(allowed)}; got {value!r}")


def describe_os_error(exc: OSError) -> str:
    """The reason and the file name of an ``OSError``, without Python's ``[Errno n]``."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {str(exc.filename)!r}"
    return str(exc)


@contextmanager
def reported(db: Path | None = None) -> Iterator[None]:
    """Turn the errors a user can cause or meet into one line on stderr and exit code 1.

    ``RunwatchError`` covers StoreError (missing or locked store), BackupError
    and UnknownRunError; ``ValueError`` is a refused request (exceptions.py).
    """
    from ..exceptions import RunwatchError

    try:
        yield
    except (RunwatchError, ValueError) as exc:
        raise fail(str(exc), FAILED) from None
    except sqlite3.Error as exc:  # from code that talks to sqlite3 directly (export)
        raise fail(f"the database {str(db)!r} cannot be used: {exc}", FAILED) from None
    except OSError as exc:
        raise fail(describe_os_error(exc), FAILED) from None


def open_manager(db: Path) -> DatabaseManager:
    """A manager of the existing store ``db`` (exits with one line when there is none)."""
    from ..store.manager import DatabaseManager

    require_store(db)
    return DatabaseManager(store_location(db))


def require_store(db: Path) -> None:
    """Exit 1 with one line when there is no store file at ``db`` (a PostgreSQL store answers for itself)."""
    if is_postgres_url(store_location(db)):
        return
    # Checked here for a message about the CLI's options rather than the Python API.
    if not db.exists():
        raise fail(f"no runwatch database at {str(db)!r} (pass --db PATH or set RUNWATCH_DB)", FAILED)


def stdout_console() -> Console:
    """A Rich console on stdout; in a pipe or a file, wide enough not to cut tables."""
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 200  # tables in a pipe or a file are not cut at 80 columns
    return console


def stderr_console() -> Console:
    """A Rich console on stderr, for progress and notes."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout."""
    import orjson

    typer.echo(orjson.dumps(json_safe(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def json_safe(value: Any) -> Any:
    """Non-finite floats in the wire form of docs/protocol.md (NaN → null, ±Inf → "Infinity")."""
    from ..wire import json_number

    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def escape(text: str) -> str:
    """``text`` with Rich's markup escaped, so it prints as written."""
    from rich.markup import escape as escape_markup

    return escape_markup(text)


# -- formatting -------------------------------------------------------------------------

STATUS_STYLES = {
    "running": "green",
    "paused": "yellow",
    "completed": "blue",
    "failed": "red",
    "crashed": "red",
    "hung": "magenta",
}


def format_time(value: datetime | None) -> str:
    """A moment in UTC to the second, or ``-``."""
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float | None) -> str:
    """``12.5s``, ``3m 04s``, ``2h 03m 04s`` or ``1d 02h 03m``; ``-`` for ``None``."""
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


def format_number(value: Any) -> str:
    """A float to six significant digits, anything else as ``str``; ``-`` for ``None``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_bytes(count: Any) -> str:
    """A byte count in B, KiB, MiB or GiB (anything but an int as :func:`format_number`)."""
    if not isinstance(count, int):
        return format_number(count)
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(count)
