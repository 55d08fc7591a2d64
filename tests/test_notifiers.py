"""Tests for runwatch.sinks.notifiers: the pure policy and outbox, then the three notifier sinks.

The webhook is tested against a real HTTP server on 127.0.0.1 (stdlib
``http.server`` in a thread). Sinks are driven directly (``write``, ``tick``,
``flush``, ``aclose``) or through a real :class:`Pipeline`; every await that
could hang is guarded.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest

from runwatch.events import AlertEvent, LogEvent, Metric
from runwatch.exceptions import ConfigError
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.config import load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.sinks.notifiers import (
    AlertGroup,
    CallbackNotifier,
    Delivery,
    LogNotifier,
    NotificationPolicy,
    Outbox,
    WebhookNotifier,
    severity_level,
)

TIMEOUT = 10
T0 = 1_700_000_000.0
WAIT = 10.0  # group_wait_seconds of the policy tests


def alert(state: str, at: float = 0.0, *, rule: str = "loss_nan", run_id: str = "r1", **fields: Any) -> AlertEvent:
    """An alert event ``at`` seconds after T0."""
    return AlertEvent(run_id, T0 + at, rule, state, **fields)


def policy(**options: Any) -> NotificationPolicy:
    """A policy with a 10 s window and a 100 s repeat interval unless told otherwise."""
    options.setdefault("group_wait_seconds", WAIT)
    options.setdefault("repeat_interval_seconds", 100.0)
    return NotificationPolicy(**options)


def feed(p: NotificationPolicy, *events: tuple[float, AlertEvent]) -> None:
    """Observe each ``(seconds after T0, event)``."""
    for at, event in events:
        p.observe(event, T0 + at)


def states(notifications: list[Any]) -> list[tuple[str, list[str]]]:
    """(status, [alert states]) of each notification."""
    return [(n.status, [a.state for a in n.alerts]) for n in notifications]


# -- NotificationPolicy: grouping ------------------------------------------------------------


def test_first_firing_waits_for_the_window_then_is_notified_once() -> None:
    """A firing alert is notified when its group's window closes, and only then."""
    p = policy()
    feed(p, (0, alert("firing", value=float("nan"))))

    assert p.due(T0 + WAIT - 0.1) == []
    [notification] = p.due(T0 + WAIT)
    assert p.due(T0 + WAIT + 1) == []
    payload = notification.to_dict()
    assert payload["status"] == "firing"
    assert payload["group"] == {"rule": "loss_nan", "run_id": "r1", "labels": {}}
    assert payload["alerts"][0]["state"] == "firing"
    assert payload["alerts"][0]["value"] is None  # NaN is not JSON
    orjson.dumps(payload)


def test_changes_within_a_window_are_aggregated_into_one_notification() -> None:
    """Alerts of one group that change within the window go out together, firing ones first."""
    p = policy(group_by_labels=[])
    feed(
        p,
        (0, alert("firing", labels={"metric": "loss"})),
        (WAIT - 1, alert("firing", labels={"metric": "acc"}, severity="critical")),
    )

    [notification] = p.due(T0 + WAIT)
    assert [dict(a.labels) for a in notification.alerts] == [{"metric": "loss"}, {"metric": "acc"}]
    assert notification.severity == "critical"
    assert notification.group == AlertGroup("loss_nan", "r1", ())


@pytest.mark.parametrize(
    ("group_by_labels", "expected_groups"),
    [
        pytest.param(["*"], 2, id="all-labels"),
        pytest.param(["team"], 1, id="chosen-label"),
        pytest.param([], 1, id="rule-and-run-only"),
    ],
)
def test_group_by_labels_decides_which_alerts_share_a_notification(
    group_by_labels: list[str], expected_groups: int
) -> None:
    """Labels named in group_by_labels (all by default) split groups; others do not."""
    p = policy(group_by_labels=group_by_labels)
    feed(
        p,
        (0, alert("firing", labels={"team": "a", "metric": "loss"})),
        (0, alert("firing", labels={"team": "a", "metric": "acc"})),
    )

    assert len(p.due(T0 + WAIT)) == expected_groups


def test_rules_and_runs_are_grouped_apart() -> None:
    """Different rules, or the same rule on different runs, are notified separately."""
    p = policy()
    feed(p, (0, alert("firing")), (0, alert("firing", run_id="r2")), (0, alert("firing", rule="stalled")))

    groups = [n.group for n in p.due(T0 + WAIT)]
    assert groups == [
        AlertGroup("loss_nan", "r1", ()),
        AlertGroup("loss_nan", "r2", ()),
        AlertGroup("stalled", "r1", ()),
    ]


