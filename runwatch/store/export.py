"""Export one run into a ``.zip``: run.json, metrics, events, state history."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import orjson

from ..exceptions import StoreError
from . import queries

__all__ = ["export_run"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def export_run(db_path: str, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
    """Write ``<output_dir>/<run_id>-<time>.zip`` and return its path.

    The archive holds ``run.json`` (summary and config), ``metrics.parquet``
    when pyarrow is installed (else ``metrics.csv``), ``events.jsonl`` and
    ``state_history.jsonl``; with ``include_snapshots`` also the run's
    snapshots when the store has them. The file appears atomically.

    Raises:
        UnknownRunError: no run has this id.
        StoreError: the database is missing.
    """
    if not os.path.exists(db_path):
        raise StoreError(f"no database at {db_path!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(db_path, timeout=10)
    try:
        connection.execute("PRAGMA query_only = 1")
        summary = queries.run_summary(connection, run_id)
        frame = queries.run_metrics_frame(connection, run_id)
        events = queries.run_events(connection, run_id)
        history = queries.state_history(connection, run_id)
        snapshots = _snapshots(connection, run_id) if include_snapshots else []
    finally:
        connection.close()

    metrics_name, metrics_bytes = _metrics_file(frame)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = output_dir / f"{_UNSAFE.sub('_', run_id)[:100]}-{stamp}.zip"
    handle, temporary = tempfile.mkstemp(dir=output_dir, prefix=".export-", suffix=".zip")
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("run.json", _dumps({"format": "runwatch-export/1", **summary}))
            archive.writestr(metrics_name, metrics_bytes)
            archive.writestr("events.jsonl", b"".join(_dumps(event) + b"\n" for event in events))
            archive.writestr("state_history.jsonl", b"".join(_dumps(entry) + b"\n" for entry in history))
            for name, content in snapshots:
                archive.writestr(f"snapshots/{name}", content)
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return target


def _metrics_file(frame: Any) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    try:
        import pyarrow  # noqa: F401 - only probing whether Parquet is available
    except ImportError:
        frame.to_csv(buffer, index=False)
        return "metrics.csv", buffer.getvalue()
    frame.to_parquet(buffer, index=False)
    return "metrics.parquet", buffer.getvalue()


def _snapshots(connection: sqlite3.Connection, run_id: str) -> list[tuple[str, bytes]]:
    """Snapshots stored for the run, if this store keeps them."""
    exists = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'snapshots'").fetchone()
    if not exists:
        return []
    rows = connection.execute(
        "SELECT s.ts, s.data FROM snapshots s JOIN runs r ON r.id = s.run WHERE r.run_id = ? ORDER BY s.ts",
        (run_id,),
    ).fetchall()
    return [(f"snapshot_{ts:.3f}.json", data if isinstance(data, bytes) else str(data).encode()) for ts, data in rows]
