"""Hostile-input corpora: path traversal against static files and downloads, hostile JSON against every JSON route.

Paths are sent byte for byte over raw loopback sockets (no client
normalisation). The static root is a temporary copy this test controls, with
symlinks inside it pointing outside; a canary file and the SQLite store sit
outside it, and no response may carry a byte of either.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import uvicorn

import runwatch.web.app as web_app
from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.web.app import create_app

TIMEOUT = 10
SQLITE_MAGIC = b"SQLite format 3\x00"
TABLES = ("runs", "events", "metric_chunks", "state_history", "ingest_batches", "snapshots")


# -- raw HTTP ------------------------------------------------------------------------------------------


@dataclass
class Raw:
    """A raw response."""

    status: int
    body: bytes


def raw(port: int, target: bytes, *, method: bytes = b"GET", extra: bytes = b"", body: bytes = b"") -> Raw:
    """Send one request with ``target`` exactly as given to 127.0.0.1 and read the whole answer."""
    head = method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        received = bytearray()
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    status_line, _, rest = bytes(received).partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return Raw(int(status_line.split(b" ")[1]) if status_line else 0, payload)


# -- 3. path traversal --------------------------------------------------------------------------------


@dataclass
class StaticServer:
    """A server whose static root is a temporary copy with hostile symlinks in it."""

    port: int
    root: Path
    canary: bytes
    db_bytes: bytes
    allowed: set[bytes]


@pytest.fixture(scope="module")
def static_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticServer]:
    """The app (static root monkeypatched to a controlled copy) behind uvicorn on a free loopback port."""
    tmp = tmp_path_factory.mktemp("static")
    root = tmp / "root" / "static"
    shutil.copytree(web_app.STATIC_DIR, root)
    canary = b"CANARY-" + secrets.token_hex(16).encode()
    (tmp / "root" / "canary.txt").write_bytes(canary)
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(canary)
    db = tmp / "m.db"
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(tmp / "d"), web_port=0)) as monitor:
        monitor.start_training({"canary": canary.decode()}, run_id="trav-run")
        assert monitor.flush()
    (root / "canary-link.txt").symlink_to(tmp / "root" / "canary.txt")
    (root / "outside-dir").symlink_to(outside, target_is_directory=True)
    (root / "db-link").symlink_to(db)
    (root / "relative-link").symlink_to("../canary.txt")
    allowed = {path.read_bytes() for path in root.rglob("*") if path.is_file() and not path.is_symlink()}
    patch = pytest.MonkeyPatch()
    patch.setattr(web_app, "STATIC_DIR", root)
    app = create_app(db_path=str(db))
    patch.undo()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        yield StaticServer(sock.getsockname()[1], root, canary, db.read_bytes(), allowed)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


def traversal_corpus(root: Path, db: Path) -> list[bytes]:
    """Hostile request targets: encodings of ``..``, separators, NUL, long and absolute paths, the symlinks."""
    dots = [b"..", b"%2e%2e", b"%2E%2E", b".%2e", b"%2e.", b"%252e%252e", b"%25252e%25252e", b"%c0%ae%c0%ae", b"...."]
    seps = [b"/", b"%2f", b"%2F", b"\\", b"%5c", b"%255c", b"/./", b"//", b"%252f"]
    names = [b"canary.txt", b"../canary.txt", b"outside/secret.txt", b"m.db", b"etc/passwd"]
    targets = []
    for dot in dots:
        for sep in seps:
            for depth in (1, 2, 8):
                for name in names:
                    targets.append(b"/static/" + (dot + sep) * depth + name)
    absolute = str(db).encode()
    targets += [
        b"/static/canary-link.txt",
        b"/static/outside-dir/secret.txt",
        b"/static/outside-dir/",
        b"/static/db-link",
        b"/static/relative-link",
        b"/static/outside-dir%2fsecret.txt",
        b"/static/%2e/canary-link.txt",
        b"/static/app.js%00",
        b"/static/%00",
        b"/static/app.js%00.png",
        b"/static/..%00/canary.txt",
        b"/static/" + b"a" * 10_000,
        b"/static/" + b"../" * 3000 + b"canary.txt",
        b"/static/" + b"%2e%2e%2f" * 1000 + b"etc/passwd",
        b"/static/" + absolute,
        b"/static//" + absolute.lstrip(b"/"),
        b"/static/%2f" + absolute.lstrip(b"/").replace(b"/", b"%2f"),
        b"/static/\\" + absolute.lstrip(b"/").replace(b"/", b"\\"),
        b"/static/C:%5cWindows%5cwin.ini",
        b"/static/..;/canary.txt",
        b"/static/.%00./canary.txt",
        b"/static/%u002e%u002e/canary.txt",
        b"/" + absolute.lstrip(b"/"),
        b"//" + absolute.lstrip(b"/"),
        b"/static",
        b"/static/",
        b"/static/.",
        b"/static/..",
    ]
    for run_id in (b"..", b"%2e%2e", b"..%2f..%2fm.db", b"..%5c..%5cm.db", b"%00", b"a" * 5000, b"trav-run%00"):
        targets += [b"/api/runs/" + run_id + b"/export", b"/api/runs/trav-run/export/../../" + run_id]
    targets += [b"/api/runs/trav-run/export/../../../../" + absolute.lstrip(b"/"), b"/api/runs/trav-run/export%2f.."]
    return targets


def test_traversal_corpus_never_leaks_outside_the_static_root(static_server: StaticServer) -> None:
    """No target answers 5xx, a 200 only ever carries a file of the root, and no byte of the canary or store leaks."""
    db_path = Path(str(static_server.root).replace("root/static", "m.db"))
    corpus = traversal_corpus(static_server.root, db_path)
    assert len(corpus) >= 1200
    head = static_server.db_bytes[:100]
    for target in corpus:
        response = raw(static_server.port, target)
        assert 0 < response.status < 500, target[:200]
        assert static_server.canary not in response.body, target[:200]
        assert SQLITE_MAGIC not in response.body and head not in response.body, target[:200]
        assert b"root:" not in response.body, target[:200]
        if response.status == 200 and target.startswith(b"/static"):
            assert response.body in static_server.allowed, target[:200]


def test_symlinks_inside_the_root_are_not_followed_out(static_server: StaticServer) -> None:
    """Each symlink placed in the static root that points outside answers 404, while real files are served."""
    for name in (b"canary-link.txt", b"outside-dir/secret.txt", b"db-link", b"relative-link"):
        assert raw(static_server.port, b"/static/" + name).status == 404, name
    assert raw(static_server.port, b"/static/js/app.js").status == 200


# -- 4. hostile JSON ----------------------------------------------------------------------------------------


def deep(opening: bytes, closing: bytes, depth: int, inner: bytes = b"1") -> bytes:
    """``depth`` levels of nesting around ``inner``."""
    return opening * depth + inner + closing * depth


def hostile_bodies() -> list[tuple[str, bytes]]:
    """Bodies no JSON route may accept: malformed, hostile or out of range."""
    metric = b'{"kind":"metric","run_id":"hostile","timestamp":1700000000,"values":{"loss":%s}}'
    log = b'{"kind":"log","run_id":"hostile","timestamp":1700000000,"type":"t","data":%s}'
    many_keys = b"{" + b",".join(b'"%x":0' % i for i in range(100_000)) + b"}"
    bodies = [
        ("empty", b""),
        ("truncated-array", b'[{"kind": "metric"'),
        ("truncated-object", b'{"events": ['),
        ("truncated-string", b'{"name": "abc'),
        ("only-brace", b"{"),
        ("trailing-garbage", b"{}x"),
        ("two-documents", b"{} {}"),
        ("invalid-utf8", b'{"name": "\xff\xfe"}'),
        ("overlong-utf8", b'{"name": "\xc0\xaf"}'),
        ("truncated-utf8", b'{"name": "\xe2\x82"}'),
        ("utf16-bom", '{"name": "x"}'.encode("utf-16")),
        ("nan-literal", metric % b"NaN"),
        ("infinity-literal", metric % b"Infinity"),
        ("1e400", metric % b"1e400"),
        ("-1e400", metric % b"-1e400"),
        (
            "int-2^63",
            b'{"kind":"metric","run_id":"hostile","timestamp":1700000000,"values":{"a":1},"step":9223372036854775808}',
        ),
        (
            "int-2^64",
            b'{"kind":"metric","run_id":"hostile","timestamp":1700000000,"values":{"a":1},"step":18446744073709551616}',
        ),
        ("int-10^30-data", log % b'{"n": 1000000000000000000000000000000}'),
        ("int-2^63-data", log % b'{"n": 9223372036854775808}'),
        ("lone-surrogate", log % b'{"s": "\\ud800"}'),
        ("lone-low-surrogate", log % b'{"s": "\\udc00"}'),
        ("surrogate-key", log % b'{"\\ud800": 1}'),
        ("deep-arrays", deep(b"[", b"]", 10_000)),
        ("deep-objects", deep(b'{"a":', b"}", 10_000)),
        ("deep-in-event", log % deep(b'{"a":', b"}", 10_000)),
        ("deep-200-in-event", log % deep(b'{"a":', b"}", 200)),
        ("100k-keys-in-array", b"[" + many_keys + b"]"),
        ("null-byte", b'{"name": "a\x00b"}'),
        ("bare-string", b'"just a string"'),
        ("bare-number", b"12"),
        ("null", b"null"),
        ("timestamp-negative", b'[{"kind":"heartbeat","run_id":"hostile","timestamp":-1}]'),
        ("timestamp-huge", b'[{"kind":"heartbeat","run_id":"hostile","timestamp":1e300}]'),
        ("wrong-kind", b'[{"kind":"receipt","run_id":"hostile","timestamp":1}]'),
    ]
    return bodies


@dataclass
class JsonServer:
    """A monitor with a pipeline, a session to write to, and its store."""

    monitor: WebMonitor
    db: Path
    session_id: str

    @property
    def port(self) -> int:
        """The TCP port."""
        assert self.monitor.web_url is not None
        return int(self.monitor.web_url.rsplit(":", 1)[1])

    def counts(self) -> dict[str, int]:
        """Rows in every table a write can reach."""
        connection = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            found = {}
            for table in TABLES:
                try:
                    found[table] = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                except sqlite3.OperationalError:
                    found[table] = 0
            return found
        finally:
            connection.close()


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonServer]:
    """A monitor on a free loopback port with one open session."""
    tmp = tmp_path_factory.mktemp("json")
    monitor = WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0))
    try:
        assert monitor.web_url is not None
        with httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT) as client:
            created = client.post("/api/sessions", json={"product": "hostile", "version": "1"})
            assert created.status_code == 200
        assert monitor.flush()
        yield JsonServer(monitor, tmp / "m.db", created.json()["session_id"])
    finally:
        monitor.close()


def json_routes(session_id: str) -> list[str]:
    """Every route of runwatch's own that takes a JSON body (strict: every field validated)."""
    return ["/api/ingest", f"/api/sessions/{session_id}/batch"]


