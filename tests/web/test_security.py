"""Tests for runwatch.web.security: Host and Origin allowlists, bearer token, writes, static files.

Every request goes to 127.0.0.1. Paths that an HTTP client would normalise
(``..``, backslashes, NUL) are sent byte for byte over a raw loopback socket.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

import runwatch.monitor
from runwatch.config import MonitorConfig
from runwatch.media.images import MAX_IMAGE_BYTES
from runwatch.monitor import WebMonitor
from runwatch.web.app import STATIC_DIR
from runwatch.web.security import LOOPBACK_HOSTS, SecurityPolicy
from runwatch.web.server import WebSettings
from runwatch.wire.ingest import IMAGE_BODY_TYPE, IMAGE_INGEST_PATH

TOKEN = "secret-token-123"
TIMEOUT = 10
SQLITE_MAGIC = b"SQLite format 3\x00"
STATIC_FILES = {
    path.relative_to(STATIC_DIR).as_posix(): path.read_bytes() for path in STATIC_DIR.rglob("*") if path.is_file()
}
MONITOR_SOURCE = Path(runwatch.monitor.__file__).read_bytes()


@dataclass
class Server:
    """A running monitor, its port and the path of its store."""

    monitor: WebMonitor
    db_path: Path

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.monitor.web_url.rsplit(":", 1)[1])

    @property
    def base(self) -> str:
        """The HTTP base URL (on 127.0.0.1)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        """The websocket base URL (on 127.0.0.1)."""
        return f"ws://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        """A new HTTP client for this server."""
        return httpx.Client(base_url=self.base, timeout=TIMEOUT, **kwargs)


def start(tmp: Path, **options: Any) -> Server:
    """A monitor on a free port that logged one small run (run id "sec-run")."""
    db_path = tmp / "m.db"
    monitor = WebMonitor(MonitorConfig(db_path=str(db_path), data_dir=str(tmp / "d"), web_port=0, **options))
    monitor.start_training({"secret_setting": 1}, run_id="sec-run")
    monitor.update_metrics({"loss": 0.25})
    monitor.record_event("checkpoint", {"n": 1})
    monitor.update_game_state({"score": 3})
    assert monitor.flush()
    return Server(monitor, db_path)


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default policy (loopback, no token)."""
    server = start(tmp_path_factory.mktemp("open"))
    try:
        yield server
    finally:
        server.monitor.close()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that requires the bearer token TOKEN."""
    server = start(tmp_path_factory.mktemp("token"), web_token=TOKEN)
    try:
        yield server
    finally:
        server.monitor.close()


@dataclass
class RawResponse:
    """What came back for a raw HTTP request."""

    status: int
    head: bytes
    body: bytes


def raw_request(
    port: int, target: bytes, *, method: bytes = b"GET", headers: dict[str, str] | None = None
) -> RawResponse:
    """Send one HTTP/1.1 request with ``target`` exactly as given (no normalisation) to 127.0.0.1."""
    lines = [method + b" " + target + b" HTTP/1.1", f"Host: 127.0.0.1:{port}".encode(), b"Connection: close"]
    lines += [f"{name}: {value}".encode() for name, value in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return RawResponse(status, head, body)


def loopback_socket(port: int) -> socket.socket:
    """A non-blocking TCP socket connected to 127.0.0.1:port (to send any Host header over loopback)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setblocking(False)
    return sock


async def handshake_status(url: str, **kwargs: Any) -> int:
    """101 if the websocket handshake succeeds (and the server's first message arrives), else the HTTP status."""
    try:
        with anyio.fail_after(TIMEOUT):
            async with connect(url, open_timeout=TIMEOUT, **kwargs) as ws:
                if "/ws/ingest" not in url:
                    assert json.loads(await ws.recv())["type"] == "subscribed"
                return 101
    except InvalidStatus as exc:
        return exc.response.status_code


GET_ROUTES = [
    "/api/runs",
    "/api/runs/sec-run",
    "/api/runs/sec-run/metrics",
    "/api/runs/sec-run/metrics/names",
    "/api/runs/sec-run/events",
    "/api/runs/sec-run/state",
    "/api/runs/sec-run/export",
    "/api/status",
    "/api/stats",
    "/api/state",
    "/api/metrics/history?metric=loss",
    "/api/metrics/summary",
    "/api/events",
    "/api/pipeline",
    "/api/health",
    "/metrics",
    "/openapi.json",
    "/docs",
]


