"""REST routes (see docs/protocol.md): runs, current-run shortcuts, operations, ingest."""

from __future__ import annotations

import fnmatch
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypeVar

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask

from ..events import INT64_MIN, LEVELS, MAX_TIMESTAMP, check_storable, event_from_dict, json_number, shown
from ..exceptions import UnknownRunError
from ..sources.ingest import content_digest
from ..store import queries
from ..store.queries import RUN_STATUSES
from .app import ApiError, JSONResponse, WebContext, error_responses, iso, web_context
from .ingest_rules import with_run_rules
from .series import downsample_min_max, window_payload

__all__ = ["router"]

T = TypeVar("T")
router = APIRouter()

RUN_TIME_FIELDS = ("start_time", "end_time", "updated_at", "last_heartbeat")
#: Routes that name a run answer 404 for an unknown one, 422 for bad parameters.
RUN_ERRORS = error_responses(404, 422)
QUERY_ERRORS = error_responses(422)
_CURSOR = re.compile(r"[0-9]{1,18}")  # event ids; ASCII digits only, within 64 bits
#: How /openapi.json describes a cursor and a time (validated by the routes, with their own messages).
CURSOR_SCHEMA: dict[str, Any] = {"pattern": "^[0-9]{0,18}$"}
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,6})?$"}, {"format": "date-time"}],
}


