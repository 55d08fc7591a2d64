"""The runs table's details of several runs at once on a PostgreSQL store.

The PostgreSQL form of :func:`runwatch.store.queries.runs_table.runs_table_details`
(the comparison reads of series are the shared ones, :mod:`.blocking`).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from ..queries.common import real_value
from .reads import alerts, run_annotations, snapshot

__all__ = ["runs_table_details"]


async def runs_table_details(
    connection: asyncpg.Connection, run_ids: list[str], metric_names: list[str] | None = None
) -> dict[str, Any]:
    """See :func:`runwatch.store.queries.runs_table.runs_table_details`."""
    async with snapshot(connection):
        rows = await connection.fetch("SELECT id, run_id, config FROM runs WHERE run_id = ANY($1::text[])", run_ids)
        pk_of = {row["run_id"]: row["id"] for row in rows}
        run_of = {pk: run_id for run_id, pk in pk_of.items()}
        out: dict[str, dict[str, Any]] = {
            row["run_id"]: {
                "config": orjson.loads(row["config"]) if row["config"] else {},
                "tags": [],
                "note": "",
                "step": None,
                "metrics": {},
                "alerts": {"firing": 0, "pending": 0},
            }
            for row in rows
        }
        for pk, annotation in (await run_annotations(connection, list(run_of))).items():
            out[run_of[pk]]["tags"] = annotation["tags"]
            out[run_of[pk]]["note"] = annotation["note"]
        pks = list(run_of)
        names = [
            row["name"]
            for row in await connection.fetch(
                "SELECT DISTINCT name FROM metric_stats WHERE run = ANY($1::bigint[]) ORDER BY name", pks
            )
        ]
        for pk, step in await connection.fetch(
            "SELECT run, max(last_step) FROM metric_stats WHERE run = ANY($1::bigint[]) GROUP BY run", pks
        ):
            out[run_of[pk]]["step"] = step
        if metric_names:
            for pk, name, last, low, high in await connection.fetch(
                "SELECT run, name, last, min, max FROM metric_stats WHERE run = ANY($1::bigint[])"
                " AND name = ANY($2::text[])",
                pks,
                metric_names,
            ):
                out[run_of[pk]]["metrics"][name] = {
                    "last": float("nan") if last is None else real_value(last),
                    "min": real_value(low),
                    "max": real_value(high),
                }
        for alert in await alerts(connection, states=("firing", "pending")):
            entry = out.get(alert["run_id"])
            if entry is not None:
                entry["alerts"][alert["state"]] += 1
    return {"runs": out, "metric_names": names}
