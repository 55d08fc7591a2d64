"""Runs in and out of a PostgreSQL store: export archives, imports, and backups with ``pg_dump``.

- :func:`export_run` writes the SQLite store's archive format
  (:mod:`runwatch.store.export`, ``runwatch-export/1``) from one read
  snapshot, so an archive moves a run between the two kinds of store.
- :func:`import_run` reads such an archive (checked by
  :mod:`runwatch.store.importer`'s readers) into one transaction.
- :func:`create_backup` runs ``pg_dump --format=custom`` into a file;
  :func:`restore_backup` first dumps the current store beside the backup,
  then ``pg_restore --clean`` it. A large installation backs up with base
  backups and WAL archiving instead (docs/scale.md); these are for a store
  that a dump of minutes can hold.

Each runs on a thread of its own with its own connection (a long export
never holds up the store's other callers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import asyncpg
import orjson

from ...exceptions import BackupError, StoreError
from ..archive import (
    ArchiveError,
    ArchiveReader,
    ProgressCallback,
    metrics_from_wide,
)
from ..archive_rows import (
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
from ..base import Series
from ..encode import dumps, metric_stats
from ..export import (
    _ROLLUPS,
    _STATS,
    EXPORT_FORMAT,
    _dumps,
    _metrics_file,
    _wire_numbers,
    archive_name,
    atomic_archive,
    attach_details,
    metric_lines,
    write_media,
)
from ..media import histogram_rows
from ..series import SeriesBuilder
from . import media, reads
from .chunks import PostgresChunkWriter, fetch_series
from .connection import connect, redact_dsn, translate_error
from .schema import SCHEMA_VERSION, current_version, migrate, take_positions
from .writer import (
    _EVENT_COLUMNS,
    _HISTOGRAM_COLUMNS,
    _IMAGE_COLUMNS,
    _STATE_COLUMNS,
    _UPSERT_METRIC_STATS,
    _detail_text,
    _stats_columns,
)

__all__ = ["create_backup", "export_run", "import_run", "restore_backup"]

_T = TypeVar("_T")

#: Every backup file of a PostgreSQL store starts with this (``pg_dump``'s custom format).
BACKUP_PREFIX: Final = "runwatch-backup-"
BACKUP_SUFFIX: Final = ".pgdump"


def run_isolated(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[_T]]) -> _T:
    """``await fn(connection)`` on a thread and event loop of its own, with a connection of its own."""
    outcome: dict[str, Any] = {}

    async def main() -> None:
        connection = await connect(dsn)
        try:
            outcome["value"] = await fn(connection)
        finally:
            await connection.close()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=thread_main, name="runwatch postgres transfer")
    thread.start()
    thread.join()
    if "error" in outcome:
        error = outcome["error"]
        translated = translate_error(error, redact_dsn(dsn))
        if translated is error:
            raise error
        raise translated from error
    value: _T = outcome["value"]
    return value


# -- export ----------------------------------------------------------------------------------------


def export_run(dsn: str, run_id: str, output_dir: Path, *, include_snapshots: bool = True) -> Path:
    """Write ``<output_dir>/<run_id>-<time>.zip`` (see :func:`runwatch.store.export.export_run`); its path.

    Raises:
        UnknownRunError: no run has this id.
        StoreError, StoreUnavailable: the store is missing or cannot be reached.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # a directory this creates is private
    target = output_dir / archive_name(run_id)

    async def export(connection: asyncpg.Connection) -> None:
        # One snapshot for every file: the reads nest their transactions into this one (savepoints).
        async with reads.snapshot(connection):
            summary = await reads.run_summary(connection, run_id)
            run = await reads.run_pk(connection, run_id)
            series = {found.name: found for found in await fetch_series(connection, "r.id = $1", run)}
            frame = _calls_frame(series)
            events = await reads.run_events(connection, run_id)
            history = await reads.state_history(connection, run_id)
            attach_details(events, history, *await _details(connection, run))
            images = await media.images_of_run(connection, run_id)
            blobs = {
                row["digest"]: (row["mime"], bytes(row["data"]))
                for row in await connection.fetch(
                    "SELECT digest, mime, data FROM media_blobs WHERE digest = ANY($1::text[])",
                    sorted({image["digest"] for image in images}),
                )
            }
            histograms = [
                row
                for entry in await media.histogram_names(connection, run_id)
                for row in await media.run_histograms(connection, run_id, entry["name"])
            ]
            metrics_name, metrics_bytes = _metrics_file(frame)
            del frame
            with atomic_archive(target) as archive:
                archive.writestr("run.json", _dumps(_wire_numbers({"format": EXPORT_FORMAT, **summary})))
                with archive.open("metrics_long.jsonl", "w", force_zip64=True) as out:
                    _write_lines(metric_lines(series), out)
                archive.writestr("metric_stats.jsonl", await _table_lines(connection, run, "metric_stats", _STATS))
                archive.writestr(
                    "metric_rollups.jsonl", await _table_lines(connection, run, "metric_rollups", _ROLLUPS)
                )
                archive.writestr(metrics_name, metrics_bytes)
                archive.writestr("events.jsonl", b"".join(_dumps(event) + b"\n" for event in events))
                archive.writestr("state_history.jsonl", b"".join(_dumps(entry) + b"\n" for entry in history))
                if include_snapshots:
                    for ts, data in await connection.fetch(
                        "SELECT ts, data FROM snapshots WHERE run = $1 ORDER BY ts", run
                    ):
                        archive.writestr(f"snapshots/snapshot_{ts:.3f}.json", data.encode())
                write_media(archive, images, blobs.get, histograms)

    run_isolated(dsn, export)
    return target


