"""Tests of the runwatch.client package: its pinned public names and its independence from the server."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import runwatch.client

from ._doubles import TIMEOUT

PACKAGE = Path(runwatch.client.__file__).parent

PUBLIC_NAMES = [
    "DEFAULT_BASE_URL",
    "DEFAULT_BUCKETS",
    "MAX_BATCH_BYTES",
    "AsyncSession",
    "Batch",
    "ClientClosedError",
    "ClientStatistics",
    "DatacatClient",
    "DatacatConnectionError",
    "DatacatError",
    "DatacatHandler",
    "HTTPTransport",
    "HeartbeatMonitor",
    "HeartbeatWatch",
    "Session",
    "Timer",
    "Transport",
    "backoff_delay",
    "create_session",
    "encode_batch",
    "exception_data",
    "is_bisectable",
    "is_retryable",
    "machine_id",
    "plan_batches",
]


def test_all_is_the_pinned_list_and_resolves() -> None:
    """runwatch.client.__all__ is the pinned list, and each name is an attribute of the package."""
    assert runwatch.client.__all__ == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(runwatch.client, name) is not None


def test_datacats_module_level_names_are_all_here() -> None:
    """Every public name of datacat's Python client (but its daemon manager) is in runwatch.client."""
    datacat_names = ["DatacatClient", "HeartbeatMonitor", "DatacatHandler", "AsyncSession", "Session", "Timer"]
    assert set(datacat_names + ["create_session"]) <= set(runwatch.client.__all__)


def test_the_client_modules_import_nothing_outside_the_client_package() -> None:
    """No module of runwatch/client imports another part of runwatch (the server's code) or a third party."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1, f"{path.name} imports {'.' * node.level}{node.module}"
                    continue
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "__future__", f"{path.name} imports {name}"


def test_import_uses_the_standard_library_only() -> None:
    """Importing runwatch.client loads no third-party module (pandas, anyio, orjson, pydantic...)."""
    code = "import sys, runwatch.client\nprint(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, check=True)
    top_level = set(result.stdout.split())
    assert {"pandas", "anyio", "orjson", "pydantic", "numpy", "typer"}.isdisjoint(top_level)
    # Only the standard library, runwatch itself and the import machinery of an editable install:
    assert {name for name in top_level - set(sys.stdlib_module_names) if not name.startswith("_")} == {"runwatch"}
