"""An example runwatch sink plugin: each event as one JSON line in a file.

``jsonl_file`` — appends every event it receives to a file, one JSON object
per line (the wire form of :func:`runwatch.wire.event_to_dict`).

- Status: example
- Delivery guarantee: best effort (every line has reached the operating
  system when ``flush()`` returns; there is no fsync, and a crash loses the
  lines written since the last flush)
- Egress: stream (lines are written per batch, flushed at every barrier)
- State: stateless

Example config::

    [sinks.lines]
    type = "jsonl_file"
    inputs = ["app"]
    path = "events.jsonl"

Options:

=========  ======  ========  =======  ====================================
Option     Type    Required  Default  Meaning
=========  ======  ========  =======  ====================================
``path``   string  yes       —        the file to append to (created, with
                                      its parent directories, on start)
=========  ======  ========  =======  ====================================

Metrics (``statistics()``, shown per component in ``/api/pipeline``):
``written_events`` (events written to the file), ``written_bytes`` (bytes
written), ``flushes`` (completed flushes).

Non-finite floats (NaN, ±Inf) have no JSON form: orjson writes them as
``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import anyio
import orjson

from runwatch.pipeline.component import ComponentContext, Sink
from runwatch.pipeline.component import Options as BaseOptions
from runwatch.wire import event_to_dict

__all__ = ["JsonLinesSink"]


def _encode(event: Any) -> bytes:
    # Enum values (a lifecycle's transition) are already plain strings in the
    # wire form; numpy scalars in payloads go through OPT_SERIALIZE_NUMPY.
    return orjson.dumps(event_to_dict(event), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE)


class JsonLinesSink(Sink):
    """Appends each event as one JSON line to the file ``path``.

    The component contract (see :mod:`runwatch.pipeline.component`):
    ``__init__`` only records the options; ``start`` opens the file;
    ``write`` appends a batch; ``flush`` pushes everything written to the OS;
    ``aclose`` flushes and closes. File I/O runs in a worker thread so that
    the event loop never blocks on the disk.
    """

    class Options(BaseOptions):
        """Options of the ``jsonl_file`` sink."""

        #: The file to append to.
        path: str

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        super().__init__(id, options, context)
        self.path = Path(options.path)
        self._file: IO[bytes] | None = None
        self._written_events = 0
        self._written_bytes = 0
        self._flushes = 0

    async def start(self) -> None:
        """Create the parent directories and open the file for appending."""
        self._file = await anyio.to_thread.run_sync(self._open)

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("ab")

    async def write(self, batch: list[Any]) -> None:
        """Encode the batch on the loop (cheap) and write it in a worker thread."""
        if self._file is None:
            raise RuntimeError(f"sink {self.id!r} is not started or already closed")
        data = b"".join(_encode(event) for event in batch)
        await anyio.to_thread.run_sync(self._file.write, data)
        self._written_events += len(batch)
        self._written_bytes += len(data)

    async def flush(self) -> None:
        """Push everything written so far from Python's buffer to the OS."""
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.flush)
            self._flushes += 1

    async def aclose(self) -> None:
        """Flush and close the file; calling it again does nothing."""
        file, self._file = self._file, None
        if file is not None:
            await anyio.to_thread.run_sync(file.close)

    def statistics(self) -> dict[str, Any]:
        """Counters for ``/api/pipeline``."""
        return {
            "path": str(self.path),
            "written_events": self._written_events,
            "written_bytes": self._written_bytes,
            "flushes": self._flushes,
        }
