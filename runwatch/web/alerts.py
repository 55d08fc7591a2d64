"""REST routes of alerts (see docs/alerts.md): what is pending or firing now, and every transition."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from ..store.queries import ALERT_QUERY_STATES
from ..wire import alert_fields
from .http import CURSOR_SCHEMA, JSONResponse, cursor_param, error_responses, iso, read, web_context

__all__ = ["alert_row", "router"]

router = APIRouter(tags=["alerts"])


def alert_row(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored alert (its latest transition, or one of them) in the alerts' one JSON form, times as ISO-8601."""
    out = alert_fields(
        rule=stored.get("rule", ""),
        run_id=stored["run_id"],
        state=stored.get("state", ""),
        severity=stored.get("severity", ""),
        value=stored.get("value"),
        labels=stored.get("labels") or {},
        annotations=stored.get("annotations") or {},
        active_since=stored.get("active_since"),
    )
    for name in ("active_since", "updated_at"):
        value = stored.get(name)
        out[name] = iso(value) if isinstance(value, (int, float)) else value
    if "id" in stored:
        out["id"] = stored["id"]
    return out


@router.get("/api/alerts", summary="Alerts pending or firing now (or in a given state)", responses=error_responses(422))
async def active_alerts(
    request: Request,
    run_id: str | None = Query(None, min_length=1),
    severity: str | None = Query(None),
    # FastAPI makes the tuple's values the parameter's enum; mypy cannot take a Literal from a variable.
    state: Literal[ALERT_QUERY_STATES] | None = Query(  # type: ignore[valid-type]
        None, description="pending, firing or resolved [default: pending and firing]"
    ),
) -> JSONResponse:
    # The store has every transition, whoever evaluated the rule (this process,
    # another monitor, a remote producer); the dashboard adds live ones from /ws.
    states = ("pending", "firing") if state is None else (state,)
    found = await read(web_context(request).store.alerts, run_id=run_id, severity=severity, states=states)
    return JSONResponse({"alerts": [alert_row(alert) for alert in found]})


@router.get("/api/alerts/history", summary="Alert transitions, newest first, paginated", responses=error_responses(422))
async def alert_history(
    request: Request,
    run_id: str | None = Query(None, min_length=1),
    severity: str | None = Query(None),
    rule: str | None = Query(None, min_length=1),
    limit: int = Query(100, ge=1, le=10_000),
    cursor: str | None = Query(None, description="next_cursor of the previous page", json_schema_extra=CURSOR_SCHEMA),
) -> JSONResponse:
    before_id = cursor_param(cursor, "cursor")
    rows = await read(
        web_context(request).store.alert_events,
        run_id=run_id,
        severity=severity,
        rule=rule,
        limit=limit + 1,
        before_id=before_id,
    )
    page = rows[:limit]
    next_cursor = str(page[-1]["id"]) if len(rows) > limit else None
    return JSONResponse({"alerts": [alert_row(row) for row in page], "next_cursor": next_cursor})
