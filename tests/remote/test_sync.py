"""``runwatch sync``'s logic: a store's runs (or a spool) uploaded to a real server, once, resumable."""

from __future__ import annotations

import math
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
import pytest
from chunk_helpers import stored_calls

from runwatch.config import MonitorConfig
from runwatch.events import Metric
from runwatch.exceptions import UnknownRunError
from runwatch.monitor import WebMonitor
from runwatch.pipeline.component import ComponentContext
from runwatch.pipeline.runtime import Pipeline
from runwatch.remote.spool import spool_directories
from runwatch.remote.sync import CHUNK_ROWS, sync_path
from runwatch.store.manager import DatabaseManager

TIMEOUT = 30
TS = 1_790_000_000.0


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_store(tmp_path: Path) -> Path:
    """An embedded store: a finished run over several chunks, a crashed run, a run still going (paused)."""
    db = tmp_path / "offline.db"
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "offline"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training({"lr": 0.01}, run_id="finished")
        for step in range(2 * CHUNK_ROWS + 123):
            values: dict[str, Any] = {"loss": 1.0 / (step + 1)}
            if step == 7:
                values["loss"] = math.nan
            if step % 10 == 0:
                values["eval"] = {"acc": step / 5000}
            monitor.update_metrics(values)
            if step % 500 == 0:
                monitor.record_event("checkpoint", {"step": step})
        monitor.update_game_state({"level": 2})
        monitor.stop_training(final_reward=3.5)
        monitor.start_training(run_id="going")
        for step in range(CHUNK_ROWS + 10):
            monitor.update_metrics({"x": float(step)})
        monitor.pause_training()
        assert monitor.flush()
        monitor._run_id = None  # leave "going" paused in the store: a live run (the monitor ends it otherwise)
    # A run whose process was killed: crash detection marks it and records run_crashed.
    script = textwrap.dedent(
        f"""
        import os, signal
        from runwatch import MonitorConfig, WebMonitor
        m = WebMonitor(MonitorConfig(db_path={str(db)!r}, data_dir={str(tmp_path / "crash")!r}, web_port=0))
        m.start_training(run_id="crashed")
        for i in range(50):
            m.update_metrics({{"y": float(i)}})
        assert m.flush()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    subprocess.run([sys.executable, "-c", script], timeout=TIMEOUT, check=False)
    with DatabaseManager(db) as manager:
        assert manager.mark_crashed_runs() == ["crashed"]
    return db


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebMonitor]:
    """A real server to upload to."""
    monitor = WebMonitor(MonitorConfig(db_path=str(tmp_path / "server.db"), data_dir=str(tmp_path / "s"), web_port=0))
    try:
        yield monitor
    finally:
        monitor.close()


def table_counts(db: Path) -> dict[str, int]:
    """Rows of each table that holds events (``metric_rows``: the logging calls)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        counts = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("events", "state_history", "runs")
        }
    finally:
        connection.close()
    return {"metric_rows": stored_calls(db), **counts}


def test_a_store_is_uploaded_as_it_was_recorded_and_twice_stores_nothing_twice(
    tmp_path: Path, server: WebMonitor
) -> None:
    """Every ended run arrives whole (frames, events, state, status, counters); a second sync only finds duplicates."""
    db = offline_store(tmp_path)
    assert server.web_url is not None
    seen: list[tuple[int, int]] = []
    report = sync_path(db, server.web_url, progress=lambda done, total: seen.append((done, total)))
    assert report.ok and report.runs == 3 and report.stored_batches > 0 and report.duplicate_batches == 0
    assert report.held_back_events == 12  # "going" is paused: its partial chunks wait (10 metric rows, 2 events)
    assert seen[-1][0] == seen[-1][1] and [done for done, _ in seen] == sorted(done for done, _ in seen)
    with DatabaseManager(db) as source, DatabaseManager(server.config.db_path) as target:
        for run_id in ("finished", "crashed"):
            pd.testing.assert_frame_equal(target.get_run_metrics(run_id), source.get_run_metrics(run_id))
            theirs, ours = target.get_run_summary(run_id), source.get_run_summary(run_id)
            for key in ("status", "config", "final_reward", "total_steps", "total_episodes", "state"):
                assert theirs[key] == ours[key], key
        assert [e["event_type"] for e in target.get_run_events("finished")] == [
            e["event_type"] for e in source.get_run_events("finished")
        ]
        assert target.get_run_summary("crashed")["status"] == "crashed"
        assert len(target.get_run_metrics("going", align="call")) == CHUNK_ROWS
    before = table_counts(Path(server.config.db_path))
    again = sync_path(db, server.web_url)
    assert again.ok and again.stored_batches == 0 and again.duplicate_batches == report.stored_batches
    assert table_counts(Path(server.config.db_path)) == before


