"""Real NATS and PostgreSQL servers on loopback for the scale tier and its benchmark.

Each ``open_*`` function is a context manager: it starts the server(s) on free
127.0.0.1 ports in a fresh temporary directory, returns once they accept work
(readiness checked, not assumed), and on exit stops them and removes the
directory, whatever happened inside. Children also get a parent-death signal,
so a test runner killed outright does not leave servers behind.

- :func:`open_nats` — one ``nats-server`` with JetStream.
- :func:`open_nats_cluster` — three (or ``size``) clustered servers with
  JetStream; streams can be replicated (R3). Nodes can be killed with SIGKILL
  and restarted on the same storage.
- :func:`open_postgres` — a PostgreSQL cluster (``initdb`` + ``postgres``),
  run as an unprivileged user when we are root (``initdb`` refuses root).
  It can be stopped in immediate mode (a crash: no checkpoint) and started again.

Binaries: ``nats-server`` from ``$RUNWATCH_NATS_SERVER``, ``PATH`` or
``/usr/sbin`` (Debian's package); PostgreSQL from ``$RUNWATCH_PG_BIN`` or the
newest ``/usr/lib/postgresql/<version>/bin``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

#: Seconds any one server gets to become ready (or to stop) before the harness gives up.
READY_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.02
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A server could not be found, started or stopped; the message says which and shows its log's tail."""


def _die_with_parent(signal_number: int) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``signal_number`` to the child when its parent exits."""

    def set_parent_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)

    return set_parent_death_signal


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``ready`` until it is true; fail early if the process exits, and after READY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not ready():
        if process.poll() is not None:
            raise ServerError(f"{what} exited with status {process.returncode}:\n{_log_tail(log)}")
        if time.monotonic() > deadline:
            raise ServerError(f"{what} not ready after {READY_TIMEOUT_SECONDS:.0f} s:\n{_log_tail(log)}")
        # An external process: there is no event to await, only its answers to poll.
        time.sleep(_POLL_SECONDS)


def _stop(process: subprocess.Popen[bytes], stop_signal: signal.Signals) -> None:
    """Send ``stop_signal``, wait (bounded), then SIGKILL; reaps the process either way."""
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(READY_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(READY_TIMEOUT_SECONDS)


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> str:
    """The ``nats-server`` executable to run; ServerError naming where it looked when there is none."""
    candidates = [os.environ.get("RUNWATCH_NATS_SERVER"), shutil.which("nats-server"), "/usr/sbin/nats-server"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError("nats-server not found ($RUNWATCH_NATS_SERVER, PATH, /usr/sbin): apt-get install nats-server")


def _http_json(url: str) -> tuple[int, Any]:
    """(status, parsed body) of a GET on loopback, or (0, None) when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - loopback http only
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return 0, None


@dataclass
class NatsNode:
    """One ``nats-server`` process: its ports, files and process (None while it is down)."""

    name: str
    client_port: int
    monitor_port: int
    cluster_port: int | None
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / "nats.log"

    def write_config(self, cluster_name: str | None, route_ports: list[int]) -> None:
        """Write this node's config file (JetStream on, storage in its directory)."""
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f"http: 127.0.0.1:{self.monitor_port}",
            # Room for the benchmark's batches; real deployments size these to their disks.
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{self.directory / "jetstream"}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 4GB",
            "}",
        ]
        if cluster_name is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
            lines += [
                "cluster {",
                f"  name: {cluster_name}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                f"  routes: [{routes}]",
                "}",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, *, clustered: bool) -> None:
        """Start the process on its config and wait until it is healthy (JetStream included)."""
        self.spawn()
        self.wait_healthy(clustered=clustered)

    def spawn(self) -> None:
        """Start the process without waiting for it (peers of a cluster start together)."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"nats node {self.name} is already running")
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGKILL),  # noqa: PLW1509 - called from the main thread
        )

    def wait_healthy(self, *, clustered: bool) -> None:
        """Wait until the node answers healthy (and, clustered, knows its JetStream meta leader)."""
        if self.process is None:
            raise ServerError(f"nats node {self.name} is not running")
        _wait_until(lambda: self._healthy(clustered), self.process, f"nats node {self.name}", self.log_path)

    def _healthy(self, clustered: bool) -> bool:
        status, _ = _http_json(f"http://127.0.0.1:{self.monitor_port}/healthz")
        if status != 200:
            return False
        if not clustered:
            return True
        # healthz can be green before the JetStream meta group has a leader; streams need one.
        _, jsz = _http_json(f"http://127.0.0.1:{self.monitor_port}/jsz")
        return bool(jsz and (jsz.get("meta_cluster") or {}).get("leader"))

    def kill(self) -> None:
        """SIGKILL: the node dies at once, as in a machine or process crash."""
        if self.process is not None:
            self.process.kill()
            self._reap()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), bounded."""
        if self.process is not None:
            _stop(self.process, signal.SIGTERM)
            self._reap()

    def _reap(self) -> None:
        if self.process is not None:
            self.process.wait(READY_TIMEOUT_SECONDS)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@dataclass
