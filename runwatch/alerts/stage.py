"""The ``alerts`` stage: evaluates alert rules on the events flowing through it.

Status: beta · Delivery: forwards every batch unchanged · Egress: stream ·
State: stateful (persisted to a JSON file)

Every batch goes on downstream as it came, followed by the alert events its
evaluation produced (an :class:`~runwatch.events.AlertEvent` per state
change: pending, firing, resolved...), so alerts reach the store, the
websocket hub and notifiers like any other event, within the same flush.
Every ``evaluate_interval_seconds`` the stage also evaluates what time alone
changes (absence of heartbeats, ``for`` timers) and saves the engine's
state, which :meth:`start` restores: firing alerts and pending timers
survive a restart. Saving never holds events up: the latest snapshot is
handed to a dedicated writer thread (older unwritten ones are skipped), which
replaces the file atomically; ``aclose`` writes the final one and waits for
it. Rule semantics: :mod:`runwatch.alerts.engine`.

Example::

    [stages.alerts]
    type = "alerts"
    inputs = ["app", "ingest"]
    rules = [
        { kind = "threshold", name = "loss_high", metric = "loss", op = ">", threshold = 10, for_seconds = 60 },
        { kind = "stagnation", name = "loss_plateau", metric = "loss", steps = 5000, severity = "info" },
    ]

    [sinks.store]
    type = "sqlite"
    inputs = ["alerts"]

=============================  ===============  ========  ================================  ========
Option                         Type             Required  Default                           Unit
=============================  ===============  ========  ================================  ========
``rules``                      list of tables   no        ``None`` (only the defaults)      —
``default_rules``              boolean          no        ``true``                          —
``evaluate_interval_seconds``  number > 0       no        ``1.0``                           seconds
``state_path``                 string           no        ``<data_dir>/alerts_state.json``  —
=============================  ===============  ========  ================================  ========

``default_rules`` adds :data:`~runwatch.alerts.rules.DEFAULT_RULES` (NaN/Inf
metric → critical; 10 errors in 60 s → error; no heartbeat for 120 s →
warning, ``condition: hung``) to the configured rules; a configured rule
with a default's name replaces it. With ``default_rules = false`` and no
``rules`` the stage only forwards.

Statistics (``/api/pipeline``): ``rules``, ``runs``, ``series``,
``firing``, ``pending``, ``alert_events_total``, ``evaluation_errors_total``,
``state_snapshots_total`` (handed to the writer), ``state_writes_total``,
``state_write_errors_total``, ``last_state_error``, ``transitions_total``,
``dropped_series_total``, ``evicted_runs_total``.

The engine is offered as the service :data:`ALERT_ENGINE`; its
``active_alerts(run_id=None, severity=None)`` lists what is pending or firing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
import orjson
from pydantic import AfterValidator, Field, field_validator
from pydantic_core import PydanticCustomError

from ..exceptions import ConfigError
from ..pipeline.component import ComponentContext, ServiceKey, Stage
from ..pipeline.component import Options as BaseOptions
from ..stages.liveness import RUN_OWNERSHIP
from ..store.schema import make_private_dirs
from .engine import AlertEngine
from .rules import DEFAULT_RULES, Rule, parse_rule

__all__ = ["ALERT_ENGINE", "AlertsStage", "effective_rules"]

logger = logging.getLogger("runwatch.alerts")

#: The engine, offered to the other components and the web app while the stage runs.
ALERT_ENGINE: ServiceKey[AlertEngine] = ServiceKey("alerts")
STATE_FILE_NAME = "alerts_state.json"


def _check_rule(value: dict[str, Any]) -> dict[str, Any]:
    try:
        parse_rule(value)
    except ConfigError as exc:
        # A custom error keeps pydantic's "Value error, " prefix out of the message.
        raise PydanticCustomError("invalid_rule", "{reason}", {"reason": str(exc)}) from None
    return value


def effective_rules(rules: Sequence[dict[str, Any]] | None, default_rules: bool = True) -> list[Rule]:
    """The rules a stage runs: the defaults (if wanted) plus the configured ones.

    A configured rule named like a default replaces that default.

    Raises:
        ConfigError: naming ``rules[i].field``.
    """
    configured = [_parse_rule_at(index, item) for index, item in enumerate(rules or ())]
    names = {rule.name for rule in configured}
    defaults = [rule for rule in DEFAULT_RULES if rule.name not in names] if default_rules else []
    return defaults + configured


def _parse_rule_at(index: int, item: Any) -> Rule:
    """:func:`parse_rule` with errors naming ``rules[index].field``."""
    try:
        return parse_rule(item)
    except ConfigError as exc:
        path = f"rules[{index}].{exc.path}" if exc.path else f"rules[{index}]"
        raise ConfigError(path, exc.reason) from None


class AlertsStage(Stage):
    """Evaluates alert rules; forwards every batch plus the alert events it caused.

    Options:
        rules: rule tables (see :func:`runwatch.alerts.rules.parse_rules`);
            ``None`` runs only the defaults.
        default_rules: include :data:`~runwatch.alerts.rules.DEFAULT_RULES`.
        evaluate_interval_seconds: how often time-driven rules (absence,
            ``for`` timers, decaying rates) are evaluated and the state saved.
        state_path: the JSON file the state is saved to (atomically) and
            restored from; ``None`` is ``<data_dir>/alerts_state.json``.
    """

    takes_receipts = True  # internal ingest receipts: forwarded with their batch (the engine skips them)

    class Options(BaseOptions):
        rules: list[Annotated[dict[str, Any], AfterValidator(_check_rule)]] | None = None
        default_rules: bool = True
        evaluate_interval_seconds: float = Field(1.0, gt=0, le=3600)
        state_path: str | None = None

        @field_validator("rules")
        @classmethod
        def _unique_names(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
            seen: dict[Any, int] = {}
            for index, item in enumerate(value or ()):
                name = item.get("name")
                if name in seen:
                    reason = f"rules[{index}].name: duplicate rule name {name!r} (also rules[{seen[name]}])"
                    raise PydanticCustomError("duplicate_rule", "{reason}", {"reason": reason})
                seen[name] = index
            return value

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.tick_interval_seconds = options.evaluate_interval_seconds
        self.rules = effective_rules(options.rules, options.default_rules)
        self.engine = AlertEngine(self.rules)
        self.state_path = Path(options.state_path) if options.state_path else Path(context.data_dir) / STATE_FILE_NAME
        self._writer = _StateWriter(self.state_path)
        self._saved: bytes | None = None
        self.alert_events = 0
        self.evaluation_errors = 0
        self.state_snapshots = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        snapshot = await anyio.to_thread.run_sync(_read_state, self.state_path)
        if snapshot is not None:
            try:
                self.engine = AlertEngine.restore(self.rules, snapshot)
            except ValueError as exc:
                await anyio.to_thread.run_sync(_set_aside, self.state_path, str(exc))
        self._writer.start()
        self.context.services.provide(ALERT_ENGINE, self.engine)

    async def aclose(self) -> None:
        try:
            self._save()
            await anyio.to_thread.run_sync(self._writer.close)  # waits for the last write, off the loop
        finally:
            self.context.services.withdraw(ALERT_ENGINE, self.engine)

    # -- events ----------------------------------------------------------------------------------

    async def write(self, batch: list[Any]) -> None:
        await self.output.send(batch)
        try:
            alerts = self.engine.observe(batch, time.time())
        except Exception:
            # The batch went on; only its alerts are lost. Counted, logged (1, 2, 4... times).
            self.evaluation_errors += 1
            if self.evaluation_errors & (self.evaluation_errors - 1) == 0:
                logger.exception("runwatch: %s failed to evaluate a batch (%d so far)", self.id, self.evaluation_errors)
            return
        if alerts:
            self.alert_events += len(alerts)
            await self.output.send(alerts)

    async def tick(self, now: float) -> None:
        alerts = self.engine.tick(now)
        ownership = self.context.services.get(RUN_OWNERSHIP)
        if alerts and ownership is not None:  # a scale-out worker: another judges the runs it does not own
            alerts = [alert for alert in alerts if ownership.owns(alert.run_id)]
        if alerts:
            self.alert_events += len(alerts)
            await self.output.send(alerts)
        self._save()

    def _save(self) -> None:
        """Hand the engine's state to the writer thread if it changed (never waits)."""
        data = orjson.dumps(self.engine.snapshot())  # no NaN in it: the snapshot encodes those as strings
        if data == self._saved:
            return
        self._saved = data
        self.state_snapshots += 1
        self._writer.submit(data)

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = dict(self.engine.statistics())
        stats.update(
            alert_events_total=self.alert_events,
            evaluation_errors_total=self.evaluation_errors,
            state_snapshots_total=self.state_snapshots,
            state_writes_total=self._writer.writes,
            state_write_errors_total=self._writer.errors,
            last_state_error=self._writer.last_error,
        )
        return stats