# -- binding -----------------------------------------------------------------------------------------


def test_default_bind_is_loopback(open_server: Server) -> None:
    """By default the server binds 127.0.0.1 only, and its URL names loopback."""
    assert MonitorConfig().web_host == "127.0.0.1"
    assert WebSettings().host == "127.0.0.1"
    assert open_server.monitor.web_url == f"http://127.0.0.1:{open_server.port}"
    listening = [
        conn.laddr
        for conn in psutil.Process().net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == open_server.port
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening)


def test_default_policy_allows_only_loopback_hosts_and_no_token() -> None:
    """The default SecurityPolicy names only loopback hosts and configures no token."""
    policy = SecurityPolicy()
    assert policy.token is None
    assert set(policy.allowed_hosts) == set(LOOPBACK_HOSTS)
    assert "*" not in policy.allowed_hosts


def test_binding_all_interfaces_without_token_generates_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """web_host="0.0.0.0" with no token generates a token, enforced on the API and never logged."""
    caplog.set_level(logging.DEBUG)
    monitor = WebMonitor(
        MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0, web_host="0.0.0.0")
    )
    try:
        token = monitor.web_token
        assert token is not None and len(token) >= 16
        port = int(monitor.web_url.rsplit(":", 1)[1])
        assert monitor.web_url == f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
            assert client.get("/api/runs").status_code == 401
            allowed = client.get("/api/runs", headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200
            assert token not in allowed.text
        assert all(token not in record.getMessage() for record in caplog.records)
    finally:
        monitor.close()


# -- Host header ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.example", id="foreign"),
        pytest.param("evil.example:{port}", id="foreign-with-port"),
        pytest.param("127.0.0.1.evil.example", id="loopback-prefix"),
        pytest.param("localhost.evil.example:{port}", id="localhost-prefix"),
        pytest.param("10.0.0.1:{port}", id="private-address"),
        pytest.param("", id="empty"),
    ],
)
def test_foreign_host_header_is_400(open_server: Server, host: str) -> None:
    """A Host header naming something other than loopback is refused with 400 (DNS rebinding)."""
    with open_server.client() as client:
        response = client.get("/api/runs", headers={"Host": host.format(port=open_server.port)})
    assert response.status_code == 400
    assert response.json() == {"error": {"status": 400, "message": "invalid Host header", "field": None}}


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1:{port}", id="ipv4"),
        pytest.param("localhost:{port}", id="localhost"),
        pytest.param("LOCALHOST:{port}", id="localhost-uppercase"),
        pytest.param("[::1]:{port}", id="ipv6"),
        pytest.param("127.0.0.1", id="no-port"),
    ],
)
def test_loopback_host_headers_are_accepted(open_server: Server, host: str) -> None:
    """Loopback names, with or without a port, are allowed Host headers."""
    with open_server.client() as client:
        response = client.get("/api/runs", headers={"Host": host.format(port=open_server.port)})
    assert response.status_code == 200


@pytest.mark.parametrize("path", [pytest.param("/ws", id="live"), pytest.param("/ws/ingest", id="ingest")])
async def test_foreign_host_websocket_handshake_is_refused(open_server: Server, path: str) -> None:
    """A websocket handshake whose Host is not loopback is refused (sent over a loopback socket)."""
    sock = loopback_socket(open_server.port)
    try:
        status = await handshake_status(f"ws://evil.example:{open_server.port}{path}", sock=sock)
    finally:
        sock.close()
    assert 400 <= status < 500


# -- websocket Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://evil.example", id="foreign"),
        pytest.param("https://evil.example", id="foreign-https"),
        pytest.param("null", id="null"),
        pytest.param("http://127.0.0.1:1", id="other-port"),
        pytest.param("http://127.0.0.1:{port}.evil.example", id="suffix"),
        pytest.param("ftp://127.0.0.1:{port}", id="other-scheme"),
    ],
)
@pytest.mark.parametrize("path", [pytest.param("/ws", id="live"), pytest.param("/ws/ingest", id="ingest")])
async def test_websocket_with_foreign_origin_is_refused(open_server: Server, origin: str, path: str) -> None:
    """A browser handshake from another origin is refused with 403."""
    url = open_server.ws + path
    status = await handshake_status(url, origin=origin.format(port=open_server.port))
    assert status == 403


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://127.0.0.1:{port}", id="http"),
        pytest.param("https://127.0.0.1:{port}", id="https"),
        pytest.param("http://127.0.0.1:{port}/", id="trailing-slash"),
    ],
)
async def test_websocket_with_same_origin_is_accepted(open_server: Server, origin: str) -> None:
    """A handshake from the page's own origin is accepted."""
    assert await handshake_status(open_server.ws + "/ws", origin=origin.format(port=open_server.port)) == 101


