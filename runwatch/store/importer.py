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

import hashlib
import os
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np

from ..events import LEVELS, HistogramEvent, ImageEvent, Metric
from ..exceptions import StoreError
from ..wire import NON_FINITE_FROM_JSON
from . import connections, media
from .archive import (
    MAX_ARCHIVE_BYTES,
    MAX_MEMBERS,
    MAX_RUN_JSON_BYTES,
    ArchiveError,
    ArchiveReader,
    ProgressCallback,
    is_epoch,
    lines_if_any,
    metric_from_line,
    metrics_from_wide,
    parse_rollup,
    parse_run,
    parse_stats,
)
from .backends import is_postgres_url
from .encode import (
    ADVANCE_METRIC_ROW,
    INSERT_EVENTS,
    INSERT_STATE_HISTORY,
    UPSERT_METRIC_STATS,
    BatchEncoder,
    dumps,
    metric_stats,
)
from .export import MEDIA_EXTENSIONS
from .schema import SCHEMA_VERSION, current_version, prepare_database
from .series import group_calls

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_MEMBERS", "MAX_RUN_JSON_BYTES", "ArchiveError", "import_run"]

# Logging calls (or events) per encoded chunk; the chunks share one transaction.
_CHUNK_ROWS: Final = 20_000
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
    numbering = _Renumbering(int(base), sorted({row for r in rollups for row in (r[2], r[3])}))
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
            if len(chunk) >= _CHUNK_ROWS:
                flush()
    else:
        for metric in metrics_from_wide(reader, run_id):
            numbers.append(numbering.next_row())
            chunk.append(metric)
            if len(chunk) >= _CHUNK_ROWS:
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


class _Renumbering:
    """New row numbers for an imported run: after every row of the target store, in the old order.

    Row numbers are store-wide, so a run's rows get new ones. The kept rows
    and the row bounds of the rollups (whose own rows are gone) are numbered
    together, consecutively from ``base``, so that their order, which reads
    depend on, stays as it was.
    """

    def __init__(self, base: int, bounds: list[int]) -> None:
        self.base = base
        self.pending = bounds
        self.bounds: dict[int, int] = {}  # old bound → new
        self.index = 0
        self.kept = 0
        self.last: int | None = None

    def row(self, old: object) -> int:
        """The new number of the kept row ``old`` (rows must come in increasing order)."""
        if type(old) is not int:
            raise ValueError(f"row must be an integer, got {old!r}")
        if self.last is not None and old <= self.last:
            raise ValueError(f"row {old} does not follow row {self.last}")
        self.last = old
        pending = self.pending
        while self.index < len(pending) and pending[self.index] < old:
            self._bound()
        if self.index < len(pending) and pending[self.index] == old:
            raise ValueError(f"row {old} is also a bound of a rollup")
        return self.next_row()

    def next_row(self) -> int:
        """The next number, for a row without an old number."""
        self.kept += 1
        return self.base + self.kept - 1 + self.index

    def _bound(self) -> None:
        self.bounds[self.pending[self.index]] = self.base + self.kept + self.index
        self.index += 1

    def finish(self) -> int:
        """Number the remaining bounds; returns how many numbers were used."""
        while self.index < len(self.pending):
            self._bound()
        return self.kept + len(self.pending)


def _import_events(connection: sqlite3.Connection, reader: ArchiveReader, pk: int) -> dict[str, int]:
    """Insert the events with their original kind, type, level, data, detail and time; returns counts per type."""
    counts: dict[str, int] = {}
    for rows in _chunks(event_rows(reader, pk, counts)):
        connection.execute(INSERT_EVENTS, (dumps(rows),))
    return counts


