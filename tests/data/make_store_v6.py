"""Write store-v6.db.gz and store-v6.expected.json.gz: a schema-6 store and what schema 6 read from it.

Runs only against a runwatch whose store is schema version 6 (one row per
logging call), such as commit fd9b278, the last before chunks:

    git worktree add --detach /tmp/runwatch-v6 fd9b278
    PYTHONPATH=/tmp/runwatch-v6 python tests/data/make_store_v6.py /tmp/out/store-v6.db

then gzip the two files into tests/data. The store is written by the real
pipeline and sink of that version; the expected reads come from its
DatabaseManager and store, with floats as ``float.hex`` so NaN, ±Inf, −0.0
and every bit compare exactly.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from runwatch.events import LogEvent, Metric, RunLifecycle, RunTransition, StatePatch
from runwatch.pipeline import ComponentContext, Pipeline
from runwatch.store.manager import DatabaseManager
from runwatch.store.session_layout import SESSION_KIND, encode_session_tags
from runwatch.store.sqlite import SQLiteStore

TS = 1_700_000_000.0
OLD = TS - 86400 * 40


def events() -> list[Any]:
    """Three runs: a training run with every kind of value, an old finished run, a session."""
    out: list[Any] = [
        RunLifecycle("train", TS, RunTransition.STARTED, config={"lr": 0.1}),
        RunLifecycle("old", OLD, RunTransition.STARTED),
        RunLifecycle("sess", TS, RunTransition.STARTED, run_kind=SESSION_KIND, metadata={"product": "app"}),
    ]
    specials = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 2.0**1023 * 1.5]
    for i in range(1200):
        values: dict[str, float | int] = {"loss": 1.0 / (i + 1) + i * 1e-17, "samples": i * 32}
        if i % 7 == 0:
            values["loss"] = specials[(i // 7) % len(specials)]
        if i == 600:
            values["samples"] = 2**63 - 1
        out.append(Metric("train", TS + i * 0.0123456, values, i if i % 5 else None))
        if i % 3 == 0:  # "loss" in two name sets; tags
            out.append(Metric("train", TS + i * 0.0123456, {"eval/acc": i / 3600, "loss": -0.0}, i, {"split": "val"}))
        if i % 100 == 0:
            out.append(StatePatch("train", TS + i, {"epoch": i // 100}))
    for i in range(400):
        out.append(Metric("old", OLD + i, {"x": float(i), "y": i}, i))
    out.append(RunLifecycle("old", OLD + 500, RunTransition.COMPLETED, final_reward=1.5))
    tags = encode_session_tags(user_id=7, metadata={"k": "v"})
    for i in range(20):
        out.append(Metric("sess", TS + i, {"sync_time": 0.5 * i, "size": i}, tags=tags))
    out.append(LogEvent("sess", TS + 1, "session_created", "info", {"user_id": 7, "details": {}}))
    out.append(LogEvent("train", TS + 3, "checkpoint", "info", {"path": "a.pt"}))
    return out


def hexed(value: Any) -> Any:
    return float(value).hex() if isinstance(value, float) else value


def frame_record(frame: Any) -> dict[str, Any]:
    return {
        "timestamp": [stamp.value for stamp in frame["timestamp"]],  # nanoseconds
        "step": [None if pd.isna(step) else int(step) for step in frame["step"]],
        "columns": {name: [float(value).hex() for value in frame[name]] for name in frame.columns[2:]},
    }


def summary_record(stats: dict[str, Any]) -> dict[str, Any]:
    return {key: value.timestamp() if key == "last_timestamp" else hexed(value) for key, value in stats.items()}


async def write(target: Path) -> None:
    async with Pipeline(None, context=ComponentContext(db_path=str(target))) as pipeline:
        for event in events():
            pipeline.emit(event)
        assert await pipeline.flush(30)


def main(target: Path) -> None:
    asyncio.run(write(target))
    db = DatabaseManager(target)
    assert db.downsample_metrics(datetime.fromtimestamp(OLD + 200, UTC), bucket_rows=50)["written_rollups"] > 0
    store = SQLiteStore(target)
    store.save_snapshots([("train", b'{"n": 1}')], TS + 5, 3)
    expected: dict[str, Any] = {"schema_version": store.schema_version(), "runs": {}}
    for run_id in ("train", "old", "sess"):
        rollups = db.get_metric_rollups(run_id)
        for column in ("start_time", "end_time"):  # epoch milliseconds
            rollups[column] = rollups[column].astype("int64") // 1_000_000
        expected["runs"][run_id] = {
            "call": frame_record(db.get_run_metrics(run_id, align="call")),
            "step": frame_record(db.get_run_metrics(run_id, align="step")),
            "summary": {name: summary_record(stats) for name, stats in db.get_run_summary(run_id)["metrics"].items()},
            "rollups": json.loads(rollups.to_json(orient="records")),
        }
    page = store.read_session("sess", events_limit=10, metrics_limit=5)
    expected["session_page"] = [
        {**row, "values": [[name, value.hex()] for name, value in row["values"]]} for row in page["metrics"]
    ]
    expected["session_metrics"] = [{**row, "value": row["value"].hex()} for row in store.session_metrics(None, None)]
    target.with_name(target.stem + ".expected.json").write_text(json.dumps(expected, separators=(",", ":")))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
