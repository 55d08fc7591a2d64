"""Reads of events: a run's events, and the alerts among them (transitions and current states).

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`). Their statements
are built, and their rows shaped, by the functions at the end of this module, in a
:class:`~runwatch.store.dialect.Dialect`: the PostgreSQL store (:mod:`runwatch.store.postgres.reads`)
uses the same ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ...events import to_epoch_seconds
from ..dialect import SQLITE, Dialect
from .common import TimeLike, check_limit, check_run_id, check_text, read_snapshot, run_pk

__all__ = [
    "alert_events",
    "alert_events_statement",
    "alert_records",
    "alerts",
    "checked_event_filters",
    "current_alerts",
    "event_records",
    "run_events",
    "run_events_statement",
]


def run_events(
    conn: sqlite3.Connection,
    run_id: str,
    event_type: str | None = None,
    start_time: TimeLike | None = None,
    end_time: TimeLike | None = None,
    *,
    kind: str | None = None,
    level: str | None = None,
    limit: int | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """The events of a run (log events, lifecycle, exceptions, alerts), oldest first.

    Args:
        conn: a connection to the store.
        run_id: the run.
        event_type: only events of this type (``episode_end``, ``run_started``,
            ``error``, ``alert``...).
        start_time: only events at or after this time (a naive ``datetime`` is UTC).
        end_time: only events at or before this time.
        kind: only events of this kind (``log``, ``lifecycle``, ``exception``, ``alert``).
        level: only events with this level (``debug`` ... ``critical``).
        limit: at most this many events (the oldest ones).
        after_id: only events stored after the event with this id; for
            paging through a live run without gaps. With ``after_id`` the
            order is the storage order (by ``id``), which a late event with
            an old timestamp cannot reorder; otherwise events are ordered
            by timestamp, then id.
        before_id: only events stored before the event with this id (paging
            backwards; storage order).
        newest_first: reverse the order (``limit`` then keeps the newest).

    Returns:
        One dict per event: ``id``, ``event_type``, ``event_data`` (parsed
        JSON), ``timestamp`` (epoch seconds), ``level`` and ``kind``.

    Raises:
        TypeError: a bad ``run_id``, filter or time type.
        ValueError: a bad ``limit`` or a non-finite time.
        UnknownRunError: no run has this id.
    """
    start, end = checked_event_filters(
        limit=limit,
        event_type=event_type,
        kind=kind,
        level=level,
        after_id=after_id,
        before_id=before_id,
        start_time=start_time,
        end_time=end_time,
    )
    with read_snapshot(conn):
        params: list[Any] = []
        sql = run_events_statement(
            SQLITE,
            params,
            run_pk(conn, run_id),
            event_type=event_type,
            kind=kind,
            level=level,
            start=start,
            end=end,
            after_id=after_id,
            before_id=before_id,
            newest_first=newest_first,
            limit=limit,
        )
        rows = conn.execute(sql, params).fetchall()
    return event_records(rows)


def alert_events(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    severity: str | None = None,
    rule: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Stored alert transitions, newest first (``rule``: only this rule's).

    Each dict has ``id``, ``run_id``, ``updated_at`` (epoch seconds) and the
    alert's fields (``rule``, ``state``, ``severity``, ``value``, ``labels``,
    ``annotations``, ``active_since``). ``before_id`` pages backwards.
    """
    params: list[Any] = []
    sql = alert_events_statement(
        SQLITE, params, run_id=run_id, severity=severity, rule=rule, before_id=before_id, limit=limit
    )
    with read_snapshot(conn):
        rows = conn.execute(sql, params).fetchall()
    return alert_records(rows)


def alerts(
    conn: sqlite3.Connection,
    *,
    run_id: str | None = None,
    severity: str | None = None,
    states: tuple[str, ...] = ("pending", "firing"),
    limit: int = 100_000,
) -> list[dict[str, Any]]:
    """The current state of each alert instance, from the stored ``alert`` events.

    An instance is a rule on a run with a label set; its state is that of its
    latest event. Only instances whose state is in ``states`` are returned,
    oldest ``active_since`` first.

    Args:
        conn: a connection to the store.
        run_id: only this run's alerts.
        severity: only alerts of this severity.
        states: the states to return (``pending``, ``firing``, ``resolved``, ``inactive``).
        limit: how many of the newest alert events to consider.
    """
    return current_alerts(alert_events(conn, run_id=run_id, severity=severity, limit=limit), states)


# -- the statements and answers, for every backend ------------------------------------------------


