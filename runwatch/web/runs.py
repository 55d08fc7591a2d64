"""REST routes of runs (see docs/protocol.md): the list, a run's summary, tags and note, metrics, events, state, export.

``/api/runs/{id}/metrics/calls`` gives a run's logging calls as stored, in
pages: a remote-mode monitor builds ``get_run_metrics``' DataFrame from them
(:func:`runwatch.store.queries.frame_from_calls`), value for value the frame
read from the file (values travel as the stored JSON text).
``/api/runs/{id}/metrics/points`` gives every point of a run's series on its
global step, as run comparison reads them: ``get_runs_metrics``' long frame
is built from them (:func:`runwatch.store.queries.compare.runs_series_frame`).
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from ..events import LEVELS
from ..store.base import Store
from ..store.queries import MAX_CALLS_PER_PAGE, RUN_STATUSES
from ..wire import json_number
from ..wire.annotations import ANNOTATION_BODY_SCHEMA, parse_annotation_body
from .http import (
    CURSOR_SCHEMA,
    TIME_SCHEMA,
    JSONResponse,
    body_schema,
    cursor_param,
    error_responses,
    iso,
    read,
    time_param,
    web_context,
)
from .series import chart_payload, series_payload

__all__ = ["event_row", "router", "run_row", "summary_of"]

router = APIRouter(tags=["runs"])

RUN_TIME_FIELDS = ("start_time", "end_time", "updated_at", "last_heartbeat")
#: Routes that name a run answer 404 for an unknown one, 422 for bad parameters.
RUN_ERRORS = error_responses(404, 422)
QUERY_ERRORS = error_responses(422)
#: Metric names as a repeated query parameter (a name may hold a comma).
MetricNames = Annotated[list[str] | None, Query(description="only these metrics (repeat the parameter); default all")]


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    """A run's row with ISO-8601 times."""
    out = dict(row)
    for name in RUN_TIME_FIELDS:
        if name in out:
            out[name] = iso(out[name])
    return out


