"""REST route of run comparison (see docs/protocol.md and docs/dashboard.md).

``GET /api/compare`` serves a compare view: several runs × several metrics,
each series cut to an x range (the store reads only the calls within it)
and bucketed to a point budget, with min/max bands and non-finite marks.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from ..store.base import Store
from ..store.queries.compare import MAX_COMPARE_RUNS
from .http import ApiError, JSONResponse, error_responses, iso, read, web_context
from .series import bucket_series

__all__ = ["router"]

router = APIRouter(tags=["runs"])

#: How /openapi.json describes an x bound (the route checks it with its own message).
NUMBER_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^-?[0-9]{1,18}(\.[0-9]{1,9})?([eE][-+]?[0-9]{1,2})?$"}

#: The most points (or buckets) of one series in one answer.
MAX_SERIES_POINTS = 20_000


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
        # The x window is pushed into the read: calls outside it are not decoded.
        series = store.runs_metrics([run_id], selected, x=x, x_min=x_min, x_max=x_max).get(run_id, {})
        for name, arrays in series.items():
            payload = bucket_series(
                arrays, x=x, start_time=summary["start_time"], x_min=None, x_max=None, max_points=max_points
            )
            out_series.append({"run_id": run_id, "metric": name, **payload})
        del series
    return {"x": x, "runs": runs, "metrics": selected, "series": out_series}


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
