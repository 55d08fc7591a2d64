"""RunRecorder: what every framework integration shares.

A framework calls its logger or callback from inside the training loop, so
every recording method here catches runwatch's own trouble (a closed monitor,
a value the store refuses, a bug of ours), counts it, logs it and reports it
to the monitor's :class:`~runwatch.ErrorHandler`, and returns. Only mistakes
made when the integration is built (a wrong argument type) raise.

The rules, the same for every framework:

- **Which monitor.** A :class:`~runwatch.WebMonitor` passed in is used and
  left open; a :class:`~runwatch.MonitorConfig` (or nothing:
  :meth:`MonitorConfig.load`) makes the recorder create its own monitor when
  it first records, and close it in :meth:`RunRecorder.close`.
- **Which run.** The first record starts a run with the framework's
  configuration merged with the ``config`` given to the integration. If the
  monitor already has an active run (started by you, or by another
  integration such as the Stable-Baselines3 callback beside the Gymnasium
  wrapper), the recorder records into it and leaves its end to whoever
  started it.
- **The outcome.** :meth:`RunRecorder.finish` maps the framework's outcome
  onto the run: completed → ``completed``; failed → ``failed`` with the
  error as reason; interrupted (Ctrl-C) → ``failed`` with reason
  ``interrupted: ...`` (the store has no separate status for it). Only the
  first outcome counts.
- **After the end.** Metrics and events that arrive after the run ended,
  with no new start (``trainer.evaluate()`` after ``train()``), are
  recorded into the ended run without reopening it. A new start by the
  framework (Lightning's ``test()`` after ``fit()``, a second ``train()``,
  ``fit()`` or ``learn()``) resumes the run the recorder owns.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Mapping
from enum import Enum, StrEnum
from types import TracebackType
from typing import Any, Self, cast

from ..config import MonitorConfig
from ..errors import ErrorCategory, ErrorSeverity
from ..events import INT64_MAX, INT64_MIN, MAX_JSON_DEPTH, LogEvent, Metric
from ..monitor import WebMonitor

__all__ = ["Outcome", "RunRecorder", "json_safe", "outcome_of", "scalar_metrics"]

logger = logging.getLogger("runwatch.integrations")

#: Longest string a configuration value that is not JSON is turned into.
MAX_CONFIG_TEXT = 1000


class Outcome(StrEnum):
    """How a framework's training ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


def _describe(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # an exception whose __str__ raises still has a type
        text = ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def outcome_of(error: BaseException | None) -> tuple[Outcome, str | None]:
    """The outcome of training that ended with ``error`` (``None``: it returned).

    ``KeyboardInterrupt`` is an interruption; ``SystemExit`` with code 0 or
    ``None`` a completion; anything else a failure whose reason is
    ``"Type: message"``.
    """
    if error is None or (isinstance(error, SystemExit) and error.code in (None, 0)):
        return Outcome.COMPLETED, None
    if isinstance(error, KeyboardInterrupt):
        return Outcome.INTERRUPTED, _describe(error)
    return Outcome.FAILED, _describe(error)


def scalar_metrics(values: Mapping[str, Any]) -> tuple[dict[str, float], int]:
    """The numeric values of a framework's log dict, and how many others were left out.

    Numbers, booleans, numpy scalars and one-element tensors are kept;
    nested mappings flatten to ``group/name``; strings, ``None``, arrays and
    anything else that is not one number are left out (counted).
    """
    out: dict[str, float] = {}
    skipped = _collect_scalars(out, values, "", 0)
    return out, skipped


def _collect_scalars(out: dict[str, float], values: Mapping[str, Any], prefix: str, depth: int) -> int:
    skipped = 0
    for name, value in values.items():
        if type(name) is not str or not name:
            skipped += 1
            continue
        kind = type(value)
        if kind is float or (kind is int and INT64_MIN <= value <= INT64_MAX):
            out[prefix + name] = value
        elif isinstance(value, Mapping) and depth < MAX_JSON_DEPTH:
            skipped += _collect_scalars(out, value, f"{prefix}{name}/", depth + 1)
        elif value is None or isinstance(value, (str, bytes, Mapping)):
            skipped += 1
        else:
            try:
                out[prefix + name] = float(value)  # bool, numpy scalars, 0-d and one-element tensors
            except Exception:  # arrays, images, objects: not one number
                skipped += 1
    return skipped


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON the run config accepts; what JSON cannot hold becomes its text.

    Enums become their value, paths strings, numpy scalars numbers, tuples
    and sets lists, mapping keys strings; other objects (classes, schedules,
    callables) their ``str()``, cut at :data:`MAX_CONFIG_TEXT` characters.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value) if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, float):
        return float(value)
    if depth >= MAX_JSON_DEPTH:
        return _text(value)
    if isinstance(value, Enum):
        return json_safe(value.value, depth + 1)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item, depth + 1) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((json_safe(item, depth + 1) for item in value), key=repr)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy scalar, 0-d array
        try:
            return json_safe(value.item(), depth + 1)
        except Exception:
            pass
    return _text(value)


