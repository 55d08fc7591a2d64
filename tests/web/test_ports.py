"""A taken dashboard port, /api/health's store and writers, and direct TLS — with real servers on loopback."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from runwatch.assemble import monitor_pipeline_config
from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.pipeline.thread import PipelineThread
from runwatch.web.ports import plan_taken_port, probe_health, same_store, store_identity
from runwatch.web.server import WebSettings, web_companion

TIMEOUT = 20


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def monitor_on(tmp_path: Path, db: Path, port: int, **settings: Any) -> WebMonitor:
    """A monitor of ``db`` whose dashboard is to listen on ``port``."""
    return WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "data"), web_port=port, **settings))


# -- deciding (pure) ----------------------------------------------------------------------------------


def test_a_port_held_for_the_same_store_is_used_as_it_is(tmp_path: Path) -> None:
    """Same store (by file identity, whatever the path spelling): use it, fixed port or not, and say where."""
    db = tmp_path / "runs.db"
    db.write_bytes(b"")
    link = tmp_path / "link.db"
    link.symlink_to(db)
    health = {"store": store_identity(link), "live_store": True}
    for fixed in (True, False):
        plan = plan_taken_port("127.0.0.1", 8080, db, health, fixed=fixed)
        assert plan.action == "use_existing" and plan.url == "http://127.0.0.1:8080"
        assert (
            plan.message == f"runwatch: {db} is already served at http://127.0.0.1:8080, with this process's runs, live"
        )
    assert same_store(health, os.path.relpath(db))


@pytest.mark.parametrize(
    ("health", "holder"),
    [
        pytest.param(None, "another program", id="not-runwatch"),
        pytest.param({"store": {"path": "/elsewhere.db", "identity": "1:2"}}, "another store", id="other-store"),
    ],
)
def test_a_port_held_by_anything_else_moves_unless_fixed(tmp_path: Path, health: Any, holder: str) -> None:
    """Not fixed: listen on a free port and say why; fixed: fail, naming who holds it."""
    moved = plan_taken_port("127.0.0.1", 8080, tmp_path / "runs.db", health, fixed=False)
    assert (moved.action, moved.port) == ("listen", 0) and holder in moved.message
    failed = plan_taken_port("127.0.0.1", 9000, tmp_path / "runs.db", health, fixed=True)
    assert failed.action == "fail" and "port 9000 on 127.0.0.1 is taken by" in failed.message
    assert holder in failed.message and "None" not in failed.message


# -- real servers -------------------------------------------------------------------------------------


def test_a_second_monitor_of_the_same_store_shares_the_first_ones_dashboard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second script gets the first one's URL (never None), one line says so, and its runs are served there."""
    db = tmp_path / "runs.db"
    port = free_port()
    first = monitor_on(tmp_path, db, port)
    try:
        with caplog.at_level(logging.WARNING, logger="runwatch.web"):
            second = monitor_on(tmp_path, db, port)
        try:
            assert first.web_url == second.web_url == f"http://127.0.0.1:{port}"
            lines = [r.getMessage() for r in caplog.records if "already served" in r.getMessage()]
            assert lines == [
                f"runwatch: {db} is already served at http://127.0.0.1:{port}, with this process's runs"
                " (reload the page to see new ones)"
            ]
            second.start_training(run_id="from-second")
            second.update_metrics({"x": 1.0})
            assert second.flush()
            runs = httpx.get(f"{second.web_url}/api/runs", timeout=TIMEOUT).json()["runs"]
            assert [run["run_id"] for run in runs] == ["from-second"]
        finally:
            second.close()
    finally:
        first.close()


def test_a_fixed_port_held_by_another_program_says_who_and_the_monitor_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A monitor whose fixed port another program holds logs one error naming it; recording still works."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="runwatch.web"):
            monitor = monitor_on(tmp_path, tmp_path / "runs.db", port)
        try:
            assert monitor.web_url is None
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert any(f"port {port} on 127.0.0.1 is taken by another program" in line for line in errors), errors
            monitor.start_training(run_id="still-recorded")
            assert monitor.flush()
        finally:
            monitor.close()


