"""MonitorConfig: the settings of a monitor, from code, files and the environment.

Layering, lowest first: built-in defaults < a config file
(:meth:`MonitorConfig.from_file`) < ``MONITOR_*`` environment variables <
keyword arguments. The plain constructor takes exactly what it is given;
:meth:`MonitorConfig.load` and :meth:`MonitorConfig.from_file` apply the layers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = ["DEFAULT_WEB_PORT", "ENV_PREFIX", "MonitorConfig"]

ENV_PREFIX = "MONITOR_"
#: The web interface's port unless set: a preference, not fixed (see :class:`MonitorConfig`).
DEFAULT_WEB_PORT = 8080
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class MonitorConfig:
    """Configuration for the monitoring system.

    Args:
        db_path: path to the SQLite database file.
        data_dir: directory for monitoring data (snapshots, exports).
        static_dir: a directory of your own static web files, served by the
            web interface at ``/static/<name>`` when it exists (the
            dashboard's own files of the same name take precedence, so a
            stray directory cannot break the dashboard).
        web_port: port of the web interface; ``0`` picks a free port.
        update_interval: seconds between the monitor's own metric updates:
            the built-in sampler's ``system/*`` readings of each active run,
            and the heartbeats that carry a run's progress counters
            (``total_steps``, ``total_episodes``) to the store and the
            dashboard. (Live events reach the dashboard within 25 ms
            whatever this is; that is the ``websocket_hub`` sink's
            ``publish_interval_seconds``.)
        snapshot_interval: seconds between state snapshots.
        max_events: how many recent events runwatch keeps in memory: the
            live hub keeps that many of the latest events for subscribers
            that ask to replay them before the live ones (``runwatch tail
            -n``, ``/ws?replay=N``), and each run's view keeps that many of
            its log, lifecycle, exception and alert events (the view is what
            every snapshot saves and what a resumed run's view starts from).
        max_snapshots: snapshots kept per run.
        debug: log runwatch's debug details (its ``runwatch`` logger at DEBUG
            until :meth:`WebMonitor.close`, and the web server's at INFO).
        pipeline: a pipeline config (TOML/JSON path or a mapping); ``None``
            uses the built-in default graph.
        web_host: the address the web interface binds (loopback by default).
        web_token: a bearer token the web interface requires (also read from
            ``RUNWATCH_TOKEN``); binding beyond loopback without one generates one.
        web_max_connections: the most connections the web interface keeps
            open at once; ``None``: half of the process's file-descriptor
            limit (``RLIMIT_NOFILE``), so the host always keeps the other half.
        shutdown_timeout_seconds: how long closing the monitor (or stopping
            ``runwatch serve``) waits for the queues to drain into the store
            and the other sinks; what is still queued then is dropped and
            counted. Applies to the built-in graph and to a ``pipeline`` of
            your own that does not set its own top-level
            ``shutdown_timeout_seconds`` (when it does, that value wins).
        commit_timeout_seconds: how long a run lifecycle call
            (``start_training``, ``stop_training``, ``pause_training``...)
            waits for its change to be committed before returning anyway
            (logged and counted; see :meth:`WebMonitor.statistics`).
        max_images_per_second: images kept per run and name each second
            (:meth:`WebMonitor.log_image`), in bursts of up to one second's
            worth; more are dropped at the call and counted (never raised).
            ``None``: no limit. The default keeps every frame of a 60 Hz game.
        max_image_bytes_per_run: the bytes of images a run may store (each
            content counted once per run); past it new images are refused
            by the store and counted. ``None``: no budget.
        session_heartbeat_timeout_seconds: silence after which a session
            created through datacat's routes, having sent a heartbeat, is
            ``suspended`` (datacat's ``heartbeat_timeout_seconds``; a
            session's own ``heartbeat_timeout_seconds`` wins).
        web_ssl_certfile: a PEM certificate to serve HTTPS and WSS directly
            (``runwatch serve --ssl-certfile``); ``None``: plain HTTP.
        web_ssl_keyfile: its private key (``None``: in the certificate file).
        server_url: remote mode: the ``runwatch serve`` to record into
            (``http(s)://host:port``; also ``MONITOR_SERVER_URL``). The monitor
            keeps the same API, but its events go to that server's ingest
            through a bounded spool under ``data_dir`` (nothing is lost while
            the server restarts or is unreachable), its queries go to the
            server's REST API, and it serves no dashboard of its own (``web_url``
            is the server's). ``None``: embedded mode (the local ``db_path``).
        server_token: the server's bearer token (also ``MONITOR_SERVER_TOKEN``,
            or ``RUNWATCH_TOKEN``): sent in the ``Authorization`` header only,
            never shown in a ``repr`` or a log.

    ``web_port`` 8080, the default, is a preference: when another program
    holds it the web interface moves to a free port (and says so); any other
    port is fixed (taken: the web interface says by whom and does not start).
    Either way a port held by a runwatch serving the same store is used as it
    is: its dashboard shows this process's runs.

    Raises:
        ValueError: a value is out of range (the message names the field).
        TypeError: a value has the wrong type.
    """

    db_path: str = "monitoring.db"
    data_dir: str = "monitor_data"
    static_dir: str = "static"
    web_port: int = DEFAULT_WEB_PORT
    update_interval: float = 1.0
    snapshot_interval: float = 300.0
    max_events: int = 1000
    max_snapshots: int = 100
    debug: bool = False
    pipeline: str | Mapping[str, Any] | None = None
    web_host: str = "127.0.0.1"
    web_token: str | None = field(default=None, repr=False)
    web_max_connections: int | None = None
    shutdown_timeout_seconds: float = 10.0
    commit_timeout_seconds: float = 10.0
    max_images_per_second: float | None = 60.0
    max_image_bytes_per_run: int | None = 1 << 30
    session_heartbeat_timeout_seconds: float = 60.0
    web_ssl_certfile: str | None = None
    web_ssl_keyfile: str | None = None
    server_url: str | None = None
    server_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("db_path", "data_dir", "static_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str):
                raise TypeError(f"{name} must be a path, got {type(value).__name__}")
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        _require_int("web_port", self.web_port, 0, 65535)
        _require_positive("update_interval", self.update_interval)
        _require_positive("snapshot_interval", self.snapshot_interval)
        _require_positive("shutdown_timeout_seconds", self.shutdown_timeout_seconds)
        _require_positive("commit_timeout_seconds", self.commit_timeout_seconds)
        _require_positive("session_heartbeat_timeout_seconds", self.session_heartbeat_timeout_seconds)
        _require_int("max_events", self.max_events, 1, None)
        _require_int("max_snapshots", self.max_snapshots, 1, None)
        if not isinstance(self.debug, bool):
            raise TypeError(f"debug must be a bool, got {self.debug!r}")
        if not isinstance(self.web_host, str) or not self.web_host:
            raise TypeError(f"web_host must be a non-empty string, got {self.web_host!r}")
        if self.web_token is not None and (not isinstance(self.web_token, str) or len(self.web_token) < 8):
            raise ValueError("web_token must be a string of at least 8 characters")
        if self.web_max_connections is not None:
            _require_int("web_max_connections", self.web_max_connections, 1, None)
        if self.max_images_per_second is not None:
            _require_positive_rate("max_images_per_second", self.max_images_per_second)
        if self.max_image_bytes_per_run is not None:
            _require_int("max_image_bytes_per_run", self.max_image_bytes_per_run, 1, None)
        for name in ("web_ssl_certfile", "web_ssl_keyfile"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{name} must be a path or None, got {value!r}")
        if self.web_ssl_keyfile is not None and self.web_ssl_certfile is None:
            raise ValueError("web_ssl_keyfile needs web_ssl_certfile")
        if self.server_url is not None:
            if not isinstance(self.server_url, str):
                raise TypeError(f"server_url must be a string or None, got {type(self.server_url).__name__}")
            from .remote.server_url import check_server_url

            try:
                object.__setattr__(self, "server_url", check_server_url(self.server_url))
            except ValueError as exc:
                raise ValueError(f"server_url: {exc}") from None
            if self.pipeline is not None:
                raise ValueError(
                    "server_url and pipeline cannot both be set: a pipeline of your own sends to a server"
                    " through a `remote` sink (see docs/workspace.md)"
                )
        if self.server_token is not None:
            if not isinstance(self.server_token, str) or not self.server_token:
                raise TypeError("server_token must be a non-empty string or None")
            if self.server_url is None:
                raise ValueError("server_token needs server_url")
        pipeline = self.pipeline
        if isinstance(pipeline, os.PathLike):
            object.__setattr__(self, "pipeline", os.fspath(pipeline))
        elif pipeline is not None and not isinstance(pipeline, (str, Mapping)):
            raise TypeError(f"pipeline must be a path or a mapping, got {type(pipeline).__name__}")

    @classmethod
    def load(cls, **overrides: Any) -> MonitorConfig:
        """Defaults < ``MONITOR_*`` environment < ``overrides``."""
        return cls._layered({}, overrides)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> MonitorConfig:
        """Read a JSON or TOML file; then the environment, then ``overrides``.

        The file holds the fields above at its top level (TOML may also use a
        ``[monitor]`` table) and may hold a ``pipeline`` table.

        Raises:
            ConfigError: the file cannot be read or parsed, or holds an unknown key.
            ValueError / TypeError: a value is invalid.
        """
        from .pipeline.config import read_table_file  # lazily: pydantic is not needed to import runwatch

        file = Path(path)
        data = read_table_file(file, "monitor config")
        if isinstance(data.get("monitor"), dict):
            data = {**data.pop("monitor"), **data}
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(str(key), f"unknown setting in {file} (known: {', '.join(sorted(known))})")
        return cls._layered(data, overrides)

    @classmethod
    def _layered(cls, file_values: Mapping[str, Any], overrides: Mapping[str, Any]) -> MonitorConfig:
        known = {f.name: f for f in fields(cls)}
        for key in overrides:
            if key not in known:
                raise TypeError(f"MonitorConfig got an unexpected setting {key!r}")
        from_env: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, spec in known.items():
            variable = ENV_PREFIX + name.upper()
            if variable in os.environ:
                from_env[name] = _parse_env(variable, os.environ[variable], spec.type)
                sources[name] = variable
        if "web_token" not in from_env and os.environ.get("RUNWATCH_TOKEN"):
            from_env["web_token"] = os.environ["RUNWATCH_TOKEN"]
            sources["web_token"] = "RUNWATCH_TOKEN"
        values = {**file_values, **from_env, **overrides}
        if values.get("server_url") and "server_token" not in values and os.environ.get("RUNWATCH_TOKEN"):
            values["server_token"] = os.environ["RUNWATCH_TOKEN"]  # the server's token, as `runwatch sync` reads it
            sources["server_token"] = "RUNWATCH_TOKEN"
        try:
            return cls(**values)
        except (ValueError, TypeError) as exc:
            for name, variable in sources.items():
                if name not in overrides and str(exc).startswith(name):
                    raise type(exc)(f"{exc} (from environment variable {variable})") from None
            raise

    @property
    def remote(self) -> bool:
        """Whether this is remote mode (``server_url`` is set)."""
        return self.server_url is not None

    def with_changes(self, **changes: Any) -> MonitorConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _require_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _require_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, got {value}")


def _require_positive_rate(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a positive number (or None for no limit), got {value}")


def _parse_env(variable: str, text: str, annotation: Any) -> Any:
    kind = str(annotation)
    try:
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "str | None":
            return text or None
        if kind == "int | None":
            return int(text) if text.strip() else None
        if kind == "float | None":
            return float(text) if text.strip() else None
    except ValueError:
        raise ValueError(f"environment variable {variable}={text!r} is not a valid {kind}") from None
    return text
