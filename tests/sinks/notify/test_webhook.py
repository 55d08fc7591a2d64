"""Tests of runwatch.sinks.notify.webhook: the webhook sink against a real local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from runwatch.exceptions import ConfigError
from runwatch.pipeline.config import load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.sinks.notify import WebhookNotifier

from ._helpers import TIMEOUT, alert, context


class _Receiver(ThreadingHTTPServer):
    """A local HTTP server that records POSTs and answers with scripted status codes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        self.statuses: list[int] = []  # answered in order, then 200
        self.stall = False  # hold every answer until ``release`` is set
        self.release = threading.Event()

    @property
    def url(self) -> str:
        """The URL of the hook endpoint, with a path and query that must never be logged."""
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/hooks/secret-path?token=s3cret"

    @property
    def payloads(self) -> list[Any]:
        """The JSON bodies received so far."""
        with self.lock:
            return [body for _, _, body in self.requests]


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items()), body))
            status = self.server.statuses.pop(0) if self.server.statuses else 200
        if self.server.stall:
            self.server.release.wait(TIMEOUT)
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Receiver]:
    """A running receiver on 127.0.0.1; proxies from the environment are ignored."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = _Receiver()
    # A short poll interval: shutdown() waits up to one of them.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="webhook receiver", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def webhook(url: str, **options: Any) -> WebhookNotifier:
    """A webhook notifier with no grouping delay unless told otherwise."""
    options.setdefault("group_wait_seconds", 0.0)
    return WebhookNotifier("hook", WebhookNotifier.Options(url=url, **options), context())


async def test_webhook_posts_firing_then_resolved_exactly_once_each(receiver: _Receiver) -> None:
    """Duplicated firing and resolved events reach the receiver as one firing and one resolved POST."""
    notifier = webhook(receiver.url, headers={"Authorization": "Bearer tok-123"})
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing", value=3.5, annotations={"summary": "loss is NaN"})])
            await notifier.write([alert("firing", value=4.0, annotations={"summary": "loss is NaN"})])
            await notifier.flush()
            await notifier.write([alert("resolved"), alert("resolved")])
            await notifier.flush()
            await notifier.flush()
    finally:
        await notifier.aclose()

    assert [(p["status"], [a["state"] for a in p["alerts"]]) for p in receiver.payloads] == [
        ("firing", ["firing"]),
        ("resolved", ["resolved"]),
    ]
    path, headers, first = receiver.requests[0]
    assert path == "/hooks/secret-path?token=s3cret"
    assert headers["Authorization"] == "Bearer tok-123"
    assert headers["Content-Type"] == "application/json"
    assert first["group"] == {"rule": "loss_nan", "run_id": "r1", "labels": {}}
    assert first["alerts"][0]["annotations"] == {"summary": "loss is NaN"}
    assert first["alerts"][0]["value"] == 4.0  # the latest of the duplicates
    stats = notifier.statistics()
    assert stats["delivered_notifications"] == 2
    assert stats["dropped_notifications"] == {}


async def test_webhook_retries_after_a_500_then_succeeds(receiver: _Receiver) -> None:
    """A 500 answer schedules a retry after the backoff; the retry delivers, and nothing counts as dropped."""
    receiver.statuses = [500]
    notifier = webhook(receiver.url, backoff_initial_seconds=2.0, backoff_max_seconds=2.0)
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing")])
            await notifier.flush()
            assert len(receiver.payloads) == 1
            await notifier.tick(time.time() + 5)  # past the 2 s backoff, long before a repeat
    finally:
        await notifier.aclose()

    assert [p["status"] for p in receiver.payloads] == ["firing", "firing"]
    stats = notifier.statistics()
    assert (stats["request_attempts"], stats["retried_requests"], stats["delivered_notifications"]) == (2, 1, 1)
    assert stats["failed_requests"] == 1
    assert stats["dropped_notifications"] == {}


async def test_webhook_does_not_retry_before_the_backoff_has_passed(receiver: _Receiver) -> None:
    """A tick before the retry time makes no request."""
    receiver.statuses = [503]
    notifier = webhook(receiver.url, backoff_initial_seconds=3600.0, backoff_max_seconds=3600.0)
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing")])
            await notifier.flush()
            await notifier.flush()
            assert len(receiver.payloads) == 1
            assert notifier.statistics()["outbox"] == {"buffered": 1, "max": 1000, "in_flight": 0}
    finally:
        await notifier.aclose()


async def test_webhook_timeout_is_counted_and_the_delivery_dropped_when_retries_run_out(
    receiver: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver that never answers costs one timeout per attempt; the drop is counted and logged without secrets."""
    receiver.stall = True
    notifier = webhook(receiver.url, timeout_seconds=0.2, max_retries=0, headers={"Authorization": "Bearer tok-123"})
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing")])
            await notifier.flush()
    finally:
        receiver.release.set()
        await notifier.aclose()

    stats = notifier.statistics()
    assert stats["timed_out_requests"] == 1
    assert stats["dropped_notifications"] == {"retries_exhausted": 1}
    assert "retries_exhausted" in caplog.text
    for secret in ("tok-123", "secret-path", "s3cret"):
        assert secret not in caplog.text


