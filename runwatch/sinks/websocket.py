"""The websocket hub: fans live events out to subscribers without ever waiting on them.

Every ``publish_interval_seconds`` (and at every flush barrier) the hub turns
what arrived into one JSON message per distinct subscription filter —
serialised once, the same text queued for every subscriber with that filter.
A window larger than ``max_message_bytes`` (a tick that came late on a busy
host) goes out as several messages, so no message outgrows what clients
accept (1 MiB by default in common websocket clients).
Each subscriber has its own bounded queue; when it is full the oldest
messages are dropped and counted, the subscriber is told with a
``{"type": "lagged", "dropped": N}`` notice, and past ``max_lagged_events``
undelivered events it is closed. A slow subscriber never slows the pipeline
or any other subscriber.

The hub also keeps the last ``replay_events`` events it saw in memory: a new
subscriber may ask for the latest of them (matching its filter) before the
live ones (``/ws?replay=N``, ``runwatch tail -n N``), with neither a gap nor a
repeat between the two.

Images reach subscribers without their bytes (they fetch them by digest).
The hub keeps the bytes of the latest images it saw, up to
``recent_image_bytes``, so ``/api/media/{digest}`` can serve a live frame
before the store has committed it (:meth:`WebsocketHub.recent_image`); the
events it keeps for replay hold no image bytes.

Fed from the scale-out bus (:meth:`WebsocketHub.feed`, by the ``nats``
source of a serve node), events carry the live stream's sequence: each
message then holds ``"cursor"``, the last sequence it covers, and a
subscriber that lost its connection (its node died) resumes on any node
from its cursor (:meth:`WebsocketHub.replay_after`), without a gap or a
repeat.

The hub itself is off the acknowledgement path: flush barriers and ingest
acknowledgements never wait for it (``acknowledges_flush = False``), and its
input buffer drops its own oldest events (counted) when it falls behind.
What a filter costs is bounded per distinct filter: its names and globs are
compiled once (:class:`PatternSet`, shared by equal filters) and each answer
is remembered per run id or metric-name set, so an event costs a few
dictionary lookups per distinct filter however many patterns it holds.
"""

from __future__ import annotations

import fnmatch
import functools
import itertools
import logging
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from pydantic import Field

from ..events import ImageEvent, Metric
from ..pipeline.component import ComponentContext, ServiceKey, Sink
from ..pipeline.component import Options as BaseOptions
from ..wire import event_to_wire, json_number, messages
from ..wire.messages import GLOB_CHARS

__all__ = ["LIVE_FEED", "LIVE_HUB", "LiveFeed", "Subscriber", "SubscriptionFilter", "WebsocketHub"]

logger = logging.getLogger("runwatch.web")

#: The hub, offered to the web app (``/ws`` subscribes to it) while it runs.
LIVE_HUB: ServiceKey[WebsocketHub] = ServiceKey("websocket_hub")


class LiveFeed(Protocol):
    """Where the hub's bus events come from, read back for a resume older than the hub keeps."""

    async def read_range(self, after: int, through: int) -> list[Any] | None:
        """The events of the live stream after sequence ``after`` up to ``through``, in order.

        Returns ``None`` when the stream no longer holds them all (the cursor expired) or
        when there are too many to read back.
        """


#: The bus source feeding the hub (a serve node on the bus), offered to ``/ws`` for resumes.
LIVE_FEED: ServiceKey[LiveFeed] = ServiceKey("live_feed")

#: Answers a compiled pattern set remembers (run ids or metric-name sets) before starting over.
MAX_REMEMBERED = 4096


