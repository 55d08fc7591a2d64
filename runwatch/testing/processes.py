"""``runwatch serve`` and ``runwatch worker`` as real processes (the scale tier's fault tests, ``make scale-demo``).

Each is started with this interpreter (``python -m runwatch.cli``), its output
collected by a thread (so a full pipe never stalls it), and considered up
once it prints its announcement line. :meth:`RunwatchProcess.kill` sends
SIGKILL (a crash: nothing drains); :meth:`RunwatchProcess.stop` SIGTERM,
bounded. Whatever happens, :func:`running` stops what it started.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Seconds a process gets to announce itself (imports, connecting to NATS and PostgreSQL).
START_TIMEOUT_SECONDS = 30.0


@dataclass
class RunwatchProcess:
    """A running ``runwatch`` command: its process, its output so far, and for serve its URL."""

    process: subprocess.Popen[str]
    command: str = "runwatch"
    lines: list[str] = field(default_factory=list)
    url: str | None = None
    _announced: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    def wait_announced(self, pattern: str) -> str:
        """Wait for the announcement; the matching line. Raises with the output if the process dies first."""
        if not self._announced.wait(START_TIMEOUT_SECONDS) or self.process.poll() is not None:
            self.kill()
            raise RuntimeError(f"{self.command} did not start:\n" + "\n".join(self.lines[-30:]))
        for line in self.lines:
            if re.search(pattern, line):
                return line
        raise RuntimeError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines[-30:]))

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is drained, nothing released."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._finish_reading()

    def stop(self) -> int:
        """SIGTERM (drain, release, exit), then SIGKILL after 30 s; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        status = self.process.wait(30)
        self._finish_reading()
        return status

    def _finish_reading(self) -> None:
        if self._reader is not None:
            self._reader.join(10)

    def output(self) -> str:
        return "\n".join(self.lines)


def _spawn(arguments: list[str], announce: str) -> RunwatchProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "runwatch.cli", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )
    handle = RunwatchProcess(process, " ".join(arguments[:1]))

    def read() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                handle.lines.append(line.rstrip("\n"))
                if re.search(announce, line):
                    handle._announced.set()
        handle._announced.set()  # ended: whoever waits finds out

    handle._reader = threading.Thread(target=read, daemon=True, name="runwatch output")
    handle._reader.start()
    return handle


class Fleet:
    """Serve nodes and workers started by a test; :func:`running` stops them all at the end."""

    def __init__(self, store: str, bus_urls: list[str], data_dir: Path, *, partitions: int = 4) -> None:
        self.store = store
        self.bus = ",".join(bus_urls)
        self.data_dir = data_dir
        self.partitions = partitions
        self.processes: list[RunwatchProcess] = []

    def start(self, *, serves: int, workers: list[str], lease_ttl: float = 2.0) -> list[RunwatchProcess]:
        """``serves`` serve nodes (free loopback ports) and a worker per name, started together;
        returns them (serve nodes first) once each has announced itself."""
        started = [self._spawn_serve() for _ in range(serves)]
        started += [self._spawn_worker(name, lease_ttl) for name in workers]
        for process in started:
            line = process.wait_announced(r"runwatch: (serving .* at http|worker )")
            if " at http" in line:
                process.url = line.rsplit(" at ", 1)[1].strip()
        return started

    def _spawn_serve(self) -> RunwatchProcess:
        data = self.data_dir / f"serve{len(self.processes)}"
        arguments = ["serve", "--store", self.store, "--bus", self.bus, "--port", "0", "--data-dir", str(data)]
        node = _spawn([*arguments, "--partitions", str(self.partitions)], r"runwatch: serving .* at http")
        self.processes.append(node)
        return node

    def _spawn_worker(self, name: str, lease_ttl: float) -> RunwatchProcess:
        data = self.data_dir / f"worker-{name}"
        arguments = ["worker", "--store", self.store, "--bus", self.bus, "--name", name, "--data-dir", str(data)]
        arguments += ["--partitions", str(self.partitions), "--lease-ttl", str(lease_ttl)]
        worker = _spawn(arguments, r"runwatch: worker ")
        self.processes.append(worker)
        return worker

    def print_outputs(self, lines: int = 60) -> None:
        """The last ``lines`` of each process's output, on standard output."""
        for process in self.processes:
            status = process.process.poll()
            tail = "\n".join(process.lines[-lines:])
            sys.stdout.write(f"--- {process.command} (exit status {status}), last {lines} lines:\n{tail}\n")

    def stop_all(self) -> None:
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.stop()


@contextlib.contextmanager
def running(store: str, bus_urls: list[str], data_dir: Path, *, partitions: int = 4) -> Iterator[Fleet]:
    """A :class:`Fleet` whose processes are stopped on exit, whatever happened."""
    fleet = Fleet(store, bus_urls, data_dir, partitions=partitions)
    try:
        yield fleet
    except BaseException:
        fleet.stop_all()
        fleet.print_outputs()  # a failed test shows what its processes said (pytest prints captured output)
        raise
    finally:
        fleet.stop_all()
