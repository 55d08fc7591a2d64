"""Reads of runs: the list, one run's summary, its state and state history; crash recovery.

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`).
"""

from __future__ import annotations

import math
import socket
import sqlite3
import time
from typing import Any, Final

import orjson

from ...exceptions import StoreError, UnknownRunError
from ..base import RunActivity
from ..dialect import SQLITE, Dialect
from .annotations import has_annotations
from .common import (
    NO_ID_LIMIT,
    check_limit,
    check_run_id,
    check_status,
    check_text,
    json_value,
    read_snapshot,
    real_value,
    run_pk,
)

__all__ = [
    "RunActivity",
    "has_run",
    "list_runs",
    "list_runs_statement",
    "live_writers",
    "mark_crashed_runs",
    "run_activity",
    "run_state",
    "run_statuses",
    "run_summary",
    "state_history",
    "stored_batch_digest",
]

# psutil derives a process's create time from the boot time, which the kernel
# recomputes from the wall clock (/proc/stat btime moves with NTP steps), so
# two readings of the same process may differ slightly. A reused pid whose
# process started within this window of the dead one is not a realistic case.
_CREATE_TIME_TOLERANCE_SECONDS: Final = 2.0

_RUN_LIST_COLUMNS: Final = (
    "run_id",
    "kind",
    "status",
    "start_time",
    "end_time",
    "updated_at",
    "last_heartbeat",
    "total_steps",
    "total_episodes",
    "final_reward",
)


def list_runs(
    conn: sqlite3.Connection,
    *,
    limit: int | None = None,
    status: str | None = None,
    kind: str | None = None,
    exclude_kind: str | None = None,
) -> list[dict[str, Any]]:
    """List runs, newest start first.

    Args:
        conn: a connection to the store.
        limit: at most this many runs; ``None`` for all.
        status: only runs with this status (one of :data:`RUN_STATUSES`).
        kind: only runs of this kind (``training``, ``session``...).
        exclude_kind: no runs of this kind (the dashboard's runs table
            leaves out ``session``).

    Returns:
        One dict per run with the keys ``run_id``, ``kind``, ``status``,
        ``start_time``, ``end_time``, ``updated_at``, ``last_heartbeat``
        (epoch seconds; ``end_time``/``last_heartbeat`` may be ``None``),
        ``total_steps``, ``total_episodes`` and ``final_reward`` (or ``None``).

    Raises:
        ValueError: a bad ``limit`` or ``status``.
        TypeError: a ``kind`` or ``exclude_kind`` that is not a non-empty string.
    """
    params: list[Any] = []
    sql = list_runs_statement(SQLITE, params, limit=limit, status=status, kind=kind, exclude_kind=exclude_kind)
    return [dict(zip(_RUN_LIST_COLUMNS, row, strict=True)) for row in conn.execute(sql, params)]


def list_runs_statement(
    dialect: Dialect,
    params: list[Any],
    *,
    limit: int | None,
    status: str | None,
    kind: str | None,
    exclude_kind: str | None,
) -> str:
    """The statement of :func:`list_runs` (its rows: :data:`_RUN_LIST_COLUMNS`), for every backend; checks
    the arguments as :func:`list_runs` says."""
    check_limit(limit)
    check_status(status)
    check_text("kind", kind)
    check_text("exclude_kind", exclude_kind)
    where: list[str] = []
    for condition, wanted in (("status =", status), ("kind =", kind), ("kind <>", exclude_kind)):
        if wanted is not None:
            where.append(f"{condition} {dialect.param(params, wanted)}")
    sql = f"SELECT {', '.join(_RUN_LIST_COLUMNS)} FROM runs"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY start_time DESC, id DESC"
    if limit is not None:
        sql += f" LIMIT {dialect.param(params, limit)}"
    return sql