class PatternSet:
    """Names and glob patterns compiled once: exact names in a set, globs in one regex.

    Answers are remembered per name (and per tuple of metric names), so a
    run id or a logging call's name set is matched against the patterns once,
    not once per event. Build it with :func:`compile_patterns` (equal pattern
    tuples share one instance). Only the pipeline's loop asks it.
    """

    __slots__ = ("_exact", "_regex", "_known", "_known_sets")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        # A glob also matches itself literally (a run named "a*"), as fnmatch-or-equal did.
        self._exact = frozenset(patterns)
        globs = [pattern for pattern in patterns if not GLOB_CHARS.isdisjoint(pattern)]
        self._regex = re.compile("|".join(fnmatch.translate(glob) for glob in globs)) if globs else None
        self._known: dict[str, bool] = {}
        self._known_sets: dict[tuple[str, ...], tuple[str, ...]] = {}

    def matches(self, name: str) -> bool:
        """Whether ``name`` is one of the names or matches one of the globs."""
        found = self._known.get(name)
        if found is None:
            found = name in self._exact or (self._regex is not None and self._regex.match(name) is not None)
            if len(self._known) >= MAX_REMEMBERED:
                self._known.clear()
            self._known[name] = found
        return found

    def matching(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """The names of ``names`` that match, in their order."""
        found = self._known_sets.get(names)
        if found is None:
            found = tuple(name for name in names if self.matches(name))
            if len(self._known_sets) >= MAX_REMEMBERED:
                self._known_sets.clear()
            self._known_sets[names] = found
        return found


@functools.lru_cache(maxsize=256)
def compile_patterns(patterns: tuple[str, ...]) -> PatternSet:
    """The :class:`PatternSet` of ``patterns`` (one per distinct tuple, while recently used)."""
    return PatternSet(patterns)


@dataclass(frozen=True)
class SubscriptionFilter:
    """What a subscriber wants: run ids, event kinds and metric names (globs allowed), and the wire format.

    An empty tuple means "everything". A metric event is narrowed to the
    matching values and skipped when none match. ``format="columns"`` sends
    metrics as column blocks (see :meth:`columns`), about a third of the
    bytes and a fifth of the decoding work of one object per event.
    """

    runs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    format: str = "events"

    @functools.cached_property
    def _run_patterns(self) -> PatternSet:
        return compile_patterns(self.runs)

    @functools.cached_property
    def _metric_patterns(self) -> PatternSet:
        return compile_patterns(self.metrics)

    @classmethod
    def parse(cls, data: Any) -> SubscriptionFilter:
        """Build a filter from a ``subscribe`` message body, its patterns compiled.

        Compiling up to :data:`~runwatch.wire.messages.MAX_GLOBS` globs per field may take tens of
        milliseconds: call it off the event loop.

        Raises:
            WireError: (a ValueError) naming the bad field and the limit it passed
                (see :func:`runwatch.wire.messages.subscription_fields`).
        """
        fields = messages.subscription_fields(data)
        subscription = cls(*fields)
        # Compile now (the caller may be off the loop), not while publishing.
        _ = subscription._run_patterns
        _ = subscription._metric_patterns
        return subscription

    def as_dict(self) -> dict[str, Any]:
        """The filter as sent back in the ``subscribed`` message."""
        return {
            "runs": list(self.runs),
            "kinds": list(self.kinds),
            "metrics": list(self.metrics),
            "format": self.format,
        }

    def count(self, events: list[Any]) -> int:
        """How many of ``events`` this filter lets through (pure; no wire forms built)."""
        if not (self.runs or self.kinds or self.metrics):
            return len(events)
        return sum(1 for event in events if self._admits(event))

    def _admits(self, event: Any) -> bool:
        if not self._admits_kind_and_run(event):
            return False
        if self.metrics and type(event) is Metric:
            return bool(self._metric_patterns.matching(tuple(event.values)))
        return True

    def _admits_kind_and_run(self, event: Any) -> bool:
        return (not self.kinds or event.kind in self.kinds) and (
            not self.runs or self._run_patterns.matches(event.run_id)
        )

    def select(self, events: list[Any], wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The wire forms of the events this filter lets through (pure)."""
        if not (self.runs or self.kinds or self.metrics):
            return wire
        selected: list[dict[str, Any]] = []
        for event, wire_form in zip(events, wire, strict=True):
            if not self._admits_kind_and_run(event):
                continue
            if self.metrics and type(event) is Metric:
                all_values = wire_form["values"]
                values = {name: all_values[name] for name in self._metric_patterns.matching(tuple(all_values))}
                if not values:
                    continue
                if len(values) != len(all_values):
                    wire_form = {**wire_form, "values": values}
            selected.append(wire_form)
        return selected

    def columns(self, events: list[Any]) -> tuple[dict[str, Any], int]:
        """The ``columns`` message for ``events`` and how many events it carries (pure).

        Metrics with the same run, names and tags form one block of parallel
        arrays, in arrival order; every other event keeps its wire form in
        ``events``.
        """
        others: list[dict[str, Any]] = []
        blocks: dict[tuple[Any, ...], dict[str, Any]] = {}
        count = 0
        for event in events:
            if not self._admits_kind_and_run(event):
                continue
            if type(event) is not Metric:
                others.append(event_to_wire(event))
                count += 1
                continue
            run_id, timestamp, values, step, tags = event
            names = tuple(values)
            if self.metrics:
                names = self._metric_patterns.matching(names)
                if not names:
                    continue
            key = (run_id, names, tuple(tags.items()) if tags else None)
            block = blocks.get(key)
            if block is None:
                block = blocks[key] = {
                    "run_id": run_id,
                    "names": list(names),
                    "tags": tags,
                    "steps": [],
                    "timestamps": [],
                    "values": [[] for _ in names],
                }
            block["steps"].append(step)
            block["timestamps"].append(timestamp)
            total = sum(values.values())
            finite = total - total == 0.0
            for column, name in zip(block["values"], names, strict=True):
                column.append(values[name] if finite else json_number(values[name]))
            count += 1
        return messages.columns(list(blocks.values()), others), count


class Subscriber:
    """One websocket subscriber's bounded outgoing queue."""

    def __init__(
        self, subscription: SubscriptionFilter, *, max_messages: int, max_lagged_events: int, max_bytes: int = 8 << 20
    ) -> None:
        self.subscription = subscription
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_lagged_events = max_lagged_events
        self._queue: deque[tuple[str, int]] = deque()
        self._queued_bytes = 0
        self._ready = anyio.Event()
        self._unreported_drops = 0
        self._overflowed = False  # dropped a message since the client last took one
        self._sent_at_last_offer = 0
        self.dropped_events = 0
        self.sent_messages = 0
        self.closed_reason: str | None = None

    @property
    def stalled(self) -> bool:
        """Full (or overflowed since its last read), and nothing was read since the last offer.

        Overflow counts too: one message bigger than half the byte bound never
        leaves the queue "full" (the older one is dropped to make room), yet the
        subscriber takes nothing.
        """
        full = self._overflowed or len(self._queue) >= self.max_messages or self._queued_bytes >= self.max_bytes
        return full and self.sent_messages == self._sent_at_last_offer

    def skip(self, events: int) -> None:
        """Count events a stalled subscriber misses, without serialising them."""
        self.dropped_events += events
        self._unreported_drops += events
        if self.dropped_events > self.max_lagged_events:
            self.close("too slow: lagged past the hard limit")

    def offer(self, text: str, events: int) -> None:
        """Queue a message; drop the oldest when full (never waits)."""
        if self.closed_reason is not None:
            return
        self._sent_at_last_offer = self.sent_messages
        self._queue.append((text, events))
        self._queued_bytes += len(text)
        while len(self._queue) > 1 and (len(self._queue) > self.max_messages or self._queued_bytes > self.max_bytes):
            lost_text, lost = self._queue.popleft()
            self._queued_bytes -= len(lost_text)
            self.dropped_events += lost
            self._unreported_drops += lost
            self._overflowed = True
        if self.dropped_events > self.max_lagged_events:
            self.close("too slow: lagged past the hard limit")
        self._ready.set()

    def close(self, reason: str) -> None:
        """Stop queueing; the connection handler closes the socket."""
        if self.closed_reason is None:
            self.closed_reason = reason
            self._queue.clear()
            self._queued_bytes = 0
        self._ready.set()

    async def next_message(self) -> str:
        """The next text to send (a lag notice first if events were dropped).

        Raises:
            anyio.EndOfStream: the subscriber was closed (see ``closed_reason``).
        """
        while True:
            if self.closed_reason is not None:
                raise anyio.EndOfStream
            if self._unreported_drops:
                dropped, self._unreported_drops = self._unreported_drops, 0
                return messages.encode(messages.lagged(dropped))
            if self._queue:
                self._overflowed = False
                self.sent_messages += 1
                text = self._queue.popleft()[0]
                self._queued_bytes -= len(text)
                return text
            self._ready = anyio.Event()
            await self._ready.wait()

    @property
    def queued_messages(self) -> int:
        """Messages waiting to be sent."""
        return len(self._queue)


class WebsocketHub(Sink):
    """Publishes live events to websocket subscribers (see the module docs).

    Options:
        publish_interval_seconds: how often queued events go out (every 25 ms by default:
            an event waits at most this long, which bounds its latency).
        max_messages_per_subscriber: a subscriber's queue bound, in messages.
        max_bytes_per_subscriber: a subscriber's queue bound, in bytes of JSON.
        max_lagged_events: events a subscriber may miss before it is closed.
        max_message_bytes: the largest message sent, in characters of JSON (up to
            4 bytes each): a larger window goes out as several messages, in order,
            split only between the bus batches it holds (see ``cursor``). The
            default keeps every message within the 1 MiB that websocket clients
            commonly accept; one event larger than this still goes out alone.
        replay_events: how many of the latest events the hub keeps in memory
            for new subscribers that ask to replay them (0: none).
        recent_image_bytes: the bytes of the latest images' contents kept for
            :meth:`recent_image` (0: none), oldest out first.
    """

    takes_receipts = True  # internal ingest receipts: never published (see _keep)

    class Options(BaseOptions):
        publish_interval_seconds: float = Field(0.025, gt=0, le=5)
        max_messages_per_subscriber: int = Field(256, ge=1)
        max_bytes_per_subscriber: int = Field(8 << 20, ge=1024)
        max_lagged_events: int = Field(1_000_000, ge=1)
        max_message_bytes: int = Field(256 << 10, ge=1024)
        replay_events: int = Field(1000, ge=0)
        recent_image_bytes: int = Field(32 << 20, ge=0)

    #: Live views never hold a flush barrier (nor an ingest acknowledgement) back.
    acknowledges_flush = False

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.tick_interval_seconds = options.publish_interval_seconds
        self._pending: list[Any] = []
        self._subscribers: set[Subscriber] = set()
        # Events already published (or seen while nobody listened): what a new subscriber may replay;
        # beside each, the bus sequence it came with (None for events the pipeline sent).
        self._recent: deque[Any] = deque(maxlen=options.replay_events)
        self._recent_cursors: deque[int | None] = deque(maxlen=options.replay_events)
        #: The bus sequence of the last events fed (``None``: nothing came from the bus).
        self.cursor: int | None = None
        self._fed = anyio.Event()
        # Where the pending events end on the bus: (pending events before the batch, its sequence) per fed batch.
        self._pending_cursors: list[tuple[int, int]] = []
        self.published_messages = 0
        self.published_events = 0
        self.subscriber_dropped_events = 0  # cumulative: stays counted after a subscriber leaves
        self.unencodable_events = 0
        self._images = _RecentImages(options.recent_image_bytes)
        context.services.provide(LIVE_HUB, self)

    def subscribe(self, subscription: SubscriptionFilter) -> Subscriber:
        """Add a subscriber (call on the pipeline's loop)."""
        subscriber = Subscriber(
            subscription,
            max_messages=self.options.max_messages_per_subscriber,
            max_lagged_events=self.options.max_lagged_events,
            max_bytes=self.options.max_bytes_per_subscriber,
        )
        self._subscribers.add(subscriber)
        return subscriber

    def replay(self, subscriber: Subscriber, count: int) -> int:
        """Queue for ``subscriber`` the latest ``count`` kept events its filter admits, as one message.

        Call on the pipeline's loop right after :meth:`subscribe`: the events
        still pending publication are not among the kept ones, and they reach
        the subscriber live, so nothing comes twice and nothing is skipped.

        Returns:
            How many events were queued.
        """
        if count <= 0:
            return 0
        subscription = subscriber.subscription
        chosen: list[Any] = []
        sequences: list[int | None] = []
        for event, seq in zip(reversed(self._recent), reversed(self._recent_cursors), strict=True):
            if subscription._admits(event):
                chosen.append(event)
                sequences.append(seq)
                if len(chosen) == count:
                    break
        chosen.reverse()
        sequences.reverse()
        return self._offer_events(subscriber, chosen, sequences, self._kept_cursor())

    def replay_after(self, subscriber: Subscriber, cursor: int) -> bool:
        """Queue for ``subscriber`` every kept event of the bus after ``cursor`` its filter admits.

        Call on the pipeline's loop right after :meth:`subscribe` (as :meth:`replay`).

        Returns:
            Whether the kept events reach back to ``cursor`` (``False``: some
            events after it are no longer kept; nothing was queued).
        """
        cursors = self._recent_cursors
        if not cursors or cursors[0] is None or cursors[0] > cursor:
            return False
        chosen = [
            (event, seq)
            for event, seq in zip(self._recent, cursors, strict=True)
            if seq is not None and seq > cursor and subscriber.subscription._admits(event)
        ]
        if chosen:
            events, sequences = zip(*chosen, strict=True)
            self._offer_events(subscriber, list(events), list(sequences), self._kept_cursor())
        return True

    async def wait_cursor(self, cursor: int, timeout: float) -> bool:
        """Wait until the hub was fed the bus's events up to ``cursor``; whether it was within ``timeout``."""
        with anyio.move_on_after(timeout):
            while self.cursor is None or self.cursor < cursor:
                self._fed = anyio.Event()
                await self._fed.wait()
            return True
        return False

    def _kept_cursor(self) -> int | None:
        """The bus sequence the kept events reach (what a replay's message covers)."""
        return _last_sequence(self._recent_cursors)

    def offer_backlog(self, subscriber: Subscriber, events: list[Any], cursor: int) -> int:
        """Queue for ``subscriber`` events read back from the bus up to ``cursor``; how many its filter admits."""
        chosen = [event for event in events if subscriber.subscription._admits(event)]
        # The events read back carry no sequence of their own: one unit, never split (its cursor stays exact).
        return self._offer_events(subscriber, chosen, [cursor] * len(chosen), cursor)

    def _offer_events(
        self, subscriber: Subscriber, events: list[Any], sequences: list[int | None], cursor: int | None
    ) -> int:
        """Queue for ``subscriber`` what its filter admits of ``events`` (bounded messages); how many events.

        An event that cannot be serialised stays out alone, as in :meth:`publish`.
        """
        if not events:
            return 0
        subscription, limit = subscriber.subscription, self.options.max_message_bytes
        try:
            parts = _encoded_messages(subscription, events, None, sequences, cursor, limit)
        except (TypeError, ValueError):
            kept = [index for index, event in enumerate(events) if _encodable(event)]
            events, sequences = [events[i] for i in kept], [sequences[i] for i in kept]
            parts = _encoded_messages(subscription, events, None, sequences, cursor, limit)
        for text, count in parts:
            subscriber.offer(text, count)
        return sum(count for _, count in parts)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove a subscriber."""
        self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> Iterable[Subscriber]:
        """The current subscribers."""
        return tuple(self._subscribers)

    async def write(self, batch: list[Any]) -> None:
        if not self._subscribers:
            self._keep(batch)
            return
        if not self._pending and all(subscriber.stalled for subscriber in self._subscribers):
            # Nobody reads: count what each one misses now rather than hold the events.
            kept, _ = self._keep(batch)
            self._skip_stalled(kept)
            return
        self._pending.extend(batch)

    def feed(self, events: list[Any], cursor: int) -> None:
        """Take events of the bus's live stream with its sequence ``cursor`` (call on the pipeline's loop).

        They are published like the events of :meth:`write`, and their
        messages carry the cursor.
        """
        self.cursor = cursor
        self._fed.set()
        if not self._subscribers or (not self._pending and all(s.stalled for s in self._subscribers)):
            kept, _ = self._keep(events, [(0, cursor)])
            if self._subscribers:
                self._skip_stalled(kept)
            return
        self._pending_cursors.append((len(self._pending), cursor))
        self._pending.extend(events)

    def _keep(self, batch: list[Any], cursors: Sequence[tuple[int, int]] = ()) -> tuple[list[Any], list[int | None]]:
        """Remember ``batch``'s events for replay; returns them and their bus sequences (receipts: never kept).

        An image's bytes go to the recent images, not into the replay buffer.
        ``cursors``: where fed batches start in ``batch`` and their bus sequences
        (events before the first came from the pipeline: no sequence).
        """
        events = []
        sequences: list[int | None] = []
        for event, seq in zip(batch, _event_cursors(len(batch), cursors), strict=True):
            if event.kind != "receipt":
                if type(event) is ImageEvent:
                    self._images.put(event.digest, event.mime, event.data)
                    event = event._replace(data=b"")  # the wire form has no bytes either
                events.append(event)
                sequences.append(seq)
        self._recent.extend(events)
        self._recent_cursors.extend(sequences)
        return events, sequences

    def recent_image(self, digest: str) -> tuple[str, bytes] | None:
        """The media type and bytes of a recent image's content, or ``None`` (safe from any thread)."""
        return self._images.get(digest)

    async def tick(self, now: float) -> None:
        self.publish()

    async def flush(self) -> None:
        self.publish()

    async def aclose(self) -> None:
        self.publish()
        for subscriber in list(self._subscribers):
            subscriber.close("server shutting down")

    def publish(self) -> None:
        """Send what arrived since the last call: one serialisation per distinct filter.

        An event that cannot be serialised (a metric name with a lone surrogate,
        which metrics leave unchecked on their hot path) is dropped alone and
        counted in ``unencodable_events``; the rest of the window goes out.
        """
        pending, self._pending = self._pending, []
        cursors, self._pending_cursors = self._pending_cursors, []
        if not pending:
            return
        batch, sequences = self._keep(pending, cursors)
        cursor = cursors[-1][1] if cursors else None
        if not self._subscribers:
            return
        if all(subscriber.stalled for subscriber in self._subscribers):
            self._skip_stalled(batch)
            return
        groups: dict[SubscriptionFilter, list[Subscriber]] = {}
        for subscriber in self._subscribers:
            groups.setdefault(subscriber.subscription, []).append(subscriber)
        try:
            messages = self._messages(groups, batch, sequences, cursor)
        except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
            kept = [index for index, event in enumerate(batch) if _encodable(event)]
            self._count_unencodable(len(batch) - len(kept))
            batch, sequences = [batch[i] for i in kept], [sequences[i] for i in kept]
            messages = self._messages(groups, batch, sequences, cursor)
        for members, text, count in messages:
            if text is None:  # nobody in this group reads: count what they miss
                for subscriber in members:
                    self.subscriber_dropped_events += count
                    subscriber.skip(count)
                    if subscriber.closed_reason is not None:
                        self._subscribers.discard(subscriber)
                continue
            self.published_messages += 1
            self.published_events += count
            for subscriber in members:
                before = subscriber.dropped_events
                subscriber.offer(text, count)
                self.subscriber_dropped_events += subscriber.dropped_events - before
                if subscriber.closed_reason is not None:
                    self._subscribers.discard(subscriber)

    def _messages(
        self,
        groups: Mapping[SubscriptionFilter, list[Subscriber]],
        batch: list[Any],
        sequences: list[int | None],
        cursor: int | None,
    ) -> list[tuple[list[Subscriber], str | None, int]]:
        """Per message: its filter's members, its text (``None`` for a group that reads nothing) and its events.

        A filter's messages come in order (several when its window is larger
        than ``max_message_bytes``). Builds everything before anything is
        offered, so a serialisation error leaves no subscriber with half a window.
        """
        wire: list[dict[str, Any]] | None = None  # built once, only if some subscriber wants events
        out: list[tuple[list[Subscriber], str | None, int]] = []
        for subscription, members in groups.items():
            if all(subscriber.stalled for subscriber in members):
                # Nobody in this group reads: count the events, skip the serialisation.
                out.append((members, None, subscription.count(batch)))
                continue
            if subscription.format == "events" and wire is None:
                wire = [event_to_wire(event) for event in batch]
            for text, count in _encoded_messages(
                subscription, batch, wire, sequences, cursor, self.options.max_message_bytes
            ):
                out.append((members, text, count))
        return out

    def _count_unencodable(self, count: int) -> None:
        before = self.unencodable_events
        self.unencodable_events += count
        if before.bit_length() != self.unencodable_events.bit_length():  # at 1, 2, 4, 8...: no log storm
            logger.warning(
                "runwatch: %s: dropped %d event(s) that cannot be serialised for subscribers (%d so far)",
                self.id,
                count,
                self.unencodable_events,
            )

    def _skip_stalled(self, batch: list[Any]) -> None:
        """Count, per subscriber, the events of ``batch`` it misses (no wire form is built)."""
        for subscriber in list(self._subscribers):
            missed = subscriber.subscription.count(batch)
            if missed:
                self.subscriber_dropped_events += missed
                subscriber.skip(missed)
                if subscriber.closed_reason is not None:
                    self._subscribers.discard(subscriber)

    def statistics(self) -> dict[str, Any]:
        return {
            "subscribers": len(self._subscribers),
            "published_messages": self.published_messages,
            "published_events": self.published_events,
            "subscriber_dropped_events": self.subscriber_dropped_events,
            "unencodable_events": self.unencodable_events,
        }


class _RecentImages:
    """Image contents by digest, the newest kept up to a byte bound (written on the loop, read from any thread)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._contents: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, digest: str, mime: str, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        with self._lock:
            old = self._contents.pop(digest, None)
            if old is not None:
                self._bytes -= len(old[1])
            self._contents[digest] = (mime, data)
            self._bytes += len(data)
            while self._bytes > self._max_bytes:
                _, (_, dropped) = self._contents.popitem(last=False)
                self._bytes -= len(dropped)

    def get(self, digest: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._contents.get(digest)


def _event_cursors(count: int, cursors: Sequence[tuple[int, int]]) -> list[int | None]:
    """Each event's bus sequence, from where the fed batches start among ``count`` events."""
    out: list[int | None] = [None] * count
    for index, (start, seq) in enumerate(cursors):
        end = cursors[index + 1][0] if index + 1 < len(cursors) else count
        out[start:end] = [seq] * (end - start)
    return out


def _encodable(event: Any) -> bool:
    """Whether an event's wire form serialises (checked only after a window failed to)."""
    try:
        messages.encode(event_to_wire(event))
    except (TypeError, ValueError):
        return False
    return True


def _encoded_messages(
    subscription: SubscriptionFilter,
    events: list[Any],
    wire: list[dict[str, Any]] | None,
    sequences: Sequence[int | None],
    cursor: int | None,
    max_chars: int,
) -> list[tuple[str, int]]:
    """The texts carrying what ``subscription`` admits of ``events``, each at most ``max_chars`` long when it can be.

    One message in the common case (serialised once). A longer one is cut
    into about as many parts as it is too long, and each part again as
    needed: a window that grew on a late tick must not become a message its
    clients refuse. Cuts fall only between events of different bus batches
    (``sequences``, one per event; ``None``: not from the bus), so every part's
    ``cursor`` is a sequence it covers entirely; the last part carries ``cursor``.

    Returns:
        (text, events it carries) per non-empty message, in order.
    """
    message, count = _message_for(subscription, events, wire, cursor)
    if not count:
        return []
    text = messages.encode(message)
    if len(text) <= max_chars or count == 1:
        return [(text, count)]
    cuts = _cut_points(sequences, -(-len(text) // max_chars))
    if not cuts:  # one bus batch: its parts could not each carry an exact cursor
        return [(text, count)]
    out: list[tuple[str, int]] = []
    for start, end in itertools.pairwise([0, *cuts, len(events)]):
        part_cursor = cursor if end == len(events) else _last_sequence(sequences[:end])
        part_wire = wire[start:end] if wire is not None else None
        out.extend(
            _encoded_messages(subscription, events[start:end], part_wire, sequences[start:end], part_cursor, max_chars)
        )
    return out


def _cut_points(sequences: Sequence[int | None], parts: int) -> list[int]:
    """Where to cut ``len(sequences)`` events into about ``parts`` equal runs, never inside one bus batch."""
    count = len(sequences)

    def allowed(index: int) -> bool:
        before = sequences[index - 1]
        return before is None or before != sequences[index]

    cuts: set[int] = set()
    for part in range(1, parts):
        target = max(1, count * part // parts)
        found = next((i for i in range(target, count) if allowed(i)), None)
        if found is None:
            found = next((i for i in range(target - 1, 0, -1) if allowed(i)), None)
        if found is not None:
            cuts.add(found)
    return sorted(cuts)


def _last_sequence(sequences: Sequence[int | None]) -> int | None:
    """The last bus sequence among ``sequences`` (``None``: none came from the bus)."""
    for seq in reversed(sequences):
        if seq is not None:
            return seq
    return None


def _message_for(
    subscription: SubscriptionFilter, events: list[Any], wire: list[dict[str, Any]] | None, cursor: int | None
) -> tuple[dict[str, Any], int]:
    """The message carrying what ``subscription`` admits of ``events``, and how many events it carries.

    ``wire`` is the events' wire forms when already built (shared by every
    ``events``-format filter of one publication); ``None`` builds them here.
    ``cursor``: the bus sequence the message reaches (``None``: not from the bus).
    """
    if subscription.format == "columns":
        message, count = subscription.columns(events)
    else:
        if wire is None:
            wire = [event_to_wire(event) for event in events]
        selected = subscription.select(events, wire)
        message, count = messages.batch(selected), len(selected)
    if cursor is not None:
        message["cursor"] = cursor
    return message, count
