"""The real datacat clients against `runwatch serve` (an optional tier: runs where datacat's source and a
Go toolchain are at hand; skipped otherwise, e.g. on CI, which can fetch neither).

Set ``DATACAT_SOURCE`` to a checkout of OriginalDaemon/datacat (at 77ab370) and have ``go`` on the PATH
(or set ``GO``); ``make datacat-clients`` does both from a checkout given as ``DATACAT_SOURCE``. The tier
builds datacat's daemon, datacat-web and a small program driving its Go client from a copy of that
source, offline, and then runs:

- datacat's own Python client (``python/datacat.py``), which starts the real daemon, through a session's
  whole life;
- its Go client in direct mode, every call;
- datacat-web reading runwatch serve: its pages and fragments.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ._harness import TIMEOUT, Serve, wait_until

SOURCE = os.environ.get("DATACAT_SOURCE")
GO = os.environ.get("GO") or shutil.which("go")

pytestmark = [
    pytest.mark.skipif(
        not (SOURCE and Path(SOURCE, "client", "client.go").exists() and GO),
        reason="set DATACAT_SOURCE to a datacat checkout and put a Go toolchain on the PATH to run the real clients",
    ),
    pytest.mark.timeout(900),  # the first test builds datacat's programs (minutes on a cold Go build cache)
]


@dataclass
class Built:
    """datacat's programs built from its source."""

    source: Path
    daemon: Path
    web: Path
    driver: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """datacat's daemon, datacat-web and the Go-client driver, built offline from a copy of its source."""
    assert SOURCE is not None and GO is not None
    tree = tmp_path_factory.mktemp("datacat") / "src"
    shutil.copytree(SOURCE, tree, ignore=shutil.ignore_patterns(".git", "tmp", "bin"))
    driver_dir = tree / "cmd" / "runwatch-driver"
    driver_dir.mkdir()
    shutil.copy(Path(__file__).with_name("go_driver.go.txt"), driver_dir / "main.go")
    # Offline: datacat's programs use only Go's standard library (its server, which needs BadgerDB, is not built).
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    (tree / "bin").mkdir()
    for name in ("datacat-daemon", "datacat-web", "runwatch-driver"):
        subprocess.run(
            [GO, "build", "-o", str(tree / "bin" / name), f"./cmd/{name}"],
            cwd=tree,
            env=env,
            check=True,
            timeout=600,
            capture_output=True,
        )
    return Built(tree, tree / "bin" / "datacat-daemon", tree / "bin" / "datacat-web", tree / "bin" / "runwatch-driver")


PYTHON_PROGRAM = """
import json, logging, sys
sys.path.insert(0, sys.argv[2])
from datacat import DatacatHandler, create_session

session = create_session(sys.argv[1], product="PyApp", version="2.0")
session.update_state({"status": "running", "window": {"open": ["w1"], "active": "w1"}})
session.update_state({"status": "running"})
session.update_state({"window": {"open": ["w1", "w2"]}, "gone": None})
session.log_event("user_action", category="ui", group="grp", labels=["l1"], message="hello", data={"k": 1})
session.log_event("lvl", level="warning")
session.log_gauge("fps", 60, tags=["t"], unit="fps")
session.log_timer("load", 1.25, count=3)
for _ in range(3):
    session.log_counter("requests")
session.log_histogram("latency", 0.004)
session.log_histogram("latency", 0.2)
with session.timer("work", unit="milliseconds"):
    pass
try:
    raise ValueError("boom")
except ValueError:
    session.log_exception(extra_data={"ctx": "c"})
logger = logging.getLogger("app.mod")
logger.addHandler(DatacatHandler(session))
logger.warning("careful now")
monitor = session.start_heartbeat_monitor(timeout=60)
session.heartbeat()
details = session.get_details()
everything = session.client.get_all_sessions()
print(json.dumps({
    "id": session.session_id,
    "details_state": details.get("state"),
    "listed": any(item.get("id") == session.session_id for item in everything),
    "end": session.end(),
}))
"""


