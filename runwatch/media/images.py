"""Images: what ``log_image`` takes at the call, and their encoding off the training thread.

Two halves, so the training loop pays only for the first:

* :func:`take_image` runs at the call: it checks the kind, shape and dtype
  (no pass over the pixels) and takes a private copy, so a loop that reuses
  its frame buffer cannot change an image waiting to be encoded.
* :func:`encode_image` runs on the media worker's thread: it turns the copy
  into PNG (arrays and PIL images) or checks given PNG/JPEG bytes, and names
  the result by the SHA-256 of its bytes (the store keeps each content once).

Accepted: numpy arrays (or anything with ``__array__``, such as a CPU tensor)
of shape H×W, H×W×1, H×W×3 or H×W×4 (channels last), of dtype uint8, bool
or float (floats are taken as [0, 1]: clipped there, NaN as 0); PIL images;
PNG or JPEG bytes (stored as given). Pillow is imported by the worker only,
and at the call only when the caller has imported it already.
"""

from __future__ import annotations

import hashlib
import io
import sys
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from .._payload import shown

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_SIDE",
    "EncodedImage",
    "ImageError",
    "TakenImage",
    "encode_image",
    "image_mime",
    "take_image",
]

#: The longest side of an image, in pixels.
MAX_IMAGE_SIDE: Final = 8192
#: The largest PNG/JPEG given as bytes.
MAX_IMAGE_BYTES: Final = 32 << 20

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE: Final = b"\xff\xd8\xff"
_CHANNELS: Final = (1, 3, 4)
# zlib level 1: about 3× faster than Pillow's default 6 for frames like a game's screen,
# and only slightly larger (measured in benchmarks/bench_media.py).
PNG_COMPRESS_LEVEL: Final = 1


class ImageError(ValueError):
    """Given image bytes turned out not to be a readable PNG or JPEG (found off the training thread)."""


@dataclass(frozen=True, slots=True)
class TakenImage:
    """An image as taken at the call: a private copy, not yet encoded.

    Attributes:
        form: ``array`` (a numpy array), ``pil`` (a PIL image) or ``encoded``
            (PNG or JPEG bytes).
        data: the copy.
        nbytes: the memory the copy holds (for the worker's byte bound).
    """

    form: Literal["array", "pil", "encoded"]
    data: Any
    nbytes: int


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """An image ready for the store.

    Attributes:
        data: PNG or JPEG bytes.
        mime: ``image/png`` or ``image/jpeg``.
        width: pixels.
        height: pixels.
        digest: the SHA-256 of ``data``, in hex: the image's name in the store.
    """

    data: bytes
    mime: str
    width: int
    height: int
    digest: str


def image_mime(data: bytes) -> str | None:
    """The media type of PNG or JPEG bytes by their signature (``None``: neither)."""
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(_JPEG_SIGNATURE):
        return "image/jpeg"
    return None


def _is_pil_image(image: object) -> bool:
    # Only a caller who imported PIL can hold a PIL image: no import on the training thread. The
    # module may be half-imported (the media thread imports it for its first encoding): no class yet.
    image_class = getattr(sys.modules.get("PIL.Image"), "Image", None)
    return image_class is not None and isinstance(image, image_class)


def take_image(image: object, what: str = "image") -> TakenImage:
    """Check ``image`` cheaply and copy it (runs on the caller's thread).

    Raises:
        TypeError: not an array, PIL image or bytes; or an array dtype other
            than uint8, bool or float.
        ValueError: an array shape other than H×W[×1|3|4], an empty image, a
            side beyond :data:`MAX_IMAGE_SIDE`, or bytes that do not start
            as PNG or JPEG or exceed :data:`MAX_IMAGE_BYTES`.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _take_encoded(bytes(image), what)
    if _is_pil_image(image):
        width, height = image.size  # type: ignore[attr-defined]  # a PIL image, checked above
        _check_sides(what, height, width)
        copy = image.copy()  # type: ignore[attr-defined]
        return TakenImage("pil", copy, width * height * max(1, len(copy.getbands())))
    if isinstance(image, np.ndarray):
        array = image
    elif hasattr(image, "__array__"):
        try:
            array = np.asarray(image)
        except Exception as exc:
            raise TypeError(f"{what}: {type(image).__name__} did not convert to an array ({exc})") from None
    else:
        raise TypeError(
            f"{what} must be a numpy array (H×W, H×W×3 or H×W×4), a PIL image or PNG/JPEG bytes,"
            f" got {type(image).__name__}"
        )
    _check_array(what, array)
    copy = np.array(array, copy=True, order="C")  # the caller may reuse its buffer at once
    return TakenImage("array", copy, copy.nbytes)


def _take_encoded(data: bytes, what: str) -> TakenImage:
    if image_mime(data) is None:
        raise ValueError(f"{what}: bytes must be a PNG or JPEG file, got {shown(data[:8])}...")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{what}: {len(data)} bytes is more than the {MAX_IMAGE_BYTES} an image may have")
    return TakenImage("encoded", data, len(data))


def _check_array(what: str, array: np.ndarray[Any, Any]) -> None:
    shape = array.shape
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in _CHANNELS)):
        raise ValueError(f"{what} must have shape H×W, H×W×1, H×W×3 or H×W×4 (channels last), got {shape}")
    kind = array.dtype.kind
    if not (array.dtype == np.uint8 or kind in "bf"):
        raise TypeError(
            f"{what} must have dtype uint8, bool or float (in [0, 1]), got {array.dtype};"
            " for 0-255 integers use .astype(numpy.uint8)"
        )
    _check_sides(what, shape[0], shape[1])


def _check_sides(what: str, height: int, width: int) -> None:
    if height == 0 or width == 0:
        raise ValueError(f"{what} is empty ({height}×{width} pixels)")
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise ValueError(f"{what} is {height}×{width} pixels; a side may have at most {MAX_IMAGE_SIDE}")


def encode_image(taken: TakenImage) -> EncodedImage:
    """Encode a taken image (runs on the media worker's thread).

    Raises:
        ImageError: given bytes are not a readable PNG or JPEG.
    """
    from PIL import Image

    if taken.form == "encoded":
        return _check_encoded(taken.data)
    if taken.form == "array":
        picture = Image.fromarray(_to_uint8(taken.data))
    else:
        picture = taken.data
    buffer = io.BytesIO()
    try:
        picture.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    except (OSError, ValueError, KeyError):  # a mode PNG cannot hold (CMYK, YCbCr, ...)
        buffer = io.BytesIO()
        converted = picture.convert("RGBA" if "A" in picture.getbands() else "RGB")
        converted.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    data = buffer.getvalue()
    width, height = picture.size
    return EncodedImage(data, "image/png", width, height, hashlib.sha256(data).hexdigest())


def _to_uint8(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * np.uint8(255)
    scaled = np.nan_to_num(array.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(scaled, 0.0, 1.0, out=scaled)
    result: np.ndarray[Any, Any] = np.rint(scaled * 255.0).astype(np.uint8)
    return result


def _check_encoded(data: bytes) -> EncodedImage:
    from PIL import Image, UnidentifiedImageError

    mime = image_mime(data) or "image/jpeg"
    try:
        with Image.open(io.BytesIO(data), formats=["PNG" if mime == "image/png" else "JPEG"]) as picture:
            width, height = picture.size
            picture.verify()
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"not a readable {mime.split('/')[1].upper()} ({exc})") from None
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise ImageError(f"{height}×{width} pixels; a side may have at most {MAX_IMAGE_SIDE}")
    return EncodedImage(data, mime, width, height, hashlib.sha256(data).hexdigest())