def _text(value: Any) -> str:
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_CONFIG_TEXT else text[: MAX_CONFIG_TEXT - 1] + "…"


def _check_monitor(monitor: object) -> None:
    if monitor is not None and not isinstance(monitor, (WebMonitor, MonitorConfig)):
        raise TypeError(f"monitor must be a WebMonitor, a MonitorConfig or None, got {type(monitor).__name__}")


class RunRecorder:
    """Records one framework's training into a run of a :class:`~runwatch.WebMonitor`.

    Integrations build on it; it is usable on its own for a framework runwatch
    has no module for. Every method except the constructor never raises
    (``KeyboardInterrupt`` and other ``BaseException`` pass through): trouble
    is counted in :meth:`statistics`, logged on the ``runwatch.integrations``
    logger and handed to the monitor's ``error_handler`` (its first
    occurrence per method and exception type).

    Args:
        monitor: the monitor to record into (left open), or a
            :class:`~runwatch.MonitorConfig` for a monitor the recorder creates
            on first use and closes in :meth:`close`; ``None`` creates one from
            :meth:`MonitorConfig.load`.
        component: the integration's name, used in logs and error events
            (e.g. ``"lightning"``).
        run_id: the id of the run to start (an existing run's id resumes it);
            ``None`` generates one.
        config: extra run configuration, merged over what the framework
            reports (JSON-compatible; other values are stored as text).

    Raises:
        TypeError: ``monitor`` is of another type, or ``config`` is not a mapping.
        ValueError: ``run_id`` or ``component`` is empty.
    """

    def __init__(
        self,
        monitor: WebMonitor | MonitorConfig | None = None,
        *,
        component: str,
        run_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        _check_monitor(monitor)
        if not isinstance(component, str) or not component:
            raise ValueError(f"component must be a non-empty string, got {component!r}")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be a non-empty string or None, got {run_id!r}")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
        self.component = component
        self._monitor = monitor if isinstance(monitor, WebMonitor) else None
        self._monitor_config = monitor if isinstance(monitor, MonitorConfig) else None
        self._owns_monitor = self._monitor is None
        self._monitor_failed = False
        self._requested_run_id = run_id
        self._user_config: dict[str, Any] = json_safe(dict(config)) if config else {}
        self._framework_config: dict[str, Any] = {}
        self._run_id: str | None = None
        self._owns_run = False
        self._ended = False
        self._outcome: Outcome | None = None
        self._in_training = False
        self._errors: Counter[str] = Counter()
        self._reported: set[tuple[str, str]] = set()
        self._skipped_values = 0
        self._next_keep_alive = 0.0

    # -- what is being recorded -------------------------------------------------------

    @property
    def monitor(self) -> WebMonitor | None:
        """The monitor recorded into (``None`` until an owned one is created)."""
        return self._monitor

    @property
    def run_id(self) -> str | None:
        """The run recorded into (active or ended), or ``None`` before the first record."""
        return self._run_id

    @property
    def owns_run(self) -> bool:
        """Whether this recorder started the run (and so ends it)."""
        return self._owns_run

    @property
    def outcome(self) -> Outcome | None:
        """The outcome :meth:`finish` recorded, or ``None``."""
        return self._outcome

    @property
    def recording(self) -> bool:
        """Whether the run is active on the monitor (records go through its ``update_*`` calls)."""
        monitor = self._monitor
        return monitor is not None and self._run_id is not None and monitor.current_run_id == self._run_id

    def statistics(self) -> dict[str, Any]:
        """What the recorder did: run, outcome, trouble per method, values left out."""
        return {
            "component": self.component,
            "run_id": self._run_id,
            "owns_run": self._owns_run,
            "outcome": None if self._outcome is None else self._outcome.value,
            "errors": sum(self._errors.values()),
            "errors_by_method": dict(self._errors),
            "skipped_values": self._skipped_values,
        }

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, config: Mapping[str, Any] | None = None) -> str | None:
        """Begin (or resume) recording; ``config`` is what the framework reports.

        With no run yet: records into the monitor's active run, or starts one
        with ``config`` merged under the integration's own ``config``. After
        the recorder's own run ended: resumes it. While recording: ``config``
        is recorded as a ``hyperparameters`` event (a run's config is set when
        it starts).

        Returns:
            The run id, or ``None`` when runwatch's trouble prevented it.
        """
        try:
            if config:
                self._framework_config.update(json_safe(dict(config)))
            return self._start(bool(config))
        except Exception as error:
            self.report_trouble("start", error)
            return None

    def begin(self, config: Mapping[str, Any] | None = None) -> str | None:
        """A framework's training begins: :meth:`start`, for frameworks with no failure hook.

        If the previous training this recorder began never reached
        :meth:`finish`, it raised (the framework has no hook to say so): that
        run is marked failed first, then resumed.
        """
        if self._in_training:
            self.finish(Outcome.FAILED, "training ended without finishing (an exception or interruption)")
        self._in_training = True
        return self.start(config)

    def _start(self, config_changed: bool) -> str | None:
        monitor = self._ensure_monitor()
        if monitor is None:
            return None
        if self.recording:
            if config_changed:
                self._event("hyperparameters", self._merged_config(), "info")
            return self._run_id
        active = monitor.current_run_id
        if active is not None:
            if active != self._run_id:
                self._run_id, self._owns_run = active, False
                if self._merged_config():
                    self._event("hyperparameters", self._merged_config(), "info")
            self._ended, self._outcome = False, None
            return active
        # The recorder's own ended run resumes; a run someone else ended is theirs: start our own.
        run_id = self._run_id if self._owns_run else self._requested_run_id
        self._run_id = monitor.start_training(config=self._merged_config(), run_id=run_id)
        self._owns_run, self._ended, self._outcome = True, False, None
        return self._run_id

    def _merged_config(self) -> dict[str, Any]:
        return {**self._framework_config, **self._user_config}

    def finish(self, outcome: Outcome | str, reason: str | None = None) -> None:
        """Record how training ended; only the first outcome of a run counts.

        An owned run ends: ``completed``, or ``failed`` with ``reason`` (an
        interruption's reason is prefixed ``interrupted:``). A run the recorder
        adopted stays active and gets a ``training_end`` event with the
        outcome. Either way the monitor is flushed, so the end is committed
        when this returns.
        """
        self._in_training = False
        try:
            outcome = Outcome(outcome)
            if self._run_id is None and outcome is not Outcome.COMPLETED:
                self._start(False)  # a failure before anything was recorded is still a run that failed
            monitor = self._monitor
            if monitor is None or self._run_id is None or self._ended:
                return
            self._ended, self._outcome = True, outcome
            if not self.recording:
                return  # ended by someone else already: its status stands
            if not self._owns_run:
                level = "info" if outcome is Outcome.COMPLETED else "error"
                data = {"component": self.component, "outcome": outcome.value, "reason": reason}
                monitor.record_event("training_end", data, level=level)
            elif outcome is Outcome.COMPLETED:
                monitor.stop_training()
            elif outcome is Outcome.INTERRUPTED:
                monitor.fail_training(f"interrupted: {reason}" if reason else "interrupted")
            else:
                monitor.fail_training(reason or "failed")
            monitor.flush()
        except Exception as error:
            self.report_trouble("finish", error)

    def close(self, error: BaseException | None = None, *, report_adopted: bool = True) -> None:
        """Finish a still unfinished run with the outcome of ``error`` and close an owned monitor.

        Args:
            error: what ended training (``None``: it returned).
            report_adopted: whether a run the recorder adopted gets its
                ``training_end`` event (a wrapper that only watched episodes
                of someone else's training passes ``False``).
        """
        if self._run_id is not None and not self._ended:
            if self._owns_run or report_adopted:
                self.finish(*outcome_of(error))
            else:
                self._ended, self._in_training = True, False
        monitor = self._monitor
        if monitor is not None and self._owns_monitor:
            try:
                monitor.close()
            except Exception as failure:
                self.report_trouble("close", failure)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(exc)

    # -- recording ---------------------------------------------------------------------

    def log_metrics(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Record a framework's numeric values at ``step`` (see :func:`scalar_metrics`).

        Starts the run if nothing was recorded yet; after the run ended, the
        values go into the ended run.
        """
        try:
            clean, skipped = scalar_metrics(values)
            self._skipped_values += skipped
            if not clean:
                return
            run_id = self._run_id if self._run_id is not None else self._start(False)
            monitor = self._monitor
            if run_id is None or monitor is None:
                return
            if step is not None:
                step = int(step)
            if monitor.current_run_id == run_id:
                monitor.update_metrics(cast("dict[str, float | dict[str, float]]", clean), step=step)
            else:  # the run ended: record into it without reopening it
                monitor.emit_event(Metric(run_id, time.time(), clean, step))
        except Exception as error:
            self.report_trouble("log_metrics", error)

    def log_event(self, event_type: str, data: Mapping[str, Any], level: str = "info") -> None:
        """Record an event (``checkpoint_saved``...) with JSON-safe ``data``; starts the run if needed."""
        try:
            if self._run_id is None:
                self._start(False)
            self._event(event_type, json_safe(dict(data)), level)
        except Exception as error:
            self.report_trouble("log_event", error)

    def _event(self, event_type: str, data: dict[str, Any], level: str) -> None:
        monitor, run_id = self._monitor, self._run_id
        if monitor is None or run_id is None:
            return
        if monitor.current_run_id == run_id:
            monitor.record_event(event_type, data, level=level)
        else:
            monitor.emit_event(LogEvent(run_id, time.time(), event_type, level, data))

    def keep_alive(self) -> None:
        """Send a heartbeat if one is due (cheap; for hooks that run every step)."""
        now = time.monotonic()
        if now < self._next_keep_alive:
            return
        try:
            monitor = self._monitor
            if monitor is None or not self.recording:
                return
            self._next_keep_alive = now + monitor.config.update_interval
            monitor.heartbeat()
        except Exception as error:
            self.report_trouble("keep_alive", error)

    def log_image(self, name: str, image: Any, step: int | None = None) -> bool:
        """Hand an image to the monitor's ``log_image``, if it has one.

        Returns:
            Whether the monitor takes images (``False``: nothing was done, and
            callers can skip rendering).
        """
        monitor = self._monitor
        log_image = getattr(monitor, "log_image", None)
        if log_image is None:
            return False
        try:
            if self.recording:
                log_image(name, image, step=step)
        except Exception as error:
            self.report_trouble("log_image", error)
        return True

    # -- plumbing ------------------------------------------------------------------------

    def ensure_monitor(self) -> WebMonitor | None:
        """The monitor, created now if the recorder owns it; ``None`` if it could not be."""
        try:
            return self._ensure_monitor()
        except Exception as error:
            self.report_trouble("ensure_monitor", error)
            return None

    def _ensure_monitor(self) -> WebMonitor | None:
        if self._monitor is None and not self._monitor_failed:
            try:
                self._monitor = WebMonitor(self._monitor_config)
            except Exception:
                self._monitor_failed = True  # do not retry on every step
                raise
        return self._monitor

    def report_trouble(self, method: str, error: Exception) -> None:
        """Count, log and report runwatch's own trouble met in ``method``; never raises.

        The first failure per method and exception type goes to the monitor's
        ``error_handler`` (a warning, counted in ``monitor.statistics()``, an
        ``error`` event of the run when one is active); later ones are
        counted here and logged at debug level, so a broken store cannot
        flood the training's log.
        """
        try:
            self._errors[method] += 1
            key = (method, type(error).__name__)
            if key in self._reported:
                logger.debug("runwatch %s: %s failed again: %s", self.component, method, _describe(error))
                return
            self._reported.add(key)
            message = f"runwatch's {self.component} integration: {method} failed: {_describe(error)}"
            monitor = self._monitor
            if monitor is not None:
                monitor.error_handler.handle_error(
                    error,
                    message=message,
                    category=ErrorCategory.SYSTEM,
                    severity=ErrorSeverity.WARNING,
                    component=f"integrations.{self.component}",
                )
            else:
                logger.warning("%s", message)
        except Exception:  # the last line of defence for the training loop
            pass


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (for scores in event payloads)."""
    try:
        number = float(value)
    except Exception:
        return None
    return number if math.isfinite(number) else None
