"""Installing an example plugin of examples/ for a test module, the way a user would (pip).

The package is installed with the venv's own pip, but into a temporary
``--target`` directory put on ``sys.path`` for the test module, not into the
venv's site-packages: the venv is shared by concurrent test runs, and
reinstalling a package while another process scans entry points would make
both flaky. ``importlib.metadata`` finds the entry point exactly as it would
in site-packages.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _pip_install(source: Path, target: Path, *, isolated_build: bool) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    if not isolated_build:
        # Offline: build with the venv's setuptools and never ask an index.
        command += ["--no-build-isolation", "--no-index"]
    return subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=110, check=False)


@contextmanager
def installed_example(name: str, module: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install ``examples/<name>`` and put it on sys.path until the block ends; yields the target."""
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp(f"{name}-source") / name
    shutil.copytree(EXAMPLES / name, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp(f"{name}-site")
    result = _pip_install(source, target, isolated_build=False)
    if result.returncode != 0 and "bdist_wheel" in result.stdout + result.stderr:
        # setuptools < 70.1 needs the separate `wheel` package to build wheels; a
        # venv without it can only build in pip's isolated environment (which
        # fetches setuptools from the configured index).
        result = _pip_install(source, target, isolated_build=True)
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
