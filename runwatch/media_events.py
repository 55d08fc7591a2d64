"""Images and histograms as events: :class:`ImageEvent` and :class:`HistogramEvent` (pure).

Built by runwatch's media thread (:mod:`runwatch.media`); :mod:`runwatch.events` re-exports them.
"""

from __future__ import annotations

from typing import ClassVar, Final, NamedTuple, Self

from ._payload import shown
from .event_base import EventBase, tuple_new
from .event_fields import (
    check_count,
    check_media_name,
    check_media_step,
    check_run_id,
    check_storable,
    check_timestamp,
    type_name,
)

__all__ = ["IMAGE_MIMES", "HistogramEvent", "ImageEvent"]


#: The media types an :class:`ImageEvent` may carry.
IMAGE_MIMES: Final = ("image/png", "image/jpeg")


class _ImageEventFields(NamedTuple):
    run_id: str
    timestamp: float
    name: str
    step: int | None
    data: bytes
    mime: str
    width: int
    height: int
    digest: str
    caption: str | None = None


class ImageEvent(EventBase, _ImageEventFields):
    """An encoded image of the series ``name`` (see :mod:`runwatch.media.images`).

    Attributes:
        name: the series (e.g. ``frame``); the store keeps every image of it.
        step: the global step it belongs to, or ``None``.
        data: PNG or JPEG bytes.
        mime: ``image/png`` or ``image/jpeg``.
        width, height: pixels.
        digest: SHA-256 of ``data`` in hex: the store keeps each content once.
        caption: free text shown with the image, or ``None``.

    The wire form (:func:`event_to_wire`) leaves ``data`` out: subscribers
    fetch the bytes by digest.
    """

    __slots__ = ()
    kind: ClassVar[str] = "image"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        name: str,
        step: int | None,
        data: bytes,
        mime: str,
        width: int,
        height: int,
        digest: str,
        caption: str | None = None,
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_media_name(name)
        step = check_media_step(step)
        if type(data) is not bytes or not data:
            raise TypeError(f"data must be non-empty bytes, got {type_name(data)}")
        if mime not in IMAGE_MIMES:
            raise ValueError(f"mime must be one of {', '.join(IMAGE_MIMES)}, got {shown(mime)}")
        for what, side in (("width", width), ("height", height)):
            if type(side) is not int or side < 1:
                raise TypeError(f"{what} must be a positive integer, got {shown(side)}")
        if type(digest) is not str or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ValueError(f"digest must be a SHA-256 in lowercase hex, got {shown(digest)}")
        if caption is not None:
            if type(caption) is not str:
                raise TypeError(f"caption must be a string or None, got {type_name(caption)}")
            check_storable("caption", caption)
        return tuple_new(cls, (run_id, timestamp, name, step, data, mime, width, height, digest, caption))


class _HistogramEventFields(NamedTuple):
    run_id: str
    timestamp: float
    name: str
    step: int | None
    size: int
    nan_count: int
    posinf_count: int
    neginf_count: int
    min: float | None
    max: float | None
    sum: float
    low: float | None
    high: float | None
    counts: tuple[int, ...]


class HistogramEvent(EventBase, _HistogramEventFields):
    """Binned values of the series ``name`` at a step (see :mod:`runwatch.media.histograms`).

    Attributes:
        size: values given; ``nan_count``, ``posinf_count`` and
            ``neginf_count`` of them are NaN, +Inf and -Inf (in no bin).
        min, max, sum: of the finite values (``min``/``max`` ``None`` without any).
        low, high: the edges of ``len(counts)`` equal bins (``None`` without a
            finite value, and then ``counts`` is empty).
        counts: values per bin.
    """

    __slots__ = ()
    kind: ClassVar[str] = "histogram"

    def __new__(
        cls,
        run_id: str,
        timestamp: float,
        name: str,
        step: int | None,
        size: int,
        nan_count: int,
        posinf_count: int,
        neginf_count: int,
        min: float | None,
        max: float | None,
        sum: float,
        low: float | None,
        high: float | None,
        counts: tuple[int, ...],
    ) -> Self:
        check_run_id(run_id)
        check_timestamp(timestamp)
        check_media_name(name)
        step = check_media_step(step)
        for what, value in (
            ("size", size),
            ("nan_count", nan_count),
            ("posinf_count", posinf_count),
            ("neginf_count", neginf_count),
        ):
            check_count(what, value)
        counts = tuple(counts)
        for value in counts:
            check_count("counts", value)
        if nan_count + posinf_count + neginf_count + (sum_ := _total(counts)) != size:
            raise ValueError(f"size ({size}) must be the NaN, ±Inf and binned counts added up ({sum_} binned)")
        finite = (min, max, low, high)
        if counts and any(type(value) is not float or value - value != 0.0 for value in finite):
            raise TypeError(f"min, max, low and high must be finite floats, got {shown(finite)}")
        if not counts and any(value is not None for value in finite):
            raise ValueError("min, max, low and high must be None for a histogram without bins")
        fields = (run_id, timestamp, name, step, size, nan_count, posinf_count, neginf_count)
        return tuple_new(cls, (*fields, min, max, float(sum), low, high, counts))


def _total(counts: tuple[int, ...]) -> int:
    total = 0
    for value in counts:
        total += value
    return total