def run_summary(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """Everything known about one run, with per-metric statistics.

    Args:
        conn: a connection to the store.
        run_id: the run.

    Returns:
        A dict with ``run_id``, ``kind``, ``status``, ``start_time``,
        ``end_time`` (``None`` while the run is active), ``updated_at``,
        ``last_heartbeat`` (epoch seconds or ``None``), ``duration_seconds``
        (to ``end_time``, or to the last update while the run has none),
        ``config`` (``{}`` when none was given), ``metadata`` (or ``None``),
        ``final_reward``, ``total_steps``, ``total_episodes``, ``state``,
        ``owner``, ``tags`` and ``note`` (what a user said about the run;
        ``[]`` and ``""`` when nothing), ``event_counts`` (event type →
        count) and ``metrics``:
        name → ``{"last", "min", "max", "mean", "count", "nan_count",
        "last_step", "last_timestamp"}``. ``count`` counts every logged value
        including NaN; ``min``/``max``/``mean`` ignore NaN and are ``None``
        when every value was NaN; ``last`` is NaN when the last value was.

    Raises:
        TypeError: ``run_id`` is not a non-empty string.
        UnknownRunError: no run has this id.
    """
    check_run_id(run_id)
    with read_snapshot(conn):
        row = conn.execute(
            "SELECT id, run_id, kind, status, start_time, end_time, updated_at, last_heartbeat, config, metadata,"
            " final_reward, total_steps, total_episodes, state, owner FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise UnknownRunError(run_id)
        run = row[0]
        event_counts = {
            event_type: count
            for event_type, count in conn.execute(
                "SELECT type, count(*) FROM events WHERE run = ? GROUP BY type ORDER BY type", (run,)
            )
        }
        stats = conn.execute(
            "SELECT name, count, nan_count, sum, min, max, last, last_ts, last_step"
            " FROM metric_stats WHERE run = ? ORDER BY name",
            (run,),
        ).fetchall()
        annotation = None
        if has_annotations(conn):
            annotation = conn.execute("SELECT tags, note FROM run_annotations WHERE run = ?", (run,)).fetchone()
    (_, run_id, kind, status, start, end, updated, heartbeat, config, metadata) = row[:10]
    (final_reward, total_steps, total_episodes, state, owner) = row[10:]
    return {
        "run_id": run_id,
        "kind": kind,
        "status": status,
        "start_time": start,
        "end_time": end,
        "updated_at": updated,
        "last_heartbeat": heartbeat,
        "duration_seconds": max(0.0, (end if end is not None else updated) - start),
        "config": json_value(config, {}),
        "metadata": json_value(metadata),
        "final_reward": final_reward,
        "total_steps": total_steps,
        "total_episodes": total_episodes,
        "state": json_value(state, {}),
        "owner": owner,
        "tags": json_value(annotation[0], []) if annotation else [],
        "note": annotation[1] if annotation else "",
        "event_counts": event_counts,
        "metrics": {stat[0]: _metric_summary(*stat[1:]) for stat in stats},
    }


def _metric_summary(
    count: int, nan_count: int, total: Any, low: Any, high: Any, last: Any, last_ts: float, last_step: int | None
) -> dict[str, Any]:
    seen = count - nan_count
    total_value = real_value(total)
    last_value = real_value(last)
    return {
        "last": math.nan if last_value is None else last_value,
        "min": real_value(low),
        "max": real_value(high),
        # A NULL sum beside non-NaN values is a NaN sum (+Inf and -Inf were both logged).
        "mean": (total_value / seen if total_value is not None else math.nan) if seen > 0 else None,
        "count": count,
        "nan_count": nan_count,
        "last_step": last_step,
        "last_timestamp": last_ts,
    }


def run_state(conn: sqlite3.Connection, run_id: str) -> dict[str, Any]:
    """The run's current state: every state patch merged, in order.

    Args:
        conn: a connection to the store.
        run_id: the run.

    Returns:
        The state as a dict (``{}`` when nothing was patched).

    Raises:
        TypeError: ``run_id`` is not a non-empty string.
        UnknownRunError: no run has this id.
    """
    check_run_id(run_id)
    row = conn.execute("SELECT state FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        raise UnknownRunError(run_id)
    state: dict[str, Any] = json_value(row[0], {})
    return state


def state_history(
    conn: sqlite3.Connection, run_id: str, limit: int | None = None, *, before_id: int | None = None
) -> list[dict[str, Any]]:
    """The state patches of a run in the order they were merged (storage order), oldest first.

    The merged result of all of them is the run's state (:func:`run_state`,
    read from the run's row): nothing here merges patches.

    Args:
        conn: a connection to the store.
        run_id: the run.
        limit: keep only the ``limit`` most recent patches (still returned
            oldest first); ``None`` for all.
        before_id: only patches stored before the one with this ``id`` (to
            page backwards: pass the ``id`` of the oldest patch of a page).

    Returns:
        One dict per patch: ``id``, ``timestamp`` (epoch seconds) and ``patch``.

    Raises:
        TypeError: ``run_id`` is not a non-empty string.
        ValueError: a bad ``limit`` or ``before_id``.
        UnknownRunError: no run has this id.
    """
    check_limit(limit)
    if before_id is not None and (type(before_id) is not int or before_id < 0):
        raise ValueError(f"before_id must be a non-negative integer or None, got {before_id!r}")
    with read_snapshot(conn):
        run = run_pk(conn, run_id)
        # The page's ids come from the (run, ts) index alone; only the page's patches are read.
        page = "SELECT id FROM state_history WHERE run = ? AND id < ? ORDER BY id DESC LIMIT ?"
        params = (run, NO_ID_LIMIT if before_id is None else before_id, -1 if limit is None else limit)
        rows = conn.execute(
            f"SELECT id, ts, patch FROM state_history WHERE id IN ({page}) ORDER BY id", params
        ).fetchall()
    return [{"id": id_, "timestamp": ts, "patch": orjson.loads(patch)} for id_, ts, patch in rows]


def mark_crashed_runs(conn: sqlite3.Connection, *, host: str | None = None) -> list[str]:
    """Mark active runs whose producer process on this host is gone as ``crashed``.

    A run's ``owner`` is ``host:pid:create_time`` of the process producing it
    (the monitor in a training script; for a run ingested from a remote
    producer, whatever that producer named, ``remote`` by default: such a run
    is never judged here, only by the liveness stage; nor is a run without an
    owner). Only runs that are ``running`` or ``paused``, owned by ``host``, and whose
    process no longer exists (or whose pid now belongs to a process started
    at another time) are changed: ``status`` becomes ``crashed``, ``end_time``
    the last sign of life (the later of the last heartbeat and the last
    update), and a ``run_crashed`` lifecycle event is added. Runs owned by a
    live process or by another host are never touched. Everything happens
    in one write transaction, which re-checks each run's status and owner.

    Args:
        conn: a connection that may write, outside any transaction.
        host: the host name as written in owners; default
            ``socket.gethostname()``. Pids are looked up on this machine.

    Returns:
        The ids of the runs marked crashed.

    Raises:
        StoreError: ``conn`` is inside a transaction.
        sqlite3.OperationalError: the store stayed locked past the busy timeout.
    """
    if conn.in_transaction:
        raise StoreError("mark_crashed_runs needs a connection outside any transaction")
    this_host = socket.gethostname() if host is None else host
    saved = conn.isolation_level
    conn.isolation_level = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            crashed = _mark_crashed(conn, this_host)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.isolation_level = saved
    return crashed


def _mark_crashed(conn: sqlite3.Connection, host: str) -> list[str]:
    candidates = conn.execute(
        "SELECT id, run_id, status, owner, COALESCE(MAX(last_heartbeat, updated_at), updated_at)"
        " FROM runs WHERE status IN ('running', 'paused') AND owner IS NOT NULL ORDER BY id"
    ).fetchall()
    detected_at = time.time()
    crashed: list[str] = []
    events: list[list[Any]] = []
    for run, run_id, status, owner, last_seen in candidates:
        parsed = _parse_owner(owner)
        if parsed is None or parsed[0] != host:
            continue
        _, pid, create_time = parsed
        if _process_alive(pid, create_time):
            continue
        conn.execute(
            "UPDATE runs SET status = 'crashed', end_time = ? WHERE id = ?",
            (last_seen, run),
        )
        reason = f"owner process {pid} on {host} is gone"
        data = {
            "status": "crashed",
            "previous_status": status,
            "reason": reason,
            "owner": owner,
            "detected_at": detected_at,
        }
        events.append([run, last_seen, orjson.dumps(data).decode()])
        crashed.append(run_id)
    if events:
        conn.executemany(
            "INSERT INTO events (run, ts, kind, type, level, data)"
            " VALUES (?, ?, 'lifecycle', 'run_crashed', 'error', ?)",
            events,
        )
    return crashed


def _parse_owner(owner: str) -> tuple[str, int, float] | None:
    """``host:pid:create_time`` → parts, or ``None`` when malformed."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3:
        return None
    host, pid_text, created_text = parts
    try:
        pid, created = int(pid_text), float(created_text)
    except ValueError:
        return None
    if pid <= 0 or not math.isfinite(created):
        return None
    return host, pid, created


def _process_alive(pid: int, create_time: float) -> bool:
    """Whether the process ``pid`` started at ``create_time`` still runs here."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = float(process.create_time())
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return False
    except psutil.AccessDenied:  # exists, but not ours to inspect: assume alive
        return True
    return abs(started - create_time) <= _CREATE_TIME_TOLERANCE_SECONDS


def run_statuses(conn: sqlite3.Connection, run_ids: list[str]) -> dict[str, str]:
    """The stored status of each of ``run_ids`` the store has (none in a store nothing was written to yet)."""
    try:
        rows = conn.execute(
            "SELECT run_id, status FROM runs WHERE run_id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(run_ids).decode(),),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise
    return dict(rows)


_ACTIVITY_COLUMNS: Final = "run_id, status, last_heartbeat, updated_at, metadata"


def run_activity(conn: sqlite3.Connection, run_ids: list[str] | None) -> list[RunActivity]:
    """The activity of ``run_ids`` (``None``: of every run that is running or hung).

    A store nothing was written to yet has none.
    """
    if run_ids is None:
        sql = f"SELECT {_ACTIVITY_COLUMNS} FROM runs WHERE status IN ('running', 'hung')"
        params: tuple[Any, ...] = ()
    else:
        sql = f"SELECT {_ACTIVITY_COLUMNS} FROM runs WHERE run_id IN (SELECT value FROM json_each(?))"
        params = (orjson.dumps(run_ids).decode(),)
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    out = []
    for run_id, status, heartbeat, updated_at, metadata in rows:
        parsed = orjson.loads(metadata) if metadata else None
        out.append(RunActivity(run_id, status, heartbeat, updated_at, parsed if isinstance(parsed, dict) else None))
    return out


def stored_batch_digest(conn: sqlite3.Connection, run_id: str, batch_id: str) -> str | None:
    """The content digest stored for an ingested batch (``""`` for one recorded before ids were scoped
    per run, ``None`` when the batch is not stored)."""
    try:
        row = conn.execute(
            "SELECT digest FROM ingest_batches WHERE batch_id = ? AND scope IN (?, '') ORDER BY scope DESC LIMIT 1",
            (batch_id, run_id),
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a store nothing was written to yet
            return None
        raise  # locked past the busy timeout: not knowing is not "not stored"
    return None if row is None else (row[0] or "")


def has_run(conn: sqlite3.Connection, run_id: str) -> bool:
    """Whether the store holds a run with this id."""
    return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None


def live_writers(connection: sqlite3.Connection) -> list[dict[str, Any]]:
    """Who writes the live runs of a store: one entry per owner of its running, paused or hung runs.

    Returns:
        ``{"owner", "runs": [run ids], "last_activity": epoch seconds}`` per owner, the
        most recently active first; ``owner`` is ``host:pid:start-time`` of a
        process, another name a remote producer gave, ``remote``, or ``None``
        (runs that only ever logged: nobody started them).
    """
    try:
        rows = connection.execute(
            "SELECT owner, run_id, MAX(updated_at, COALESCE(last_heartbeat, 0)) FROM runs"
            " WHERE status IN ('running', 'paused', 'hung') ORDER BY id"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # nothing written yet
            return []
        raise
    writers: dict[str | None, dict[str, Any]] = {}
    for owner, run_id, active in rows:
        entry = writers.setdefault(owner, {"owner": owner, "runs": [], "last_activity": active})
        entry["runs"].append(run_id)
        entry["last_activity"] = max(entry["last_activity"], active)
    return sorted(writers.values(), key=lambda entry: -entry["last_activity"])
