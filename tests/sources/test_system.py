"""Tests for runwatch.sources.system: the pure tick planning, then the sampler in a real pipeline.

Intervals are a few tens of milliseconds; tests wait on events that the
recording sink sets, each wait guarded by ``fail_after``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.to_thread
import pytest

from runwatch.events import Metric
from runwatch.exceptions import ConfigError
from runwatch.pipeline.component import ComponentContext, Sink
from runwatch.pipeline.component import Options as BaseOptions
from runwatch.pipeline.config import load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.sources.system import SystemProbe, SystemSampler, TickPlan, plan_tick, rate_per_second

TIMEOUT = 10
INTERVAL = 0.03
BASE_NAMES = {
    "system/cpu_percent",
    "system/memory_percent",
    "system/disk_usage",
    "system/net_sent_bytes_per_s",
    "system/net_recv_bytes_per_s",
    "system/process_rss_mib",
    "system/process_threads",
}


class SampleSink(Sink):
    """Records events; ``arrived`` is set once ``want`` system samples (metric events) came in."""

    class Options(BaseOptions):
        want: int = 2

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.events: list[Any] = []
        self.arrived = anyio.Event()

    @property
    def samples(self) -> list[Metric]:
        """The metric events that came from the system sampler."""
        return [e for e in self.events if type(e) is Metric and "system/cpu_percent" in e.values]

    async def write(self, batch: list[Any]) -> None:
        self.events.extend(batch)
        if len(self.samples) >= self.options.want:
            self.arrived.set()


SAMPLE_SINK = f"{SampleSink.__module__}:SampleSink"


def config(want: int = 2, **system_options: Any) -> dict[str, Any]:
    """in_process + system sources feeding one SampleSink."""
    system_options.setdefault("interval_seconds", INTERVAL)
    return {
        "sources": {"app": {"type": "in_process"}, "system": {"type": "system", **system_options}},
        "sinks": {"out": {"type": SAMPLE_SINK, "inputs": ["app", "system"], "want": want}},
    }


def context(tmp_path: Path, active_runs: set[str] | None = None) -> ComponentContext:
    """A context whose files stay in tmp_path, with the given active runs (or none)."""
    return ComponentContext(
        db_path=str(tmp_path / "db.sqlite"),
        data_dir=tmp_path / "data",
        active_runs=set() if active_runs is None else active_runs,
    )


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import pynvml`` fail, whatever is installed."""
    monkeypatch.setitem(sys.modules, "pynvml", None)


# -- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(10.0, TickPlan(True, 0, 11.0), id="on-time"),
        pytest.param(9.999, TickPlan(True, 0, 11.0), id="timer-a-hair-early"),
        pytest.param(10.4, TickPlan(True, 0, 11.0), id="a-little-late"),
        pytest.param(10.5, TickPlan(False, 1, 11.0), id="half-an-interval-late-is-skipped"),
        pytest.param(11.2, TickPlan(True, 1, 12.0), id="a-later-tick-is-on-time"),
        pytest.param(12.7, TickPlan(False, 3, 13.0), id="all-late-wait-for-the-next"),
    ],
)
def test_plan_tick_samples_on_time_ticks_and_skips_late_ones(now: float, expected: TickPlan) -> None:
    """A tick at 10.0 (interval 1.0) is sampled until half an interval late; late ticks are skipped and counted."""
    assert plan_tick(10.0, now, 1.0) == expected


@pytest.mark.parametrize(
    ("previous", "current", "seconds", "expected"),
    [
        pytest.param(1000, 3000, 2.0, 1000.0, id="rate"),
        pytest.param(3000, 1000, 2.0, None, id="counter-reset"),
        pytest.param(1000, 3000, 0.0, None, id="no-time"),
    ],
)
def test_rate_per_second(previous: int, current: int, seconds: float, expected: float | None) -> None:
    """A counter's rate is its increase per second; a reset or zero elapsed time gives None."""
    assert rate_per_second(previous, current, seconds) == expected


# -- in a real pipeline --------------------------------------------------------------------------------


