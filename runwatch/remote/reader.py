"""The read side of a remote-mode monitor: ``DatabaseManager``'s read methods, answered by a server's REST API.

A monitor in remote mode stores nothing locally, so its queries
(``get_run_metrics``, ``get_run_summary``...) go to the server it sends to,
and come back in the shapes :class:`~runwatch.store.manager.DatabaseManager`
gives: aware UTC ``datetime`` objects where it has them, NaN where it has
NaN, a ``DataFrame`` built by the same code from the same stored values
(``/api/runs/{id}/metrics/calls``, see :func:`runwatch.store.queries.metric_calls`).

Before each read it calls ``before_read`` (the remote sink's
``wait_delivered``, bounded), so a monitor reads what it sent, as an
embedded one reads what it wrote.

Argument errors are raised before any request, by the same checks
``DatabaseManager`` uses. A 404 for a run is :class:`UnknownRunError`; a
server that cannot be reached or refuses the token is a :class:`StoreError`
naming the server (never the token).
"""

from __future__ import annotations

import http.client
import math
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import orjson

from ..client import HTTPTransport
from ..exceptions import StoreError, UnknownRunError
from ..store import queries
from ..store.queries import frame_from_calls
from ..store.queries.common import check_metric_names
from ..wire import number_from_json
from .media_reads import RestMediaReads
from .server_url import check_server_url, display_url

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RestReader"]

_RUN_TIME_KEYS = ("start_time", "end_time", "updated_at", "last_heartbeat")
#: The most runs one ``/api/runs`` answer holds: ``limit=None`` reads that many.
_MAX_RUNS = 10_000
_EVENTS_PER_PAGE = 10_000
#: A cursor past every event id: pages then follow storage order from the first one on.
_PAST_EVERY_EVENT = "9" * 18
_CALLS_PER_PAGE = 50_000


