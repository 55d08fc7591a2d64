"""Declarative pipeline configuration: load, validate, resolve.

The shape (TOML shown; JSON and dicts are the same)::

    [sources.app]
    type = "in_process"

    [stages.alerts]
    type = "alerts"
    inputs = ["app"]

    [sinks.store]
    type = "sqlite"
    inputs = ["app"]              # ids of sources or stages; globs allowed
    flush_interval_seconds = 0.1  # every other key is an option of the type
    buffer = { max_events = 50000, max_bytes = 33554432, when_full = "block" }

Loading never opens a file other than the config itself, a socket or a
database: it returns a :class:`PipelineSpec` that the runtime builds later.
Every error is a :class:`~runwatch.exceptions.ConfigError` whose ``path``
names the component and key (``sinks.store.flush_interval_seconds``).
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..exceptions import ConfigError
from .buffer import DEFAULT_MAX_BYTES, OverflowPolicy
from .component import Component

__all__ = [
    "BUILTIN_COMPONENTS",
    "BufferSpec",
    "ComponentSpec",
    "PipelineSpec",
    "default_pipeline_config",
    "load_pipeline_config",
    "resolve_component_class",
]

SECTIONS = ("sources", "stages", "sinks")
#: The smallest byte bound a buffer may have: a few events of any size.
MIN_MAX_BYTES = 64 << 10
_ROLE_OF_SECTION = {"sources": "source", "stages": "stage", "sinks": "sink"}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
ENTRY_POINT_GROUP = "runwatch.components"

#: Built-in component types, imported only when used.
BUILTIN_COMPONENTS: dict[str, str] = {
    "in_process": "runwatch.sources.in_process:InProcessSource",
    "ingest": "runwatch.sources.ingest:IngestSource",
    "store_tail": "runwatch.sources.store_tail:StoreTailSource",
    "websocket_hub": "runwatch.sinks.websocket:WebsocketHub",
    "filter": "runwatch.stages.filter:FilterStage",
    "alerts": "runwatch.alerts.stage:AlertsStage",
    "liveness": "runwatch.stages.liveness:LivenessStage",
    "retention": "runwatch.stages.retention:RetentionStage",
    "snapshot": "runwatch.stages.snapshot:SnapshotStage",
    "sqlite": "runwatch.sinks.sqlite:SQLiteSink",
    "remote": "runwatch.remote.sink:RemoteSink",
    "postgres": "runwatch.sinks.postgres:PostgresSink",
    "log": "runwatch.sinks.log:LogSink",
    "blackhole": "runwatch.sinks.blackhole:BlackholeSink",
    "system": "runwatch.sources.system:SystemSampler",
    "log_notifier": "runwatch.sinks.notify.log:LogNotifier",
    "webhook": "runwatch.sinks.notify.webhook:WebhookNotifier",
    "callback": "runwatch.sinks.notify.callback:CallbackNotifier",
}

#: Built-in types whose source and sink share a name: the section decides.
BUILTIN_BY_SECTION: dict[str, dict[str, str]] = {
    "sources": {"nats": "runwatch.sources.nats:NatsSource"},
    "sinks": {"nats": "runwatch.sinks.nats:NatsSink"},
}


def default_pipeline_config(
    *,
    alerts: bool = False,
    snapshots: bool = False,
    system: bool = False,
    snapshot_interval_seconds: float = 300.0,
    max_snapshots: int = 100,
    max_events: int = 1000,
    system_interval_seconds: float = 5.0,
    max_image_bytes_per_run: int | None = 1 << 30,
    tail: bool = False,
) -> dict[str, Any]:
    """The graph used when no config is given.

    In-process and remote-ingest sources pass the liveness stage (which marks
    silent runs hung or crashed) and, with ``alerts``, the alerts stage (its
    default rules: non-finite values, error bursts, missing heartbeats), and feed the SQLite store (``block``:
    nothing is lost) and the websocket hub (``drop_oldest``: live views never
    hold the store back). WebMonitor and ``runwatch serve`` also use ``alerts``,
    ``snapshots`` (they know their data directory) and ``system`` (psutil
    samples of the active runs' machine every ``system_interval_seconds``); the snapshot stage is a
    leaf, so a fault in it never touches the store's path. With ``tail`` (``runwatch serve``), what
    other processes commit to the store goes to the websocket hub too (a ``store_tail`` source, never
    into the store again), and the liveness stage watches every live run the store holds, whoever
    writes it.
    """
    sources: dict[str, Any] = {"app": {"type": "in_process"}, "ingest": {"type": "ingest"}}
    if system:
        sources["system"] = {"type": "system", "interval_seconds": system_interval_seconds}
    stages: dict[str, Any] = {"liveness": {"type": "liveness", "inputs": list(sources)}}
    if tail:
        stages["liveness"]["watch_store_runs"] = True
    last = "liveness"
    if alerts:
        stages["alerts"] = {"type": "alerts", "inputs": ["liveness"]}
        last = "alerts"
    if snapshots:
        stages["snapshots"] = {
            "type": "snapshot",
            "inputs": [last],
            "snapshot_interval_seconds": snapshot_interval_seconds,
            "max_snapshots": max_snapshots,
            "max_events": max_events,
        }
    live_inputs = [last]
    if tail:
        sources["tail"] = {"type": "store_tail"}
        live_inputs.append("tail")
    return {
        "sources": sources,
        "stages": stages,
        "sinks": {
            "store": {"type": "sqlite", "inputs": [last], "max_image_bytes_per_run": max_image_bytes_per_run},
            "live": {
                "type": "websocket_hub",
                "inputs": live_inputs,
                "replay_events": max_events,
                "buffer": {"max_events": 100_000, "when_full": "drop_oldest"},
            },
        },
    }


@dataclass(frozen=True)
class BufferSpec:
    """A component's input buffer: its bounds (events, and bytes of the events' estimated
    memory) and what happens when either is reached."""

    max_events: int = 50_000
    when_full: OverflowPolicy = OverflowPolicy.BLOCK
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class ComponentSpec:
    """One validated component, ready to build."""

    id: str
    section: str
    #: The config's ``type`` key: a built-in type, an entry-point name or ``module:Class``.
    type_name: str
    cls: type[Component]
    options: Any
    inputs: tuple[str, ...]
    buffer: BufferSpec

    @property
    def path(self) -> str:
        """The key path of this component in the config."""
        return f"{self.section}.{self.id}"


@dataclass(frozen=True)
class PipelineSpec:
    """A validated graph: components in topological order (sources first)."""

    components: tuple[ComponentSpec, ...]
    #: How long stopping waits for the queues to drain (``None``: the runtime's default).
    shutdown_timeout_seconds: float | None = None

    def consumers_of(self, component_id: str) -> list[ComponentSpec]:
        """The components that list ``component_id`` among their inputs."""
        return [spec for spec in self.components if component_id in spec.inputs]

    def get(self, component_id: str) -> ComponentSpec:
        """The spec of one component."""
        for spec in self.components:
            if spec.id == component_id:
                return spec
        raise KeyError(component_id)

    def upstream_of(self, component_id: str) -> set[str]:
        """``component_id`` and every component an event passes on its way to it."""
        seen: set[str] = set()
        todo = [component_id]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.get(current).inputs)
        return seen

    def sink_paths(self, component_id: str, *, acknowledging_only: bool = False) -> int:
        """How many distinct paths lead from this component to a sink.

        With ``acknowledging_only``, only paths to sinks that flush barriers
        wait for (``Sink.acknowledges_flush``; not the websocket hub).
        """
        spec = self.get(component_id)
        if spec.section == "sinks":
            return 1 if not acknowledging_only or getattr(spec.cls, "acknowledges_flush", True) else 0
        return sum(
            self.sink_paths(consumer.id, acknowledging_only=acknowledging_only)
            for consumer in self.consumers_of(component_id)
        )


def load_pipeline_config(source: str | Path | Mapping[str, Any] | None) -> PipelineSpec:
    """Load and validate a pipeline config from a TOML/JSON file or a mapping.

    ``None`` gives the built-in default graph.

    Raises:
        ConfigError: naming the component id and key path of the first problem.
    """
    if source is None:
        raw: Mapping[str, Any] = default_pipeline_config()
    elif isinstance(source, Mapping):
        raw = source
    elif isinstance(source, (str, Path)):
        raw = _read_file(Path(source))
    else:
        raise TypeError(f"pipeline config must be a path or a mapping, got {type(source).__name__}")
    return _validate(raw)


def read_table_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON (``.json``) or TOML (any other suffix) file holding one table.

    Raises:
        ConfigError: the file cannot be read or parsed, or is not a table.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError("", f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else tomllib.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{path} is not valid {'JSON' if is_json else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a table, got {_json_type(data)}")
    return data


def _read_file(path: Path) -> Mapping[str, Any]:
    data = read_table_file(path, "pipeline config")
    # A MonitorConfig file may nest the graph under "pipeline".
    if "pipeline" in data and isinstance(data["pipeline"], Mapping):
        return data["pipeline"]
    return data


def _validate(raw: Mapping[str, Any]) -> PipelineSpec:
    for key in raw:
        if key not in SECTIONS and key != "shutdown_timeout_seconds":
            raise ConfigError(
                str(key), f"unknown section; expected one of {', '.join(SECTIONS)} (or shutdown_timeout_seconds)"
            )
    shutdown = raw.get("shutdown_timeout_seconds")
    if shutdown is not None and (
        isinstance(shutdown, bool) or not isinstance(shutdown, (int, float)) or not 0 < shutdown < float("inf")
    ):
        raise ConfigError("shutdown_timeout_seconds", f"must be a positive number of seconds, got {shutdown!r}")
    entries: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for section in SECTIONS:
        table = raw.get(section, {})
        if not isinstance(table, Mapping):
            raise ConfigError(section, f"must be a table of components, got {_json_type(table)}")
        for component_id, body in table.items():
            path = f"{section}.{component_id}"
            if not isinstance(component_id, str) or not _ID_PATTERN.match(component_id):
                raise ConfigError(path, "a component id may only hold letters, digits, '_' and '-'")
            if component_id in entries:
                raise ConfigError(path, f"the id is already used by {entries[component_id][0]}.{component_id}")
            if not isinstance(body, Mapping):
                raise ConfigError(path, f"must be a table, got {_json_type(body)}")
            entries[component_id] = (section, body)
    if not any(section == "sources" for section, _ in entries.values()):
        raise ConfigError("sources", "at least one source is required")

    upstream_ids = [cid for cid, (section, _) in entries.items() if section != "sinks"]
    specs: dict[str, ComponentSpec] = {}
    for component_id, (section, body) in entries.items():
        specs[component_id] = _component_spec(component_id, section, body, upstream_ids, entries)
    order = _topological_order(specs)
    if not any(spec.section == "sinks" for spec in specs.values()):
        raise ConfigError("sinks", "at least one sink is required")
    return PipelineSpec(
        components=tuple(specs[cid] for cid in order),
        shutdown_timeout_seconds=None if shutdown is None else float(shutdown),
    )


def _component_spec(
    component_id: str,
    section: str,
    body: Mapping[str, Any],
    upstream_ids: list[str],
    entries: Mapping[str, tuple[str, Mapping[str, Any]]],
) -> ComponentSpec:
    path = f"{section}.{component_id}"
    type_name = body.get("type")
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(f"{path}.type", "is required: a built-in type, an entry-point name or 'module:Class'")
    cls = resolve_component_class(type_name, f"{path}.type", section=section)
    if cls.role != _ROLE_OF_SECTION[section]:
        raise ConfigError(f"{path}.type", f"{type_name!r} is a {cls.role}, not a {_ROLE_OF_SECTION[section]}")

    inputs: tuple[str, ...] = ()
    if section == "sources":
        if "inputs" in body:
            raise ConfigError(f"{path}.inputs", "a source takes no inputs")
    else:
        inputs = _resolve_inputs(path, body.get("inputs"), upstream_ids, component_id, entries)

    buffer = _buffer_spec(f"{path}.buffer", body.get("buffer", {}))
    option_values = {k: v for k, v in body.items() if k not in ("type", "inputs", "buffer")}
    try:
        options = cls.Options(**option_values)
    except ValidationError as exc:
        error = exc.errors()[0]
        location = ".".join(str(part) for part in error["loc"])
        detail = error["msg"]
        if error["type"] != "extra_forbidden" and "input" in error:
            detail += f" (got {error['input']!r})"
        elif error["type"] == "extra_forbidden":
            known = ", ".join(sorted(cls.Options.model_fields)) or "none"
            detail = f"unknown option for type {type_name!r} (known: {known})"
        raise ConfigError(f"{path}.{location}", detail) from None
    return ComponentSpec(component_id, section, type_name, cls, options, inputs, buffer)


def _resolve_inputs(
    path: str,
    value: Any,
    upstream_ids: list[str],
    own_id: str,
    entries: Mapping[str, tuple[str, Mapping[str, Any]]],
) -> tuple[str, ...]:
    if value is None:
        raise ConfigError(f"{path}.inputs", "is required: a list of source or stage ids (globs allowed)")
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{path}.inputs", f"must be a non-empty list of ids, got {value!r}")
    resolved: list[str] = []
    for index, pattern in enumerate(value):
        if any(char in pattern for char in "*?["):
            matches = [cid for cid in upstream_ids if fnmatch.fnmatchcase(cid, pattern) and cid != own_id]
            if not matches:
                raise ConfigError(f"{path}.inputs[{index}]", f"{pattern!r} matches no source or stage")
        else:
            if pattern not in entries:
                raise ConfigError(f"{path}.inputs[{index}]", f"unknown input {pattern!r}")
            if entries[pattern][0] == "sinks":
                raise ConfigError(f"{path}.inputs[{index}]", f"{pattern!r} is a sink; sinks have no output")
            matches = [pattern]
        resolved.extend(match for match in matches if match not in resolved)
    return tuple(resolved)


def _buffer_spec(path: str, value: Any) -> BufferSpec:
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a table, got {_json_type(value)}")
    for key in value:
        if key not in ("max_events", "max_bytes", "when_full"):
            raise ConfigError(f"{path}.{key}", "unknown buffer option (known: max_events, max_bytes, when_full)")
    max_events = value.get("max_events", BufferSpec.max_events)
    if type(max_events) is not int or max_events < 1:
        raise ConfigError(f"{path}.max_events", f"must be a positive integer, got {max_events!r}")
    max_bytes = value.get("max_bytes", BufferSpec.max_bytes)
    if type(max_bytes) is not int or max_bytes < MIN_MAX_BYTES:
        raise ConfigError(
            f"{path}.max_bytes", f"must be an integer of at least {MIN_MAX_BYTES} bytes, got {max_bytes!r}"
        )
    when_full = value.get("when_full", BufferSpec.when_full.value)
    try:
        policy = OverflowPolicy(when_full)
    except ValueError:
        choices = ", ".join(p.value for p in OverflowPolicy)
        raise ConfigError(f"{path}.when_full", f"must be one of {choices}, got {when_full!r}") from None
    return BufferSpec(max_events=max_events, when_full=policy, max_bytes=max_bytes)


def _topological_order(specs: Mapping[str, ComponentSpec]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(cid: str, trail: list[str]) -> None:
        if state.get(cid) == 2:
            return
        if state.get(cid) == 1:
            cycle = trail[trail.index(cid) :] + [cid]
            described = " → ".join(f"{specs[c].section}.{c}" for c in cycle)
            raise ConfigError(f"{specs[cid].path}.inputs", f"cycle: {described}")
        state[cid] = 1
        for upstream in specs[cid].inputs:
            visit(upstream, [*trail, cid])
        state[cid] = 2
        order.append(cid)

    for cid in specs:
        visit(cid, [])
    return order


def resolve_component_class(type_name: str, path: str = "type", *, section: str | None = None) -> type[Component]:
    """Find the class of a component type.

    Looks in order at the built-in types (of ``section``, for a name a source
    and a sink share), ``module:Class`` paths and the ``runwatch.components``
    entry-point group.

    Raises:
        ConfigError: the type is unknown or is not a component.
    """
    target = BUILTIN_BY_SECTION.get(section or "", {}).get(type_name) or BUILTIN_COMPONENTS.get(type_name)
    if target is None and ":" in type_name:
        target = type_name
    if target is not None:
        module_name, _, attribute = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(path, f"cannot import {type_name!r}: {exc}") from None
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == type_name]
        if not found:
            known = ", ".join(sorted({*BUILTIN_COMPONENTS, *BUILTIN_BY_SECTION.get(section or "", {})}))
            raise ConfigError(
                path,
                f"unknown type {type_name!r} (built-in: {known}; or an entry point in "
                f"{ENTRY_POINT_GROUP!r}, or 'module:Class')",
            )
        try:
            obj = found[0].load()
        except Exception as exc:  # a plugin's import may fail in any way
            raise ConfigError(path, f"cannot load entry point {type_name!r}: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, Component) and hasattr(obj, "role")):
        raise ConfigError(path, f"{type_name!r} is not a runwatch Source, Stage or Sink class")
    return obj


def _json_type(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)
