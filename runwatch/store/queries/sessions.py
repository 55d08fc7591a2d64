"""Reads (and the cleanup) of application sessions: runs of kind ``session``.

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`);
the layout they read is :mod:`runwatch.session_events`. Times are epoch
seconds; the web and the ``SessionMonitor`` shape them for their callers.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

from ...exceptions import UnknownRunError
from ...session_events import (
    MONITOR_KIND,
    SESSION_KIND,
    decode_session_tags,
    session_status,
)
from ..base import Series
from ..dialect import SQLITE
from ..session_sql import session_list_where
from .common import read_snapshot
from .runs import state_history

__all__ = [
    "COUNTED_EVENTS",
    "list_sessions",
    "metric_values_of",
    "read_session",
    "session_record",
    "remove_old_sessions",
    "session_metrics",
    "session_page",
    "session_run_status",
    "session_statistics",
    "statistics_of",
]

_SESSION_RUNS: Final = f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}'"
_ALL_COLUMNS: Final = ("seq", "step", "time", "value", "tags")
#: The session events that statistics count by type.
COUNTED_EVENTS: Final = ("session_created", "session_expired", "session_error", "suspicious_activity")
_RUN_COLUMNS: Final = "id, run_id, status, start_time, end_time, updated_at, last_heartbeat, metadata, state"


def session_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """A session's run row: ``pk``, ``run_id``, ``status`` (the run's), times, ``metadata`` and ``state``."""
    pk, run_id, status, start, end, updated, heartbeat, metadata_text, state = row
    metadata = orjson.loads(metadata_text) if metadata_text else {}
    return {
        "pk": pk,
        "run_id": run_id,
        "status": status,
        "start_time": start,
        "end_time": end,
        "updated_at": updated,
        "last_heartbeat": heartbeat,
        "metadata": metadata if isinstance(metadata, dict) else {},
        "state": orjson.loads(state) if state else {},
    }


def _session_row(conn: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ? AND kind = ?", (session_id, SESSION_KIND))
    found = row.fetchone()
    if found is None:
        raise UnknownRunError(session_id)
    return tuple(found)


def session_run_status(conn: sqlite3.Connection, session_id: str) -> str:
    """The session's run status.

    Raises:
        UnknownRunError: no session has this id.
    """
    status: str = _session_row(conn, session_id)[2]
    return status


def read_session(
    conn: sqlite3.Connection,
    session_id: str,
    *,
    events_limit: int,
    events_before: int | None,
    metrics_limit: int,
    metrics_before: int | None,
    history_limit: int,
    history_before: int | None,
) -> dict[str, Any]:
    """One session with pages of its log events and metric rows (newest first) and of its state patches.

    Each page holds up to one entry more than its limit (the caller tells
    from it whether another page follows). The work is bounded by the pages:
    the session's state is read from its run row (merged as each patch was
    stored), never rebuilt from its patches.

    Returns:
        ``{"session": record, "events": [{"id", "timestamp", "name", "level",
        "data"}], "metrics": [{"row", "timestamp", "values": [(name, value)],
        "tags": [...]}], "state_history": [...]}`` (see :func:`state_history`;
        that page oldest first).

    Raises:
        UnknownRunError: no session has this id.
    """
    from ..chunk_reads import read_series

    with read_snapshot(conn):  # one snapshot for the row and its pages
        row = _session_row(conn, session_id)
        run = row[0]
        history = state_history(conn, session_id, history_limit + 1, before_id=history_before)
        sql = "SELECT id, ts, type, level, data FROM events WHERE run = ? AND kind = 'log'"
        params: list[Any] = [run]
        if events_before is not None:
            sql += " AND id < ?"
            params.append(events_before)
        events = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, events_limit + 1)).fetchall()
        end = None if metrics_before is None else metrics_before - 1
        series = read_series(conn, session_id, end=end, columns=_ALL_COLUMNS)
    return session_page(row, events, series, history, metrics_limit=metrics_limit)


def session_page(
    row: tuple[Any, ...],
    events: Sequence[Sequence[Any]],
    series: Mapping[str, Series],
    history: list[dict[str, Any]],
    *,
    metrics_limit: int,
) -> dict[str, Any]:
    """The answer of :func:`read_session` from what one snapshot read, for every backend.

    Args:
        row: the session's run row (the columns of :func:`session_record`).
        events: its log events ``(id, ts, type, level, data)``, newest first.
        series: its metric series, cut at the metrics cursor.
        history: its page of state patches.
        metrics_limit: the page size of the metric rows.
    """
    from ..frames import calls_of

    # The newest calls first: a session holds few enough calls to rebuild them all here.
    calls = list(calls_of(series))[::-1][: metrics_limit + 1]
    metric_rows = []
    for seq, _, time_us, values, tags in calls:
        tag_list, _ = decode_session_tags(tags)
        pairs = [(name, float(value)) for name, value in values]
        metric_rows.append({"row": seq, "timestamp": time_us / 1e6, "values": pairs, "tags": tag_list})
    return {
        "session": session_record(row),
        "events": [
            {"id": id_, "timestamp": ts, "name": name, "level": level, "data": orjson.loads(data)}
            for id_, ts, name, level, data in events
        ],
        "metrics": metric_rows,
        "state_history": history,
    }


def list_sessions(
    conn: sqlite3.Connection,
    *,
    active: bool | None,
    status: str | None,
    product: str | None,
    limit: int,
    before: int | None,
    now: float | None = None,
    timeout_seconds: float = 60.0,
) -> list[dict[str, Any]]:
    """Session records (see :func:`read_session`), newest first: up to ``limit + 1`` of them.

    Args:
        active: only active (and hung) sessions, or only the others; ``None``: both.
        status: only sessions of this session status (``active``, ``hung``, ``crashed``, ``ended``,
            ``suspended``).
        product: only sessions of this product.
        limit: the page size.
        before: only sessions older than this ``pk`` (the cursor of the previous page).
        now: the time datacat's sessions are judged ``suspended`` at (silent for more than their
            own ``heartbeat_timeout_seconds``, else ``timeout_seconds``; such a session is not
            active); ``None``: none is.
    """
    params: list[Any] = []
    where = session_list_where(
        SQLITE,
        params,
        active=active,
        status=status,
        product=product,
        before=before,
        now=now,
        timeout_seconds=timeout_seconds,
    )
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE {where} ORDER BY id DESC LIMIT {SQLITE.param(params, limit + 1)}",
        params,
    ).fetchall()
    return [session_record(tuple(row)) for row in rows]


def session_statistics(conn: sqlite3.Connection, since: float | None) -> dict[str, Any]:
    """Session counts, event counts and metric statistics (epoch seconds in, plain values out).

    Args:
        since: events and metrics at or after this time count; ``None``: all.
            Session counts by status are always current.
    """
    from ..chunk_reads import read_series_of_runs

    floor = -math.inf if since is None else since
    with read_snapshot(conn):  # one snapshot for every count
        by_status: Counter[str] = Counter()
        for status, count in conn.execute(
            f"SELECT status, count(*) FROM runs WHERE kind = '{SESSION_KIND}' GROUP BY status"
        ):
            by_status[session_status(status)] += count
        events = f"FROM events WHERE run IN ({_SESSION_RUNS}) AND kind = 'log' AND ts >= ?"
        counts = dict(
            conn.execute(
                f"SELECT type, count(*) {events} AND type IN (SELECT value FROM json_each(?)) GROUP BY type",
                (floor, orjson.dumps(COUNTED_EVENTS).decode()),
            ).fetchall()
        )
        errors_by_type = {
            str(kind if kind is not None else "unknown"): count
            for kind, count in conn.execute(
                f"SELECT data ->> '$.details.error_type', count(*) {events} AND type = 'session_error' GROUP BY 1",
                (floor,),
            )
        }
        suspicious_by_user = {
            str(user): count
            for user, count in conn.execute(
                f"SELECT data ->> '$.user_id', count(*) {events} AND type = 'suspicious_activity' GROUP BY 1",
                (floor,),
            )
        }
        series = read_series_of_runs(
            conn, f"r.kind = '{SESSION_KIND}'", start=None if since is None else since, columns=("value",)
        )
    return statistics_of(by_status, counts, errors_by_type, suspicious_by_user, series)


def statistics_of(
    by_status: Counter[str],
    counts: Mapping[str, int],
    errors_by_type: dict[str, int],
    suspicious_by_user: dict[str, int],
    series: Iterable[Series],
) -> dict[str, Any]:
    """The answer of :func:`session_statistics` from what one snapshot read, for every backend.

    Args:
        by_status: sessions by session status.
        counts: the :data:`COUNTED_EVENTS` by type.
        errors_by_type: ``session_error`` events by error type.
        suspicious_by_user: ``suspicious_activity`` events by user.
        series: the session metric series (their values).
    """
    import numpy as np

    values: dict[str, list[npt.NDArray[np.float64]]] = {}
    for found in series:
        values.setdefault(found.name, []).append(found.points.values.astype(np.float64))
    metrics: dict[str, dict[str, Any]] = {}
    for name, parts in sorted(values.items()):
        array = np.concatenate(parts)
        finite = array[~np.isnan(array)]
        metrics[name] = {
            "count": int(array.size),
            "mean": float(finite.mean()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "p95": float(np.percentile(finite, 95)) if finite.size else None,
        }
    created = counts.get("session_created", 0)
    errors = counts.get("session_error", 0)
    return {
        "sessions": {
            "active": by_status["active"] + by_status["hung"],
            "hung": by_status["hung"],
            "crashed": by_status["crashed"],
            "ended": by_status["ended"],
            "total": sum(by_status.values()),
            "created": created,
            "expired": counts.get("session_expired", 0),
        },
        "errors": {
            "total": errors,
            "by_type": errors_by_type,
            "rate": errors / created if created else (float(errors > 0)),
        },
        "suspicious_activity": {"total": counts.get("suspicious_activity", 0), "by_user": suspicious_by_user},
        "metrics": metrics,
    }


def session_metrics(conn: sqlite3.Connection, start: float | None, end: float | None) -> list[dict[str, Any]]:
    """Every session metric value measured between ``start`` and ``end`` (epoch seconds, inclusive), in order.

    Returns:
        One dict per value, in time order (each session's calls in order):
        ``metric_type``, ``session_id``, ``user_id`` (``None`` for metrics
        without one), ``value``, ``metadata`` (a dict) and ``timestamp``
        (epoch seconds).
    """
    from ..chunk_reads import read_series_of_runs

    found = read_series_of_runs(conn, f"r.kind = '{SESSION_KIND}'", start=start, end=end, columns=_ALL_COLUMNS)
    return metric_values_of(found)


def metric_values_of(found: Iterable[Series]) -> list[dict[str, Any]]:
    """The answer of :func:`session_metrics` from the session series read, for every backend."""
    from ..frames import calls_of

    by_session: dict[str, dict[str, Series]] = {}
    for series in found:
        by_session.setdefault(series.run_id, {})[series.name] = series
    out = []
    for session_id, series_of in by_session.items():
        for _, _, time_us, values, tags in calls_of(series_of):
            _, fields = decode_session_tags(tags)
            metadata = fields.get("metadata")
            for name, value in values:
                out.append(
                    {
                        "metric_type": name,
                        "session_id": session_id,
                        "user_id": fields.get("user_id"),
                        "value": float(value),
                        "metadata": dict(metadata) if isinstance(metadata, dict) else {},
                        "timestamp": time_us / 1e6,
                    }
                )
    out.sort(key=itemgetter("timestamp"))  # stable: a session's values stay in call order
    return out


def remove_old_sessions(conn: sqlite3.Connection, cutoff: float) -> dict[str, int]:
    """Delete session data older than ``cutoff`` in one write transaction.

    Removes session (and session monitors' own) metric values, events and
    state patches older than the cutoff, and sessions ended before it
    entirely. Metric values of sessions that stay go from sealed chunks only
    (see :mod:`runwatch.store.chunk_edit`): a session's open chunk seals at
    its end, or once its values span an hour, and its old values go with the
    next cleanup after that.

    Args:
        conn: a connection that may write, in autocommit mode.

    Returns:
        What was removed: ``{"metric_rows"`` (logging calls that lost their
        values), ``"events", "state_history", "sessions"}``.
    """
    from ..chunk_edit import PointRange, remove_points

    runs = f"SELECT id FROM runs WHERE kind IN ('{SESSION_KIND}', '{MONITOR_KIND}')"
    conn.execute("BEGIN IMMEDIATE")
    try:
        ended = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM runs WHERE kind = '{SESSION_KIND}' AND status IN ('completed', 'failed', 'crashed')"
                " AND COALESCE(end_time, updated_at) < ? AND updated_at < ?",
                (cutoff, cutoff),
            )
        ]
        cutoff_us = round(cutoff * 1e6)
        old = conn.execute(
            f"SELECT DISTINCT s.run FROM metric_series AS s JOIN metric_chunks AS c ON c.series = s.id"
            f" WHERE s.run IN ({runs}) AND c.time_min < ?",
            (cutoff_us,),
        ).fetchall()
        # Sessions that ended go whole below; the others may still be written: their open chunks stay.
        removed_calls = sum(
            len(remove_points(conn, run, PointRange(before_us=cutoff_us), sealed_only=run not in ended))
            for (run,) in old
        )
        counts = {
            "metric_rows": removed_calls,
            "events": conn.execute(f"DELETE FROM events WHERE ts < ? AND run IN ({runs})", (cutoff,)).rowcount,
            "state_history": conn.execute(
                f"DELETE FROM state_history WHERE ts < ? AND run IN ({runs})", (cutoff,)
            ).rowcount,
        }
        if ended:
            ids = orjson.dumps(ended).decode()
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            conn.execute(
                "DELETE FROM metric_chunks WHERE series IN"
                " (SELECT id FROM metric_series WHERE run IN (SELECT value FROM json_each(?)))",
                (ids,),
            )
            for table in ("metric_series", "metric_stats", "events", "state_history", "metric_rollups", "snapshots"):
                if table in tables:
                    conn.execute(f"DELETE FROM {table} WHERE run IN (SELECT value FROM json_each(?))", (ids,))
            conn.execute("DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))", (ids,))
        counts["sessions"] = len(ended)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return counts
