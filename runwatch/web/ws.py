"""Websocket endpoints: ``/ws`` (live events out) and ``/ws/ingest`` (batches in)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from ..exceptions import BatchIdConflict, BatchNotStored, PipelineNotRunning, StoreUnavailable, WireError
from ..sinks.websocket import LIVE_FEED, LIVE_HUB, Subscriber, SubscriptionFilter, WebsocketHub
from ..sources.ingest import INGEST
from ..wire import messages
from ..wire.ingest import parse_ingest_body
from .http import ApiError, web_context
from .ingest import with_run_rules

__all__ = ["router", "wait_live_sockets_closed"]

router = APIRouter()

logger = logging.getLogger("runwatch.web")

#: Largest message a client may send (a subscribe message or an ingest batch).
MAX_CLIENT_MESSAGE_BYTES = 1024 * 1024

#: The close reason of subscribers closed because the server stops (sent with code 1001).
SHUTTING_DOWN = "server shutting down"


def _query_replay(websocket: WebSocket) -> int:
    """``?replay=N``: how many of the latest kept events to send before the live ones (default 0).

    Raises:
        ValueError: N is not a whole number from 0 to 1,000,000.
    """
    text = websocket.query_params.get("replay")
    if not text:
        return 0
    if not text.isdigit() or int(text) > 1_000_000:
        raise ValueError(f"replay: must be a whole number from 0 to 1000000, got {text[:20]!r}")
    return int(text)


def _query_after(websocket: WebSocket) -> int | None:
    """``?after=<cursor>``: resume after this live-stream sequence (a server on the bus); ``None``: not asked.

    Raises:
        ValueError: the cursor is not a whole number.
    """
    text = websocket.query_params.get("after")
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 19:
        raise ValueError(f"after: must be a cursor (a whole number) from a batch message, got {text[:20]!r}")
    return int(text)


#: How long a resume waits for this node to have seen the client's cursor (it may lag the node the client left).
RESUME_WAIT_SECONDS = 2.0


async def _resume(context: Any, hub: WebsocketHub, subscription: SubscriptionFilter, after: int) -> Subscriber | None:
    """Subscribe, queueing every event after ``after`` first; ``None`` when that is no longer possible.

    The hub's kept events serve a recent cursor; an older one is read back from
    the bus's live stream up to what the hub has, then the hub's kept events
    follow. Both steps end with a subscription taken in the same loop step as
    its replay, so nothing comes twice and nothing is skipped.
    """
    feed = context.services.get(LIVE_FEED)
    if feed is None and hub.cursor is None:
        return None  # not on the bus: no cursors to resume from
    await hub.wait_cursor(after, RESUME_WAIT_SECONDS)
    subscriber = hub.subscribe(subscription)
    if hub.replay_after(subscriber, after):
        return subscriber
    hub.unsubscribe(subscriber)
    through = hub.cursor
    if feed is None or through is None:
        return None
    backlog = await feed.read_range(after, through)
    if backlog is None:
        return None
    subscriber = hub.subscribe(subscription)
    hub.offer_backlog(subscriber, backlog, through)
    if hub.replay_after(subscriber, through):
        return subscriber
    hub.unsubscribe(subscriber)  # the hub moved on past what it keeps while reading back: start afresh
    return None


async def _parse_filter(data: Any) -> SubscriptionFilter:
    """A subscription filter, compiled on a worker thread (globs can take tens of ms; the loop carries ingest)."""
    return await anyio.to_thread.run_sync(SubscriptionFilter.parse, data)


async def _query_filter(websocket: WebSocket) -> SubscriptionFilter:
    params = websocket.query_params
    raw = {key: params[key] for key in ("runs", "kinds", "metrics", "format") if params.get(key)}
    return await _parse_filter(raw)


@router.websocket("/ws")
async def live_events(websocket: WebSocket) -> None:
    """Push batches of live events matching the subscriber's filter (see docs/protocol.md)."""
    context = web_context(websocket)
    hub = context.services.get(LIVE_HUB)
    if hub is None or context.shutting_down:
        await websocket.close(code=1013, reason="no live event hub in this server")
        return
    try:
        subscription = await _query_filter(websocket)
        replay = _query_replay(websocket)
        after = _query_after(websocket)
    except ValueError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    await websocket.accept()
    closed = anyio.Event()  # set once this socket's close frame is sent: the server's shutdown waits for it
    open_sockets = _open_live_sockets(websocket.app.state)
    open_sockets.add(closed)
    subscriber = None
    try:
        # Everything emitted before this point is committed (so a history read after
        # "subscribed" has it); everything after is published to this subscriber.
        await _committed_so_far(context)
        if context.shutting_down:  # the server began to stop meanwhile: close with 1001 below
            return
        reset = False
        if after is None:
            subscriber = hub.subscribe(subscription)
            hub.replay(subscriber, replay)  # queued now, before any live message can be
        else:
            subscriber = await _resume(context, hub, subscription, after)
            if subscriber is None:  # the client reloads history over REST, then follows from here
                reset = True
                subscriber = hub.subscribe(subscription)
        await websocket.send_text(messages.encode(messages.subscribed(subscription.as_dict())))
        if reset:
            await websocket.send_text(messages.encode(messages.reset("cursor_expired")))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_send_loop, websocket, subscriber, tasks.cancel_scope)
            await _receive_loop(websocket, hub, subscriber)
            tasks.cancel_scope.cancel()
    except WebSocketDisconnect:
        pass
    finally:
        if subscriber is not None:
            hub.unsubscribe(subscriber)
        if websocket.client_state is WebSocketState.CONNECTED:
            reason = subscriber.closed_reason if subscriber is not None else None
            if reason is None and context.shutting_down:
                reason = SHUTTING_DOWN
            code = 1001 if reason == SHUTTING_DOWN else 1008
            with anyio.CancelScope(shield=True):
                try:
                    await websocket.close(code=code, reason=(reason or "closing")[:120])
                except RuntimeError:  # already closing
                    pass
        open_sockets.discard(closed)
        closed.set()


