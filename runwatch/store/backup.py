"""Backups of the store: create one while the writer runs, check one, restore one.

Creating: SQLite's online backup API copies the database page by page into a
temporary file beside the final one, in ONE step. The store is in WAL mode,
where a reader never blocks the writer, so a single step (one read snapshot)
lets the SQLite sink keep committing for the whole copy and yields exactly the
state of the moment the copy started. Copying in several steps with pauses
(the usual advice for rollback-journal databases) would not help here and
would break under a live writer: a step that finds the source changed by
another connection restarts the whole backup
(https://www.sqlite.org/c3ref/backup_finish.html#sqlite3backupstep), so with
a commit every half second a large copy would never finish. The copy is then
switched to a rollback journal (one self-contained file), passes ``PRAGMA
integrity_check``, is synced and renamed to its final name: a file named
``runwatch-backup-*.db`` is always complete. Mode 0600, like the store.

Restoring: the backup is checked first (SQLite header, size against the
header, integrity check, runwatch schema). The store is then locked
exclusively (``locking_mode = EXCLUSIVE``), which fails at once while any
other connection has it open, e.g. a running pipeline's sink, which would
otherwise go on writing with its cached run ids and key sets into a
different database. Stop the pipeline first; the CLI restores offline. Under
that lock, the current database is copied to ``<db>.pre-restore-<time>.db``
and the backup is copied into the live file through the backup API, so the
database, its WAL and its shared-memory index stay consistent; a crash
during the copy leaves the previous content (the copy is one transaction).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ..exceptions import BackupError, StoreError
from . import connections
from .chunk_schema import CHUNK_VERSION
from .schema import SCHEMA_VERSION, current_version, make_private_dirs

__all__ = ["BACKUP_PREFIX", "backup_file_name", "check_backup", "create_backup", "restore_backup"]

#: Every backup file name starts with this.
BACKUP_PREFIX: Final = "runwatch-backup-"

_TAG = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: The tables every runwatch store has (schema version 1), with its metric tables until version 6 ...
_RUNWATCH_TABLES: Final = frozenset({"runs", "metric_stats", "events", "state_history", "meta"})
_ROW_TABLES: Final = frozenset({"metric_keysets", "metric_rows"})
#: ... and from version 10 on (metrics in chunks).
_CHUNK_TABLES: Final = frozenset({"metric_series", "metric_chunks"})
# How long a restore waits for other connections to let go of the store.
_LOCK_TIMEOUT_SECONDS: Final = 0.5


def _stamp(now: datetime | None) -> str:
    """``20250131T235959.123Z``: UTC, sortable, safe in file names."""
    moment = datetime.now(UTC) if now is None else now
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond // 1000:03d}Z"


def backup_file_name(tag: str | None = None, *, now: datetime | None = None) -> str:
    """The file name of a backup taken at ``now``: ``runwatch-backup-<UTC time>[-<tag>].db``.

    Args:
        tag: 1 to 64 letters, digits, ``_`` or ``-``; ``None`` for none.
        now: the time (a naive ``datetime`` is UTC); ``None`` for now.

    Raises:
        TypeError: ``tag`` is not a string or ``None``.
        ValueError: ``tag`` has other characters or a bad length.
    """
    if tag is not None and type(tag) is not str:
        raise TypeError(f"tag must be a string or None, got {type(tag).__name__}")
    if tag is not None and not _TAG.fullmatch(tag):
        raise ValueError(f"tag must be 1 to 64 letters, digits, '_' or '-', got {tag!r}")
    return f"{BACKUP_PREFIX}{_stamp(now)}{'' if tag is None else '-' + tag}.db"


def _create_private(path: Path) -> None:
    """Create an empty file only the owner can read (fails if it exists)."""
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _integrity_problems(path: Path) -> list[str]:
    """What ``PRAGMA integrity_check`` reports for a self-contained file (``[]`` when fine)."""
    uri = path.absolute().as_uri() + "?mode=ro&immutable=1"
    with closing(connections.connect(uri, uri=True)) as conn:
        found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check(10)")]
    return [] if found == ["ok"] else found


def _copy_to_new_file(source: sqlite3.Connection, target: Path) -> None:
    """Copy ``source`` into the new, empty file ``target`` as a self-contained database."""
    with closing(connections.connect(target, isolation_level=None)) as copy:
        source.backup(copy)  # pages=-1: one step, one read snapshot (see the module docs)
        copy.execute("PRAGMA journal_mode = DELETE").fetchall()


def create_backup(
    db_path: str | Path, backup_dir: str | Path, tag: str | None = None, *, now: datetime | None = None
) -> Path:
    """Copy the store into ``backup_dir`` as ``runwatch-backup-<UTC time>[-<tag>].db``.

    Safe while the SQLite sink writes: the copy holds the state committed when
    it started. Needs free space for one copy of the database. The copy and
    its integrity check run on a helper thread at the lowest CPU priority
    (Linux), so on a busy machine they take the CPU the training loop and the
    pipeline leave over instead of slowing them down; this call waits for it.

    Args:
        db_path: the store.
        backup_dir: the directory (created, mode 0700, if missing).
        tag: an optional label in the name: 1 to 64 letters, digits, ``_`` or ``-``.
        now: the time in the name; ``None`` for now.

    Returns:
        The backup file (mode 0600). It passed SQLite's integrity check.

    Raises:
        TypeError, ValueError: a bad ``tag`` or ``backup_dir``.
        StoreError: the store cannot be read, the copy failed its integrity
            check (it was deleted), the name is taken, or the directory
            cannot be written.
    """
    if not isinstance(backup_dir, (str, Path)):
        raise TypeError(f"backup_dir must be a str or Path, got {type(backup_dir).__name__}")
    name = backup_file_name(tag, now=now)
    directory = Path(backup_dir)
    final = directory / name
    temporary = directory / f".{name}.{secrets.token_hex(4)}.tmp"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if final.exists():
            raise StoreError(f"the backup {str(final)!r} already exists")
        _create_private(temporary)
    except OSError as exc:
        raise StoreError(f"cannot write a backup into {str(directory)!r}: {exc}") from exc
    _run_at_low_priority(_write_backup, Path(db_path), temporary, final)
    return final


def _write_backup(db_path: Path, temporary: Path, final: Path) -> None:
    """Copy, check, sync and rename; the temporary file is removed on any failure."""
    try:
        uri = db_path.absolute().as_uri() + "?mode=ro"
        with closing(connections.connect(uri, uri=True, timeout=5.0)) as source:
            _copy_to_new_file(source, temporary)
        problems = _integrity_problems(temporary)
        if problems:
            raise StoreError(f"the backup copy failed SQLite's integrity check and was deleted: {'; '.join(problems)}")
        _fsync(temporary)
        os.replace(temporary, final)
        _fsync(final.parent)  # the rename itself survives a power loss
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {str(db_path)!r}: {exc}") from exc
    finally:
        if temporary.exists():
            _remove(temporary, Path(str(temporary) + "-journal"))


def _run_at_low_priority(fn: Callable[..., None], *args: Any) -> None:
    """Run ``fn(*args)`` on a helper thread at nice 19 and wait for it, re-raising its exception.

    Linux gives every thread its own nice value; a fresh thread is used
    because an unprivileged thread can lower its priority but not raise it
    back. sqlite3 releases the GIL while it copies and checks pages, so the
    helper competes for CPU only, where it now yields.
    """
    failure: list[BaseException] = []

    def target() -> None:
        if sys.platform.startswith("linux"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            except OSError:  # not allowed here: run at the normal priority
                pass
        try:
            fn(*args)
        except BaseException as exc:  # handed to the waiting caller
            failure.append(exc)

    helper = threading.Thread(target=target, name="runwatch-backup")
    helper.start()
    helper.join()
    if failure:
        raise failure[0]


def check_backup(path: str | Path) -> int:
    """Check that ``path`` is a complete, intact runwatch database, without changing it.

    Args:
        path: the backup file.

    Returns:
        Its schema version.

    Raises:
        BackupError: naming the file and the reason: missing, not a SQLite
            file, truncated, beside a journal or WAL it depends on, failing
            the integrity check, or not a runwatch store of a version this
            runwatch can read.
    """
    file = Path(path)
    name = str(file)
    if not file.exists():
        raise BackupError(name, "no such file")
    if not file.is_file():
        raise BackupError(name, "not a regular file")
    with open(file, "rb") as stream:
        header = stream.read(100)
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise BackupError(name, "not a SQLite database (no SQLite header)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise BackupError(name, f"corrupt SQLite header (page size {page_size})")
    size = file.stat().st_size
    pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[24:28] == header[92:96] and pages > 0
    if size % page_size or (header_count_valid and size < pages * page_size):
        expected = f"{pages} pages of {page_size} bytes" if header_count_valid else f"whole pages of {page_size} bytes"
        raise BackupError(name, f"truncated: {size} bytes, but the database has {expected}")
    for suffix, what in (("-journal", "a rollback journal"), ("-wal", "a write-ahead log")):
        if Path(name + suffix).exists():
            raise BackupError(
                name, f"has {what} beside it ({name + suffix}): it is in use or was not closed cleanly, not a backup"
            )
    try:
        problems = _integrity_problems(file)
        if problems:
            raise BackupError(name, f"fails SQLite's integrity check: {'; '.join(problems[:3])}")
        uri = file.absolute().as_uri() + "?mode=ro&immutable=1"
        with closing(connections.connect(uri, uri=True)) as conn:
            version = current_version(conn)
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(name, f"cannot be read as a SQLite database: {exc}") from None
    if version == 0:
        raise BackupError(name, "is not a runwatch database (schema version 0)")
    if not 1 <= version <= SCHEMA_VERSION:
        newer = " (written by a newer runwatch)" if version > SCHEMA_VERSION else ""
        raise BackupError(
            name, f"has schema version {version}{newer}; this runwatch restores versions 1 to {SCHEMA_VERSION}"
        )
    missing = (_RUNWATCH_TABLES | (_CHUNK_TABLES if version >= CHUNK_VERSION else _ROW_TABLES)) - tables
    if missing:
        raise BackupError(name, f"is not a runwatch database (missing tables: {', '.join(sorted(missing))})")
    return version


def _lock_exclusively(db_path: Path, timeout_seconds: float) -> sqlite3.Connection:
    """A connection holding the store's lock until it is closed; refused while anyone else has it open."""
    try:
        conn = connections.connect(db_path, timeout=timeout_seconds, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {str(db_path)!r}: {exc}") from exc
    try:
        # In WAL mode every open connection holds a shared lock on the WAL
        # index; EXCLUSIVE locking needs it alone, and keeps it until close.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE").fetchall()
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"the database {str(db_path)!r} is open in another connection (a running pipeline, monitor or "
                "server?); stop it before restoring"
            ) from None
        raise StoreError(f"cannot lock the database {str(db_path)!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"the database {str(db_path)!r} is not readable ({exc}); move it away and restore into its path again"
        ) from None
    return conn


