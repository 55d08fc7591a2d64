"""The workspace end to end: one ``runwatch serve`` live for every run, whoever writes it — real processes, loopback.

A real ``runwatch serve`` subprocess (its default graph, which follows the store), a real websocket subscriber on
``/ws``, and training subprocesses (tests/workspace_scripts.py): two writing the same store embedded,
one in remote mode. Shown here:

- live delivery from each: every event reaches the subscriber once, while its writer still runs (the
  writers wait after a first phase until the subscriber has seen it); latency figures are the
  benchmark's (benchmarks/bench_workspace.py), not asserted here;
- exactly-once storage of a remote run across a server restart in its middle, across ``kill -9`` of the
  producer (the next process of the run replays the spool and continues), and across a partition (the
  server stopped for 10 s);
- ``runwatch sync`` of a store, twice, stores it once.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chunk_helpers import stored_steps as chunk_stored_steps
from websockets.sync.client import connect

TIMEOUT = 30.0
SCRIPTS = Path(__file__).with_name("workspace_scripts.py")


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """A ``runwatch serve`` subprocess on a fixed loopback port; a thread collects its output."""

    def __init__(self, tmp_path: Path, db: Path, port: int) -> None:
        self.command = [
            sys.executable,
            "-m",
            "runwatch.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "serve-data"),
        ]
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self.process = self._start()

    def _start(self) -> subprocess.Popen[str]:
        process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.lines.append(line.rstrip("\n"))
                if re.search(r"runwatch: serving .* at http://", line):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(TIMEOUT) or process.poll() is not None:
            process.kill()
            raise AssertionError(f"runwatch serve did not start: {self.lines}")
        return process

    def stop(self) -> None:
        """SIGTERM, then wait (bounded) until it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(TIMEOUT)
            if self.process.stdout is not None:
                self.process.stdout.close()

    def restart(self) -> None:
        """Start it again on the same port and store."""
        self.process = self._start()


