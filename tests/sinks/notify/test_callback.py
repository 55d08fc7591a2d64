"""Tests of runwatch.sinks.notify.callback: the callback sink, built in code or from a target in a config."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from runwatch.events import Metric
from runwatch.exceptions import ConfigError
from runwatch.pipeline.runtime import Pipeline
from runwatch.sinks.notify import CallbackNotifier

from ._helpers import T0, TIMEOUT, alert, context

RECEIVED: list[dict[str, Any]] = []


def record_notification(payload: dict[str, Any]) -> None:
    """The callback used by config tests (``target = "<this module>:record_notification"``)."""
    RECEIVED.append(payload)


async def test_from_callable_calls_a_plain_function_with_each_notification() -> None:
    """A plain function built in with from_callable receives each notification's dict."""
    received: list[dict[str, Any]] = []
    notifier = CallbackNotifier.from_callable(received.append, group_wait_seconds=0.0)
    await notifier.write([alert("firing"), alert("firing", run_id="r2")])
    await notifier.flush()
    await notifier.aclose()

    assert [(p["status"], p["group"]["run_id"]) for p in received] == [("firing", "r1"), ("firing", "r2")]


async def test_an_async_callback_is_awaited() -> None:
    """An async def callback is awaited on the loop."""
    received: list[str] = []

    async def on_notification(payload: dict[str, Any]) -> None:
        await anyio.lowlevel.checkpoint()
        received.append(payload["status"])

    notifier = CallbackNotifier.from_callable(on_notification, group_wait_seconds=0.0)
    await notifier.write([alert("firing")])
    await notifier.flush()

    assert received == ["firing"]


async def test_a_failing_callback_is_counted_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An exception from the callback becomes a counted drop and a log line; the next call still happens."""
    calls: list[str] = []

    def fails_first(payload: dict[str, Any]) -> None:
        calls.append(payload["group"]["run_id"])
        if len(calls) == 1:
            raise RuntimeError("receiver is down")

    notifier = CallbackNotifier.from_callable(fails_first, group_wait_seconds=0.0)
    await notifier.write([alert("firing"), alert("firing", run_id="r2")])
    await notifier.flush()

    assert calls == ["r1", "r2"]
    stats = notifier.statistics()
    assert stats["failed_callbacks"] == 1
    assert stats["dropped_notifications"] == {"callback_error": 1}
    assert stats["sent_notifications"] == 1
    assert "receiver is down" in caplog.text


async def test_a_stuck_callback_is_given_up_after_its_timeout() -> None:
    """A plain function that does not return within timeout_seconds is counted as callback_timeout."""
    release, returned = threading.Event(), threading.Event()

    def stuck(payload: dict[str, Any]) -> None:
        try:
            release.wait(TIMEOUT)
        finally:
            returned.set()

    notifier = CallbackNotifier.from_callable(stuck, group_wait_seconds=0.0, timeout_seconds=0.05)
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing")])
            await notifier.flush()
    finally:
        release.set()
        assert await anyio.to_thread.run_sync(returned.wait, TIMEOUT)

    assert notifier.statistics()["dropped_notifications"] == {"callback_timeout": 1}


async def test_a_callback_configured_by_target_runs_in_a_real_pipeline(tmp_path: Path) -> None:
    """type = "callback" with target = "module:function" is called for alerts emitted into a pipeline."""
    RECEIVED.clear()
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "notify": {
                "type": "callback",
                "inputs": ["app"],
                "target": f"{record_notification.__module__}:record_notification",
                "group_wait_seconds": 0,
            }
        },
    }
    with anyio.fail_after(TIMEOUT):
        async with Pipeline(config, context=context(tmp_path)) as pipeline:
            pipeline.emit(Metric("r1", T0, {"loss": 1.0}))
            pipeline.emit(alert("firing"))
            assert await pipeline.flush(TIMEOUT)

    assert [p["status"] for p in RECEIVED] == ["firing"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param(None, "is required", id="missing"),
        pytest.param("no_such_module_xyz:fn", "cannot import", id="unknown-module"),
        pytest.param("json:no_such_function", "cannot import", id="unknown-attribute"),
        pytest.param("json:decoder.JSONDecodeError.__doc__", "not callable", id="not-callable"),
    ],
)
def test_a_bad_callback_target_is_a_config_error_naming_the_key(target: str | None, reason: str) -> None:
    """A missing, unimportable or non-callable target fails when the notifier is built."""
    options = CallbackNotifier.Options() if target is None else CallbackNotifier.Options(target=target)
    with pytest.raises(ConfigError) as caught:
        CallbackNotifier("notify", options, context())

    assert caught.value.path == "sinks.notify.target"
    assert reason in caught.value.reason
