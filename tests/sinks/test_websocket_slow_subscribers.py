"""Slow and absent websocket readers never hold back ingest or the other subscribers.

One running WebMonitor (``web_port=0``) with four ``/ws`` subscribers while a
training thread logs metrics: one that never reads (a tiny receive buffer, so
the server's socket backs up at once), one that reads slowly, and two that
read normally. The hub's per-subscriber queues are small (64 messages) so the laggards lag.
On a busy host the hub's ticks come late and a window grows past 1 MiB (the
clients' message limit): it must still reach every reader, as several messages.

Pass criteria: every event is committed and ``flush()`` returns; the normal
subscribers receive every event, in order; the laggards lose events only as
counted ``{"type": "lagged", "dropped": N}`` notices (delivered + dropped ==
logged) or are closed with 1008 past the hard limit. How much the never-reader
costs ingest (the ≥ 95 % of undisturbed target) is a benchmark figure
(``benchmarks/bench_web.py``), not asserted here.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from chunk_helpers import stored_calls
from tiers import soak_timeout, tier
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from runwatch import MonitorConfig, WebMonitor
from runwatch.pipeline.config import default_pipeline_config

RUN = "slow-subs"
PATH = f"/ws?runs={RUN}&kinds=metric"
MIN_CHUNKS = tier(40, 600)  # 2 s of load (30 s in the soak tier), longer until both laggards have lagged
MAX_CHUNKS = MIN_CHUNKS + 360  # then at most 18 s more until both laggards have lagged
CHUNK = 500
CHUNK_SECONDS = 0.05  # 10,000 events/s offered
#: Values per event (small: the readers parse JSON in this same process, beside the producer and the pipeline).
WIDTH = 4
SLOW_READ_SECONDS = 0.2  # the slow reader takes one message per 0.2 s while the load runs; the hub publishes at 25 Hz
TIMEOUT = 30


def ws_url(monitor: WebMonitor, path: str) -> str:
    """The websocket URL of ``path`` on the monitor's server."""
    assert monitor.web_url is not None
    return monitor.web_url.replace("http://", "ws://") + path


