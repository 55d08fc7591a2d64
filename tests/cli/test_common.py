"""Tests of what the commands share (runwatch.cli._common): one-line errors, JSON and formatting (pure)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import typer

from runwatch.cli._common import (
    BAD_ARGUMENT,
    FAILED,
    fail,
    format_bytes,
    format_duration,
    format_number,
    json_safe,
    reported,
)


def test_fail_prints_one_error_line_and_returns_the_exit(capsys: pytest.CaptureFixture[str]) -> None:
    """fail folds a message onto one ``error:`` line on stderr and returns an exit with the code (2 by default)."""
    default = fail("bad\n   value")
    failed = fail("gone", FAILED)

    assert capsys.readouterr().err.splitlines() == ["error: bad value", "error: gone"]
    assert (default.exit_code, failed.exit_code) == (BAD_ARGUMENT, FAILED)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        pytest.param(ValueError("refused"), "error: refused", id="value-error"),
        pytest.param(sqlite3.DatabaseError("file is not a database"), "cannot be used", id="sqlite"),
        pytest.param(FileNotFoundError(2, "No such file or directory", "x.zip"), "'x.zip'", id="os-error"),
    ],
)
def test_reported_turns_a_user_facing_error_into_exit_1(
    capsys: pytest.CaptureFixture[str], error: Exception, line: str
) -> None:
    """Refused requests, SQLite and file errors end the command with exit 1 and one line, no traceback."""
    with pytest.raises(typer.Exit) as caught, reported(Path("store.db")):
        raise error

    assert caught.value.exit_code == FAILED
    (printed,) = capsys.readouterr().err.splitlines()
    assert printed.startswith("error: ") and line in printed
    assert "Errno" not in printed


def test_reported_lets_a_bug_through() -> None:
    """An error that is not the user's (a bug) is not disguised as a one-line failure."""
    with pytest.raises(KeyError), reported():
        raise KeyError("bug")


def test_json_safe_gives_non_finite_floats_their_wire_form() -> None:
    """NaN becomes null and ±Inf the strings of docs/protocol.md, inside mappings and sequences alike."""
    assert json_safe({"a": [math.nan, math.inf, -math.inf, 1.0], "b": (2, "x")}) == {
        "a": [None, "Infinity", "-Infinity", 1.0],
        "b": [2, "x"],
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(12.5, "12.5s", id="seconds"),
        pytest.param(184, "3m 04s", id="minutes"),
        pytest.param(7384, "2h 03m 04s", id="hours"),
        pytest.param(93784, "1d 02h 03m", id="days"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    """Durations read in the largest units that matter."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        pytest.param(512, "512 B", id="bytes"),
        pytest.param(2048, "2.0 KiB", id="kib"),
        pytest.param(3 * 1024**3, "3.0 GiB", id="gib"),
        pytest.param(5 * 1024**4, "5120.0 GiB", id="beyond-gib"),
        pytest.param(1.5, "1.5", id="not-an-int"),
        pytest.param(None, "-", id="none"),
    ],
)
def test_format_bytes(count: Any, text: str) -> None:
    """Byte counts read in binary units, up to GiB; anything else as a number."""
    assert format_bytes(count) == text


def test_format_number_keeps_six_significant_digits() -> None:
    """Floats keep six significant digits, other values print as they are, None as a dash."""
    assert [format_number(value) for value in (1 / 3, 1e-9, 42, "x", None)] == ["0.333333", "1e-09", "42", "x", "-"]