def _open_live_sockets(state: Any) -> set[anyio.Event]:
    """The ``/ws`` connections of an app whose close frame is not sent yet (one event each)."""
    sockets: set[anyio.Event] | None = getattr(state, "live_sockets", None)
    if sockets is None:
        sockets = state.live_sockets = set()
    return sockets


async def wait_live_sockets_closed(state: Any, timeout: float) -> bool:
    """Wait until every ``/ws`` connection of the app with ``state`` has sent its close frame.

    Call on the app's event loop. Returns whether they all did within
    ``timeout`` seconds.
    """
    with anyio.move_on_after(timeout):
        for closed in list(_open_live_sockets(state)):
            await closed.wait()
        return True
    return False


async def _committed_so_far(context: object) -> None:
    """Wait until what was emitted before is in the store, so that history read
    after ``subscribed`` and the live stream meet without a gap."""
    pipeline = getattr(context, "pipeline", None)
    if pipeline is not None:
        await pipeline.flush(timeout=5, live=True)


async def _send_loop(websocket: WebSocket, subscriber: Subscriber, scope: anyio.CancelScope) -> None:
    try:
        while True:
            text = await subscriber.next_message()
            await websocket.send_text(text)
    except (anyio.EndOfStream, WebSocketDisconnect, RuntimeError):
        scope.cancel()


async def _receive_loop(websocket: WebSocket, hub: object, subscriber: Subscriber) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text") or message.get("bytes") or b""
        if len(data) > MAX_CLIENT_MESSAGE_BYTES:
            await _send_error(websocket, "message too large")
            continue
        try:
            subscription = await _parse_filter(messages.parse_subscribe(data))
        except ValueError as exc:  # a WireError, or a filter the hub refuses
            await _send_error(websocket, str(exc))
            continue
        subscriber.subscription = subscription
        await websocket.send_text(messages.encode(messages.subscribed(subscription.as_dict())))


async def _send_error(websocket: WebSocket, message: str, **extra: object) -> None:
    await websocket.send_text(messages.encode(messages.error(message, **extra)))


@router.websocket("/ws/ingest")
async def ingest_batches(websocket: WebSocket) -> None:
    """Take ``{"batch_id", "events"}`` messages; answer each with an ack once committed, or an error.

    Whatever a message holds, the answer is a message: a refused batch (invalid,
    a reused batch id, not stored) is an ``error`` naming it, and the socket stays
    open for the next one.
    """
    context = web_context(websocket)
    source = context.services.get(INGEST)
    if source is None or context.shutting_down:
        await websocket.close(code=1013, reason="no ingest in this server")
        return
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text") or message.get("bytes") or b""
            if len(data) > MAX_CLIENT_MESSAGE_BYTES:
                await _send_error(websocket, "message too large", field=None, batch_id=None, status=413)
                continue
            if isinstance(data, str):
                data = data.encode()
            batch_id = None
            try:
                body = parse_ingest_body(data, context.max_ingest_events)
                batch_id = body.batch_id
                result = await source.submit(
                    body.events, batch_id, digest=body.digest, admit=lambda events: with_run_rules(context, events)
                )
            except (ApiError, WireError) as exc:
                await _send_error(
                    websocket, exc.message, field=exc.field, batch_id=messages.batch_id_of(data), status=exc.status
                )
                continue
            except PipelineNotRunning:
                await websocket.close(code=1001, reason="shutting down")
                return
            except BatchIdConflict as exc:
                await _send_error(websocket, str(exc), field="batch_id", batch_id=batch_id, status=409)
                continue
            except (BatchNotStored, StoreUnavailable) as exc:
                await _send_error(websocket, str(exc), field=None, batch_id=batch_id, status=503)
                continue
            except Exception:  # a fault of ours: answer it (the socket stays usable) and log it
                logger.exception("runwatch: /ws/ingest failed on batch %r", batch_id)
                await _send_error(websocket, "internal error", field=None, batch_id=batch_id, status=500)
                continue
            ack = messages.ack(batch_id, result.accepted, result.duplicate)
            await websocket.send_text(messages.encode(ack))
    except WebSocketDisconnect:
        return
