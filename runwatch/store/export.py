"""Export one run into a ``.zip``: run.json, metrics, events, state history.

Archive layout (format ``runwatch-export/1``)::

    run.json              the run's summary and config, plus "format" (NaN is
                          null, ±Inf "Infinity"/"-Infinity", as on the wire)
    metrics_long.jsonl    one line per logging call, exactly as logged:
                          {"row", "step", "ts", "values": {name: value}, "tags"}
                          (NaN is null, ±Inf "Infinity"/"-Infinity", as on the wire;
                          "row" is the run's call number, "ts" epoch seconds
                          to the microsecond)
    metrics.parquet       the same calls as a wide table (metrics.csv without
                          pyarrow); a cell is NaN where a call did not log the
                          metric, so it cannot tell "not logged" from "logged NaN"
    metric_stats.jsonl    the stored per-metric statistics, exactly (count, NaN
                          count, sum, min, max, last...), one metric per line
    metric_rollups.jsonl  the rollups that replaced downsampled metric rows
                          (stores of schema version 3 and later)
    events.jsonl          one event per line, oldest first (with its ``detail``
                          when it has one: a protocol's own fields)
    state_history.jsonl   one state patch per line, oldest first (``detail`` too)
    snapshots/...         the run's snapshots, when the store keeps them
    images.jsonl          one line per image, in order of name, step and logging:
                          {"name", "step", "ts", "digest", "mime", "width",
                          "height", "caption"} (stores of schema version 7 and later)
    media/<digest>.png    each image content once (.jpg for JPEG), named by the
                          SHA-256 of its bytes
    histograms.jsonl      one line per histogram, by name and step: {"name", "step",
                          "ts", "size", "nan_count", "posinf_count", "neginf_count",
                          "min", "max", "sum", "low", "high", "counts"}

Everything is read in one read transaction, so the files agree with each other
even while a writer commits. :mod:`runwatch.store.importer` reads it back.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from ..exceptions import StoreError
from ..wire import json_number
from . import connections, queries
from .chunk_schema import CHUNK_VERSION
from .downsample import ROLLUP_COLUMNS
from .queries import media
from .queries.common import run_pk
from .queries.datacat import details_of_run
from .schema import SCHEMA_VERSION, current_version

if TYPE_CHECKING:
    from .base import Series

__all__ = ["EXPORT_FORMAT", "MEDIA_EXTENSIONS", "atomic_archive", "export_run", "metric_lines"]

#: The value of ``format`` in run.json.
EXPORT_FORMAT = "runwatch-export/1"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# Stored metric values: null is NaN, "inf"/"-inf" are ±Inf; the export uses the wire names.
_WIRE_VALUES = {"inf": "Infinity", "-inf": "-Infinity"}


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY)


def archive_name(run_id: str) -> str:
    """The file name of a run's archive exported now: ``<run_id>-<UTC time>.zip`` (unsafe characters as ``_``)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{_UNSAFE.sub('_', run_id)[:100]}-{stamp}.zip"


