"""The dashboard's pure JavaScript core, unit-tested in Node (tests/js/*.test.js).

The core (parsing, formatting, series shaping, smoothing, downsampling, URL
state, the runs table's filter and sort, alert instances) has no DOM, clock
or I/O, so Node's built-in test runner exercises it as the browser runs it.
Skipped where Node is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).resolve().parent.parent / "js"


def test_dashboard_core_passes_its_node_unit_tests() -> None:
    """Every Node unit test of the dashboard's pure core passes."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node is not installed: the dashboard's JavaScript unit tests need it")
    files = sorted(str(path) for path in JS_TESTS.glob("*.test.js"))
    assert files, f"no JavaScript tests in {JS_TESTS}"
    result = subprocess.run(
        [node, "--test", *files], capture_output=True, text=True, timeout=50, stdin=subprocess.DEVNULL, check=False
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# pass", "# fail"))]
    assert result.returncode == 0, f"Node unit tests failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    assert summary and summary[-1] == "# fail 0", summary
    passed = int(summary[0].split()[-1])
    assert passed >= len(files), summary
