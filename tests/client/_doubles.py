"""Test doubles and helpers of the client tests: an in-process double of runwatch's session routes,
a `runwatch serve` subprocess, and bounded waits."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runwatch.client import (
    DatacatClient,
)

TIMEOUT = 20.0


# The seed documents live beside the project (in a `shared/seeds` directory of an ancestor).
SEED = next(
    (
        candidate
        for candidate in (path / "shared" / "seeds" / "002_b2b18d50e8730478.txt" for path in Path(__file__).parents)
        if candidate.exists()
    ),
    Path("shared/seeds/002_b2b18d50e8730478.txt"),
)


class FakeServer:
    """A transport that answers like docs/sessions.md, in memory, with switches for failures.

    Attributes:
        down: raise ConnectionRefusedError instead of answering.
        gate: when set to an Event, requests wait on it (the sender blocks).
        lose_answers: apply this many batches, then fail as if the answer was lost.
        bad_name: a batch holding an event or metric of this name is refused with 422.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.operations: dict[str, list[dict[str, Any]]] = {}
        self.batch_ids: list[str] = []  # applied, in order
        self.attempted_batch_ids: list[str] = []
        self.requests: list[tuple[str, str, Any]] = []
        self.ended: set[str] = set()
        self.down = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lose_answers = 0
        self.bad_name: str | None = None
        self.status_override: deque[int] = deque()
        self.created = 0

    def __call__(self, method: str, path: str, body: bytes | None, headers: Any) -> tuple[int, bytes]:
        document = json.loads(body) if body else None
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        with self.lock:
            self.requests.append((method, path, document))
            self.lock.notify_all()
            if self.down:
                raise ConnectionRefusedError(111, "Connection refused")
            status, answer = self._answer(method, path, document)
        if status == 200 and path.endswith("/batch") and self.lose_answers:
            self.lose_answers -= 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return status, json.dumps(answer).encode()

    def _answer(self, method: str, path: str, document: Any) -> tuple[int, Any]:
        parts = [unquote(part) for part in urlsplit(path).path.split("/")[1:]]
        if parts == ["api", "sessions"]:
            self.created += 1
            session_id = f"s{self.created}"
            self.operations[session_id] = []
            return 201, {"session_id": session_id, "session": {"id": session_id, "metadata": document}}
        if parts[:2] != ["api", "sessions"] or len(parts) < 3:  # runwatch has no /health: 404, as any unknown path
            return 404, {"error": {"status": 404, "message": "Not Found", "field": None}}
        session_id = parts[2]
        if session_id not in self.operations:
            return 404, {"error": {"status": 404, "message": f"unknown session {session_id!r}", "field": None}}
        if method == "GET":
            return 200, {"id": session_id, "operations": self.operations[session_id]}
        action = parts[3]
        if session_id in self.ended:
            return 409, {"error": {"status": 409, "message": "the session has ended", "field": None}}
        if action != "batch":
            self.operations[session_id].append({"op": action, **(document or {})})
            if action == "end":
                self.ended.add(session_id)
            return 200, {"ok": True}
        self.attempted_batch_ids.append(document["batch_id"])
        if self.status_override:
            status = self.status_override.popleft()
            return status, {"error": {"status": status, "message": "forced", "field": None}}
        if document["batch_id"] in self.batch_ids:
            return 200, {"accepted": 0, "duplicate": True}
        operations = document["operations"]
        if self.bad_name is not None and any(op.get("name") == self.bad_name for op in operations):
            return 422, {"error": {"status": 422, "message": "bad name", "field": "operations[0].name"}}
        self.batch_ids.append(document["batch_id"])
        self.operations[session_id].extend(operations)
        if any(op["op"] == "end" for op in operations):
            self.ended.add(session_id)
        return 200, {"accepted": len(operations), "duplicate": False}

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait (bounded) until ``predicate`` holds after some request."""
        with self.lock:
            assert self.lock.wait_for(predicate, timeout), "timed out waiting for the fake server"

    def names(self, session_id: str) -> list[str]:
        """The names of the session's applied events and metrics, in order."""
        return [op.get("name", op["op"]) for op in self.operations[session_id]]


def open_client(fake: FakeServer, **options: Any) -> DatacatClient:
    """A non-blocking client on ``fake``, with fast retries and batching."""
    options = {"blocking": False, "flush_interval": 0.01, "retry_max_seconds": 0.02, **options}
    return DatacatClient("http://fake.invalid", transport=fake, **options)


class ServerProcess:
    """A ``runwatch serve`` subprocess on loopback; ``port=0`` picks a free port."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        command = [sys.executable, "-m", "runwatch.cli", "serve", "--port", str(port)]
        command += ["--db", str(directory / "s.db"), "--data-dir", str(directory / "d")]
        self._stderr = open(directory / "stderr.txt", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        lines: queue.Queue[str] = queue.Queue()
        # Drain stdout for the server's whole life, so its pipe never fills.
        self._reader = threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout], daemon=True)
        self._reader.start()
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("runwatch serve did not print its URL in time") from None
            found = re.search(r"runwatch: serving .* at (http://127\.0\.0\.1:(\d+))", line)
            if found:
                self.url, self.port = found.group(1), int(found.group(2))
                return

    def stop(self) -> None:
        """SIGTERM, then wait (bounded) for the drain; kill if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
        self._reader.join(TIMEOUT)  # EOF once the server exited
        self.process.stdout.close()
        self._stderr.close()


def all_events(client: DatacatClient, session_id: str) -> list[dict[str, Any]]:
    """Every event of a session, oldest first, read page by page."""
    events: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = client.get_session(session_id, events_limit=10_000, events_cursor=cursor, metrics_limit=1)
        events += page["events"]
        cursor = page["events_next_cursor"]
        if cursor is None:
            return events[::-1]
    raise AssertionError("too many pages")


def all_metrics(client: DatacatClient, session_id: str) -> list[dict[str, Any]]:
    """Every metric value of a session, oldest first, read page by page."""
    metrics: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = client.get_session(session_id, metrics_limit=10_000, metrics_cursor=cursor, events_limit=1)
        metrics += page["metrics"]
        cursor = page["metrics_next_cursor"]
        if cursor is None:
            return metrics[::-1]
    raise AssertionError("too many pages")


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll a server-side condition until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.02)  # polling interval of a bounded wait, not synchronisation


def wait_for_child(pid: int, timeout: float = TIMEOUT) -> int:
    """The exit code of a forked child; kills it and fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)  # polling interval of a bounded wait
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child did not finish in time")


def seed_examples() -> list[str]:
    """The Python code blocks of the datacat seed that are examples (not install commands)."""
    blocks = re.findall(r"```python\n(.*?)```", SEED.read_text(), re.S)
    return [block for block in blocks if "from datacat import" in block]


EXAMPLE_PRELUDE = """
import time as _time
_time.sleep = lambda seconds: None
class _Running:
    left = 3
    def __bool__(self):
        self.left -= 1
        return self.left >= 0
running = _Running()
def do_work():
    pass
"""
