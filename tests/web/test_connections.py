"""Tests for runwatch.web.connections: the connection cap, request-head and body deadlines, sockets after fork.

Everything runs over real loopback sockets against a real server: a
``WebMonitor`` in a subprocess with a low file-descriptor limit for the
exhaustion scenario, the web companion on a pipeline thread for the limits,
and a real ``os.fork()`` for the listening socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.pipeline.thread import PipelineThread
from runwatch.web.connections import default_max_connections
from runwatch.web.server import WebServer, WebSettings, web_companion

TIMEOUT = 10
#: The descriptor limit many systems start processes with.
COMMON_LIMIT = 1024
#: Idle connections with half a request head each: more than the limit.
HALF_OPEN = 1_100
PARTIAL_HEAD = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
MINIMAL_GRAPH = {
    "sources": {"app": {"type": "in_process"}},
    "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}, "live": {"type": "websocket_hub", "inputs": ["app"]}},
}

HOST_SCRIPT = """
import json, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
from runwatch import MonitorConfig, WebMonitor
tmp = sys.argv[1]
monitor = WebMonitor(MonitorConfig(db_path=tmp + "/host.db", data_dir=tmp + "/data", web_port=0, update_interval=3600))
monitor.start_training(run_id="host")
print(json.dumps({"url": monitor.web_url}), flush=True)
for line in sys.stdin:  # one line: the training loop saves a checkpoint (100 files open at once)
    files, result = [], "ok"
    try:
        for index in range(100):
            files.append(open(tmp + f"/checkpoint-{index}", "w"))
    except OSError as exc:
        result = str(exc)
    finally:
        for file in files:
            file.close()
    monitor.update_metrics({"checkpoints": 1.0})
    print(json.dumps({"open": result, "flushed": monitor.flush(timeout=10)}), flush=True)