async def connect_small_buffer(monitor: WebMonitor) -> ClientConnection:
    """A laggard's connection: tiny receive buffer, no compression, a one-message client queue.

    The kernel's socket buffers cannot then hide that it reads slowly (or not at all).
    """
    assert monitor.web_url is not None
    port = int(monitor.web_url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no window autotuning
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    ws = await connect(ws_url(monitor, PATH), sock=sock, compression=None, max_queue=1, open_timeout=TIMEOUT)
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


class Tally:
    """What one subscriber got: sequence numbers delivered, events reported dropped, lag notices, close code."""

    def __init__(self) -> None:
        self.target: int | None = None  # set once the producer has finished
        self.seqs: list[int] = []
        self.dropped = 0
        self.lag_notices = 0
        self.close_code: int | None = None
        self.closed: str | None = None  # how the connection ended, whichever side closed it

    def take(self, message: dict[str, Any]) -> None:
        """Count one message."""
        if message["type"] == "lagged":
            self.lag_notices += 1
            self.dropped += message["dropped"]
        else:
            assert message["type"] == "batch", message
            self.seqs.extend(int(event["values"]["seq"]) for event in message["events"])

    @property
    def accounted(self) -> int:
        """Events delivered or reported dropped."""
        return len(self.seqs) + self.dropped


async def read_all(ws: ClientConnection, tally: Tally, slow_while: anyio.Event | None = None) -> None:
    """Read until every logged event is delivered or reported dropped, or the server closes the socket.

    With ``slow_while``, pause between messages until that event is set (a
    deliberately slow reader), then read at full speed.
    """
    try:
        while tally.target is None or tally.accounted < tally.target:
            message = None
            with anyio.move_on_after(0.25):  # wake up to see a target set while no message comes
                message = await ws.recv()
            if message is None:
                continue
            tally.take(json.loads(message))
            if slow_while is not None and not slow_while.is_set():
                with anyio.move_on_after(SLOW_READ_SECONDS):
                    await slow_while.wait()
    except ConnectionClosed as closed:
        tally.close_code = closed.rcvd.code if closed.rcvd is not None else None
        tally.closed = str(closed)  # "sent 1009 (message too big)...": the client closed it


def laggard_drops(monitor: WebMonitor) -> list[int]:
    """Events each hub subscriber has missed so far."""
    hub = monitor.pipeline_thread.pipeline.component("live")
    return [subscriber.dropped_events for subscriber in hub.subscribers]  # type: ignore[attr-defined]


def produce(monitor: WebMonitor) -> tuple[int, bool, float]:
    """Log numbered metric events at a steady pace, at least MIN_CHUNKS chunks and until two subscribers lag.

    Returns (logged, flushed, seconds).
    """
    started = time.monotonic()
    seq = 0
    next_chunk = started
    padding = {f"pad_{i:02d}": 0.125 * i for i in range(WIDTH - 2)}
    for chunk in range(MAX_CHUNKS):
        if chunk >= MIN_CHUNKS and sum(1 for dropped in laggard_drops(monitor) if dropped) >= 2:
            break
        for _ in range(CHUNK):
            monitor.update_metrics({"seq": float(seq), "loss": 1.0 / (seq + 1), **padding})
            seq += 1
        next_chunk += CHUNK_SECONDS
        pause = next_chunk - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the producer
    flushed = monitor.flush(timeout=TIMEOUT)
    return seq, flushed, time.monotonic() - started


def stored_metric_rows(db: Path) -> int:
    """Logging calls committed to the store."""
    return stored_calls(db)


@pytest.mark.soak
@soak_timeout(45, 240)
async def test_never_reading_and_slow_subscribers_hold_back_neither_ingest_nor_others(tmp_path: Path) -> None:
    """Laggards lose only counted events; ingest commits everything; normal subscribers get every event in order."""
    pipeline = default_pipeline_config()  # no alert rules: exactly the logged events flow
    # 64 messages of slack: a normal reader keeps up even on a loaded shared host (20 runs in a row beside three
    # busy processes on 2 cores), and the slow reader (5 messages/s) still lags within a few seconds of load.
    pipeline["sinks"]["live"].update({"max_messages_per_subscriber": 64})
    db = tmp_path / "subs.db"
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "data"), web_port=0, pipeline=pipeline)
    monitor = await anyio.to_thread.run_sync(WebMonitor, config)
    try:
        await anyio.to_thread.run_sync(lambda: monitor.start_training(run_id=RUN))
        never = await connect_small_buffer(monitor)
        slow = await connect_small_buffer(monitor)
        async with (
            connect(ws_url(monitor, PATH), open_timeout=TIMEOUT) as normal_a,
            connect(ws_url(monitor, PATH), open_timeout=TIMEOUT) as normal_b,
        ):
            for ws in (normal_a, normal_b):
                assert json.loads(await ws.recv())["type"] == "subscribed"
            tallies = {name: Tally() for name in ("slow", "normal_a", "normal_b", "never")}
            result: dict[str, Any] = {}
            produced = anyio.Event()
            with anyio.fail_after(TIMEOUT * 2):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(read_all, slow, tallies["slow"], produced)
                    tasks.start_soon(read_all, normal_a, tallies["normal_a"])
                    tasks.start_soon(read_all, normal_b, tallies["normal_b"])
                    result["logged"], result["flushed"], result["seconds"] = await anyio.to_thread.run_sync(
                        produce, monitor
                    )
                    total = result["logged"]
                    for tally in tallies.values():
                        tally.target = total
                    produced.set()
                    # Only now does the never-reader start reading: what it missed is reported, never silently lost.
                    tasks.start_soon(read_all, never, tallies["never"])
            live = monitor.statistics()["components"]["live"]
            print(  # shown with pytest -s
                f"\nslow subscribers: logged {total} in {result['seconds']:.2f} s; "
                f"never-reader dropped {tallies['never'].dropped} ({tallies['never'].lag_notices} notices, "
                f"close {tallies['never'].close_code}), slow reader got {len(tallies['slow'].seqs)} and dropped "
                f"{tallies['slow'].dropped} ({tallies['slow'].lag_notices} notices, "
                f"close {tallies['slow'].close_code}); "
                f"hub: {live['subscriber_dropped_events']} dropped"
            )

            # Ingest was not held back: every event committed, and the flush barrier returned.
            assert total >= MIN_CHUNKS * CHUNK
            assert result["flushed"] is True
            assert stored_metric_rows(db) == total

            # Normal subscribers: every event, in order, never a lag notice.
            for name in ("normal_a", "normal_b"):
                tally = tallies[name]
                assert tally.closed is None, (name, tally.closed)
                assert tally.lag_notices == 0, (name, tally.dropped)
                assert tally.seqs == list(range(total)), name

            # Laggards: what they did not get is counted in lagged notices, or they were closed past the limit.
            assert live["subscriber_dropped_events"] > 0
            assert tallies["never"].dropped > 0 or tallies["never"].close_code == 1008
            for name in ("never", "slow"):
                tally = tallies[name]
                assert tally.seqs == sorted(tally.seqs) and len(set(tally.seqs)) == len(tally.seqs), name
                if tally.close_code is None:
                    assert tally.accounted == total, (name, tally.accounted, total)
                    if name == "never":
                        assert tally.lag_notices >= 1 and tally.dropped > 0
                else:
                    assert tally.close_code == 1008, (name, tally.close_code)
            await never.close()
            await slow.close()
    finally:
        await anyio.to_thread.run_sync(monitor.close)
