"""Reading an export archive (see :mod:`runwatch.store.export`): checked members, run.json, the data files.

Nothing here writes: :mod:`runwatch.store.importer` stores what this reads.
Every problem is an :class:`ArchiveError` naming the archive, the member and the line.
"""

from __future__ import annotations

import math
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

import orjson

from ..events import MAX_TIMESTAMP, Metric
from ..exceptions import RunwatchError
from ..wire import NON_FINITE_FROM_JSON
from ..wire.annotations import check_note, check_tags
from .export import EXPORT_FORMAT
from .queries import RUN_STATUSES

__all__ = [
    "MAX_ARCHIVE_BYTES",
    "MAX_MEMBERS",
    "MAX_RUN_JSON_BYTES",
    "ArchiveError",
    "ArchiveReader",
    "ProgressCallback",
    "count",
    "is_epoch",
    "lines_if_any",
    "metric_from_line",
    "metrics_from_wide",
    "name_of",
    "optional_int",
    "parse_rollup",
    "parse_run",
    "parse_stats",
    "wire_number",
]

#: Largest total uncompressed size of the members read.
MAX_ARCHIVE_BYTES: Final = 8 * 1024**3
#: Largest ``run.json`` (it is read into memory at once).
MAX_RUN_JSON_BYTES: Final = 64 * 1024**2
#: Most members in an archive.
MAX_MEMBERS: Final = 100_000

#: ``progress(done, total)``: bytes of the archive's data files processed so far, of the total.
ProgressCallback = Callable[[int, int], None]


class ArchiveError(RunwatchError, ValueError):
    """An export archive is not a zip, not runwatch's, too large, or inconsistent.

    Attributes:
        path: the archive.
        reason: what is wrong with it (naming the member and line when known).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _check_member_name(name: str, where: str) -> None:
    """Refuse names that would leave a directory if extracted, or that no export writes."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or (len(name) > 1 and name[1] == ":")
        or ".." in parts
        or posixpath.normpath(name).startswith("..")
    ):
        raise ArchiveError(where, f"unsafe member name {name!r}")


