"""The system sampler: host and process resources as metrics, every few seconds.

Every ``interval_seconds`` one sample is read off the event loop (psutil and,
when it can be imported, NVML through ``pynvml``) and sent as one
:class:`~runwatch.events.Metric` per active run, with these names:

=================================  ===========================================
``system/cpu_percent``             all CPUs, busy since the previous sample
``system/memory_percent``          physical memory in use
``system/disk_usage``              space used on ``disk_path``, percent
``system/net_sent_bytes_per_s``    all interfaces, since the previous sample
``system/net_recv_bytes_per_s``    all interfaces, since the previous sample
``system/process_rss_mib``         this process's resident memory, MiB
``system/process_threads``         this process's thread count
``system/gpu<N>_util_percent``     GPU N busy (NVML), when available
``system/gpu<N>_memory_percent``   GPU N memory in use (NVML), when available
=================================  ===========================================

Ticks keep to a fixed grid (start + k × interval). A tick that comes more
than half an interval late — the previous sample or the loop ran long — is
skipped and counted, never run behind the others. Samples are sent only
while some run is active: the run ids come from the shared service
``active_runs`` (a set that the facades keep), else from the ``run_id``
option; with neither, the tick is idle and nothing is read.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.to_thread
import psutil
from pydantic import Field

from ..events import Metric
from ..pipeline.component import ComponentContext, Source
from ..pipeline.component import Options as BaseOptions

__all__ = ["SystemProbe", "SystemSampler", "TickPlan", "plan_tick", "rate_per_second"]

logger = logging.getLogger("runwatch.system")

_MIB = 1024 * 1024
T = TypeVar("T")


# -- pure helpers ------------------------------------------------------------------------


class TickPlan(NamedTuple):
    """What to do at a wake-up: sample or not, how many ticks were skipped, the next tick."""

    sample: bool
    skipped: int
    next_at: float


def plan_tick(scheduled: float, now: float, interval: float) -> TickPlan:
    """Decide what a wake-up at ``now`` does for the tick ``scheduled`` (same clock, seconds).

    A tick is on time while less than half an interval has passed since its
    time; it is then sampled. Late ticks are skipped: if a later tick of the
    grid is on time, that one is sampled instead, else the next sample waits
    for the next tick ahead. Samples are thus never closer than half an
    interval, and missed ticks never pile up.
    """
    late = now - scheduled
    if late < interval / 2:  # also when the timer fired a hair early
        return TickPlan(True, 0, scheduled + interval)
    passed = int(late // interval)  # grid ticks after ``scheduled`` that are already due
    if late - passed * interval < interval / 2:
        return TickPlan(True, passed, scheduled + (passed + 1) * interval)
    return TickPlan(False, passed + 1, scheduled + (passed + 1) * interval)


def rate_per_second(previous: int, current: int, seconds: float) -> float | None:
    """A counter's rate between two readings, or ``None`` if it went back (reset) or no time passed."""
    if seconds <= 0 or current < previous:
        return None
    return (current - previous) / seconds


# -- the blocking reader -------------------------------------------------------------------