def _datetime(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _epoch(text: Any) -> Any:
    return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else text


class RestReader(RestMediaReads):
    """``DatabaseManager``'s read methods over a runwatch server's REST API (see the module docs).

    Args:
        url: the server (``http(s)://host:port``, no credentials in it).
        token: its bearer token (sent in the ``Authorization`` header only).
        timeout: the socket timeout of one request, in seconds.
        before_read: called before each read (``None``: nothing), e.g. to wait
            until what this process sent is delivered.
        transport: sends one request (default: a :class:`runwatch.client.HTTPTransport`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        before_read: Callable[[], Any] | None = None,
        transport: Any = None,
    ) -> None:
        self.url = check_server_url(url)
        self._transport = transport if transport is not None else HTTPTransport(self.url, timeout=timeout)
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._before_read = before_read
        self._closed = False
        #: Logging calls asked for per request (pages are joined into one frame).
        self.calls_per_page = _CALLS_PER_PAGE
        #: Events asked for per request.
        self.events_per_page = _EVENTS_PER_PAGE

    def __repr__(self) -> str:
        return f"RestReader({display_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections; later calls raise :class:`StoreError`. Idempotent."""
        if not self._closed:
            self._closed = True
            closing = getattr(self._transport, "close", None)
            if closing is not None:
                closing()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None, *, run_id: str | None = None) -> Any:
        return orjson.loads(self._get_bytes(path, params, run_id=run_id))

    def _get_bytes(self, path: str, params: dict[str, Any] | None = None, *, run_id: str | None = None) -> bytes:
        body = self._fetch(path, params, run_id=run_id, missing_ok=False)
        assert body is not None  # a 404 raised
        return body

    def _get_if_found(
        self, path: str, params: dict[str, Any] | None = None, *, run_id: str | None = None
    ) -> bytes | None:
        """As :meth:`_get_bytes`, but ``None`` for a 404 about something other than the run (no such image)."""
        return self._fetch(path, params, run_id=run_id, missing_ok=True)

    def _fetch(self, path: str, params: dict[str, Any] | None, *, run_id: str | None, missing_ok: bool) -> bytes | None:
        if self._closed:
            raise StoreError(f"the reader of {display_url(self.url)} is closed")
        if self._before_read is not None:
            self._before_read()
        query = {key: value for key, value in (params or {}).items() if value is not None}
        target = path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
        try:
            status, body = self._transport("GET", target, None, self._headers)
        except (OSError, http.client.HTTPException) as exc:
            raise StoreError(f"the runwatch server {display_url(self.url)} cannot be reached: {exc}") from exc
        if status == 200:
            return bytes(body)
        error = _error(body)
        message = str(error.get("message") or body[:200].decode("utf-8", "replace") or "no message")
        if status == 404 and missing_ok and error.get("field") != "run_id":
            return None
        if status == 404 and run_id is not None:
            raise UnknownRunError(run_id)
        if status == 422:
            raise ValueError(message)
        raise StoreError(f"the runwatch server {display_url(self.url)} answered {status}: {message}")

    @staticmethod
    def _run_path(run_id: str, suffix: str = "") -> str:
        return f"/api/runs/{urllib.parse.quote(run_id, safe='')}{suffix}"

    # -- DatabaseManager's read methods ----------------------------------------------------------

    def get_training_runs(
        self, limit: int | None = None, status: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        """As :meth:`DatabaseManager.get_training_runs` (``limit=None``: the newest 10,000)."""
        queries.check_limit(limit)
        queries.check_status(status)
        if kind is not None and (type(kind) is not str or not kind):
            raise TypeError(f"kind must be a non-empty string or None, got {kind!r}")
        params = {"limit": min(limit or _MAX_RUNS, _MAX_RUNS), "status": status, "kind": kind}
        runs = self._get("/api/runs", params)["runs"]
        return [{**run, **{key: _datetime(run.get(key)) for key in _RUN_TIME_KEYS}} for run in runs]

    def get_run_summary(self, run_id: str) -> dict[str, Any]:
        """As :meth:`DatabaseManager.get_run_summary`."""
        queries.check_run_id(run_id)
        summary: dict[str, Any] = self._get(self._run_path(run_id), run_id=run_id)
        for key in _RUN_TIME_KEYS:
            summary[key] = _datetime(summary.get(key))
        for stats in summary.get("metrics", {}).values():
            for key in ("last", "min", "max", "mean"):
                stats[key] = number_from_json(stats.get(key))
            if stats.get("last") is None:
                stats["last"] = math.nan  # a NaN last value travels as null
            if stats.get("mean") is None and stats["count"] > stats["nan_count"]:
                stats["mean"] = math.nan  # +Inf and -Inf both logged: the mean is NaN, not missing
            stats["last_timestamp"] = _datetime(stats.get("last_timestamp"))
        return summary

    def get_run_metrics(
        self,
        run_id: str,
        metric_names: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        *,
        align: str = "step",
    ) -> pd.DataFrame:
        """As :meth:`DatabaseManager.get_run_metrics` (the same DataFrame, value for value)."""
        queries.check_run_id(run_id)
        queries.check_align(align)
        start = queries.to_epoch_seconds(start_time, "start_time")
        end = queries.to_epoch_seconds(end_time, "end_time")
        names = check_metric_names(metric_names)
        if names is not None and any("," in name for name in names):
            raise ValueError("metric names with a comma cannot be asked for over the REST API")
        return frame_from_calls(self._call_pages(run_id, names, start, end), names, align=align)

    def get_runs_metrics(self, run_ids: list[str], metric_names: list[str] | None = None) -> pd.DataFrame:
        """As :meth:`DatabaseManager.get_runs_metrics` (the same long frame, value for value).

        Each run's points come from ``/api/runs/{id}/metrics/points`` (one
        request per run), and the frame is built by the code the store uses
        (:func:`runwatch.store.queries.compare.runs_series_frame`).
        """
        import numpy as np

        from ..store.queries.compare import check_run_ids, runs_series_frame

        runs = check_run_ids(run_ids)
        names = check_metric_names(metric_names)
        wanted = None if names is None else [name for name in names if name]
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for run_id in runs:
            if wanted == []:  # no metric asked for: nothing to read, but the run must exist
                if not self.has_run(run_id):
                    raise UnknownRunError(run_id)
                found[run_id] = {}
                continue
            answer = self._get(self._run_path(run_id, "/metrics/points"), {"name": wanted}, run_id=run_id)
            found[run_id] = {
                series["name"]: {
                    "ts": np.array(series["time"], dtype=np.float64),
                    "step": np.array(series["step"], dtype=np.int64),
                    # numpy reads null as NaN and "Infinity"/"-Infinity" as ±Inf
                    "value": np.array(series["value"], dtype=np.float64),
                }
                for series in answer["metrics"]
            }
        return runs_series_frame(found)

    def get_metric_rollups(self, run_id: str, metric_names: list[str] | None = None) -> pd.DataFrame:
        """As :meth:`DatabaseManager.get_metric_rollups` (the same DataFrame, value for value)."""
        from ..store.downsample import check_rollup_names, rollup_frame

        queries.check_run_id(run_id)
        check_rollup_names(metric_names)
        if metric_names == []:
            self._get(self._run_path(run_id), run_id=run_id)  # the run must exist
            return rollup_frame([])
        rows = self._get(self._run_path(run_id, "/metrics/rollups"), {"name": metric_names}, run_id=run_id)["rollups"]
        for row in rows:
            for key in ("min", "max", "mean"):  # NaN travels as null, ±Inf as "Infinity"/"-Infinity"
                row[key] = None if row[key] is None else float(row[key])
        return rollup_frame(rows)

    def _call_pages(
        self, run_id: str, names: list[str] | None, start: float | None, end: float | None
    ) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "names": None if names is None else ",".join(names),
            "since": None if start is None else repr(start),
            "until": None if end is None else repr(end),
            "limit": self.calls_per_page,
        }
        if names == []:
            return  # asked for no metric: no call logged one of them
        after: int | None = None
        while True:
            page = self._get(self._run_path(run_id, "/metrics/calls"), {**params, "after_row": after}, run_id=run_id)
            yield page
            after = page.get("next_after_row")
            if after is None:
                return

    def get_run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """As :meth:`DatabaseManager.get_run_events`: oldest first."""
        queries.check_run_id(run_id)
        if event_type is not None and (type(event_type) is not str or not event_type):
            raise TypeError(f"event_type must be a non-empty string or None, got {event_type!r}")
        start = queries.to_epoch_seconds(start_time, "start_time")
        end = queries.to_epoch_seconds(end_time, "end_time")
        events: list[dict[str, Any]] = []
        params: dict[str, Any] = {
            "type": event_type,
            "since": None if start is None else repr(start),
            "until": None if end is None else repr(end),  # compared with the stored times, as the manager does
            "limit": self.events_per_page,
        }
        cursor: str | None = _PAST_EVERY_EVENT
        while cursor is not None:
            page = self._get(self._run_path(run_id, "/events"), {**params, "cursor": cursor}, run_id=run_id)
            events.extend(page["events"])
            cursor = page.get("next_cursor")
        out = [{**event, "timestamp": _datetime(event["timestamp"])} for event in events]
        out.sort(key=lambda event: (event["timestamp"], event["id"]))
        return out

    def get_run_state(self, run_id: str) -> dict[str, Any]:
        """As :meth:`DatabaseManager.get_run_state`."""
        queries.check_run_id(run_id)
        state: dict[str, Any] = self._get(self._run_path(run_id, "/state"), run_id=run_id)["state"]
        return state

    def get_alerts(self, run_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """As :meth:`DatabaseManager.get_alerts` (times as epoch seconds, to the microsecond the REST API keeps)."""
        if state is not None and state not in queries.ALERT_QUERY_STATES:
            raise ValueError(f"state must be one of {', '.join(queries.ALERT_QUERY_STATES)}, or None; got {state!r}")
        if run_id is not None:
            queries.check_run_id(run_id)
        alerts = self._get("/api/alerts", {"run_id": run_id, "state": state})["alerts"]
        return [
            {**alert, "active_since": _epoch(alert.get("active_since")), "updated_at": _epoch(alert["updated_at"])}
            for alert in alerts
        ]

    def export_run(self, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
        """The server's export of a run (see :meth:`WebMonitor.export_run_data`), written to ``output_dir``.

        Returns:
            The path of the archive (``<run_id>-<UTC time>.zip``).
        """
        from ..store.export import archive_name

        queries.check_run_id(run_id)
        params = {"include_snapshots": "true" if include_snapshots else "false"}
        archive = self._get_bytes(self._run_path(run_id, "/export"), params, run_id=run_id)
        output_dir = Path(output_dir)
        output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = output_dir / archive_name(run_id)
        partial = target.with_name(f".{target.name}.part")
        partial.write_bytes(archive)
        partial.replace(target)  # appears whole, as a local export does
        return target

    def has_run(self, run_id: str) -> bool:
        """Whether the server holds a run with this id."""
        try:
            self._get(self._run_path(run_id), run_id=run_id)
        except UnknownRunError:
            return False
        return True

    # -- the sessions' reads (what SessionMonitor reports) ----------------------------------------

    def session_statistics(self, since: float | None) -> dict[str, Any]:
        """As :meth:`runwatch.store.base.Store.session_statistics`, from the server's store."""
        stats: dict[str, Any] = self._get("/api/session-statistics", {"since": None if since is None else repr(since)})
        for figures in stats.get("metrics", {}).values():
            for name, value in figures.items():
                figures[name] = number_from_json(value)
        return stats

    def session_metrics(self, start: float | None, end: float | None) -> list[dict[str, Any]]:
        """As :meth:`runwatch.store.base.Store.session_metrics` (times in epoch seconds), from the server's store."""
        params = {"since": None if start is None else repr(start), "until": None if end is None else repr(end)}
        values = self._get("/api/session-metrics", params)["metrics"]
        return [
            {**value, "value": math.nan if value["value"] is None else number_from_json(value["value"])}
            for value in values
        ]

    def mark_crashed_runs(self) -> list[str]:
        """Nothing to do here: the server judges the runs it stores (its liveness stage). Returns ``[]``."""
        return []


def _error(body: bytes) -> dict[str, Any]:
    """The ``error`` object of an error answer (empty when the body is not one)."""
    try:
        error = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}
