"""WebMonitor: the training-loop facade over the pipeline and the store.

Every ``update_*`` call validates its arguments, builds one immutable event
and hands it to the pipeline thread without waiting on I/O (see
:mod:`runwatch.pipeline.bridge`). Queries first flush, so a monitor always
reads what it wrote. Errors of runwatch's own (a full queue, a failing disk)
never raise here: they are counted in :meth:`WebMonitor.statistics`.

In remote mode (``MonitorConfig.server_url``) the same calls record into a
``runwatch serve`` on any machine: events go through the ``remote`` sink's
on-disk spool to the server's ingest, queries go to its REST API
(:class:`~runwatch.remote.reader.RestReader`), and the dashboard is the
server's.
"""

from __future__ import annotations

import atexit
import logging
import operator
import os
import shlex
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._payload import check_text, escape_surrogates
from .config import MonitorConfig
from .errors import ErrorHandler
from .events import (
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    check_storable,
    to_epoch_seconds,
)
from .exceptions import StoreError, UnknownRunError

if TYPE_CHECKING:
    import pandas as pd

    from .assemble import Assembly, WebInterface
    from .media.images import TakenImage
    from .media.worker import MediaWorker
    from .pipeline.thread import PipelineThread
    from .remote.reader import RestReader
    from .store.manager import DatabaseManager

__all__ = ["WebMonitor"]

logger = logging.getLogger("runwatch")
_time = time.time


def _describe(error: BaseException) -> str:
    """``str(error)``, even for an exception whose ``__str__`` raises."""
    try:
        return str(error)
    except Exception:
        return f"<unprintable {type(error).__name__}>"


def _number(name: str, value: Any) -> float:
    if isinstance(value, (str, bytes)) or value is None or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from None


