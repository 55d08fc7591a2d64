"""``runwatch sync``: upload runs recorded offline (an embedded store, or a spool) to a runwatch server.

**A store** (``runwatch sync runs.db --to URL [--run ID]``): each run is read
back from the store's three append-only streams
(:meth:`~runwatch.store.base.Store.stored_rows`) and sent as batches to
``POST /api/ingest``. A stream of a run is cut into chunks of
:data:`CHUNK_ROWS` rows in storage order, and chunk ``k`` of stream ``t``
is the batch ``sync-<t><k>`` of that run (the server scopes batch ids per
run, and keeps a digest of each batch's content). So:

- running sync twice stores nothing twice: every batch is answered as a
  duplicate the second time (the same id, the same content);
- an interrupted sync resumes: what was stored is answered as duplicates,
  the rest is sent;
- a run still live in the store (running, paused, hung) keeps its last,
  partial chunk of each table back (counted in ``held_back``): it is sent
  once the run has ended, when it can no longer grow. A chunk that changed
  after it was sent (a run that was resumed after it ended and synced,
  rows removed by ``runwatch cleanup --downsample``) is refused by the
  server with 409 and reported, never stored twice: the batch id names the
  position, and the server's digest checks the content.

A run's images and histograms follow its streams, in the order they were
stored, in chunks of :data:`MEDIA_CHUNK_ROWS` (``sync-i<k>``, ``sync-h<k>``):
each image with its bytes, so the server stores it as the producer's store
did (once per content, within the server's own per-run byte budget). An
image too large for a batch body (its bytes in base64 over
:data:`MAX_BODY_BYTES`) goes alone, with its raw bytes, to ``POST
/api/ingest/image`` under the id of the part it fills (``sync-i<k>.0.1``...).

The run's progress (last heartbeat, step and episode counters) goes last, in
a batch whose id is derived from its content. A ``run_crashed`` event
(written by crash detection) is sent as the liveness verdict
``application_crashed``, so the server's copy ends ``crashed`` too.

**A spool** (``runwatch sync <spool root or spool dir> --to URL``): the
spools of remote producers that are gone are adopted and their batches sent
as they are (same ids, same bytes), then removed; a spool still held by a
live producer is left to it.

Trouble: a batch the server cannot take now (unreachable, 5xx, a refused
token) is tried again with backoff for up to ``patience_seconds``; past that
the sync stops, incomplete (run it again to resume). A batch refused for
good (4xx) is reported and skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from ..client import HTTPTransport
from ..events import HistogramEvent, ImageEvent, LogEvent
from ..exceptions import StoreError, UnknownRunError
from ..store.base import STREAMS, RunProgress, Store
from ..store.sqlite import SQLiteStore
from ..wire import dumps, event_to_ingest, event_to_wire
from ..wire.events import event_from_wire
from ..wire.ingest import image_body
from .sender import Answer, SpoolSender
from .server_url import check_server_url
from .spool import Spool, spool_directories

__all__ = ["CHUNK_ROWS", "MEDIA_CHUNK_ROWS", "ProgressCallback", "SyncReport", "sync_path", "sync_spool", "sync_store"]

#: Rows of one table per uploaded batch. Fixed: a batch's id names its chunk, so a different size would
#: name other content with the same ids (the server would refuse those with 409, never store them twice).
CHUNK_ROWS: Final = 2_000
#: Images (or histograms) of a run per uploaded batch: fixed, as CHUNK_ROWS (a body too large goes in halves).
MEDIA_CHUNK_ROWS: Final = 200
#: A batch body larger than this is sent in halves (the server takes 1 MiB by default).
MAX_BODY_BYTES: Final = 768 << 10
_STREAM_LETTER: Final = {"events": "e", "metric_rows": "m", "state_history": "s"}
_LIVE: Final = frozenset({"running", "paused", "hung"})

#: ``progress(done, total)``: events dealt with so far (sent, found there, held back or skipped), of the total.
ProgressCallback = Callable[[int, int], None]


@dataclass
class SyncReport:
    """What a sync did.

    Attributes:
        runs: runs read from the store (0 for a spool).
        stored_batches, stored_events: sent and stored now.
        duplicate_batches, duplicate_events: the server had them already.
        held_back_events: the last partial chunks of live runs, sent once they end.
        undecodable_rows: stored rows that no longer decode (skipped).
        conflicts: batches the server holds with other content (409), by id.
        rejected: other batches the server refused for good, with its reason.
        busy_spools: spools still held by a live producer (left to it).
        complete: ``False`` when the server could not be reached in time (run sync again).
    """

    runs: int = 0
    stored_batches: int = 0
    stored_events: int = 0
    duplicate_batches: int = 0
    duplicate_events: int = 0
    held_back_events: int = 0
    undecodable_rows: int = 0
    conflicts: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    busy_spools: int = 0
    complete: bool = True

    @property
    def ok(self) -> bool:
        """Everything was delivered (or is there already), nothing refused."""
        return self.complete and not self.conflicts and not self.rejected


def sync_path(
    path: str | Path,
    url: str,
    *,
    token: str | None = None,
    run_ids: list[str] | None = None,
    progress: ProgressCallback | None = None,
    patience_seconds: float = 60.0,
    transport: Any = None,
) -> SyncReport:
    """Upload a store file or a spool directory (see the module docs).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a bad URL, or ``run_ids`` given for a spool.
        StoreError: the file is not a runwatch store.
        UnknownRunError: a run of ``run_ids`` is not in the store.
    """
    location = Path(path)
    if location.is_dir():
        if run_ids:
            raise ValueError("--run selects runs of a store; a spool is sent whole")
        return sync_spool(
            location, url, token=token, progress=progress, patience_seconds=patience_seconds, transport=transport
        )
    if not location.exists():
        raise FileNotFoundError(f"no store or spool at {str(location)!r}")
    return sync_store(
        location,
        url,
        token=token,
        run_ids=run_ids,
        progress=progress,
        patience_seconds=patience_seconds,
        transport=transport,
    )


# -- a store -----------------------------------------------------------------------------------------


def sync_store(
    db_path: str | Path,
    url: str,
    *,
    token: str | None = None,
    run_ids: list[str] | None = None,
    progress: ProgressCallback | None = None,
    patience_seconds: float = 60.0,
    transport: Any = None,
) -> SyncReport:
    """Upload the runs of an embedded store (all, or ``run_ids``), idempotently (see the module docs)."""
    store = SQLiteStore(db_path)
    if not store.exists():
        raise FileNotFoundError(f"no store at {str(db_path)!r}")
    runs = _runs(store, run_ids)
    sending = _transport(url, transport)
    sender = SpoolSender(sending, token=token)
    report = SyncReport()
    try:
        media = {run["run_id"]: _media_rows(store, run["run_id"]) for run in runs}
        total = sum(store.stored_row_count(run["run_id"]) for run in runs)
        total += sum(len(images) + len(histograms) for images, histograms in media.values())
        done = 0
        for run in runs:
            run_id = run["run_id"]
            report.runs += 1
            live = run["status"] in _LIVE
            chunks = [_chunks(store, run_id, stream, live, report) for stream in STREAMS]
            chunks.append(_media_chunks(store, run_id, *media.pop(run_id), live, report))
            for chunk in (chunk for stream in chunks for chunk in stream):
                if chunk.events and not _send(sender, chunk.batch_id, chunk.events, report, patience_seconds):
                    return report
                done += chunk.read
                if progress is not None:
                    progress(done, total)
            if run["last_heartbeat"] is not None:
                counters = (run["last_heartbeat"], run["total_steps"] or 0, run["total_episodes"] or 0)
                beat = [event_to_wire(RunProgress(run_id, *counters).heartbeat())]
                digest = hashlib.blake2b(_body(beat), digest_size=8).hexdigest()
                if not _send(sender, f"sync-progress-{digest}", beat, report, patience_seconds):
                    return report
    finally:
        _close(sending)
    return report


def _transport(url: str, transport: Any) -> Any:
    return transport if transport is not None else HTTPTransport(check_server_url(url))


def _close(transport: Any) -> None:
    closing = getattr(transport, "close", None)
    if closing is not None:
        closing()


def _runs(store: Store, run_ids: list[str] | None) -> list[dict[str, Any]]:
    """The runs to upload, oldest start first.

    Raises:
        StoreError: the file is not a runwatch store.
        UnknownRunError: a run of ``run_ids`` is not in the store.
    """
    try:
        runs = store.list_runs()[::-1]
    except StoreError as exc:
        raise StoreError(f"{store.location!r} is not a runwatch store: {exc}") from None
    if run_ids is None:
        return runs
    known = {run["run_id"]: run for run in runs}
    for run_id in run_ids:
        if run_id not in known:
            raise UnknownRunError(run_id)
    return [known[run_id] for run_id in dict.fromkeys(run_ids)]


class _Chunk(NamedTuple):
    batch_id: str
    events: list[dict[str, Any]]  # empty: nothing to send (held back, or nothing decoded)
    read: int  # rows of the store it covers


def _chunks(store: Store, run_id: str, stream: str, live: bool, report: SyncReport) -> Iterator[_Chunk]:
    """Each chunk of one run's stream, in order (see the module docs)."""
    start = 0
    index = 0
    while True:
        page = store.stored_rows(run_id, stream, start, CHUNK_ROWS)
        if page.read == 0:
            return
        if page.read < CHUNK_ROWS and live:  # the chunk may still grow: it goes once the run has ended
            report.held_back_events += page.read
            yield _Chunk("", [], page.read)
            return
        report.undecodable_rows += page.undecodable
        events = [event_to_wire(_for_upload(row.event)) for row in page.rows]
        yield _Chunk(f"sync-{_STREAM_LETTER[stream]}{index}", events, page.read)
        if page.read < CHUNK_ROWS:
            return
        index += 1
        start = page.next_start