class _StateWriter:
    """Writes the latest submitted state on one dedicated thread (the aiosqlite pattern).

    ``submit`` never waits: a snapshot not yet written is replaced by a newer
    one. A failed write is counted, logged (1, 2, 4... times) and retried with
    the next snapshot.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writes = 0
        self.errors = 0
        self.last_error: str | None = None
        self._pending: bytes | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="runwatch-alerts-state", daemon=True)
        self._thread.start()

    def submit(self, data: bytes) -> None:
        with self._changed:
            self._pending = data
            self._changed.notify()

    def close(self) -> None:
        """Write what is pending, then stop the thread (blocks: call it off the loop)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
        elif self._pending is not None:  # never started: write here
            self._write(self._pending)

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closed:
                    self._changed.wait()
                data, self._pending = self._pending, None
            if data is None:
                return  # closed, nothing left
            self._write(data)

    def _write(self, data: bytes) -> None:
        try:
            _write_atomically(self.path, data)
        except OSError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.errors & (self.errors - 1) == 0:
                logger.error(
                    "runwatch: cannot save the alert state to %s (%d failure(s)): %s", self.path, self.errors, exc
                )
        else:
            self.writes += 1


# -- state file (run off the loop) --------------------------------------------------------------


def _read_state(path: Path) -> Any:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # monitoring must start even if its alert state cannot be read
        logger.error("runwatch: cannot read the alert state %s (%s); starting without it", path, exc)
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        _set_aside(path, f"not JSON: {exc}")
        return None


def _set_aside(path: Path, reason: str) -> None:
    """Keep an unreadable state file for inspection and start without it."""
    corrupt = path.with_name(path.name + ".corrupt")
    logger.error("runwatch: alert state %s is unusable (%s); moved to %s, starting afresh", path, reason, corrupt)
    os.replace(path, corrupt)


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, never half of one.

    The file is private (0600 from its creation: alert state names runs,
    metrics and values) and a directory created for it is 0700 (an existing
    one keeps its mode).
    """
    make_private_dirs(path.parent)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "wb") as file:
        os.fchmod(descriptor, 0o600)  # a leftover temporary file keeps its old mode otherwise
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
