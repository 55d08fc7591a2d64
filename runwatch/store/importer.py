"""Import a run from an export archive (see :mod:`runwatch.store.export`) into a store.

The archive is checked before anything is written: it must be a zip, hold a
``run.json`` of format ``runwatch-export/1``, stay within size limits, and
have no member name that could escape a directory (nothing is extracted to
disk, but a name like ``../x`` marks an archive that was not written by
runwatch). The run then goes in with ONE write transaction: the runs row, its
metrics (as columnar chunks built by the writer's
:class:`~runwatch.store.series.SeriesBuilder`, so values are stored exactly
as live logging stores them), the rollups of downsampled rows, the
per-metric statistics, its events and its state history. Any problem rolls everything back, and the counts are checked
against each other and against run.json, so a truncated archive is refused.

Metrics come from ``metrics_long.jsonl``, which records each logging call as
it was made, and the statistics from ``metric_stats.jsonl``, copied exactly
(recomputing them would add the sums in another order, and rows replaced by
rollups are no longer there to count). Archives without the long form (written
before it existed) fall back to the wide ``metrics.parquet``/``metrics.csv``,
which cannot tell a metric that a call did not log from one logged as NaN:
there a NaN cell is taken as "not logged", except in a row where every cell is
NaN, which is taken as that call logging NaN for every metric (a row with
nothing logged cannot exist); the statistics are then computed from the rows.

Logging-call numbers (``row``, ``seq`` in the chunks) are store-wide, so the
run's calls are numbered anew after the target store's, keeping their order
(and that of the rollups' row ranges). Event and state-patch ids are new too.
Images (``images.jsonl`` and the contents under ``media/``) and histograms
(``histograms.jsonl``) are checked as live logging checks them; each content
must hash to its name, and one the store already has is kept once. The run's
image bytes are counted anew (its budget is not applied: the run kept it
where it was logged). Not carried over: the run's ``owner`` (the process
that wrote it in the source store; an imported run has no writer here, so
crash detection leaves it alone) and snapshots.
"""

from __future__ import annotations

import os
import sqlite3
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..events import Metric
from ..exceptions import StoreError
from . import connections, media
from .archive import (
    MAX_ARCHIVE_BYTES,
    MAX_MEMBERS,
    MAX_RUN_JSON_BYTES,
    ArchiveError,
    ArchiveReader,
    ProgressCallback,
    lines_if_any,
    metric_from_line,
    metrics_from_wide,
    parse_rollup,
    parse_run,
    parse_stats,
)
from .archive_rows import (
    CHUNK_ROWS,
    Renumbering,
    check_counts,
    chunks_of,
    event_rows,
    histogram_events,
    image_rows,
    patch_rows,
)
from .encode import (
    ADVANCE_METRIC_ROW,
    INSERT_EVENTS,
    INSERT_STATE_HISTORY,
    UPSERT_METRIC_STATS,
    BatchEncoder,
    dumps,
    metric_stats,
)
from .locations import is_postgres_url
from .schema import SCHEMA_VERSION, current_version, prepare_database
from .series import group_calls

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_MEMBERS", "MAX_RUN_JSON_BYTES", "ArchiveError", "import_run"]

# How long to wait for a writer's lock before giving up.
_BUSY_TIMEOUT_SECONDS = 10.0