class NatsCluster:
    """A set of NATS nodes (one for a single server); ``urls`` lists every node's client URL."""

    nodes: list[NatsNode]
    clustered: bool

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's client URL (a single server's only URL)."""
        return self.nodes[0].url

    def kill(self, name: str) -> NatsNode:
        """SIGKILL the node named ``name``; returns it (restart it with :meth:`restart`)."""
        node = self.node(name)
        node.kill()
        return node

    def restart(self, name: str) -> None:
        """Start a killed or stopped node again on the same storage and wait until it is healthy."""
        self.node(name).start(clustered=self.clustered)

    def node(self, name: str) -> NatsNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no nats node named {name!r}; nodes: {[node.name for node in self.nodes]}")

    def stream_leader(self, stream: str) -> str:
        """The name of the node leading ``stream`` now (asks the first live node's monitoring port)."""
        for node in self.nodes:
            if node.process is None:
                continue
            _, jsz = _http_json(f"http://127.0.0.1:{node.monitor_port}/jsz?streams=true&accounts=true")
            for account in (jsz or {}).get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") == stream and (detail.get("cluster") or {}).get("leader"):
                        return str(detail["cluster"]["leader"])
        raise ServerError(f"no live node knows a leader for stream {stream!r}")

    def stream_messages_on(self, name: str, stream: str) -> int | None:
        """How many messages node ``name``'s own replica of ``stream`` holds (None if it has none yet)."""
        node = self.node(name)
        _, jsz = _http_json(f"http://127.0.0.1:{node.monitor_port}/jsz?streams=true&accounts=true")
        for account in (jsz or {}).get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return int((detail.get("state") or {}).get("messages", 0))
        return None


@contextlib.contextmanager
def _temporary_directory(prefix: str) -> Iterator[Path]:
    """A new directory under the system's temporary directory, removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


#: How many times a set of nodes is started on new free ports when a port was taken in between.
_PORT_ATTEMPTS: Final = 3


@contextlib.contextmanager
def _open_nats_nodes(size: int, clustered: bool) -> Iterator[NatsCluster]:
    for attempt in range(_PORT_ATTEMPTS):
        with contextlib.ExitStack() as stack:
            try:
                cluster = _start_nats_nodes(stack, size, clustered)
            except ServerError as exc:
                # A free port can be taken by another process before the server binds it: try new ones.
                if "address already in use" in str(exc) and attempt + 1 < _PORT_ATTEMPTS:
                    continue
                raise
            yield cluster
            return


def _start_nats_nodes(stack: contextlib.ExitStack, size: int, clustered: bool) -> NatsCluster:
    """Start ``size`` nodes on free ports, each stopped (and their directory removed) when ``stack`` closes."""
    root = stack.enter_context(_temporary_directory("runwatch-nats-"))
    cluster_ports = [free_port() for _ in range(size)] if clustered else [None] * size
    nodes = []
    for index in range(size):
        directory = root / f"n{index + 1}"
        directory.mkdir()
        nodes.append(NatsNode(f"n{index + 1}", free_port(), free_port(), cluster_ports[index], directory))
    for node in nodes:
        routes = [port for port in cluster_ports if port is not None and port != node.cluster_port]
        node.write_config("runwatch" if clustered else None, routes)
    for node in nodes:
        stack.callback(node.stop)
    if clustered:
        # Start them all before waiting: a node's JetStream waits for its peers' meta group.
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_healthy(clustered=True)
    else:
        nodes[0].start(clustered=False)
    return NatsCluster(nodes, clustered)


def open_nats() -> contextlib.AbstractContextManager[NatsCluster]:
    """One ``nats-server`` with JetStream on free loopback ports, stopped and removed on exit."""
    return _open_nats_nodes(1, clustered=False)


def open_nats_cluster(size: int = 3) -> contextlib.AbstractContextManager[NatsCluster]:
    """``size`` clustered ``nats-server`` nodes with JetStream (R``size`` streams possible), torn down on exit."""
    if size < 2:
        raise ValueError(f"size: a cluster needs at least 2 nodes, got {size}")
    return _open_nats_nodes(size, clustered=True)


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``; ServerError when PostgreSQL is not installed."""
    configured = os.environ.get("RUNWATCH_PG_BIN")
    if configured:
        return Path(configured)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise ServerError("PostgreSQL not found ($RUNWATCH_PG_BIN, /usr/lib/postgresql/*/bin): install postgresql-15")
    return versions[-1].parent


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL as")


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1:``port``."""

    port: int
    directory: Path
    user: pwd.struct_passwd | None
    settings: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    #: The role and database the cluster is created with (trust authentication, loopback only).
    role = "runwatch"
    database = "runwatch"

    @property
    def dsn(self) -> str:
        """``postgresql://runwatch@127.0.0.1:<port>/runwatch``."""
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def _as_server_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run(
            [str(postgres_bin_dir() / program), *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=READY_TIMEOUT_SECONDS * 2,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            **self._as_server_user(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(f"{program} {' '.join(args)} failed with status {result.returncode}:\n{output[-2000:]}")

    def initdb(self) -> None:
        """Create the cluster (no fsync during creation: it is thrown away with the directory)."""
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", self.role, "--auth=trust", "-E", "UTF8", "--no-locale", "-N"
        )

    def start(self) -> None:
        """Start ``postgres`` in the foreground of a child process and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError("postgres is already running")
        socket_dir = self.directory / "socket"
        arguments = ["-D", str(self.data_dir), "-p", str(self.port), "-k", str(socket_dir)]
        arguments += ["-c", "listen_addresses=127.0.0.1"]
        for name, value in self.settings.items():
            arguments += ["-c", f"{name}={value}"]
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap()
        self.process = subprocess.Popen(
            [str(postgres_bin_dir() / "postgres"), *arguments],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            # SIGQUIT is PostgreSQL's immediate shutdown: the postmaster takes its backends down with it.
            preexec_fn=_die_with_parent(signal.SIGQUIT),  # noqa: PLW1509 - called from the main thread
            **self._as_server_user(),
        )
        _wait_until(self._accepting, self.process, "postgres", self.log_path)

    def _accepting(self) -> bool:
        address = ["-h", "127.0.0.1", "-p", str(self.port), "-d", self.database]
        result = subprocess.run(
            [str(postgres_bin_dir() / "pg_isready"), "-q", *address],
            capture_output=True,
            timeout=READY_TIMEOUT_SECONDS,
            check=False,
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop: ``fast`` (SIGINT: sessions rolled back, checkpoint) or ``immediate`` (SIGQUIT: a crash)."""
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        if mode not in signals:
            raise ValueError(f"mode: one of {sorted(signals)}, got {mode!r}")
        if self.process is not None:
            _stop(self.process, signals[mode])
            self._reap()

    def restart(self, mode: str = "immediate") -> None:
        """Stop in ``mode`` and start again on the same data (clients must reconnect)."""
        self.stop(mode)
        self.start()

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (letters, digits, ``_``); returns its DSN."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"name: letters, digits and '_' only, got {name!r}")
        _create_database(self, name)
        return f"postgresql://{self.role}@127.0.0.1:{self.port}/{name}"

    def _reap(self) -> None:
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@contextlib.contextmanager
def open_postgres(*, fsync: bool = True, settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL cluster on a free loopback port with database and role ``runwatch``; removed on exit.

    Args:
        fsync: False skips the disk flushes (a process crash still loses nothing the
            server acknowledged: the writes are in the kernel; only a machine crash would).
        settings: more ``postgresql.conf`` settings, passed as ``-c name=value``.
    """
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(_temporary_directory("runwatch-pg-"))
        user = _server_user()
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        all_settings = {"fsync": "on" if fsync else "off", "max_connections": "50", **(settings or {})}
        server = PostgresServer(free_port(), directory, user, all_settings)
        server.initdb()
        (directory / "socket").mkdir()
        if user is not None:
            os.chown(directory / "socket", user.pw_uid, user.pw_gid)
        stack.callback(server.stop, "fast")
        server.start()
        # The database the DSN names (initdb makes only "postgres").
        _create_database(server)
        yield server


def _create_database(server: PostgresServer, name: str | None = None) -> None:
    address = ["-h", "127.0.0.1", "-p", str(server.port), "-U", server.role]
    result = subprocess.run(
        [str(postgres_bin_dir() / "createdb"), *address, name or server.database],
        capture_output=True,
        timeout=READY_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise ServerError(f"createdb failed: {result.stderr.decode(errors='replace')}")