def datacat_routes(session_id: str) -> list[str]:
    """Every route of datacat's contract that takes a body (read as datacat's Go server reads it)."""
    tails = ("state", "events", "metrics", "heartbeat", "end", "crash")
    return ["/api/sessions", *(f"/api/sessions/{session_id}/{tail}" for tail in tails)]


def all_routes(session_id: str) -> list[str]:
    """Every route that takes a body."""
    return json_routes(session_id) + datacat_routes(session_id)


def test_hostile_json_is_4xx_and_stores_nothing(json_server: JsonServer) -> None:
    """Every hostile body on every strict JSON route is a 4xx, nothing is stored, and memory stays bounded."""
    process = psutil.Process()
    before_rss = process.memory_info().rss
    before = json_server.counts()
    bodies = hostile_bodies()
    routes = json_routes(json_server.session_id)
    seen = 0
    for route in routes:
        for name, body in bodies:
            if route == "/api/ingest" and body.startswith(b'{"kind"'):
                body = b"[" + body + b"]"  # an event, as ingest takes it
            extra = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            response = raw(json_server.port, route.encode(), method=b"POST", extra=extra, body=body)
            assert 400 <= response.status < 500, (route, name, response.status, response.body[:300])
            seen += 1
    assert json_server.monitor.flush()
    assert json_server.counts() == before
    assert process.memory_info().rss - before_rss < 400 * 1024 * 1024
    assert seen == len(routes) * len(bodies)


