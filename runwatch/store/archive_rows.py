"""The rows an export archive's files become, checked, for any backend's importer.

The SQLite importer (:mod:`runwatch.store.importer`) and the PostgreSQL one
(:mod:`runwatch.store.postgres.transfer`) write the same rows: the run's row
and annotations, events, state patches, images and histograms read from the
archive and checked as live logging checks them, the run's calls renumbered
after the target store's and grouped in chunks (:class:`MetricImport`, the
one plan of the metric import both backends' I/O follow), and the counts
compared with run.json's.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np

from ..events import LEVELS, HistogramEvent, ImageEvent, Metric
from ..wire import NON_FINITE_FROM_JSON
from .archive import (
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
from .call_groups import CallGroup, group_calls
from .encode import BatchEncoder, dumps
from .export import MEDIA_EXTENSIONS
from .queries.media import HISTOGRAM_FIELDS

__all__ = [
    "CHUNK_ROWS",
    "RUN_COLUMNS",
    "MetricImport",
    "Renumbering",
    "annotation_row",
    "open_archive",
    "run_row",
    "check_counts",
    "chunks_of",
    "event_rows",
    "histogram_events",
    "image_rows",
    "patch_rows",
]

#: Logging calls (or events) per encoded chunk; the chunks share one transaction.
CHUNK_ROWS: Final = 20_000


class Renumbering:
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


@contextmanager
def open_archive(zip_path: Path, progress: ProgressCallback | None) -> Iterator[tuple[ArchiveReader, dict[str, Any]]]:
    """The reader of an export archive and its checked run.json, while the archive is open.

    Raises:
        FileNotFoundError: ``zip_path`` does not exist.
        ArchiveError: it is not a zip archive, or its run.json is not valid.
    """
    if not zip_path.is_file():
        raise FileNotFoundError(f"no such file: {str(zip_path)!r}")
    where = str(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(where, f"not a zip archive ({exc})") from None
    with archive:
        reader = ArchiveReader(archive, where, progress)
        yield reader, parse_run(reader.read_run_json(), where)


def run_row(run: dict[str, Any], run_id: str) -> tuple[Any, ...]:
    """The values of the imported run's row, in the column order :data:`RUN_COLUMNS` names (``owner`` is ``NULL``)."""

    def text(value: Any) -> str | None:
        return None if value is None else dumps(value).decode()

    return (
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
    )


#: The columns of :func:`run_row`.
RUN_COLUMNS: Final = (
    "run_id, kind, status, start_time, end_time, updated_at, last_heartbeat, config, metadata, final_reward,"
    " total_steps, total_episodes, state"
)


def annotation_row(run: dict[str, Any], pk: int) -> tuple[Any, ...] | None:
    """The imported run's ``run_annotations`` row ``(run, tags, note, updated_at)``; ``None`` without tags or note."""
    if not (run["tags"] or run["note"]):
        return None
    return (pk, dumps(run["tags"]).decode(), run["note"], run["updated_at"])


