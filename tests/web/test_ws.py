"""Tests for the live websocket /ws (runwatch.web.ws) and its hub (runwatch.sinks.websocket).

The pure parts (SubscriptionFilter, Subscriber) are tested without a server;
the rest against a real monitor on loopback with the websockets client.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from runwatch.config import MonitorConfig
from runwatch.events import EVENT_CLASSES, LogEvent, Metric, StatePatch
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.config import default_pipeline_config
from runwatch.sinks.websocket import (
    Subscriber,
    SubscriptionFilter,
    WebsocketHub,
    compile_patterns,
)
from runwatch.wire import event_to_wire
from runwatch.wire.messages import MAX_GLOBS, MAX_PATTERN_CHARS

# How soon a live event must reach a subscriber.
PROMPT = 2
# Guards every other network wait; nothing here legitimately takes this long.
TIMEOUT = 10

Event = dict[str, Any]


# -- pure: SubscriptionFilter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param([], "subscribe must be an object", id="list"),
        pytest.param("runs", "subscribe must be an object", id="string"),
        pytest.param(5, "subscribe must be an object", id="number"),
        pytest.param({"colour": ["red"]}, "subscribe.colour: unknown field", id="unknown-field"),
        pytest.param({"runs": 5}, "subscribe.runs: must be a list", id="runs-number"),
        pytest.param({"runs": {"a": 1}}, "subscribe.runs: must be a list", id="runs-object"),
        pytest.param({"runs": [""]}, "subscribe.runs: must be a list of non-empty strings", id="runs-empty-item"),
        pytest.param({"kinds": [1]}, "subscribe.kinds: must be a list", id="kinds-number-item"),
        pytest.param({"metrics": [None]}, "subscribe.metrics: must be a list", id="metrics-null-item"),
        pytest.param({"kinds": ["bogus"]}, "subscribe.kinds: unknown kind 'bogus'", id="unknown-kind"),
        pytest.param({"kinds": ["receipt"]}, "subscribe.kinds: unknown kind 'receipt'", id="internal-kind"),
        pytest.param({"runs": [f"r{i}" for i in range(1001)]}, "subscribe.runs: at most 1000", id="too-many"),
        pytest.param({"format": "rows"}, "subscribe.format: must be one of events, columns", id="unknown-format"),
        pytest.param({"format": 1}, "subscribe.format: must be one of events, columns", id="format-number"),
        pytest.param(
            {"runs": [f"r{i}-*" for i in range(MAX_GLOBS + 1)]},
            f"subscribe.runs: at most {MAX_GLOBS} glob patterns (with *, ? or [), got {MAX_GLOBS + 1}",
            id="too-many-globs",
        ),
        pytest.param(
            {"metrics": ["loss", "x" * (MAX_PATTERN_CHARS + 1)]},
            f"subscribe.metrics[1]: at most {MAX_PATTERN_CHARS} characters, got {MAX_PATTERN_CHARS + 1}",
            id="pattern-too-long",
        ),
        pytest.param({"format": [[[[[[]]]]]] * 3}, "must be one of events, columns; got list", id="format-deep"),
    ],
)
def test_filter_parse_errors_name_the_field(data: Any, message: str) -> None:
    """SubscriptionFilter.parse refuses bad input with a ValueError naming the field."""
    with pytest.raises(ValueError) as caught:
        SubscriptionFilter.parse(data)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(None, SubscriptionFilter(), id="none"),
        pytest.param({}, SubscriptionFilter(), id="empty"),
        pytest.param({"runs": [], "kinds": None}, SubscriptionFilter(), id="empty-lists"),
        pytest.param({"runs": "b,a,,b"}, SubscriptionFilter(runs=("a", "b")), id="comma-string"),
        pytest.param(
            {"kinds": ["metric", "log", "metric"], "metrics": ["train/*", "loss"]},
            SubscriptionFilter(kinds=("log", "metric"), metrics=("loss", "train/*")),
            id="sorted-unique",
        ),
        pytest.param(
            {"kinds": list(EVENT_CLASSES)}, SubscriptionFilter(kinds=tuple(sorted(EVENT_CLASSES))), id="every-kind"
        ),
    ],
)
def test_filter_parse_normalises(data: Any, expected: SubscriptionFilter) -> None:
    """Equal subscriptions parse to equal (sorted, de-duplicated) filters, so the hub can group them."""
    parsed = SubscriptionFilter.parse(data)
    assert parsed == expected
    assert parsed.as_dict() == {
        "runs": list(expected.runs),
        "kinds": list(expected.kinds),
        "metrics": list(expected.metrics),
        "format": expected.format,
    }


def test_filter_takes_up_to_the_limits() -> None:
    """A filter at every limit is taken: 1,000 entries of which 100 are globs, 200 characters each."""
    runs = [f"r{i}-*".ljust(MAX_PATTERN_CHARS, "x") for i in range(MAX_GLOBS)]
    runs += [f"exact-{i}".ljust(MAX_PATTERN_CHARS, "x") for i in range(1000 - MAX_GLOBS)]
    subscription = SubscriptionFilter.parse({"runs": runs})
    assert len(subscription.runs) == 1000
    assert subscription.count([Metric(runs[-1], 1.0, {"x": 1.0}), Metric("other", 1.0, {"x": 1.0})]) == 1


def test_equal_filters_share_one_compiled_pattern_set() -> None:
    """Patterns are compiled once per distinct filter: equal filters (one per subscriber) share the result."""
    first = SubscriptionFilter.parse({"runs": ["exp-*", "b"], "metrics": ["train/*"]})
    second = SubscriptionFilter.parse({"runs": ["b", "exp-*"], "metrics": ["train/*"]})
    assert first == second
    assert compile_patterns(first.runs) is compile_patterns(second.runs)
    assert first.count(_events()) == second.count(_events())


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        pytest.param(("exp-*",), "exp-1", True, id="glob"),
        pytest.param(("exp-*",), "exp-*", True, id="glob-literally"),
        pytest.param(("exp-?",), "exp-12", False, id="question-mark-one-char"),
        pytest.param(("run[12]",), "run2", True, id="class"),
        pytest.param(("run[12]",), "run3", False, id="class-miss"),
        pytest.param(("a.b",), "axb", False, id="dot-is-literal"),
        pytest.param(("a", "b*"), "b", True, id="exact-and-glob"),
        pytest.param(("loss",), "loss/x", False, id="exact-whole-name"),
    ],
)
def test_compiled_patterns_match_like_fnmatch(patterns: tuple[str, ...], name: str, matches: bool) -> None:
    """A compiled pattern set answers as fnmatch (or equality) would, and the same again when asked twice."""
    compiled = compile_patterns(patterns)
    assert compiled.matches(name) is matches
    assert compiled.matches(name) is matches
    assert compiled.matching((name, "zzz-no")) == ((name,) if matches else ())


def _events() -> list[Any]:
    return [
        Metric("r1", 1.0, {"train/loss": 1.0, "val/loss": 2.0}),
        Metric("r1", 2.0, {"val/loss": 3.0}),
        LogEvent("r1", 3.0, "note", "info", {}),
        Metric("r2", 4.0, {"train/loss": 4.0}),
        StatePatch("r2", 5.0, {"a": 1}),
    ]


def test_filter_select_everything_by_default() -> None:
    """An empty filter lets every event through unchanged."""
    events = _events()
    wire = [event_to_wire(e) for e in events]
    assert SubscriptionFilter().select(events, wire) == wire


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        pytest.param(SubscriptionFilter(runs=("r2",)), [(4.0, {"train/loss": 4.0}), (5.0, None)], id="run"),
        pytest.param(SubscriptionFilter(runs=("r*",), kinds=("state",)), [(5.0, None)], id="run-glob-and-kind"),
        pytest.param(SubscriptionFilter(kinds=("log",)), [(3.0, None)], id="kind"),
        pytest.param(
            SubscriptionFilter(metrics=("train/*",)),
            [(1.0, {"train/loss": 1.0}), (3.0, None), (4.0, {"train/loss": 4.0}), (5.0, None)],
            id="metric-glob-narrows-and-skips",
        ),
        pytest.param(
            SubscriptionFilter(runs=("r1",), kinds=("metric",), metrics=("val/loss",)),
            [(1.0, {"val/loss": 2.0}), (2.0, {"val/loss": 3.0})],
            id="all-three",
        ),
    ],
)
def test_filter_select_narrows(subscription: SubscriptionFilter, expected: list[tuple[float, Any]]) -> None:
    """Runs, kinds and metric globs select events; metric values are narrowed to the matching names."""
    events = _events()
    wire = [event_to_wire(e) for e in events]
    selected = subscription.select(events, wire)
    assert [(w["timestamp"], w.get("values") if w["kind"] == "metric" else None) for w in selected] == expected
    assert wire == [event_to_wire(e) for e in events], "select must not modify the shared wire forms"


def rows_of_columns(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The wire forms a ``columns`` message stands for, in timestamp order."""
    assert message["type"] == "columns"
    rows = list(message["events"])
    for block in message["metrics"]:
        columns = block["values"]
        assert len(block["steps"]) == len(block["timestamps"]) == len(columns[0])
        for index, (step, timestamp) in enumerate(zip(block["steps"], block["timestamps"], strict=True)):
            values = {name: column[index] for name, column in zip(block["names"], columns, strict=True)}
            rows.append(
                {"kind": "metric", "run_id": block["run_id"], "timestamp": timestamp, "values": values}
                | {"step": step, "tags": block["tags"]}
            )
    return sorted(rows, key=lambda row: row["timestamp"])