def test_a_window_opens_at_the_first_change_and_later_changes_do_not_extend_it() -> None:
    """A change late in the window joins it; the window still closes group_wait after the first."""
    p = policy(group_by_labels=[])
    feed(p, (0, alert("firing", labels={"m": "a"})), (WAIT - 0.5, alert("firing", labels={"m": "b"})))

    assert len(p.due(T0 + WAIT)[0].alerts) == 2


def test_a_group_is_not_notified_twice_within_group_wait() -> None:
    """A change right after a notification waits for a new full window."""
    p = policy(group_by_labels=[])
    feed(p, (0, alert("firing", labels={"m": "a"})))
    assert len(p.due(T0 + WAIT)) == 1
    feed(p, (WAIT + 0.1, alert("firing", labels={"m": "b"})))

    assert p.due(T0 + 2 * WAIT) == []
    assert len(p.due(T0 + 2 * WAIT + 0.1)) == 1


def test_group_wait_zero_notifies_at_the_next_due_call() -> None:
    """With group_wait_seconds = 0 a change is due at once."""
    p = policy(group_wait_seconds=0.0)
    feed(p, (0, alert("firing")))

    assert len(p.due(T0)) == 1


# -- NotificationPolicy: de-duplication, resolution, repeats --------------------------------------


def test_the_same_state_is_not_notified_twice() -> None:
    """Repeated firing events and repeated resolved events are notified once each."""
    p = policy()
    feed(p, (0, alert("firing")), (1, alert("firing")))
    assert states(p.due(T0 + WAIT)) == [("firing", ["firing"])]
    feed(p, (11, alert("firing")), (12, alert("resolved")), (13, alert("resolved")))

    assert states(p.due(T0 + 30)) == [("resolved", ["resolved"])]
    feed(p, (31, alert("resolved")))
    assert p.due(T0 + 60) == []
    assert p.statistics().groups == 0


def test_a_resolution_is_not_sent_without_send_resolved_and_a_new_firing_is() -> None:
    """send_resolved=False hides resolutions but still ends the alert, so the next firing is news."""
    p = policy(send_resolved=False)
    feed(p, (0, alert("firing")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("resolved")))
    assert p.due(T0 + 40) == []
    feed(p, (50, alert("firing")))

    assert states(p.due(T0 + 60)) == [("firing", ["firing"])]


def test_an_alert_that_fires_and_resolves_within_the_window_is_not_notified() -> None:
    """Firing then resolving before the window closes sends nothing at all."""
    p = policy()
    feed(p, (0, alert("firing")), (1, alert("resolved")))

    assert p.due(T0 + WAIT) == []
    assert p.statistics() == (0, 0, 0)


@pytest.mark.parametrize(
    "state",
    [pytest.param("pending", id="pending"), pytest.param("inactive", id="inactive-without-firing")],
)
def test_pending_and_inactive_alone_are_never_notified(state: str) -> None:
    """Pending, and inactive for an alert that never fired, produce nothing."""
    p = policy()
    feed(p, (0, alert(state)))

    assert p.due(T0 + 1000) == []


def test_inactive_ends_a_firing_alert_like_resolved() -> None:
    """An inactive event after a notified firing is notified as a resolution."""
    p = policy()
    feed(p, (0, alert("firing")), (5, alert("pending")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("inactive")))

    assert states(p.due(T0 + 30)) == [("resolved", ["resolved"])]


def test_a_still_firing_alert_is_renotified_after_the_repeat_interval() -> None:
    """repeat_interval_seconds after its last notification, a firing alert is sent again, with its latest value."""
    p = policy(repeat_interval_seconds=100.0)
    feed(p, (0, alert("firing", value=1.0)))
    p.due(T0 + WAIT)
    feed(p, (50, alert("firing", value=2.0)))

    assert p.due(T0 + WAIT + 99) == []
    [repeat] = p.due(T0 + WAIT + 100)
    assert [a.value for a in repeat.alerts] == [2.0]
    assert p.due(T0 + WAIT + 150) == []
    assert len(p.due(T0 + WAIT + 200)) == 1


def test_next_due_at_names_the_window_close_and_then_the_repeat() -> None:
    """next_due_at is the earliest time due() may return something."""
    p = policy(repeat_interval_seconds=100.0)
    assert p.next_due_at() is None
    feed(p, (0, alert("firing")))
    assert p.next_due_at() == T0 + WAIT
    p.due(T0 + WAIT)

    assert p.next_due_at() == T0 + WAIT + 100


# -- NotificationPolicy: flapping -----------------------------------------------------------------