def _integer(name: str, value: Any) -> int:
    """An integer argument: ``int`` or a numpy integer (never ``bool``)."""
    if type(value) is int:
        return value
    if isinstance(value, bool) or type(value).__name__ in ("bool", "bool_"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _last_step(summary: Mapping[str, Any]) -> int:
    """The global step a resumed run continues from: the highest last step of its metrics (-1: none)."""
    steps = [stats.get("last_step") for stats in summary.get("metrics", {}).values()]
    return max((step for step in steps if isinstance(step, int)), default=-1)


def _check_media_name(name: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    check_storable("name", name)


def _media_statistics(worker: MediaWorker | None) -> dict[str, Any]:
    if worker is None:
        return {
            "queued_jobs": 0,
            "queued_bytes": 0,
            "images_encoded": 0,
            "histograms_binned": 0,
            "dropped": {},
            "cpu_seconds": 0.0,
        }
    return worker.statistics()._asdict()


def closing_hint(db_path: str, run_ids: list[str]) -> str:
    """One line telling how to see a script's runs again after it ended (the store path quoted for the shell).

    Example: ``runwatch: run 'r1' is stored in runs.db; to see it again: runwatch serve --db runs.db``.
    """
    store = shlex.quote(db_path)
    if len(run_ids) == 1:
        what, them = f"run {run_ids[0]!r} is", "it"
    else:
        what, them = f"{len(run_ids)} runs are", "them"
    return f"runwatch: {what} stored in {db_path}; to see {them} again: runwatch serve --db {store}"


def new_run_id() -> str:
    """A sortable, unique run id: ``run-YYYYMMDD-HHMMSS-xxxxxx``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{uuid.uuid4().hex[:6]}"


class WebMonitor:
    """Monitor training runs: record metrics, state and events; query them back.

    Args:
        config: settings; ``None`` uses :meth:`MonitorConfig.load` (defaults
            overridden by ``MONITOR_*`` environment variables).

    The pipeline starts in a background thread at construction and stops at
    :meth:`close` (also on ``with`` exit and at interpreter exit).

    With ``config.server_url`` the monitor is in remote mode (see the module
    docs and :class:`MonitorConfig`): the same API, recorded into that server.
    """

    def __init__(self, config: MonitorConfig | None = None) -> None:
        if config is not None and not isinstance(config, MonitorConfig):
            raise TypeError(f"config must be a MonitorConfig, got {type(config).__name__}")
        self.config = config if config is not None else MonitorConfig.load()
        # debug raises runwatch's own logger for this monitor's life; close() puts it back.
        self._restore_log_level: int | None = None
        if self.config.debug:
            runwatch_logger = logging.getLogger("runwatch")
            self._restore_log_level = runwatch_logger.level
            runwatch_logger.setLevel(logging.DEBUG)
        self._lock = threading.RLock()
        self._run_id: str | None = None
        self._last_run_id: str | None = None
        self._status = "idle"
        self._total_steps = 0
        self._total_episodes = 0
        self._step = -1  # the active run's global step: that of its latest logging call
        self._step_open = False  # the latest call was update_step: the next update_metrics joins its step
        self._uncommitted_lifecycle_calls = 0
        self._next_heartbeat = 0.0
        self._closed = False
        self._pid = os.getpid()  # the process whose pipeline thread this monitor drives
        self._forked_dropped = 0
        self._remote = self.config.server_url is not None
        self._runs_seen: list[str] = []  # runs this monitor started or resumed (for the closing hint)
        self._db: DatabaseManager | RestReader | None = None
        self._media: MediaWorker | None = None  # started by the first image or histogram
        # Through lambdas: a forked child swaps ``_emit`` (see _after_fork_in_child).
        self.error_handler = ErrorHandler(lambda event: self._emit(event), lambda: self._run_id)
        self._assembly = self._start_pipeline()
        self._thread = self._assembly.thread
        self._emit = self._assembly.pipeline.bridge.emit
        # Runs that samplers (e.g. the ``system`` source) attribute their metrics to.
        self._active_runs: set[str] = self._assembly.active_runs
        self._reap_crashed_runs()
        _install_exit_hooks()
        _open_monitors.add(self)

    def _start_pipeline(self) -> Assembly:
        """The monitor's pipeline and web interface, from the composition root, started."""
        # Imported here: ``import runwatch`` stays cheap (the pipeline and the web load on first use).
        from .assemble import assemble_monitor

        assembly = assemble_monitor(self.config)
        assembly.start()
        return assembly

    @property
    def web_url(self) -> str | None:
        """The web interface's base URL (``None`` when it could not listen); in remote mode the server's."""
        if self.config.server_url is not None:
            from .remote.transport import display_url

            return display_url(self.config.server_url)
        server = self._web_server
        return server.url if server is not None else None

    @property
    def web_token(self) -> str | None:
        """The bearer token this monitor's own web interface requires, if any (``None`` in remote mode)."""
        server = self._web_server
        return server.token if server is not None else None

    @property
    def _web_server(self) -> WebInterface | None:
        return self._assembly.web_server

    def _reap_crashed_runs(self) -> None:
        # A run left "running" by a process that died is marked crashed here (remote: by the server).
        if self._remote:
            return
        try:
            crashed = self.db.mark_crashed_runs()
        except Exception:  # the store may be shared and busy; detection retries next start
            logger.exception("runwatch: checking for crashed runs failed")
            return
        if crashed:
            logger.warning("runwatch: marked %d run(s) whose process is gone as crashed: %s", len(crashed), crashed)

    # -- run lifecycle ---------------------------------------------------------------

    @property
    def current_run_id(self) -> str | None:
        """The id of the active (running or paused) run, or ``None``."""
        return self._run_id

    @property
    def training_state(self) -> str:
        """``idle``, ``running``, ``paused``, ``completed`` or ``failed``."""
        return self._status

    def start_training(self, config: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Start monitoring a training run.

        Returns once the run exists in the store (a commit point: any reader
        finds it right away). The wait is bounded by
        ``MonitorConfig.commit_timeout_seconds``; past it (the store is
        down, say) the run's start stays queued, the call returns anyway,
        and the miss is logged and counted as ``uncommitted_lifecycle_calls``
        in :meth:`statistics`.

        Args:
            config: the training configuration (JSON-compatible).
            run_id: an existing run's id resumes that run (its step and
                episode counts and its global step continue); a new id
                starts a run with it; ``None`` generates one.

        Returns:
            The run id.

        Raises:
            ValueError: a run is already active, or ``run_id`` is empty.
            TypeError: ``config`` is not a mapping of JSON values.
        """
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        with self._lock:
            self._check_open()
            if self._run_id is not None:
                raise ValueError(f"run {self._run_id!r} is still active; call stop_training() first")
            now = _time()
            existing = self._existing_run(run_id) if run_id is not None else None
            run_id = run_id or new_run_id()
            if existing is not None:
                self._total_steps = int(existing.get("total_steps") or 0)
                self._total_episodes = int(existing.get("total_episodes") or 0)
                self._step = _last_step(existing)
                self._step_open = False
                event = RunLifecycle(run_id, now, RunTransition.RESUMED, config=config)
            else:
                self._total_steps = self._total_episodes = 0
                self._step = -1
                self._step_open = False
                event = RunLifecycle(run_id, now, RunTransition.STARTED, run_kind="training", config=config or {})
            self._emit(event)
            self._run_id = self._last_run_id = run_id
            if run_id not in self._runs_seen:
                self._runs_seen.append(run_id)
            self._status = "running"
            self._active_runs.add(run_id)
            self._send_heartbeat(now)
        self._commit_point(f"the start of run {run_id!r}")
        return run_id

    def _existing_run(self, run_id: str) -> dict[str, Any] | None:
        self.flush()
        try:
            return self.db.get_run_summary(run_id)
        except UnknownRunError:
            return None
        except StoreError as exc:
            if not self._remote:
                raise
            # The server is away: resume without its counters rather than fail the training loop.
            logger.warning(
                "runwatch: cannot ask the server about run %r (%s); resuming it with steps counted from 0",
                run_id,
                exc,
            )
            return {}

    def stop_training(self, final_reward: float | None = None) -> None:
        """Stop the current training run (status ``completed``).

        Returns once the run's end (and everything recorded before it) is
        committed, so any reader sees the run ``completed`` right away; the
        wait is bounded by ``MonitorConfig.commit_timeout_seconds`` (see
        :meth:`start_training`).

        Args:
            final_reward: the final reward of the run.

        Raises:
            ValueError: no run is active.
        """
        reward = None if final_reward is None else _number("final_reward", final_reward)
        run_id = self._end_run(RunTransition.COMPLETED, final_reward=reward)
        self._commit_point(f"the end of run {run_id!r}")

    def fail_training(self, reason: str | None = None) -> None:
        """End the current run with status ``failed`` (a commit point, like :meth:`stop_training`).

        Raises:
            ValueError: no run is active.
        """
        run_id = self._end_run(RunTransition.FAILED, metadata={"reason": reason} if reason else None)
        self._commit_point(f"the end of run {run_id!r}")

    def _end_run(
        self, transition: RunTransition, final_reward: float | None = None, metadata: dict[str, Any] | None = None
    ) -> str:
        if self._pid == os.getpid():  # the run's images and histograms go before its end
            self._wait_for_media(self.config.commit_timeout_seconds)
        with self._lock:
            run_id = self._require_run()
            now = _time()
            self._send_heartbeat(now)
            self._emit(RunLifecycle(run_id, now, transition, final_reward=final_reward, metadata=metadata))
            self._active_runs.discard(run_id)
            self._run_id = None
            self._status = "completed" if transition is RunTransition.COMPLETED else "failed"
            return run_id

    def _commit_point(self, what: str) -> None:
        """Wait, bounded, until everything recorded so far is committed.

        Run lifecycle calls happen once per run, so each is a commit point:
        a reader (another process, the CLI, ``db``) sees the change as soon
        as the call returns. runwatch's own trouble never raises here: past
        ``commit_timeout_seconds`` (a store that is down, say) the change
        stays queued, the call returns, and it is logged and counted as
        ``uncommitted_lifecycle_calls`` in :meth:`statistics`.
        """
        if self._pid != os.getpid():  # a forked child's calls are dropped (see _after_fork_in_child)
            return
        timeout = self.config.commit_timeout_seconds
        if self._thread.flush(timeout):
            return
        self._uncommitted_lifecycle_calls += 1
        logger.warning(
            "runwatch: %s was not committed within %.1f s (is the store unavailable? see statistics());"
            " it stays queued and training goes on",
            what,
            timeout,
        )

    def pause_training(self) -> None:
        """Pause the current training run (status ``paused``); a commit point like :meth:`stop_training`.

        Raises:
            ValueError: no run is active, or it is already paused.
        """
        with self._lock:
            run_id = self._require_run()
            if self._status == "paused":
                raise ValueError(f"run {run_id!r} is already paused")
            self._emit(RunLifecycle(run_id, _time(), RunTransition.PAUSED))
            self._status = "paused"
        self._commit_point(f"the pause of run {run_id!r}")

    def resume_training(self) -> None:
        """Resume a paused training run; a commit point like :meth:`stop_training`.

        Raises:
            ValueError: no run is active, or it is not paused.
        """
        with self._lock:
            run_id = self._require_run()
            if self._status != "paused":
                raise ValueError(f"run {run_id!r} is not paused")
            self._emit(RunLifecycle(run_id, _time(), RunTransition.RESUMED))
            self._status = "running"
        self._commit_point(f"the resumption of run {run_id!r}")

    def _require_run(self) -> str:
        run_id = self._run_id
        if run_id is None:
            self._check_open()
            raise ValueError("no active run: call start_training() first")
        return run_id

    # -- recording (the hot path) ------------------------------------------------------

    @property
    def step(self) -> int | None:
        """The active run's global step: that of its latest logging call (``None`` before any).

        Pass it as ``update_metrics(..., step=monitor.step)`` to put more
        values on the row of the call before.
        """
        return None if self._run_id is None or self._step < 0 else self._step

    def update_metrics(
        self,
        metrics: dict[str, float | dict[str, float]],
        timestamp: datetime | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """Record training metrics.

        Every logging call of a run has a global step: ``step`` when given
        (later calls continue from it), else the run's previous step plus one
        (the first call is step 0; a resumed run continues where it stopped),
        except that a call right after :meth:`update_step` joins that step
        (a loop logs a step's reward, then its loss). :meth:`get_run_metrics`
        merges the calls of one step into one row, so values logged with the
        same step line up.

        Args:
            metrics: metric name → number; nested dicts flatten to ``group/name``.
                NaN and ±Inf are kept as they are.
            timestamp: when they were measured (default: now).
            step: the global step these values belong to (a 64-bit integer);
                ``None`` for the next one.

        Raises:
            ValueError: no active run, an empty metric name, or a step beyond 64 bits.
            TypeError: a value that is not a number, or a step that is not an integer.
        """
        run_id = self._run_id
        if run_id is None:
            run_id = self._require_run()
        now = _time()
        joins = self._step_open
        event = Metric(
            run_id,
            now if timestamp is None else to_epoch_seconds(timestamp, "timestamp"),
            metrics,
            (self._step if joins else self._step + 1) if step is None else step,
        )
        self._step = event.step  # type: ignore[assignment]  # a step was passed, so the event has one
        if joins:
            self._step_open = False
        self._emit(event)
        if now >= self._next_heartbeat:
            self._send_heartbeat(now)

    def update_system_metrics(self, cpu_percent: float, memory_percent: float, disk_usage: float) -> None:
        """Record system resource metrics you measured yourself (a logging call at the next step).

        They are stored as ``system/reported/cpu_percent``,
        ``system/reported/memory_percent`` and ``system/reported/disk_usage``:
        apart from what the built-in sampler measures every
        ``update_interval`` (``system/cpu_percent``, ``system/memory_percent``,
        ``system/disk_usage``...), so the two never mix in one series.

        Args:
            cpu_percent: CPU usage percentage.
            memory_percent: memory usage percentage.
            disk_usage: disk usage percentage.
        """
        run_id = self._require_run()
        values = {
            "system/reported/cpu_percent": _number("cpu_percent", cpu_percent),
            "system/reported/memory_percent": _number("memory_percent", memory_percent),
            "system/reported/disk_usage": _number("disk_usage", disk_usage),
        }
        self._emit(self._metric_at_next_step(run_id, _time(), values))

    def _metric_at_next_step(
        self, run_id: str, now: float, values: dict[str, float], tags: dict[str, str] | None = None
    ) -> Metric:
        """A metric of the run's next global step, which becomes the current one."""
        event = Metric(run_id, now, values, self._step + 1, tags)
        self._step = event.step  # type: ignore[assignment]  # a step was passed, so the event has one
        self._step_open = False
        return event

    def update_game_state(self, state: dict[str, Any], frame_number: int | None = None, *, frame: Any = None) -> None:
        """Record game state; it is deep-merged into the run state's ``game_state``.

        Args:
            state: the game state (JSON-compatible).
            frame_number: the frame it belongs to.
            frame: the frame the agent saw (an image as :meth:`log_image`
                takes it), logged as the image ``frame`` at step
                ``frame_number`` (the run's current step without one).
        """
        run_id = self._require_run()
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        patch: dict[str, Any] = {"game_state": state}
        if frame_number is not None:
            patch["frame_number"] = _integer("frame_number", frame_number)
        now = _time()
        event = StatePatch(run_id, now, patch)
        if frame is not None:  # checked and copied before anything is recorded
            from .media.images import take_image  # numpy: imported by the first image, not by runwatch

            taken = take_image(frame, "frame")
            self._emit(event)
            self._submit_image(run_id, now, "frame", frame_number, None, taken)
        else:
            self._emit(event)
        if now >= self._next_heartbeat:
            self._send_heartbeat(now)

    # -- images and histograms ----------------------------------------------------------

    def log_image(self, name: str, image: Any, *, step: int | None = None, caption: str | None = None) -> None:
        """Record an image of the series ``name`` (a frame, a sample, a plot).

        The call checks the image and takes a copy (about 10 µs for a
        160×144 RGB frame), so the loop may reuse its buffer at once;
        encoding to PNG happens on runwatch's media thread. Each content is
        stored once (by its SHA-256). Images past
        ``MonitorConfig.max_images_per_second`` for this name, or past the
        run's ``max_image_bytes_per_run``, are dropped and counted in
        :meth:`statistics` (``media``), never raised.

        Args:
            name: the series, e.g. ``frame`` or ``samples/real``.
            image: a numpy array (or anything with ``__array__``) of shape
                H×W, H×W×1, H×W×3 or H×W×4 (channels last), of dtype uint8,
                bool or float in [0, 1] (clipped); a PIL image; or PNG or
                JPEG bytes (stored as given).
            step: the global step it belongs to; ``None``: the run's current
                step (that of its latest logging call; it does not advance).
            caption: text shown with the image.

        Raises:
            ValueError: no active run; an empty name; an image shape other
                than the above, an empty image, a side beyond 8192 pixels,
                or bytes that are no PNG or JPEG.
            TypeError: a name, step, caption or image of the wrong type.
        """
        run_id = self._run_id
        if run_id is None:
            run_id = self._require_run()
        _check_media_name(name)
        if caption is not None:
            if not isinstance(caption, str):
                raise TypeError(f"caption must be a string or None, got {type(caption).__name__}")
            check_storable("caption", caption)
        step = None if step is None else _integer("step", step)
        from .media.images import take_image  # numpy: imported by the first image, not by runwatch

        taken = take_image(image)
        self._submit_image(run_id, _time(), name, step, caption, taken)

    def _submit_image(
        self, run_id: str, now: float, name: str, step: int | None, caption: str | None, taken: TakenImage
    ) -> None:
        from .media.worker import ImageJob

        if self._pid != os.getpid():
            self._drop_in_forked_child(None)
            return
        worker = self._media_worker()
        if worker.allow_image(run_id, name):
            at = self._step if step is None else step
            worker.submit(ImageJob(run_id, now, name, max(at, 0), caption, taken))

    def log_histogram(self, name: str, values: Any, *, step: int | None = None, bins: int = 64) -> None:
        """Record the distribution of ``values`` (weights, gradients, Q-values) as a histogram.

        The call checks the values and takes a flat copy (about a millisecond
        for a million float64; a list costs its conversion); binning happens
        on runwatch's media thread: ``bins`` equal bins over the finite
        values' range, NaN and ±Inf counted apart. Read them back with
        :meth:`DatabaseManager.get_run_histograms`.

        Args:
            name: the series, e.g. ``q_values`` or ``grad/layer1``.
            values: a numpy array, a list or tuple of numbers, or anything
                with ``__array__`` (a CPU tensor); any shape, flattened.
            step: the global step it belongs to; ``None``: the run's current step.
            bins: the number of bins, 1 to 1024.

        Raises:
            ValueError: no active run, an empty name, or ``bins`` out of range.
            TypeError: values that are not numbers, or a name, step or bins of the wrong type.
        """
        from .media.histograms import check_bins, take_values
        from .media.worker import HistogramJob

        run_id = self._run_id
        if run_id is None:
            run_id = self._require_run()
        _check_media_name(name)
        bins = check_bins(bins)
        step = None if step is None else _integer("step", step)
        copy = take_values(values)
        if self._pid != os.getpid():
            self._drop_in_forked_child(None)
            return
        at = self._step if step is None else step
        self._media_worker().submit(HistogramJob(run_id, _time(), name, max(at, 0), copy, bins))

    def _media_worker(self) -> MediaWorker:
        worker = self._media
        if worker is None:
            from .media.worker import MediaWorker

            with self._lock:
                self._check_open()
                worker = self._media
                if worker is None:
                    worker = self._media = MediaWorker(
                        self._emit, max_images_per_second=self.config.max_images_per_second
                    )
        return worker

    def _wait_for_media(self, timeout: float | None) -> None:
        """Hand every queued image and histogram to the pipeline first (bounded by ``timeout``)."""
        worker = self._media
        if worker is not None:
            worker.wait_idle(timeout)

    def update_step(
        self, step: int, reward: float, action: str, inference_time: float, game_state: dict[str, Any]
    ) -> None:
        """Record one training step (counts a step; a logging call at the next global step).

        ``reward``, ``inference_time`` and ``episode_step`` (the ``step``
        given here) become metrics at the run's next global step, tagged
        with the action; the next :meth:`update_metrics` call without a
        ``step`` lands on the same step, so a step's reward and loss share a
        row. The action and game state go into the run state.

        Args:
            step: step number in the current episode.
            reward: reward received for the step.
            action: the action taken.
            inference_time: seconds the inference took.
            game_state: the current game state.
        """
        run_id = self._require_run()
        step = _integer("step", step)
        if not isinstance(action, str):
            raise TypeError(f"action must be a string, got {action!r}")
        action = str(action)  # a numpy string too
        check_text("action", action)
        if not isinstance(game_state, Mapping):
            raise TypeError(f"game_state must be a dict, got {type(game_state).__name__}")
        values = {
            "reward": _number("reward", reward),
            "inference_time": _number("inference_time", inference_time),
            "episode_step": step,
        }
        now = _time()
        # Both built before either is emitted: a refused game state records nothing of the step.
        patch = StatePatch(run_id, now, {"game_state": game_state, "last_action": action, "step": step})
        self._emit(self._metric_at_next_step(run_id, now, values, {"action": action}))
        self._step_open = True
        self._emit(patch)
        self._total_steps += 1
        if now >= self._next_heartbeat:
            self._send_heartbeat(now)

    def update_episode(
        self,
        episode: int,
        total_reward: float,
        steps: int,
        success: bool,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record the end of an episode (counts an episode).

        Logs ``episode/index`` (``episode``), ``episode/total_reward``,
        ``episode/steps`` and ``episode/success`` at the run's next global
        step (a logging call like any other), and an ``episode_end`` event
        with the details.
        """
        run_id = self._require_run()
        episode = _integer("episode", episode)
        steps = _integer("steps", steps)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        reward = _number("total_reward", total_reward)
        now = _time()
        values = {
            "episode/index": episode,
            "episode/total_reward": reward,
            "episode/steps": steps,
            "episode/success": 1.0 if success else 0.0,
        }
        data: dict[str, Any] = {"episode": episode, "total_reward": reward, "steps": steps, "success": bool(success)}
        if metadata:
            data["metadata"] = dict(metadata)
        event = LogEvent(run_id, now, "episode_end", "info", data)  # built first: refused metadata records nothing
        self._emit(self._metric_at_next_step(run_id, now, values))
        self._emit(event)
        self._total_episodes += 1
        self._send_heartbeat(now)

    def record_event(
        self,
        event_type: str,
        event_data: dict[str, Any],
        timestamp: datetime | None = None,
        level: str = "info",
    ) -> None:
        """Record a training event.

        Args:
            event_type: the type of event (e.g. ``checkpoint_saved``).
            event_data: event details (JSON-compatible).
            timestamp: when it happened (default: now).
            level: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
        """
        run_id = self._require_run()
        if not isinstance(event_type, str) or not event_type:
            raise (TypeError if not isinstance(event_type, str) else ValueError)(
                f"event_type must be a non-empty string, got {event_type!r}"
            )
        ts = _time() if timestamp is None else to_epoch_seconds(timestamp, "timestamp")
        self._emit(LogEvent(run_id, ts, str(event_type), level, event_data))

    def emit_event(self, event: Any) -> None:
        """Hand any typed event (see :mod:`runwatch.events`) to the pipeline."""
        self._check_open()
        self._emit(event)

    def log_handler(self, level: int = logging.INFO) -> logging.Handler:
        """A ``logging.Handler`` recording log records as events of the current run.

        ``logging.getLogger().addHandler(monitor.log_handler())`` sends every
        record at ``level`` or above (with exception and traceback) to the run.
        """
        from .log_handler import RunLogHandler

        return RunLogHandler(self, level)

    def heartbeat(self) -> None:
        """Tell the monitor the training loop is alive (sent on its own by every update)."""
        self._require_run()
        self._send_heartbeat(_time())

    def _send_heartbeat(self, now: float) -> None:
        run_id = self._run_id
        if run_id is None:
            return
        self._next_heartbeat = now + self.config.update_interval
        counters = {"total_steps": self._total_steps, "total_episodes": self._total_episodes}
        self._emit(Heartbeat(run_id, now, counters))

    # -- reading ----------------------------------------------------------------------

    @property
    def db(self) -> DatabaseManager | RestReader:
        """The :class:`DatabaseManager` of this monitor's store; in remote mode a
        :class:`~runwatch.remote.reader.RestReader` of the server (its read methods, the same shapes)."""
        if self._db is None:
            if self.config.server_url is not None:
                from .remote.reader import RestReader

                self._db = RestReader(
                    self.config.server_url, token=self.config.server_token, before_read=self._await_delivery
                )
            else:
                from .store.manager import DatabaseManager

                self._db = DatabaseManager(self.config.db_path)
        return self._db

    def _await_delivery(self) -> None:
        """Remote mode, before a read: wait (bounded) until the server has what this monitor sent."""
        if not self.wait_delivered(self.config.commit_timeout_seconds):
            logger.warning(
                "runwatch: the server has not acknowledged everything recorded yet (within %.1f s);"
                " reading what it has",
                self.config.commit_timeout_seconds,
            )

    def wait_delivered(self, timeout: float | None = 30.0) -> bool:
        """Remote mode: wait until the server has acknowledged everything recorded before the call.

        Embedded mode: the same as :meth:`flush`.

        Returns:
            ``False`` when ``timeout`` seconds passed first (the server is away:
            what is recorded waits in the spool and goes when it is back).
        """
        if not self.flush(timeout):
            return False
        from .remote.sink import REMOTE_SINK

        sink = self._assembly.services.get(REMOTE_SINK)
        return True if sink is None else sink.wait_delivered(timeout)

    def get_training_runs(
        self, limit: int | None = None, status: str | None = None, *, kind: str | None = "training"
    ) -> list[dict[str, Any]]:
        """Get the list of training runs, newest first.

        Args:
            limit: the most runs to return.
            status: only runs with this status.
            kind: only runs of this kind: ``training`` (the default) or
                ``session`` (application sessions in the same store); ``None``
                for every kind.
        """
        self.flush()
        return self.db.get_training_runs(limit=limit, status=status, kind=kind)

    def get_run_metrics(
        self,
        run_id: str,
        metric_names: list[str] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        *,
        align: str = "step",
    ) -> pd.DataFrame:
        """Get a run's metrics as a DataFrame, one column per metric.

        Args:
            run_id: the run.
            metric_names: only these metrics; ``None`` for all.
            start_time: only calls at or after this time.
            end_time: only calls at or before this time.
            align: ``"step"`` (default): one row per global step, the calls of
                a step merged (see :meth:`DatabaseManager.get_run_metrics`);
                ``"call"``: one row per logging call, as logged.
        """
        self.flush()
        return self.db.get_run_metrics(run_id, metric_names, start_time, end_time, align=align)

    def get_runs_metrics(self, run_ids: list[str], metric_names: list[str] | None = None) -> pd.DataFrame:
        """Get several runs' metrics as one long-form DataFrame (run_id, step, timestamp, metric, value).

        See :meth:`DatabaseManager.get_runs_metrics`.
        """
        self.flush()
        return self.db.get_runs_metrics(run_ids, metric_names)

    def get_run_histograms(self, run_id: str, name: str) -> pd.DataFrame:
        """Get a run's histograms of ``name`` as a DataFrame, one row per logged histogram, by step.

        The histograms logged before this call are binned and stored first.
        Columns as :meth:`DatabaseManager.get_run_histograms` gives them
        (``step``, ``timestamp``, the summary, ``bin_edges`` and ``counts``).
        """
        self.flush()
        return self.db.get_run_histograms(run_id, name)

    def get_run_events(
        self,
        run_id: str,
        event_type: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Get a run's events, oldest first."""
        self.flush()
        return self.db.get_run_events(run_id, event_type, start_time, end_time)

    def get_run_summary(self, run_id: str) -> dict[str, Any]:
        """Get the summary of a run (status, times, counts, per-metric statistics)."""
        self.flush()
        return self.db.get_run_summary(run_id)

    def get_alerts(self, run_id: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        """Alert instances and their current state, from this monitor's store.

        Args:
            run_id: only this run's alerts; ``None`` for every run.
            state: ``pending``, ``firing`` or ``resolved``; ``None`` means
                pending and firing (what is active now).

        Returns:
            Dicts with ``rule``, ``run_id``, ``state``, ``severity``, ``value``,
            ``labels``, ``annotations``, ``active_since`` and ``updated_at``
            (epoch seconds).
        """
        self.flush()
        return self.db.get_alerts(run_id, state)

    def export_run_data(self, run_id: str, output_dir: Path, include_snapshots: bool = True) -> Path:
        """Export a run to a ``.zip`` (run.json, metrics, events.jsonl, state history).

        Returns:
            The path of the archive.
        """
        self.flush()
        if self._remote:
            from .remote.reader import RestReader

            reader = self.db
            assert isinstance(reader, RestReader)
            return reader.export_run(run_id, Path(output_dir), include_snapshots=include_snapshots)
        from .store.export import export_run

        return export_run(self.config.db_path, run_id, Path(output_dir), include_snapshots=include_snapshots)

    # -- plumbing ---------------------------------------------------------------------

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything recorded before the call is committed (remote mode: spooled on this
        machine's disk and fsync-ed; :meth:`wait_delivered` waits for the server).

        Returns:
            ``True`` once committed; ``False`` if ``timeout`` seconds passed
            first, the monitor is closed, or this is a forked child (see
            :meth:`_after_fork_in_child`).
        """
        if self._pid != os.getpid():
            return False
        self._wait_for_media(timeout)
        with self._lock:
            if self._run_id is not None:
                self._send_heartbeat(_time())  # progress counters go out with the flush
        return self._thread.flush(timeout)

    def statistics(self) -> dict[str, Any]:
        """Pipeline counters (queues, drops, commits) plus error counts.

        Besides the pipeline's own counters: ``errors`` (the error handler's
        counts), ``uncommitted_lifecycle_calls`` (lifecycle calls whose
        commit did not come within ``commit_timeout_seconds``) and ``media``
        (the media thread's: ``queued_jobs``, ``queued_bytes``,
        ``images_encoded``, ``histograms_binned``, ``dropped`` by reason
        (``rate_limited``, ``queue_full``, ``unreadable``, ``failed``,
        ``closed``) and ``cpu_seconds``).
        """
        stats = self._thread.pipeline.statistics()
        stats["errors"] = self.error_handler.statistics()
        stats["uncommitted_lifecycle_calls"] = self._uncommitted_lifecycle_calls
        media = self._media
        stats["media"] = _media_statistics(media)
        if self._pid != os.getpid():
            stats["running"] = False
            stats["forked_child_dropped_events"] = self._forked_dropped
        return stats

    def _after_fork_in_child(self) -> None:
        """In a forked child: this monitor's pipeline thread does not exist here.

        runwatch's choice: the child's calls are accepted and ignored (never
        queued, never blocking, never raising) and counted as
        ``forked_child_dropped_events`` in :meth:`statistics`; the first one
        logs a warning. A child that wants its own records creates its own
        ``WebMonitor``. The parent is untouched. (Restarting the pipeline in
        the child would put two writers on one run's rows.)
        """
        self._lock = threading.RLock()  # another thread may have held it at the fork
        self._emit = self._drop_in_forked_child
        self._media = None  # its thread is the parent's
        self._db = None  # per-call connections: reopened lazily, nothing inherited

    def _drop_in_forked_child(self, event: Any) -> None:
        self._forked_dropped += 1
        if self._forked_dropped == 1:
            logger.warning(
                "runwatch: this WebMonitor belongs to process %d; its calls in forked child %d are ignored"
                " (counted as forked_child_dropped_events); create a new WebMonitor in the child to record there",
                self._pid,
                os.getpid(),
            )

    @property
    def pipeline_thread(self) -> PipelineThread:
        """The background thread running this monitor's pipeline."""
        return self._thread

    def close(self) -> None:
        """Finish the active run (completed), drain the pipeline and stop. Idempotent."""
        self._close(None)

    def _close(self, failure: BaseException | None) -> None:
        with self._lock:
            if self._closed:
                return
            if self._pid != os.getpid():  # a forked child: the pipeline thread is the parent's
                self._closed = True
                _open_monitors.discard(self)
                return
            try:
                if self._run_id is not None:
                    if failure is None:
                        self._end_run(RunTransition.COMPLETED)
                    else:
                        if isinstance(failure, Exception):
                            self.error_handler.handle_error(failure, component="training loop")
                        reason = escape_surrogates(f"{type(failure).__name__}: {_describe(failure)}")
                        self._end_run(RunTransition.FAILED, metadata={"reason": reason})
            finally:
                self._closed = True
                if self._media is not None:  # its queued jobs reach the pipeline before it drains
                    self._media.close(self.config.shutdown_timeout_seconds)
                server = self._web_server
                self._thread.close()
                if self._db is not None:
                    self._db.close()
                if self._runs_seen and not self._remote and not (server is not None and server.shared):
                    # This script's dashboard is gone with it: say how to see its runs again, in a line for
                    # the user on stderr (as `runwatch serve` announces itself), not a warning in their logs.
                    hint = closing_hint(self.config.db_path, self._runs_seen)
                    print(hint, file=sys.stderr, flush=True)  # noqa: T201 - the user's line, not a log record
                _open_monitors.discard(self)
                if self._restore_log_level is not None:
                    logging.getLogger("runwatch").setLevel(self._restore_log_level)
                    self._restore_log_level = None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this WebMonitor is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Ctrl-C or an error fails the run; a clean exit (or SystemExit(0)) completes it.
        clean = exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0))
        self._close(None if clean else exc)

    def __repr__(self) -> str:
        return f"<WebMonitor db={self.config.db_path!r} run={self._run_id!r} state={self._status}>"


# Monitors still open at interpreter exit are closed there: an uncaught
# exception marks their active run failed, a normal exit completes it.
_open_monitors: weakref.WeakSet[WebMonitor] = weakref.WeakSet()
_uncaught: list[BaseException] = []
_previous_excepthook = sys.excepthook


def _remember_uncaught(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _uncaught.append(exc)
    _previous_excepthook(exc_type, exc, tb)


def _after_fork_in_child() -> None:
    for monitor in list(_open_monitors):
        try:
            monitor._after_fork_in_child()
        except Exception:  # never break the child's fork
            pass
    # A forked child has no pipeline thread: its copies must not try to close it at exit.
    _open_monitors.clear()


def _close_open_monitors() -> None:
    failure = _uncaught[-1] if _uncaught else None
    for monitor in list(_open_monitors):
        try:
            monitor._close(failure)
        except Exception:
            traceback.print_exc()


_hooks_installed = False


def _install_exit_hooks() -> None:
    """Once per process, on the first monitor (importing runwatch changes nothing)."""
    global _hooks_installed, _previous_excepthook
    if _hooks_installed:
        return
    _hooks_installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _remember_uncaught
    atexit.register(_close_open_monitors)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
