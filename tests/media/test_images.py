"""Images: the cheap checks at the call, the private copy, and the encoding off the thread."""

from __future__ import annotations

import hashlib
import io
import sys

import numpy as np
import pytest
from PIL import Image

from runwatch.media.images import MAX_IMAGE_SIDE, ImageError, encode_image, take_image


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture)


def frame(height: int = 144, width: int = 160) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(frame(), id="rgb"),
        pytest.param(frame()[:, :, 0], id="grey"),
        pytest.param(np.dstack([frame(), np.full((144, 160), 200, np.uint8)]), id="rgba"),
    ],
)
def test_uint8_arrays_round_trip_exactly_as_png(array: np.ndarray) -> None:
    """A uint8 array comes back from its PNG pixel for pixel, with its size and a SHA-256 name."""
    encoded = encode_image(take_image(array))
    assert encoded.mime == "image/png"
    assert (encoded.width, encoded.height) == (array.shape[1], array.shape[0])
    assert encoded.digest == hashlib.sha256(encoded.data).hexdigest()
    np.testing.assert_array_equal(decoded(encoded.data), array)


def test_a_single_channel_axis_is_stored_as_grey() -> None:
    """H×W×1 is a grey image of H×W."""
    array = frame()[:, :, :1]
    np.testing.assert_array_equal(decoded(encode_image(take_image(array)).data), array[:, :, 0])


def test_floats_are_taken_in_zero_one_and_clipped() -> None:
    """Floats map [0, 1] to 0..255; values outside are clipped and NaN becomes 0."""
    array = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]], dtype=np.float32)
    assert decoded(encode_image(take_image(array)).data).tolist() == [[0, 128, 255, 255, 0, 0]]


def test_bool_arrays_are_black_and_white() -> None:
    """True is white, False black."""
    array = np.array([[True, False]])
    assert decoded(encode_image(take_image(array)).data).tolist() == [[255, 0]]


def test_the_copy_is_taken_at_the_call() -> None:
    """Changing the array after the call does not change the image encoded later."""
    array = frame()
    original = array.copy()
    taken = take_image(array)
    array[:] = 0
    np.testing.assert_array_equal(decoded(encode_image(taken).data), original)


def test_a_non_contiguous_view_is_encoded_as_seen() -> None:
    """A strided view (every other column, flipped) is stored as it looks, not as its buffer."""
    array = frame()[::-1, ::2]
    np.testing.assert_array_equal(decoded(encode_image(take_image(array)).data), array)


def test_objects_with_array_are_accepted() -> None:
    """Anything with ``__array__`` (a CPU tensor, say) is read through it."""

    class Tensorish:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def __array__(self, dtype=None, copy=None):
            return self.array

    array = frame()
    np.testing.assert_array_equal(decoded(encode_image(take_image(Tensorish(array))).data), array)


def test_pil_images_are_copied_and_stored_as_png() -> None:
    """A PIL image is copied at the call; later drawing on it changes nothing stored."""
    picture = Image.fromarray(frame())
    taken = take_image(picture)
    picture.paste((0, 0, 0), (0, 0, 160, 144))
    np.testing.assert_array_equal(decoded(encode_image(taken).data), frame())


def test_a_pil_mode_png_cannot_hold_is_converted() -> None:
    """A CMYK image is stored as RGB."""
    picture = Image.new("CMYK", (4, 3), (0, 0, 0, 0))
    encoded = encode_image(take_image(picture))
    with Image.open(io.BytesIO(encoded.data)) as stored:
        assert stored.mode == "RGB"
        assert stored.size == (4, 3)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "mime"),
    [pytest.param(png_bytes, "image/png", id="png"), pytest.param(jpeg_bytes, "image/jpeg", id="jpeg")],
)
def test_encoded_bytes_are_stored_as_given(make, mime: str) -> None:
    """PNG or JPEG bytes are kept byte for byte, with their type and size read from them."""
    data = make(frame(12, 20))
    encoded = encode_image(take_image(data))
    assert (encoded.data, encoded.mime, encoded.width, encoded.height) == (data, mime, 20, 12)
    assert encoded.digest == hashlib.sha256(data).hexdigest()


def test_truncated_png_bytes_are_found_unreadable_off_the_thread() -> None:
    """Bytes that start as PNG but do not decode pass the call and fail the encoding with ImageError."""
    data = png_bytes(frame(12, 20))[:40]
    taken = take_image(data)
    with pytest.raises(ImageError, match="PNG"):
        encode_image(taken)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        pytest.param("frame.png", TypeError, "numpy array", id="a path"),
        pytest.param([[0, 1]], TypeError, "numpy array", id="a list"),
        pytest.param(b"GIF89a...", ValueError, "PNG or JPEG", id="gif bytes"),
        pytest.param(np.zeros((4, 4, 2), np.uint8), ValueError, "shape", id="two channels"),
        pytest.param(np.zeros((3, 4, 4, 3), np.uint8), ValueError, "shape", id="a batch"),
        pytest.param(np.zeros(16, np.uint8), ValueError, "shape", id="flat"),
        pytest.param(np.zeros((4, 4), np.int64), TypeError, "astype", id="int64"),
        pytest.param(np.zeros((4, 4), np.complex64), TypeError, "dtype", id="complex"),
        pytest.param(np.zeros((0, 4), np.uint8), ValueError, "empty", id="empty"),
        pytest.param(np.zeros((MAX_IMAGE_SIDE + 1, 1), np.uint8), ValueError, "at most", id="too tall"),
    ],
)
def test_bad_images_are_refused_at_the_call(image: object, error: type[Exception], match: str) -> None:
    """What cannot be an image is a TypeError or ValueError at the call, naming what was wrong."""
    with pytest.raises(error, match=match):
        take_image(image)


def test_a_half_imported_pillow_does_not_break_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the media thread is still importing PIL.Image (no Image class yet), an array is taken as usual."""
    import types

    monkeypatch.setitem(sys.modules, "PIL.Image", types.ModuleType("PIL.Image"))
    assert take_image(frame()).form == "array"