def event_rows(reader: ArchiveReader, pk: int, counts: dict[str, int]) -> Iterator[list[Any]]:
    """The rows of events.jsonl, checked: ``[run, ts, kind, type, level, data, detail]``; counts them per type.

    Raises:
        ArchiveError: a line is not a valid event.
    """
    for number, event in reader.json_lines("events.jsonl"):
        at = f"events.jsonl line {number}"
        if not isinstance(event, dict):
            raise ArchiveError(reader.where, f"{at}: expected an object")
        event_type: Any = event.get("event_type")
        kind, level, ts = event.get("kind"), event.get("level"), event.get("timestamp")
        for key, value in (("event_type", event_type), ("kind", kind)):
            if type(value) is not str or not value:
                raise ArchiveError(reader.where, f"{at}: {key} must be a non-empty string, got {value!r}")
        if level not in LEVELS:
            raise ArchiveError(reader.where, f"{at}: level must be one of {', '.join(LEVELS)}, got {level!r}")
        if not is_epoch(ts):
            raise ArchiveError(reader.where, f"{at}: timestamp must be epoch seconds, got {ts!r}")
        detail = event.get("detail")
        if detail is not None and not isinstance(detail, dict):
            raise ArchiveError(reader.where, f"{at}: detail must be an object, got {type(detail).__name__}")
        counts[event_type] = counts.get(event_type, 0) + 1
        yield [pk, ts, kind, event_type, level, event.get("event_data"), detail]


_Row = TypeVar("_Row")


