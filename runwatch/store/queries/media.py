"""Images and histograms: a run's image names and metadata, image contents by digest, histograms.

Plain functions of a ``sqlite3.Connection`` (see :mod:`runwatch.store.queries`);
:mod:`runwatch.store.media` writes and removes these rows. Stores older than
the media tables answer with nothing (no names, no images).

Ordering: "the latest" image of a name is the one with the highest step, and
of those the last stored.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from .common import read_snapshot, run_pk

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HISTOGRAM_COLUMNS",
    "HISTOGRAM_FIELDS",
    "IMAGE_SELECT",
    "IMAGE_COLUMNS",
    "has_media_tables",
    "histogram_frame",
    "histogram_names",
    "image_at",
    "image_blob",
    "image_names",
    "images_of_run",
    "media_usage",
    "run_histograms",
]

#: The columns of an image's metadata, as reads return them.
IMAGE_COLUMNS: Final = ("id", "name", "step", "ts", "digest", "mime", "width", "height", "caption", "size")

#: The columns of an image row (the blob's type and size joined), for every backend's reads.
IMAGE_SELECT: Final = (
    "SELECT i.id, i.name, i.step, i.ts, i.digest, b.mime, i.width, i.height, i.caption, b.size"
    " FROM images AS i JOIN media_blobs AS b ON b.digest = i.digest"
)

#: The fields of a stored histogram, in the order every backend writes, selects and archives them.
HISTOGRAM_FIELDS: Final = (
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

#: The columns of a histogram row, in the order every backend selects them.
HISTOGRAM_COLUMNS: Final = ("id", *HISTOGRAM_FIELDS)


def has_media_tables(conn: sqlite3.Connection) -> bool:
    """Whether the store has the media tables (schema version 7 or later)."""
    found = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('images', 'histograms')")
    return bool(found.fetchone()[0] == 2)


def _image(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(IMAGE_COLUMNS, row, strict=True))


def image_names(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's image names: ``name``, ``count``, ``first_step``, ``last_step`` and ``latest`` (its metadata).

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return []
    names = conn.execute(
        "SELECT name, count(*), min(step), max(step) FROM images WHERE run = ? GROUP BY name ORDER BY name", (run,)
    ).fetchall()
    out = []
    for name, count, first_step, last_step in names:
        latest = _latest_image(conn, run, name, None)
        out.append({"name": name, "count": count, "first_step": first_step, "last_step": last_step, "latest": latest})
    return out


def _latest_image(conn: sqlite3.Connection, run: int, name: str, step: int | None) -> dict[str, Any] | None:
    where = "i.run = ? AND i.name = ?" + ("" if step is None else " AND i.step <= ?")
    params: tuple[Any, ...] = (run, name) if step is None else (run, name, step)
    row = conn.execute(f"{IMAGE_SELECT} WHERE {where} ORDER BY i.step DESC, i.id DESC LIMIT 1", params).fetchone()
    return None if row is None else _image(row)


def images_of_run(
    conn: sqlite3.Connection,
    run_id: str,
    name: str | None = None,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The metadata of a run's images (no bytes), by name, step and order of storing.

    Args:
        name: only this name; ``None`` for every name.
        start_step, end_step: only steps in this closed range.
        limit: the most images returned (the first ones in that order).

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return []
    clauses, params = ["i.run = ?"], [run]
    for clause, value in (("i.name = ?", name), ("i.step >= ?", start_step), ("i.step <= ?", end_step)):
        if value is not None:
            clauses.append(clause)
            params.append(value)  # type: ignore[arg-type]  # names and steps alike are bound
    sql = f"{IMAGE_SELECT} WHERE {' AND '.join(clauses)} ORDER BY i.name, i.step, i.id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [_image(row) for row in conn.execute(sql, params)]


def image_at(conn: sqlite3.Connection, run_id: str, name: str, step: int | None = None) -> dict[str, Any] | None:
    """The metadata of the latest image of ``name`` at or before ``step`` (``None``: the latest of all).

    Returns:
        ``None`` when there is none.

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return None
    return _latest_image(conn, run, name, step)


def image_blob(conn: sqlite3.Connection, digest: str) -> tuple[str, bytes] | None:
    """The media type and bytes of the content named ``digest``, or ``None``."""
    if not has_media_tables(conn):
        return None
    row = conn.execute("SELECT mime, data FROM media_blobs WHERE digest = ?", (digest,)).fetchone()
    return None if row is None else (str(row[0]), bytes(row[1]))


