"""What the dashboard's runs table shows beside each run: config, tags, note, metric columns, alerts."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from .annotations import run_annotations
from .common import read_snapshot, real_value
from .events import alerts

__all__ = ["runs_table_details"]


def runs_table_details(
    conn: sqlite3.Connection, run_ids: list[str], metric_names: list[str] | None = None
) -> dict[str, Any]:
    """Per-run details for a runs table, read on one snapshot.

    Args:
        conn: a connection to the store.
        run_ids: the runs shown.
        metric_names: the metrics whose ``last``, ``min`` and ``max`` to
            return per run (``None``: none).

    Returns:
        ``{"runs": {run_id: {"config", "tags", "note", "step", "metrics", "alerts"}},
        "metric_names": [...]}``: ``config`` is the run's config (``{}`` when
        none), ``step`` its latest global step (the highest step any of its
        metrics was last logged at; ``None`` before any), ``metrics`` maps
        each wanted metric the run logged to ``{"last", "min", "max"}`` (NaN
        and ±Inf as floats), ``alerts`` counts the run's alert instances
        that are ``firing`` and ``pending`` now;
        ``metric_names`` is every metric name any of the runs logged, sorted.
    """
    ids = orjson.dumps(run_ids).decode()
    with read_snapshot(conn):
        rows = conn.execute(
            "SELECT id, run_id, config FROM runs WHERE run_id IN (SELECT value FROM json_each(?))", (ids,)
        ).fetchall()
        pk_of = {run_id: pk for pk, run_id, _ in rows}
        out: dict[str, dict[str, Any]] = {
            run_id: {
                "config": orjson.loads(config) if config else {},
                "tags": [],
                "note": "",
                "step": None,
                "metrics": {},
                "alerts": {"firing": 0, "pending": 0},
            }
            for _, run_id, config in rows
        }
        for run_id, annotation in run_annotations(conn, list(pk_of)).items():
            out[run_id]["tags"] = annotation["tags"]
            out[run_id]["note"] = annotation["note"]
        pks = orjson.dumps(list(pk_of.values())).decode()
        names = [
            name
            for (name,) in conn.execute(
                "SELECT DISTINCT name FROM metric_stats WHERE run IN (SELECT value FROM json_each(?)) ORDER BY name",
                (pks,),
            )
        ]
        run_of = {pk: run_id for run_id, pk in pk_of.items()}
        for pk, step in conn.execute(
            "SELECT run, max(last_step) FROM metric_stats WHERE run IN (SELECT value FROM json_each(?)) GROUP BY run",
            (pks,),
        ):
            out[run_of[pk]]["step"] = step
        if metric_names:
            for pk, name, last, low, high in conn.execute(
                "SELECT run, name, last, min, max FROM metric_stats WHERE run IN (SELECT value FROM json_each(?))"
                " AND name IN (SELECT value FROM json_each(?))",
                (pks, orjson.dumps(metric_names).decode()),
            ):
                out[run_of[pk]]["metrics"][name] = {
                    "last": float("nan") if last is None else real_value(last),
                    "min": real_value(low),
                    "max": real_value(high),
                }
        for alert in alerts(conn, states=("firing", "pending")):
            entry = out.get(alert["run_id"])
            if entry is not None:
                entry["alerts"][alert["state"]] += 1
    return {"runs": out, "metric_names": names}