def test_hostile_bodies_on_datacats_routes_never_5xx_and_leave_the_sessions_readable(json_server: JsonServer) -> None:
    """datacat's routes take what datacat's server takes (null, unknown keys, a first value with trailing
    data, U+FFFD for invalid UTF-8) and refuse the rest with 4xx storing nothing; never a 5xx, memory stays
    bounded, and every session still reads back as datacat's clients decode it."""
    process = psutil.Process()
    before_rss = process.memory_info().rss
    refused = 0
    for route in datacat_routes(json_server.session_id):
        for name, body in hostile_bodies():
            before = json_server.counts()
            extra = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            response = raw(json_server.port, route.encode(), method=b"POST", extra=extra, body=body)
            assert response.status == 200 or 400 <= response.status < 500, (route, name, response.status)
            if response.status != 200:
                refused += 1
                assert json_server.monitor.flush()
                assert json_server.counts() == before, (route, name)
    assert refused > len(hostile_bodies())  # most are refused: syntax, NaN, out-of-range numbers, depth
    assert process.memory_info().rss - before_rss < 400 * 1024 * 1024
    listed = raw(json_server.port, b"/api/data/sessions", method=b"GET", extra=b"", body=b"")
    assert listed.status == 200
    sessions = json.loads(listed.body)
    assert json_server.session_id in {session["id"] for session in sessions}