async def test_webhook_does_not_retry_a_client_error(receiver: _Receiver) -> None:
    """A 400 answer drops the delivery at once with reason rejected."""
    receiver.statuses = [400]
    notifier = webhook(receiver.url)
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing")])
            await notifier.flush()
            await notifier.tick(time.time() + 5)
    finally:
        await notifier.aclose()

    assert len(receiver.payloads) == 1
    assert notifier.statistics()["dropped_notifications"] == {"rejected": 1}


async def test_webhook_counts_outbox_overflow(receiver: _Receiver) -> None:
    """Notifications beyond max_outbox_notifications drop the oldest waiting one (reason outbox_full)."""
    receiver.statuses = [500] * 10
    notifier = webhook(
        receiver.url, max_outbox_notifications=2, max_concurrent_requests=1, backoff_initial_seconds=3600.0
    )
    await notifier.start()
    try:
        with anyio.fail_after(TIMEOUT):
            await notifier.write([alert("firing", run_id=f"r{i}") for i in range(4)])
            await notifier.flush()
    finally:
        receiver.statuses = []
        await notifier.aclose()

    dropped = notifier.statistics()["dropped_notifications"]
    assert dropped["outbox_full"] == 2


async def test_closing_gives_an_unreachable_endpoint_a_bounded_last_chance() -> None:
    """aclose retries at once (no backoff wait) and then counts what could not be delivered."""
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notifier = webhook(f"http://127.0.0.1:{port}/hook", group_wait_seconds=3600.0, max_retries=2)
    await notifier.start()
    with anyio.fail_after(TIMEOUT):
        await notifier.write([alert("firing")])
        await notifier.aclose()
        await notifier.aclose()  # idempotent

    stats = notifier.statistics()
    assert stats["request_attempts"] == 3
    assert stats["dropped_notifications"] == {"retries_exhausted": 1}


async def test_a_flapping_rule_produces_one_webhook_notification_through_a_pipeline(
    receiver: _Receiver, tmp_path: Path
) -> None:
    """Alerts flapping in a real pipeline reach the webhook as one firing notification (sent at shutdown)."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"hook": {"type": "webhook", "inputs": ["app"], "url": receiver.url, "group_wait_seconds": 3600}},
    }
    with anyio.fail_after(TIMEOUT):
        async with Pipeline(config, context=context(tmp_path)) as pipeline:
            for i, state in enumerate(["firing", "resolved", "firing", "resolved", "firing"]):
                pipeline.emit(alert(state, i))
            assert await pipeline.flush(TIMEOUT)
            assert receiver.payloads == []  # the window is still open

    assert [(p["status"], len(p["alerts"])) for p in receiver.payloads] == [("firing", 1)]


async def test_webhook_in_a_pipeline_delivers_by_the_time_flush_returns(receiver: _Receiver, tmp_path: Path) -> None:
    """With group_wait_seconds = 0, Pipeline.flush returns after the POST was answered."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"hook": {"type": "webhook", "inputs": ["app"], "url": receiver.url, "group_wait_seconds": 0}},
    }
    with anyio.fail_after(TIMEOUT):
        async with Pipeline(config, context=context(tmp_path)) as pipeline:
            pipeline.emit(alert("firing"))
            assert await pipeline.flush(TIMEOUT)
            assert [p["status"] for p in receiver.payloads] == ["firing"]
            stats = pipeline.statistics()["components"]["hook"]
            assert stats["delivered_notifications"] == 1


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        pytest.param({"url": "ftp://example.org/x"}, "sinks.hook.url", "http", id="bad-scheme"),
        pytest.param({"url": "http:///nohost"}, "sinks.hook.url", "host", id="no-host"),
        pytest.param({}, "sinks.hook.url", "required", id="missing-url"),
        pytest.param(
            {"url": "http://127.0.0.1/", "backoff_initial_seconds": 5, "backoff_max_seconds": 1},
            "sinks.hook.backoff_max_seconds",
            "at least",
            id="backoff-max-below-initial",
        ),
        pytest.param({"url": "http://127.0.0.1/", "timeout": 5}, "sinks.hook.timeout", "unknown", id="unit-less"),
    ],
)
def test_webhook_options_are_validated_at_load(options: dict[str, Any], path: str, message: str) -> None:
    """A bad URL, a missing URL or inverted backoffs fail at load, naming the key."""
    config = {"sources": {"app": {"type": "in_process"}}, "sinks": {"hook": {"type": "webhook", "inputs": ["app"]}}}
    config["sinks"]["hook"].update(options)  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        load_pipeline_config(config)

    assert caught.value.path == path
    assert message in caught.value.reason


def test_webhook_headers_stay_out_of_the_options_repr() -> None:
    """The headers option (which may hold a token) is not shown in the options' repr."""
    options = WebhookNotifier.Options(url="http://127.0.0.1/", headers={"Authorization": "Bearer tok-123"})

    assert "tok-123" not in repr(options)
