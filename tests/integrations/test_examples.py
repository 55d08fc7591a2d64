"""Every example in examples/integrations/ runs to a completed run (so the documentation's examples keep working)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "examples" / "integrations"


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("script", "framework", "arguments"),
    [
        pytest.param("with_lightning.py", "lightning", [], id="lightning"),
        pytest.param("with_transformers.py", "transformers", [], id="transformers"),
        pytest.param("with_stable_baselines3.py", "stable_baselines3", ["--steps", "512"], id="stable-baselines3"),
        pytest.param("with_gymnasium.py", "gymnasium", ["--episodes", "5"], id="gymnasium"),
        pytest.param("with_keras.py", "keras", [], id="keras"),
    ],
)
def test_example_runs_to_a_completed_run(tmp_path: Path, script: str, framework: str, arguments: list[str]) -> None:
    """The example exits 0 and reports its run completed in the store it was pointed at."""
    pytest.importorskip(framework)
    db = tmp_path / "store" / "monitoring.db"
    environment = {**os.environ, "KERAS_BACKEND": "torch", "HF_HUB_OFFLINE": "1"}

    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--db", str(db), *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=200,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert ": completed" in completed.stdout
    assert db.exists()