def test_a_100k_key_object_is_answered_without_5xx_and_in_bounded_memory(json_server: JsonServer) -> None:
    """A legal object with 100,000 keys (under the body limit) is accepted or refused, never a 5xx, cheaply."""
    many_keys = b"{" + b",".join(b'"%x":0' % i for i in range(100_000)) + b"}"
    assert len(many_keys) < 1024 * 1024
    process = psutil.Process()
    before = process.memory_info().rss
    started = time.monotonic()
    for route in all_routes(json_server.session_id):
        extra = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(many_keys)
        response = raw(json_server.port, route.encode(), method=b"POST", extra=extra, body=many_keys)
        assert response.status < 500, (route, response.body[:300])
    assert time.monotonic() - started < 30
    assert process.memory_info().rss - before < 400 * 1024 * 1024


@pytest.mark.parametrize("route_index", range(9))
def test_oversized_bodies_are_413_however_they_are_sent(json_server: JsonServer, route_index: int) -> None:
    """A body past the limit is 413 with Content-Length, chunked, or lying about its length, and stores nothing."""
    route = all_routes(json_server.session_id)[route_index].encode()
    before = json_server.counts()
    big = b'{"a": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    json_type = b"Content-Type: application/json\r\n"
    declared = raw(json_server.port, route, method=b"POST", extra=json_type + b"Content-Length: %d\r\n" % len(big))
    assert declared.status == 413
    huge = raw(json_server.port, route, method=b"POST", extra=json_type + b"Content-Length: 99999999999999999999\r\n")
    assert 400 <= huge.status < 500
    chunks = b"".join(b"%x\r\n%s\r\n" % (65536, b"x" * 65536) for _ in range(40)) + b"0\r\n\r\n"
    chunked = raw(
        json_server.port, route, method=b"POST", extra=json_type + b"Transfer-Encoding: chunked\r\n", body=chunks
    )
    assert chunked.status == 413
    assert json_server.monitor.flush()
    assert json_server.counts() == before


def test_hostile_json_over_the_ingest_websocket_is_an_error_and_stores_nothing(json_server: JsonServer) -> None:
    """/ws/ingest answers each hostile message with an error and stores nothing."""
    from websockets.sync.client import connect

    before = json_server.counts()
    with connect(f"ws://127.0.0.1:{json_server.port}/ws/ingest", open_timeout=TIMEOUT) as ws:
        for name, body in hostile_bodies():
            ws.send(body)
            reply = json.loads(ws.recv(timeout=TIMEOUT))
            assert reply["type"] == "error", name
    assert json_server.monitor.flush()
    assert json_server.counts() == before