def checked_event_filters(
    *,
    limit: int | None,
    event_type: str | None,
    kind: str | None,
    level: str | None,
    after_id: int | None,
    before_id: int | None,
    start_time: TimeLike | None,
    end_time: TimeLike | None,
) -> tuple[float | None, float | None]:
    """Check the filters of a run's events (see :func:`runwatch.store.queries.run_events`); the time bounds
    as epoch seconds.

    Raises:
        TypeError: a bad filter or time type.
        ValueError: a bad ``limit`` or a non-finite time.
    """
    check_limit(limit)
    check_text("event_type", event_type)
    check_text("kind", kind)
    check_text("level", level)
    for name, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and type(value) is not int:
            raise TypeError(f"{name} must be an integer or None, got {value!r}")
    return to_epoch_seconds(start_time, "start_time"), to_epoch_seconds(end_time, "end_time")


def run_events_statement(
    dialect: Dialect,
    params: list[Any],
    run: int,
    *,
    event_type: str | None,
    kind: str | None,
    level: str | None,
    start: float | None,
    end: float | None,
    after_id: int | None,
    before_id: int | None,
    newest_first: bool,
    limit: int | None,
) -> str:
    """The statement of a run's events (its rows: ``id, type, data, ts, level, kind``), filters checked."""
    where = [f"run = {dialect.param(params, run)}"]
    for column, wanted in (("type", event_type), ("kind", kind), ("level", level)):
        if wanted is not None:
            where.append(f"{column} = {dialect.param(params, wanted)}")
    if start is not None:
        where.append(f"ts >= {dialect.param(params, start)}")
    if end is not None:
        where.append(f"ts <= {dialect.param(params, end)}")
    if after_id is not None:
        where.append(f"id > {dialect.param(params, after_id)}")
    if before_id is not None:
        where.append(f"id < {dialect.param(params, before_id)}")
    order = "id" if after_id is not None or before_id is not None else "ts, id"
    if newest_first:
        order = ", ".join(f"{column} DESC" for column in order.split(", "))
    sql = f"SELECT id, type, data, ts, level, kind FROM events WHERE {' AND '.join(where)} ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {dialect.param(params, limit)}"
    return sql


def event_records(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The answer of :func:`runwatch.store.queries.run_events` from the rows of :func:`run_events_statement`."""
    return [
        {"id": id_, "event_type": type_, "event_data": orjson.loads(data), "timestamp": ts, "level": lvl, "kind": knd}
        for id_, type_, data, ts, lvl, knd in rows
    ]


def alert_events_statement(
    dialect: Dialect,
    params: list[Any],
    *,
    run_id: str | None,
    severity: str | None,
    rule: str | None,
    before_id: int | None,
    limit: int,
) -> str:
    """The statement of stored alert transitions, newest first (its rows: ``id, run_id, ts, data``).

    Raises:
        TypeError: a bad ``run_id``.
    """
    where = ["e.kind = 'alert'"]
    if run_id is not None:
        check_run_id(run_id)
        where.append(f"r.run_id = {dialect.param(params, run_id)}")
    if severity is not None:
        where.append(f"{dialect.json_text('e.data', 'severity')} = {dialect.param(params, severity)}")
    if rule is not None:
        where.append(f"{dialect.json_text('e.data', 'rule')} = {dialect.param(params, rule)}")
    if before_id is not None:
        where.append(f"e.id < {dialect.param(params, before_id)}")
    return (
        "SELECT e.id, r.run_id, e.ts, e.data FROM events e JOIN runs r ON r.id = e.run"
        f" WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT {dialect.param(params, limit)}"
    )


def alert_records(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The answer of :func:`runwatch.store.queries.alert_events` from the rows of :func:`alert_events_statement`."""
    return [{"id": id_, "run_id": run, "updated_at": ts, **orjson.loads(data)} for id_, run, ts, data in rows]


def current_alerts(transitions: Iterable[dict[str, Any]], states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The current state of each alert instance (see :func:`runwatch.store.queries.alerts`) from its
    transitions, newest first: those in ``states``, oldest ``active_since`` first."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for alert in transitions:
        labels = orjson.dumps(alert.get("labels") or {}, option=orjson.OPT_SORT_KEYS).decode()
        latest.setdefault((alert["run_id"], alert.get("rule", ""), labels), alert)
    found = [{k: v for k, v in alert.items() if k != "id"} for alert in latest.values() if alert.get("state") in states]
    found.sort(key=lambda alert: alert.get("active_since") or alert["updated_at"])
    return found
