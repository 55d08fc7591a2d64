"""An example runwatch source plugin: follow a JSON-lines file of events as it grows.

``jsonl_tail`` — reads the lines another program appends to ``path``, one
JSON wire event per line (see :func:`runwatch.wire.event_to_dict`), and sends
each as an event. A source with an intake of its own (the file), written
from docs/components.md alone.

- Status: example
- Delivery guarantee: at least once per pipeline run (a line is sent once it
  is complete; the file is read from its start when the pipeline starts, so
  a restart sends every line again)
- Egress: stream (a batch per read, at most every ``poll_interval_seconds``)
- State: stateless (the file is the state)

Example config::

    [sources.tail]
    type = "jsonl_tail"
    path = "events.jsonl"

Options:

==========================  ======  ========  =======  ========================================
Option                      Type    Required  Default  Meaning
==========================  ======  ========  =======  ========================================
``path``                    string  yes       —        the file to follow (it may not exist yet)
``poll_interval_seconds``   number  no        0.05     seconds between reads while idle
``max_line_bytes``          int     no        1048576  a longer line is refused (counted)
==========================  ======  ========  =======  ========================================

Metrics (``statistics()``, shown per component in ``/api/pipeline``):
``read_lines`` (events sent), ``read_bytes`` (bytes read), and, in
``lost_events()``, ``invalid_line`` (lines that are not a valid event).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import orjson
from pydantic import Field

from runwatch.pipeline.component import ComponentContext, Source
from runwatch.pipeline.component import Options as BaseOptions
from runwatch.wire import event_from_dict

__all__ = ["JsonLinesTailSource"]


class JsonLinesTailSource(Source):
    """Sends every event line appended to the file ``path``.

    The component contract (docs/components.md): ``__init__`` only records
    the options; ``run`` reads in a worker thread and sends; ``stop`` wakes
    ``run``; a flush request waits until the file is read to its end; lines
    that are not events are counted in ``lost_events``.
    """

    class Options(BaseOptions):
        """Options of the ``jsonl_tail`` source."""

        #: The file to follow.
        path: str
        #: Seconds between reads while nothing new arrives.
        poll_interval_seconds: float = Field(0.05, gt=0, le=60)
        #: The longest line taken, in bytes.
        max_line_bytes: int = Field(1 << 20, ge=64)

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = Path(options.path)
        self._offset = 0  # bytes of the file read and sent (complete lines only)
        self._flushes: list[Callable[[], Any]] = []  # flush requests waiting for the file's end
        self._wakeup = anyio.Event()
        self._read_lines = 0
        self._read_bytes = 0
        self._invalid = 0

    async def run(self, stopping: anyio.Event) -> None:
        """Read what was appended, send it, and pass on the flush requests that came before it."""
        while True:
            pending, self._flushes = self._flushes, []
            lines = await anyio.to_thread.run_sync(self._read_new_lines)
            events = [event for event in map(self._decode, lines) if event is not None]
            await self.output.send(events)
            for callback in pending:  # everything in the file when they were asked for is sent now
                self.output.send_flush_barrier(callback)
            if stopping.is_set():
                return
            if not lines and not self._flushes:
                with anyio.move_on_after(self.options.poll_interval_seconds):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()

    def _read_new_lines(self) -> list[bytes]:
        """The complete lines appended since the last read (worker thread)."""
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for its newline
        self._offset += end
        self._read_bytes += end
        return data[:end].splitlines()

    def _decode(self, line: bytes) -> Any:
        if not line.strip():
            return None
        try:
            if len(line) > self.options.max_line_bytes:
                raise ValueError("line too long")
            event = event_from_dict(orjson.loads(line))
        except (ValueError, TypeError):  # orjson.JSONDecodeError is a ValueError
            self._invalid += 1
            return None
        self._read_lines += 1
        return event

    def stop(self) -> None:
        """Wake ``run`` now: it reads once more and returns."""
        self._wakeup.set()

    def request_flush(self, callback: Callable[[], Any]) -> None:
        """Flush what is in the file now: ``run`` reads to its end, sends it, then the barrier."""
        self._flushes.append(callback)
        self._wakeup.set()

    def abandon(self, reason: str) -> int:
        """Nobody reads the file again: pending flush requests are dropped (the lines stay in the file)."""
        self._flushes.clear()
        return 0

    def lost_events(self) -> dict[str, int]:
        return {"invalid_line": self._invalid} if self._invalid else {}

    def statistics(self) -> dict[str, Any]:
        """Counters for ``/api/pipeline``."""
        return {"path": str(self.path), "read_lines": self._read_lines, "read_bytes": self._read_bytes}
