"""The on-disk spool of a remote producer: ingest batches kept until the server acknowledged them.

Layout: a spool root (one per server, under the monitor's data directory)
holds one directory per producer process, ``p-<uuid>``::

    <root>/p-1f0c…/lock          held (flock) by the process that owns the spool
    <root>/p-1f0c…/00000001.seg  records, appended in order
    <root>/p-1f0c…/acked         "<segment> <offset>": the first record not acknowledged

A record is one ingest request body, framed as ``length, crc32, event
count`` (three little-endian u32) and the body: a batch
(``{"batch_id", "events"}`` for ``POST /api/ingest``), or, with the top bit
of the count set (:data:`IMAGE_RECORD_FLAG`), one image too large for a
batch with its raw bytes (for ``POST /api/ingest/image``). The
body is fixed once spooled: a retry, a replay after a crash and ``runwatch
sync`` send the same bytes under the same batch id, so the server stores it
once (its batch ids are scoped per run and checked against a digest of the
content; see docs/protocol.md).

Durability (the fsync policy):

- each record is written with one ``write()`` when it is cut: from then on it
  survives the producer's death (``kill -9``: the kernel has it);
- segments are ``fsync``-ed by :meth:`Spool.sync` (the remote sink calls it
  every ``fsync_interval_seconds``, at every flush and at close): a record
  survives an OS crash or power loss once synced;
- the ``acked`` cursor is replaced atomically (write, rename) without fsync:
  if a crash loses its last update, the records after the older cursor are
  sent again and the server answers them as duplicates.

A torn record at the end of a segment (a crash in the middle of a write) is
cut off when the spool is opened again; nothing before it is lost.

Bounds: records wait on disk up to ``max_bytes`` (appends past it are
refused, and the caller counts them dropped); a segment is closed past
``segment_bytes`` and deleted once every record in it is acknowledged.

Ownership: a spool is written only by the process that created it, which
holds its ``lock`` for its whole life. A spool whose lock is free (its
process ended, cleanly with records left or by a crash) is *adopted* by the
next producer of the same root, or by ``runwatch sync``: it sends the
records and deletes the directory once all are acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import uuid
import zlib
from pathlib import Path
from typing import Final, NamedTuple

try:  # POSIX: a spool's lock is an flock held for the life of its process
    import fcntl
except ImportError:  # pragma: no cover - Windows: spools are never adopted
    fcntl = None  # type: ignore[assignment]  # the module is optional

__all__ = [
    "DEFAULT_MAX_BYTES",
    "IMAGE_RECORD_FLAG",
    "DEFAULT_SEGMENT_BYTES",
    "Spool",
    "SpoolRecord",
    "spool_directories",
]

#: The most bytes a spool root's records may take on disk by default (1 GiB).
DEFAULT_MAX_BYTES: Final = 1 << 30
#: Where a segment is closed and the next one started (16 MiB).
DEFAULT_SEGMENT_BYTES: Final = 16 << 20

_FRAME: Final = struct.Struct("<III")  # body length, crc32 of the body, events in it (| IMAGE_RECORD_FLAG)
#: Set in a frame's event count: the record is an image body, not a batch.
IMAGE_RECORD_FLAG: Final = 1 << 31
_SEGMENT_SUFFIX: Final = ".seg"
_PREFIX: Final = "p-"


class SpoolRecord(NamedTuple):
    """Where one record is: its segment number, its offset there, its body's size and event count, and whether
    it is an image body (``POST /api/ingest/image``) rather than a batch."""

    segment: int
    offset: int
    size: int
    events: int
    image: bool = False

    @property
    def end(self) -> int:
        """The offset just past the record."""
        return self.offset + _FRAME.size + self.size


def spool_directories(root: Path) -> list[Path]:
    """The producer spools under ``root``, oldest name first (nothing when ``root`` does not exist)."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.is_dir() and path.name.startswith(_PREFIX))