class Subscriber:
    """A websocket client on /ws, collecting every metric and lifecycle event in a thread."""

    def __init__(self, url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self._address = url.replace("http://", "ws://") + "/ws?kinds=metric,lifecycle"
        self._socket: Any = None
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._subscribed.wait(TIMEOUT):
            raise AssertionError("the /ws subscription was not confirmed")

    def _read(self) -> None:
        try:
            with connect(self._address, open_timeout=TIMEOUT) as socket_:
                self._socket = socket_
                for message in socket_:
                    data = json.loads(message)
                    if data.get("type") == "subscribed":
                        self._subscribed.set()
                    elif data.get("type") == "batch":
                        with self.changed:
                            self.events.extend(data["events"])
                            self.changed.notify_all()
        except Exception:  # closed by close() or by the server: the test checks what arrived
            pass

    def metrics_of(self, run_id: str) -> list[int]:
        """The steps of ``run_id``'s logged calls received so far, in arrival order."""
        with self.changed:
            # The training loop's own calls (its monitor's system samples of the run have no step).
            return [
                e["step"] for e in self.events if e["kind"] == "metric" and e["run_id"] == run_id and "i" in e["values"]
            ]

    def wait_for_steps(self, run_id: str, count: int) -> None:
        """Wait (bounded) until ``count`` metric events of ``run_id`` have arrived."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.metrics_of(run_id)) >= count, TIMEOUT):
                raise AssertionError(f"{run_id}: {len(self.metrics_of(run_id))} of {count} steps arrived")

    def close(self) -> None:
        """Close the socket and stop the reader."""
        if self._socket is not None:
            self._socket.close()
        self._thread.join(TIMEOUT)


class Trainer:
    """A training subprocess of tests/workspace_scripts.py, talking over stdio (its stderr goes to a file)."""

    def __init__(self, role: str, log: Path, **options: Any) -> None:
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = log
        with open(log, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPTS), role, json.dumps(options)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=environment,
            )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # its end

    def expect(self, pattern: str) -> str:
        """The next stdout line matching ``pattern`` (bounded; earlier lines are skipped)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line and self.process.poll() is not None:
                break
            if re.match(pattern, line):
                return line
        raise AssertionError(f"no line {pattern!r}; stderr: {self.log.read_text()[-2000:]}")

    def proceed(self) -> None:
        """Let it go on to its next phase."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def finish(self) -> None:
        """Wait (bounded) for a clean exit."""
        code = self.process.wait(TIMEOUT)
        assert code == 0, self.log.read_text()[-2000:]
        self.close()

    def kill(self) -> None:
        """SIGKILL: nothing of it runs any more."""
        self.process.kill()
        self.process.wait(TIMEOUT)
        self.close()

    def close(self) -> None:
        """Close its pipes."""
        self._reader.join(TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def stored_steps(db: Path, run_id: str) -> Counter[int]:
    """How many times each step of ``run_id`` is stored."""
    # The loop's own calls (the monitor's system samples have no step).
    return Counter(step for step in chunk_stored_steps(db, run_id) if step is not None)


def exactly_once(steps: Counter[int], count: int) -> None:
    """Steps 0..count-1, each stored once."""
    doubled = {step: n for step, n in steps.items() if n > 1}
    missing = sorted(set(range(count)) - set(steps))
    assert not doubled and not missing and len(steps) == count, (doubled, missing[:10], len(steps))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Serve]:
    """A ``runwatch serve`` of tmp_path/runs.db with the store tail, on a free port."""
    server = Serve(tmp_path, tmp_path / "runs.db", free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(120)
def test_runs_from_two_embedded_scripts_and_a_remote_one_are_live_on_one_server(served: Serve, tmp_path: Path) -> None:
    """Each writer's events reach a /ws subscriber while it runs, every one exactly once, none echoed twice."""
    subscriber = Subscriber(served.url)
    first = 300
    writers = {
        "embedded-a": Trainer(
            "embedded",
            tmp_path / "a.log",
            db=str(tmp_path / "runs.db"),
            data_dir=str(tmp_path / "a"),
            run_id="embedded-a",
            phases=[first, 200],
            rate=2000,
            wait_between_phases=True,
        ),
        "embedded-b": Trainer(
            "embedded",
            tmp_path / "b.log",
            db=str(tmp_path / "runs.db"),
            data_dir=str(tmp_path / "b"),
            run_id="embedded-b",
            phases=[first, 200],
            rate=2000,
            wait_between_phases=True,
        ),
        "remote-c": Trainer(
            "remote",
            tmp_path / "c.log",
            url=served.url,
            spool_dir=str(tmp_path / "c"),
            run_id="remote-c",
            phases=[first, 200],
            rate=2000,
            wait_between_phases=True,
        ),
    }
    try:
        for run_id, writer in writers.items():
            writer.expect(r"phase 1")
            subscriber.wait_for_steps(run_id, first)  # live: the writer is still running, waiting for us
            assert writer.process.poll() is None
        for writer in writers.values():
            writer.proceed()
        for run_id, writer in writers.items():
            writer.expect(r"done")
            writer.finish()
            subscriber.wait_for_steps(run_id, first + 200)
    finally:
        for writer in writers.values():
            if writer.process.poll() is None:
                writer.kill()
        subscriber.close()
    for run_id in writers:
        received = subscriber.metrics_of(run_id)
        assert sorted(received) == list(range(first + 200)), run_id  # each once: none lost, none echoed twice
        exactly_once(stored_steps(tmp_path / "runs.db", run_id), first + 200)
    lifecycles = Counter((e["run_id"], e["transition"]) for e in subscriber.events if e["kind"] == "lifecycle")
    for run_id in writers:
        assert lifecycles[(run_id, "started")] == 1 and lifecycles[(run_id, "completed")] == 1, lifecycles
    health = httpx.get(f"{served.url}/api/health", timeout=TIMEOUT).json()
    assert health["live_store"] is True


@pytest.mark.timeout(120)
def test_a_remote_run_is_stored_once_across_a_server_restart_in_its_middle(served: Serve, tmp_path: Path) -> None:
    """The server is stopped (SIGTERM) and started again while a remote producer sends: every step stored once."""
    total = 3000
    producer = Trainer(
        "remote",
        tmp_path / "producer.log",
        url=served.url,
        spool_dir=str(tmp_path / "spool"),
        run_id="restarted",
        phases=[total],
        rate=1000,
        report_every=100,
    )
    try:
        producer.expect(r"step 1000")
        served.stop()
        producer.expect(r"step 1500")  # produced (and spooled) while no server runs
        served.restart()
        assert producer.expect(r"delivered") == "delivered True"
        producer.expect(r"done")
        producer.finish()
    finally:
        if producer.process.poll() is None:
            producer.kill()
    exactly_once(stored_steps(tmp_path / "runs.db", "restarted"), total)


@pytest.mark.timeout(120)
def test_a_remote_producer_killed_hard_is_replayed_by_the_next_process_of_its_run(
    served: Serve, tmp_path: Path
) -> None:
    """kill -9 mid-run: the next process adopts the spool, sends it first, continues the run; each step stored once."""
    spool = tmp_path / "spool"
    first = Trainer(
        "remote",
        tmp_path / "first.log",
        url=served.url,
        spool_dir=str(spool),
        run_id="killed",
        phases=[100_000],
        rate=2000,
        report_every=200,
    )
    spooled = int(first.expect(r"step 2000 ").split()[3])  # "step N spooled M": M events on disk already
    first.kill()
    second = Trainer(
        "remote",
        tmp_path / "second.log",
        url=served.url,
        spool_dir=str(spool),
        run_id="killed",
        phases=[1000],
        resume=True,
    )
    try:
        resumed_at = int(second.expect(r"resumed \d+").split()[1])
        assert resumed_at >= spooled - 2  # all it had spooled before the kill (less its start, a heartbeat) came first
        assert second.expect(r"delivered") == "delivered True"
        second.expect(r"done")
        second.finish()
    finally:
        if second.process.poll() is None:
            second.kill()
    exactly_once(stored_steps(tmp_path / "runs.db", "killed"), resumed_at + 1000)


@pytest.mark.timeout(120)
def test_a_remote_run_is_stored_once_across_a_ten_second_partition(served: Serve, tmp_path: Path) -> None:
    """The server is away for 10 s while the producer keeps logging: everything arrives once when it is back."""
    producer = Trainer(
        "remote",
        tmp_path / "partitioned.log",
        url=served.url,
        spool_dir=str(tmp_path / "spool"),
        run_id="partitioned",
        phases=[500, 1000, 500],
        rate=1000,
        wait_between_phases=True,
    )
    try:
        producer.expect(r"phase 1")
        served.stop()
        producer.proceed()
        producer.expect(r"phase 2")  # logged while the server is away: spooled
        time.sleep(10)  # the partition the scenario is about (not a synchronisation)
        served.restart()
        producer.proceed()
        assert producer.expect(r"delivered") == "delivered True"
        producer.expect(r"done")
        producer.finish()
    finally:
        if producer.process.poll() is None:
            producer.kill()
    exactly_once(stored_steps(tmp_path / "runs.db", "partitioned"), 2000)


@pytest.mark.timeout(120)
def test_runwatch_sync_twice_stores_a_store_once(served: Serve, tmp_path: Path) -> None:
    """``runwatch sync OFFLINE --to URL`` uploads an offline store's run; a second sync stores nothing more."""
    offline = tmp_path / "offline.db"
    writer = Trainer(
        "embedded",
        tmp_path / "writer.log",
        db=str(offline),
        data_dir=str(tmp_path / "offline"),
        run_id="offline",
        phases=[4321],
    )
    writer.expect(r"done")
    writer.finish()
    command = [sys.executable, "-m", "runwatch.cli", "sync", str(offline), "--to", served.url]
    once = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert once.returncode == 0, once.stderr
    assert "4324 event(s) stored" in once.stdout and "0 already there" in once.stdout  # steps, start, end, progress
    twice = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert twice.returncode == 0, twice.stderr
    assert "0 event(s) stored" in twice.stdout and "4324 already there" in twice.stdout
    exactly_once(stored_steps(tmp_path / "runs.db", "offline"), 4321)