monitor.close()
"""


@contextlib.contextmanager
def raised_descriptor_limit(wanted: int) -> Iterator[None]:
    """This process may open ``wanted`` descriptors (skips the test where the hard limit forbids it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard descriptor limit ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_server(sock: socket.socket) -> bool:
    """Block (bounded) until the server ends the connection: ``True`` on EOF or reset."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def still_open(sock: socket.socket) -> bool:
    """Whether the server has not closed ``sock`` (nothing readable, no EOF), without waiting."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))  # data but no EOF
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from ``sock``: status, headers (lowercase names), body (by Content-Length)."""
    sock.settimeout(TIMEOUT)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection before answering"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def connect_raw(port: int, payload: bytes = b"") -> socket.socket:
    """A loopback connection to ``port`` that has sent ``payload``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if payload:
        sock.sendall(payload)
    return sock


@contextlib.contextmanager
def web_server(tmp: Path, **settings: Any) -> Iterator[WebServer]:
    """The web companion with ``settings`` on a small pipeline."""
    context = ComponentContext(db_path=str(tmp / "web.db"), data_dir=tmp / "data")
    companion = web_companion(WebSettings(port=0, **settings), str(tmp / "web.db"))
    with PipelineThread(Pipeline(MINIMAL_GRAPH, context=context), companions=[companion]) as thread:
        yield thread.companion_values[0]


def counters(server: WebServer) -> dict[str, Any]:
    """The server's connection counters, read from its guard (no connection of its own needed)."""
    assert server.connections is not None
    return server.connections.statistics()._asdict()


def web_statistics(port: int) -> dict[str, Any]:
    """The server's connection counters, from ``/api/pipeline``."""
    response = httpx.get(f"http://127.0.0.1:{port}/api/pipeline", timeout=TIMEOUT)
    assert response.status_code == 200
    web: dict[str, Any] = response.json()["web"]
    return web


# -- the host keeps its descriptors ----------------------------------------------------------------


def test_half_open_connections_never_exhaust_the_host(tmp_path: Path) -> None:
    """1,100 half-sent requests at a 1,024-descriptor limit: the host still opens files and /api/health answers."""
    with (
        raised_descriptor_limit(4 * COMMON_LIMIT),
        subprocess.Popen(
            [sys.executable, "-c", HOST_SCRIPT, str(tmp_path), str(COMMON_LIMIT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as host,
    ):
        assert host.stdout is not None and host.stdin is not None
        sockets: list[socket.socket] = []
        try:
            url = json.loads(host.stdout.readline())["url"]
            port = int(url.rsplit(":", 1)[1])
            for _ in range(HALF_OPEN):
                sockets.append(connect_raw(port, PARTIAL_HEAD))
            # Every half-open socket is still held by this test while the host is asked to work.
            health = httpx.get(f"{url}/api/health", timeout=TIMEOUT)
            host.stdin.write("checkpoint\n")
            host.stdin.flush()
            report = json.loads(host.stdout.readline())
            web = web_statistics(port)
        finally:
            for sock in sockets:
                sock.close()
            host.stdin.close()
            try:
                host.wait(TIMEOUT)
            finally:
                host.kill()
    assert report == {"open": "ok", "flushed": True}
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert web["max_connections"] == default_max_connections(COMMON_LIMIT) == COMMON_LIMIT // 2
    assert web["open_connections"] <= web["max_connections"]
    # Past the cap, each new connection evicted an idle one or was refused: every one counted.
    assert web["evicted_connections"] + web["refused_connections"] >= HALF_OPEN - web["max_connections"]
    assert web["accept_errors"] == 0
    assert host.returncode == 0


def test_the_default_cap_is_half_the_descriptor_limit() -> None:
    """The cap leaves the host half of its descriptors, whatever the limit."""
    assert default_max_connections(1024) == 512
    assert default_max_connections(20_000) == 10_000
    assert default_max_connections(1) == 1
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    expected = (1 << 16) if soft == resource.RLIM_INFINITY else soft // 2
    assert default_max_connections() == expected


# -- limits --------------------------------------------------------------------------------------------


def test_a_request_head_that_never_completes_is_closed_after_the_header_timeout(tmp_path: Path) -> None:
    """A partial head, first or after a kept-alive response, is closed at the deadline (not before); counted."""
    header_timeout = 0.5
    with web_server(tmp_path, header_timeout_seconds=header_timeout) as server:
        port = server.port
        started = time.monotonic()
        first = connect_raw(port, PARTIAL_HEAD)
        assert closed_by_server(first)
        assert time.monotonic() - started >= header_timeout
        kept_alive = connect_raw(port, PARTIAL_HEAD + b"\r\n")
        status, headers, _ = read_response(kept_alive)
        assert status == 200 and headers.get("connection", "").lower() != "close"
        kept_alive.sendall(PARTIAL_HEAD)  # the next request, never finished
        assert closed_by_server(kept_alive)
        complete = connect_raw(port, PARTIAL_HEAD + b"\r\n")
        assert read_response(complete)[0] == 200  # a prompt client is served as before
        web = web_statistics(port)  # also served over HTTP
        assert web == {**web, "header_timeouts": 2}
    first.close()
    kept_alive.close()
    complete.close()
    assert web["header_timeouts"] == 2


async def test_past_the_cap_the_oldest_idle_connection_makes_room(tmp_path: Path) -> None:
    """At the cap, a new request evicts the connection that waited longest for a head; busy ones are never evicted."""
    with web_server(tmp_path, max_connections=4, header_timeout_seconds=30) as server:
        port = server.port
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=TIMEOUT) as subscriber:
            idle = [connect_raw(port, PARTIAL_HEAD) for _ in range(3)]  # 1 websocket + 3 idle = the cap
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                health = await client.get(f"http://127.0.0.1:{port}/api/health")
            assert health.status_code == 200
            assert closed_by_server(idle[0])  # the longest-waiting one
            assert still_open(idle[1]) and still_open(idle[2])
            await subscriber.ping()  # the websocket is busy: never evicted
            web = counters(server)
            for sock in idle:
                sock.close()
    assert web["evicted_connections"] == 1 and web["refused_connections"] == 0
    assert web["open_connections"] <= web["max_connections"] == 4


async def test_past_the_cap_with_every_connection_busy_a_new_one_is_refused(tmp_path: Path) -> None:
    """When every open connection is a websocket, a new connection is closed at once and counted; the others live on."""
    with web_server(tmp_path, max_connections=3) as server:
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url) as first, connect(url) as second, connect(url) as third:
            refused = connect_raw(server.port, PARTIAL_HEAD + b"\r\n")
            assert closed_by_server(refused)
            refused.close()
            for subscriber in (first, second, third):
                await subscriber.ping()
            web = counters(server)
    assert web["refused_connections"] == 1
    assert web["open_connections"] == 3
    assert web["evicted_connections"] == 0


def test_a_request_body_that_stops_arriving_is_answered_408(tmp_path: Path) -> None:
    """A write whose body stalls gets 408 after body_timeout_seconds and its connection is closed."""
    with web_server(tmp_path, body_timeout_seconds=0.5) as server:
        port = server.port
        head = (
            b"POST /api/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        sock = connect_raw(port, head + b'{"events": [')
        status, headers, body = read_response(sock)
        assert closed_by_server(sock)
        sock.close()
    assert status == 408
    assert headers["connection"].lower() == "close"
    assert json.loads(body)["error"]["status"] == 408


def test_settings_refuse_bad_limits() -> None:
    """A cap below 1 or a non-positive deadline is refused naming the setting."""
    with pytest.raises(ValueError, match="max_connections"):
        WebSettings(max_connections=0)
    with pytest.raises(TypeError, match="max_connections"):
        WebSettings(max_connections=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="header_timeout_seconds"):
        WebSettings(header_timeout_seconds=0)
    with pytest.raises(ValueError, match="body_timeout_seconds"):
        WebSettings(body_timeout_seconds=float("inf"))
    with pytest.raises(ValueError, match="web_max_connections"):
        MonitorConfig(web_max_connections=0)


# -- fork --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_neither_the_port_nor_the_connections(tmp_path: Path) -> None:
    """With a forked child alive, the parent's close() closes its port and connections; the next monitor binds it."""
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    monitor = WebMonitor(config)
    port = int(str(monitor.web_url).rsplit(":", 1)[1])
    kept_alive = connect_raw(port, PARTIAL_HEAD + b"\r\n")
    assert read_response(kept_alive)[0] == 200  # an accepted connection, open at the fork
    release_read, release_write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:  # the child (a DataLoader worker, say) lives on until released
        try:
            os.close(release_write)
            os.read(release_read, 1)
        finally:
            os._exit(0)
    os.close(release_read)
    try:
        monitor.close()
        assert closed_by_server(kept_alive)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        with WebMonitor(config.with_changes(web_port=port)) as second:
            assert second.web_url == f"http://127.0.0.1:{port}"
    finally:
        kept_alive.close()
        os.close(release_write)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
