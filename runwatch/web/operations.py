"""REST routes of operations: the pipeline's counters, health, and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from ..sources.ingest import INGEST
from ..sources.store_tail import STORE_TAIL
from .http import JSONResponse, WebContext, iso, read, web_context

__all__ = ["router"]

router = APIRouter(tags=["operations"])


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


@router.get("/api/pipeline", summary="Per-component queue depth, rates, drops, flush latency")
async def pipeline_view(request: Request) -> JSONResponse:
    return JSONResponse(_pipeline_view(web_context(request)))


@router.get("/api/health", summary="ok or degraded; the store served and who writes it")
async def health(request: Request) -> JSONResponse:
    context = web_context(request)
    view = _pipeline_view(context)
    store = view.get("components", {}).get("store", {})
    return JSONResponse(
        {
            "status": view["health"],
            "store": {
                **{k: store.get(k) for k in ("health", "pending_events", "last_commit_error")},
                **context.store.identity(),
            },
            "live_store": context.services.get(STORE_TAIL) is not None,
            "writers": await _writers(context),
        }
    )


async def _writers(context: WebContext) -> list[dict[str, Any]]:
    """The owners of the store's live runs, and how this server sees them (see docs/protocol.md)."""
    writers = await read(context.store.live_writers)
    tail = context.services.get(STORE_TAIL)
    foreign = tail.foreign_runs if tail is not None else set()
    ingest = context.services.get(INGEST)
    served = ingest.served_runs if ingest is not None else set()
    for writer in writers:
        runs = set(writer["runs"])
        if runs & foreign:
            writer["via"] = "store"  # another process writes the file; the tail follows it
        elif runs & served:
            writer["via"] = "ingest"
        else:
            writer["via"] = "unknown"  # not seen since this server started
        writer["last_activity"] = iso(writer["last_activity"])
    return writers


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
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