def test_an_interrupted_upload_resumes_and_stores_each_event_once(tmp_path: Path, server: WebMonitor) -> None:
    """The network drops after a few batches: that sync is incomplete; the next one finishes, nothing doubled."""
    db = offline_store(tmp_path)
    assert server.web_url is not None
    from runwatch.client import HTTPTransport

    real = HTTPTransport(server.web_url)

    class Dropping:
        """The real transport, until the network goes away after three requests."""

        calls = 0

        def __call__(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> tuple[int, bytes]:
            self.calls += 1
            if self.calls > 3:
                raise ConnectionResetError("the network went away")
            return real(method, path, body, headers)

    try:
        first = sync_path(db, server.web_url, transport=Dropping(), patience_seconds=0.3)
    finally:
        real.close()
    assert not first.complete and first.stored_batches == 3
    second = sync_path(db, server.web_url)
    assert second.ok and second.duplicate_batches == 3
    with DatabaseManager(db) as source, DatabaseManager(server.config.db_path) as target:
        assert len(target.get_run_metrics("finished", align="call")) == len(
            source.get_run_metrics("finished", align="call")
        )
        assert len(target.get_run_events("finished")) == len(source.get_run_events("finished"))


def test_a_live_runs_last_chunk_goes_once_it_has_ended(tmp_path: Path, server: WebMonitor) -> None:
    """A paused run's partial chunk is held back; after the run completes, a new sync sends it, nothing twice."""
    db = offline_store(tmp_path)
    assert server.web_url is not None
    assert sync_path(db, server.web_url, run_ids=["going"]).held_back_events == 12
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "offline"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="going")  # resumes it
        monitor.update_metrics({"x": -1.0})
        monitor.stop_training()
    report = sync_path(db, server.web_url, run_ids=["going"])
    assert report.ok and report.held_back_events == 0
    with DatabaseManager(db) as source, DatabaseManager(server.config.db_path) as target:
        pd.testing.assert_frame_equal(target.get_run_metrics("going"), source.get_run_metrics("going"))
        assert target.get_run_summary("going")["status"] == "completed"


def test_one_run_is_chosen_by_id_and_an_unknown_one_is_an_error(tmp_path: Path, server: WebMonitor) -> None:
    """--run uploads that run only; a run the store does not have is UnknownRunError before anything is sent."""
    db = offline_store(tmp_path)
    assert server.web_url is not None
    with pytest.raises(UnknownRunError, match="nope"):
        sync_path(db, server.web_url, run_ids=["crashed", "nope"])
    assert sync_path(db, server.web_url, run_ids=["crashed"]).runs == 1
    with DatabaseManager(server.config.db_path) as target:
        assert [run["run_id"] for run in target.get_training_runs()] == ["crashed"]


def test_a_spool_left_behind_is_sent_as_it_is_then_removed(tmp_path: Path, server: WebMonitor) -> None:
    """A producer that closed while its server was away left a spool: sync sends it once, and it is gone."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {
            "server": {
                "type": "remote",
                "inputs": ["app"],
                "url": f"http://127.0.0.1:{free_port()}",
                "spool_dir": str(tmp_path / "spool"),
                "drain_timeout_seconds": 0,
            }
        },
    }

    async def produce() -> None:
        async with Pipeline(config, context=ComponentContext(data_dir=tmp_path)) as pipeline:
            for step in range(700):
                pipeline.emit(Metric("spooled", TS + step, {"v": float(step)}, step=step))

    anyio.run(produce)
    assert len(spool_directories(tmp_path / "spool")) == 1
    assert server.web_url is not None
    report = sync_path(tmp_path / "spool", server.web_url)
    assert report.ok and report.stored_events == 700 and spool_directories(tmp_path / "spool") == []
    assert sync_path(tmp_path / "spool", server.web_url).stored_events == 0
    with DatabaseManager(server.config.db_path) as target:
        assert target.get_run_metrics("spooled")["v"].tolist() == [float(step) for step in range(700)]


def test_a_spool_a_live_producer_holds_is_left_to_it(tmp_path: Path, server: WebMonitor) -> None:
    """sync never takes a spool from a running producer: it is counted busy and left alone."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from runwatch.remote.spool import Spool
        spool = Spool.create(Path({str(tmp_path / "spool")!r}))
        spool.append(b'{{"batch_id": "x", "events": []}}', 0)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert server.web_url is not None
        report = sync_path(tmp_path / "spool", server.web_url)
        assert report.busy_spools == 1 and report.stored_batches == 0
        assert len(spool_directories(tmp_path / "spool")) == 1
    finally:
        child.kill()
        child.wait(TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()