async def test_samples_arrive_with_the_documented_names_and_sane_values(tmp_path: Path, no_gpu: None) -> None:
    """With active_runs = {"r1"}, each sample is one metric for r1 with every documented name, in range."""
    async with Pipeline(config(want=3), context=context(tmp_path, {"r1"})) as pipeline:
        sink = pipeline.component("out")
        assert isinstance(sink, SampleSink)
        pipeline.emit(Metric("r1", time.time(), {"loss": 0.5}))
        with anyio.fail_after(TIMEOUT):
            await sink.arrived.wait()

    samples = sink.samples
    assert {s.run_id for s in samples} == {"r1"}
    assert any(type(e) is Metric and "loss" in e.values for e in sink.events)  # in_process still flows
    for sample in samples:
        values = sample.values
        assert set(values) == BASE_NAMES
        for name in ("cpu_percent", "memory_percent", "disk_usage"):
            assert 0.0 <= values[f"system/{name}"] <= 100.0
        assert values["system/net_sent_bytes_per_s"] >= 0.0
        assert values["system/net_recv_bytes_per_s"] >= 0.0
        assert 1.0 < values["system/process_rss_mib"] < 1_000_000.0
        assert values["system/process_threads"] >= 1
        assert abs(sample.timestamp - time.time()) < 60
    assert [s.timestamp for s in samples] == sorted(s.timestamp for s in samples)
    stats = pipeline.statistics()["components"]["system"]
    assert stats["sampled_ticks"] >= 3
    assert stats["gpus"] == 0


async def test_one_metric_per_active_run_and_the_run_id_option_as_fallback(tmp_path: Path, no_gpu: None) -> None:
    """Each sample goes to every active run; with no active runs the run_id option is used."""
    async with Pipeline(config(want=2), context=context(tmp_path, {"b", "a"})) as pipeline:
        with anyio.fail_after(TIMEOUT):
            await pipeline.component("out").arrived.wait()  # type: ignore[attr-defined]
    first, second = pipeline.component("out").samples[:2]  # type: ignore[attr-defined]
    assert (first.run_id, second.run_id) == ("a", "b")
    assert first.values == second.values

    async with Pipeline(config(want=1, run_id="solo"), context=context(tmp_path, set())) as pipeline:
        with anyio.fail_after(TIMEOUT):
            await pipeline.component("out").arrived.wait()  # type: ignore[attr-defined]
    assert pipeline.component("out").samples[0].run_id == "solo"  # type: ignore[attr-defined]


