"""Test tiers: every reliability scenario runs short in ``make test`` and long in ``make soak``.

``make soak`` sets ``RUNWATCH_SOAK=1`` and selects the tests marked ``soak``;
a scenario picks its size with ``tier(short, long)`` and its timeout with
``soak_timeout(short_seconds, long_seconds)``.
"""

from __future__ import annotations

import os
from typing import TypeVar

import pytest

T = TypeVar("T")

SOAK = os.environ.get("RUNWATCH_SOAK") == "1"


def tier(short: T, long: T) -> T:
    """``long`` under ``make soak``, ``short`` otherwise."""
    return long if SOAK else short


def soak_timeout(short_seconds: float, long_seconds: float) -> pytest.MarkDecorator:
    """The pytest-timeout mark for a scenario, sized for the current tier."""
    return pytest.mark.timeout(tier(short_seconds, long_seconds))