@pytest.mark.parametrize("path", [pytest.param("/ws", id="live"), pytest.param("/ws/ingest", id="ingest")])
async def test_websocket_without_origin_is_accepted(open_server: Server, path: str) -> None:
    """A program that sends no Origin (not a browser) may connect."""
    assert await handshake_status(open_server.ws + path) == 101


# -- bearer token -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GET_ROUTES)
def test_token_protects_every_data_route(token_server: Server, path: str) -> None:
    """Every API route, /metrics and the API docs answer 401 without the token, 200 with header or query token."""
    separator = "&" if "?" in path else "?"
    with token_server.client() as client:
        missing = client.get(path)
        assert missing.status_code == 401
        assert missing.json()["error"]["status"] == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-000"}).status_code == 401
        assert client.get(f"{path}{separator}token=wrong-token-000").status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get(f"{path}{separator}token={TOKEN}").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Basic {TOKEN}", id="basic-scheme"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param("Bearer", id="scheme-only"),
        pytest.param(f"Bearer {TOKEN[:-1]}", id="prefix"),
        pytest.param(f"Bearer {TOKEN}x", id="longer"),
        pytest.param(f"Bearer {TOKEN.upper()}", id="case"),
    ],
)
def test_only_the_exact_bearer_token_is_accepted(token_server: Server, authorization: str) -> None:
    """Near misses of the token or its scheme are refused."""
    with token_server.client() as client:
        assert client.get("/api/runs", headers={"Authorization": authorization}).status_code == 401