async def _details(connection: asyncpg.Connection, run: int) -> tuple[dict[int, Any], dict[int, Any]]:
    """The details of a run's events and state patches, by row id (only the rows that have one)."""
    found: list[dict[int, Any]] = []
    for table in ("events", "state_history"):
        rows = await connection.fetch(f"SELECT id, detail FROM {table} WHERE run = $1 AND detail IS NOT NULL", run)
        found.append({row["id"]: orjson.loads(row["detail"]) for row in rows})
    return found[0], found[1]


async def _table_lines(connection: asyncpg.Connection, run: int, table: str, columns: tuple[str, ...]) -> bytes:
    order = "name, first_row" if table == "metric_rollups" else "name"
    lines = []
    for row in await connection.fetch(f"SELECT {', '.join(columns)} FROM {table} WHERE run = $1 ORDER BY {order}", run):
        lines.append(orjson.dumps(_wire_numbers(dict(zip(columns, row, strict=True)))) + b"\n")
    return b"".join(lines)


def _calls_frame(series: dict[str, Series]) -> Any:
    """The run's DataFrame of calls (:func:`runwatch.store.queries.metrics.run_metrics_frame`) from its series."""
    from ..frames import per_call_frame

    positions = {name: index for index, name in enumerate(series)}
    # In order of first appearance: the first call, then the order the run's series were created in.
    names = sorted(series, key=lambda name: (int(series[name].points.seq[0]), positions[name]))
    return per_call_frame(series, names, merge_steps=False)


def _write_lines(lines: Iterator[bytes], out: IO[bytes]) -> None:
    buffer: list[bytes] = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= 10_000:
            out.write(b"".join(buffer))
            buffer.clear()
    out.write(b"".join(buffer))


# -- import ----------------------------------------------------------------------------------------


def import_run(dsn: str, zip_path: Path, *, rename: str | None = None, progress: ProgressCallback | None = None) -> str:
    """Write the run of an export archive into the store (see :func:`runwatch.store.importer.import_run`).

    The run's metric rows keep their order and take a block of the store's
    row numbers after every row there; everything goes in with one
    transaction, checked against the archive's counts.

    Raises:
        FileNotFoundError, ArchiveError, ValueError, StoreError: as the SQLite import.
    """
    with open_archive(zip_path, progress) as (reader, run):
        run_id = rename if rename is not None else run["run_id"]

        async def write(connection: asyncpg.Connection) -> None:
            version = await current_version(connection)
            if version == 0:  # as into a new SQLite file: the store is created
                await migrate(connection)
                version = SCHEMA_VERSION
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"the store has schema version {version}, this runwatch writes version {SCHEMA_VERSION};"
                    " prepare or migrate it first (runwatch migrate)"
                )
            async with connection.transaction():
                await _write_run(connection, reader, run, run_id)

        run_isolated(dsn, write)
    return run_id


