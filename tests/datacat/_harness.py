"""The datacat harness: a real `runwatch serve` on loopback, driven with the exact HTTP exchanges datacat's
clients produce, and checks of datacat's exact answers.

The exchanges come from datacat's server, daemon, Go client, Python client and datacat-web at
OriginalDaemon/datacat 77ab370 (docs/datacat.md). Requests are made with ``http.client`` so that
every header is what the test says: no Content-Type, gzip bodies, a bearer key, an empty body.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

TIMEOUT = 20.0
#: One unit of real time for the liveness tests, scaled by RUNWATCH_TEST_TIME_SCALE on slow machines.
UNIT = float(os.environ.get("RUNWATCH_TEST_TIME_SCALE", "1"))

#: RFC 3339 as Go prints a time: nanoseconds without trailing zeros, ``Z`` or an offset.
GO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?(Z|[+-]\d{2}:\d{2})")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
OK_BODY = b'{"status":"ok"}\n'

T = TypeVar("T")


@dataclass
class Answer:
    """One HTTP answer: status, headers (lowercased names) and the raw body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Serve:
    """A ``runwatch serve`` subprocess on a free loopback port.

    Args:
        directory: where its store and logs go.
        heartbeat_timeout: ``--session-heartbeat-timeout`` (seconds).
        token: a bearer token the server requires (``RUNWATCH_TOKEN``), or ``None``.
        config: a monitor config file (``--config``), e.g. with a pipeline of its own.
    """

    def __init__(
        self,
        directory: Path,
        *,
        heartbeat_timeout: float | None = None,
        token: str | None = None,
        config: Path | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.db_path = directory / "s.db"
        command = [sys.executable, "-m", "runwatch.cli", "serve", "--port", "0"]
        command += ["--db", str(self.db_path), "--data-dir", str(directory / "d")]
        if heartbeat_timeout is not None:
            command += ["--session-heartbeat-timeout", str(heartbeat_timeout)]
        if config is not None:
            command += ["--config", str(config)]
        env = {key: value for key, value in os.environ.items() if key not in ("RUNWATCH_TOKEN", "MONITOR_WEB_TOKEN")}
        if token is not None:
            env["RUNWATCH_TOKEN"] = token
        self._stderr = open(directory / "stderr.txt", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
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
            found = re.search(r"runwatch: serving .* at http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
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
        self._reader.join(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._stderr.close()

    # -- exchanges -----------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request exactly as given: ``body=None`` sends no body and no Content-Length."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            connection.putrequest(method, path, skip_accept_encoding=True)
            sent = {key.lower(): value for key, value in (headers or {}).items()}
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            if body is not None and "content-length" not in sent:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            connection.close()

    def post(self, path: str, document: Any = None, *, raw: bytes | None = None, **headers: str) -> Answer:
        """POST a JSON document (or raw bytes) with ``Content-Type: application/json``, as the daemon does."""
        body = raw if raw is not None else json.dumps(document, separators=(",", ":")).encode()
        return self.send("POST", path, body, {"Content-Type": "application/json", **_header_names(headers)})

    def get(self, path: str, **headers: str) -> Answer:
        """GET with no body and no Content-Type, as the daemon, the Go client and datacat-web do."""
        return self.send("GET", path, None, _header_names(headers))

    def create(self, product: str = "P", version: str = "1", **fields: Any) -> str:
        """Create a session (200 ``{"session_id"}`` checked); its id."""
        answer = self.post("/api/sessions", {"product": product, "version": version, **fields})
        assert answer.status == 200, answer
        session_id = answer.json()["session_id"]
        assert UUID.fullmatch(session_id), session_id
        return str(session_id)

    def session(self, session_id: str) -> dict[str, Any]:
        """``GET /api/sessions/{id}``: the session document (200 checked, Go-decodable)."""
        answer = self.get(f"/api/sessions/{session_id}")
        assert answer.status == 200, answer
        assert answer.headers["content-type"] == "application/json"
        document = answer.json()
        check_session_document(document)
        return dict(document)

    def all_sessions(self) -> list[dict[str, Any]]:
        """``GET /api/data/sessions`` (200 checked, every document Go-decodable)."""
        answer = self.get("/api/data/sessions")
        assert answer.status == 200, answer
        assert answer.headers["content-type"] == "application/json"
        documents = answer.json()
        assert isinstance(documents, list)
        for document in documents:
            check_session_document(document)
        return documents


def _header_names(headers: Mapping[str, str]) -> dict[str, str]:
    # Keyword arguments spell headers with underscores: content_encoding=... is Content-Encoding.
    return {name.replace("_", "-").title(): value for name, value in headers.items()}


def gzipped(document: Any) -> bytes:
    """A JSON document gzipped, as datacat's daemon sends it with compression on."""
    return gzip.compress(json.dumps(document, separators=(",", ":")).encode())


# -- checks of datacat's answers -------------------------------------------------------------------


def assert_ok(answer: Answer) -> None:
    """datacat's "JSON ok": 200, ``application/json`` (no charset), ``{"status":"ok"}`` and a newline."""
    assert (answer.status, answer.headers.get("content-type"), answer.body) == (200, "application/json", OK_BODY), (
        answer
    )


def assert_text_error(answer: Answer, status: int, text: str) -> None:
    """datacat's text error (Go's ``http.Error``): the status, ``text/plain; charset=utf-8``, nosniff, the text
    and a newline."""
    assert answer.status == status, answer
    assert answer.headers.get("content-type") == "text/plain; charset=utf-8", answer
    assert answer.headers.get("x-content-type-options") == "nosniff", answer
    assert answer.body == text.encode() + b"\n", answer


def _time(value: Any, where: str) -> None:
    assert isinstance(value, str) and GO_TIME.fullmatch(value), f"{where}: {value!r} is not Go's RFC 3339"


def _strings(value: Any, where: str) -> None:
    assert value is None or (isinstance(value, list) and all(isinstance(item, str) for item in value)), where


def _object(value: Any, where: str) -> None:
    assert value is None or isinstance(value, dict), where


def check_session_document(document: Any) -> None:
    """What the Go client (and datacat-web through it) needs to decode a session, and datacat's key order.

    Every timestamp strict RFC 3339; the four flags booleans; ``labels``, ``stacktrace``, ``tags``
    arrays of strings; ``data``, ``state``, ``metadata`` objects; ``source_line`` and ``count``
    integers; ``value`` a number; ``ended_at``, ``last_heartbeat``, ``machine_id`` and
    ``hostname`` absent rather than null.
    """
    assert isinstance(document, dict)
    keys = list(document)
    expected = [
        key
        for key in (
            "id",
            "created_at",
            "updated_at",
            "ended_at",
            "last_heartbeat",
            "active",
            "suspended",
            "crashed",
            "hung",
            "machine_id",
            "hostname",
            "state",
            "state_history",
            "events",
            "metrics",
        )
        if key in document
    ]
    assert keys == expected, keys
    for key in ("id", "created_at", "updated_at", "active", "suspended", "crashed", "hung", "state"):
        assert key in document, key
    for key in ("created_at", "updated_at", "ended_at", "last_heartbeat"):
        if key in document:
            _time(document[key], key)
    for key in ("active", "suspended", "crashed", "hung"):
        assert isinstance(document[key], bool), key
    for key in ("machine_id", "hostname"):
        if key in document:
            assert isinstance(document[key], str) and document[key], key
    assert isinstance(document["state"], dict)
    for index, entry in enumerate(document["state_history"]):
        assert list(entry) == ["timestamp", "state"], entry
        _time(entry["timestamp"], f"state_history[{index}]")
        assert isinstance(entry["state"], dict)
    event_keys = ["timestamp", "name", "category", "group", "labels", "message", "data"]
    optional = ["stacktrace", "exception_type", "exception_msg", "source_file", "source_line", "source_function"]
    for index, event in enumerate(document["events"]):
        where = f"events[{index}]"
        assert list(event)[:7] == event_keys and all(key in optional for key in list(event)[7:]), event
        assert list(event)[7:] == [key for key in optional if key in event], event
        _time(event["timestamp"], where)
        for key in ("name", "category", "group", "message"):
            assert isinstance(event[key], str), (where, key)
        _strings(event["labels"], where)
        _object(event["data"], where)
        if "stacktrace" in event:
            _strings(event["stacktrace"], where)
            assert event["stacktrace"], where
        if "source_line" in event:
            assert type(event["source_line"]) is int and event["source_line"] != 0, where
    for index, metric in enumerate(document["metrics"]):
        where = f"metrics[{index}]"
        assert list(metric)[:4] == ["timestamp", "name", "type", "value"], metric
        assert list(metric)[4:] == [key for key in ("count", "unit", "tags", "metadata") if key in metric], metric
        _time(metric["timestamp"], where)
        assert isinstance(metric["value"], (int, float)) and not isinstance(metric["value"], bool), where
        if "count" in metric:
            assert type(metric["count"]) is int, where
        if "tags" in metric:
            _strings(metric["tags"], where)
            assert metric["tags"], where
        if "metadata" in metric:
            assert isinstance(metric["metadata"], dict) and metric["metadata"], where


def go_epoch(text: str) -> float:
    """Seconds since the epoch of a time as Go prints it (to the microsecond; year 1 included)."""
    found = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", text)
    assert found, text
    whole, fraction, zone = found.groups()
    parsed = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return (parsed - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() + float("0." + (fraction or "0"))


def without_times(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries with their ``timestamp`` checked as Go's RFC 3339 and removed."""
    out = []
    for item in items:
        item = dict(item)
        _time(item.pop("timestamp"), "timestamp")
        out.append(item)
    return out


def wait_until(condition: Callable[[], T], timeout: float = TIMEOUT, interval: float = 0.05) -> T:
    """Poll ``condition`` until it is truthy (bounded); its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
