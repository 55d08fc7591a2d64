"""Security policy on every route: token, Host and Origin allowlists, secrets kept out of logs, file modes.

Routes are enumerated from the app itself (``app.routes``), so a new route is
covered without editing this file. Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from starlette.routing import Mount, WebSocketRoute
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.config import default_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.pipeline.thread import PipelineThread
from runwatch.server import start_server
from runwatch.store import schema
from runwatch.store.backup import create_backup, restore_backup
from runwatch.store.export import export_run
from runwatch.store.importer import import_run
from runwatch.store.manager import DatabaseManager
from runwatch.web.app import create_app
from runwatch.web.security import SecurityPolicy
from runwatch.web.server import WebSettings, web_companion

TOKEN = "policy-token-7f3a9c"
WRONG = "policy-token-7f3a9d"
TIMEOUT = 10
#: Paths served without the token (the dashboard's page and files hold no data).
PUBLIC = {"/", "/static"}


def all_routes() -> list[tuple[str, str]]:
    """(kind, path) of every route of the app: ("http:GET", path), ..., ("websocket", path), ("mount", path)."""
    app = create_app(db_path="unused.db").app
    found = []
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            found.append(("websocket", route.path))
        elif isinstance(route, Mount):
            found.append(("mount", route.path))
        else:
            for method in sorted(getattr(route, "methods", None) or ()):
                found.append((f"http:{method}", route.path))
    # FastAPI wraps included routers: take their routes too.
    for route in app.router.routes:
        original = getattr(route, "original_router", None)
        for inner in getattr(original, "routes", ()):
            if isinstance(inner, WebSocketRoute):
                found.append(("websocket", inner.path))
            else:
                for method in sorted(getattr(inner, "methods", None) or ()):
                    found.append((f"http:{method}", inner.path))
    return sorted(set(found))


ROUTES = all_routes()


@dataclass
class Server:
    """A running monitor with a token, and a session id to fill path parameters with."""

    monitor: WebMonitor
    session_id: str

    @property
    def base(self) -> str:
        """The HTTP base URL."""
        assert self.monitor.web_url is not None
        return self.monitor.web_url

    @property
    def port(self) -> int:
        """The TCP port."""
        return int(self.base.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        """``path`` with its parameters filled with this server's run and session."""
        return path.replace("{run_id}", "pol-run").replace("{session_id}", self.session_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A monitor requiring TOKEN, with one run ("pol-run") and one session."""
    tmp = tmp_path_factory.mktemp("policy")
    monitor = WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, web_token=TOKEN))
    try:
        monitor.start_training({"x": 1}, run_id="pol-run")
        monitor.update_metrics({"loss": 0.5})
        assert monitor.flush()
        assert monitor.web_url is not None
        with httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT) as client:
            body = {"product": "policy", "version": "1"}
            created = client.post("/api/sessions", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            assert created.status_code == 200, created.text
        yield Server(monitor, created.json()["session_id"])
    finally:
        monitor.close()


def http_routes() -> list[Any]:
    """One pytest param per (method, path) of the HTTP routes, plus a file under each mount."""
    params = []
    for kind, path in ROUTES:
        if kind.startswith("http:"):
            params.append(pytest.param(kind[5:], path, id=f"{kind[5:]} {path}"))
        elif kind == "mount":
            params.append(pytest.param("GET", path + "/js/app.js", id=f"GET {path}/js/app.js"))
    return params


def ws_routes() -> list[Any]:
    """One pytest param per websocket route."""
    return [pytest.param(path, id=path) for kind, path in ROUTES if kind == "websocket"]


def request(server: Server, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One request to the server (writes carry an empty JSON object)."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    body = b"{}" if method in ("POST", "PUT", "PATCH", "DELETE") else None
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as client:
        return client.request(method, server.url(path), content=body, headers=all_headers)


async def handshake(url: str, **kwargs: Any) -> int:
    """101 when the websocket handshake succeeds, else the HTTP status it was refused with."""
    try:
        with anyio.fail_after(TIMEOUT):
            async with connect(url, open_timeout=TIMEOUT, **kwargs):
                return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_route_enumeration_finds_the_known_routes() -> None:
    """The enumeration sees the REST, websocket and static routes (so the tests below cover them)."""
    paths = {path for _, path in ROUTES}
    assert {"/api/ingest", "/api/runs/{run_id}", "/api/sessions/{session_id}/batch", "/metrics"} <= paths
    assert ("websocket", "/ws") in ROUTES and ("websocket", "/ws/ingest") in ROUTES
    assert ("mount", "/static") in ROUTES
    assert len(ROUTES) >= 30


# -- 1. the token on every route ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), http_routes())
def test_every_http_route_needs_the_token(server: Server, method: str, path: str) -> None:
    """Without the token or with a wrong one every non-public route answers 401; with it, never 401.
    Public: the dashboard's page and files, and datacat's health check (any method, as datacat's server)."""
    public = path == "/" or path.startswith("/static/") or path == "/health"
    missing = request(server, method, path)
    wrong_header = request(server, method, path, {"Authorization": f"Bearer {WRONG}"})
    right = request(server, method, path, {"Authorization": f"Bearer {TOKEN}"})
    if public:
        assert missing.status_code == 200 and right.status_code == 200
        return
    assert missing.status_code == 401, missing.text
    assert wrong_header.status_code == 401, wrong_header.text
    separator = "&" if "?" in path else "?"
    assert request(server, method, f"{path}{separator}token={WRONG}").status_code == 401
    assert right.status_code != 401, right.text
    assert request(server, method, f"{path}{separator}token={TOKEN}").status_code != 401


@pytest.mark.parametrize("path", ws_routes())
async def test_every_websocket_route_needs_the_token(server: Server, path: str) -> None:
    """Every websocket handshake is refused (403) without or with a wrong token and accepted with it."""
    url = f"ws://127.0.0.1:{server.port}{path}"
    assert await handshake(url) == 403
    assert await handshake(url, additional_headers={"Authorization": f"Bearer {WRONG}"}) == 403
    assert await handshake(f"{url}?token={WRONG}") == 403
    assert await handshake(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) == 101
    assert await handshake(f"{url}?token={TOKEN}") == 101


@pytest.mark.parametrize("module", [hmac, secrets])
async def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Every token check goes through compare_digest with the supplied and the configured token."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setattr(secrets, "compare_digest", spy)
    app = create_app(db_path="unused.db", policy=SecurityPolicy(token=TOKEN))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for supplied in (WRONG, "x", TOKEN * 3, TOKEN):
            response = await client.get("/api/health", headers={"Authorization": f"Bearer {supplied}"})
            assert (response.status_code == 200) == (supplied == TOKEN)
        assert (await client.get(f"/api/health?token={WRONG}")).status_code == 401
    supplied_values = [a for a, _ in calls]
    assert supplied_values == [WRONG.encode(), b"x", (TOKEN * 3).encode(), TOKEN.encode(), WRONG.encode()]
    assert all(b == TOKEN.encode() for _, b in calls)
    assert module.compare_digest is spy


@dataclass
class LoggingServer:
    """A uvicorn server with access logs on, serving the app with a token."""

    port: int
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture
def logging_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoggingServer]:
    """The app behind uvicorn with access and websocket logs on (runwatch's own servers turn them off)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # Undo what earlier uvicorn servers in this process set globally (levels, no propagation).
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    app = create_app(db_path=str(tmp_path / "none.db"), policy=SecurityPolicy(token=TOKEN))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=True, lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        yield LoggingServer(sock.getsockname()[1], server, thread)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


async def test_token_never_appears_in_logs(logging_server: LoggingServer, caplog: pytest.LogCaptureFixture) -> None:
    """Neither uvicorn's access and websocket logs nor runwatch's logs ever carry the token, right or wrong.

    At INFO, where access logs are: at DEBUG the websockets library under uvicorn logs
    raw handshake request lines before any ASGI code runs (runwatch serves at WARNING).
    """
    caplog.set_level(logging.INFO)
    base = f"http://127.0.0.1:{logging_server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
        for path in ("/api/runs", "/api/health", "/nothing", "/static/js/app.js"):
            for token in (TOKEN, WRONG):
                await client.get(f"{path}?token={token}")
                await client.get(f"{path}?a=1&token={token}&b=2")
                await client.get(path, headers={"Authorization": f"Bearer {token}"})
        await client.post(f"/api/ingest?token={TOKEN}", content=b"{bad", headers={"content-type": "application/json"})
    for path in ("/ws", "/ws/ingest"):
        for token in (TOKEN, WRONG):
            await handshake(f"ws://127.0.0.1:{logging_server.port}{path}?token={token}")
            await handshake(f"ws://127.0.0.1:{logging_server.port}{path}?token={token}", origin="http://evil.example")
    access = [record for record in caplog.records if record.name == "uvicorn.access"]
    assert len(access) >= 24  # the access log did run
    assert any("a=1&b=2" in record.getMessage() for record in access)  # other parameters are kept
    server_side = [r for r in caplog.records if r.name.split(".")[0] in ("uvicorn", "runwatch", "fastapi", "starlette")]
    assert server_side
    for record in server_side:  # (the test's own clients log what they send at DEBUG)
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert TOKEN not in text and WRONG not in text, text


@contextlib.contextmanager
def debug_server(kind: str, tmp: Path, token: str = TOKEN) -> Iterator[str]:
    """A server requiring ``token`` that was asked for debug logs; yields its base URL.

    ``monitor``: a WebMonitor with ``debug=True``; ``companion-debug`` / ``companion-trace``: the
    web companion itself with ``WebSettings(log_level=...)`` at that level.
    """
    runwatch_logger = logging.getLogger("runwatch")
    level = runwatch_logger.level  # a debug monitor lowers it for the process
    thread: PipelineThread | None = None
    monitor: WebMonitor | None = None
    try:
        if kind == "monitor":
            config = MonitorConfig(
                db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, web_token=token, debug=True
            )
            monitor = WebMonitor(config)
            assert monitor.web_url is not None
            yield monitor.web_url
        else:
            settings = WebSettings(port=0, token=token, log_level=kind.removeprefix("companion-"))
            context = ComponentContext(db_path=str(tmp / "m.db"), data_dir=tmp / "d")
            pipeline = Pipeline(default_pipeline_config(), context=context)
            thread = PipelineThread(pipeline, companions=[web_companion(settings, str(tmp / "m.db"))])
            thread.start()
            yield thread.companion_values[0].url
    finally:
        if monitor is not None:
            monitor.close()
        if thread is not None:
            thread.close()
        runwatch_logger.setLevel(level)


@pytest.mark.parametrize("kind", ["monitor", "companion-debug", "companion-trace"])
async def test_debug_mode_never_logs_the_token(kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Asked for debug logs, the server keeps uvicorn at INFO: no request or handshake line with ?token= is logged."""
    caplog.set_level(logging.DEBUG)
    uvicorn_logger = logging.getLogger("uvicorn")  # uvicorn's loggers do not propagate to the root
    with debug_server(kind, tmp_path) as base:
        uvicorn_logger.addHandler(caplog.handler)  # after startup: uvicorn's logging setup replaces handlers
        try:
            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
                assert (await client.get(f"/api/runs?token={TOKEN}")).status_code == 200
                assert (await client.get(f"/api/health?a=1&token={TOKEN}")).status_code == 200
            url = base.replace("http://", "ws://")
            for path in ("/ws", "/ws/ingest"):
                assert await handshake(f"{url}{path}?token={TOKEN}") == 101
        finally:
            uvicorn_logger.removeHandler(caplog.handler)
    server_side = [r for r in caplog.records if not r.name.startswith(("websockets.client", "httpx", "httpcore"))]
    # uvicorn's protocol logs did run, at INFO ("connection open" for each handshake)...
    assert sum(1 for r in server_side if r.name == "uvicorn.error" and r.getMessage() == "connection open") >= 2
    for record in server_side:  # ...and no server-side record carries the token
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert TOKEN not in text, (record.name, text)
    assert logging.getLogger("uvicorn.error").getEffectiveLevel() >= logging.INFO


#: A token without the text "token" in it: a query string holding it contains that word only in the name.
PLAIN_SECRET = "s3cr3t-7f3a9c-policy"
#: Names a client may give the token parameter: (name, whether the app's query parsing sees ``token``).
ENCODED_TOKEN_NAMES = [
    ("%74oken", True),
    ("t%6Fken", True),
    ("tok%65n", True),
    ("TOKEN", False),
    ("Token", False),
    ("%54%4F%4B%45%4E", False),
    ("t%256Fken", False),
]


@pytest.mark.parametrize("kind", ["monitor", "companion-debug"])
async def test_debug_mode_never_logs_a_token_under_an_encoded_name(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token parameter named in any case or encoding is in no log line; percent-encodings of token still authorise."""
    caplog.set_level(logging.DEBUG)
    uvicorn_logger = logging.getLogger("uvicorn")
    with debug_server(kind, tmp_path, token=PLAIN_SECRET) as base:
        uvicorn_logger.addHandler(caplog.handler)
        try:
            url = base.replace("http://", "ws://")
            statuses: dict[str, list[int]] = {}
            async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as client:
                for name, _ in ENCODED_TOKEN_NAMES:
                    query = f"{name}={PLAIN_SECRET}"
                    statuses[name] = [await handshake(f"{url}{path}?{query}") for path in ("/ws", "/ws/ingest")]
                    statuses[name].append((await client.get(f"/api/runs?a=1&{query}")).status_code)
        finally:
            uvicorn_logger.removeHandler(caplog.handler)
    server_side = [r for r in caplog.records if not r.name.startswith(("websockets.client", "httpx", "httpcore"))]
    handshake_lines = [r for r in server_side if r.name == "uvicorn.error" and '"WebSocket /ws' in r.getMessage()]
    assert len(handshake_lines) == 2 * len(ENCODED_TOKEN_NAMES)  # every handshake was logged, with its query
    for record in server_side:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        assert PLAIN_SECRET not in text, (record.name, text)
    expected = {name: [101, 101, 200] if authorises else [403, 403, 401] for name, authorises in ENCODED_TOKEN_NAMES}
    assert statuses == expected


def test_query_token_still_authorises_and_other_parameters_survive(server: Server) -> None:
    """Removing ?token= from the request keeps the other query parameters for the route."""
    with httpx.Client(base_url=server.base, timeout=TIMEOUT) as client:
        response = client.get(f"/api/runs?token={TOKEN}&limit=1")
    assert response.status_code == 200
    assert len(response.json()["runs"]) == 1


# -- 2. Host and Origin allowlists on every route ----------------------------------------------------------------

FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:80",
    "127.0.0.1.evil.example",
    "localhost.evil.example",
    "[::1]evil.example",
    "[::1].evil.example:80",
    "127.0.0.1:80:evil",
    "127.0.0.1:evil",
    "",
]


@pytest.mark.parametrize(("method", "path"), http_routes())
def test_every_http_route_refuses_foreign_hosts(server: Server, method: str, path: str) -> None:
    """Every route, public or not and with the right token, answers 400 to a Host header that is not loopback."""
    for host in FOREIGN_HOSTS:
        response = request(server, method, path, {"Host": host, "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 400, (host, response.text)


@pytest.mark.parametrize("path", ws_routes())
async def test_every_websocket_route_refuses_foreign_hosts_and_origins(server: Server, path: str) -> None:
    """Every websocket route refuses a foreign Host (over loopback) and a foreign Origin, even with the token."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for host in ("evil.example", "127.0.0.1.evil.example"):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        sock.setblocking(False)
        try:
            status = await handshake(f"ws://{host}:{server.port}{path}", sock=sock, additional_headers=auth)
        finally:
            sock.close()
        assert status in (400, 403), host
    for origin in ("http://evil.example", "null", f"http://localhost.evil.example:{server.port}", "http://127.0.0.1:1"):
        url = f"ws://127.0.0.1:{server.port}{path}"
        assert await handshake(url, origin=origin, additional_headers=auth) == 403, origin
    url = f"ws://127.0.0.1:{server.port}{path}"
    assert await handshake(url, origin=f"http://127.0.0.1:{server.port}", additional_headers=auth) == 101


# -- 6. file modes ------------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    """The permission bits of ``path``."""
    return stat.S_IMODE(path.stat().st_mode)


def assert_private(root: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """Every file under ``root`` is 0600 and every directory 0700 (except ``exclude``); returns the files."""
    files = []
    for path in [root, *root.rglob("*")]:
        if path in exclude:
            continue
        if path.is_dir():
            assert mode(path) == 0o700, f"{path}: {oct(mode(path))}"
        else:
            assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
            files.append(path)
    return files


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Run with umask 022 (the usual default), so only explicit modes make files private."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_store_and_snapshot_files_are_private(tmp_path: Path, loose_umask: None) -> None:
    """A monitor leaves its database, WAL/SHM, snapshot and alert-state files 0600 and the directories it made 0700."""
    db_dir, data_dir = tmp_path / "db" / "nested", tmp_path / "data"
    config = MonitorConfig(db_path=str(db_dir / "m.db"), data_dir=str(data_dir), web_port=0, snapshot_interval=0.2)
    with WebMonitor(config) as monitor:
        assert mode(data_dir) == 0o700  # from construction, before any stage wrote there
        assert mode(db_dir) == 0o700 and mode(db_dir.parent) == 0o700
        monitor.start_training({"a": 1}, run_id="modes")
        deadline = time.monotonic() + TIMEOUT
        while not list(data_dir.glob("snapshot_*.json")):
            assert time.monotonic() < deadline, "no snapshot was written"
            monitor.update_metrics({"loss": 0.5})
            time.sleep(0.1)
        assert monitor.flush()
        live = [path for path in db_dir.iterdir()]
        assert any(path.name.endswith("-wal") for path in live)
        for path in live:
            assert mode(path) == 0o600, f"{path}: {oct(mode(path))}"
        monitor.stop_training()
    snapshots = [path for path in data_dir.iterdir() if path.name.startswith("snapshot_")]
    assert snapshots
    for path in snapshots:
        assert mode(path) == 0o600, path
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "alerts_state.json") == 0o600
    assert_private(data_dir)
    for path in db_dir.iterdir():
        assert mode(path) == 0o600, path


def test_runwatch_serve_creates_its_data_dir_private(tmp_path: Path, loose_umask: None) -> None:
    """runwatch serve's start creates data_dir (and the store's directory) 0700 before any stage writes there."""
    data_dir, db_dir = tmp_path / "srv" / "data", tmp_path / "srv" / "db"
    config = MonitorConfig(db_path=str(db_dir / "m.db"), data_dir=str(data_dir), web_port=0)
    thread = start_server(config)
    try:
        assert mode(data_dir) == 0o700 and mode(data_dir.parent) == 0o700
        assert mode(db_dir) == 0o700
    finally:
        thread.close()


def test_a_new_store_is_created_private_and_an_existing_directory_keeps_its_mode(
    tmp_path: Path, loose_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """init_database creates the file 0600 before SQLite opens it, and missing directories 0700 (not existing ones)."""
    seen: list[int] = []
    original_connect = schema.sqlite3.connect

    def spying_connect(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(mode(Path(path)))  # the file already exists, private, when SQLite opens it
        return original_connect(path, *args, **kwargs)

    monkeypatch.setattr(schema.sqlite3, "connect", spying_connect)
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # a user's own directory
    new = home / "new" / "deeper" / "m.db"
    DatabaseManager(new).init_database()
    assert seen == [0o600]
    assert mode(new) == 0o600
    assert mode(new.parent) == 0o700 and mode(new.parent.parent) == 0o700
    assert mode(home) == 0o755  # existed before: untouched
    DatabaseManager(home / "m.db").init_database()
    assert mode(home) == 0o755
    assert mode(home / "m.db") == 0o600


def test_backups_and_exports_are_private(tmp_path: Path, loose_umask: None) -> None:
    """Backups, exports, restores and imports write 0600 files into 0700 directories they create."""
    db = tmp_path / "m.db"
    with WebMonitor(MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0)) as monitor:
        monitor.start_training({"a": 1}, run_id="modes")
        monitor.update_metrics({"loss": 0.5})
        assert monitor.flush()
        exported = monitor.export_run_data("modes", tmp_path / "exports")
    backup = create_backup(db, tmp_path / "backups")
    again = export_run(str(db), "modes", tmp_path / "more" / "exports")
    assert backup in assert_private(tmp_path / "backups")
    assert exported in assert_private(tmp_path / "exports")
    assert again in assert_private(tmp_path / "more" / "exports")
    restore_backup(tmp_path / "restored" / "deep" / "m.db", backup)
    import_run(str(tmp_path / "imported" / "deep" / "m.db"), exported)
    assert tmp_path / "restored" / "deep" / "m.db" in assert_private(tmp_path / "restored")
    assert tmp_path / "imported" / "deep" / "m.db" in assert_private(tmp_path / "imported")