def test_flapping_within_the_window_produces_one_notification() -> None:
    """firing/resolved/firing/resolved/firing inside one window is notified once, as firing."""
    p = policy()
    flaps = ["firing", "resolved", "firing", "resolved", "firing"]
    feed(p, *((i, alert(state)) for i, state in enumerate(flaps)))

    assert states(p.due(T0 + WAIT)) == [("firing", ["firing"])]
    assert p.due(T0 + 99) == []


def test_flapping_after_a_notification_sends_nothing_when_the_net_state_is_unchanged() -> None:
    """Resolving and firing again within one window after a firing notification is no news."""
    p = policy()
    feed(p, (0, alert("firing")))
    p.due(T0 + WAIT)
    feed(p, (11, alert("resolved")), (12, alert("firing")), (13, alert("resolved")), (14, alert("firing")))

    assert p.due(T0 + 30) == []


def test_a_rule_flapping_for_a_long_time_gets_at_most_one_notification_per_window() -> None:
    """Flapping every second for 200 s never notifies a group twice within group_wait_seconds."""
    p = policy()
    sent_at: list[float] = []
    for second in range(200):
        p.observe(alert("firing" if second % 2 == 0 else "resolved", second), T0 + second)
        for tick in (second, second + 0.5):
            sent_at.extend(n.timestamp for n in p.due(T0 + tick))

    assert 1 <= len(sent_at) <= 200 / WAIT + 1
    assert all(later - earlier >= WAIT for earlier, later in zip(sent_at, sent_at[1:], strict=False))


# -- NotificationPolicy: shutdown, validation, severities -----------------------------------------


def test_drain_sends_pending_changes_now_but_no_repeats() -> None:
    """drain() cuts open windows short (for shutdown) and does not repeat unchanged alerts."""
    p = policy()
    feed(p, (0, alert("firing")), (0, alert("firing", rule="other")))
    p.due(T0 + WAIT)
    feed(p, (20, alert("resolved")))

    assert states(p.drain(T0 + 21)) == [("resolved", ["resolved"])]
    assert p.drain(T0 + 10_000) == []


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"group_wait_seconds": -1.0}, id="negative-wait"),
        pytest.param({"repeat_interval_seconds": 0.0}, id="zero-repeat"),
        pytest.param({"group_wait_seconds": math.nan}, id="nan-wait"),
    ],
)
def test_invalid_policy_settings_are_refused(options: dict[str, float]) -> None:
    """A negative or NaN wait, or a non-positive repeat interval, is a ValueError."""
    with pytest.raises(ValueError):
        NotificationPolicy(**options)


@pytest.mark.parametrize(
    ("severity", "level"),
    [
        pytest.param("critical", logging.CRITICAL, id="critical"),
        pytest.param("ERROR", logging.ERROR, id="error-any-case"),
        pytest.param("warning", logging.WARNING, id="warning"),
        pytest.param("info", logging.INFO, id="info"),
        pytest.param("sev-7", logging.WARNING, id="unknown"),
    ],
)
def test_severity_names_map_to_logging_levels(severity: str, level: int) -> None:
    """Severities map to logging levels case-insensitively; unknown ones to WARNING."""
    assert severity_level(severity) == level


def test_a_resolution_logs_at_info_whatever_its_severity() -> None:
    """A resolved notification's level is INFO even for a critical alert."""
    p = policy(group_wait_seconds=0.0)
    feed(p, (0, alert("firing", severity="critical")))
    assert p.due(T0)[0].level == logging.CRITICAL
    feed(p, (1, alert("resolved", severity="critical")))

    assert p.due(T0 + 1)[0].level == logging.INFO


# -- Outbox ------------------------------------------------------------------------------------------


def delivery(group: str = "g") -> Delivery:
    """A delivery for a group named after a rule."""
    return Delivery(AlertGroup(group, "r1", ()), b"{}")


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [
        pytest.param(1, 0.5, id="first"),
        pytest.param(2, 1.0, id="doubles"),
        pytest.param(4, 4.0, id="doubles-again"),
        pytest.param(7, 10.0, id="capped"),
        pytest.param(500, 10.0, id="huge-attempts-capped"),
    ],
)
def test_backoff_doubles_up_to_its_cap(attempts: int, seconds: float) -> None:
    """The wait after the n-th failure is initial × 2^(n-1), capped at backoff_max_seconds."""
    outbox = Outbox(backoff_initial_seconds=0.5, backoff_max_seconds=10.0)

    assert outbox.backoff_seconds(attempts) == seconds


