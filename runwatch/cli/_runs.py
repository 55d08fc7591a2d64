"""``runwatch runs`` and ``runwatch show``: the runs of a store, and one run in detail."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from ..store.queries import RUN_STATUSES
from ._common import (
    FAILED,
    STATUS_STYLES,
    DbOption,
    JsonOption,
    check_choice,
    escape,
    fail,
    format_duration,
    format_number,
    format_time,
    open_manager,
    print_json,
    reported,
    stderr_console,
    stdout_console,
)

if TYPE_CHECKING:
    from ..store.manager import DatabaseManager

#: The kinds of runs a store holds.
RUN_KINDS = ("training", "session")


def runs(
    db: DbOption = Path("monitoring.db"),
    status: Annotated[str | None, typer.Option(help=f"Only runs with this status: {', '.join(RUN_STATUSES)}.")] = None,
    kind: Annotated[str | None, typer.Option(help=f"Only runs of this kind: {', '.join(RUN_KINDS)}.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many runs, newest first.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """List runs, newest first."""
    check_choice("--status", status, RUN_STATUSES)
    check_choice("--kind", kind, RUN_KINDS)
    with reported(db), open_manager(db) as manager:
        rows = manager.get_training_runs(limit=limit, status=status, kind=kind)
    if json_output:
        print_json(rows)
        return
    from rich.table import Table

    if not rows:
        stderr_console().print(f"no runs in {db}")
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
        style = STATUS_STYLES.get(run["status"], "")
        table.add_row(
            run["run_id"],
            run["kind"],
            f"[{style}]{run['status']}[/]" if style else run["status"],
            format_time(run["start_time"]),
            format_duration((end - run["start_time"]).total_seconds()),
            str(run["total_steps"]),
            str(run["total_episodes"]),
            format_number(run["final_reward"]),
        )
    stdout_console().print(table)


def show(
    run: Annotated[str, typer.Argument(help="The run id, or the start of it.")],
    db: DbOption = Path("monitoring.db"),
    json_output: JsonOption = False,
) -> None:
    """Show one run: status, times, config, event counts and per-metric statistics.

    RUN may be the start of a run id when only one run's id starts so.
    """
    with reported(db), open_manager(db) as manager:
        summary = manager.get_run_summary(resolve_run(manager, run))
    if json_output:
        print_json(summary)
        return
    import orjson
    from rich.table import Table

    console = stdout_console()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    style = STATUS_STYLES.get(summary["status"], "")
    for label, value in (
        ("run", summary["run_id"]),
        ("kind", summary["kind"]),
        ("status", f"[{style}]{summary['status']}[/]" if style else summary["status"]),
        ("started (UTC)", format_time(summary["start_time"])),
        ("ended (UTC)", format_time(summary["end_time"])),
        ("last heartbeat", format_time(summary["last_heartbeat"])),
        ("duration", format_duration(summary["duration_seconds"])),
        ("steps", str(summary["total_steps"])),
        ("episodes", str(summary["total_episodes"])),
        ("final reward", format_number(summary["final_reward"])),
        ("config", orjson.dumps(summary["config"]).decode()),
        ("metadata", "-" if summary["metadata"] is None else orjson.dumps(summary["metadata"]).decode()),
        ("events", ", ".join(f"{kind} {count}" for kind, count in summary["event_counts"].items()) or "-"),
    ):
        info.add_row(label, value if label == "status" else escape(value))
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
            escape(name),
            str(stats["count"]),
            str(stats["nan_count"]),
            format_number(stats["last"]),
            format_number(stats["min"]),
            format_number(stats["max"]),
            format_number(stats["mean"]),
            format_number(stats["last_step"]),
        )
    console.print(table)


def resolve_run(manager: DatabaseManager, text: str) -> str:
    """The run id ``text`` names: itself, or the one id it starts.

    Exits 1 with one line when no id starts with ``text`` (suggesting close
    ones) or several do (listing them).
    """
    import difflib

    if not text:
        raise fail("RUN: must not be empty")
    ids: list[str] = [row["run_id"] for row in manager.get_training_runs(kind=None)]
    if text in ids:
        return text
    starting = [run_id for run_id in ids if run_id.startswith(text)]
    if len(starting) == 1:
        return starting[0]
    if starting:
        shown = ", ".join(sorted(starting)[:10]) + (", ..." if len(starting) > 10 else "")
        raise fail(f"{len(starting)} runs start with {text!r}: {shown}; give more of the id", FAILED)
    close = difflib.get_close_matches(text, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(run_id) for run_id in close)}?" if close else ""
    raise fail(f"unknown run id {text!r}{hint} (runwatch runs lists them)", FAILED)