@pytest.mark.parametrize(
    "subscription",
    [
        SubscriptionFilter(),
        SubscriptionFilter(runs=("r2",)),
        SubscriptionFilter(kinds=("log",)),
        SubscriptionFilter(metrics=("train/*",)),
        SubscriptionFilter(runs=("r1",), kinds=("metric",), metrics=("val/loss",)),
    ],
    ids=["everything", "run", "kind", "metric-glob", "all-three"],
)
def test_filter_columns_carry_what_select_carries(subscription: SubscriptionFilter) -> None:
    """The columns form of a batch holds exactly the events and values the events form holds."""
    events = _events()
    wire = [event_to_wire(e) for e in events]
    message, count = subscription.columns(events)
    assert rows_of_columns(message) == subscription.select(events, wire)
    assert count == subscription.count(events) == len(subscription.select(events, wire))


def test_filter_columns_group_by_run_names_and_tags_and_encode_non_finite_values() -> None:
    """Metrics share a block only with the same run, names and tags; NaN is null and ±Inf a string."""
    events = [
        Metric("r1", 1.0, {"a": 1.0, "b": math.nan}, step=1),
        Metric("r1", 2.0, {"a": 2.0, "b": math.inf}, step=2, tags={"split": "train"}),
        Metric("r1", 3.0, {"a": 3.0, "b": -math.inf}, step=3),
        Metric("r1", 4.0, {"b": 4.0, "a": 4.0}, step=4),
        Metric("r2", 5.0, {"a": 5.0, "b": 5.0}),
    ]
    message, count = SubscriptionFilter(format="columns").columns(events)
    assert count == 5 and message["events"] == []
    assert [(b["run_id"], b["names"], b["tags"], b["steps"]) for b in message["metrics"]] == [
        ("r1", ["a", "b"], None, [1, 3]),
        ("r1", ["a", "b"], {"split": "train"}, [2]),
        ("r1", ["b", "a"], None, [4]),
        ("r2", ["a", "b"], None, [None]),
    ]
    assert message["metrics"][0]["values"] == [[1.0, 3.0], [None, "-Infinity"]]
    assert message["metrics"][1]["values"] == [[2.0], ["Infinity"]]
    assert rows_of_columns(message) == [event_to_wire(e) for e in events]