def import_run(
    db_path: str,
    zip_path: Path,
    *,
    rename: str | None = None,
    progress: ProgressCallback | None = None,
) -> str:
    """Write the run of an export archive into the store at ``db_path``.

    Args:
        db_path: the store; created (with the current schema) when missing.
        zip_path: an archive written by :func:`~runwatch.store.export.export_run`.
        rename: store the run under this id instead of the archive's.
        progress: called as data files are read, with bytes done and the total.

    Returns:
        The id the run was stored under.

    Raises:
        FileNotFoundError: ``zip_path`` does not exist.
        ArchiveError: the archive is not a valid runwatch export.
        ValueError: a run with that id already exists in the store (pass
            ``rename``), or ``rename`` is empty.
        StoreError: the store has another schema version, is not a
            database, or stayed locked.
    """
    if rename is not None and (type(rename) is not str or not rename.strip()):
        raise ValueError(f"rename must be a non-empty run id, got {rename!r}")
    if is_postgres_url(db_path):
        from .postgres.transfer import import_run as import_into_postgres

        return import_into_postgres(db_path, Path(zip_path), rename=rename, progress=progress)
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise FileNotFoundError(f"no such file: {str(zip_path)!r}")
    where = str(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(where, f"not a zip archive ({exc})") from None
    with archive:
        reader = ArchiveReader(archive, where, progress)
        run = parse_run(reader.read_run_json(), where)
        run_id = rename if rename is not None else run["run_id"]
        connection = _open_store(db_path)
        try:
            _write_run(connection, reader, run, run_id)
        finally:
            connection.close()
    return run_id


# -- writing the store -----------------------------------------------------------------


def _open_store(db_path: str) -> sqlite3.Connection:
    if not os.path.exists(db_path):
        try:
            prepare_database(db_path)  # creates missing directories 0700 and the file 0600
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"cannot create the database {db_path!r}: {exc}") from exc
    try:
        connection = connections.open_read_write(db_path, timeout=_BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {db_path!r}: {exc}") from exc
    try:
        version = current_version(connection)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise StoreError(f"the database {db_path!r} cannot be used: {exc}") from exc
    if version != SCHEMA_VERSION:
        connection.close()
        raise StoreError(
            f"the database {db_path!r} has schema version {version}, this runwatch writes version "
            f"{SCHEMA_VERSION}; migrate it first (runwatch migrate)"
        )
    return connection


def _write_run(connection: sqlite3.Connection, reader: ArchiveReader, run: dict[str, Any], run_id: str) -> None:
    db_path = connection.execute("PRAGMA database_list").fetchone()[2]
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreError(f"the database {db_path!r} stayed locked: {exc}") from exc
    try:
        if connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            raise ValueError(f"a run with id {run_id!r} already exists in {db_path!r}; import it under another id")
        pk = _insert_run_row(connection, run, run_id)
        exact_rows = _import_metrics(connection, reader, run_id, pk)
        event_counts = _import_events(connection, reader, pk)
        _import_state_history(connection, reader, pk)
        _import_images(connection, reader, run_id, pk)
        _import_histograms(connection, reader, run_id, pk)
        _check_counts(connection, reader.where, run, pk, event_counts, metrics=exact_rows)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    try:
        connection.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        connection.execute("ROLLBACK")
        raise StoreError(f"the import into {db_path!r} could not be committed: {exc}") from exc


def _insert_run_row(connection: sqlite3.Connection, run: dict[str, Any], run_id: str) -> int:
    def text(value: Any) -> str | None:
        return None if value is None else dumps(value).decode()

    cursor = connection.execute(
        "INSERT INTO runs (run_id, kind, status, start_time, end_time, updated_at, last_heartbeat, config,"
        " metadata, final_reward, total_steps, total_episodes, state, owner)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        (
            run_id,
            run["kind"],
            run["status"],
            run["start_time"],
            run["end_time"],
            run["updated_at"],
            run["last_heartbeat"],
            text(run["config"]),
            text(run["metadata"]),
            run["final_reward"],
            run["total_steps"],
            run["total_episodes"],
            text(run["state"] or {}),
        ),
    )
    assert cursor.lastrowid is not None
    if run["tags"] or run["note"]:
        connection.execute(
            "INSERT INTO run_annotations (run, tags, note, updated_at) VALUES (?, ?, ?, ?)",
            (cursor.lastrowid, dumps(run["tags"]).decode(), run["note"], run["updated_at"]),
        )
    return cursor.lastrowid