class ArchiveReader:
    """Checked access to an export archive's members."""

    def __init__(self, archive: zipfile.ZipFile, where: str, progress: ProgressCallback | None) -> None:
        self.archive = archive
        self.where = where
        self.progress = progress
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(where, f"{len(infos)} members, more than {MAX_MEMBERS}")
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            _check_member_name(info.filename, where)
            if info.flag_bits & 0x1:
                raise ArchiveError(where, f"member {info.filename!r} is encrypted")
            self.members[info.filename] = info
        if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
            raise ArchiveError(where, f"more than {MAX_ARCHIVE_BYTES} bytes uncompressed")
        metrics = next(
            (name for name in ("metrics_long.jsonl", "metrics.parquet", "metrics.csv") if name in self.members), None
        )
        read = [name for name in (metrics, "events.jsonl", "state_history.jsonl") if name is not None]
        # What progress counts: the data files that will be read (run.json is small and read first).
        self.total = sum(self.size(name) for name in read)
        self.done = 0

    def size(self, name: str) -> int:
        info = self.members.get(name)
        return 0 if info is None else info.file_size

    def has(self, name: str) -> bool:
        return name in self.members

    def read_run_json(self) -> Any:
        if "run.json" not in self.members:
            raise ArchiveError(self.where, "no run.json: not a runwatch export")
        if self.size("run.json") > MAX_RUN_JSON_BYTES:
            raise ArchiveError(self.where, f"run.json is larger than {MAX_RUN_JSON_BYTES} bytes")
        try:
            return orjson.loads(self.archive.read("run.json"))
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(self.where, f"run.json is not valid JSON ({exc})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(self.where, f"run.json cannot be read ({exc})") from None

    def read_bytes(self, name: str) -> bytes:
        try:
            content = self.archive.read(name)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(self.where, f"{name} cannot be read ({exc})") from None
        self._advance(len(content))
        return content

    def json_lines(self, name: str) -> Iterator[tuple[int, Any]]:
        """``(line number, parsed object)`` for each non-empty line of a JSONL member."""
        if name not in self.members:
            raise ArchiveError(self.where, f"no {name}")
        try:
            with self.archive.open(name) as stream:
                yield from self._parse_lines(name, stream)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(self.where, f"{name} cannot be read ({exc})") from None

    def _parse_lines(self, name: str, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
        pending = 0
        for number, line in enumerate(stream, start=1):
            pending += len(line)
            if pending >= 1024 * 1024:
                self._advance(pending)
                pending = 0
            if not line.strip():
                continue
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ArchiveError(self.where, f"{name} line {number}: not valid JSON ({exc})") from None
        self._advance(pending)

    def _advance(self, count: int) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)


def is_epoch(value: object) -> bool:
    """Whether ``value`` is a JSON number of seconds since the epoch that the store accepts."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP


def parse_run(document: Any, where: str) -> dict[str, Any]:
    """The runs row of ``run.json``, checked field by field."""
    if not isinstance(document, dict):
        raise ArchiveError(where, "run.json must hold an object")
    if document.get("format") != EXPORT_FORMAT:
        raise ArchiveError(where, f"run.json format is {document.get('format')!r}, expected {EXPORT_FORMAT!r}")

    def field(name: str, check: Callable[[Any], bool], expected: str, *, optional: bool = False) -> Any:
        value = document.get(name)
        if value is None and optional:
            return None
        if not check(value):
            raise ArchiveError(where, f"run.json {name}: expected {expected}, got {value!r}")
        return value

    def is_text(value: Any) -> bool:
        return type(value) is str and bool(value)

    def is_count(value: Any) -> bool:
        return type(value) is int and value >= 0

    run = {
        "run_id": field("run_id", is_text, "a non-empty string"),
        "kind": field("kind", is_text, "a non-empty string"),
        "status": field("status", lambda v: v in RUN_STATUSES, f"one of {', '.join(RUN_STATUSES)}"),
        "start_time": field("start_time", is_epoch, "epoch seconds"),
        "end_time": field("end_time", is_epoch, "epoch seconds or null", optional=True),
        "updated_at": field("updated_at", is_epoch, "epoch seconds"),
        "last_heartbeat": field("last_heartbeat", is_epoch, "epoch seconds or null", optional=True),
        "config": field("config", lambda v: isinstance(v, dict), "an object", optional=True),
        "metadata": field("metadata", lambda v: isinstance(v, dict), "an object or null", optional=True),
        "final_reward": field(
            "final_reward",
            lambda v: type(v) in (int, float) or v in NON_FINITE_FROM_JSON,
            "a number or null",
            optional=True,
        ),
        "total_steps": field("total_steps", is_count, "a count"),
        "total_episodes": field("total_episodes", is_count, "a count"),
        "state": field("state", lambda v: isinstance(v, dict), "an object", optional=True),
        "event_counts": field("event_counts", lambda v: isinstance(v, dict), "an object", optional=True),
        "metrics": field("metrics", lambda v: isinstance(v, dict), "an object", optional=True),
    }
    if type(run["final_reward"]) is str:
        run["final_reward"] = NON_FINITE_FROM_JSON[run["final_reward"]]
    # Tags and note: archives written before runs had them carry neither.
    try:
        run["tags"] = check_tags(document.get("tags") or [])
        run["note"] = check_note(document.get("note") or "")
    except (TypeError, ValueError) as exc:
        raise ArchiveError(where, f"run.json tags/note: {exc}") from None
    return run


def lines_if_any(reader: ArchiveReader, name: str) -> Iterator[tuple[int, Any]]:
    return reader.json_lines(name) if reader.has(name) else iter(())


def wire_number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if type(value) is str and value in NON_FINITE_FROM_JSON:
        return NON_FINITE_FROM_JSON[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f'{what} must be a number, null, "Infinity" or "-Infinity", got {value!r}')


def optional_int(value: Any, what: str) -> int | None:
    if value is None or type(value) is int:
        return value
    raise ValueError(f"{what} must be an integer or null, got {value!r}")


def count(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a count, got {value!r}")
    return value


def name_of(value: Any) -> str:
    if type(value) is not str or not value:
        raise ValueError(f"name must be a non-empty string, got {value!r}")
    return value


def parse_stats(line: Any, where: str, number: int) -> tuple[Any, ...]:
    """``(name, count, nan_count, sum, min, max, last, last_ts, last_step)`` of a metric_stats.jsonl line."""
    try:
        if not isinstance(line, dict):
            raise ValueError("expected an object")
        if not is_epoch(line.get("last_ts")):
            raise ValueError(f"last_ts must be epoch seconds, got {line.get('last_ts')!r}")
        return (
            name_of(line.get("name")),
            count(line.get("count"), "count"),
            count(line.get("nan_count"), "nan_count"),
            *(wire_number(line.get(key), key) for key in ("sum", "min", "max", "last")),
            line["last_ts"],
            optional_int(line.get("last_step"), "last_step"),
        )
    except ValueError as exc:
        raise ArchiveError(where, f"metric_stats.jsonl line {number}: {exc}") from None


def parse_rollup(line: Any, where: str, number: int) -> tuple[Any, ...]:
    """``(None, name, first_row, last_row, first_step, last_step, start_ts, end_ts, count, nan_count, min, max,
    mean)`` of a metric_rollups.jsonl line (the first item is a placeholder for the run)."""
    try:
        if not isinstance(line, dict):
            raise ValueError("expected an object")
        first, last = line.get("first_row"), line.get("last_row")
        if type(first) is not int or type(last) is not int or first > last:
            raise ValueError(f"first_row and last_row must be integers in order, got {first!r} and {last!r}")
        for key in ("start_ts", "end_ts"):
            if not is_epoch(line.get(key)):
                raise ValueError(f"{key} must be epoch seconds, got {line.get(key)!r}")
        return (
            None,
            name_of(line.get("name")),
            first,
            last,
            optional_int(line.get("first_step"), "first_step"),
            optional_int(line.get("last_step"), "last_step"),
            line["start_ts"],
            line["end_ts"],
            count(line.get("count"), "count"),
            count(line.get("nan_count"), "nan_count"),
            *(wire_number(line.get(key), key) for key in ("min", "max", "mean")),
        )
    except ValueError as exc:
        raise ArchiveError(where, f"metric_rollups.jsonl line {number}: {exc}") from None


def metric_from_line(line: Any, run_id: str, where: str, number: int) -> Metric:
    at = f"metrics_long.jsonl line {number}"
    if not isinstance(line, dict) or not isinstance(line.get("values"), dict) or not line["values"]:
        raise ArchiveError(where, f"{at}: expected an object with non-empty values")
    values = {
        name: (math.nan if value is None else NON_FINITE_FROM_JSON.get(value, value) if type(value) is str else value)
        for name, value in line["values"].items()
    }
    ts: Any = line.get("ts")
    try:
        return Metric(run_id, float(ts) if type(ts) is int else ts, values, line.get("step"), line.get("tags"))
    except (TypeError, ValueError) as exc:
        raise ArchiveError(where, f"{at}: {exc}") from None


def metrics_from_wide(reader: ArchiveReader, run_id: str) -> Iterator[Metric]:
    """Logging calls rebuilt from the wide frame (see the module docstring for its NaN rule)."""
    import io

    import numpy as np
    import pandas as pd

    if reader.has("metrics.parquet"):
        name = "metrics.parquet"
        try:
            frame = pd.read_parquet(io.BytesIO(reader.read_bytes(name)))
        except ImportError as exc:
            raise ArchiveError(reader.where, f"reading {name} needs pyarrow ({exc})") from None
        except Exception as exc:  # pyarrow raises its own types for a damaged file
            raise ArchiveError(reader.where, f"{name} cannot be read ({exc})") from None
    elif reader.has("metrics.csv"):
        name = "metrics.csv"
        try:
            frame = pd.read_csv(io.BytesIO(reader.read_bytes(name)))
        except (ValueError, pd.errors.ParserError) as exc:
            raise ArchiveError(reader.where, f"{name} cannot be read ({exc})") from None
    else:
        return
    if len(frame) == 0:
        return
    if "timestamp" not in frame or "step" not in frame:
        raise ArchiveError(reader.where, f"{name} has no timestamp or step column")
    try:
        stamps = pd.to_datetime(frame["timestamp"], utc=True)
        seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        steps = pd.to_numeric(frame["step"])
    except (ValueError, TypeError) as exc:
        raise ArchiveError(reader.where, f"{name}: bad timestamp or step ({exc})") from None
    columns = [column for column in frame.columns if column not in ("timestamp", "step")]
    # export renames a metric called "timestamp"/"step" to "metric:timestamp"/"metric:step"
    names = [
        column.removeprefix("metric:") if column in ("metric:timestamp", "metric:step") else column
        for column in columns
    ]
    values = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    for index in range(len(frame)):
        row = values[index]
        logged = {name: float(value) for name, value in zip(names, row, strict=True) if value == value}
        if not logged:
            logged = dict.fromkeys(names, math.nan)
        step = steps.iloc[index]
        try:
            yield Metric(run_id, float(seconds.iloc[index]), logged, None if pd.isna(step) else int(step))
        except (TypeError, ValueError) as exc:
            raise ArchiveError(reader.where, f"{name} row {index + 1}: {exc}") from None