# -- pure: Subscriber -------------------------------------------------------------------------------


async def test_subscriber_delivers_in_order() -> None:
    """Queued messages come out in the order offered."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=10, max_lagged_events=100)
    for n in range(3):
        subscriber.offer(f"m{n}", 1)
    assert subscriber.queued_messages == 3
    assert [await subscriber.next_message() for _ in range(3)] == ["m0", "m1", "m2"]
    assert subscriber.queued_messages == 0
    assert subscriber.sent_messages == 3


async def test_subscriber_drops_oldest_and_reports_lag_exactly() -> None:
    """Past max_messages the oldest messages are dropped; a lagged notice with the exact event count comes first."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=3, max_lagged_events=1000)
    for n in range(7):
        subscriber.offer(f"m{n}", n + 1)  # m0..m3 (1+2+3+4 = 10 events) are dropped
    assert subscriber.queued_messages == 3
    assert subscriber.dropped_events == 10
    assert json.loads(await subscriber.next_message()) == {"type": "lagged", "dropped": 10}
    assert [await subscriber.next_message() for _ in range(3)] == ["m4", "m5", "m6"]
    subscriber.offer("m7", 1)
    subscriber.offer("m8", 1)
    subscriber.offer("m9", 1)
    subscriber.offer("m10", 5)  # drops m7 (1 event)
    assert json.loads(await subscriber.next_message()) == {"type": "lagged", "dropped": 1}
    assert await subscriber.next_message() == "m8"
    assert subscriber.dropped_events == 11
    assert subscriber.closed_reason is None


async def test_a_subscriber_overflowing_with_big_messages_counts_as_stalled_until_it_reads() -> None:
    """Messages over half the byte bound never leave the queue full, yet overflow without a read marks it stalled."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=256, max_lagged_events=10_000, max_bytes=2048)
    subscriber.offer("a" * 1500, 10)
    assert not subscriber.stalled
    subscriber.offer("b" * 1500, 10)  # drops the first: one message left, under the byte bound
    assert subscriber.queued_messages == 1 and subscriber.dropped_events == 10
    assert subscriber.stalled
    assert json.loads(await subscriber.next_message()) == {"type": "lagged", "dropped": 10}
    assert await subscriber.next_message() == "b" * 1500
    assert not subscriber.stalled


@pytest.mark.parametrize("format", [pytest.param("events", id="events"), pytest.param("columns", id="columns")])
async def test_an_unencodable_event_is_dropped_alone_and_its_window_still_goes_out(format: str) -> None:
    """A metric whose name cannot be serialised is counted and left out; the other events of its window arrive."""
    hub = WebsocketHub("live", WebsocketHub.Options(), ComponentContext())
    everything = hub.subscribe(SubscriptionFilter(format=format))
    one_run = hub.subscribe(SubscriptionFilter(runs=("good",), format=format))
    window = [
        Metric("good", 1.0, {"loss": 0.5}),
        Metric("good", 2.0, {"frame_\udcff": 1.0}),  # metric names are not checked at the call
        Metric("bad\udcff", 2.5, {"loss": 0.1}),  # nor their run ids
        LogEvent("good", 3.0, "marker", data={"n": 1}),
    ]
    await hub.write(window)
    hub.publish()
    assert hub.statistics()["unencodable_events"] == 2
    for subscriber in (everything, one_run):
        message = json.loads(await subscriber.next_message())
        rows = message["events"] if format == "events" else rows_of_columns(message)
        assert rows == [event_to_wire(window[0]), event_to_wire(window[3])]
    await hub.write([Metric("good", 4.0, {"loss": 0.25})])  # the next window is not affected
    hub.publish()
    message = json.loads(await everything.next_message())
    assert (message["events"] if format == "events" else rows_of_columns(message))[0]["timestamp"] == 4.0


async def drain(subscriber: Subscriber) -> list[str]:
    """Every message queued for ``subscriber`` now, in order."""
    texts = []
    while subscriber.queued_messages:
        texts.append(await subscriber.next_message())
    return texts


def rows_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The wire forms a ``batch`` or ``columns`` message carries."""
    return message["events"] if message["type"] == "batch" else rows_of_columns(message)