def test_a_preferred_port_held_by_another_program_moves_to_a_free_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A port that is only a preference (like the default 8080) moves when taken, and the new URL works."""
    config = MonitorConfig(db_path=str(tmp_path / "runs.db"), data_dir=str(tmp_path / "data"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = WebSettings(port=port, port_fixed=False)
        with caplog.at_level(logging.WARNING, logger="runwatch.web"):
            context = ComponentContext(db_path=config.db_path, data_dir=Path(config.data_dir))
            pipeline = Pipeline(monitor_pipeline_config(config), context=context)
            thread = PipelineThread(pipeline, companions=[web_companion(settings, config.db_path)])
            thread.start()
        try:
            server = thread.companion_values[0]
            assert server is not None and server.port != port
            assert httpx.get(f"{server.url}/api/health", timeout=TIMEOUT).status_code == 200
            assert any(
                "is taken by another program; the dashboard uses a free port" in r.getMessage() for r in caplog.records
            )
        finally:
            thread.close()


def test_serve_over_a_store_already_served_points_there_and_exits_0(tmp_path: Path) -> None:
    """``runwatch serve`` on a port that already serves its store prints the URL and exits 0 (no second server)."""
    db = tmp_path / "runs.db"
    port = free_port()
    monitor = monitor_on(tmp_path, db, port)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "runwatch.cli",
                "serve",
                "--db",
                str(db),
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "serve"),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr
        assert f"is already served at http://127.0.0.1:{port}" in output and "None" not in output
    finally:
        monitor.close()


def test_health_names_the_store_and_who_writes_it(tmp_path: Path) -> None:
    """/api/health gives the store's path and identity, whether it follows the store live, and the live writers."""
    db = tmp_path / "runs.db"
    monitor = monitor_on(tmp_path, db, 0)
    try:
        monitor.start_training(run_id="local-run")
        assert monitor.flush()
        assert monitor.web_url is not None
        url = monitor.web_url
        posted = httpx.post(
            f"{url}/api/ingest",
            json={
                "batch_id": "b1",
                "events": [
                    {"kind": "lifecycle", "run_id": "remote-run", "transition": "started", "owner": "gpu-box:4242:1.0"}
                ],
            },
            timeout=TIMEOUT,
        )
        assert posted.status_code == 202, posted.text
        health = probe_health("127.0.0.1", int(url.rsplit(":", 1)[1]))
        assert (
            health["store"]["path"] == str(db.resolve())
            and health["store"]["identity"] == store_identity(db)["identity"]
        )
        assert health["live_store"] is False  # this graph has no store tail
        writers = {writer["owner"]: writer for writer in health["writers"]}
        assert writers["gpu-box:4242:1.0"]["runs"] == ["remote-run"] and writers["gpu-box:4242:1.0"]["via"] == "ingest"
        own = [writer for owner, writer in writers.items() if owner != "gpu-box:4242:1.0"]
        assert [writer["runs"] for writer in own] == [["local-run"]]
        assert isinstance(own[0]["last_activity"], str)
    finally:
        monitor.close()


def test_probing_a_port_that_is_not_http_answers_none_quickly() -> None:
    """A listener that never answers is "another program", found within the probe's timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        assert probe_health("127.0.0.1", silent.getsockname()[1], timeout=0.3) is None
    assert probe_health("127.0.0.1", free_port(), timeout=0.3) is None


# -- direct TLS ----------------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    return cert, key


def test_tls_serves_https_and_a_plain_request_is_not_answered(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    """With a certificate the server speaks HTTPS (verified against it); a plain HTTP request gets no HTTP answer."""
    cert, key = certificate
    monitor = monitor_on(tmp_path, tmp_path / "runs.db", 0, web_ssl_certfile=str(cert), web_ssl_keyfile=str(key))
    try:
        assert monitor.web_url is not None and monitor.web_url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=context, timeout=TIMEOUT) as client:
            assert client.get(f"{monitor.web_url}/api/health").json()["status"] == "ok"
        with pytest.raises(httpx.HTTPError):
            httpx.get(monitor.web_url.replace("https://", "http://") + "/api/health", timeout=2)
    finally:
        monitor.close()


def test_a_bad_certificate_is_an_error_naming_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A certificate that cannot be loaded is reported at start, naming the file; nothing listens."""
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate")
    with caplog.at_level(logging.ERROR, logger="runwatch.web"):
        monitor = monitor_on(tmp_path, tmp_path / "runs.db", 0, web_ssl_certfile=str(bogus))
    try:
        assert monitor.web_url is None
        assert any(str(bogus) in r.getMessage() for r in caplog.records)
    finally:
        monitor.close()
