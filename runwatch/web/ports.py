"""When the dashboard's port is taken: say who has it, and do the sensible thing.

A second training script on the same machine finds port 8080 taken by the
first one's dashboard. What to do depends on who holds the port, which
``GET /api/health`` tells (it names the store a runwatch server reads, by
path and by file identity):

- **a runwatch serving the same store**: nothing to start; its dashboard
  shows this process's runs too (live, when that server follows the store:
  ``runwatch serve`` does). One line says where.
- **anything else** (another store's runwatch, another program): listen on a
  free port instead and say so, unless the port was fixed by the user, in
  which case fail with a message that names who holds it.

:func:`plan_taken_port` decides (pure); :func:`probe_health` asks the port
(I/O, bounded by a short timeout). Also here: :func:`store_identity` (what
``/api/health`` reports).
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any, Literal, NamedTuple

import orjson

from ..store.sqlite import SQLiteStore

__all__ = ["PortPlan", "plan_taken_port", "probe_health", "same_store", "store_identity"]


def store_identity(db_path: str | os.PathLike[str]) -> dict[str, str | None]:
    """The store a server reads: its resolved path, and ``device:inode`` of the file (``None`` while missing).

    Two paths name the same store when their identities are equal (symlinks,
    relative paths and bind mounts included).
    """
    return SQLiteStore(db_path).identity()


def same_store(health: Any, db_path: str | os.PathLike[str]) -> bool:
    """Whether an ``/api/health`` answer comes from a runwatch serving the store at ``db_path``."""
    if not isinstance(health, dict) or not isinstance(health.get("store"), dict):
        return False
    theirs = health["store"]
    ours = store_identity(db_path)
    if ours["identity"] is not None and theirs.get("identity") is not None:
        return bool(theirs["identity"] == ours["identity"])
    return bool(theirs.get("path") == ours["path"])


class PortPlan(NamedTuple):
    """What to do about a taken port.

    Attributes:
        action: ``use_existing`` (another runwatch serves the same store: start
            nothing), ``listen`` (on ``port``: 0 is any free port), or ``fail``.
        port: the port to listen on (``listen`` only).
        url: the other server's base URL (``use_existing`` only).
        message: one line for the user.
    """

    action: Literal["use_existing", "listen", "fail"]
    port: int
    url: str | None
    message: str


def plan_taken_port(
    host: str, port: int, db_path: str | os.PathLike[str], health: Any, *, fixed: bool, scheme: str = "http"
) -> PortPlan:
    """Decide what to do when ``host:port`` is taken (see the module docs).

    Args:
        host: the address the dashboard was to bind.
        port: the port that is taken.
        db_path: the store this process would serve.
        health: what ``GET /api/health`` on that port answered (``None``: no
            runwatch answer: another program, or a runwatch that wants a token).
        fixed: the user chose this port (fail rather than move).
        scheme: ``http`` or ``https`` (for the URL shown).
    """
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"{scheme}://{shown_host}:{port}"
    store = str(Path(db_path))
    if same_store(health, db_path):
        live = bool(isinstance(health, dict) and health.get("live_store"))
        how = "with this process's runs, live" if live else "with this process's runs (reload the page to see new ones)"
        return PortPlan("use_existing", port, url, f"runwatch: {store} is already served at {url}, {how}")
    if isinstance(health, dict) and isinstance(health.get("store"), dict):
        holder = f"a runwatch serving another store ({health['store'].get('path')})"
    else:
        holder = "another program"
    if fixed:
        return PortPlan(
            "fail",
            port,
            None,
            f"port {port} on {host} is taken by {holder}; choose another port (0 picks any free one)",
        )
    return PortPlan("listen", 0, None, f"runwatch: port {port} is taken by {holder}; the dashboard uses a free port")


def probe_health(host: str, port: int, *, token: str | None = None, timeout: float = 1.0) -> Any:
    """``GET /api/health`` on ``host:port``, parsed; ``None`` for anything but a runwatch answer.

    Never raises: a port that does not answer HTTP, answers slowly (past
    ``timeout`` seconds) or refuses the token is "another program".
    """
    address = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", "/api/health", headers=headers)
        response = connection.getresponse()
        body = response.read(64 * 1024)
        if response.status != 200:
            return None
        return orjson.loads(body)
    except (OSError, http.client.HTTPException, orjson.JSONDecodeError):
        return None
    finally:
        connection.close()
