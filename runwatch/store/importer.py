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
from pathlib import Path
from typing import Any

from ..exceptions import StoreError
from . import connections, media
from .archive import (
    MAX_ARCHIVE_BYTES,
    MAX_MEMBERS,
    MAX_RUN_JSON_BYTES,
    ArchiveError,
    ArchiveReader,
    ProgressCallback,
)
from .archive_rows import (
    CHUNK_ROWS,
    RUN_COLUMNS,
    MetricImport,
    Renumbering,
    annotation_row,
    check_counts,
    chunks_of,
    event_rows,
    histogram_events,
    image_rows,
    open_archive,
    patch_rows,
    run_row,
)
from .encode import (
    ADVANCE_METRIC_ROW,
    INSERT_EVENTS,
    INSERT_STATE_HISTORY,
    UPSERT_METRIC_STATS,
    dumps,
    metric_stats,
)
from .locations import is_postgres_url
from .schema import SCHEMA_VERSION, current_version, prepare_database

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
    with open_archive(Path(zip_path), progress) as (reader, run):
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
    cursor = connection.execute(
        f"INSERT INTO runs ({RUN_COLUMNS}, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        run_row(run, run_id),
    )
    assert cursor.lastrowid is not None
    annotation = annotation_row(run, cursor.lastrowid)
    if annotation is not None:
        connection.execute("INSERT INTO run_annotations (run, tags, note, updated_at) VALUES (?, ?, ?, ?)", annotation)
    return cursor.lastrowid


def _import_metrics(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> bool:
    """Insert the metrics, rollups and per-metric statistics, and check them against each other.

    Returns:
        Whether the calls are exactly the logged ones (``False`` for the wide fallback).
    """
    from .chunk_store import ChunkWriter
    from .series import SeriesBuilder

    plan = MetricImport(reader, run_id, pk)
    (base,) = connection.execute("SELECT value FROM meta WHERE key = 'next_metric_row'").fetchone()
    numbering = Renumbering(int(base), plan.kept_rows)
    builder = SeriesBuilder()
    writer = ChunkWriter(connection)
    for chunk, numbers, last in plan.chunks(numbering):
        if chunk:
            groups = plan.groups(chunk, numbers)
            if not plan.exact_stats:
                connection.execute(UPSERT_METRIC_STATS, (dumps(metric_stats(groups)),))
            builder.add_groups(groups)
        writes = builder.prepare(seal_all=last, persist_open=False)  # one transaction: sealed chunks only
        writer.register(builder.series_keys())
        writer.write(writes)
        builder.confirm(writes)
    writer.committed()
    connection.execute(ADVANCE_METRIC_ROW, (numbering.finish(),))
    if plan.rollups:
        connection.executemany(
            "INSERT INTO metric_rollups (run, name, first_row, last_row, first_step, last_step, start_ts, end_ts,"
            " count, nan_count, min, max, mean) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            plan.rollup_rows(numbering.bounds),
        )
    if plan.exact_stats:
        connection.executemany(
            "INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts, last_step)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            plan.stats_rows(),
        )
    if plan.long_form:
        stored = dict(connection.execute("SELECT name, count FROM metric_stats WHERE run = ?", (pk,)).fetchall())
        plan.check_stored_counts(stored)
    return plan.long_form


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
