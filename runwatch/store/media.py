"""Images and histograms in the store: writes and removal (schema version 7).

Plain functions of a ``sqlite3.Connection`` in the caller's write transaction;
:mod:`runwatch.store.queries.media` reads these rows.

Images are content-addressed: ``media_blobs`` keeps each content once, named
by the SHA-256 of its bytes, and ``images`` has a row per logged image that
names its blob. A run's images count against a byte budget
(``max_image_bytes_per_run``): a content counts once per run, the first time
the run stores it, and an image that would pass the budget is refused and
counted in ``media_usage.images_over_budget`` (never raised). Removing a
run's images removes the blobs no other image names.

Histograms are one row each: ``len(counts)`` equal bins from ``low`` to
``high``, the counts as a JSON array, and the summary of the values
(``size``, the NaN and ±Inf counts, ``min``, ``max``, ``sum``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple

import orjson

from ..events import HistogramEvent, ImageEvent

__all__ = [
    "MEDIA_TABLES",
    "MediaTotals",
    "MediaWriteOutcome",
    "Statement",
    "WritePlan",
    "histogram_plan",
    "histogram_rows",
    "image_plan",
    "run_plan",
    "count_image_bytes",
    "delete_image_chunk",
    "insert_blob",
    "insert_histogram_rows",
    "insert_image_rows",
    "remove_orphan_blobs",
    "write_histograms",
    "write_images",
]

logger = logging.getLogger("runwatch.store")

#: The tables this module owns, in the order a run's rows are removed (usage last).
MEDIA_TABLES: Final = ("images", "histograms", "media_usage")


# -- writes ----------------------------------------------------------------------------


@dataclass
class MediaWriteOutcome:
    """What one write did.

    Attributes:
        images_stored: image rows written.
        images_over_budget: images refused because their run's budget was spent.
        new_blob_bytes: bytes of contents new to the store.
        histograms_stored: histogram rows written.
        over_budget_runs: the runs (ids) that refused an image in this write.
    """

    images_stored: int = 0
    images_over_budget: int = 0
    new_blob_bytes: int = 0
    histograms_stored: int = 0
    over_budget_runs: set[str] | None = None


class MediaTotals:
    """A writer's committed image and histogram counters, for every backend's writer.

    Args:
        max_image_bytes_per_run: the runs' image budget (named in the warning of the first refusal).
    """

    def __init__(self, max_image_bytes_per_run: int | None) -> None:
        self._totals = MediaWriteOutcome()
        self._max_image_bytes_per_run = max_image_bytes_per_run

    def add(self, outcome: MediaWriteOutcome) -> None:
        """Count a committed write; the first image refused over budget is logged (once per writer)."""
        totals = self._totals
        first_refusal = totals.images_over_budget == 0 and outcome.images_over_budget > 0
        totals.images_stored += outcome.images_stored
        totals.images_over_budget += outcome.images_over_budget
        totals.new_blob_bytes += outcome.new_blob_bytes
        totals.histograms_stored += outcome.histograms_stored
        if first_refusal:
            logger.warning(
                "runwatch: run(s) %s reached max_image_bytes_per_run (%s bytes); their new images are dropped"
                " and counted (images_over_budget)",
                sorted(outcome.over_budget_runs or ()),
                self._max_image_bytes_per_run,
            )

    def counters(self) -> dict[str, int]:
        """The counters a writer reports (see :meth:`~runwatch.store.base.StoreWriter.counters`)."""
        totals = self._totals
        return {
            "images_stored": totals.images_stored,
            "images_over_budget": totals.images_over_budget,
            "image_blob_bytes": totals.new_blob_bytes,
            "histograms_stored": totals.histograms_stored,
        }


class Statement(NamedTuple):
    """One SQL statement of a write plan, and what the plan wants back from it.

    Attributes:
        sql: the statement.
        params: its parameters (a sequence of them with ``many``).
        returns: ``row`` (the first row, or ``None``), ``rowcount`` or ``nothing``.
        many: run it once per parameter set (``executemany``).
    """

    sql: str
    params: Any
    returns: Literal["row", "rowcount", "nothing"] = "nothing"
    many: bool = False


#: A write as a generator of statements that is sent each one's result: one logic for any connection
#: (:func:`run_plan` runs it on ``sqlite3``; the SQLite sink runs it on its asynchronous connection).
WritePlan = Generator[Statement, Any, None]


def run_plan(conn: sqlite3.Connection, plan: WritePlan) -> None:
    """Run a write plan on a ``sqlite3`` connection (inside the caller's transaction)."""
    result: Any = None
    while True:
        try:
            statement = plan.send(result)
        except StopIteration:
            return
        if statement.many:
            cursor = conn.executemany(statement.sql, statement.params)
        else:
            cursor = conn.execute(statement.sql, statement.params)
        if statement.returns == "row":
            result = cursor.fetchone()
        elif statement.returns == "rowcount":
            result = cursor.rowcount
        else:
            result = None


def write_images(
    conn: sqlite3.Connection,
    run_pks: Mapping[str, int],
    events: Iterable[ImageEvent],
    *,
    max_image_bytes_per_run: int | None,
    outcome: MediaWriteOutcome | None = None,
) -> MediaWriteOutcome:
    """Store images inside the caller's write transaction, within each run's byte budget (see :func:`image_plan`)."""
    outcome = outcome if outcome is not None else MediaWriteOutcome()
    run_plan(conn, image_plan(run_pks, events, max_image_bytes_per_run, outcome))
    return outcome


def image_plan(
    run_pks: Mapping[str, int],
    events: Iterable[ImageEvent],
    max_image_bytes_per_run: int | None,
    outcome: MediaWriteOutcome,
) -> WritePlan:
    """The statements storing images within each run's byte budget; counts into ``outcome``.

    Args:
        run_pks: run id → row id of ``runs``, for every run of ``events``.
        events: the images, in the order logged.
        max_image_bytes_per_run: a run's budget in bytes (each content counted
            once per run); ``None``: no budget.
        outcome: the counters to add to.
    """
    for event in events:
        run = run_pks[event.run_id]
        size = len(event.data)
        yield Statement("INSERT INTO media_usage (run) VALUES (?) ON CONFLICT (run) DO NOTHING", (run,))
        held = yield Statement(
            "SELECT 1 FROM images WHERE digest = ? AND run = ? LIMIT 1", (event.digest, run), returns="row"
        )
        if held is None:
            admitted = yield Statement(
                "UPDATE media_usage SET image_bytes = image_bytes + :size"
                " WHERE run = :run AND (:budget IS NULL OR image_bytes + :size <= :budget)",
                {"size": size, "run": run, "budget": max_image_bytes_per_run},
                returns="rowcount",
            )
            if not admitted:
                yield Statement(
                    "UPDATE media_usage SET images_over_budget = images_over_budget + 1 WHERE run = ?", (run,)
                )
                outcome.images_over_budget += 1
                if outcome.over_budget_runs is None:
                    outcome.over_budget_runs = set()
                outcome.over_budget_runs.add(event.run_id)
                continue
            if (yield _insert_blob(event.digest, event.mime, event.data)):
                outcome.new_blob_bytes += size
        row = (run, event.name, event.step, event.timestamp, event.digest, event.width, event.height, event.caption)
        yield Statement(_INSERT_IMAGES, [row], many=True)
        outcome.images_stored += 1


_INSERT_IMAGES: Final = (
    "INSERT INTO images (run, name, step, ts, digest, width, height, caption) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_HISTOGRAMS: Final = (
    "INSERT INTO histograms (run, name, step, ts, size, nan_count, posinf_count, neginf_count,"
    " min, max, sum, low, high, counts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _insert_blob(digest: str, mime: str, data: bytes) -> Statement:
    return Statement(
        "INSERT INTO media_blobs (digest, mime, size, data) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
        (digest, mime, len(data), data),
        returns="rowcount",
    )


def insert_blob(conn: sqlite3.Connection, digest: str, mime: str, data: bytes) -> bool:
    """Store a content under its digest unless the store has it; whether it was new."""
    statement = _insert_blob(digest, mime, data)
    return bool(conn.execute(statement.sql, statement.params).rowcount)


def insert_image_rows(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert image rows ``(run, name, step, ts, digest, width, height, caption)``; their blobs must exist."""
    conn.executemany(_INSERT_IMAGES, rows)


def write_histograms(
    conn: sqlite3.Connection,
    run_pks: Mapping[str, int],
    events: Iterable[HistogramEvent],
    *,
    outcome: MediaWriteOutcome | None = None,
) -> MediaWriteOutcome:
    """Store histograms inside the caller's write transaction."""
    outcome = outcome if outcome is not None else MediaWriteOutcome()
    run_plan(conn, histogram_plan(run_pks, events, outcome))
    return outcome


def histogram_plan(
    run_pks: Mapping[str, int], events: Iterable[HistogramEvent], outcome: MediaWriteOutcome
) -> WritePlan:
    """The statement storing histograms; counts into ``outcome``."""
    rows = histogram_rows(run_pks, events)
    if rows:
        yield Statement(_INSERT_HISTOGRAMS, rows, many=True)
    outcome.histograms_stored += len(rows)


def histogram_rows(run_pks: Mapping[str, int], events: Iterable[HistogramEvent]) -> list[tuple[Any, ...]]:
    """Histogram rows in the column order of the table (without ``id``), for every backend's writes."""
    return [
        (
            run_pks[event.run_id],
            event.name,
            event.step,
            event.timestamp,
            event.size,
            event.nan_count,
            event.posinf_count,
            event.neginf_count,
            event.min,
            event.max,
            event.sum,
            event.low,
            event.high,
            orjson.dumps(event.counts).decode(),
        )
        for event in events
    ]


def insert_histogram_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert histogram rows in the column order of the table (without ``id``)."""
    conn.executemany(_INSERT_HISTOGRAMS, rows)


def count_image_bytes(conn: sqlite3.Connection, run: int) -> None:
    """Set a run's image bytes to the sizes of the contents its images name, each once (after an import)."""
    conn.execute(
        "INSERT INTO media_usage (run, image_bytes) SELECT :run, COALESCE(sum(size), 0) FROM media_blobs"
        " WHERE digest IN (SELECT digest FROM images WHERE run = :run)"
        " ON CONFLICT (run) DO UPDATE SET image_bytes = excluded.image_bytes",
        {"run": run},
    )


# -- removal ---------------------------------------------------------------------------


def delete_image_chunk(conn: sqlite3.Connection, run: int, limit: int) -> int:
    """Remove up to ``limit`` of a run's images, and the blobs no image names any more; returns the images removed.

    Runs inside the caller's write transaction. Blobs are not counted: they
    are shared between runs, as metric key sets are.
    """
    digests = [
        row[0]
        for row in conn.execute(
            "DELETE FROM images WHERE id IN (SELECT id FROM images WHERE run = ? LIMIT ?) RETURNING digest",
            (run, limit),
        )
    ]
    if digests:
        remove_orphan_blobs(conn, set(digests))
    return len(digests)


def remove_orphan_blobs(conn: sqlite3.Connection, digests: Iterable[str]) -> int:
    """Remove the blobs among ``digests`` that no image names; returns how many."""
    return conn.execute(
        "DELETE FROM media_blobs WHERE digest IN (SELECT value FROM json_each(?))"
        " AND NOT EXISTS (SELECT 1 FROM images WHERE images.digest = media_blobs.digest)",
        (orjson.dumps(sorted(digests)),),
    ).rowcount
