"""Snapshot files and rows: names, atomic writes and rotation (blocking I/O: run on a worker thread)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from ..store.base import Store

__all__ = ["SavedSnapshots", "save_snapshots", "snapshot_file_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
# The run part is greedy: the fixed-width stamp anchors the end.
_FILE_NAME = re.compile(r"^snapshot_(.+)_(\d{8}T\d{6}\.\d{6}Z)\.json$")


def snapshot_file_name(run_id: str, taken_at: float) -> str:
    """``snapshot_<run>_<UTC time>.json``: safe on every file system, sortable by time.

    ``<run>`` is the run id with characters other than letters, digits and
    ``_.-`` replaced by ``_`` (cut to 100), plus ``-`` and 8 hex digits of its
    hash when anything was changed, so two ids never share a name.
    """
    stamp = datetime.fromtimestamp(taken_at, UTC).strftime(_STAMP_FORMAT)
    return f"snapshot_{_file_run_part(run_id)}_{stamp}.json"


def _file_run_part(run_id: str) -> str:
    safe = _UNSAFE.sub("_", run_id)[:100]
    if safe != run_id:
        safe = f"{safe[:91]}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"
    return safe


class SavedSnapshots(NamedTuple):
    """What :func:`save_snapshots` did.

    Attributes:
        written: runs whose snapshot is now a file and a row.
        deferred: runs the store does not hold yet (nothing written for them).
        rotated: older snapshots removed (rows; their files go with them).
    """

    written: list[str]
    deferred: list[str]
    rotated: int


def save_snapshots(
    store: Store,
    directory: Path,
    snapshots: Sequence[tuple[str, bytes]],
    taken_at: float,
    max_snapshots: int,
    busy_timeout_seconds: float = 5.0,
) -> SavedSnapshots:
    """Write snapshots as files and store rows, then keep only the newest ``max_snapshots`` of each run.

    Args:
        store: the store; runs it does not hold (or a store not created yet) are deferred.
        directory: where the files go (created when missing).
        snapshots: (run id, JSON bytes) pairs.
        taken_at: epoch seconds; the rows' time and the files'.
        max_snapshots: snapshots kept per run.
        busy_timeout_seconds: the longest wait for another writer's lock.

    Raises:
        StoreError, OSError: the store or the directory failed; files
            already renamed into place stay and are rotated out later.
    """
    run_ids = [run_id for run_id, _ in snapshots]
    held = store.stored_runs(run_ids)
    found = [(run_id, data) for run_id, data in snapshots if run_id in held]
    deferred = [run_id for run_id in run_ids if run_id not in held]
    if not found:
        return SavedSnapshots([], deferred, 0)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # snapshots hold run state: private
    for run_id, data in found:
        _write_atomically(directory, snapshot_file_name(run_id, taken_at), data)
    _sync_directory(directory)
    written, rotated = store.save_snapshots(found, taken_at, max_snapshots, busy_timeout_seconds=busy_timeout_seconds)
    deferred += [run_id for run_id, _ in found if run_id not in written]
    _rotate_files(directory, written, max_snapshots)
    return SavedSnapshots(written, deferred, rotated)


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` so that a crash leaves the old state or the new file, never half of one."""
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".snapshot-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _sync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX; elsewhere a rename is as durable as it gets)."""
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _rotate_files(directory: Path, run_ids: list[str], max_snapshots: int) -> None:
    """Remove all but the newest ``max_snapshots`` files of each run.

    Goes by the files present (not the rows removed), so files whose row never
    committed are cleaned up too.
    """
    wanted = {_file_run_part(run_id) for run_id in run_ids}
    by_run: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            match = _FILE_NAME.match(entry.name)
            if match is not None and match[1] in wanted:
                by_run.setdefault(match[1], []).append(entry.name)
    for names in by_run.values():
        names.sort()  # the fixed-width UTC stamp sorts by time
        for name in names[:-max_snapshots]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / name)