def _media_rows(store: Store, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A run's image rows and histogram rows, each in the order they were stored."""
    images = sorted(store.images(run_id), key=lambda row: row["id"])
    histograms = [row for entry in store.histogram_names(run_id) for row in store.histograms(run_id, entry["name"])]
    histograms.sort(key=lambda row: row["id"])
    return images, histograms


def _media_chunks(
    store: Store,
    run_id: str,
    images: list[dict[str, Any]],
    histograms: list[dict[str, Any]],
    live: bool,
    report: SyncReport,
) -> Iterator[_Chunk]:
    """Each chunk of a run's images, then of its histograms; a live run keeps each last, partial one back."""
    for letter, rows in (("i", images), ("h", histograms)):
        for index, start in enumerate(range(0, len(rows), MEDIA_CHUNK_ROWS)):
            part = rows[start : start + MEDIA_CHUNK_ROWS]
            if len(part) < MEDIA_CHUNK_ROWS and live:  # the chunk may still grow
                report.held_back_events += len(part)
                yield _Chunk("", [], len(part))
                break
            events = [event_to_ingest(_media_event(store, run_id, row, letter)) for row in part]
            yield _Chunk(f"sync-{letter}{index}", events, len(part))


def _media_event(store: Store, run_id: str, row: dict[str, Any], letter: str) -> Any:
    """The image (with its bytes) or histogram event a stored row was made from."""
    if letter == "h":
        total = row["sum"]
        return HistogramEvent(
            run_id,
            row["ts"],
            row["name"],
            row["step"],
            size=row["size"],
            nan_count=row["nan_count"],
            posinf_count=row["posinf_count"],
            neginf_count=row["neginf_count"],
            min=row["min"],
            max=row["max"],
            sum=float("nan") if total is None else total,  # a NaN sum is stored as NULL
            low=row["low"],
            high=row["high"],
            counts=tuple(row["counts"]),
        )
    content = store.image_content(row["digest"])
    if content is None:  # removed since the list was read (the run was cleaned up)
        raise StoreError(f"the image content {row['digest']} of run {run_id!r} is gone from the store")
    mime, data = content
    return ImageEvent(
        run_id,
        row["ts"],
        row["name"],
        row["step"],
        data=data,
        mime=mime,
        width=row["width"],
        height=row["height"],
        digest=row["digest"],
        caption=row["caption"],
    )


def _for_upload(event: Any) -> Any:
    """Crash detection's ``run_crashed`` travels as the verdict the server applies (the run ends crashed)."""
    if type(event) is LogEvent and event.type == "run_crashed":
        return LogEvent(event.run_id, event.timestamp, "application_crashed", event.level, event.data)
    return event


def _send(
    sender: SpoolSender, batch_id: str, events: list[dict[str, Any]], report: SyncReport, patience: float
) -> bool:
    """Send one batch (in halves if its body is too large); ``False`` when the server stayed away."""
    body = _body({"batch_id": batch_id, "events": events})
    if len(body) > MAX_BODY_BYTES and len(events) > 1:
        half = len(events) // 2
        return _send(sender, f"{batch_id}.0", events[:half], report, patience) and _send(
            sender, f"{batch_id}.1", events[half:], report, patience
        )
    if len(body) > MAX_BODY_BYTES and events[0].get("kind") == "image":  # alone, its bytes raw
        image = event_from_wire(events[0])
        answer = sender.send(image_body(batch_id, image), 1, image=True, timeout=patience)
        return _count(answer, batch_id, 1, report)
    answer = sender.send(body, len(events), timeout=patience)
    return _count(answer, batch_id, len(events), report)


def _body(document: Any) -> bytes:
    return dumps(document).encode()


def _count(answer: Answer | None, batch_id: str, events: int, report: SyncReport) -> bool:
    if answer is None:
        report.complete = False
        return False
    if answer.duplicate:
        report.duplicate_batches += 1
        report.duplicate_events += events
    elif answer.stored:
        report.stored_batches += 1
        report.stored_events += events
    elif answer.status == 409 and "batch_id" in (answer.message or ""):
        report.conflicts.append(batch_id)
    else:
        report.rejected.append(f"{batch_id}: HTTP {answer.status}: {answer.message}")
    return True


# -- a spool -----------------------------------------------------------------------------------------


def sync_spool(
    path: str | Path,
    url: str,
    *,
    token: str | None = None,
    progress: ProgressCallback | None = None,
    patience_seconds: float = 60.0,
    transport: Any = None,
) -> SyncReport:
    """Send the batches of spools whose producers are gone (a spool root, or one spool) as they are."""
    location = Path(path)
    directories = [location] if (location / "lock").exists() else spool_directories(location)
    sending = _transport(url, transport)
    sender = SpoolSender(sending, token=token)
    report = SyncReport()
    spools: list[Spool] = []
    try:
        for directory in directories:
            spool = Spool.adopt(directory)
            if spool is None:
                report.busy_spools += 1
            else:
                spools.append(spool)
        total = sum(spool.unacked_events for spool in spools)
        done = 0
        for spool in spools:
            while (record := spool.first()) is not None:
                body = spool.read(record)
                answer = sender.send(body, record.events, image=record.image, timeout=patience_seconds)
                if not _count(answer, f"{spool.name}@{record.segment}:{record.offset}", record.events, report):
                    return report
                spool.acknowledge(record)
                done += record.events
                if progress is not None:
                    progress(done, total)
    finally:
        for spool in spools:
            spool.close()
        _close(sending)
    return report