def _import_metrics(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> bool:
    """Insert the metrics, rollups and per-metric statistics, and check them against each other.

    Returns:
        Whether the calls are exactly the logged ones (``False`` for the wide fallback).
    """
    from .chunk_store import ChunkWriter
    from .series import SeriesBuilder

    rollups = [parse_rollup(line, reader.where, n) for n, line in lines_if_any(reader, "metric_rollups.jsonl")]
    stats = [parse_stats(line, reader.where, n) for n, line in lines_if_any(reader, "metric_stats.jsonl")]
    # Without metric_stats.jsonl (older archives) the statistics are computed from the calls, as the sink does.
    exact_stats = reader.has("metric_stats.jsonl")
    long_form = reader.has("metrics_long.jsonl")
    if rollups and not long_form:
        raise ArchiveError(reader.where, "metric_rollups.jsonl without metrics_long.jsonl")
    (base,) = connection.execute("SELECT value FROM meta WHERE key = 'next_metric_row'").fetchone()
    numbering = Renumbering(int(base), sorted({row for r in rollups for row in (r[2], r[3])}))
    counts: dict[str, int] = {}
    chunk: list[Metric] = []
    numbers: list[int] = []
    builder = SeriesBuilder()
    writer = ChunkWriter(connection)
    encoder = BatchEncoder()  # checks metric names as the sink does

    def flush(*, last: bool = False) -> None:
        if chunk:
            encoder.encode(chunk, {run_id: pk}, {})
            groups = group_calls(chunk, {run_id: pk}, 0)  # seq = position in this chunk...
            seqs = np.array(numbers, dtype=np.int64)
            groups = [replace(group, seq=seqs[group.seq]) for group in groups]  # ...then the new numbers
            if not exact_stats:
                connection.execute(UPSERT_METRIC_STATS, (dumps(metric_stats(groups)),))
            builder.add_groups(groups)
        writes = builder.prepare(seal_all=last, persist_open=False)  # one transaction: sealed chunks only
        writer.register(builder.series_keys())
        writer.write(writes)
        builder.confirm(writes)
        chunk.clear()
        numbers.clear()

    if long_form:
        for number, line in reader.json_lines("metrics_long.jsonl"):
            metric = metric_from_line(line, run_id, reader.where, number)
            try:
                numbers.append(numbering.row(line.get("row")))
            except ValueError as exc:
                raise ArchiveError(reader.where, f"metrics_long.jsonl line {number}: {exc}") from None
            for name in metric.values:
                counts[name] = counts.get(name, 0) + 1
            chunk.append(metric)
            if len(chunk) >= CHUNK_ROWS:
                flush()
    else:
        for metric in metrics_from_wide(reader, run_id):
            numbers.append(numbering.next_row())
            chunk.append(metric)
            if len(chunk) >= CHUNK_ROWS:
                flush()
    flush(last=True)
    writer.committed()
    connection.execute(ADVANCE_METRIC_ROW, (numbering.finish(),))
    if rollups:
        bounds = numbering.bounds
        connection.executemany(
            "INSERT INTO metric_rollups (run, name, first_row, last_row, first_step, last_step, start_ts, end_ts,"
            " count, nan_count, min, max, mean) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(pk, r[1], bounds[r[2]], bounds[r[3]], *r[4:]) for r in rollups],
        )
    if exact_stats:
        connection.executemany(
            "INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts, last_step)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(pk, *row) for row in stats],
        )
    if long_form:
        # Every value ever logged is in a kept call or in a rollup; the statistics count them all.
        for rollup in rollups:
            counts[rollup[1]] = counts.get(rollup[1], 0) + rollup[8]
        stored = dict(connection.execute("SELECT name, count FROM metric_stats WHERE run = ?", (pk,)).fetchall())
        if stored != counts:
            names = sorted(name for name in stored.keys() | counts.keys() if stored.get(name) != counts.get(name))
            raise ArchiveError(
                reader.where, f"the metric rows and rollups do not add up to the statistics' counts (for {names[:5]})"
            )
    return long_form


def _import_events(connection: sqlite3.Connection, reader: ArchiveReader, pk: int) -> dict[str, int]:
    """Insert the events with their original kind, type, level, data, detail and time; returns counts per type."""
    counts: dict[str, int] = {}
    for rows in chunks_of(event_rows(reader, pk, counts)):
        connection.execute(INSERT_EVENTS, (dumps(rows),))
    return counts


def _import_state_history(connection: sqlite3.Connection, reader: ArchiveReader, pk: int) -> None:
    for rows in chunks_of(patch_rows(reader, pk)):
        connection.execute(INSERT_STATE_HISTORY, (dumps(rows),))


def _import_images(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> None:
    """Insert the run's images and the contents they name (each once), then count the run's image bytes."""
    stored = False
    rows: list[tuple[Any, ...]] = []
    for blob, row in image_rows(reader, run_id, pk):
        if blob is not None:
            media.insert_blob(connection, *blob)
            stored = True
        rows.append(row)
        if len(rows) >= CHUNK_ROWS:
            media.insert_image_rows(connection, rows)
            rows = []
    media.insert_image_rows(connection, rows)
    if stored:
        media.count_image_bytes(connection, pk)


def _import_histograms(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> None:
    """Insert the run's histograms, each checked as a live one is."""
    for events in chunks_of(histogram_events(reader, run_id)):
        media.write_histograms(connection, {run_id: pk}, events)


def _check_counts(
    connection: sqlite3.Connection, where: str, run: dict[str, Any], pk: int, events: dict[str, int], *, metrics: bool
) -> None:
    """Compare what was stored with the counts run.json records (see :func:`check_counts`)."""
    stored = dict(connection.execute("SELECT name, count FROM metric_stats WHERE run = ?", (pk,)).fetchall())
    check_counts(where, run, events, stored, metrics=metrics)