def test_a_failed_delivery_is_retried_after_its_backoff_then_dropped_when_retries_run_out() -> None:
    """Each retryable failure reschedules; past max_retries the delivery is dropped as retries_exhausted."""
    outbox = Outbox(max_retries=2, backoff_initial_seconds=1.0, backoff_max_seconds=60.0)
    outbox.put(delivery(), 0.0)
    [d] = outbox.take_due(0.0, 10)
    assert outbox.failed(d, 0.0, retryable=True) is None

    assert outbox.take_due(0.9, 10) == []
    assert outbox.take_due(1.0, 10) == [d]
    assert outbox.failed(d, 1.0, retryable=True) is None
    assert outbox.take_due(3.0, 10) == [d]
    assert outbox.failed(d, 3.0, retryable=True) == "retries_exhausted"
    assert len(outbox) == 0


def test_a_non_retryable_failure_is_dropped_at_once_with_its_reason() -> None:
    """retryable=False drops the delivery with the reason given."""
    outbox = Outbox()
    outbox.put(delivery(), 0.0)
    [d] = outbox.take_due(0.0, 1)

    assert outbox.failed(d, 0.0, retryable=False, reason="rejected") == "rejected"
    assert len(outbox) == 0


def test_deliveries_of_one_group_leave_in_order_and_other_groups_are_not_held_up() -> None:
    """A group's second delivery waits for its first; another group's delivery goes meanwhile."""
    outbox = Outbox(backoff_initial_seconds=5.0)
    first, second, other = delivery("a"), delivery("a"), delivery("b")
    for d in (first, second, other):
        outbox.put(d, 0.0)

    assert outbox.take_due(0.0, 10) == [first, other]
    outbox.failed(first, 0.0, retryable=True)
    outbox.succeeded(other)
    assert outbox.take_due(1.0, 10) == []
    assert outbox.take_due(5.0, 10) == [first]
    outbox.succeeded(first)
    assert outbox.take_due(5.0, 10) == [second]


def test_take_due_respects_its_limit() -> None:
    """At most ``limit`` deliveries are put in flight at once."""
    outbox = Outbox()
    for name in "abcde":
        outbox.put(delivery(name), 0.0)

    assert len(outbox.take_due(0.0, 3)) == 3
    assert outbox.in_flight == 3
    assert len(outbox.take_due(0.0, 3)) == 2


def test_a_full_outbox_drops_its_oldest_waiting_delivery() -> None:
    """When full, the oldest delivery not in flight makes room; if all are in flight the new one is dropped."""
    outbox = Outbox(max_notifications=2)
    a, b, c, d = delivery("a"), delivery("b"), delivery("c"), delivery("d")
    outbox.put(a, 0.0)
    outbox.put(b, 0.0)
    outbox.take_due(0.0, 1)  # a is in flight

    assert outbox.put(c, 0.0) is b
    outbox.take_due(0.0, 5)  # c too
    assert outbox.put(d, 0.0) is d
    assert len(outbox) == 2


# -- LogNotifier -------------------------------------------------------------------------------------


def context(tmp_path: Path | None = None) -> ComponentContext:
    """A component context whose files stay in tmp_path."""
    if tmp_path is None:
        return ComponentContext()
    return ComponentContext(db_path=str(tmp_path / "db.sqlite"), data_dir=tmp_path / "data")


async def test_log_notifier_writes_one_line_per_notification_at_the_severity_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Firing logs at the severity's level, resolution at INFO, other events are ignored."""
    notifier = LogNotifier("log", LogNotifier.Options(group_wait_seconds=0.0), context())
    caplog.set_level(logging.DEBUG, logger="runwatch.alerts")
    firing = AlertEvent("r1", T0, "loss_nan", "firing", severity="critical", value=float("nan"))
    await notifier.write(
        [Metric("r1", T0, {"loss": 1.0}), firing, LogEvent("r1", T0, "x"), firing._replace(labels={"m": "x"})]
    )
    await notifier.flush()
    await notifier.write([AlertEvent("r1", T0 + 1, "loss_nan", "resolved", severity="critical")])
    await notifier.flush()
    await notifier.aclose()

    records = [r for r in caplog.records if r.name == "runwatch.alerts"]
    assert [(r.levelno, r.getMessage().split(" on run")[0]) for r in records] == [
        (logging.CRITICAL, "runwatch alert FIRING loss_nan"),
        (logging.CRITICAL, "runwatch alert FIRING loss_nan{m=x}"),
        (logging.INFO, "runwatch alert RESOLVED loss_nan"),
    ]
    assert notifier.statistics()["received_alerts"] == 3
    assert notifier.statistics()["sent_notifications"] == 3


# -- CallbackNotifier ----------------------------------------------------------------------------------

RECEIVED: list[dict[str, Any]] = []


def record_notification(payload: dict[str, Any]) -> None:
    """The callback used by config tests (``target = "test_notifiers:record_notification"``)."""
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


# -- WebhookNotifier against a real local HTTP server ---------------------------------------------------


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
