"""WebMonitor: the training-loop facade over the pipeline and the store (see :mod:`runwatch.monitor`)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .._payload import check_text, escape_surrogates
from ..config import MonitorConfig
from ..errors import ErrorHandler
from ..events import (
    Heartbeat,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
    to_epoch_seconds,
)
from ..exceptions import StoreError, UnknownRunError
from .arguments import closing_hint, describe, integer, last_step, new_run_id, number
from .media import MediaLogging, media_statistics
from .process import forget, install_exit_hooks, remember
from .reading import RunReading

if TYPE_CHECKING:
    from ..assemble import Assembly, WebInterface
    from ..media.worker import MediaWorker
    from ..pipeline.thread import PipelineThread
    from ..remote.reader import RestReader
    from ..store.manager import DatabaseManager

__all__ = ["WebMonitor"]

logger = logging.getLogger("runwatch")
_time = time.time


class WebMonitor(RunReading, MediaLogging):
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
        install_exit_hooks()
        remember(self)

    def _start_pipeline(self) -> Assembly:
        """The monitor's pipeline and web interface, from the composition root, started."""
        # Imported here: ``import runwatch`` stays cheap (the pipeline and the web load on first use).
        from ..assemble import assemble_monitor

        assembly = assemble_monitor(self.config)
        assembly.start()
        return assembly

    @property
    def web_url(self) -> str | None:
        """The web interface's base URL (``None`` when it could not listen); in remote mode the server's."""
        if self.config.server_url is not None:
            from ..remote.server_url import display_url

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
                self._step = last_step(existing)
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
        reward = None if final_reward is None else number("final_reward", final_reward)
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
            "system/reported/cpu_percent": number("cpu_percent", cpu_percent),
            "system/reported/memory_percent": number("memory_percent", memory_percent),
            "system/reported/disk_usage": number("disk_usage", disk_usage),
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
            patch["frame_number"] = integer("frame_number", frame_number)
        now = _time()
        event = StatePatch(run_id, now, patch)
        if frame is not None:  # checked and copied before anything is recorded
            from ..media.images import take_image  # numpy: imported by the first image, not by runwatch

            taken = take_image(frame, "frame")
            self._emit(event)
            self._submit_image(run_id, now, "frame", frame_number, None, taken)
        else:
            self._emit(event)
        if now >= self._next_heartbeat:
            self._send_heartbeat(now)

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
        step = integer("step", step)
        if not isinstance(action, str):
            raise TypeError(f"action must be a string, got {action!r}")
        action = str(action)  # a numpy string too
        check_text("action", action)
        if not isinstance(game_state, Mapping):
            raise TypeError(f"game_state must be a dict, got {type(game_state).__name__}")
        values = {
            "reward": number("reward", reward),
            "inference_time": number("inference_time", inference_time),
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
        episode = integer("episode", episode)
        steps = integer("steps", steps)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        reward = number("total_reward", total_reward)
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
        from ..log_handler import RunLogHandler

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
        (``rate_limited``, ``queue_full``, ``unreadable``, ``too_large``, ``failed``,
        ``closed``) and ``cpu_seconds``).
        """
        stats = self._thread.pipeline.statistics()
        stats["errors"] = self.error_handler.statistics()
        stats["uncommitted_lifecycle_calls"] = self._uncommitted_lifecycle_calls
        media = self._media
        stats["media"] = media_statistics(media)
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
                forget(self)
                return
            try:
                if self._run_id is not None:
                    if failure is None:
                        self._end_run(RunTransition.COMPLETED)
                    else:
                        if isinstance(failure, Exception):
                            self.error_handler.handle_error(failure, component="training loop")
                        reason = escape_surrogates(f"{type(failure).__name__}: {describe(failure)}")
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
                forget(self)
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
