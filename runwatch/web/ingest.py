"""Remote ingest: ``POST /api/ingest``, and what ingest does with runs it does not know or that have ended.

The rules (docs/protocol.md, "Ingest"):

- A batch's events for a run the store does not have, with no ``started`` in
  the batch before them, start that run first: a ``started`` lifecycle event
  at the first event's time, with metadata ``{"created_by": "ingest",
  "liveness_signal": "any_event"}``. Every event of such a run is a sign of
  life (its producer may never send heartbeats), so the liveness stage marks
  it ``hung`` and then ``crashed`` once it falls silent, instead of leaving
  it ``running`` forever.
- ``started`` for a run that has ended (``completed``, ``failed`` or
  ``crashed``) is refused with 409 and nothing of the batch is stored: a
  finished run is never reopened by accident (a retried start, an id used
  twice). To continue it on purpose, send ``resumed``.

:func:`apply_run_rules` is pure; :func:`with_run_rules` reads the statuses it
needs from the store. The body is decoded by :mod:`runwatch.wire.ingest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from fastapi import APIRouter, Request

from .._payload import shown
from ..events import RunLifecycle, RunTransition
from ..sources.ingest import INGEST
from ..wire.ingest import (
    IMAGE_BODY_TYPE,
    IMAGE_INGEST_PATH,
    INGEST_BODY_SCHEMA,
    IngestBody,
    parse_image_body,
    parse_ingest_body,
)
from .http import ApiError, JSONResponse, WebContext, error_responses, read, web_context

__all__ = ["CREATED_BY_INGEST", "ENDED_STATUSES", "apply_run_rules", "router", "with_run_rules"]

router = APIRouter(tags=["ingest"])

#: The ``started`` metadata of a run that ingest created on its own.
CREATED_BY_INGEST: Final = {"created_by": "ingest", "liveness_signal": "any_event"}

#: Statuses of runs whose ``started`` ingest refuses.
ENDED_STATUSES: Final = frozenset({"completed", "failed", "crashed"})


def apply_run_rules(events: list[Any], statuses: Mapping[str, str]) -> list[Any]:
    """The events to store for a batch, given the stored status of its runs.

    Args:
        events: the batch's validated events, in order.
        statuses: run id → stored status, for the batch's runs the store has.

    Returns:
        ``events``, with a ``started`` event inserted before the first event
        of each unknown run that the batch does not start itself.

    Raises:
        ApiError: 409 for a ``started`` of a run that has ended.
    """
    out: list[Any] = []
    seen: set[str] = set()
    for index, event in enumerate(events):
        run_id = event.run_id
        starts = type(event) is RunLifecycle and event.transition is RunTransition.STARTED
        if starts and statuses.get(run_id) in ENDED_STATUSES:
            raise ApiError(
                409,
                f"run {shown(run_id)} has ended ({statuses[run_id]}): 'started' would reopen it;"
                " send a 'resumed' lifecycle event to continue it, or use a new run id",
                f"events[{index}].transition",
            )
        if run_id not in seen:
            seen.add(run_id)
            if run_id not in statuses and not starts:
                out.append(RunLifecycle(run_id, event.timestamp, RunTransition.STARTED, metadata=CREATED_BY_INGEST))
        out.append(event)
    return out


async def with_run_rules(context: WebContext, events: list[Any]) -> list[Any]:
    """:func:`apply_run_rules` with the statuses read from the store (none if it does not exist yet)."""
    if not events:
        return events
    run_ids = sorted({event.run_id for event in events})
    statuses = await read(context.store.run_statuses, run_ids)
    started = context.ingest_started
    for run_id in run_ids:  # started here moments ago: its start may still be on its way to the store
        if run_id not in statuses and run_id in started:
            statuses[run_id] = "running"
    admitted = apply_run_rules(events, statuses)
    for run_id in run_ids:
        if run_id not in statuses:
            started[run_id] = None
            started.move_to_end(run_id)
    while len(started) > _MAX_REMEMBERED_STARTS:
        started.popitem(last=False)
    return admitted


_MAX_REMEMBERED_STARTS: Final = 10_000


@router.post(
    "/api/ingest",
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
    return await _submit(context, parse_ingest_body(await request.body(), context.max_ingest_events))


@router.post(
    IMAGE_INGEST_PATH,
    summary="Take one image with its raw bytes (one too large for a batch) from a remote producer",
    status_code=202,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "one line of JSON {batch_id, event} (the image's wire form without data), a newline,"
            " then the image's PNG or JPEG bytes (docs/protocol.md)",
            "content": {IMAGE_BODY_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        200: {"description": "a retried batch_id: already stored, nothing stored again"},
        **error_responses(400, 409, 413, 415, 422, 503),
    },
)
async def ingest_image(request: Request) -> JSONResponse:
    context = web_context(request)
    return await _submit(context, parse_image_body(await request.body()))


async def _submit(context: WebContext, body: IngestBody) -> JSONResponse:
    """Take a validated batch: 202 once stored, 200 for a batch stored before."""
    source = context.service(INGEST)
    result = await source.submit(
        body.events, body.batch_id, digest=body.digest, admit=lambda events: with_run_rules(context, events)
    )
    answer = {"accepted": result.accepted, "batch_id": result.batch_id, "duplicate": result.duplicate}
    return JSONResponse(answer, status_code=200 if result.duplicate else 202)
