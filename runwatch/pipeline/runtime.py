"""The pipeline runtime: builds a validated graph and runs it in one task group.

Every component runs in a task owned by the pipeline's task group; nothing
else spawns tasks. Shutdown drains from the sources to the sinks: sources
stop and close their outputs, each consumer finishes its buffer, flushes and
closes its own outputs, and the pipeline waits for all of it, then closes
every component — all within ``shutdown_timeout_seconds``. At the deadline
every buffer is abandoned (what it holds, and what is sent to it later, is
dropped with reason ``shutdown_timeout``), every component is cancelled, and
``aclose`` runs under the same deadline (``anyio.current_effective_deadline()``
tells a component how long it has).

Every event lost is counted once, where it was lost: in the buffer that held
it, in the component that had taken it (a sink that keeps what it takes, such
as the SQLite sink, counts its own; a stage's cut-off batch counts only what
it had not sent on), or at the source's intake. So for each sink, what its
sources took equals what it delivered plus what was dropped on its path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from ..events import IngestReceipt
from ..exceptions import PipelineNotRunning
from .bridge import ThreadBridge
from .buffer import EventBuffer, FlushMarker
from .component import Component, ComponentContext, Consumer, Output, Source
from .config import ComponentSpec, PipelineSpec, load_pipeline_config

__all__ = ["ComponentStatistics", "Pipeline"]

logger = logging.getLogger("runwatch.pipeline")

#: How long stopping waits for the queues to drain when nothing else is configured.
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 10.0


class _HeldOutput(Output):
    """A stage's output during one ``write`` whose receipts the runner took out: its sends are held,
    to go on in one send with the receipts behind them."""

    def __init__(self, flush_paths: int) -> None:
        super().__init__([], flush_paths)
        self.taken: list[Any] = []
        self.barriers: list[FlushMarker] = []

    async def send(self, batch: list[Any]) -> None:
        self.taken.extend(batch)

    def send_nowait(self, batch: list[Any]) -> None:
        self.taken.extend(batch)

    def forward_barrier(self, marker: FlushMarker) -> None:
        self.barriers.append(marker)

    async def pass_on(self, output: Output, receipts: list[Any]) -> None:
        """Send what was held, then the receipts, in one batch; then the barriers sent meanwhile."""
        await output.send(self.taken + receipts)
        for marker in self.barriers:
            output.forward_barrier(marker)


@dataclass
class ComponentStatistics:
    """Counters the runner keeps for one component."""

    processed_events: int = 0
    processed_batches: int = 0
    in_flight_events: int = 0  # handed to the component and not yet returned
    errors: int = 0
    dropped_events: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    flushes: int = 0
    last_flush_seconds: float | None = None
    max_flush_seconds: float = 0.0
    failed: bool = False


@dataclass
class _Node:
    spec: ComponentSpec
    component: Component
    buffer: EventBuffer | None
    output: Output | None
    stats: ComponentStatistics = field(default_factory=ComponentStatistics)
    #: Whether the runner takes ingest receipts out of this component's batches (it does not take them).
    strip_receipts: bool = False
    open_upstreams: int = 0
    finished: anyio.Event = field(default_factory=anyio.Event)
    sent_before_batch: int = 0  # the output's sent_events when the batch in flight was handed over

    def unsent_in_flight(self) -> int:
        """Events of the batch in flight not yet handed to ``send`` (all of it for a sink).

        What was handed over is the consumers' buffers' to account for, even while a send waits.
        """
        in_flight = self.stats.in_flight_events
        if self.output is None or not in_flight:
            return in_flight
        return max(0, in_flight - (self.output.sent_events - self.sent_before_batch))

    def held_in_flight(self) -> int:
        """Events of the batch in flight that no consumer holds yet: unsent, or in a send waiting for room."""
        waiting = self.output.sending_events if self.output is not None and self.stats.in_flight_events else 0
        return min(self.stats.in_flight_events, self.unsent_in_flight() + waiting)

    def dropped_events(self) -> dict[str, int]:
        """Every event this component lost, by reason: its buffer's, the runner's and its own count."""
        dropped = dict(self.stats.dropped_events)
        sources = [self.component.lost_events()]
        if self.buffer is not None:
            sources.append(self.buffer.statistics().dropped_events)
        for counts in sources:
            for reason, count in counts.items():
                dropped[reason] = dropped.get(reason, 0) + count
        return dropped


class Pipeline:
    """A running graph of sources, stages and sinks.

    Args:
        config: a :class:`PipelineSpec`, a mapping, a TOML/JSON path, or
            ``None`` for the default graph.
        context: what components share (store path, data dir, services).
        shutdown_timeout_seconds: how long :meth:`stop` waits for queues to drain;
            ``None`` takes the config's top-level ``shutdown_timeout_seconds``
            (default 10).

    Use as ``async with Pipeline(...) as pipeline:``; events go in with
    :meth:`emit` (any thread, never blocks the caller beyond the intake
    policy) and :meth:`flush` waits until they are committed.
    """

    def __init__(
        self,
        config: PipelineSpec | Mapping[str, Any] | str | Path | None = None,
        *,
        context: ComponentContext | None = None,
        shutdown_timeout_seconds: float | None = None,
    ) -> None:
        self.spec = config if isinstance(config, PipelineSpec) else load_pipeline_config(config)
        self.context = context or ComponentContext()
        if shutdown_timeout_seconds is None:
            shutdown_timeout_seconds = self.spec.shutdown_timeout_seconds or DEFAULT_SHUTDOWN_TIMEOUT_SECONDS
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self._nodes: dict[str, _Node] = {}
        self._task_group: TaskGroup | None = None
        self._stopping = anyio.Event()
        self._running = False
        self._started_at: float | None = None
        self._build()

    # -- building ---------------------------------------------------------------

    def _build(self) -> None:
        for spec in self.spec.components:
            component = spec.cls(spec.id, spec.options, self.context)
            buffer = None
            if spec.section != "sources":
                buffer = EventBuffer(spec.buffer.max_events, spec.buffer.when_full, spec.buffer.max_bytes)
            self._nodes[spec.id] = _Node(spec, component, buffer, None)
        receipt_sources = {
            spec.id
            for spec in self.spec.components
            if spec.section == "sources" and getattr(spec.cls, "emits_receipts", False)
        }
        for node in self._nodes.values():
            consumers = self.spec.consumers_of(node.spec.id)
            if node.spec.section != "sinks":
                buffers = [self._nodes[c.id].buffer for c in consumers]
                flush_paths = self.spec.sink_paths(node.spec.id, acknowledging_only=True)
                node.output = Output([b for b in buffers if b is not None], flush_paths)
                node.component.output = node.output
            if node.spec.section != "sources" and not node.component.takes_receipts:
                node.strip_receipts = bool(receipt_sources & self.spec.upstream_of(node.spec.id))
            node.open_upstreams = len(node.spec.inputs)

    @property
    def components(self) -> dict[str, Component]:
        """The built components by id."""
        return {cid: node.component for cid, node in self._nodes.items()}

    def component(self, component_id: str) -> Component:
        """One component by id (``KeyError`` if there is none)."""
        return self._nodes[component_id].component

    def components_of_type(self, cls: type[Any]) -> list[Any]:
        """Every component that is an instance of ``cls``, in graph order."""
        return [node.component for node in self._nodes.values() if isinstance(node.component, cls)]

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open every component (sinks first) and start running the graph.

        Raises:
            Exception: whatever a component's ``start`` raised (e.g. the store
            cannot be opened); components already opened are closed again.
        """
        if self._running:
            return
        opened: list[Component] = []
        try:
            for node in reversed(list(self._nodes.values())):
                await node.component.start()
                opened.append(node.component)
        except BaseException:
            for component in opened:
                await _close_quietly(component)
            raise
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._running = True
        self._started_at = time.time()
        for node in self._nodes.values():
            if node.spec.section == "sources":
                self._task_group.start_soon(self._run_source, node, name=f"runwatch source {node.spec.id}")
            else:
                self._task_group.start_soon(self._run_consumer, node, name=f"runwatch {node.spec.id}")

    async def stop(self) -> None:
        """Stop the sources, drain every queue, close every component: all within ``shutdown_timeout_seconds``."""
        if not self._running or self._task_group is None:
            return
        self._running = False
        deadline = anyio.current_time() + self.shutdown_timeout_seconds
        dropped_before = self._dropped_by_component()
        self._stopping.set()
        for source in self.sources:
            source.stop()
        task_group, self._task_group = self._task_group, None
        with anyio.CancelScope(deadline=deadline) as scope:
            for node in self._nodes.values():
                await node.finished.wait()
        if scope.cancelled_caught:
            for node in self._nodes.values():
                if node.buffer is not None:
                    node.buffer.abandon("shutdown_timeout")
            task_group.cancel_scope.cancel()
        try:
            await task_group.__aexit__(None, None, None)
        finally:
            if scope.cancelled_caught:
                self._count_unsent_at_sources()
            for node in reversed(list(self._nodes.values())):
                await _close_quietly(node.component, deadline)
            if scope.cancelled_caught:
                self._log_shutdown_losses(dropped_before)

    def _count_unsent_at_sources(self) -> None:
        """After the deadline: what sources hold or took in but never sent on is dropped, counted."""
        for node in self._nodes.values():
            source = node.component
            if not isinstance(source, Source):
                continue
            source.abandon("shutdown_timeout")  # still in its intake: counted by the source
            # Taken from the intake but cut off before being sent downstream.
            unsent = source.unsent_events()
            if unsent > 0:
                dropped = node.stats.dropped_events
                dropped["shutdown_timeout"] = dropped.get("shutdown_timeout", 0) + unsent

    def abandon_sources(self, reason: str) -> int:
        """Nobody will run the sources again (their loop is gone): each refuses later input and drops
        what its intake holds, counted with ``reason``. Returns how many events that dropped."""
        return sum(source.abandon(reason) for source in self.sources)

    @property
    def sources(self) -> list[Source]:
        """The graph's sources, in graph order."""
        return [node.component for node in self._nodes.values() if isinstance(node.component, Source)]

    def _dropped_by_component(self) -> dict[str, int]:
        """Events each component has lost so far, whatever the reason, by component id."""
        return {cid: sum(node.dropped_events().values()) for cid, node in self._nodes.items()}

    def lost_on_paths(self, dropped: dict[str, int] | None = None) -> dict[str, dict[str, int]]:
        """For each sink, the events lost on its way: per component on its path (itself and upstream).

        An event lost before a fan-out is lost on every path through it, so it
        counts once in each of those sinks' entries (never twice in one).

        Args:
            dropped: events lost per component id (default: every drop so far).
        """
        if dropped is None:
            dropped = self._dropped_by_component()
        paths: dict[str, dict[str, int]] = {}
        for spec in self.spec.components:
            if spec.section == "sinks":
                on_path = self.spec.upstream_of(spec.id)
                paths[spec.id] = {
                    other.id: dropped[other.id]
                    for other in self.spec.components  # in graph order, sources first
                    if other.id in on_path and dropped.get(other.id, 0)
                }
        return paths

    def _log_shutdown_losses(self, dropped_before: dict[str, int]) -> None:
        """One error line: how many events each sink did not get because of the shutdown deadline."""
        now = self._dropped_by_component()
        during = {cid: now[cid] - dropped_before.get(cid, 0) for cid in now}
        paths = self.lost_on_paths(during)
        totals = {sink: sum(lost.values()) for sink, lost in paths.items()}
        parts = []
        for sink, total in totals.items():
            where = ", ".join(f"{self._nodes[cid].spec.path} {count}" for cid, count in paths[sink].items())
            parts.append(f"sinks.{sink} {total}" + (f" ({where})" if where else ""))
        detail = "; ".join(parts)
        logger.error(
            "runwatch: the pipeline did not drain within %.1f s; %d event(s) lost (the most one sink missed);"
            " per sink: %s",
            self.shutdown_timeout_seconds,
            max(totals.values(), default=0),
            detail or "none",
        )

    @property
    def running(self) -> bool:
        """Whether the pipeline is started and not stopping."""
        return self._running

    # -- producing ------------------------------------------------------------------

    @property
    def intake(self) -> Source:
        """The default intake: the first source fed by threads of this process (one with a ``bridge``)."""
        for source in self.sources:
            if source.bridge is not None:
                return source
        raise PipelineNotRunning("the pipeline has no in_process source to emit into")

    @property
    def bridge(self) -> ThreadBridge:
        """The hand-over of the default intake (see :attr:`intake`): ``bridge.emit(event)`` from any thread.

        Raises:
            PipelineNotRunning: the graph has no source fed by threads.
        """
        bridge = self.intake.bridge
        assert bridge is not None  # the intake is a source with a bridge
        return bridge

    def emit(self, event: Any) -> None:
        """Hand one event to the default in-process source, from any thread."""
        self.bridge.emit(event)

    async def flush(self, timeout: float | None = None, *, live: bool = False) -> bool:
        """Wait until every event emitted before the call is committed by every sink that acknowledges flushes.

        Live views (the websocket hub) are not waited for: a slow one never
        holds a producer back. With ``live``, the call also waits until each
        live view has taken everything emitted before it (for a subscriber
        that reads history and then follows live events without a gap).

        Returns:
            ``True`` when committed, ``False`` when ``timeout`` passed first.
        """
        if not self._running:
            return False
        with anyio.move_on_after(timeout):
            if not await self._flush_acknowledging():
                return False
            if live:
                await self._flush_live()
            return True
        return False

    async def _flush_live(self) -> None:
        """After a flush: wait until every live view has everything ahead of it.

        Every stage forwarded the finished flush's barrier only after sending
        the events ahead of it to all its consumers, so those events are in
        the live views' buffers (or counted dropped there): a marker put at
        the end of each such buffer now travels behind them.
        """
        done = anyio.Event()
        views = [
            node
            for node in self._nodes.values()
            if node.spec.section == "sinks"
            and not getattr(node.component, "acknowledges_flush", True)
            and node.buffer is not None
        ]
        pending = len(views)
        if not pending:
            return

        def one_done() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                done.set()

        for node in views:
            assert node.buffer is not None
            node.buffer.put_marker(FlushMarker(1, one_done, live=True))
        await done.wait()

    async def _flush_acknowledging(self) -> bool:
        if not self._running:
            return False
        done = anyio.Event()
        pending = 0

        def one_done() -> None:
            nonlocal pending
            pending -= 1
            if pending == 0:
                done.set()

        sources = self.sources
        pending = len(sources)
        for source in sources:
            source.request_flush(one_done)
        await done.wait()
        return True

    # -- running ---------------------------------------------------------------------

    async def _run_source(self, node: _Node) -> None:
        source = node.component
        assert isinstance(source, Source)
        try:
            await source.run(self._stopping)
        except Exception as exc:
            node.stats.failed = True
            self._record_error(node, exc, 0)
        finally:
            self._close_downstream(node)
            node.finished.set()

    async def _run_consumer(self, node: _Node) -> None:
        component = node.component
        buffer = node.buffer
        assert buffer is not None
        interval = component.tick_interval_seconds
        next_tick = time.monotonic() + interval if interval else None
        try:
            while True:
                try:
                    if next_tick is None:
                        item = await buffer.get()
                    else:
                        item = None
                        with anyio.move_on_after(max(0.0, next_tick - time.monotonic())):
                            item = await buffer.get()
                except anyio.EndOfStream:
                    break
                if item is not None:
                    if isinstance(item, FlushMarker):
                        await self._flush_node(node)
                        if node.output is not None:
                            node.output.forward_barrier(item)
                        elif item.live or getattr(component, "acknowledges_flush", True):
                            item.acknowledge()
                    else:
                        await self._process(node, item)
                if next_tick is not None and time.monotonic() >= next_tick:
                    assert interval is not None
                    next_tick = time.monotonic() + interval
                    await self._tick(node)
            await self._flush_node(node)
        finally:
            self._close_downstream(node)
            node.finished.set()

    async def _process(self, node: _Node, batch: list[Any]) -> None:
        component = node.component
        assert isinstance(component, Consumer)
        node.stats.processed_batches += 1
        node.stats.processed_events += len(batch)
        node.stats.in_flight_events = len(batch)
        if node.output is not None:
            node.sent_before_batch = node.output.sent_events
        try:
            if node.strip_receipts and any(type(event) is IngestReceipt for event in batch):
                await self._write_without_receipts(node, component, batch)
            else:
                await component.write(batch)
        except anyio.get_cancelled_exc_class():
            # The shutdown deadline cut this batch off: count what nobody else counts, once.
            # (What a stage sent on is counted downstream; a sink that keeps what it takes counts its own.)
            if not getattr(component, "counts_own_losses", False):
                lost = node.unsent_in_flight()
                if lost:
                    dropped = node.stats.dropped_events
                    dropped["shutdown_timeout"] = dropped.get("shutdown_timeout", 0) + lost
            raise
        except Exception as exc:
            self._record_error(node, exc, len(batch))
        finally:
            node.stats.in_flight_events = 0

    async def _write_without_receipts(self, node: _Node, component: Consumer, batch: list[Any]) -> None:
        """``write`` for a component that does not take receipts: they are taken out of the batch.

        A stage's receipts go on behind what it sent for the batch, in one
        send with its last part, so an ingested batch's receipt still reaches
        the store together with its events (and not at all if ``write``
        raised: the batch is not stored, and its producer is told so).
        """
        events = [event for event in batch if type(event) is not IngestReceipt]
        receipts = [event for event in batch if type(event) is IngestReceipt]
        output = node.output
        if output is None:  # a sink: receipts are runwatch's bookkeeping, not its business
            await component.write(events)
            return
        held = _HeldOutput(output.flush_paths)
        component.output = held
        try:
            await component.write(events)
        except Exception:
            component.output = output
            await held.pass_on(output, [])  # what it sent before it failed goes on, as it would have
            raise
        finally:
            component.output = output
        await held.pass_on(output, receipts)

    async def _flush_node(self, node: _Node) -> None:
        component = node.component
        assert isinstance(component, Consumer)
        started = time.perf_counter()
        try:
            await component.flush()
        except Exception as exc:
            self._record_error(node, exc, 0)
        elapsed = time.perf_counter() - started
        node.stats.flushes += 1
        node.stats.last_flush_seconds = elapsed
        node.stats.max_flush_seconds = max(node.stats.max_flush_seconds, elapsed)

    async def _tick(self, node: _Node) -> None:
        component = node.component
        assert isinstance(component, Consumer)
        try:
            await component.tick(time.time())
        except Exception as exc:
            self._record_error(node, exc, 0)

    def _record_error(self, node: _Node, exc: Exception, dropped: int) -> None:
        stats = node.stats
        stats.errors += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        if dropped:
            stats.dropped_events["component_error"] = stats.dropped_events.get("component_error", 0) + dropped
        if stats.errors & (stats.errors - 1) == 0:  # 1, 2, 4, 8...: no log storm
            logger.error(
                "runwatch: %s raised (%d error(s) so far; batch of %d event(s) dropped)",
                node.spec.path,
                stats.errors,
                dropped,
                exc_info=exc,
            )

    def _close_downstream(self, node: _Node) -> None:
        for consumer in self.spec.consumers_of(node.spec.id):
            downstream = self._nodes[consumer.id]
            downstream.open_upstreams -= 1
            if downstream.open_upstreams == 0 and downstream.buffer is not None:
                downstream.buffer.close()

    # -- statistics -------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Per-component counters: buffer, processed, dropped, errors, flush latency."""
        components: dict[str, Any] = {}
        for cid, node in self._nodes.items():
            entry: dict[str, Any] = {
                "role": node.component.role,
                "type": node.spec.type_name,
                "processed_events": node.stats.processed_events,
                "processed_batches": node.stats.processed_batches,
                "in_flight_events": node.held_in_flight(),
                "errors": node.stats.errors,
                "dropped_events": dict(node.stats.dropped_events),
                "last_error": node.stats.last_error,
                "failed": node.stats.failed,
                "flushes": node.stats.flushes,
                "last_flush_seconds": node.stats.last_flush_seconds,
                "max_flush_seconds": node.stats.max_flush_seconds,
            }
            if node.buffer is not None:
                entry["buffer"] = node.buffer.statistics()._asdict()
            if node.output is not None:
                entry["sent_events"] = node.output.sent_events
            try:
                entry.update(node.component.statistics())
            except Exception as exc:  # statistics must never break the caller
                entry["statistics_error"] = repr(exc)
            components[cid] = entry
        return {
            "running": self._running,
            "started_at": self._started_at,
            "components": components,
        }


async def _close_quietly(component: Component, deadline: float = float("inf")) -> None:
    """``aclose()``, shielded from the caller's cancellation but cut off at ``deadline`` (anyio time)."""
    try:
        with anyio.CancelScope(shield=True), anyio.CancelScope(deadline=deadline):
            await component.aclose()
    except Exception:
        logger.exception("runwatch: closing %s failed", component.id)