class SystemProbe:
    """Reads system metrics. Blocking: call :meth:`open`, :meth:`sample` and
    :meth:`close` in a worker thread.

    A sample may be abandoned mid-way (the sampler stops without waiting for
    it); :meth:`close` then leaves the NVML shutdown to that sample's thread.

    Args:
        disk_path: the path whose file system's usage is reported.
    """

    def __init__(self, disk_path: str = "/") -> None:
        self.disk_path = disk_path
        self.gpu_count = 0
        self._process: psutil.Process | None = None
        self._net: tuple[int, int, float] | None = None  # bytes sent, received, monotonic time
        self._nvml: Any = None
        self._gpus: list[Any] = []
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._warned: set[str] = set()

    def open(self) -> None:
        """Prime the counters that report "since the previous call", and find GPUs."""
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)
        self._read_net()
        self._open_gpus()

    def _open_gpus(self) -> None:
        try:
            nvml = importlib.import_module("pynvml")
        except Exception:  # ImportError, or a broken install: the same for us
            logger.info("runwatch: pynvml is not installed; GPU metrics are skipped")
            return
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError: no driver or no device
            logger.info("runwatch: NVML is unavailable (%s); GPU metrics are skipped", exc)
            return
        try:
            self._gpus = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except Exception as exc:
            logger.info("runwatch: cannot list GPUs through NVML (%s); GPU metrics are skipped", exc)
            nvml.nvmlShutdown()
            return
        self._nvml = nvml
        self.gpu_count = len(self._gpus)
        if not self._gpus:
            logger.info("runwatch: NVML found no GPU; GPU metrics are skipped")

    def sample(self) -> tuple[float, dict[str, float]]:
        """One reading: ``(timestamp, values)`` with the metric names of the module docs.

        Values that cannot be read (a missing disk path, a GPU error) are left
        out, with one warning per kind of problem.

        Raises:
            RuntimeError: the probe is closed.
            psutil.Error: the process's own figures cannot be read.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the system probe is closed")
            self._busy = True
        try:
            return self._read()
        finally:
            with self._lock:
                self._busy = False
                if self._closed:
                    self._shutdown_gpus()

    def _read(self) -> tuple[float, dict[str, float]]:
        assert self._process is not None, "open() first"
        values: dict[str, float] = {
            "system/cpu_percent": psutil.cpu_percent(interval=None),
            "system/memory_percent": psutil.virtual_memory().percent,
        }
        try:
            values["system/disk_usage"] = psutil.disk_usage(self.disk_path).percent
        except OSError as exc:
            self._warn_once("disk", "runwatch: cannot read disk usage of %r (%s); skipped", self.disk_path, exc)
        rates = self._read_net()
        if rates is not None:
            values["system/net_sent_bytes_per_s"], values["system/net_recv_bytes_per_s"] = rates
        with self._process.oneshot():
            values["system/process_rss_mib"] = self._process.memory_info().rss / _MIB
            values["system/process_threads"] = self._process.num_threads()
        nvml = self._nvml
        for index, handle in enumerate(self._gpus):
            try:
                utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # NVMLError (e.g. GPU lost); keep the other values
                self._warn_once(f"gpu{index}", "runwatch: cannot read GPU %d through NVML (%s); skipped", index, exc)
                continue
            values[f"system/gpu{index}_util_percent"] = float(utilization.gpu)
            if memory.total:
                values[f"system/gpu{index}_memory_percent"] = 100.0 * memory.used / memory.total
        return time.time(), values

    def _read_net(self) -> tuple[float, float] | None:
        counters = psutil.net_io_counters()
        if counters is None:  # no network interface at all
            return None
        now = time.monotonic()
        previous, self._net = self._net, (counters.bytes_sent, counters.bytes_recv, now)
        if previous is None:
            return None
        sent = rate_per_second(previous[0], counters.bytes_sent, now - previous[2])
        received = rate_per_second(previous[1], counters.bytes_recv, now - previous[2])
        if sent is None or received is None:
            return None
        return sent, received

    def _warn_once(self, kind: str, message: str, *args: Any) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message, *args)

    def close(self) -> None:
        """Release NVML (now, or when an abandoned sample finishes). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._busy:
                self._shutdown_gpus()

    def _shutdown_gpus(self) -> None:
        nvml, self._nvml, self._gpus = self._nvml, None, []
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception as exc:
                logger.debug("runwatch: NVML shutdown failed: %s", exc)


# -- the source ----------------------------------------------------------------------------