async def _write_run(connection: asyncpg.Connection, reader: ArchiveReader, run: dict[str, Any], run_id: str) -> None:
    if await connection.fetchval("SELECT 1 FROM runs WHERE run_id = $1", run_id):
        raise ValueError(f"a run with id {run_id!r} already exists in the store; import it under another id")

    pk = await connection.fetchval(
        f"INSERT INTO runs ({RUN_COLUMNS}, owner)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL) RETURNING id",
        *run_row(run, run_id),
    )
    annotation = annotation_row(run, pk)
    if annotation is not None:
        await connection.execute(
            "INSERT INTO run_annotations (run, tags, note, updated_at) VALUES ($1, $2, $3, $4)", *annotation
        )
    exact_rows = await _import_metrics(connection, reader, run_id, pk)
    counts: dict[str, int] = {}
    for chunk in chunks_of(event_rows(reader, pk, counts)):
        first = await take_positions(connection, "events", len(chunk))
        records = [
            (number, run, ts, kind, type_, level, dumps(data).decode(), _detail_text(detail))
            for number, (run, ts, kind, type_, level, data, detail) in enumerate(chunk, first)
        ]
        await connection.copy_records_to_table("events", records=records, columns=_EVENT_COLUMNS)
    for chunk in chunks_of(patch_rows(reader, pk)):
        first = await take_positions(connection, "state_history", len(chunk))
        patches = [
            (number, run, ts, dumps(patch).decode(), _detail_text(detail))
            for number, (run, ts, patch, detail) in enumerate(chunk, first)
        ]
        await connection.copy_records_to_table("state_history", records=patches, columns=_STATE_COLUMNS)
    await _import_media(connection, reader, run_id, pk)
    rows = await connection.fetch("SELECT name, count FROM metric_stats WHERE run = $1", pk)
    check_counts(reader.where, run, counts, {row["name"]: row["count"] for row in rows}, metrics=exact_rows)


async def _import_media(connection: asyncpg.Connection, reader: ArchiveReader, run_id: str, pk: int) -> None:
    """The run's images with the contents they name (each once; its image bytes counted), and its histograms."""
    stored = False
    for chunk in chunks_of(image_rows(reader, run_id, pk)):
        blobs = [blob for blob, _ in chunk if blob is not None]
        if blobs:
            await connection.executemany(
                "INSERT INTO media_blobs (digest, mime, size, data) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (digest) DO NOTHING",
                [(digest, mime, len(data), data) for digest, mime, data in blobs],
            )
            stored = True
        await connection.copy_records_to_table("images", records=[row for _, row in chunk], columns=_IMAGE_COLUMNS)
    if stored:
        await connection.execute(
            "INSERT INTO media_usage (run, image_bytes) SELECT $1, COALESCE(sum(size), 0) FROM media_blobs"
            " WHERE digest IN (SELECT digest FROM images WHERE run = $1)"
            " ON CONFLICT (run) DO UPDATE SET image_bytes = excluded.image_bytes",
            pk,
        )
    for events in chunks_of(histogram_events(reader, run_id)):
        await connection.copy_records_to_table(
            "histograms", records=histogram_rows({run_id: pk}, events), columns=_HISTOGRAM_COLUMNS
        )


