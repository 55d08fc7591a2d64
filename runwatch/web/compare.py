"""REST route of run comparison (see docs/protocol.md and docs/dashboard.md).

``GET /api/compare`` serves a compare view: several runs × several metrics,
each series cut to an x range (the store reads only the calls within it)
and bucketed to a point budget, with min/max bands and non-finite marks.

A long series (at least :data:`SUMMARY_POINTS_PER_BUCKET` points per
bucket of ``max_points / 2``) is bucketed by the store from its chunk summaries
(:meth:`Store.chart` with ``finite=True``) without reading its points:
equal x intervals instead of equal point counts, a point at most a quarter
of a bucket from its own (docs/store.md). A shorter one, or one with calls
without a step (their step is carried from the call before), is read and
bucketed here (:func:`runwatch.web.series.bucket_series`).
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request

from ..store.base import ChartSeries, Store
from ..store.queries.compare import MAX_COMPARE_RUNS
from .http import ApiError, JSONResponse, error_responses, iso, read, web_context
from .series import bucket_series, finite_bucket_payload

__all__ = ["router"]

router = APIRouter(tags=["runs"])

#: How /openapi.json describes an x bound (the route checks it with its own message).
NUMBER_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^-?[0-9]{1,18}(\.[0-9]{1,9})?([eE][-+]?[0-9]{1,2})?$"}

#: The most points (or buckets) of one series in one answer.
MAX_SERIES_POINTS = 20_000

#: A series is bucketed from the store's summaries when it has at least this many points per bucket
#: (then a block of 256 points spans at most half a bucket, so no block is decoded to place it).
SUMMARY_POINTS_PER_BUCKET = 512


def _number_param(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ApiError(422, f"{name} must be a finite number, got {value!r}", name)
    return number


def _compare(
    store: Store,
    run_ids: list[str],
    patterns: list[str],
    x: Literal["step", "time", "relative"],
    x_min: float | None,
    x_max: float | None,
    max_points: int,
) -> dict[str, Any]:
    """Read and shape a compare view on a worker thread.

    Runs are read and bucketed one at a time, so the memory a comparison
    needs is that of its largest run, not of all of them together.
    """
    summaries = {run_id: store.run_summary(run_id) for run_id in run_ids}
    known = sorted({name for summary in summaries.values() for name in summary["metrics"]})
    selected = [
        name
        for name in known
        if (not patterns and not name.startswith("system/"))
        or any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)
    ]
    runs: list[dict[str, Any]] = []
    out_series: list[dict[str, Any]] = []
    for run_id, summary in summaries.items():
        runs.append(
            {
                "run_id": run_id,
                "status": summary["status"],
                "kind": summary["kind"],
                "start_time": iso(summary["start_time"]),
                "start_ts": summary["start_time"],
            }
        )
        if not selected:
            continue
        found: dict[str, dict[str, Any]] = {}
        buckets = max_points // 2
        counts = {name: summary["metrics"].get(name, {}).get("count", 0) for name in selected}
        for name in [name for name in selected if counts[name] >= SUMMARY_POINTS_PER_BUCKET * buckets]:
            chart = _summary_chart(store, run_id, name, x, x_min, x_max, buckets, max_points)
            if chart is not None:
                found[name] = finite_bucket_payload(chart)
        rest = [name for name in selected if name not in found]
        if rest:
            # The x window is pushed into the read: calls outside it are not decoded.
            series = store.runs_metrics([run_id], rest, x=x, x_min=x_min, x_max=x_max).get(run_id, {})
            for name, arrays in series.items():
                found[name] = bucket_series(
                    arrays, x=x, start_time=summary["start_time"], x_min=None, x_max=None, max_points=max_points
                )
            del series
        out_series.extend({"run_id": run_id, "metric": name, **found[name]} for name in selected if name in found)
    return {"x": x, "runs": runs, "metrics": selected, "series": out_series}


def _summary_chart(
    store: Store,
    run_id: str,
    name: str,
    x: Literal["step", "time", "relative"],
    x_min: float | None,
    x_max: float | None,
    buckets: int,
    max_points: int,
) -> ChartSeries | None:
    """A long series bucketed from the store's summaries; None when it must be read point by point.

    None when some of its calls have no step (a compare carries the step of the
    call before) or when the window holds at most ``max_points`` points.
    """
    if x_min is not None and x_max is not None and x_max < x_min:
        return None
    chart = store.chart([run_id], [name], x=x, buckets=buckets, start=x_min, end=x_max, finite=True).get((run_id, name))
    if chart is None or chart.stepless or int(np.sum(chart.count)) <= max_points:
        return None
    return chart


@router.get(
    "/api/compare",
    summary="Several runs' metrics in one answer, bucketed to a point budget",
    responses=error_responses(404, 422),
)
async def compare(
    request: Request,
    runs: str = Query(..., min_length=1, description=f"comma-separated run ids (at most {MAX_COMPARE_RUNS})"),
    metrics: str | None = Query(None, description="comma-separated metric names (globs allowed); default all"),
    x: Literal["step", "time", "relative"] = Query("step", description="the axis x_min and x_max are in"),
    x_min: str | None = Query(None, description="keep points at or after this x", json_schema_extra=NUMBER_SCHEMA),
    x_max: str | None = Query(None, description="keep points at or before this x", json_schema_extra=NUMBER_SCHEMA),
    max_points: int = Query(1000, ge=2, le=MAX_SERIES_POINTS, description="the most points per series"),
) -> JSONResponse:
    run_ids = list(dict.fromkeys(part for part in runs.split(",") if part))
    if not run_ids:
        raise ApiError(422, "runs must name at least one run", "runs")
    if len(run_ids) > MAX_COMPARE_RUNS:
        raise ApiError(422, f"at most {MAX_COMPARE_RUNS} runs, got {len(run_ids)}", "runs")
    patterns = [name for name in (metrics or "").split(",") if name]
    low, high = _number_param("x_min", x_min), _number_param("x_max", x_max)
    store = web_context(request).store
    return JSONResponse(await read(_compare, store, run_ids, patterns, x, low, high, max_points))