def test_bearer_scheme_is_case_insensitive(token_server: Server) -> None:
    """The Authorization scheme name is matched without case."""
    with token_server.client() as client:
        assert client.get("/api/runs", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_ingest_needs_the_token(token_server: Server) -> None:
    """POST /api/ingest answers 401 without the token and 202 with it."""
    body = json.dumps([{"kind": "log", "run_id": "sec-ingest", "timestamp": time.time(), "type": "x"}])
    with token_server.client() as client:
        refused = client.post("/api/ingest", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 401
        assert client.get("/api/runs/sec-ingest", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
        accepted = client.post(
            "/api/ingest",
            content=body,
            headers={"content-type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        assert accepted.status_code == 202


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="index"),
        pytest.param("/static/js/app.js", id="app-js"),
        pytest.param("/static/js/core/series.js", id="core-js"),
        pytest.param("/static/vendor/uplot/uPlot.iife.min.js", id="uplot-js"),
        pytest.param("/static/index.html", id="index-html"),
        pytest.param("/static/style.css", id="style-css"),
    ],
)
def test_dashboard_files_are_served_without_token(token_server: Server, path: str) -> None:
    """The dashboard page and its static files hold no data and need no token."""
    with token_server.client() as client:
        response = client.get(path)
    assert response.status_code == 200
    name = "index.html" if path == "/" else path.removeprefix("/static/")
    assert response.content == STATIC_FILES[name]


def test_public_paths_are_public_only_for_reads(token_server: Server) -> None:
    """A write to a public path still needs the token."""
    with token_server.client() as client:
        response = client.post("/static/js/app.js", content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == 401


@pytest.mark.parametrize("path", [pytest.param("/ws", id="live"), pytest.param("/ws/ingest", id="ingest")])
async def test_websockets_need_the_token(token_server: Server, path: str) -> None:
    """Websocket handshakes are refused without the token and accepted with the header or ?token=."""
    url = token_server.ws + path
    assert await handshake_status(url) == 403
    assert await handshake_status(url, additional_headers={"Authorization": "Bearer wrong-token-000"}) == 403
    assert await handshake_status(url + "?token=wrong-token-000") == 403
    assert await handshake_status(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) == 101
    assert await handshake_status(url + f"?token={TOKEN}") == 101


def test_token_never_appears_in_responses(token_server: Server) -> None:
    """No response body or header ever contains the token, whether it was sent in a header or the query."""
    seen = 0
    with token_server.client() as client:
        for path in [*GET_ROUTES, "/", "/static/js/app.js", "/api/runs/unknown", "/api/runs?limit=0", "/nothing"]:
            separator = "&" if "?" in path else "?"
            for response in (
                client.get(path),
                client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}),
                client.get(f"{path}{separator}token={TOKEN}"),
            ):
                seen += 1
                assert TOKEN.encode() not in response.content, path
                assert all(TOKEN not in f"{key}: {value}" for key, value in response.headers.items()), path
        ingest = client.post(
            f"/api/ingest?token={TOKEN}", content=b"{bad", headers={"content-type": "application/json"}
        )
        assert ingest.status_code == 400
        assert TOKEN.encode() not in ingest.content
    assert seen == 3 * (len(GET_ROUTES) + 5)


async def test_token_never_appears_in_websocket_messages(token_server: Server) -> None:
    """The live socket's messages (subscribed, errors) never echo the token."""
    async with connect(token_server.ws + f"/ws?token={TOKEN}", open_timeout=TIMEOUT) as ws:
        with anyio.fail_after(TIMEOUT):
            messages = [await ws.recv()]
            await ws.send(json.dumps({"subscribe": {"runs": "not-a-list", "token": TOKEN}}))
            messages.append(await ws.recv())
    assert json.loads(messages[1])["type"] == "error"
    assert all(TOKEN not in message for message in messages)


# -- writes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "content_type"),
    [
        pytest.param("POST", "text/plain", id="post-text"),
        pytest.param("POST", "application/x-www-form-urlencoded", id="post-form"),
        pytest.param("POST", None, id="post-none"),
    ],
)
def test_writes_need_application_json(open_server: Server, method: str, content_type: str | None) -> None:
    """Any write that is not application/json is refused with 415 before it reaches a route."""
    headers = {"content-type": content_type} if content_type else {}
    with open_server.client() as client:
        response = client.request(method, "/api/ingest", content=b"[]", headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["status"] == 415


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_writes_no_route_takes_are_405_unread(open_server: Server, method: str) -> None:
    """A write method the path does not take is 405 naming the allowed methods, whatever its body."""
    with open_server.client() as client:
        response = client.request(method, "/api/ingest", content=b"x" * 10, headers={"content-type": "text/plain"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_writes_with_token_still_need_application_json(token_server: Server) -> None:
    """A write with a valid token but a form body is still refused with 415."""
    with token_server.client() as client:
        response = client.post(
            "/api/ingest",
            content=b"a=1",
            headers={"content-type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {TOKEN}"},
        )
    assert response.status_code == 415


# -- the image route's own type and bound ------------------------------------------------------------------


def test_the_image_route_takes_only_image_bodies_and_json_routes_never_take_them(open_server: Server) -> None:
    """POST /api/ingest/image refuses JSON (415), and a 2 MiB body typed as an image is refused unread (415) on
    every other route, so the image route's larger bound opens nothing else."""
    big = b"{}\n" + b"x" * (2 * 1024 * 1024)
    with open_server.client() as client:
        as_json = client.post(IMAGE_INGEST_PATH, content=b"[]", headers={"content-type": "application/json"})
        as_image = client.post(
            IMAGE_INGEST_PATH, content=big[:1000], headers={"content-type": IMAGE_BODY_TYPE}
        )  # read and parsed: answered by the route
        elsewhere = [
            client.post(path, content=big, headers={"content-type": IMAGE_BODY_TYPE}).status_code
            for path in ("/api/ingest", "/api/sessions", "/api/sessions/x/batch", "/api/runs/sec-run/annotations")
        ]
    assert as_json.status_code == 415 and IMAGE_BODY_TYPE in as_json.json()["error"]["message"]
    assert as_image.status_code == 422
    assert elsewhere == [415, 413, 415, 415]  # datacat's /api/sessions takes any type, within 1 MiB


def test_an_image_body_past_max_image_body_bytes_is_413_declared_or_streamed(open_server: Server) -> None:
    """The image route reads at most max_image_body_bytes: past it, 413 whether the length is announced or the
    body streams in chunks."""
    limit = SecurityPolicy().max_image_body_bytes
    assert limit == MAX_IMAGE_BYTES + (64 << 10) + 1 and limit > SecurityPolicy().max_body_bytes
    chunk = b"x" * (1 << 20)

    def streamed() -> Iterator[bytes]:
        for _ in range(limit // len(chunk) + 2):
            yield chunk

    declared = raw_request(
        open_server.port,
        IMAGE_INGEST_PATH.encode(),
        method=b"POST",
        headers={"Content-Type": IMAGE_BODY_TYPE, "Content-Length": str(limit + 1)},
    )
    with open_server.client() as client:
        chunked = client.post(IMAGE_INGEST_PATH, content=streamed(), headers={"content-type": IMAGE_BODY_TYPE})
    assert declared.status == 413 and str(limit).encode() in declared.body
    assert chunked.status_code == 413


# -- static files -----------------------------------------------------------------------------------------


TRAVERSALS = [
    pytest.param(b"/static/../monitor.py", id="dotdot"),
    pytest.param(b"/static/../../runwatch/monitor.py", id="dotdot-twice"),
    pytest.param(b"/static/%2e%2e/monitor.py", id="encoded-dots"),
    pytest.param(b"/static/%2E%2E/%2E%2E/monitor.py", id="encoded-dots-upper"),
    pytest.param(b"/static/%252e%252e/monitor.py", id="double-encoded"),
    pytest.param(b"/static/..%2fmonitor.py", id="encoded-slash"),
    pytest.param(b"/static/..%2f..%2fweb%2fapp.py", id="encoded-slashes"),
    pytest.param(b"/static/..\\monitor.py", id="backslash"),
    pytest.param(b"/static/..%5cmonitor.py", id="encoded-backslash"),
    pytest.param(b"/static/....//monitor.py", id="four-dots"),
    pytest.param(b"/static/.%2e/monitor.py", id="half-encoded"),
    pytest.param(b"/static/%c0%ae%c0%ae/monitor.py", id="overlong-utf8"),
    pytest.param(b"/static/app.js%00", id="nul-suffix"),
    pytest.param(b"/static/%00../monitor.py", id="nul-prefix"),
    pytest.param(b"/static/" + b"a" * 5000, id="5000-chars"),
    pytest.param(b"/static/" + b"../" * 40 + b"etc/passwd", id="deep-etc-passwd"),
    pytest.param(b"/static//etc/passwd", id="absolute"),
    pytest.param(b"/static/%2fetc%2fpasswd", id="encoded-absolute"),
    pytest.param(b"/static/..;/monitor.py", id="semicolon"),
    pytest.param(b"/static/./../monitor.py", id="dot-dotdot"),
    pytest.param(b"/static/", id="directory"),
    pytest.param(b"/static/.", id="dot"),
    pytest.param(b"/static/..", id="dotdot-bare"),
]


def assert_only_static_content(response: RawResponse) -> None:
    """A response either failed (4xx) or carries exactly one of the static files."""
    assert response.status < 500, response.head
    if response.status == 200:
        assert response.body in STATIC_FILES.values(), response.head
    assert MONITOR_SOURCE[:200] not in response.body
    assert SQLITE_MAGIC not in response.body
    assert b"root:" not in response.body


@pytest.mark.parametrize("target", TRAVERSALS)
def test_static_path_traversal_never_escapes(open_server: Server, target: bytes) -> None:
    """Traversal attempts on /static never return content from outside the static directory, and never 5xx."""
    response = raw_request(open_server.port, target)
    assert_only_static_content(response)
    assert response.status != 200  # none of these names a file inside the static directory


def test_database_bytes_never_served(open_server: Server) -> None:
    """No request, however the store's path is spelled, returns the SQLite file's bytes."""
    db = str(open_server.db_path).encode()
    relative_to_static = b"/static/" + b"../" * 40 + db.lstrip(b"/")
    targets = [
        relative_to_static,
        relative_to_static.replace(b"../", b"%2e%2e/"),
        relative_to_static.replace(b"../", b"..%2f"),
        b"/static/" + db,
        b"/static/%2f" + db.lstrip(b"/").replace(b"/", b"%2f"),
        b"/" + db.lstrip(b"/"),
        b"/static/m.db",
        b"/m.db",
        b"/api/runs/sec-run/export/../../../../" + db.lstrip(b"/"),
    ]
    for target in targets:
        assert_only_static_content(raw_request(open_server.port, target))
    for path in GET_ROUTES:
        response = raw_request(open_server.port, path.encode())
        assert response.status == 200, path
        assert SQLITE_MAGIC not in response.body, path