def test_datacats_python_client_and_daemon_store_a_whole_session(tmp_path: Path, serve: Serve, built: Built) -> None:
    """datacat's Python client, through its real daemon, creates, logs, reads and ends a session on runwatch
    serve; everything it logged is stored as datacat stores it when end() returns."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(PYTHON_PROGRAM))
    result = subprocess.run(
        [sys.executable, str(script), serve.url, str(built.source / "python")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["end"] == {"status": "ok"} and report["listed"] is True
    assert report["details_state"]["product"] == "PyApp"

    session = serve.session(report["id"])
    assert session["machine_id"] and session["hostname"] and "ended_at" in session
    assert session["state"] == {
        "product": "PyApp",
        "status": "running",
        "version": "2.0",
        "window": {"active": "w1", "open": ["w1", "w2"]},
    }
    assert len(session["state_history"]) == 2  # the repeated {"status": "running"} was dropped by the daemon
    events = {event["name"]: event for event in session["events"]}
    assert (events["user_action"]["category"], events["user_action"]["labels"]) == ("ui", ["l1"])
    assert events["lvl"]["category"] == "warning"
    assert (events["exception"]["exception_type"], events["exception"]["data"]) == ("ValueError", {"ctx": "c"})
    assert events["log.app.mod"]["message"] == "careful now"
    kinds = {(metric["name"], metric["type"]) for metric in session["metrics"]}
    assert {("fps", "gauge"), ("load", "timer"), ("work", "timer"), ("requests", "counter")} <= kinds
    assert ("latency", "histogram") in kinds
    requests = [metric["value"] for metric in session["metrics"] if metric["name"] == "requests"]
    assert requests[-1] == 3
    latency = [metric for metric in session["metrics"] if metric["name"] == "latency"][-1]
    assert latency["metadata"]["count"] == 2 and len(latency["metadata"]["buckets"]) == 15


def test_datacats_go_client_makes_every_call(serve: Serve, built: Built) -> None:
    """Every call of datacat's Go client in direct mode succeeds against runwatch serve, and its strict
    decoding of the session documents (one and all) succeeds."""
    result = subprocess.run([str(built.driver), serve.url], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ended"] is True and report["sessions"] >= 1
    session = report["session"]
    assert session["state"] == {"n": {"a": 1}, "product": "GoApp", "status": "running", "version": "1.0"}
    assert [event["name"] for event in session["events"]] == ["started", "nil-data"]
    assert [(metric["name"], metric["type"]) for metric in session["metrics"]] == [("cpu", "gauge"), ("t", "timer")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def datacat_web(tmp_path: Path, serve: Serve, built: Built) -> Iterator[str]:
    """datacat-web reading runwatch serve; its base URL."""
    port = _free_port()
    (tmp_path / "config.json").write_text(
        json.dumps({"server_url": serve.url, "port": str(port), "log_file": str(tmp_path / "web.log")})
    )
    process = subprocess.Popen([str(built.web)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_until(up, timeout=TIMEOUT, interval=0.1)
        yield url
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def test_datacat_web_lists_and_shows_runwatchs_sessions(serve: Serve, datacat_web: str) -> None:
    """datacat-web's pages and fragments answer 200 over runwatch serve and show its sessions."""
    product = f"WebProduct{time.time_ns()}"
    session_id = serve.create(product, "3.1", machine_id="m-web", hostname="web-host")
    serve.post(f"/api/sessions/{session_id}/events", {"name": "page_event", "category": "ui"})
    serve.post(f"/api/sessions/{session_id}/metrics", {"name": "fps", "value": 30})

    def page(path: str) -> str:
        with urllib.request.urlopen(datacat_web + path, timeout=TIMEOUT) as response:
            assert response.status == 200, path
            return str(response.read().decode())

    assert product in page("/") + page("/api/products-grid")
    assert session_id in page("/sessions?time_range=all") + page("/api/sessions-table?time_range=all")
    assert "healthy" in page("/api/server-status")
    assert session_id in page(f"/session/{session_id}")
    assert "web-host" in page(f"/api/session-info/{session_id}")
    assert "page_event" in page(f"/api/session-events/{session_id}")
    assert "fps" in page(f"/api/session-metrics-list/{session_id}")
    for path in (f"/api/session-timeline/{session_id}", f"/api/session-metrics-table/{session_id}", "/api/stats-cards"):
        page(path)