def export_run(db_path: str, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
    """Write ``<output_dir>/<run_id>-<time>.zip`` and return its path.

    The archive holds ``run.json`` (summary and config), ``metrics_long.jsonl``
    (every logging call as logged), ``metrics.parquet`` when pyarrow is
    installed (else ``metrics.csv``), ``events.jsonl`` and
    ``state_history.jsonl``; with ``include_snapshots`` also the run's
    snapshots when the store has them. The file appears atomically.

    Raises:
        UnknownRunError: no run has this id.
        StoreError: the database is missing.
        sqlite3.OperationalError: the database stayed locked.
    """
    if not os.path.exists(db_path):
        raise StoreError(f"no database at {db_path!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a directory this creates is private
    target = output_dir / archive_name(run_id)
    connection = connections.open_reader(db_path, timeout=10)
    try:
        connection.execute("BEGIN")  # one snapshot for every file (the queries reuse it)
        _check_version(connection, db_path)
        summary = queries.run_summary(connection, run_id)
        frame = queries.run_metrics_frame(connection, run_id)
        events = queries.run_events(connection, run_id)
        history = queries.state_history(connection, run_id)
        _add_details(connection, run_id, events, history)
        snapshots = _snapshots(connection, run_id) if include_snapshots else []
        metrics_name, metrics_bytes = _metrics_file(frame)
        del frame
        with atomic_archive(target) as archive:
            archive.writestr("run.json", _dumps(_wire_numbers({"format": EXPORT_FORMAT, **summary})))
            with archive.open("metrics_long.jsonl", "w", force_zip64=True) as out:
                _write_metric_rows(connection, run_id, out)
            archive.writestr("metric_stats.jsonl", _table_lines(connection, run_id, "metric_stats", _STATS))
            if _has_table(connection, "metric_rollups"):
                archive.writestr("metric_rollups.jsonl", _table_lines(connection, run_id, "metric_rollups", _ROLLUPS))
            archive.writestr(metrics_name, metrics_bytes)
            archive.writestr("events.jsonl", b"".join(_dumps(event) + b"\n" for event in events))
            archive.writestr("state_history.jsonl", b"".join(_dumps(entry) + b"\n" for entry in history))
            for name, content in snapshots:
                archive.writestr(f"snapshots/{name}", content)
            if media.has_media_tables(connection):
                _write_media(connection, run_id, archive)
    finally:
        connection.close()
    return target


@contextlib.contextmanager
def atomic_archive(target: Path) -> Iterator[zipfile.ZipFile]:
    """A new zip archive that appears at ``target`` (0600) only once it is complete; nothing on failure."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".zip")
    try:
        with os.fdopen(handle, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as archive:
            yield archive
        os.chmod(temporary, 0o600)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _check_version(connection: sqlite3.Connection, db_path: str) -> None:
    """Raises StoreError naming the version when the store's metrics are not in chunks (yet, or any more)."""
    version = current_version(connection)
    if version < CHUNK_VERSION:
        raise StoreError(
            f"the database {db_path!r} has schema version {version}: its metrics are exported from version"
            f" {CHUNK_VERSION} on; migrate it first (runwatch migrate)"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database {db_path!r} has schema version {version}, newer than this runwatch ({SCHEMA_VERSION});"
            " upgrade runwatch"
        )


def _add_details(connection: Any, run_id: str, events: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
    """Give the events and state patches that have a detail (a protocol's own fields) their ``detail``."""
    attach_details(events, history, *details_of_run(connection, run_pk(connection, run_id)))


def attach_details(
    events: list[dict[str, Any]],
    history: list[dict[str, Any]],
    event_details: dict[int, Any],
    state_details: dict[int, Any],
) -> None:
    """Give each event and state patch whose row id has a detail its ``detail`` (any store)."""
    for entries, details in ((events, event_details), (history, state_details)):
        if details:
            for entry in entries:
                if entry["id"] in details:
                    entry["detail"] = details[entry["id"]]


def _wire_numbers(value: Any) -> Any:
    """Non-finite floats as on the wire (docs/protocol.md): NaN → null, ±Inf → "Infinity"/"-Infinity".

    Without this, orjson writes every non-finite float as null, and a metric
    whose max is +Inf would read as having none.
    """
    if type(value) is float:
        return json_number(value)
    if type(value) is dict:
        return {key: _wire_numbers(item) for key, item in value.items()}
    if type(value) is list:
        return [_wire_numbers(item) for item in value]
    return value


# Columns exported as they are stored; REAL columns may hold ±Inf (or the TEXT "inf"/"-inf").
_STATS = ("name", "count", "nan_count", "sum", "min", "max", "last", "last_ts", "last_step")
_ROLLUPS = ROLLUP_COLUMNS


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    found = connection.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return found is not None


def _table_lines(connection: sqlite3.Connection, run_id: str, table: str, columns: tuple[str, ...]) -> bytes:
    """The run's rows of ``table`` as JSON lines, in primary-key order, numbers in the wire form."""
    (run,) = connection.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    order = "name, first_row" if table == "metric_rollups" else "name"
    rows = connection.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE run = ? ORDER BY {order}", (run,))
    lines = []
    for row in rows:
        record = {
            column: _WIRE_VALUES.get(value, value) if type(value) is str and column != "name" else value
            for column, value in zip(columns, row, strict=True)
        }
        lines.append(orjson.dumps(_wire_numbers(record)) + b"\n")
    return b"".join(lines)


def _write_metric_rows(connection: sqlite3.Connection, run_id: str, out: IO[bytes]) -> None:
    """Stream the run's logging calls, in storage order, as JSON lines."""
    buffer: list[bytes] = []
    for line in _metric_lines(connection, run_id):
        buffer.append(line)
        if len(buffer) >= 10_000:
            out.write(b"".join(buffer))
            buffer.clear()
    out.write(b"".join(buffer))


def _metric_lines(connection: sqlite3.Connection, run_id: str) -> Iterator[bytes]:
    from .chunk_reads import read_series

    return metric_lines(read_series(connection, run_id, columns=("seq", "step", "time", "value", "tags")))


def metric_lines(series: Mapping[str, Series]) -> Iterator[bytes]:
    """A run's logging calls rebuilt from its series (every column decoded), as lines of ``metrics_long.jsonl``."""
    from .frames import calls_of

    for seq, step, time_us, values, tags in calls_of(series):
        yield (
            orjson.dumps(
                {
                    "row": seq,
                    "step": step,
                    "ts": time_us / 1e6,
                    "values": {name: json_number(value) for name, value in values},
                    "tags": None if tags is None else orjson.loads(tags),
                }
            )
            + b"\n"
        )


def _metrics_file(frame: Any) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    try:
        import pyarrow  # noqa: F401 - only probing whether Parquet is available
    except ImportError:
        frame.to_csv(buffer, index=False)
        return "metrics.csv", buffer.getvalue()
    frame.to_parquet(buffer, index=False)
    return "metrics.parquet", buffer.getvalue()


#: The file extension of an image content in an archive, by media type.
MEDIA_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg"}
_IMAGE_LINE_KEYS = ("name", "step", "ts", "digest", "mime", "width", "height", "caption")


def _write_media(connection: sqlite3.Connection, run_id: str, archive: zipfile.ZipFile) -> None:
    """images.jsonl, each image content once under media/, and histograms.jsonl."""
    histograms = [
        row
        for entry in media.histogram_names(connection, run_id)
        for row in media.run_histograms(connection, run_id, entry["name"])
    ]
    write_media(archive, media.images_of_run(connection, run_id), lambda d: media.image_blob(connection, d), histograms)


def write_media(
    archive: zipfile.ZipFile,
    images: list[dict[str, Any]],
    blob: Callable[[str], tuple[str, bytes] | None],
    histograms: list[dict[str, Any]],
) -> None:
    """Write images.jsonl, each content the images name once under media/ (``blob`` gives the media type
    and bytes of a digest), and histograms.jsonl, from a run's image and histogram reads (any store)."""
    archive.writestr(
        "images.jsonl", b"".join(orjson.dumps({key: row[key] for key in _IMAGE_LINE_KEYS}) + b"\n" for row in images)
    )
    written: set[str] = set()
    for row in images:
        digest = row["digest"]
        if digest in written:
            continue
        written.add(digest)
        content = blob(digest)
        if content is not None:
            # PNG and JPEG are compressed already: stored, not deflated again.
            archive.writestr(f"media/{digest}.{MEDIA_EXTENSIONS[content[0]]}", content[1], zipfile.ZIP_STORED)
    lines = [_dumps(_wire_numbers({key: row[key] for key in media.HISTOGRAM_FIELDS})) + b"\n" for row in histograms]
    archive.writestr("histograms.jsonl", b"".join(lines))


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
