"""Run a pipeline on its own event loop in a background thread.

Training loops are synchronous. :class:`PipelineThread` gives them the
pipeline with an explicit lifecycle: ``start()`` returns once every
component is open (or raises what stopped it), ``emit``/``flush`` work from
any thread, ``close()`` drains and joins. The thread is a daemon so a
forgotten ``close()`` cannot hang interpreter exit; the facades register an
``atexit`` hook that closes it with a deadline instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Self, TypeVar

from ..exceptions import PipelineNotRunning
from .runtime import Pipeline

__all__ = ["PipelineThread"]

logger = logging.getLogger("runwatch.pipeline")
T = TypeVar("T")

#: A companion runs beside the pipeline on the same loop (the web server, say):
#: a callable taking the pipeline and returning an async context manager.
Companion = Callable[[Pipeline], AbstractAsyncContextManager[Any]]


class PipelineThread:
    """A :class:`Pipeline` running on a daemon thread's event loop.

    Args:
        pipeline: the pipeline to run (built, not started).
        companions: async context managers to enter after the pipeline starts
            and exit before it stops (e.g. the web server).
        name: the thread's name.
    """

    def __init__(
        self, pipeline: Pipeline, *, companions: list[Companion] | None = None, name: str = "runwatch"
    ) -> None:
        self.pipeline = pipeline
        self._companions = list(companions or [])
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._stop_request: asyncio.Event | None = None
        self._closed = False
        self.companion_values: list[Any] = []

    def start(self, timeout: float = 30.0) -> None:
        """Start the loop thread and wait until the pipeline runs.

        Raises:
            Exception: whatever stopped a component or companion from starting.
            TimeoutError: the pipeline did not start within ``timeout`` seconds.
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the runwatch pipeline did not start within {timeout} s")
        if self._startup_error is not None:
            self._thread.join(5)
            raise self._startup_error

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() or logged; a daemon thread must not die noisily
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                logger.exception("runwatch: the pipeline thread stopped with an error")
        finally:
            if not self._closed and self._ready.is_set() and self._startup_error is None:
                self._abandon_intake()

    def _abandon_intake(self) -> None:
        """The loop ended without close() (stopped or crashed under us): nothing will drain the intake.

        Producers must not wait on a queue nobody reads: the intake is closed,
        so later events are dropped at once and counted (reason ``closed``),
        and what it still held is counted as ``pipeline_stopped``.
        """
        lost = self.pipeline.abandon_sources("pipeline_stopped")
        logger.error(
            "runwatch: the pipeline's event loop stopped unexpectedly; %d queued event(s) dropped,"
            " and later events are dropped and counted (reason: closed)",
            lost,
        )

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_request = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self.pipeline)
                for companion in self._companions:
                    self.companion_values.append(await stack.enter_async_context(companion(self.pipeline)))
            except BaseException as exc:
                self._startup_error = exc
                self._ready.set()
                raise
            self._ready.set()
            await self._stop_request.wait()

    @property
    def running(self) -> bool:
        """Whether the loop thread is alive and the pipeline runs."""
        return self._thread is not None and self._thread.is_alive() and self.pipeline.running

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, timeout: float | None = None) -> T:
        """Run ``await fn(*args)`` on the pipeline's loop and return its result.

        Raises:
            PipelineNotRunning: the loop is not running.
            TimeoutError: ``timeout`` seconds passed first.
        """
        loop = self._loop
        if loop is None or not self.running:
            raise PipelineNotRunning("the runwatch pipeline is not running")
        future = asyncio.run_coroutine_threadsafe(fn(*args), loop)
        return future.result(timeout)

    def emit(self, event: Any) -> None:
        """Hand an event to the pipeline's default intake (from any thread)."""
        self.pipeline.emit(event)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything emitted before the call is committed.

        Returns:
            ``True`` once committed; ``False`` on timeout or when not running.
        """
        if not self.running:
            return False
        try:
            return self.call(self.pipeline.flush, timeout, timeout=None if timeout is None else timeout + 1)
        except (PipelineNotRunning, TimeoutError):
            return False

    def close(self, timeout: float | None = None) -> None:
        """Stop the pipeline (draining every queue) and join the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, stop = self._loop, self._stop_request
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            limit = timeout if timeout is not None else self.pipeline.shutdown_timeout_seconds + 10
            self._thread.join(limit)
            if self._thread.is_alive():
                logger.error("runwatch: the pipeline thread did not stop within %.1f s", limit)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