def wide_metrics(count: int, run_id: str = "big") -> list[Metric]:
    """``count`` metric events of 20 values each (about 600 characters of JSON apiece)."""
    return [Metric(run_id, float(i), {f"value_{j:02d}": i + j / 7 for j in range(20)}, step=i) for i in range(count)]


@pytest.mark.parametrize("format", [pytest.param("events", id="events"), pytest.param("columns", id="columns")])
async def test_a_window_larger_than_max_message_bytes_goes_out_as_several_bounded_messages(format: str) -> None:
    """A publication window past the message bound is cut into messages within it that carry every event in order."""
    hub = WebsocketHub("live", WebsocketHub.Options(max_message_bytes=8192), ComponentContext())
    subscriber = hub.subscribe(SubscriptionFilter(format=format))
    window = wide_metrics(200)  # about 120,000 characters as one message
    await hub.write(window)
    hub.publish()
    texts = await drain(subscriber)
    assert len(texts) > 10
    assert all(len(text) <= 8192 for text in texts)
    assert [row for text in texts for row in rows_of(json.loads(text))] == [event_to_wire(e) for e in window]
    assert subscriber.dropped_events == 0
    assert hub.statistics()["published_events"] == 200


async def test_a_large_bus_window_is_cut_only_between_bus_batches() -> None:
    """Each part of a split window holds whole bus batches and carries the cursor of its last one."""
    hub = WebsocketHub("live", WebsocketHub.Options(max_message_bytes=8192), ComponentContext())
    subscriber = hub.subscribe(SubscriptionFilter())
    batches = {seq: wide_metrics(30, run_id=f"bus-{seq}") for seq in range(1, 9)}  # ~18,000 characters each
    for seq, events in batches.items():
        hub.feed(events, seq)
    hub.publish()
    messages = [json.loads(text) for text in await drain(subscriber)]
    assert len(messages) == 8  # no two batches fit in one message, and no batch is cut
    for seq, message in enumerate(messages, start=1):
        assert message["cursor"] == seq
        assert message["events"] == [event_to_wire(e) for e in batches[seq]]


async def test_a_large_replay_goes_out_as_bounded_messages() -> None:
    """``?replay=N`` of more events than one message may hold arrives as several bounded messages, in order."""
    hub = WebsocketHub("live", WebsocketHub.Options(max_message_bytes=8192), ComponentContext())
    kept = wide_metrics(150)
    await hub.write(kept)  # nobody subscribed yet: kept for replay
    subscriber = hub.subscribe(SubscriptionFilter())
    assert hub.replay(subscriber, 100) == 100
    texts = await drain(subscriber)
    assert len(texts) > 1 and all(len(text) <= 8192 for text in texts)
    assert [row for text in texts for row in rows_of(json.loads(text))] == [event_to_wire(e) for e in kept[50:]]


async def test_subscriber_waits_for_an_offer() -> None:
    """next_message blocks on an empty queue and wakes when a message is offered."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=2, max_lagged_events=10)
    received: list[str] = []

    async def receive() -> None:
        received.append(await subscriber.next_message())

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            assert received == []
            subscriber.offer("hello", 1)
    assert received == ["hello"]


async def test_subscriber_is_closed_past_max_lagged_events() -> None:
    """Once more than max_lagged_events were dropped the subscriber closes, clears its queue and ends its stream."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=1, max_lagged_events=25)
    subscriber.offer("a", 10)
    subscriber.offer("b", 10)  # drops a: 10
    subscriber.offer("c", 10)  # drops b: 20
    assert subscriber.closed_reason is None
    subscriber.offer("d", 10)  # drops c: 30 > 25
    assert subscriber.closed_reason is not None and "too slow" in subscriber.closed_reason
    assert subscriber.queued_messages == 0
    subscriber.offer("e", 10)  # ignored once closed
    assert subscriber.dropped_events == 30 and subscriber.queued_messages == 0
    with pytest.raises(anyio.EndOfStream):
        await subscriber.next_message()