async def _import_metrics(connection: asyncpg.Connection, reader: ArchiveReader, run_id: str, pk: int) -> bool:
    """As the SQLite import's: calls into sealed chunks, numbered after every call of the store (a first pass
    over the archive counts the numbers they take, so the block is taken before any chunk is encoded)."""
    plan = MetricImport(reader, run_id, pk)
    counting = Renumbering(0, plan.kept_rows)
    if plan.long_form:
        for number, line in reader.json_lines("metrics_long.jsonl"):
            try:
                counting.row(line.get("row") if isinstance(line, dict) else None)
            except ValueError as exc:
                raise ArchiveError(reader.where, f"metrics_long.jsonl line {number}: {exc}") from None
    else:
        for _ in metrics_from_wide(reader, run_id):
            counting.next_row()
    used = counting.finish()
    numbering = Renumbering(await take_positions(connection, "metric_rows", used) if used else 0, plan.kept_rows)
    builder = SeriesBuilder()
    writer = PostgresChunkWriter()
    for chunk, numbers, last in plan.chunks(numbering):
        if chunk:
            groups = plan.groups(chunk, numbers)
            if not plan.exact_stats:
                await connection.execute(_UPSERT_METRIC_STATS, *_stats_columns(metric_stats(groups)))
            builder.add_groups(groups)
        writes = builder.prepare(seal_all=last, persist_open=False)  # one transaction: sealed chunks only
        await writer.write(connection, builder.series_keys(), writes)
        builder.confirm(writes)
    writer.committed()
    if plan.rollups:
        await connection.executemany(
            "INSERT INTO metric_rollups (run, name, first_row, last_row, first_step, last_step, start_ts, end_ts,"
            " count, nan_count, min, max, mean) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            plan.rollup_rows(numbering.bounds),
        )
    if plan.exact_stats:
        await connection.executemany(
            "INSERT INTO metric_stats (run, name, count, nan_count, sum, min, max, last, last_ts, last_step)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            plan.stats_rows(),
        )
    if plan.long_form:
        rows = await connection.fetch("SELECT name, count FROM metric_stats WHERE run = $1", pk)
        plan.check_stored_counts({row["name"]: row["count"] for row in rows})
    return plan.long_form


# -- backups ---------------------------------------------------------------------------------------


def _client_program(name: str) -> str:
    """A PostgreSQL client program (``pg_dump``, ``pg_restore``): from PATH, else Debian's newest."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda path: int(path.parent.parent.name)
    )
    if not candidates:
        raise BackupError(name, f"{name} is not installed (it comes with PostgreSQL's client package)")
    return str(candidates[-1])


def _run_client(program: str, arguments: list[str], what: str) -> None:
    result = subprocess.run(
        [_client_program(program), *arguments], capture_output=True, stdin=subprocess.DEVNULL, check=False
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise BackupError(what, f"{program} failed: {' '.join(message[-3:]) or f'status {result.returncode}'}")


def backup_file_name(tag: str | None = None, *, now: datetime | None = None) -> str:
    """``runwatch-backup-<UTC time>[-<tag>].pgdump`` (the tag checked as for a SQLite backup)."""
    from ..backup import backup_file_name as sqlite_name

    return sqlite_name(tag, now=now).removesuffix(".db") + BACKUP_SUFFIX


def create_backup(dsn: str, backup_dir: Path, tag: str | None = None) -> Path:
    """``pg_dump --format=custom`` of the store into ``backup_dir`` (created 0700); the file's path (0600).

    The dump is one consistent snapshot taken while writers go on. It is
    written under a temporary name and renamed when complete.

    Raises:
        BackupError: ``pg_dump`` is missing or failed.
    """
    backup_dir = Path(backup_dir)
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = backup_dir / backup_file_name(tag)
    temporary = final.with_name(f".{final.name}.partial")
    try:
        _run_client("pg_dump", ["--format=custom", "--no-owner", f"--file={temporary}", dsn], str(final))
        os.chmod(temporary, 0o600)
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return final


def restore_backup(dsn: str, backup_path: Path) -> Path | None:
    """Replace the store's tables by a backup's; first dumps the current store beside the backup.

    Stop every serve node and worker writing the store first: their cached
    row ids would not match the restored tables.

    Returns:
        The dump of the store as it was before (``None`` when it had no schema).

    Raises:
        BackupError: the backup is not a file, or ``pg_restore``/``pg_dump`` failed.
    """
    backup_path = Path(backup_path)
    if not backup_path.is_file():
        raise BackupError(str(backup_path), "no such backup file")
    _run_client("pg_restore", ["--list", str(backup_path)], str(backup_path))  # readable, and a dump at all
    kept = None
    if run_isolated(dsn, current_version) > 0:
        kept = create_backup(dsn, backup_path.parent, "pre-restore")
    _run_client(
        "pg_restore",
        ["--clean", "--if-exists", "--no-owner", "--single-transaction", f"--dbname={dsn}", str(backup_path)],
        str(backup_path),
    )
    return kept
