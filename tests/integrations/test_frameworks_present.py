"""In `make integrations`, every framework imports: the tier's tests cannot pass by being skipped."""

from __future__ import annotations

import importlib
import os

import pytest

TIER = os.environ.get("RUNWATCH_INTEGRATIONS") == "1"


@pytest.mark.skipif(not TIER, reason="only in make integrations (RUNWATCH_INTEGRATIONS=1)")
@pytest.mark.parametrize(
    "module", ["torch", "lightning.pytorch", "transformers", "accelerate", "stable_baselines3", "gymnasium", "keras"]
)
def test_framework_imports_in_the_integrations_tier(module: str) -> None:
    """The framework module imports in the integrations venv (a skipped tier would hide a broken install)."""
    assert importlib.import_module(module) is not None