async def test_subscriber_close_wakes_a_waiting_reader() -> None:
    """Closing a subscriber ends a pending next_message with EndOfStream and keeps the first reason."""
    subscriber = Subscriber(SubscriptionFilter(), max_messages=2, max_lagged_events=10)
    ended = anyio.Event()

    async def receive() -> None:
        with pytest.raises(anyio.EndOfStream):
            await subscriber.next_message()
        ended.set()

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            subscriber.close("server shutting down")
            subscriber.close("second reason")
    assert ended.is_set()
    assert subscriber.closed_reason == "server shutting down"


# -- against a server ---------------------------------------------------------------------------------


def new_monitor(tmp: Path, live_options: dict[str, Any] | None = None) -> WebMonitor:
    """A monitor on a free loopback port, optionally with options for the websocket hub."""
    pipeline = default_pipeline_config()  # no alert rules: the tests check exactly the events they log
    if live_options:
        pipeline["sinks"]["live"].update(live_options)
    return WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, pipeline=pipeline))


def ws_url(monitor: WebMonitor, path: str = "/ws") -> str:
    """The websocket URL of ``path`` on the monitor's server."""
    return monitor.web_url.replace("http://", "ws://") + path


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """One monitor shared by this module's server tests (each uses its own run ids)."""
    running = new_monitor(tmp_path_factory.mktemp("ws"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def training(monitor: WebMonitor) -> Iterator[Callable[[str], None]]:
    """Start runs on the shared monitor; whatever run is still active is stopped afterwards."""

    def start(run_id: str) -> None:
        if monitor.current_run_id is not None:
            monitor.stop_training()
        monitor.start_training(run_id=run_id)

    yield start
    if monitor.current_run_id is not None:
        monitor.stop_training()


async def call(fn: Callable[[], Any]) -> Any:
    """Run a (possibly blocking) monitor call on a worker thread."""
    return await anyio.to_thread.run_sync(fn)


async def receive_json(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next message, parsed, within ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        message = json.loads(await ws.recv())
    assert isinstance(message, dict)
    return message


async def collect_until(ws: ClientConnection, done: Callable[[Event], bool], timeout: float = PROMPT) -> list[Event]:
    """Events of every batch received until one satisfies ``done`` (within ``timeout`` seconds)."""
    events: list[Event] = []
    with anyio.fail_after(timeout):
        while True:
            message = json.loads(await ws.recv())
            assert message["type"] == "batch", message
            events.extend(message["events"])
            if any(done(event) for event in message["events"]):
                return events


def is_log(event_type: str) -> Callable[[Event], bool]:
    """A predicate for the log event of the given type."""
    return lambda event: event["kind"] == "log" and event["type"] == event_type


async def test_a_window_past_a_clients_message_limit_still_reaches_it_whole(tmp_path: Path) -> None:
    """A window of megabytes (a late tick) reaches a client with the common 1 MiB message limit, all of it, in order."""
    monitor = await call(lambda: new_monitor(tmp_path, {"publish_interval_seconds": 5}))
    try:
        await call(lambda: monitor.start_training(run_id="wide"))
        values = {f"value_{j:02d}": j / 7 for j in range(60)}  # about 2 KB of JSON per event
        async with connect(ws_url(monitor, "/ws?runs=wide&kinds=metric"), open_timeout=TIMEOUT) as ws:
            assert ws.protocol.max_message_size == 1 << 20  # the websockets client's default
            await receive_json(ws)

            def log_and_flush() -> None:
                for i in range(1500):  # about 3 MB in one window: ticks are 5 s apart
                    monitor.update_metrics({"seq": float(i), **values})
                monitor.flush(timeout=TIMEOUT)

            await call(log_and_flush)
            seqs: list[int] = []
            with anyio.fail_after(TIMEOUT):
                while len(seqs) < 1500:
                    message = await receive_json(ws)
                    assert message["type"] == "batch", message
                    seqs.extend(int(event["values"]["seq"]) for event in message["events"])
            assert seqs == list(range(1500))
    finally:
        await call(monitor.close)


async def test_subscribe_by_query_parameters_echoes_the_filter(monitor: WebMonitor) -> None:
    """Query parameters set the filter; the subscribed reply echoes it normalised."""
    url = ws_url(monitor, "/ws?runs=q1&kinds=metric,log&metrics=train/*,loss")
    async with connect(url, open_timeout=TIMEOUT) as ws:
        assert await receive_json(ws) == {
            "type": "subscribed",
            "filter": {"runs": ["q1"], "kinds": ["log", "metric"], "metrics": ["loss", "train/*"], "format": "events"},
        }


async def test_no_filter_means_everything(monitor: WebMonitor) -> None:
    """Without query parameters the subscription is to everything."""
    async with connect(ws_url(monitor), open_timeout=TIMEOUT) as ws:
        assert await receive_json(ws) == {
            "type": "subscribed",
            "filter": {"runs": [], "kinds": [], "metrics": [], "format": "events"},
        }


async def test_invalid_query_parameters_refuse_the_handshake(monitor: WebMonitor) -> None:
    """A query filter that does not parse refuses the websocket with 403."""
    with pytest.raises(InvalidStatus) as caught:
        with anyio.fail_after(TIMEOUT):
            async with connect(ws_url(monitor, "/ws?kinds=bogus"), open_timeout=TIMEOUT):
                pass
    assert caught.value.response.status_code == 403


async def test_subscribe_message_replaces_the_filter(monitor: WebMonitor, training: Callable[[str], None]) -> None:
    """A subscribe message is echoed and replaces the previous filter for the events that follow."""
    async with connect(ws_url(monitor, "/ws?kinds=log"), open_timeout=TIMEOUT) as ws:
        await receive_json(ws)
        await ws.send(json.dumps({"subscribe": {"runs": ["m1"], "kinds": ["metric"]}}))
        assert await receive_json(ws) == {
            "type": "subscribed",
            "filter": {"runs": ["m1"], "kinds": ["metric"], "metrics": [], "format": "events"},
        }
        await call(lambda: training("m1"))
        monitor.update_metrics({"loss": 0.5})
        events = await collect_until(ws, lambda e: e["kind"] == "metric")
        assert [e["kind"] for e in events] == ["metric"]


async def test_live_events_arrive_as_batches_promptly(monitor: WebMonitor, training: Callable[[str], None]) -> None:
    """Events the monitor records reach a subscriber as {"type": "batch"} messages within 2 s, in wire form."""
    async with connect(ws_url(monitor, "/ws?runs=live-1"), open_timeout=TIMEOUT) as ws:
        await receive_json(ws)
        await call(lambda: training("live-1"))
        monitor.update_metrics({"loss": 0.25, "nan": math.nan, "inf": math.inf})
        monitor.update_game_state({"score": 2})
        monitor.record_event("marker", {"n": 1}, level="warning")
        events = await collect_until(ws, is_log("marker"))
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "lifecycle" and events[0]["transition"] == "started"
    assert {"metric", "state", "log"} <= set(kinds)
    for event in events:
        assert event["run_id"] == "live-1"
        assert isinstance(event["timestamp"], float)
    metric_event = next(event for event in events if event["kind"] == "metric")
    assert metric_event["values"] == {"loss": 0.25, "nan": None, "inf": "Infinity"}
    assert metric_event["step"] == 0 and metric_event["tags"] is None  # the run's first global step
    assert next(event for event in events if event["kind"] == "state")["patch"] == {"game_state": {"score": 2}}
    marker = events[-1]
    assert marker["level"] == "warning" and marker["data"] == {"n": 1}


async def test_columns_subscriber_receives_what_an_events_subscriber_receives(
    monitor: WebMonitor, training: Callable[[str], None]
) -> None:
    """Two subscribers to one run, one per format, receive the same events and values."""
    columns_url = ws_url(monitor, "/ws?runs=columns-1&format=columns")
    async with connect(ws_url(monitor, "/ws?runs=columns-1"), open_timeout=TIMEOUT) as plain:
        async with connect(columns_url, open_timeout=TIMEOUT) as columnar:
            assert (await receive_json(plain))["filter"]["format"] == "events"
            assert (await receive_json(columnar))["filter"]["format"] == "columns"

            def produce() -> None:
                training("columns-1")
                for step in range(50):
                    monitor.update_metrics({"loss": 1.0 / (step + 1), "odd": math.nan if step % 2 else 0.0})
                monitor.record_event("marker", {"n": 1})

            await call(produce)
            expected = await collect_until(plain, is_log("marker"))
            received: list[Event] = []
            with anyio.fail_after(PROMPT):
                while not any(is_log("marker")(event) for event in received):
                    received.extend(rows_of_columns(await receive_json(columnar)))
    assert len(expected) >= 52  # the start, 50 metrics, the marker
    in_time_order = lambda events: sorted(events, key=lambda event: (event["timestamp"], event["kind"]))  # noqa: E731
    assert in_time_order(received) == in_time_order(expected)


async def test_run_filter_selects_runs(monitor: WebMonitor, training: Callable[[str], None]) -> None:
    """A subscriber to one run receives none of another run's events."""
    async with connect(ws_url(monitor), open_timeout=TIMEOUT) as ws:
        await receive_json(ws)
        await ws.send(json.dumps({"subscribe": {"runs": ["mine"]}}))
        await receive_json(ws)

        def produce() -> None:
            training("other")
            monitor.update_metrics({"loss": 9.0})
            monitor.record_event("other-marker", {})
            training("mine")
            monitor.update_metrics({"loss": 1.0})
            monitor.record_event("mine-marker", {})

        await call(produce)
        events = await collect_until(ws, is_log("mine-marker"))
    assert {event["run_id"] for event in events} == {"mine"}
    assert any(event["kind"] == "metric" and event["values"] == {"loss": 1.0} for event in events)


async def test_kind_filter_selects_kinds(monitor: WebMonitor, training: Callable[[str], None]) -> None:
    """A subscriber to log events receives no metric, state, heartbeat or lifecycle events."""
    async with connect(ws_url(monitor, "/ws?runs=kinds-1&kinds=log"), open_timeout=TIMEOUT) as ws:
        await receive_json(ws)

        def produce() -> None:
            training("kinds-1")
            monitor.update_metrics({"loss": 1.0})
            monitor.update_game_state({"a": 1})
            monitor.heartbeat()
            monitor.record_event("first", {})
            monitor.update_metrics({"loss": 2.0})
            monitor.record_event("second", {})

        await call(produce)
        events = await collect_until(ws, is_log("second"))
    assert [(event["kind"], event["type"]) for event in events] == [("log", "first"), ("log", "second")]


async def test_metric_glob_filter_narrows_values(monitor: WebMonitor, training: Callable[[str], None]) -> None:
    """A metric glob keeps only matching values and skips metric events with none."""
    url = ws_url(monitor, "/ws?runs=glob-1&kinds=metric&metrics=train/*")
    async with connect(url, open_timeout=TIMEOUT) as ws:
        await receive_json(ws)

        def produce() -> None:
            training("glob-1")
            monitor.update_metrics({"train/loss": 1.0, "val/loss": 2.0})
            monitor.update_metrics({"val/loss": 3.0})
            monitor.update_metrics({"other": 4.0, "train/acc": 0.5})

        await call(produce)
        events = await collect_until(ws, lambda e: "train/acc" in e.get("values", {}))
    assert [event["values"] for event in events] == [{"train/loss": 1.0}, {"train/acc": 0.5}]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[]", id="array"),
        pytest.param('{"sub": {}}', id="no-subscribe-key"),
        pytest.param('{"subscribe": "r1"}', id="subscribe-string"),
        pytest.param('{"subscribe": {"kinds": ["bogus"]}}', id="unknown-kind"),
        pytest.param('{"subscribe": {"runs": [""]}}', id="empty-run"),
        pytest.param('{"subscribe": {"colour": ["red"]}}', id="unknown-field"),
        pytest.param(json.dumps({"subscribe": {"runs": [f"r-{i}-*" for i in range(1000)]}}), id="too-many-globs"),
        pytest.param(b"\xff\xfe", id="binary-garbage"),
    ],
)
async def test_invalid_subscribe_is_an_error_and_the_socket_stays_open(
    monitor: WebMonitor, training: Callable[[str], None], bad: str | bytes
) -> None:
    """An invalid subscribe message gets {"type": "error"}; the old filter stays and the socket keeps working."""
    async with connect(ws_url(monitor), open_timeout=TIMEOUT) as ws:
        await receive_json(ws)
        await ws.send(json.dumps({"subscribe": {"runs": ["err-1"], "kinds": ["log"]}}))
        await receive_json(ws)
        await ws.send(bad)
        error = await receive_json(ws)
        assert error["type"] == "error"
        assert isinstance(error["message"], str) and error["message"]

        def produce() -> None:
            training("err-1")
            monitor.update_metrics({"loss": 1.0})
            monitor.record_event("after-error", {})

        await call(produce)
        events = await collect_until(ws, is_log("after-error"))
        assert [event["kind"] for event in events] == ["log"]  # the previous filter is still in force
        await ws.send(json.dumps({"subscribe": {"kinds": ["metric"]}}))
        assert (await receive_json(ws))["type"] == "subscribed"


# -- slow subscribers and shutdown ----------------------------------------------------------------------


async def connect_unread(monitor: WebMonitor, path: str) -> ClientConnection:
    """A subscriber that will stop reading: tiny receive buffer, no compression, one-message client queue."""
    port = int(monitor.web_url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no window autotuning
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    ws = await connect(ws_url(monitor, path), sock=sock, compression=None, max_queue=1, open_timeout=TIMEOUT)
    assert (await receive_json(ws))["type"] == "subscribed"
    return ws


def live_stats(monitor: WebMonitor) -> dict[str, Any]:
    """components.live of /api/pipeline."""
    with httpx.Client(base_url=monitor.web_url, timeout=TIMEOUT) as client:
        live: dict[str, Any] = client.get("/api/pipeline").json()["components"]["live"]
    return live


CHUNK = 2000
MAX_CHUNKS = 100


def produce_until(monitor: WebMonitor, stop: Callable[[dict[str, Any]], bool]) -> int:
    """Log chunks of metric events (each flushed) until ``stop(live stats)``; return how many were logged."""
    logged = 0
    for chunk in range(MAX_CHUNKS):
        for i in range(CHUNK):
            monitor.update_metrics({"loss": float(i), "acc": 0.5, "chunk": float(chunk)})
        logged += CHUNK
        assert monitor.flush()
        if stop(live_stats(monitor)):
            return logged
    pytest.fail(f"the condition was not reached after {logged} events")


async def test_slow_subscriber_does_not_hold_back_others(tmp_path: Path) -> None:
    """A subscriber that stops reading loses (counted) events while another still gets every event promptly."""
    monitor = new_monitor(tmp_path, {"max_messages_per_subscriber": 16})
    try:
        await call(lambda: monitor.start_training(run_id="load"))
        path = "/ws?runs=load&kinds=metric"
        slow = await connect_unread(monitor, path)
        async with connect(ws_url(monitor, path), open_timeout=TIMEOUT) as fast:
            assert (await receive_json(fast))["type"] == "subscribed"
            received = 0
            target: int | None = None
            all_received = anyio.Event()

            async def read_fast() -> None:
                nonlocal received
                while True:
                    message = json.loads(await fast.recv())
                    assert message["type"] == "batch", message  # never lagged
                    received += len(message["events"])
                    if target is not None and received >= target:
                        all_received.set()
                        return

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_fast)
                logged = await call(lambda: produce_until(monitor, lambda live: live["subscriber_dropped_events"] > 0))
                target = logged
                if received >= target:
                    all_received.set()
                with anyio.fail_after(PROMPT):
                    await all_received.wait()
                tasks.cancel_scope.cancel()
            assert received == logged

            live = await call(lambda: live_stats(monitor))
            assert live["subscriber_dropped_events"] > 0
            assert live["subscribers"] == 2
            assert live["dropped_events"] == {}  # the hub itself lost nothing

            # The slow subscriber resumes: every event is either delivered or reported in a lagged notice.
            delivered = dropped = 0
            with anyio.fail_after(TIMEOUT):
                while delivered + dropped < logged:
                    message = json.loads(await slow.recv())
                    if message["type"] == "lagged":
                        dropped += message["dropped"]
                    else:
                        assert message["type"] == "batch"
                        delivered += len(message["events"])
            assert dropped == live["subscriber_dropped_events"]
            assert delivered + dropped == logged
            await slow.close()
    finally:
        await call(monitor.close)


async def test_subscriber_past_the_hard_limit_is_closed_with_1008(tmp_path: Path) -> None:
    """A subscriber that lags past max_lagged_events is closed with code 1008 once it reads again."""
    monitor = new_monitor(tmp_path, {"max_messages_per_subscriber": 2, "max_lagged_events": 1000})
    try:
        await call(lambda: monitor.start_training(run_id="limit"))
        slow = await connect_unread(monitor, "/ws?runs=limit&kinds=metric")
        assert (await call(lambda: live_stats(monitor)))["subscribers"] == 1
        await call(lambda: produce_until(monitor, lambda live: live["subscribers"] == 0))
        with pytest.raises(ConnectionClosed) as caught:
            with anyio.fail_after(TIMEOUT):
                while True:
                    await slow.recv()
        assert caught.value.rcvd is not None
        assert caught.value.rcvd.code == 1008
        assert "too slow" in caught.value.rcvd.reason
    finally:
        await call(monitor.close)


async def test_subscribers_are_closed_with_1001_when_the_monitor_closes(tmp_path: Path) -> None:
    """Closing the monitor closes every live subscriber with code 1001 (going away)."""
    monitor = new_monitor(tmp_path)
    try:
        async with (
            connect(ws_url(monitor), open_timeout=TIMEOUT) as everything,
            connect(ws_url(monitor, "/ws?kinds=log"), open_timeout=TIMEOUT) as logs,
        ):
            for ws in (everything, logs):
                assert (await receive_json(ws))["type"] == "subscribed"
            await call(monitor.close)
            for ws in (everything, logs):
                with pytest.raises(ConnectionClosed) as caught:
                    with anyio.fail_after(TIMEOUT):
                        while True:
                            await ws.recv()
                assert caught.value.rcvd is not None
                assert caught.value.rcvd.code == 1001
    finally:
        await call(monitor.close)


async def test_subscribers_get_1001_even_when_their_handlers_are_slower_than_uvicorns_shutdown_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribers are closed with 1001, not uvicorn's 1012, even when closing each takes longer than 100 ms."""
    delay = 0.3  # a busy loop: uvicorn closes what is still open with 1012 about 100 ms after should_exit
    original_close = WebSocket.close

    async def slow_close(self: WebSocket, code: int = 1000, reason: str | None = None) -> None:
        await anyio.sleep(delay)
        await original_close(self, code, reason)

    monkeypatch.setattr(WebSocket, "close", slow_close)
    monitor = new_monitor(tmp_path)
    try:
        async with (
            connect(ws_url(monitor), open_timeout=TIMEOUT) as everything,
            connect(ws_url(monitor, "/ws?kinds=log"), open_timeout=TIMEOUT) as logs,
        ):
            for ws in (everything, logs):
                assert (await receive_json(ws))["type"] == "subscribed"
            await call(monitor.close)
            for ws in (everything, logs):
                with pytest.raises(ConnectionClosed) as caught:
                    with anyio.fail_after(TIMEOUT):
                        while True:
                            await ws.recv()
                assert caught.value.rcvd is not None
                assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1001, "server shutting down")
    finally:
        await call(monitor.close)