def restore_backup(
    db_path: str | Path,
    backup_path: str | Path,
    *,
    now: datetime | None = None,
    lock_timeout_seconds: float = _LOCK_TIMEOUT_SECONDS,
) -> Path | None:
    """Replace the store at ``db_path`` by the backup, keeping the current database aside.

    Args:
        db_path: the store; it need not exist.
        backup_path: a backup checked with :func:`check_backup` first.
        now: the time in the kept copy's name; ``None`` for now.
        lock_timeout_seconds: how long to wait for other connections to let go.

    Returns:
        The copy of the previous database, ``<db>.pre-restore-<UTC time>.db``
        (mode 0600), or ``None`` when there was no database to keep.

    Raises:
        BackupError: the backup is unusable (nothing was changed).
        StoreError: another connection has the store open (stop the pipeline
            first), or the current database cannot be read or copied (nothing
            was changed).
    """
    target = Path(db_path)
    source_file = Path(backup_path)
    check_backup(source_file)
    if target.exists() and os.path.samefile(target, source_file):
        raise BackupError(str(source_file), "is the database itself")
    existed = target.exists() and target.stat().st_size > 0
    try:
        make_private_dirs(target.absolute().parent)
    except OSError as exc:
        raise StoreError(f"cannot create the directory of {str(target)!r}: {exc}") from exc
    kept: Path | None = None
    conn = _lock_exclusively(target, lock_timeout_seconds)
    try:
        if existed:
            kept = target.with_name(f"{target.name}.pre-restore-{_stamp(now)}.db")
            try:
                _create_private(kept)
                _copy_to_new_file(conn, kept)
            except (OSError, sqlite3.Error) as exc:
                _remove(kept, Path(str(kept) + "-journal"))
                raise StoreError(f"cannot keep a copy of {str(target)!r} before restoring: {exc}") from exc
        uri = source_file.absolute().as_uri() + "?mode=ro&immutable=1"
        with closing(connections.connect(uri, uri=True)) as source:
            source_page_size = source.execute("PRAGMA page_size").fetchone()[0]
            if conn.execute("PRAGMA page_size").fetchone()[0] != source_page_size:
                # A WAL database cannot change its page size: copy through a rollback journal.
                conn.execute("PRAGMA journal_mode = DELETE").fetchall()
            source.backup(conn)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"restoring {str(source_file)!r} into {str(target)!r} failed: {exc}") from exc
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.chmod(str(target) + suffix, 0o600)
        except FileNotFoundError:
            pass
    return kept
