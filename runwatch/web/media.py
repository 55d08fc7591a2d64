"""REST routes for images and histograms (see docs/media.md and docs/protocol.md).

Image bytes are served by content: ``/api/media/{digest}`` names a content by
the SHA-256 of its bytes, so a response never changes and browsers may cache
it for good (``Cache-Control: immutable``, an ``ETag`` answered with 304). A
live frame is served from the websocket hub's recent images as soon as it is
announced, before the store has committed it.
"""

from __future__ import annotations

import re
from typing import Any, Final

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from ..sinks.websocket import LIVE_HUB
from ..wire import json_number
from .http import ApiError, JSONResponse, error_responses, iso, read, web_context

__all__ = ["router"]

router = APIRouter(tags=["media"])

#: Routes that name a run answer 404 for an unknown one, 422 for bad parameters.
RUN_ERRORS = error_responses(404, 422)

_DIGEST: Final = re.compile(r"[0-9a-f]{64}")
#: How /openapi.json describes a digest (validated by the route, with its own message).
DIGEST_SCHEMA: Final[dict[str, Any]] = {"pattern": "^[0-9a-f]{64}$"}
#: A content never changes under its digest: a year, and no revalidation.
IMMUTABLE: Final = "public, max-age=31536000, immutable"
#: The most image rows one list answers with.
MAX_IMAGE_ROWS: Final = 10_000
#: The most histograms one series may be thinned to.
MAX_HISTOGRAMS: Final = 100_000


def _step_query() -> Any:
    # One Query per parameter: FastAPI keeps per-parameter state in it.
    return Query(None, ge=-(2**63), le=2**63 - 1)


def _image_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in row.items() if key not in ("id", "ts")}
    out["timestamp"] = iso(row["ts"])
    out["url"] = f"/api/media/{row['digest']}"
    return out


@router.get(
    "/api/runs/{run_id}/images",
    summary="A run's image names, with the count, step range and latest image of each",
    responses=RUN_ERRORS,
)
async def image_names(request: Request, run_id: str) -> JSONResponse:
    names = await read(web_context(request).store.image_names, run_id)
    for entry in names:
        if entry["latest"] is not None:
            entry["latest"] = _image_row(entry["latest"])
    return JSONResponse({"run_id": run_id, "names": names})


@router.get(
    "/api/runs/{run_id}/images/list",
    summary="The metadata of a run's images of one name, by step",
    responses=RUN_ERRORS,
)
async def image_list(
    request: Request,
    run_id: str,
    name: str = Query(min_length=1),
    start_step: int | None = _step_query(),
    end_step: int | None = _step_query(),
    limit: int = Query(MAX_IMAGE_ROWS, ge=1, le=MAX_IMAGE_ROWS),
) -> JSONResponse:
    store = web_context(request).store
    rows = await read(store.images, run_id, name, start_step=start_step, end_step=end_step, limit=limit)
    return JSONResponse({"run_id": run_id, "name": name, "images": [_image_row(row) for row in rows]})


@router.get(
    "/api/runs/{run_id}/images/at",
    summary="The latest image of a name at or before a step (the latest of all without one)",
    responses=RUN_ERRORS,
)
async def image_at(
    request: Request, run_id: str, name: str = Query(min_length=1), step: int | None = _step_query()
) -> JSONResponse:
    row = await read(web_context(request).store.image_at, run_id, name, step)
    if row is None:
        raise ApiError(
            404, f"run {run_id!r} has no image {name!r}" + ("" if step is None else f" at or before step {step}")
        )
    return JSONResponse(_image_row(row))


@router.get(
    "/api/runs/{run_id}/images/usage",
    summary="A run's image bytes counted against its budget, and the images refused over it",
    responses=RUN_ERRORS,
)
async def image_usage(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse({"run_id": run_id, **await read(web_context(request).store.media_usage, run_id)})


@router.get(
    "/api/media/{digest}",
    summary="An image's bytes, by the SHA-256 of its content",
    response_class=Response,
    responses={
        200: {
            "description": "the PNG or JPEG",
            "content": {
                mime: {"schema": {"type": "string", "format": "binary"}} for mime in ("image/png", "image/jpeg")
            },
        },
        304: {"description": "the client's cached copy is this content"},
        **error_responses(404, 422),
    },
)
async def media_content(
    request: Request,
    digest: str = Path(description="SHA-256 of the content, lowercase hex", json_schema_extra=DIGEST_SCHEMA),
) -> Response:
    if not _DIGEST.fullmatch(digest):
        raise ApiError(422, f"digest must be a SHA-256 in lowercase hex, got {digest[:80]!r}", field="digest")
    etag = f'"{digest}"'
    headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    context = web_context(request)
    hub = context.services.get(LIVE_HUB)
    found = hub.recent_image(digest) if hub is not None else None
    if found is None:
        found = await read(context.store.image_content, digest)
    if found is None:
        raise ApiError(404, f"no image content {digest}")
    mime, data = found
    return Response(data, media_type=mime, headers={**headers, "X-Content-Type-Options": "nosniff"})


@router.get(
    "/api/runs/{run_id}/histograms",
    summary="A run's histogram names, with the count and step range of each",
    responses=RUN_ERRORS,
)
async def histogram_names(request: Request, run_id: str) -> JSONResponse:
    return JSONResponse({"run_id": run_id, "names": await read(web_context(request).store.histogram_names, run_id)})


@router.get(
    "/api/runs/{run_id}/histograms/series",
    summary="A run's histograms of one name, by step: bins, counts and summary",
    responses=RUN_ERRORS,
)
async def histogram_series(
    request: Request,
    run_id: str,
    name: str = Query(min_length=1),
    start_step: int | None = _step_query(),
    end_step: int | None = _step_query(),
    max_count: int | None = Query(
        None, ge=1, le=MAX_HISTOGRAMS, description="at most this many, evenly spaced, the first and last included"
    ),
) -> JSONResponse:
    store = web_context(request).store
    rows = await read(store.histograms, run_id, name, start_step=start_step, end_step=end_step, max_count=max_count)
    histograms = []
    for row in rows:
        out = {key: value for key, value in row.items() if key != "id"}
        out["timestamp"] = iso(row["ts"])  # ts stays too: epoch seconds to the last bit, for DataFrames
        out["sum"] = json_number(row["sum"])  # a sum past the float range is +-Inf
        histograms.append(out)
    return JSONResponse({"run_id": run_id, "name": name, "histograms": histograms})
