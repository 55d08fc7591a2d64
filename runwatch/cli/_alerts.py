"""``runwatch alerts``: alert instances and their state."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ..store.queries import ALERT_QUERY_STATES
from ._common import (
    DbOption,
    JsonOption,
    check_choice,
    format_number,
    format_time,
    open_manager,
    print_json,
    reported,
    stderr_console,
    stdout_console,
)


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
    check_choice("--state", state, ALERT_QUERY_STATES)
    with reported(db), open_manager(db) as manager:
        rows = manager.get_alerts(run, state)
    if json_output:
        print_json(rows)
        return
    from rich.table import Table

    if not rows:
        stderr_console().print("no alerts" if state else "no alert is pending or firing")
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
            format_number(alert.get("value")),
            format_time(datetime.fromtimestamp(since, UTC)) if since else "",
            str(annotations.get("summary") or annotations.get("description") or ""),
        )
    stdout_console().print(table)
