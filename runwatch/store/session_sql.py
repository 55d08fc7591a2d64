"""The statements that judge and filter sessions, built once for every backend (see :mod:`.dialect`).

A session of datacat's is *suspended* when it heartbeated, then was silent
past its timeout (its own ``heartbeat_timeout_seconds``, else the caller's)
and has not ended; both backends list, count and sweep sessions with the
same conditions, spelled in their own SQL.
"""

from __future__ import annotations

from typing import Any

from ..session_events import RUN_STATUSES_OF, SESSION_KIND
from .dialect import Dialect

__all__ = ["session_list_where", "suspended_of_machine", "suspended_session"]


def _silent_past_timeout(dialect: Dialect, params: list[Any], now: float, timeout: float) -> str:
    """Silent for more than the session's own heartbeat timeout, else ``timeout``, at ``now``."""
    own = dialect.json_number("metadata", "heartbeat_timeout_seconds")
    return f"{dialect.param(params, now)} - last_heartbeat > COALESCE({own}, {dialect.param(params, timeout)})"


def suspended_session(dialect: Dialect, params: list[Any], now: float, timeout: float) -> str:
    """A live session of datacat's that heartbeated, then was silent past its timeout at ``now``."""
    return (
        "(status IN ('running', 'paused') AND end_time IS NULL AND last_heartbeat IS NOT NULL"
        f" AND {dialect.json_text('metadata', 'protocol')} = 'datacat'"
        f" AND {_silent_past_timeout(dialect, params, now, timeout)})"
    )


def session_list_where(
    dialect: Dialect,
    params: list[Any],
    *,
    active: bool | None,
    status: str | None,
    product: str | None,
    before: int | None,
    now: float | None,
    timeout_seconds: float,
) -> str:
    """The ``WHERE`` condition of a page of sessions (see :func:`runwatch.store.queries.sessions.list_sessions`)."""
    where = [f"kind = {dialect.param(params, SESSION_KIND)}"]
    if active is not None:
        live = dialect.one_of("status", params, (*RUN_STATUSES_OF["active"], *RUN_STATUSES_OF["hung"]))
        if now is None:
            where.append(live if active else f"NOT ({live})")
        elif active:
            where.append(f"({live} AND NOT {suspended_session(dialect, params, now, timeout_seconds)})")
        else:
            where.append(f"(NOT ({live}) OR {suspended_session(dialect, params, now, timeout_seconds)})")
    if status == "suspended":
        where.append(dialect.false if now is None else suspended_session(dialect, params, now, timeout_seconds))
    elif status is not None:
        where.append(dialect.one_of("status", params, RUN_STATUSES_OF[status]))
        if status == "active" and now is not None:
            where.append(f"NOT {suspended_session(dialect, params, now, timeout_seconds)}")
    if product is not None:
        where.append(f"{dialect.json_text('metadata', 'product')} = {dialect.param(params, product)}")
    if before is not None:
        where.append(f"id < {dialect.param(params, before)}")
    return " AND ".join(where)


def suspended_of_machine(
    dialect: Dialect, params: list[Any], machine_id: str, now: float, timeout: float, *, with_details: bool = True
) -> str:
    """The ids of the sessions of ``machine_id`` suspended and not crashed at ``now``, oldest first (see
    :func:`runwatch.store.queries.datacat.suspended_sessions_of_machine`); ``with_details``: the store keeps
    event details (a detected crash is told by its stored effect)."""
    detected = (
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.run = r.id AND e.type = 'session_crashed_detected'"
        f" AND {dialect.json_present('e.detail', 'effect')})"
        if with_details
        else ""
    )
    return (
        f"SELECT run_id FROM runs r WHERE kind = {dialect.param(params, SESSION_KIND)}"
        f" AND {dialect.json_text('metadata', 'machine_id')} = {dialect.param(params, machine_id)}"
        " AND end_time IS NULL AND last_heartbeat IS NOT NULL"
        f" AND {_silent_past_timeout(dialect, params, now, timeout)}{detected} ORDER BY id"
    )