class MetricImport:
    """What an archive's metrics become, for every backend's import (the backend writes it).

    Reads and checks the rollups and statistics files, gives the logging
    calls in chunks with their new numbers, their call groups, and the rows
    of the rollups and statistics, and checks the statistics' counts against
    the calls and rollups.

    Raises:
        ArchiveError: the metric files are not valid or do not add up.
    """

    def __init__(self, reader: ArchiveReader, run_id: str, pk: int) -> None:
        self.reader = reader
        self.run_id = run_id
        self.pk = pk
        self.rollups = [parse_rollup(line, reader.where, n) for n, line in lines_if_any(reader, "metric_rollups.jsonl")]
        self.stats = [parse_stats(line, reader.where, n) for n, line in lines_if_any(reader, "metric_stats.jsonl")]
        # Without metric_stats.jsonl (older archives) the statistics are computed from the calls, as the sink does.
        self.exact_stats = reader.has("metric_stats.jsonl")
        #: Whether the calls are exactly the logged ones (``False`` for the wide fallback).
        self.long_form = reader.has("metrics_long.jsonl")
        if self.rollups and not self.long_form:
            raise ArchiveError(reader.where, "metric_rollups.jsonl without metrics_long.jsonl")
        #: The old row numbers that bound rollups, in order (see :class:`Renumbering`).
        self.kept_rows = sorted({row for r in self.rollups for row in (r[2], r[3])})
        self.counts: dict[str, int] = {}
        self._encoder = BatchEncoder()  # checks metric names as the sink does

    def chunks(self, numbering: Renumbering) -> Iterator[tuple[list[Metric], list[int], bool]]:
        """The calls in chunks of up to :data:`CHUNK_ROWS`, with their new numbers and whether it is the last
        chunk (which may be empty); counts each metric's values of the long form."""
        reader = self.reader
        chunk: list[Metric] = []
        numbers: list[int] = []
        if self.long_form:
            for number, line in reader.json_lines("metrics_long.jsonl"):
                metric = metric_from_line(line, self.run_id, reader.where, number)
                try:
                    numbers.append(numbering.row(line.get("row")))
                except ValueError as exc:
                    raise ArchiveError(reader.where, f"metrics_long.jsonl line {number}: {exc}") from None
                for name in metric.values:
                    self.counts[name] = self.counts.get(name, 0) + 1
                chunk.append(metric)
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk, numbers, False
                    chunk, numbers = [], []
        else:
            for metric in metrics_from_wide(reader, self.run_id):
                numbers.append(numbering.next_row())
                chunk.append(metric)
                if len(chunk) >= CHUNK_ROWS:
                    yield chunk, numbers, False
                    chunk, numbers = [], []
        yield chunk, numbers, True

    def groups(self, chunk: list[Metric], numbers: list[int]) -> list[CallGroup]:
        """A chunk's call groups, numbered with the new numbers (names checked as the sink checks them)."""
        run_pks = {self.run_id: self.pk}
        self._encoder.encode(chunk, run_pks, {})
        groups = group_calls(chunk, run_pks, 0)  # seq = position in this chunk...
        seqs = np.array(numbers, dtype=np.int64)
        return [replace(group, seq=seqs[group.seq]) for group in groups]  # ...then the new numbers

    def rollup_rows(self, bounds: dict[int, int]) -> list[tuple[Any, ...]]:
        """The ``metric_rollups`` rows, their row bounds renumbered (``bounds``: :attr:`Renumbering.bounds`)."""
        return [(self.pk, r[1], bounds[r[2]], bounds[r[3]], *r[4:]) for r in self.rollups]

    def stats_rows(self) -> list[tuple[Any, ...]]:
        """The ``metric_stats`` rows of metric_stats.jsonl (when :attr:`exact_stats`)."""
        return [(self.pk, *row) for row in self.stats]

    def check_stored_counts(self, stored: dict[str, int]) -> None:
        """Of the long form: every value ever logged is in a kept call or in a rollup; the statistics stored
        (``stored``: count by name) count them all."""
        counts = self.counts
        for rollup in self.rollups:
            counts[rollup[1]] = counts.get(rollup[1], 0) + rollup[8]
        if stored != counts:
            names = sorted(name for name in stored.keys() | counts.keys() if stored.get(name) != counts.get(name))
            raise ArchiveError(
                self.reader.where,
                f"the metric rows and rollups do not add up to the statistics' counts (for {names[:5]})",
            )


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


def chunks_of(rows: Iterable[_Row]) -> Iterator[list[_Row]]:
    """``rows`` in lists of at most :data:`CHUNK_ROWS`."""
    chunk: list[_Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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


def histogram_events(reader: ArchiveReader, run_id: str) -> Iterator[HistogramEvent]:
    """The histograms of histograms.jsonl, each checked as a live one is.

    Raises:
        ArchiveError: a line is not a valid histogram.
    """
    for number, line in lines_if_any(reader, "histograms.jsonl"):
        at = f"histograms.jsonl line {number}"
        if not isinstance(line, dict):
            raise ArchiveError(reader.where, f"{at}: expected an object")
        values = {key: line.get(key) for key in HISTOGRAM_FIELDS}
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