def _chunks(rows: Iterable[_Row]) -> Iterator[list[_Row]]:
    """``rows`` in lists of at most :data:`_CHUNK_ROWS`."""
    chunk: list[_Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _import_state_history(connection: sqlite3.Connection, reader: ArchiveReader, pk: int) -> None:
    for rows in _chunks(patch_rows(reader, pk)):
        connection.execute(INSERT_STATE_HISTORY, (dumps(rows),))


def patch_rows(reader: ArchiveReader, pk: int) -> Iterator[list[Any]]:
    """The rows of state_history.jsonl, checked: ``[run, ts, patch, detail]``.

    Raises:
        ArchiveError: a line is not a valid state patch.
    """
    for number, entry in reader.json_lines("state_history.jsonl"):
        at = f"state_history.jsonl line {number}"
        if not isinstance(entry, dict) or not isinstance(entry.get("patch"), dict):
            raise ArchiveError(reader.where, f"{at}: expected an object with a patch object")
        ts = entry.get("timestamp")
        if not is_epoch(ts):
            raise ArchiveError(reader.where, f"{at}: timestamp must be epoch seconds, got {ts!r}")
        detail = entry.get("detail")
        if detail is not None and not isinstance(detail, dict):
            raise ArchiveError(reader.where, f"{at}: detail must be an object, got {type(detail).__name__}")
        yield [pk, ts, entry["patch"], detail]


def _import_images(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> None:
    """Insert the run's images and the contents they name (each once), then count the run's image bytes."""
    stored = False
    rows: list[tuple[Any, ...]] = []
    for blob, row in image_rows(reader, run_id, pk):
        if blob is not None:
            media.insert_blob(connection, *blob)
            stored = True
        rows.append(row)
        if len(rows) >= _CHUNK_ROWS:
            media.insert_image_rows(connection, rows)
            rows = []
    media.insert_image_rows(connection, rows)
    if stored:
        media.count_image_bytes(connection, pk)


def image_rows(
    reader: ArchiveReader, run_id: str, pk: int
) -> Iterator[tuple[tuple[str, str, bytes] | None, tuple[Any, ...]]]:
    """The images of images.jsonl, checked: per image, its content ``(digest, mime, bytes)`` the first time a
    digest comes (else ``None``) and its row ``(run, name, step, ts, digest, width, height, caption)``.

    Raises:
        ArchiveError: a line is not a valid image, or its content is missing or does not hash to its name.
    """
    stored: set[str] = set()
    for number, line in lines_if_any(reader, "images.jsonl"):
        at = f"images.jsonl line {number}"
        if not isinstance(line, dict):
            raise ArchiveError(reader.where, f"{at}: expected an object")
        digest, mime = line.get("digest"), line.get("mime")
        if mime not in MEDIA_EXTENSIONS:
            raise ArchiveError(reader.where, f"{at}: mime must be one of {', '.join(MEDIA_EXTENSIONS)}, got {mime!r}")
        if type(digest) is not str or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ArchiveError(reader.where, f"{at}: digest must be a SHA-256 in lowercase hex, got {digest!r}")
        blob = None
        if digest not in stored:
            member = f"media/{digest}.{MEDIA_EXTENSIONS[mime]}"
            if not reader.has(member):
                raise ArchiveError(reader.where, f"{at}: no {member}")
            data = reader.read_bytes(member)
            if hashlib.sha256(data).hexdigest() != digest:
                raise ArchiveError(reader.where, f"{member} does not hash to its name")
            blob = (digest, mime, data)
            stored.add(digest)
        try:
            # The event's checks are live logging's (the bytes are checked above; a stand-in keeps them out).
            event = ImageEvent(
                run_id,
                line.get("ts"),  # type: ignore[arg-type]  # checked by the constructor
                line.get("name"),  # type: ignore[arg-type]
                line.get("step"),
                b"-",
                mime,
                line.get("width"),  # type: ignore[arg-type]
                line.get("height"),  # type: ignore[arg-type]
                digest,
                line.get("caption"),
            )
        except (TypeError, ValueError) as exc:
            raise ArchiveError(reader.where, f"{at}: {exc}") from None
        yield blob, (pk, event.name, event.step, event.timestamp, digest, event.width, event.height, event.caption)


def _import_histograms(connection: sqlite3.Connection, reader: ArchiveReader, run_id: str, pk: int) -> None:
    """Insert the run's histograms, each checked as a live one is."""
    for events in _chunks(histogram_events(reader, run_id)):
        media.write_histograms(connection, {run_id: pk}, events)


def histogram_events(reader: ArchiveReader, run_id: str) -> Iterator[HistogramEvent]:
    """The histograms of histograms.jsonl, each checked as a live one is.

    Raises:
        ArchiveError: a line is not a valid histogram.
    """
    for number, line in lines_if_any(reader, "histograms.jsonl"):
        at = f"histograms.jsonl line {number}"
        if not isinstance(line, dict):
            raise ArchiveError(reader.where, f"{at}: expected an object")
        values = {key: line.get(key) for key in _HISTOGRAM_KEYS}
        if type(values["counts"]) is not list:
            raise ArchiveError(reader.where, f"{at}: counts must be a list, got {values['counts']!r}")
        values["counts"] = tuple(values["counts"])
        for key in ("min", "max", "sum", "low", "high"):
            value = values[key]
            if type(value) is int:  # JSON writes 2.0 as 2.0, but a hand-made archive may say 2
                values[key] = float(value)
            elif type(value) is str and value in NON_FINITE_FROM_JSON:
                values[key] = NON_FINITE_FROM_JSON[value]
        timestamp = values.pop("ts")
        if type(timestamp) is int:
            timestamp = float(timestamp)
        try:
            yield HistogramEvent(run_id, timestamp, **values)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ArchiveError(reader.where, f"{at}: {exc}") from None


_HISTOGRAM_KEYS: Final = (
    "name",
    "step",
    "ts",
    "size",
    "nan_count",
    "posinf_count",
    "neginf_count",
    "min",
    "max",
    "sum",
    "low",
    "high",
    "counts",
)


def _check_counts(
    connection: sqlite3.Connection, where: str, run: dict[str, Any], pk: int, events: dict[str, int], *, metrics: bool
) -> None:
    """Compare what was stored with the counts run.json records (see :func:`check_counts`)."""
    stored = dict(connection.execute("SELECT name, count FROM metric_stats WHERE run = ?", (pk,)).fetchall())
    check_counts(where, run, events, stored, metrics=metrics)


def check_counts(
    where: str, run: dict[str, Any], events: dict[str, int], stored_metrics: dict[str, int], *, metrics: bool
) -> None:
    """Compare what was stored with the counts run.json records: a truncated archive fails here.

    Args:
        events: the events stored, per type.
        stored_metrics: the values stored, per metric (the statistics' counts).
        metrics: whether to compare the metric counts too (not after the wide fallback, which drops logged NaN).
    """
    expected_events = run["event_counts"]
    if expected_events is not None and expected_events != events:
        raise ArchiveError(where, f"events.jsonl holds {events} but run.json counts {expected_events}")
    if not metrics or run["metrics"] is None:
        return
    expected = {name: stats.get("count") for name, stats in run["metrics"].items() if isinstance(stats, dict)}
    if expected != stored_metrics:
        names = sorted(
            name for name in expected.keys() | stored_metrics.keys() if expected.get(name) != stored_metrics.get(name)
        )
        raise ArchiveError(where, f"the metrics do not match run.json's metric counts (for {names[:5]})")