def histogram_names(conn: sqlite3.Connection, run_id: str) -> list[dict[str, Any]]:
    """A run's histogram names: ``name``, ``count``, ``first_step`` and ``last_step``.

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return []
    rows = conn.execute(
        "SELECT name, count(*), min(step), max(step) FROM histograms WHERE run = ? GROUP BY name ORDER BY name", (run,)
    )
    return [{"name": n, "count": c, "first_step": first, "last_step": last} for n, c, first, last in rows]


def run_histograms(
    conn: sqlite3.Connection,
    run_id: str,
    name: str,
    *,
    start_step: int | None = None,
    end_step: int | None = None,
    max_count: int | None = None,
) -> list[dict[str, Any]]:
    """A run's histograms of ``name`` in order of step (then of storing), with ``counts`` as a list.

    Args:
        start_step, end_step: only steps in this closed range.
        max_count: at most this many, evenly spaced over the order, the first
            and the last included (``None``: all of them).

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return []
    clauses, params = ["run = ? AND name = ?"], [run, name]
    for clause, value in (("step >= ?", start_step), ("step <= ?", end_step)):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = " AND ".join(clauses)
    columns = ", ".join(HISTOGRAM_COLUMNS)
    with read_snapshot(conn):
        if max_count is not None:
            (total,) = conn.execute(f"SELECT count(*) FROM histograms WHERE {where}", params).fetchone()
            if total > max_count:
                # Every stride-th row in order, and the last; a stride that gives at most max_count of them.
                last = int(total) - 1
                keep = f"n = {last}"
                if max_count > 1:
                    keep += f" OR n % {-(-last // (max_count - 1))} = 0"
                where = (
                    f"id IN (SELECT id FROM (SELECT id, row_number() OVER (ORDER BY step, id) - 1 AS n"
                    f" FROM histograms WHERE {where}) WHERE {keep})"
                )
        rows = conn.execute(f"SELECT {columns} FROM histograms WHERE {where} ORDER BY step, id", params).fetchall()
    out = []
    for row in rows:
        record = dict(zip(HISTOGRAM_COLUMNS, row, strict=True))
        record["counts"] = orjson.loads(record["counts"])
        for key in ("min", "max", "sum", "low", "high"):
            if record[key] is not None:
                record[key] = float(record[key])
        out.append(record)
    return out


def histogram_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """``get_run_histograms``' DataFrame from the rows :func:`run_histograms` gives (``ts`` in epoch
    seconds; a remote reader rebuilds the same rows from the REST API, so both frames come from here)."""
    import numpy as np
    import pandas as pd

    columns = ["step", "timestamp", "size", "nan_count", "posinf_count", "neginf_count", "min", "max", "sum"]
    frame = pd.DataFrame(
        {
            "step": pd.array([row["step"] for row in rows], dtype="Int64"),
            "timestamp": pd.to_datetime(
                np.array([row["ts"] for row in rows], dtype="float64"), unit="s", utc=True
            ).astype("datetime64[ns, UTC]"),
            **{
                key: np.array([row[key] for row in rows], dtype="int64")
                for key in ("size", "nan_count", "posinf_count", "neginf_count")
            },
            **{
                key: np.array([np.nan if row[key] is None else row[key] for row in rows], dtype="float64")
                for key in ("min", "max", "sum")
            },
        },
        columns=columns,
    )
    finite = frame["size"] - frame["nan_count"] - frame["posinf_count"] - frame["neginf_count"]
    frame["mean"] = (frame["sum"] / finite.where(finite > 0)).astype("float64")
    frame["bin_edges"] = pd.Series(
        [_bin_edges(row["low"], row["high"], len(row["counts"])) if row["counts"] else np.empty(0) for row in rows],
        dtype=object,
    )
    frame["counts"] = pd.Series([np.array(row["counts"], dtype="int64") for row in rows], dtype=object)
    return frame


def _bin_edges(low: float, high: float, bins: int) -> Any:
    """The ``bins + 1`` equal bin edges from ``low`` to ``high``, also for a range wider than the largest float."""
    import numpy as np

    if math.isfinite(high - low):
        return np.linspace(low, high, bins + 1)
    return np.linspace(low / 2, high / 2, bins + 1) * 2  # halving and doubling are exact


def media_usage(conn: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """A run's ``image_bytes`` (against its budget) and ``images_over_budget``.

    Raises:
        UnknownRunError: no run has this id.
    """
    run = run_pk(conn, run_id)
    if not has_media_tables(conn):
        return {"image_bytes": 0, "images_over_budget": 0}
    row = conn.execute("SELECT image_bytes, images_over_budget FROM media_usage WHERE run = ?", (run,)).fetchone()
    return {"image_bytes": row[0] if row else 0, "images_over_budget": row[1] if row else 0}