class SystemSampler(Source):
    """Samples CPU, memory, disk, network, this process and GPUs into metrics.

    Status: beta. Delivery: best effort (a tick that comes late is skipped).
    State: stateful (counter deltas). Egress: one batch per sample.

    Example::

        [sources.system]
        type = "system"
        interval_seconds = 5.0

    Options:
        interval_seconds: seconds between samples (default 5.0).
        disk_path: the path whose file system's usage is reported (default ``/``).
        run_id: the run to attribute samples to when the ``active_runs``
            service is absent or empty; with neither, ticks are idle.

    Statistics: ``sampled_ticks``, ``skipped_ticks`` (late), ``idle_ticks``
    (no active run), ``failed_ticks`` (the reading raised), ``gpus``,
    ``last_sample_seconds`` (how long the last reading took).
    """

    class Options(BaseOptions):
        interval_seconds: float = Field(5.0, gt=0)
        disk_path: str = Field("/", min_length=1)
        run_id: str | None = Field(None, min_length=1)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.probe = SystemProbe(options.disk_path)
        self.sampled_ticks = 0
        self.skipped_ticks = 0
        self.idle_ticks = 0
        self.failed_ticks = 0
        self.last_sample_seconds: float | None = None
        self._stop_requested = False
        self._thread_scope: anyio.CancelScope | None = None

    async def run(self, stopping: anyio.Event) -> None:
        interval = self.options.interval_seconds
        await self._in_thread(self.probe.open)
        if stopping.is_set() or self._stop_requested:
            return
        next_at = time.monotonic() + interval  # the first rates need a full interval
        while True:
            with anyio.move_on_after(max(0.0, next_at - time.monotonic())):
                await stopping.wait()
            if stopping.is_set() or self._stop_requested:
                return
            plan = plan_tick(next_at, time.monotonic(), interval)
            self.skipped_ticks += plan.skipped
            next_at = plan.next_at
            if not plan.sample:
                continue
            run_ids = self._run_ids()
            if not run_ids:
                self.idle_ticks += 1
                continue
            started = time.perf_counter()
            try:
                result = await self._in_thread(self.probe.sample)
            except Exception as exc:  # counted and logged: one bad reading does not end sampling
                self._record_failure(exc)
                continue
            if result is None:
                return  # stop() abandoned the reading
            self.last_sample_seconds = time.perf_counter() - started
            self.sampled_ticks += 1
            timestamp, values = result
            await self.output.send([Metric(run_id, timestamp, values) for run_id in run_ids])

    def _run_ids(self) -> tuple[str, ...]:
        # tuple() copies the set in one C call, so a facade thread adding a run
        # meanwhile cannot break the iteration.
        active = tuple(self.context.active_runs)
        if active:
            return tuple(sorted(active))
        return (self.options.run_id,) if self.options.run_id else ()

    async def _in_thread(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` in a worker thread; ``None`` if :meth:`stop` abandoned it."""
        with anyio.CancelScope() as scope:
            self._thread_scope = scope
            if self._stop_requested:
                scope.cancel()
            try:
                return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
            finally:
                self._thread_scope = None
        return None

    def _record_failure(self, exc: Exception) -> None:
        self.failed_ticks += 1
        if self.failed_ticks & (self.failed_ticks - 1) == 0:  # 1, 2, 4...: no log storm
            logger.error(
                "runwatch: %s could not read system metrics (%d failure(s) so far)",
                self.id,
                self.failed_ticks,
                exc_info=exc,
            )

    def stop(self) -> None:
        # A reading in progress is abandoned rather than waited for: stopping stays prompt
        # even when a disk or a GPU query hangs.
        self._stop_requested = True
        if self._thread_scope is not None:
            self._thread_scope.cancel()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.probe.close)

    def statistics(self) -> dict[str, Any]:
        return {
            "sampled_ticks": self.sampled_ticks,
            "skipped_ticks": self.skipped_ticks,
            "idle_ticks": self.idle_ticks,
            "failed_ticks": self.failed_ticks,
            "gpus": self.probe.gpu_count,
            "last_sample_seconds": self.last_sample_seconds,
        }
