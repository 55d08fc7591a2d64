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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..dialect import SQLITE, Dialect
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


def image_record(row: Sequence[Any]) -> dict[str, Any]:
    """An image's metadata from a row of :data:`IMAGE_SELECT`."""
    return dict(zip(IMAGE_COLUMNS, row, strict=True))


# -- the statements and answers, for every backend (each in its own dialect) ---------------------------

#: How histograms are ordered: by step, a histogram without one first, then in order of storing.
_HISTOGRAM_ORDER: Final = "ORDER BY step NULLS FIRST, id"


def latest_image_statement(dialect: Dialect, params: list[Any], run: int, name: str, step: int | None) -> str:
    """The statement of the latest image of ``name`` at or before ``step`` (``None``: the latest of all)."""
    where = f"i.run = {dialect.param(params, run)} AND i.name = {dialect.param(params, name)}"
    if step is not None:
        where += f" AND i.step <= {dialect.param(params, step)}"
    return f"{IMAGE_SELECT} WHERE {where} ORDER BY i.step DESC NULLS LAST, i.id DESC LIMIT 1"


def images_statement(
    dialect: Dialect,
    params: list[Any],
    run: int,
    name: str | None,
    *,
    start_step: int | None,
    end_step: int | None,
    limit: int | None,
) -> str:
    """The statement of :func:`images_of_run` (rows of :data:`IMAGE_SELECT`)."""
    clauses = [f"i.run = {dialect.param(params, run)}"]
    for clause, value in (("i.name =", name), ("i.step >=", start_step), ("i.step <=", end_step)):
        if value is not None:
            clauses.append(f"{clause} {dialect.param(params, value)}")
    sql = f"{IMAGE_SELECT} WHERE {' AND '.join(clauses)} ORDER BY i.name, i.step NULLS FIRST, i.id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def histograms_where(
    dialect: Dialect, params: list[Any], run: int, name: str, *, start_step: int | None, end_step: int | None
) -> str:
    """The condition on the ``histograms`` rows of :func:`run_histograms`."""
    clauses = [f"run = {dialect.param(params, run)} AND name = {dialect.param(params, name)}"]
    for clause, value in (("step >=", start_step), ("step <=", end_step)):
        if value is not None:
            clauses.append(f"{clause} {dialect.param(params, value)}")
    return " AND ".join(clauses)


def thinned_histograms_where(where: str, total: int, max_count: int) -> str:
    """``where`` narrowed to at most ``max_count`` of its ``total`` rows, evenly spaced over their order,
    the first and the last included (all of them when they are not more)."""
    if total <= max_count:
        return where
    # Every stride-th row in order, and the last; a stride that gives at most max_count of them.
    last = total - 1
    keep = f"n = {last}"
    if max_count > 1:
        keep += f" OR n % {-(-last // (max_count - 1))} = 0"
    return (
        f"id IN (SELECT id FROM (SELECT id, row_number() OVER ({_HISTOGRAM_ORDER}) - 1 AS n"
        f" FROM histograms WHERE {where}) AS numbered WHERE {keep})"
    )


def histograms_statement(where: str) -> str:
    """The statement of the histogram rows (:data:`HISTOGRAM_COLUMNS`) that ``where`` selects, in order."""
    return f"SELECT {', '.join(HISTOGRAM_COLUMNS)} FROM histograms WHERE {where} {_HISTOGRAM_ORDER}"


def histogram_records(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """The answer of :func:`run_histograms` from the rows of :func:`histograms_statement`."""
    out = []
    for row in rows:
        record = dict(zip(HISTOGRAM_COLUMNS, row, strict=True))
        record["counts"] = orjson.loads(record["counts"])
        for key in ("min", "max", "sum", "low", "high"):
            if record[key] is not None:
                record[key] = float(record[key])
        out.append(record)
    return out


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
    params: list[Any] = []
    row = conn.execute(latest_image_statement(SQLITE, params, run, name, step), params).fetchone()
    return None if row is None else image_record(row)


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
    params: list[Any] = []
    sql = images_statement(SQLITE, params, run, name, start_step=start_step, end_step=end_step, limit=limit)
    return [image_record(row) for row in conn.execute(sql, params)]


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
    params: list[Any] = []
    where = histograms_where(SQLITE, params, run, name, start_step=start_step, end_step=end_step)
    with read_snapshot(conn):
        if max_count is not None:
            (total,) = conn.execute(f"SELECT count(*) FROM histograms WHERE {where}", params).fetchone()
            where = thinned_histograms_where(where, int(total), max_count)
        rows = conn.execute(histograms_statement(where), params).fetchall()
    return histogram_records(rows)


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