async def test_late_ticks_are_skipped_and_counted_not_run_behind(
    tmp_path: Path, no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading that takes 2.5 intervals makes the ticks it overran be skipped and counted."""
    real_sample = SystemProbe.sample
    started: list[float] = []

    def slow_sample(self: SystemProbe) -> tuple[float, dict[str, float]]:
        started.append(time.monotonic())
        time.sleep(2.5 * INTERVAL)  # the slowness under test, not a synchronisation
        return real_sample(self)

    monkeypatch.setattr(SystemProbe, "sample", slow_sample)
    async with Pipeline(config(want=3), context=context(tmp_path, {"r1"})) as pipeline:
        with anyio.fail_after(TIMEOUT):
            await pipeline.component("out").arrived.wait()  # type: ignore[attr-defined]
        stats = pipeline.statistics()["components"]["system"]

    # Each slow reading overruns at least one tick; the catch-up ticks are never sampled.
    assert stats["skipped_ticks"] >= stats["sampled_ticks"] - 1 >= 2
    gaps = [later - earlier for earlier, later in zip(started, started[1:], strict=False)]
    assert all(gap >= 2.5 * INTERVAL for gap in gaps)


async def test_idle_ticks_read_nothing_when_no_run_is_active(no_gpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without active runs or a run_id option, ticks are counted as idle and nothing is read or sent."""
    monkeypatch.setattr(SystemProbe, "sample", lambda self: pytest.fail("sampled while idle"))
    sampler = SystemSampler("system", SystemSampler.Options(interval_seconds=0.01), ComponentContext())
    stopping = anyio.Event()
    checked = 0
    real_run_ids = sampler._run_ids

    def counting_run_ids() -> tuple[str, ...]:
        nonlocal checked
        checked += 1
        if checked == 3:
            stopping.set()
        return real_run_ids()

    sampler._run_ids = counting_run_ids  # type: ignore[method-assign]
    sent: list[Any] = []
    sampler.output = SimpleNamespace(send=lambda batch: sent.append(batch))  # type: ignore[assignment]
    with anyio.fail_after(TIMEOUT):
        await sampler.run(stopping)
    await sampler.aclose()

    assert sampler.statistics()["idle_ticks"] == 3
    assert sampler.statistics()["sampled_ticks"] == 0
    assert sent == []


async def test_no_gpu_library_means_one_log_line_and_no_error(
    tmp_path: Path, no_gpu: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Without pynvml, GPU values are skipped with exactly one INFO line, whatever the number of samples."""
    caplog.set_level(logging.DEBUG, logger="runwatch")
    async with Pipeline(config(want=3), context=context(tmp_path, {"r1"})) as pipeline:
        with anyio.fail_after(TIMEOUT):
            await pipeline.component("out").arrived.wait()  # type: ignore[attr-defined]

    gpu_lines = [r for r in caplog.records if "GPU" in r.getMessage()]
    assert [(r.name, r.levelno) for r in gpu_lines] == [("runwatch.system", logging.INFO)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert pipeline.statistics()["components"]["system"]["failed_ticks"] == 0


def fake_nvml(*, init_error: Exception | None = None) -> SimpleNamespace:
    """A stand-in for pynvml with one GPU at 42 % busy and a quarter of its memory used."""
    state = SimpleNamespace(shutdowns=0)

    def init() -> None:
        if init_error is not None:
            raise init_error

    def shutdown() -> None:
        state.shutdowns += 1

    return SimpleNamespace(
        state=state,
        nvmlInit=init,
        nvmlShutdown=shutdown,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda index: f"gpu{index}",
        nvmlDeviceGetUtilizationRates=lambda handle: SimpleNamespace(gpu=42),
        nvmlDeviceGetMemoryInfo=lambda handle: SimpleNamespace(used=1 << 30, total=4 << 30),
    )


def test_gpu_values_come_from_nvml_when_it_is_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """With NVML available, each GPU adds its utilisation and memory percentages; close shuts NVML down."""
    nvml = fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    probe = SystemProbe()
    probe.open()
    _, values = probe.sample()
    probe.close()
    probe.close()

    assert values["system/gpu0_util_percent"] == 42.0
    assert values["system/gpu0_memory_percent"] == 25.0
    assert set(values) == BASE_NAMES | {"system/gpu0_util_percent", "system/gpu0_memory_percent"}
    assert probe.gpu_count == 1
    assert nvml.state.shutdowns == 1


def test_nvml_failing_to_start_is_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An importable pynvml without a driver logs once and leaves GPU values out."""
    caplog.set_level(logging.DEBUG, logger="runwatch.system")
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(init_error=RuntimeError("NVML Shared Library Not Found")))
    probe = SystemProbe()
    probe.open()
    _, values = probe.sample()
    probe.sample()
    probe.close()

    assert set(values) == BASE_NAMES
    assert [r.getMessage() for r in caplog.records] == [
        "runwatch: NVML is unavailable (NVML Shared Library Not Found); GPU metrics are skipped"
    ]


def test_an_unreadable_disk_path_is_left_out_with_one_warning(
    no_gpu: None, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A disk_path that does not exist drops only the disk value, with a single warning."""
    probe = SystemProbe(str(tmp_path / "missing"))
    probe.open()
    values = [probe.sample()[1] for _ in range(2)]
    probe.close()

    assert all(set(v) == BASE_NAMES - {"system/disk_usage"} for v in values)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# -- stopping --------------------------------------------------------------------------------------------


async def test_stops_promptly_between_samples(tmp_path: Path, no_gpu: None) -> None:
    """With an hour between samples, stopping the pipeline does not wait for the next tick."""
    pipeline = Pipeline(config(interval_seconds=3600.0), context=context(tmp_path, {"r1"}))
    with anyio.fail_after(TIMEOUT):
        await pipeline.start()
        await anyio.wait_all_tasks_blocked()  # the sampler is now waiting for its first tick
        started = time.monotonic()
        await pipeline.stop()

    assert time.monotonic() - started < TIMEOUT / 2
    assert pipeline.statistics()["components"]["system"]["sampled_ticks"] == 0


async def test_stops_promptly_during_a_hung_reading(
    tmp_path: Path, no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading stuck in its thread is abandoned at stop; the pipeline stops without waiting for it."""
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()

    def hung_sample(self: SystemProbe) -> tuple[float, dict[str, float]]:
        entered.set()
        try:
            release.wait(TIMEOUT)
            return time.time(), {"system/cpu_percent": 1.0}
        finally:
            finished.set()

    monkeypatch.setattr(SystemProbe, "sample", hung_sample)
    pipeline = Pipeline(config(), context=context(tmp_path, {"r1"}))
    try:
        with anyio.fail_after(TIMEOUT):
            await pipeline.start()
            assert await anyio.to_thread.run_sync(entered.wait, TIMEOUT)
            await pipeline.stop()
            assert not finished.is_set()  # stopped while the reading still hangs
    finally:
        release.set()
        assert await anyio.to_thread.run_sync(finished.wait, TIMEOUT)

    assert pipeline.component("out").samples == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "path"),
    [
        pytest.param({"interval_seconds": 0}, "sources.system.interval_seconds", id="zero-interval"),
        pytest.param({"interval": 5}, "sources.system.interval", id="unit-less-name"),
        pytest.param({"run_id": ""}, "sources.system.run_id", id="empty-run-id"),
    ],
)
def test_options_are_validated_at_load(options: dict[str, Any], path: str) -> None:
    """A non-positive interval, an unknown option or an empty run id fails at load, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(config(**options))

    assert caught.value.path == path
