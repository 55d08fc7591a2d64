"""A run ingested from a remote producer belongs to that producer, not to the ``runwatch serve`` storing it.

A real ``runwatch serve`` subprocess is stopped cleanly (SIGTERM) and started
again on the same port while a remote producer keeps posting batches (each
with a ``batch_id``, retried until acknowledged). Its runs must come through
the restart ``running``: the old server's pid is not their owner. What then
judges a remote run is the liveness stage: one whose heartbeats stop goes
``hung``; one that never sent heartbeats is not flagged.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port

from runwatch.pipeline.config import default_pipeline_config

# Guards every wait; nothing here legitimately takes this long.
TIMEOUT = 20.0


class Serve:
    """A ``runwatch serve`` subprocess on a fixed loopback port; its output is collected by a thread."""

    def __init__(self, config: Path, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "serve", "--config", str(config), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(TIMEOUT):
            self.process.kill()
            raise AssertionError(f"runwatch serve did not start: {self.lines}")
        assert self.process.poll() is None, self.lines

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if re.search(r"runwatch: serving .* at http://", line):
                self._ready.set()
        self._ready.set()  # exited: start() reports it

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, then the exit status (bounded); the process is gone afterwards."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(TIMEOUT)
            self._reader.join(TIMEOUT)
            assert self.process.stdout is not None
            self.process.stdout.close()
        return code


class Producer:
    """A remote producer: numbered batches to /api/ingest, each retried until acknowledged.

    Run ``quiet`` never sends a heartbeat; run ``beating`` sends one with
    every batch and asks for a 1 s heartbeat timeout.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        now = time.time()
        first = [
            {"kind": "lifecycle", "run_id": "quiet", "timestamp": now, "transition": "started"},
            {
                "kind": "lifecycle",
                "run_id": "beating",
                "timestamp": now,
                "transition": "started",
                "metadata": {"heartbeat_timeout_seconds": 1},
            },
        ]
        deadline = time.monotonic() + 4 * TIMEOUT
        with httpx.Client(base_url=self.url, timeout=2) as client:
            number = 0
            while not self.stopping.is_set() and time.monotonic() < deadline:
                ts = time.time()
                events: list[dict[str, Any]] = [
                    *first,
                    {"kind": "metric", "run_id": "quiet", "timestamp": ts, "values": {"n": number}},
                    {"kind": "metric", "run_id": "beating", "timestamp": ts, "values": {"n": number}},
                    {"kind": "heartbeat", "run_id": "beating", "timestamp": ts},
                ]
                first = []
                batch_id = f"batch-{number}"
                body = json.dumps({"batch_id": batch_id, "events": events})
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    try:
                        response = client.post(
                            "/api/ingest", content=body, headers={"content-type": "application/json"}
                        )
                    except httpx.TransportError:  # the server is restarting
                        time.sleep(0.05)
                        continue
                    if response.status_code in (200, 202):
                        self.acknowledged.append(batch_id)
                        break
                    if response.status_code != 503:
                        self.errors.append(f"{response.status_code} {response.text}")
                        return
                    time.sleep(0.05)
                number += 1
                time.sleep(0.01)

    def wait_for(self, count: int) -> None:
        """Until ``count`` batches in all were acknowledged (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.acknowledged) < count:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} of {count} batches acknowledged"
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(TIMEOUT)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The default graph of ``runwatch serve`` with liveness checks every 0.2 s."""
    graph = default_pipeline_config(alerts=True)
    graph["stages"]["liveness"]["check_interval_seconds"] = 0.2
    path = tmp_path / "serve.json"
    path.write_text(
        json.dumps({"db_path": str(tmp_path / "serve.db"), "data_dir": str(tmp_path / "d"), "pipeline": graph})
    )
    return path


@pytest.fixture
def servers() -> Iterator[list[Serve]]:
    """Every server a test starts; any still running at the end is killed."""
    started: list[Serve] = []
    yield started
    for server in started:
        if not server.process.stdout or not server.process.stdout.closed:
            server.stop(signal.SIGKILL)


def run_row(db: Path, run_id: str) -> tuple[str, str | None, int]:
    """(status, owner, crash events) of a run, read from the store directly."""
    with sqlite3.connect(db, timeout=5) as conn:
        status, owner, pk = conn.execute("SELECT status, owner, id FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        crashes = conn.execute(
            "SELECT count(*) FROM events WHERE run = ? AND type IN ('run_crashed', 'application_crashed')", (pk,)
        ).fetchone()[0]
    return status, owner, crashes


def test_a_clean_restart_of_serve_leaves_remote_runs_running_and_liveness_judges_them(
    config: Path, servers: list[Serve], tmp_path: Path
) -> None:
    """Remote runs keep running through a SIGTERM restart of the server; then the one whose heartbeats stop
    goes hung, and the one that never sent heartbeats stays running."""
    port = free_port()
    servers.append(Serve(config, port))
    producer = Producer(f"http://127.0.0.1:{port}")
    producer.start()
    try:
        producer.wait_for(20)
        assert servers[0].stop() == 0, servers[0].lines
        before_restart = len(producer.acknowledged)
        servers.append(Serve(config, port))
        assert any("serving" in line for line in servers[1].lines)
        producer.wait_for(before_restart + 20)
    finally:
        producer.stop()
    db = tmp_path / "serve.db"
    assert run_row(db, "quiet") == ("running", "remote", 0)
    assert run_row(db, "beating") == ("running", "remote", 0)

    deadline = time.monotonic() + TIMEOUT  # heartbeats stopped: 1 s timeout, 0.2 s checks
    while run_row(db, "beating")[0] != "hung":
        assert time.monotonic() < deadline, run_row(db, "beating")
        time.sleep(0.1)
    assert run_row(db, "quiet") == ("running", "remote", 0)
    with sqlite3.connect(db, timeout=5) as conn:
        stored = {row[0] for row in conn.execute("SELECT batch_id FROM ingest_batches")}
    assert set(producer.acknowledged) <= stored
    assert servers[1].stop() == 0, servers[1].lines
