"""The exit spool: batches still undelivered when a client closes are written to a directory,
one JSON line per batch, and sent by the next client that uses the same directory.

A file is claimed by renaming it (atomic), so two processes never send the same file; a file
claimed by a process that is gone is taken over. Batches keep their ids, so a batch the server
applied before its answer was lost is recognised as a duplicate on replay.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from ._batching import Batch, encode_batch

__all__ = ["read_spool", "spool_files", "write_spool"]


def spool_files(directory: Path) -> list[Path]:
    """Spool files ready to send: ``*.jsonl``, and files claimed by processes that are gone."""
    ready = sorted(directory.glob("runwatch-client-*.jsonl"))
    for claimed in sorted(directory.glob("runwatch-client-*.jsonl.sending-*")):
        pid = claimed.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            ready.append(claimed)
    return ready


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def write_spool(directory: Path, batches: Iterable[Batch]) -> None:
    """One JSON line per batch, written under a temporary name and renamed when complete."""
    name = f"runwatch-client-{os.getpid()}-{uuid.uuid4().hex}.jsonl"
    temporary = directory / f".{name}.tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        for batch in batches:
            line = {"session_id": batch.session_id, "batch_id": batch.batch_id, "operations": batch.operations}
            file.write(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, directory / name)


def read_spool(path: Path) -> list[Batch]:
    """The batches of one spool file.

    Raises:
        OSError: the file cannot be read.
        ValueError: a line is not a spooled batch (the message names the line).
    """
    batches = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                session_id, batch_id, operations = record["session_id"], record["batch_id"], record["operations"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"line {number}: {exc}") from None
            batches.append(Batch(session_id, batch_id, operations, encode_batch(batch_id, operations)))
    return batches
