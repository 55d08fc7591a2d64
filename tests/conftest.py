"""Fixtures shared by the whole suite (a package's own ``conftest.py`` holds what only it needs)."""

from __future__ import annotations

import socket
import subprocess
import sys

import psutil
import pytest


@pytest.fixture
def dead_owner() -> str:
    """An owner string (``host:pid:create_time``) of a process on this host that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(process.pid).create_time()  # still a zombie until wait(): readable
    process.wait()
    assert not psutil.pid_exists(process.pid)
    return f"{socket.gethostname()}:{process.pid}:{created:.3f}"