def summary_of(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's summary with ISO-8601 times and JSON-safe metric statistics."""
    out = run_row(summary)
    metrics = {}
    for name, stats in summary.get("metrics", {}).items():
        entry = {key: json_number(value) if isinstance(value, float) else value for key, value in stats.items()}
        if "last_timestamp" in stats:
            entry["last_timestamp"] = iso(stats["last_timestamp"])
        metrics[name] = entry
    out["metrics"] = metrics
    return out


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """An event with an ISO-8601 timestamp."""
    return {**event, "timestamp": iso(event["timestamp"])}


@router.get("/api/runs", summary="List runs, newest first", responses=QUERY_ERRORS)
async def list_runs(
    request: Request,
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    status: Literal[RUN_STATUSES] | None = Query(  # type: ignore[valid-type]
        None, description="running, paused, completed, failed, crashed or hung"
    ),
    kind: str | None = Query(None, min_length=1, description="training or session"),
    exclude_kind: str | None = Query(None, min_length=1, description="leave out runs of this kind (e.g. session)"),
    limit: int = Query(50, ge=1, le=10_000),
    details: bool = Query(False, description="add config, tags, note, latest global step, alert counts, metric_names"),
    metrics: str | None = Query(None, description="with details: comma-separated metrics to give last/min/max of"),
) -> JSONResponse:
    store = web_context(request).store
    rows = await read(store.list_runs, limit=limit, status=status, kind=kind, exclude_kind=exclude_kind)
    body: dict[str, Any] = {"runs": [run_row(row) for row in rows]}
    if details:
        wanted = [name for name in (metrics or "").split(",") if name]
        found = await read(store.runs_table_details, [row["run_id"] for row in rows], wanted)
        for row in body["runs"]:
            extra = found["runs"].get(row["run_id"], {})
            extra["metrics"] = {
                name: {key: json_number(value) for key, value in stats.items()}
                for name, stats in extra.get("metrics", {}).items()
            }
            row.update(extra)
        body["metric_names"] = found["metric_names"]
    return JSONResponse(body)


@router.get("/api/runs/{run_id}", summary="A run's summary", responses=RUN_ERRORS)
async def run_summary(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse(summary_of(await read(web_context(request).store.run_summary, run_id)))


@router.patch(
    "/api/runs/{run_id}",
    summary="Set a run's tags and/or note",
    openapi_extra=body_schema(ANNOTATION_BODY_SCHEMA),
    responses=error_responses(400, 404, 422),
)
async def annotate_run(request: Request, run_id: str) -> JSONResponse:
    tags, note = parse_annotation_body(await request.body())
    result = await read(web_context(request).store.annotate_run, run_id, tags=tags, note=note)
    return JSONResponse({"run_id": run_id, **result, "updated_at": iso(result["updated_at"])})


@router.get("/api/runs/{run_id}/metrics/names", summary="The metric names of a run", responses=RUN_ERRORS)
async def metric_names(request: Request, run_id: str) -> JSONResponse:
    summary = await read(web_context(request).store.run_summary, run_id)
    return JSONResponse({"run_id": run_id, "names": sorted(summary.get("metrics", {}))})


@router.get(
    "/api/runs/{run_id}/metrics",
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
    start, end = time_param("since", since), time_param("until", until)
    wanted = [name for name in (names or "").split(",") if name]
    store = web_context(request).store
    summary = await read(store.run_summary, run_id)
    known = sorted(summary.get("metrics", {}))
    selected = [n for n in known if not wanted or any(n == w or fnmatch.fnmatchcase(n, w) for w in wanted)]
    series = await read(_series_windows, store, run_id, selected, start, end, max_points)
    return JSONResponse({"run_id": run_id, "series": series})


@router.get(
    "/api/runs/{run_id}/metrics/calls",
    summary="A run's logging calls as stored, in pages (what get_run_metrics' DataFrame is built from)",
    responses=RUN_ERRORS,
)
async def run_metric_calls(
    request: Request,
    run_id: str,
    names: str | None = Query(None, description="comma-separated metric names: only calls that logged one"),
    since: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    until: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    after_row: int | None = Query(None, ge=-1, le=2**63 - 1, description="next_after_row of the previous page"),
    limit: int = Query(20_000, ge=1, le=MAX_CALLS_PER_PAGE),
) -> JSONResponse:
    wanted = [name for name in names.split(",") if name] if names else None
    page = await read(
        web_context(request).store.metric_calls,
        run_id,
        wanted,
        time_param("since", since),
        time_param("until", until),
        after_row=after_row,
        limit=limit,
    )
    return JSONResponse({"run_id": run_id, **page})


@router.get(
    "/api/runs/{run_id}/metrics/points",
    summary="Every point of a run's series on its global step (what get_runs_metrics' frame is built from)",
    responses=RUN_ERRORS,
)
async def run_metric_points(
    request: Request,
    run_id: str,
    name: MetricNames = None,
) -> JSONResponse:
    found = await read(web_context(request).store.runs_metrics, [run_id], name)
    return JSONResponse(
        {"run_id": run_id, "metrics": [_points(metric, arrays) for metric, arrays in found[run_id].items()]}
    )


@router.get(
    "/api/runs/{run_id}/metrics/rollups",
    summary="The rollups that replaced a run's downsampled metric rows (what get_metric_rollups' frame is built from)",
    responses=RUN_ERRORS,
)
async def run_metric_rollups(
    request: Request,
    run_id: str,
    name: MetricNames = None,
) -> JSONResponse:
    rows = await read(web_context(request).store.metric_rollups, run_id, name)
    for row in rows:
        for key in ("min", "max", "mean"):
            row[key] = json_number(row[key])
    return JSONResponse({"run_id": run_id, "rollups": rows})


def _points(name: str, arrays: dict[str, Any]) -> dict[str, Any]:
    """One series' points: ``time`` in epoch seconds (exact: JSON numbers keep a float's every bit),
    ``step``, and ``value`` with NaN as ``null`` and ±Inf as ``"Infinity"``/``"-Infinity"``."""
    values = arrays["value"]
    listed = values.tolist()
    if not np.isfinite(values).all():
        listed = [json_number(value) for value in listed]
    return {"name": name, "time": arrays["ts"].tolist(), "step": arrays["step"].tolist(), "value": listed}


def _series_windows(
    store: Store, run_id: str, names: list[str], start: float | None, end: float | None, max_points: int
) -> dict[str, Any]:
    """Each series between ``start`` and ``end``: all its points if they fit in ``max_points``, else a
    min/max chart of ``max_points / 2`` time buckets computed from chunk summaries."""
    empty = {"t": [], "step": [], "v": [], "total_points": 0, "downsampled": False}
    out: dict[str, Any] = {}
    for name in names:
        if start is not None and end is not None and end < start:
            out[name] = empty
            continue
        charts = store.chart([run_id], [name], x="time", buckets=max_points // 2, start=start, end=end)
        chart = charts.get((run_id, name))
        if chart is None or not chart.count.any():
            out[name] = empty
        elif int(chart.count.sum()) > max_points:
            out[name] = chart_payload(chart)
        else:
            found = store.read_series(run_id, [name], start=start, end=end, by="time").get(name)
            if found is None:
                out[name] = empty
                continue
            points = found.points
            steps = points.step.astype(object)
            if points.step_valid is not None:
                steps[~points.step_valid] = None
            out[name] = series_payload(points.time_us / 1e6, steps, points.values.astype(np.float64), max_points)
    return out


@router.get("/api/runs/{run_id}/events", summary="A run's events, newest first, paginated", responses=RUN_ERRORS)
async def run_events(
    request: Request,
    run_id: str,
    type: str | None = Query(None, min_length=1, description="event type, e.g. episode_end"),
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    level: Literal[LEVELS] | None = Query(None),  # type: ignore[valid-type]
    kind: str | None = Query(None, min_length=1, description="log, lifecycle, exception or alert"),
    since: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    until: str | None = Query(None, description="epoch seconds or ISO-8601", json_schema_extra=TIME_SCHEMA),
    limit: int = Query(100, ge=1, le=10_000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    before_id = cursor_param(cursor, "cursor")
    events = await read(
        web_context(request).store.run_events,
        run_id,
        type,
        time_param("since", since),
        time_param("until", until),
        kind=kind,
        level=level,
        limit=limit + 1,
        before_id=before_id,
        newest_first=True,
    )
    page = events[:limit]
    next_cursor = str(page[-1]["id"]) if len(events) > limit else None
    return JSONResponse({"events": [event_row(event) for event in page], "next_cursor": next_cursor})


@router.get("/api/runs/{run_id}/state", summary="A run's current state", responses=RUN_ERRORS)
async def run_state(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse({"run_id": run_id, "state": await read(web_context(request).store.run_state, run_id)})


@router.get(
    "/api/runs/{run_id}/export",
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
async def run_export(
    request: Request,
    run_id: str,
    include_snapshots: bool = Query(True, description="with the run's stored snapshots"),
) -> FileResponse:
    store = web_context(request).store
    directory = Path(tempfile.mkdtemp(prefix="runwatch-export-"))
    try:
        path = await anyio.to_thread.run_sync(
            lambda: store.export_run(run_id, directory, include_snapshots=include_snapshots)
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    cleanup = BackgroundTask(shutil.rmtree, directory, ignore_errors=True)  # after the response is sent
    return FileResponse(path, media_type="application/zip", filename=path.name, background=cleanup)
