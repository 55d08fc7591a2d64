"""The image and histogram reads of :class:`~runwatch.store.manager.DatabaseManager`: arguments checked,
rows from the store as DataFrames and records with aware ``datetime`` objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import queries

if TYPE_CHECKING:
    import pandas as pd

    from .base import Store

__all__ = ["MediaReads"]


class MediaReads:
    """Images and histograms of a store's runs (a base of :class:`~runwatch.store.manager.DatabaseManager`)."""

    @property
    def store(self) -> Store:
        """The store the reads ask (the manager's own)."""
        raise NotImplementedError

    def get_run_histograms(self, run_id: str, name: str) -> pd.DataFrame:
        """A run's histograms of ``name``, one row per logged histogram, by step.

        Returns:
            Columns ``step`` (nullable ``Int64``), ``timestamp``
            (``datetime64[ns, UTC]``), ``size`` (values given), ``nan_count``,
            ``posinf_count``, ``neginf_count`` (values in no bin), ``min``,
            ``max``, ``sum`` (of the finite values; NaN when there were none),
            ``mean`` (of the finite values), ``bin_edges`` (a float64 array of
            ``bins + 1`` edges, as ``numpy.histogram`` returns) and ``counts``
            (an int64 array of ``bins`` counts). Empty when the run logged no
            histogram of that name.

        Raises:
            TypeError: a bad ``run_id`` or ``name``.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        from .queries.media import histogram_frame

        queries.check_run_id(run_id)
        _check_media_name(name)
        return histogram_frame(self.store.histograms(run_id, name))

    def get_histogram_names(self, run_id: str) -> list[dict[str, Any]]:
        """A run's histogram names, each with ``count``, ``first_step`` and ``last_step``.

        Raises:
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        return self.store.histogram_names(run_id)

    def get_run_images(
        self,
        run_id: str,
        name: str | None = None,
        *,
        start_step: int | None = None,
        end_step: int | None = None,
    ) -> list[dict[str, Any]]:
        """The metadata of a run's images (no bytes), by name, then step, then order logged.

        Args:
            run_id: the run.
            name: only images of this name; ``None`` for every name.
            start_step, end_step: only steps in this closed range.

        Returns:
            Dicts with ``name``, ``step``, ``timestamp`` (``datetime``, UTC),
            ``digest`` (SHA-256 of the bytes: pass it to
            :meth:`get_image_data`), ``mime``, ``width``, ``height``,
            ``caption`` and ``size`` (bytes).

        Raises:
            TypeError: a bad argument.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        if name is not None:
            _check_media_name(name)
        steps = _check_step_filter("start_step", start_step), _check_step_filter("end_step", end_step)
        rows = self.store.images(run_id, name, start_step=steps[0], end_step=steps[1])
        return [_image_record(row) for row in rows]

    def get_image(self, run_id: str, name: str, step: int | None = None) -> dict[str, Any] | None:
        """The latest image of ``name`` at or before ``step`` (``None``: the latest), with its bytes.

        Returns:
            A dict as :meth:`get_run_images` gives, plus ``data`` (the PNG or
            JPEG bytes); ``None`` when there is no such image.

        Raises:
            TypeError: a bad argument.
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        _check_media_name(name)
        step = _check_step_filter("step", step)
        row = self.store.image_at(run_id, name, step, with_data=True)
        return None if row is None else _image_record(row)

    def get_image_data(self, digest: str) -> tuple[str, bytes] | None:
        """The media type and bytes of the image content named ``digest`` (SHA-256, hex), or ``None``.

        Raises:
            TypeError: ``digest`` is not a string.
            StoreError: the database does not exist or cannot be read.
        """
        if type(digest) is not str:
            raise TypeError(f"digest must be a string, got {type(digest).__name__}")
        return self.store.image_content(digest.lower())

    def get_media_usage(self, run_id: str) -> dict[str, int]:
        """A run's image bytes counted against its budget, and the images refused over it.

        Returns:
            ``{"image_bytes": ..., "images_over_budget": ...}``.

        Raises:
            UnknownRunError: no run has this id.
            StoreError: the database does not exist or cannot be read.
        """
        queries.check_run_id(run_id)
        return self.store.media_usage(run_id)


def _check_media_name(name: object) -> None:
    if type(name) is not str:
        raise TypeError(f"name must be a string, got {type(name).__name__}")


def _check_step_filter(what: str, step: object) -> int | None:
    if step is None:
        return None
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"{what} must be an integer or None, got {step!r}")
    return int(step.__index__())


def _image_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {key: value for key, value in row.items() if key != "id"}
    record["timestamp"] = queries.to_datetime(record.pop("ts"))
    return record