class Spool:
    """One producer's spool directory (see the module docs).

    Use :meth:`create` for a new spool of this process, :meth:`adopt` for one
    whose process is gone. Thread-safe: one thread appends while another
    reads and acknowledges.

    Args:
        directory: the spool's directory (``p-<uuid>``).
        segment_bytes: where a segment is closed.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be at least 1024, got {segment_bytes}")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_file: int | None = None
        self._records: list[SpoolRecord] = []  # not acknowledged, in order
        self._unacked_bytes = 0
        self._unacked_events = 0
        self._segment = 0  # the segment being written
        self._segment_size = 0
        self._write_fd: int | None = None
        self._read_fds: dict[int, int] = {}
        self._appended = 0  # records appended by this process
        self._acked = 0  # records acknowledged through this object
        self._dirty = False  # written since the last sync
        self.torn_bytes = 0  # cut off at the end of a segment when opened

    # -- opening -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The spool's unique name (its directory's): the prefix of the batch ids cut into it."""
        return self.directory.name

    @classmethod
    def create(cls, root: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Spool:
        """A new, empty spool under ``root`` owned by this process (directories made 0700).

        Raises:
            OSError: the directory cannot be made or locked.
        """
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory = root / f"{_PREFIX}{uuid.uuid4().hex}"
        directory.mkdir(mode=0o700)
        spool = cls(directory, segment_bytes=segment_bytes)
        if not spool._try_lock():  # pragma: no cover - a fresh name nobody else knows
            raise OSError(f"cannot lock the new spool {directory}")
        spool._load()
        return spool

    @classmethod
    def adopt(cls, directory: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Spool | None:
        """Take over a spool whose process is gone; ``None`` while its process still holds it.

        Raises:
            OSError: the spool cannot be read.
        """
        spool = cls(directory, segment_bytes=segment_bytes)
        if not spool._try_lock():
            return None
        try:
            spool._load()
        except BaseException:
            spool.close()
            raise
        return spool

    def _try_lock(self) -> bool:
        if fcntl is None:  # pragma: no cover - no flock: only the creator may use it
            return not (self.directory / "lock").exists()
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_file = fd
        return True

    def _load(self) -> None:
        """Read the acked cursor and every segment; cut off a torn tail."""
        cursor = self._read_cursor()
        segments = sorted(int(path.stem) for path in self.directory.glob(f"*{_SEGMENT_SUFFIX}") if path.stem.isdigit())
        for number in segments:
            if number < cursor[0]:
                self._segment_path(number).unlink(missing_ok=True)  # wholly acknowledged
                continue
            for record in self._scan(number):
                if (record.segment, record.offset) >= cursor:
                    self._records.append(record)
                    self._unacked_bytes += _FRAME.size + record.size
                    self._unacked_events += record.events
        self._segment = (segments[-1] if segments else 0) + 1  # appends go to a fresh segment

    def _scan(self, number: int) -> list[SpoolRecord]:
        path = self._segment_path(number)
        data = path.read_bytes()
        records: list[SpoolRecord] = []
        offset = 0
        while offset + _FRAME.size <= len(data):
            size, crc, count = _FRAME.unpack_from(data, offset)
            body = data[offset + _FRAME.size : offset + _FRAME.size + size]
            if len(body) != size or zlib.crc32(body) != crc:
                break
            events = count & ~IMAGE_RECORD_FLAG
            records.append(SpoolRecord(number, offset, size, events, bool(count & IMAGE_RECORD_FLAG)))
            offset += _FRAME.size + size
        if offset < len(data):  # a torn or corrupt tail: nothing after it can be trusted
            self.torn_bytes += len(data) - offset
            with open(path, "r+b") as file:
                file.truncate(offset)
        return records

    def _read_cursor(self) -> tuple[int, int]:
        try:
            text = (self.directory / "acked").read_text()
            segment, offset = text.split()
            return int(segment), int(offset)
        except (OSError, ValueError):
            return 0, 0

    def _segment_path(self, number: int) -> Path:
        return self.directory / f"{number:08d}{_SEGMENT_SUFFIX}"

    # -- writing (the producer's side) ----------------------------------------------------------

    def append(self, body: bytes, events: int, *, image: bool = False) -> SpoolRecord:
        """Write one record (one ``write()``); it is on its way to the disk when this returns.

        Args:
            body: the request body.
            events: events in it.
            image: ``body`` is an image body (``POST /api/ingest/image``), not a batch.

        Raises:
            OSError: the write failed (disk full...); nothing of it counts as spooled.
        """
        count = events | IMAGE_RECORD_FLAG if image else events
        frame = _FRAME.pack(len(body), zlib.crc32(body), count) + body
        with self._lock:
            if self._write_fd is None or self._segment_size >= self.segment_bytes:
                self._next_segment()
            assert self._write_fd is not None
            offset = self._segment_size
            written = os.write(self._write_fd, frame)
            if written != len(frame):  # a short write: cut it off so the segment stays readable
                os.ftruncate(self._write_fd, offset)
                raise OSError(f"short write to the spool ({written} of {len(frame)} bytes)")
            self._segment_size += written
            record = SpoolRecord(self._segment, offset, len(body), events, image)
            self._records.append(record)
            self._unacked_bytes += len(frame)
            self._unacked_events += events
            self._appended += 1
            self._dirty = True
            return record

    def _next_segment(self) -> None:
        if self._write_fd is not None:
            os.fsync(self._write_fd)  # a closed segment is complete on disk
            os.close(self._write_fd)
            self._segment += 1
        path = self._segment_path(self._segment)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = 0
        _fsync_directory(self.directory)

    def sync(self) -> None:
        """``fsync`` what was appended since the last sync (see the module docs). Cheap when nothing was."""
        with self._lock:
            if self._dirty and self._write_fd is not None:
                os.fsync(self._write_fd)
            self._dirty = False

    # -- reading and acknowledging (the sender's side) -------------------------------------------

    def first(self) -> SpoolRecord | None:
        """The oldest record not acknowledged, or ``None``."""
        with self._lock:
            return self._records[0] if self._records else None

    def read(self, record: SpoolRecord) -> bytes:
        """The body of ``record``.

        Raises:
            OSError: the segment cannot be read.
        """
        with self._lock:
            fd = self._read_fds.get(record.segment)
            if fd is None:
                fd = self._read_fds[record.segment] = os.open(self._segment_path(record.segment), os.O_RDONLY)
        return os.pread(fd, record.size, record.offset + _FRAME.size)

    def acknowledge(self, record: SpoolRecord) -> None:
        """The server has ``record`` (the oldest one): move the cursor past it; drop finished segments.

        Raises:
            ValueError: ``record`` is not the oldest record not acknowledged.
        """
        with self._lock:
            if not self._records or self._records[0] != record:
                raise ValueError(f"{record} is not the oldest record of {self.directory}")
            self._records.pop(0)
            self._unacked_bytes -= _FRAME.size + record.size
            self._unacked_events -= record.events
            self._acked += 1
            following = self._records[0] if self._records else None
            cursor = (following.segment, following.offset) if following is not None else (record.segment, record.end)
            for number in [number for number in self._read_fds if number < cursor[0]]:
                os.close(self._read_fds.pop(number))
        self._write_cursor(cursor)
        # Records are acknowledged in order: the segments before the cursor's are done (never the one
        # being written, which the cursor cannot pass).
        for number in range(record.segment, cursor[0]):
            self._segment_path(number).unlink(missing_ok=True)

    def _write_cursor(self, cursor: tuple[int, int]) -> None:
        temporary = self.directory / "acked.tmp"
        temporary.write_text(f"{cursor[0]} {cursor[1]}\n")
        os.replace(temporary, self.directory / "acked")

    # -- state ----------------------------------------------------------------------------------

    @property
    def unacked_records(self) -> int:
        """Records not acknowledged yet."""
        with self._lock:
            return len(self._records)

    @property
    def unacked_events(self) -> int:
        """Events in the records not acknowledged yet."""
        return self._unacked_events

    @property
    def unacked_bytes(self) -> int:
        """Bytes on disk of the records not acknowledged yet (frames included)."""
        with self._lock:
            return self._unacked_bytes

    @property
    def appended(self) -> int:
        """Records this process appended."""
        return self._appended

    @property
    def acknowledged(self) -> int:
        """Records acknowledged through this object."""
        return self._acked

    def close(self, *, remove_if_empty: bool = True) -> None:
        """Sync and close the files, release the lock; remove the directory when nothing is left to send.

        Idempotent.
        """
        with self._lock:
            if self._write_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._write_fd)
                os.close(self._write_fd)
                self._write_fd = None
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            empty = not self._records
        if empty and remove_if_empty and self._lock_file is not None:
            for path in self.directory.iterdir():
                if path.name != "lock":
                    path.unlink(missing_ok=True)
            (self.directory / "lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.directory.rmdir()
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the flock
            self._lock_file = None

    def __repr__(self) -> str:
        return f"<Spool {self.directory} unacked={self.unacked_records}>"


def _fsync_directory(directory: Path) -> None:
    """Make a new file's name durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)
