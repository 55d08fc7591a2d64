"""REST shortcuts to the current run: the running one, else the newest (see docs/protocol.md)."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter, Query, Request

from ..store.base import Store
from ..wire import json_number
from .http import JSONResponse, error_responses, iso, read, web_context
from .runs import event_row, summary_of
from .series import downsample_min_max

__all__ = ["router"]

router = APIRouter(tags=["current run"])


async def current_run(store: Store) -> str | None:
    """The running run, else the newest one (``None`` in an empty store)."""
    running = await read(store.list_runs, limit=1, status="running")
    if running:
        return str(running[0]["run_id"])
    newest = await read(store.list_runs, limit=1)
    return str(newest[0]["run_id"]) if newest else None


@router.get("/api/status", summary="The current run's summary")
async def status(request: Request) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    if run_id is None:
        return JSONResponse({"status": "idle", "run_id": None})
    return JSONResponse(summary_of(await read(store.run_summary, run_id)))


@router.get("/api/stats", summary="Latest value of every metric of the current run")
async def stats(request: Request) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    if run_id is None:
        return JSONResponse({"run_id": None, "metrics": {}})
    summary = await read(store.run_summary, run_id)
    latest = {name: json_number(entry.get("last")) for name, entry in summary.get("metrics", {}).items()}
    return JSONResponse({"run_id": run_id, "metrics": latest})


@router.get("/api/state", summary="The current run's state (game state under game_state)")
async def state(request: Request) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    if run_id is None:
        return JSONResponse({"run_id": None, "state": {}})
    return JSONResponse({"run_id": run_id, "state": await read(store.run_state, run_id)})


@router.get(
    "/api/metrics/history",
    summary="One metric of the current run over recent minutes",
    responses=error_responses(422),
)
async def metric_history(
    request: Request,
    metric: str = Query(..., min_length=1),
    minutes: float = Query(10.0, gt=0, le=60 * 24 * 365),
    max_points: int = Query(5000, ge=2, le=100_000),
) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    empty = {"mean": None, "min": None, "max": None, "last": None, "count": 0}
    if run_id is None:
        return JSONResponse({"metric": metric, "run_id": None, "data": [], "statistics": empty})
    frame = await read(store.run_metrics, run_id, [metric], time.time() - minutes * 60, None)
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


@router.get("/api/metrics/summary", summary="Statistics of every metric of the current run")
async def metric_summary(request: Request) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    if run_id is None:
        return JSONResponse({})
    summary = await read(store.run_summary, run_id)
    out = {
        name: {key: json_number(entry.get(key)) for key in ("mean", "min", "max", "last")} | {"count": entry["count"]}
        for name, entry in summary.get("metrics", {}).items()
    }
    return JSONResponse(out)


@router.get("/api/events", summary="The current run's events, newest first", responses=error_responses(422))
async def current_events(
    request: Request,
    type: str | None = Query(None, min_length=1),
    limit: int = Query(100, ge=1, le=10_000),
) -> JSONResponse:
    store = web_context(request).store
    run_id = await current_run(store)
    if run_id is None:
        return JSONResponse({"run_id": None, "events": []})
    events = await read(store.run_events, run_id, type, None, None, limit=limit, newest_first=True)
    return JSONResponse({"run_id": run_id, "events": [event_row(event) for event in events]})