async def read(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store query; argument errors become 422 (unknown runs stay 404)."""
    try:
        return await web_context(request).reader.run(fn, *args, **kwargs)
    except UnknownRunError:
        raise
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc)) from None


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in RUN_TIME_FIELDS:
        if name in out:
            out[name] = iso(out[name])
    return out


def _summary(summary: dict[str, Any]) -> dict[str, Any]:
    out = _run_row(summary)
    metrics = {}
    for name, stats in summary.get("metrics", {}).items():
        entry = {key: json_number(value) if isinstance(value, float) else value for key, value in stats.items()}
        if "last_timestamp" in stats:
            entry["last_timestamp"] = iso(stats["last_timestamp"])
        metrics[name] = entry
    out["metrics"] = metrics
    return out


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "timestamp": iso(event["timestamp"])}


def _time_param(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ApiError(422, f"{name} must be a finite time, got {value!r}", name)
        return number
    try:
        return queries.to_epoch_seconds(_parse_iso(value), name)
    except ValueError:
        raise ApiError(
            422, f"{name} must be seconds since the epoch or an ISO-8601 time, got {value!r}", name
        ) from None


def _parse_iso(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- runs -------------------------------------------------------------------------------


@router.get("/api/runs", tags=["runs"], summary="List runs, newest first", responses=QUERY_ERRORS)
async def list_runs(
    request: Request,
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    status: Literal[RUN_STATUSES] | None = Query(  # type: ignore[valid-type]
        None, description="running, paused, completed, failed, crashed or hung"
    ),
    kind: str | None = Query(None, min_length=1, description="training or session"),
    limit: int = Query(50, ge=1, le=10_000),
) -> JSONResponse:
    rows = await read(request, queries.list_runs, limit=limit, status=status, kind=kind)
    return JSONResponse({"runs": [_run_row(row) for row in rows]})


@router.get("/api/runs/{run_id}", tags=["runs"], summary="A run's summary", responses=RUN_ERRORS)
async def run_summary(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse(_summary(await read(request, queries.run_summary, run_id)))


@router.get(
    "/api/runs/{run_id}/metrics/names", tags=["runs"], summary="The metric names of a run", responses=RUN_ERRORS
)
async def metric_names(request: Request, run_id: str) -> JSONResponse:
    summary = await read(request, queries.run_summary, run_id)
    return JSONResponse({"run_id": run_id, "names": sorted(summary.get("metrics", {}))})


@router.get(
    "/api/runs/{run_id}/metrics",
    tags=["runs"],
    summary="Metric series, downsampled keeping min and max",
    responses=RUN_ERRORS,
)
async def run_metrics(
    request: Request,
    run_id: str,
    names: str | None = Query(None, description="comma-separated metric names (globs allowed)"),
    since: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    until: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    max_points: int = Query(2000, ge=2, le=100_000),
) -> JSONResponse:
    start, end = _time_param("since", since), _time_param("until", until)
    wanted = [name for name in (names or "").split(",") if name]
    summary = await read(request, queries.run_summary, run_id)
    known = sorted(summary.get("metrics", {}))
    selected = [n for n in known if not wanted or any(n == w or fnmatch.fnmatchcase(n, w) for w in wanted)]
    context = web_context(request)
    series: dict[str, Any] = {}
    for name in selected:
        series[name] = await read(request, _series_window, context, run_id, name, start, end, max_points)
    return JSONResponse({"run_id": run_id, "series": series})


def _series_window(
    connection: Any, context: WebContext, run_id: str, name: str, start: float | None, end: float | None, points: int
) -> dict[str, Any]:
    arrays = context.series.get(connection, context.reader.db_path, run_id, name)
    return window_payload(arrays, start, end, points)


@router.get(
    "/api/runs/{run_id}/events", tags=["runs"], summary="A run's events, newest first, paginated", responses=RUN_ERRORS
)
async def run_events(
    request: Request,
    run_id: str,
    type: str | None = Query(None, min_length=1, description="event type, e.g. episode_end"),
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    level: Literal[LEVELS] | None = Query(None),  # type: ignore[valid-type]
    kind: str | None = Query(None, min_length=1, description="log, lifecycle, exception or alert"),
    since: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    limit: int = Query(100, ge=1, le=10_000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    before_id = None
    if cursor:
        if not _CURSOR.fullmatch(cursor):
            raise ApiError(422, "cursor is not one this server returned", "cursor")
        before_id = int(cursor)
    events = await read(
        request,
        queries.run_events,
        run_id,
        type,
        _time_param("since", since),
        None,
        kind=kind,
        level=level,
        limit=limit + 1,
        before_id=before_id,
        newest_first=True,
    )
    page = events[:limit]
    next_cursor = str(page[-1]["id"]) if len(events) > limit else None
    return JSONResponse({"events": [_event_row(event) for event in page], "next_cursor": next_cursor})


@router.get("/api/runs/{run_id}/state", tags=["runs"], summary="A run's current state", responses=RUN_ERRORS)
async def run_state(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse({"run_id": run_id, "state": await read(request, queries.run_state, run_id)})


@router.get(
    "/api/runs/{run_id}/export",
    tags=["runs"],
    summary="Download a run as a zip",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the run's archive",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **RUN_ERRORS,
    },
)
async def run_export(request: Request, run_id: str) -> FileResponse:
    import tempfile
    from pathlib import Path

    from ..store.export import export_run

    context = web_context(request)
    directory = Path(tempfile.mkdtemp(prefix="runwatch-export-"))
    try:
        path = await _thread(export_run, context.reader.db_path, run_id, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, directory, ignore_errors=True)  # after the response is sent
    return FileResponse(path, media_type="application/zip", filename=path.name, background=cleanup)


async def _thread(fn: Callable[..., T], *args: Any) -> T:
    import anyio

    return await anyio.to_thread.run_sync(lambda: fn(*args))


# -- current-run shortcuts ---------------------------------------------------------------


async def _current_run(request: Request) -> str | None:
    running = await read(request, queries.list_runs, limit=1, status="running")
    if running:
        return str(running[0]["run_id"])
    newest = await read(request, queries.list_runs, limit=1)
    return str(newest[0]["run_id"]) if newest else None


@router.get("/api/status", tags=["current run"], summary="The current run's summary")
async def status(request: Request) -> JSONResponse:
    run_id = await _current_run(request)
    if run_id is None:
        return JSONResponse({"status": "idle", "run_id": None})
    return JSONResponse(_summary(await read(request, queries.run_summary, run_id)))


@router.get("/api/stats", tags=["current run"], summary="Latest value of every metric of the current run")
async def stats(request: Request) -> JSONResponse:
    run_id = await _current_run(request)
    if run_id is None:
        return JSONResponse({"run_id": None, "metrics": {}})
    summary = await read(request, queries.run_summary, run_id)
    latest = {name: json_number(entry.get("last")) for name, entry in summary.get("metrics", {}).items()}
    return JSONResponse({"run_id": run_id, "metrics": latest})


@router.get("/api/state", tags=["current run"], summary="The current run's state (game state under game_state)")
async def state(request: Request) -> JSONResponse:
    run_id = await _current_run(request)
    if run_id is None:
        return JSONResponse({"run_id": None, "state": {}})
    return JSONResponse({"run_id": run_id, "state": await read(request, queries.run_state, run_id)})


@router.get(
    "/api/metrics/history",
    tags=["current run"],
    summary="One metric of the current run over recent minutes",
    responses=QUERY_ERRORS,
)
async def metric_history(
    request: Request,
    metric: str = Query(..., min_length=1),
    minutes: float = Query(10.0, gt=0, le=60 * 24 * 365),
    max_points: int = Query(5000, ge=2, le=100_000),
) -> JSONResponse:
    run_id = await _current_run(request)
    empty = {"mean": None, "min": None, "max": None, "last": None, "count": 0}
    if run_id is None:
        return JSONResponse({"metric": metric, "run_id": None, "data": [], "statistics": empty})
    frame = await read(request, queries.run_metrics_frame, run_id, [metric], time.time() - minutes * 60, None)
    if metric not in frame or frame.empty:
        return JSONResponse({"metric": metric, "run_id": run_id, "data": [], "statistics": empty})
    values = frame[metric].to_numpy(dtype=float)
    timestamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    # pandas takes None for na_value; pandas-stubs lists only scalars
    steps = frame["step"].to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    keep = downsample_min_max(values, max_points)
    data = [
        {"timestamp": iso(float(timestamps[i])), "step": steps[i], "value": json_number(float(values[i]))} for i in keep
    ]
    finite = values[np.isfinite(values)]
    statistics = {
        "mean": float(finite.mean()) if finite.size else None,
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "last": json_number(float(values[-1])),
        "count": int(values.size),
    }
    return JSONResponse({"metric": metric, "run_id": run_id, "data": data, "statistics": statistics})


@router.get("/api/metrics/summary", tags=["current run"], summary="Statistics of every metric of the current run")
async def metric_summary(request: Request) -> JSONResponse:
    run_id = await _current_run(request)
    if run_id is None:
        return JSONResponse({})
    summary = await read(request, queries.run_summary, run_id)
    out = {
        name: {key: json_number(entry.get(key)) for key in ("mean", "min", "max", "last")} | {"count": entry["count"]}
        for name, entry in summary.get("metrics", {}).items()
    }
    return JSONResponse(out)


@router.get(
    "/api/events", tags=["current run"], summary="The current run's events, newest first", responses=QUERY_ERRORS
)
async def current_events(
    request: Request,
    type: str | None = Query(None, min_length=1),
    limit: int = Query(100, ge=1, le=10_000),
) -> JSONResponse:
    run_id = await _current_run(request)
    if run_id is None:
        return JSONResponse({"run_id": None, "events": []})
    events = await read(request, queries.run_events, run_id, type, None, None, limit=limit, newest_first=True)
    return JSONResponse({"run_id": run_id, "events": [_event_row(event) for event in events]})


# -- alerts ---------------------------------------------------------------------------------


def _alert_row(alert: dict[str, Any]) -> dict[str, Any]:
    out = dict(alert)
    for name in ("active_since", "updated_at"):
        if isinstance(out.get(name), (int, float)):
            out[name] = iso(out[name])
    return out


@router.get("/api/alerts", tags=["alerts"], summary="Alerts pending or firing now", responses=QUERY_ERRORS)
async def active_alerts(
    request: Request,
    run_id: str | None = Query(None, min_length=1),
    severity: str | None = Query(None),
) -> JSONResponse:
    # The store has every transition, whoever evaluated the rule (this process,
    # another monitor, a remote producer); the dashboard adds live ones from /ws.
    found = await read(request, queries.alerts, run_id=run_id, severity=severity)
    return JSONResponse({"alerts": [_alert_row(alert) for alert in found]})


@router.get(
    "/api/alerts/history", tags=["alerts"], summary="Alert transitions, newest first, paginated", responses=QUERY_ERRORS
)
async def alert_history(
    request: Request,
    run_id: str | None = Query(None, min_length=1),
    severity: str | None = Query(None),
    limit: int = Query(100, ge=1, le=10_000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    if cursor and not _CURSOR.fullmatch(cursor):
        raise ApiError(422, "cursor is not one this server returned", "cursor")
    before_id = int(cursor) if cursor else None
    rows = await read(
        request, queries.alert_events, run_id=run_id, severity=severity, limit=limit + 1, before_id=before_id
    )
    page = rows[:limit]
    next_cursor = str(page[-1]["id"]) if len(rows) > limit else None
    return JSONResponse({"alerts": [_alert_row(row) for row in page], "next_cursor": next_cursor})


# -- operations ----------------------------------------------------------------------------


def _pipeline_view(context: WebContext) -> dict[str, Any]:
    if context.pipeline is None:
        return {"running": False, "health": "unknown", "components": {}}
    stats: dict[str, Any] = context.pipeline.statistics()
    now = time.monotonic()
    health = "ok"
    for component_id, entry in stats["components"].items():
        if entry.get("role") == "source":  # a source's work is what it sent; its queue is its intake
            entry["processed_events"] = entry.get("sent_events", 0)
            if "intake" in entry:
                entry.setdefault("buffer", entry["intake"])
        processed = int(entry.get("processed_events") or 0)
        previous = context.previous_stats.get(component_id)
        rate = None
        if previous is not None and now > previous[0]:
            rate = (processed - previous[1]) / (now - previous[0])
        context.previous_stats[component_id] = (now, processed)
        entry["events_per_second"] = rate
        if entry.get("health") == "degraded" or entry.get("failed"):
            health = "degraded"
    stats["health"] = health
    if context.connections is not None:
        stats["web"] = context.connections.statistics()._asdict()
    return stats


@router.get("/api/pipeline", tags=["operations"], summary="Per-component queue depth, rates, drops, flush latency")
async def pipeline_view(request: Request) -> JSONResponse:
    return JSONResponse(_pipeline_view(web_context(request)))


@router.get("/api/health", tags=["operations"], summary="ok or degraded")
async def health(request: Request) -> JSONResponse:
    view = _pipeline_view(web_context(request))
    store = view.get("components", {}).get("store", {})
    return JSONResponse(
        {
            "status": view["health"],
            "store": {k: store.get(k) for k in ("health", "pending_events", "last_commit_error")},
        }
    )


@router.get("/metrics", tags=["operations"], summary="Prometheus metrics", response_class=PlainTextResponse)
async def prometheus(request: Request) -> Response:
    view = _pipeline_view(web_context(request))
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{_label(val)}"' for key, val in labels.items())
            lines.append(f"{name}{{{rendered}}} {value}")

    processed, dropped, buffered, capacity, errors = [], [], [], [], []
    buffered_bytes, capacity_bytes = [], []
    for component_id, entry in view.get("components", {}).items():
        labels = {"component_id": component_id, "component_kind": entry["role"], "component_type": entry["type"]}
        processed.append((labels, float(entry.get("processed_events") or entry.get("sent_events") or 0)))
        errors.append((labels, float(entry.get("errors", 0))))
        all_drops = dict(entry.get("dropped_events", {}))
        for reason, count in entry.get("buffer", {}).get("dropped_events", {}).items():
            all_drops[reason] = all_drops.get(reason, 0) + count
        for reason, count in entry.get("intake", {}).get("dropped_events", {}).items():
            all_drops[reason] = all_drops.get(reason, 0) + count
        for reason, count in all_drops.items():
            dropped.append(({**labels, "reason": reason}, float(count)))
        if "buffer" in entry:
            queue = entry["buffer"]
            buffered.append((labels, float(queue["buffered_events"])))
            capacity.append((labels, float(queue["max_events"])))
            if "max_bytes" in queue:
                buffered_bytes.append((labels, float(queue["buffered_bytes"])))
                capacity_bytes.append((labels, float(queue["max_bytes"])))
    metric("runwatch_component_events_total", "counter", "Events processed by each component.", processed)
    metric("runwatch_component_dropped_events_total", "counter", "Events dropped, by reason.", dropped)
    metric("runwatch_component_errors_total", "counter", "Errors raised inside each component.", errors)
    metric("runwatch_buffer_events", "gauge", "Events waiting in each component's input buffer.", buffered)
    metric("runwatch_buffer_max_events", "gauge", "Bound of each component's input buffer.", capacity)
    web = view.get("web")
    if web is not None:
        metric(
            "runwatch_web_connections",
            "gauge",
            "Open web connections (HTTP and websocket).",
            [({}, float(web["open_connections"]))],
        )
        metric(
            "runwatch_web_max_connections",
            "gauge",
            "The cap on open web connections.",
            [({}, float(web["max_connections"]))],
        )
        closed = [("refused", "refused_connections"), ("evicted", "evicted_connections")]
        closed.append(("header_timeout", "header_timeouts"))
        metric(
            "runwatch_web_connections_closed_total",
            "counter",
            "Web connections closed by the server's limits, by reason.",
            [({"reason": reason}, float(web[key])) for reason, key in closed],
        )
    metric(
        "runwatch_buffer_bytes",
        "gauge",
        "Estimated bytes of the events in each component's input buffer.",
        buffered_bytes,
    )
    metric("runwatch_buffer_max_bytes", "gauge", "Byte bound of each component's input buffer.", capacity_bytes)
    metric(
        "runwatch_up",
        "gauge",
        "1 when the pipeline runs and the store accepts writes.",
        [({}, 1.0 if view.get("running") and view.get("health") == "ok" else 0.0)],
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -- ingest ----------------------------------------------------------------------------------

_TIMESTAMP = {
    "type": "number",
    "minimum": 0,
    "maximum": MAX_TIMESTAMP,
    "description": "seconds since the epoch; absent: when the server received the request",
}
_RUN_ID = {"type": "string", "minLength": 1}
_INT64 = {"type": "integer", "format": "int64"}
_METRIC_VALUE = {"anyOf": [{"type": "number"}, {"type": "null"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_WIRE_EVENTS = [
    {
        "type": "object",
        "title": "metric",
        "required": ["kind", "run_id", "values"],
        "properties": {
            "kind": {"const": "metric"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "values": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"minLength": 1},
                "additionalProperties": _METRIC_VALUE,
            },
            "step": {"anyOf": [_INT64, {"type": "null"}]},
            "tags": {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "log",
        "required": ["kind", "run_id", "type"],
        "properties": {
            "kind": {"const": "log"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "type": {"type": "string", "minLength": 1},
            "level": {"enum": list(LEVELS)},
            "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "state",
        "required": ["kind", "run_id", "patch"],
        "properties": {
            "kind": {"const": "state"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "patch": {"type": "object"},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "heartbeat",
        "required": ["kind", "run_id"],
        "properties": {
            "kind": {"const": "heartbeat"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "counters": {"anyOf": [{"type": "object", "additionalProperties": _INT64}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "title": "lifecycle",
        "required": ["kind", "run_id", "transition"],
        "properties": {
            "kind": {"const": "lifecycle"},
            "run_id": _RUN_ID,
            "timestamp": _TIMESTAMP,
            "transition": {"enum": ["started", "paused", "resumed", "completed", "failed"]},
            "run_kind": {"type": "string", "minLength": 1},
            "config": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "final_reward": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "metadata": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        },
        "additionalProperties": False,
    },
    # exception and alert events are accepted too (docs/protocol.md); not described here.
]
_EVENTS = {"type": "array", "items": {"oneOf": _WIRE_EVENTS}}
INGEST_BODY_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _EVENTS,
                        {
                            "type": "object",
                            "properties": {
                                "batch_id": {
                                    "anyOf": [{"type": "string", "minLength": 1, "maxLength": 200}, {"type": "null"}]
                                },
                                "events": _EVENTS,
                            },
                            "required": ["events"],
                            "additionalProperties": False,
                        },
                    ]
                }
            }
        },
    }
}


UINT64_MAX = 2**64 - 1  # beyond int64 is refused later, naming the field
_TWENTY_DIGITS = re.compile(rb"[0-9]{20}")


def loads_json(body: bytes) -> Any:
    """Parse a request body with orjson, refusing integers beyond 64 bits.

    orjson reads an integer literal past 64 bits as a float, which would store
    ``10**30`` as ``1e30`` without a word; such literals have at least 20 digits,
    so only a body with a run of 20 digits is parsed again, by the standard
    library, to find them (digits inside strings are not integers there).

    Raises:
        orjson.JSONDecodeError: malformed JSON.
        ApiError: 422 for an integer beyond 64 bits.
    """
    document = orjson.loads(body)
    if _TWENTY_DIGITS.search(body):

        def parse_int(text: str) -> int:
            value = int(text)
            if not INT64_MIN <= value <= UINT64_MAX:
                raise ApiError(422, f"integer {text[:40]} does not fit in 64 bits")
            return value

        try:
            json.loads(body, parse_int=parse_int)
        except RecursionError:
            raise ApiError(422, "the document is nested too deeply") from None
    return document


class IngestBody(NamedTuple):
    """A validated ingest body: its events, its batch id and the digest of its content."""

    events: list[Any]
    batch_id: str | None
    digest: str


def check_batch_id(batch_id: Any) -> str | None:
    """A request's ``batch_id``: ``None`` or 1 to 200 characters the store can keep.

    Raises:
        ApiError: 422 naming ``batch_id``.
    """
    if batch_id is None:
        return None
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= 200:
        raise ApiError(422, "batch_id must be a string of 1 to 200 characters", "batch_id")
    try:
        check_storable("batch_id", batch_id)
    except ValueError as exc:
        raise ApiError(422, str(exc), "batch_id") from None
    return batch_id


def parse_ingest_body(body: bytes, max_events: int) -> IngestBody:
    """Validate an ingest body completely: all of it is taken, or nothing.

    Raises:
        ApiError: 400 for malformed JSON, 422 naming the first bad field
            (``events[3].values.loss``; every event is checked before any is taken).
    """
    try:
        document = loads_json(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    batch_id = None
    if isinstance(document, dict):
        unknown = [key for key in document if key not in ("batch_id", "events")]
        if unknown:
            raise ApiError(422, f"unknown field {shown(unknown[0])}", unknown[0][:200])
        batch_id = check_batch_id(document.get("batch_id"))
        items = document.get("events")
        prefix = "events"
    else:
        items, prefix = document, ""
    if not isinstance(items, list):
        raise ApiError(422, "expected a JSON array of events (or an object with an events array)", prefix or None)
    if len(items) > max_events:
        raise ApiError(413, f"at most {max_events} events per request, got {len(items)}", prefix or None)
    events = []
    received_at = time.time()  # the timestamp of events that carry none
    for index, item in enumerate(items):
        where = f"{prefix}[{index}]"
        if isinstance(item, dict) and "timestamp" not in item:
            item = {**item, "timestamp": received_at}
        try:
            events.append(event_from_dict(_decode_wire_numbers(item)))
        except (TypeError, ValueError) as exc:
            field = getattr(exc, "field", None)
            path = f"{where}.{field}" if field else where
            raise ApiError(422, f"{path}: {exc}", path) from None
    # Valid events nest at most ~70 levels: the digest's serialisation (up to 254) cannot fail.
    return IngestBody(events, batch_id, content_digest(items))


def _integral(value: Any) -> Any:
    """``3.0`` as ``3`` (JSON Schema's integers include integral numbers written with a fraction).

    Only below 2**53, where a double is exact: orjson reads integer literals beyond
    64 bits as floats, and those must stay out of range (refused), not be rounded in.
    """
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _wire_integers(item: dict[str, Any]) -> dict[str, Any]:
    """Integer fields (a metric's ``step``, a heartbeat's ``counters``) given as integral floats become ints."""
    kind = item.get("kind")
    if kind == "metric" and type(item.get("step")) is float:
        return {**item, "step": _integral(item["step"])}
    counters = item.get("counters")
    if kind == "heartbeat" and isinstance(counters, dict) and any(type(v) is float for v in counters.values()):
        return {**item, "counters": {key: _integral(value) for key, value in counters.items()}}
    return item


def _decode_wire_numbers(item: Any) -> Any:
    """Metric values may carry "NaN"/"Infinity"/"-Infinity" (JSON has no such numbers).

    On the wire a number is a JSON number: ``true``/``false`` where one is
    expected is refused (Python callers may pass bools; JSON producers mean
    something else).
    """
    if isinstance(item, dict):
        item = _wire_integers(item)
    if isinstance(item, dict) and item.get("kind") == "lifecycle" and isinstance(item.get("final_reward"), bool):
        error = TypeError("final_reward must be a number or null, got a boolean")
        # the error handler reads ``field`` back with getattr to name it in the 422 body
        error.field = "final_reward"  # type: ignore[attr-defined]
        raise error
    if isinstance(item, dict) and item.get("kind") == "metric" and isinstance(item.get("values"), dict):
        values = item["values"]
        for name, value in values.items():
            if isinstance(value, bool):
                error = TypeError(f"metric {shown(name)} must be a number, got a boolean")
                error.field = f"values.{name[:200]}"  # type: ignore[attr-defined]  # as for final_reward above
                raise error
        if any(isinstance(value, str) or value is None for value in values.values()):
            decoded = {}
            for name, value in values.items():
                if value is None or value == "NaN":
                    decoded[name] = math.nan
                elif value == "Infinity":
                    decoded[name] = math.inf
                elif value == "-Infinity":
                    decoded[name] = -math.inf
                else:
                    decoded[name] = value
            return {**item, "values": decoded}
    return item


@router.post(
    "/api/ingest",
    tags=["ingest"],
    summary="Take a batch of typed events from a remote producer",
    status_code=202,
    openapi_extra=INGEST_BODY_SCHEMA,
    responses={
        200: {"description": "a retried batch_id: already stored, nothing stored again"},
        **error_responses(400, 409, 413, 415, 422, 503),
    },
)
async def ingest(request: Request) -> JSONResponse:
    context = web_context(request)
    source = context.service("ingest")
    body = parse_ingest_body(await request.body(), context.max_ingest_events)
    result = await source.submit(
        body.events, body.batch_id, digest=body.digest, admit=lambda events: with_run_rules(context, events)
    )
    answer = {"accepted": result.accepted, "batch_id": result.batch_id, "duplicate": result.duplicate}
    return JSONResponse(answer, status_code=200 if result.duplicate else 202)
