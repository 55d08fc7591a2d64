"""REST routes of run comparison and run annotations (see docs/protocol.md and docs/dashboard.md).

``GET /api/compare`` serves a whole compare view in one request: several
runs × several metrics, each series cut to an x range and bucketed to a
point budget. ``PATCH /api/runs/{run_id}`` sets a run's tags and note.
"""

from __future__ import annotations

import fnmatch
import math
import time
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Query, Request

from ..exceptions import UnknownRunError
from ..store import queries
from ..store.annotations import set_run_annotations
from ..store.compare import MAX_COMPARE_RUNS, bucket_series, runs_metric_series
from .api import read
from .app import ApiError, JSONResponse, error_responses, iso, web_context

__all__ = ["router"]

router = APIRouter()

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
    connection: Any,
    run_ids: list[str],
    patterns: list[str],
    x: str,
    x_min: float | None,
    x_max: float | None,
    max_points: int,
) -> dict[str, Any]:
    """Read and shape a compare view on a worker thread (one read snapshot for every run).

    Runs are read and bucketed one at a time, so the memory a comparison
    needs is that of its largest run, not of all of them together.
    """
    runs: list[dict[str, Any]] = []
    out_series: list[dict[str, Any]] = []
    connection.execute("BEGIN")
    try:
        starts = {run_id: queries.run_summary(connection, run_id) for run_id in run_ids}
        known = sorted({name for summary in starts.values() for name in summary["metrics"]})
        selected = [
            name
            for name in known
            if (not patterns and not name.startswith("system/"))
            or any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)
        ]
        for run_id, summary in starts.items():
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
            series = runs_metric_series(connection, [run_id], selected, x=x, x_min=x_min, x_max=x_max)[run_id]
            for name, arrays in series.items():
                payload = bucket_series(
                    arrays, x=x, start_time=summary["start_time"], x_min=None, x_max=None, max_points=max_points
                )
                out_series.append({"run_id": run_id, "metric": name, **payload})
            del series
    finally:
        connection.execute("COMMIT")
    return {"x": x, "runs": runs, "metrics": selected, "series": out_series}


@router.get(
    "/api/compare",
    tags=["runs"],
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
    answer = await read(request, _compare, run_ids, patterns, x, low, high, max_points)
    return JSONResponse(answer)


#: One line with something besides spaces (a tag as stored).
_TAG_PATTERN = r"^[^\n\r\t]*[^\s][^\n\r\t]*$"
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "tags": {
                            "type": "array",
                            "maxItems": 50,
                            "items": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _TAG_PATTERN},
                        },
                        "note": {"type": "string", "maxLength": 10_000},
                    },
                    "minProperties": 1,
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.patch(
    "/api/runs/{run_id}",
    tags=["runs"],
    summary="Set a run's tags and/or note",
    openapi_extra=_PATCH_BODY,
    responses=error_responses(404, 422),
)
async def annotate_run(request: Request, run_id: str) -> JSONResponse:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(422, "expected a JSON object with tags and/or note")
    unknown = [key for key in body if key not in ("tags", "note")]
    if unknown:
        raise ApiError(422, f"unknown field {unknown[0]!r}", unknown[0])
    if not body:
        raise ApiError(422, "give tags, note or both")
    for field in ("tags", "note"):
        if field in body and body[field] is None:
            raise ApiError(422, f"{field} must not be null", field)
    context = web_context(request)

    def write(connection: Any) -> dict[str, Any]:
        return set_run_annotations(connection, run_id, now=time.time(), tags=body.get("tags"), note=body.get("note"))

    try:
        result = await context.reader.write(write)
    except UnknownRunError:
        raise
    except (TypeError, ValueError) as exc:
        field = "tags" if "tag" in str(exc) else "note"
        raise ApiError(422, str(exc), field) from None
    return JSONResponse({"run_id": run_id, **result, "updated_at": iso(result["updated_at"])})
