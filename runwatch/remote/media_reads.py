"""The image and histogram reads of :class:`~runwatch.remote.reader.RestReader`, over the REST API.

They return what :class:`~runwatch.store.manager.DatabaseManager` returns for
the same run: the histogram DataFrame built by the same code from the same
rows (:func:`runwatch.store.queries.media.histogram_frame`, with the stored
epoch seconds), image records with aware UTC ``datetime`` objects, and an
image's bytes as the server stores them (``/api/media/{digest}``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from ..store import queries
from ..store.media_reads import _check_media_name as _check_name
from ..store.media_reads import _check_step_filter as _step_filter

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RestMediaReads"]

#: Image records asked for per request (the server answers at most 10,000).
IMAGES_PER_PAGE: Final = 10_000
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")


class RestMediaReads:
    """Images and histograms of the server's runs (a base of :class:`~runwatch.remote.reader.RestReader`)."""

    _get: Callable[..., Any]
    _get_bytes: Callable[..., bytes]
    _get_if_found: Callable[..., bytes | None]
    _run_path: Callable[..., str]

    def get_run_histograms(self, run_id: str, name: str) -> pd.DataFrame:
        """As :meth:`DatabaseManager.get_run_histograms` (the same DataFrame, value for value)."""
        from ..store.queries.media import histogram_frame

        queries.check_run_id(run_id)
        _check_name(name)
        answer = self._get(self._run_path(run_id, "/histograms/series"), {"name": name}, run_id=run_id)
        rows = answer["histograms"]
        for row in rows:
            # ±Inf travel as "Infinity"/"-Infinity", which float() reads; a NaN as null, as the store keeps it
            row["sum"] = math.nan if row["sum"] is None else float(row["sum"])
        return histogram_frame(rows)

    def get_histogram_names(self, run_id: str) -> list[dict[str, Any]]:
        """As :meth:`DatabaseManager.get_histogram_names`."""
        queries.check_run_id(run_id)
        names: list[dict[str, Any]] = self._get(self._run_path(run_id, "/histograms"), run_id=run_id)["names"]
        return names

    def get_run_images(
        self,
        run_id: str,
        name: str | None = None,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> list[dict[str, Any]]:
        """As :meth:`DatabaseManager.get_run_images`: metadata by name, then step, then order logged."""
        queries.check_run_id(run_id)
        if name is not None:
            _check_name(name)
        first, last = _step_filter("start_step", start_step), _step_filter("end_step", end_step)
        if name is None:
            entries = self._get(self._run_path(run_id, "/images"), run_id=run_id)["names"]
            names = sorted(entry["name"] for entry in entries)
        else:
            names = [name]
        records: list[dict[str, Any]] = []
        for each in names:
            records.extend(self._images_of(run_id, each, first, last))
        return records

    def _images_of(self, run_id: str, name: str, first: int | None, last: int | None) -> list[dict[str, Any]]:
        """Every image of one name, in pages; a page starts at the last step of the one before and skips
        the images of that step already read (the server orders a step's images as they were stored)."""
        out: list[dict[str, Any]] = []
        start, seen_at_start = first, 0
        while True:
            params = {"name": name, "start_step": start, "end_step": last, "limit": IMAGES_PER_PAGE}
            rows = self._get(self._run_path(run_id, "/images/list"), params, run_id=run_id)["images"]
            fresh = rows[seen_at_start:] if start is not None and rows and rows[0]["step"] == start else rows
            out.extend(_image_record(row) for row in fresh)
            if len(rows) < IMAGES_PER_PAGE:
                return out
            start = rows[-1]["step"]
            seen_at_start = sum(1 for record in out if record["step"] == start)
            if seen_at_start >= IMAGES_PER_PAGE:  # the next page would hold only those again
                raise ValueError(
                    f"run {run_id!r} has more than {IMAGES_PER_PAGE} images of {name!r} at step {start}:"
                    " read them with start_step and end_step on the server"
                )

    def get_image(self, run_id: str, name: str, step: int | None = None) -> dict[str, Any] | None:
        """As :meth:`DatabaseManager.get_image`: the record with ``data``, or ``None`` when there is no such image."""
        queries.check_run_id(run_id)
        _check_name(name)
        step = _step_filter("step", step)
        body = self._get_if_found(self._run_path(run_id, "/images/at"), {"name": name, "step": step}, run_id=run_id)
        if body is None:
            return None
        record = _image_record(orjson.loads(body))
        content = self._get_if_found(f"/api/media/{record['digest']}")
        if content is None:
            return None  # removed between the two requests (the run was deleted)
        record["data"] = content
        return record

    def get_media_usage(self, run_id: str) -> dict[str, int]:
        """As :meth:`DatabaseManager.get_media_usage`: ``image_bytes`` and ``images_over_budget``."""
        queries.check_run_id(run_id)
        usage = self._get(self._run_path(run_id, "/images/usage"), run_id=run_id)
        return {key: int(usage[key]) for key in ("image_bytes", "images_over_budget")}

    def get_image_data(self, digest: str) -> tuple[str, bytes] | None:
        """As :meth:`DatabaseManager.get_image_data`: ``(mime, bytes)``, or ``None`` when the server has none."""
        from ..media.images import image_mime

        if type(digest) is not str:
            raise TypeError(f"digest must be a string, got {type(digest).__name__}")
        digest = digest.lower()
        if not _DIGEST.fullmatch(digest):
            return None  # no content is named so
        data = self._get_if_found(f"/api/media/{digest}")
        if data is None:
            return None
        mime = image_mime(data)
        assert mime is not None, "the server stores PNG and JPEG only"
        return mime, data


def _image_record(row: dict[str, Any]) -> dict[str, Any]:
    """An image row of the REST API as ``DatabaseManager`` gives it: no ``url``, the time as a ``datetime``."""
    record = {key: value for key, value in row.items() if key not in ("url", "timestamp")}
    record["timestamp"] = datetime.fromisoformat(row["timestamp"]).astimezone(UTC)
    return record
