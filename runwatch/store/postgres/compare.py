"""Several runs at once on a PostgreSQL store: comparison reads and the runs table's details.

The PostgreSQL forms of :func:`runwatch.store.queries.compare.runs_metric_series`
and :func:`runwatch.store.queries.runs_table.runs_table_details`, with their
checks, decoders and step carrying, so both stores answer alike. A window
(``x_min``/``x_max``) is cut from a run's calls after reading them all (the
SQLite read narrows the rows it reads first; the points are the same).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import numpy as np
import orjson

from ..queries.common import check_metric_names, real_value
from ..queries.compare import X_AXES, Series, _carry_steps, _check_run_ids, _Window
from ..queries.metrics import _decode_values
from .reads import _keysets, alerts, run_annotations, run_pk, snapshot

__all__ = ["runs_metric_series", "runs_table_details"]


async def runs_metric_series(
    connection: asyncpg.Connection,
    run_ids: Iterable[str],
    metric_names: Iterable[str] | None = None,
    *,
    x: str = "step",
    x_min: float | None = None,
    x_max: float | None = None,
) -> dict[str, dict[str, Series]]:
    """See :func:`runwatch.store.queries.compare.runs_metric_series`."""
    runs = _check_run_ids(run_ids)
    wanted = check_metric_names(metric_names)
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    out: dict[str, dict[str, Series]] = {}
    async with snapshot(connection):
        keysets = await _keysets(connection)
        pks = {run_id: await run_pk(connection, run_id) for run_id in runs}
        for run_id, pk in pks.items():
            window = None
            if x_min is not None or x_max is not None:
                if x == "relative":
                    start = await connection.fetchval("SELECT start_time FROM runs WHERE id = $1", pk)
                    window = _Window("(ts - ?)", (float(start),), x_min, x_max)
                else:
                    window = _Window("ts" if x == "time" else "step", (), x_min, x_max)
            out[run_id] = await _run_series(connection, pk, keysets, wanted, window)
    return out


async def _run_series(
    connection: asyncpg.Connection,
    run: int,
    keysets: dict[int, tuple[str, ...]],
    wanted: list[str] | None,
    window: _Window | None,
) -> dict[str, Series]:
    wanted_set = None if wanted is None else set(wanted)
    matching = [k for k, names in keysets.items() if wanted_set is None or not wanted_set.isdisjoint(names)]
    # Every call is read (a call without a step takes its predecessor's); only the calls that logged a
    # wanted metric bring their values along.
    rows = await connection.fetch(
        "SELECT keyset, ts, step IS NULL, COALESCE(step, 0), CASE WHEN keyset = ANY($1::bigint[]) THEN vals END"
        " FROM metric_rows WHERE run = $2 ORDER BY row",
        matching,
        run,
    )
    count = len(rows)
    row_keysets = np.fromiter((row[0] for row in rows), dtype=np.int64, count=count)
    seconds = np.fromiter((row[1] for row in rows), dtype=np.float64, count=count)
    no_step = np.fromiter((row[2] for row in rows), dtype=bool, count=count)
    stored = np.fromiter((row[3] for row in rows), dtype=np.int64, count=count)
    vals = [row[4] for row in rows]
    del rows
    steps = _carry_steps(stored, no_step, 0)
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for keyset in matching:
        indices = np.flatnonzero(row_keysets == keyset)
        if not len(indices):
            continue
        names = keysets[keyset]
        flat = _decode_values(vals, indices, single=len(indices) == count)
        block = flat.reshape(len(indices), len(names))
        for column, name in enumerate(names):
            if wanted_set is None or name in wanted_set:
                parts.setdefault(name, []).append((indices, block[:, column]))
    inside = None if window is None else window.mask(seconds, steps)
    result: dict[str, Series] = {}
    for name, pieces in parts.items():
        if len(pieces) == 1:
            index, value = pieces[0]
        else:  # logged by calls of several key sets: back in logging order
            index = np.concatenate([piece[0] for piece in pieces])
            value = np.concatenate([piece[1] for piece in pieces])
            order = np.argsort(index, kind="stable")
            index, value = index[order], value[order]
        if inside is not None:
            kept = inside[index]
            if not kept.all():
                index, value = index[kept], value[kept]
            if not len(index):
                continue
        result[name] = {"ts": seconds[index], "step": steps[index], "value": np.ascontiguousarray(value)}
    if wanted is not None:
        return {name: result[name] for name in wanted if name in result}
    return dict(sorted(result.items()))


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
