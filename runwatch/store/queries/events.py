"""Reads of events: a run's events, and the alerts among them (transitions and current states).

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ...events import to_epoch_seconds
from .common import TimeLike, check_limit, check_run_id, check_text, read_snapshot, run_pk

__all__ = ["alert_events", "alerts", "run_events"]


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
    check_limit(limit)
    check_text("event_type", event_type)
    check_text("kind", kind)
    check_text("level", level)
    for name, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and type(value) is not int:
            raise TypeError(f"{name} must be an integer or None, got {value!r}")
    start = to_epoch_seconds(start_time, "start_time")
    end = to_epoch_seconds(end_time, "end_time")
    with read_snapshot(conn):
        run = run_pk(conn, run_id)
        where = ["run = ?"]
        params: list[Any] = [run]
        for column, wanted in (("type", event_type), ("kind", kind), ("level", level)):
            if wanted is not None:
                where.append(f"{column} = ?")
                params.append(wanted)
        if start is not None:
            where.append("ts >= ?")
            params.append(start)
        if end is not None:
            where.append("ts <= ?")
            params.append(end)
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        order = "id" if after_id is not None or before_id is not None else "ts, id"
        if newest_first:
            order = ", ".join(f"{column} DESC" for column in order.split(", "))
        sql = f"SELECT id, type, data, ts, level, kind FROM events WHERE {' AND '.join(where)} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = conn.execute(sql, params).fetchall()
    return [
        {"id": id_, "event_type": type_, "event_data": orjson.loads(data), "timestamp": ts, "level": lvl, "kind": knd}
        for id_, type_, data, ts, lvl, knd in rows
    ]


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
    where = ["e.kind = 'alert'"]
    params: list[Any] = []
    if run_id is not None:
        check_run_id(run_id)
        where.append("r.run_id = ?")
        params.append(run_id)
    if severity is not None:
        where.append("e.data ->> 'severity' = ?")
        params.append(severity)
    if rule is not None:
        where.append("e.data ->> 'rule' = ?")
        params.append(rule)
    if before_id is not None:
        where.append("e.id < ?")
        params.append(before_id)
    with read_snapshot(conn):
        rows = conn.execute(
            "SELECT e.id, r.run_id, e.ts, e.data FROM events e JOIN runs r ON r.id = e.run"
            f" WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
    return [{"id": id_, "run_id": run, "updated_at": ts, **orjson.loads(data)} for id_, run, ts, data in rows]


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
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for alert in alert_events(conn, run_id=run_id, severity=severity, limit=limit):  # newest first
        labels = orjson.dumps(alert.get("labels") or {}, option=orjson.OPT_SORT_KEYS).decode()
        latest.setdefault((alert["run_id"], alert.get("rule", ""), labels), alert)
    found = [{k: v for k, v in alert.items() if k != "id"} for alert in latest.values() if alert.get("state") in states]
    found.sort(key=lambda alert: alert.get("active_since") or alert["updated_at"])
    return found
