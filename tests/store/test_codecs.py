"""Tests for runwatch.store.codecs: column blobs round-trip bit for bit and reject damage."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from runwatch.store.codecs import (
    DELTA_INT,
    OFFSET_INT,
    RAW_FLOAT,
    XOR_FLOAT,
    CodecError,
    decode_float_column,
    decode_int_column,
    decode_mask,
    decode_texts,
    encode_float_column,
    encode_int_column,
    encode_mask,
    encode_texts,
)

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


def floats_from_bits(patterns: list[int]) -> np.ndarray:
    return np.array(patterns, dtype=np.uint64).view(np.float64)


@settings(max_examples=300, deadline=None)
@given(st.lists(INT64, max_size=600))
def test_int_column_round_trips_any_int64(values: list[int]) -> None:
    """Any int64 sequence, extremes and wrap-around differences included, comes back exactly."""
    array = np.array(values, dtype=np.int64)
    assert decode_int_column(encode_int_column(array), len(array)).tolist() == values


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(-1000, 1000), st.lists(st.integers(-3, 3), min_size=1, max_size=900))
def test_int_column_round_trips_near_regular_sequences(first: int, stride: int, jitter: list[int]) -> None:
    """Steps and times (a stride with jitter) come back exactly."""
    array = first + stride * np.arange(len(jitter), dtype=np.int64) + np.array(jitter, dtype=np.int64)
    assert np.array_equal(decode_int_column(encode_int_column(array), len(array)), array)


@settings(max_examples=300, deadline=None)
@given(st.lists(UINT64, max_size=600))
def test_float_column_round_trips_every_bit_pattern(patterns: list[int]) -> None:
    """Any float64 bit pattern (NaN payloads, ±Inf, −0.0, subnormals) comes back bit for bit."""
    array = floats_from_bits(patterns)
    decoded = decode_float_column(encode_float_column(array), len(array))
    assert decoded.view(np.uint64).tolist() == patterns


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 2000), elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_float_column_round_trips_float_arrays(array: np.ndarray) -> None:
    """Arrays of ordinary and special floats come back bit for bit."""
    decoded = decode_float_column(encode_float_column(array), len(array))
    assert np.array_equal(decoded.view(np.uint64), array.view(np.uint64))


def test_constant_stride_costs_only_the_header() -> None:
    """A step column with a constant stride is stored as its first value and stride alone."""
    blob = encode_int_column(np.arange(1_000_000, dtype=np.int64) * 5 + 7)
    assert blob[0] == DELTA_INT
    assert len(blob) == 20


def test_unordered_small_integers_use_an_offset() -> None:
    """Integers in a small range but in no order are stored as value minus minimum, one byte each."""
    rng = np.random.default_rng(3)
    array = rng.integers(1000, 1200, 4096).astype(np.int64)
    blob = encode_int_column(array)
    assert blob[0] == OFFSET_INT and blob[1] == 1
    assert np.array_equal(decode_int_column(blob, len(array)), array)


def test_smooth_floats_choose_xor_and_noise_stays_raw() -> None:
    """A smooth schedule is XORed with its predecessor; noise keeps its plain bytes."""
    smooth = 3e-4 * 0.5 * (1 + np.cos(np.pi * np.arange(16384) / 1e6))
    noise = np.random.default_rng(1).standard_normal(16384)
    smooth_blob, noise_blob = encode_float_column(smooth), encode_float_column(noise)
    assert smooth_blob[0] == XOR_FLOAT and noise_blob[0] == RAW_FLOAT
    assert len(smooth_blob) < 0.6 * smooth.nbytes
    assert len(noise_blob) < noise.nbytes  # sign and exponent planes still compress


def test_decode_into_a_given_array_fills_it() -> None:
    """Decoding into ``out`` writes the values there (a slice of a larger result)."""
    values = np.array([1.5, -0.0, np.inf], dtype=np.float64)
    target = np.zeros(5)
    decode_float_column(encode_float_column(values), 3, out=target[1:4])
    assert target.view(np.uint64).tolist()[1:4] == values.view(np.uint64).tolist()
    ints = np.zeros(4, dtype=np.int64)
    decode_int_column(encode_int_column(np.array([5, 9, -3], dtype=np.int64)), 3, out=ints[:3])
    assert ints.tolist() == [5, 9, -3, 0]


@given(st.lists(st.booleans(), max_size=300))
def test_mask_round_trips(flags: list[bool]) -> None:
    """A validity mask comes back as it was."""
    assert decode_mask(encode_mask(np.array(flags, dtype=np.bool_)), len(flags)).tolist() == flags


@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_characters="\0"))), max_size=80))
def test_texts_round_trip(texts: list[str | None]) -> None:
    """Optional strings (tags as JSON text) come back as they were, None included."""
    assert decode_texts(encode_texts(texts), len(texts)) == texts


def test_texts_refuse_nul() -> None:
    """A NUL inside a text is refused (it separates the dictionary)."""
    with pytest.raises(ValueError, match="NUL"):
        encode_texts(["a\0b"])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda blob: blob[:2], id="truncated header"),
        pytest.param(lambda blob: blob[:-1], id="truncated payload"),
        pytest.param(lambda blob: blob + b"x", id="trailing bytes"),
        pytest.param(lambda blob: bytes([9]) + blob[1:], id="unknown transform"),
    ],
)
def test_damaged_float_blobs_raise_codec_error(damage: object) -> None:
    """A damaged column blob raises CodecError instead of returning wrong values."""
    blob = encode_float_column(np.random.default_rng(2).standard_normal(500))
    with pytest.raises(CodecError):
        decode_float_column(damage(blob), 500)  # type: ignore[operator]


def test_wrong_count_raises_codec_error() -> None:
    """Asking for another point count than the blob holds is an error."""
    blob = encode_int_column(np.random.default_rng(4).integers(0, 2**40, 300).astype(np.int64))
    with pytest.raises(CodecError):
        decode_int_column(blob, 299)
    with pytest.raises(CodecError):
        decode_float_column(blob, 300)


def test_nan_payload_survives() -> None:
    """A NaN with a payload and a signalling NaN keep their exact bits."""
    negative_zero = struct.unpack("<Q", struct.pack("<d", -0.0))[0]
    patterns = [0x7FF8000000000001, 0x7FF0000000000001, 0xFFF8DEADBEEF0000, negative_zero]
    decoded = decode_float_column(encode_float_column(floats_from_bits(patterns)), 4)
    assert decoded.view(np.uint64).tolist() == patterns


@pytest.mark.parametrize("span", [1, 2, 3, 9, 15])
def test_narrow_planes_are_bit_packed(span: int) -> None:
    """A plane whose bytes span at most 16 values is stored as offsets of 1, 2 or 4 bits, exactly."""
    rng = np.random.default_rng(span)
    # Two-byte deltas whose high byte takes span + 1 consecutive values: a clock with jitter.
    deltas = rng.integers(0, 256 * (span + 1), 5000)
    values = (1_700_000_000_000_000 + np.cumsum(deltas)).astype(np.int64)
    blob = encode_int_column(values)
    assert struct.unpack_from("<H", blob, 2)[0] >> 8, "the high plane is narrow"
    assert np.array_equal(decode_int_column(blob, len(values)), values)


def test_a_constant_exponent_plane_costs_two_bytes() -> None:
    """Floats sharing their top byte store that plane as the byte alone."""
    values = 1.0 + np.random.default_rng(9).random(4096) * 0.5  # all in [1, 1.5): one sign/exponent byte
    blob = encode_float_column(values)
    assert struct.unpack_from("<H", blob, 2)[0] >> 8 & 0x80  # plane 7 is narrow
    assert np.array_equal(decode_float_column(blob, 4096).view(np.uint64), values.view(np.uint64))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(bytes([0, 3]), id="width 3"),
        pytest.param(bytes([250, 4]) + b"\xff" * 2048, id="bytes past 255"),
        pytest.param(bytes([0, 0, 7]), id="constant with a body"),
        pytest.param(bytes([0, 2]) + bytes(10), id="short body"),
    ],
)
def test_a_damaged_narrow_plane_raises_codec_error(bad: bytes) -> None:
    """A narrow plane with a bad width, overflowing bytes or a wrong length is refused."""
    values = 1.0 + np.random.default_rng(9).random(4096) * 0.5
    blob = bytearray(encode_float_column(values))
    flags = struct.unpack_from("<H", blob, 2)[0]
    coded = [k for k in range(8) if (flags | flags >> 8) >> k & 1]
    assert coded[-1] == 7 and flags >> 8 & 0x80
    last = 4 + 4 * (len(coded) - 1)
    last_length = struct.unpack_from("<I", blob, last)[0]
    blob = blob[: len(blob) - last_length] + bad  # plane 7 is stored last
    struct.pack_into("<I", blob, last, len(bad))
    with pytest.raises(CodecError):
        decode_float_column(bytes(blob), 4096)
