"""Tests of ``runwatch tail`` (runwatch.cli._tail): in process and as a child process against a live monitor."""

from __future__ import annotations

import math
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from runwatch import MonitorConfig, WebMonitor

from ._helpers import assert_one_line_error, invoke

# Guards every wait on another process or thread; nothing here legitimately takes this long.
TIMEOUT = 30


TOKEN = "cli-ops-token"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """A monitor serving its web app with a token on a free loopback port (each test uses its own run)."""
    directory = tmp_path_factory.mktemp("live")
    config = MonitorConfig(
        db_path=str(directory / "live.db"), data_dir=str(directory / "data"), web_port=0, web_token=TOKEN
    )
    with WebMonitor(config) as monitor:
        assert monitor.web_url is not None
        yield monitor


class Tail:
    """``runwatch tail`` in a subprocess, with its output lines readable as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwatch.cli", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={key: value for key, value in os.environ.items() if not key.startswith("RUNWATCH_")},
        )
        self.stdout: queue.Queue[bytes] = queue.Queue()
        self.stderr: queue.Queue[bytes] = queue.Queue()
        for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _pump(stream: Any, lines: queue.Queue[bytes]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(b"")  # end of stream

    def wait_for(self, lines: queue.Queue[bytes], text: str) -> list[bytes]:
        """Lines up to the first containing ``text`` (fails at end of stream or after TIMEOUT)."""
        seen: list[bytes] = []
        while True:
            line = lines.get(timeout=TIMEOUT)
            assert line, f"stream ended before {text!r}: {seen!r}"
            seen.append(line)
            if text.encode() in line:
                return seen

    def rest(self, lines: queue.Queue[bytes]) -> list[bytes]:
        """Every remaining line, once the process has exited."""
        out: list[bytes] = []
        while (line := lines.get(timeout=TIMEOUT)) != b"":
            out.append(line)
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    """Tail processes started by a test; any still running at the end are killed."""
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.close()


@pytest.mark.timeout(60)
def test_tail_json_prints_events_emitted_after_it_subscribed(live: WebMonitor, tails: list[Tail]) -> None:
    """tail --json --count 3 prints, as JSON lines, the first three matching events emitted after it subscribed."""
    run_id = live.start_training(run_id="tail-json")
    try:
        tail = Tail(
            "--url",
            live.web_url,
            "--token",
            TOKEN,
            "--run",
            run_id,
            "--kinds",
            "metric",
            "--metrics",
            "loss",
            "--count",
            "3",
            "--json",  # (the system sampler's readings of the run are metrics too)
        )
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        for value in (1.0, math.nan, 3.0):
            live.update_metrics({"loss": value})
        assert tail.process.wait(timeout=TIMEOUT) == 0
        events = [orjson.loads(line) for line in tail.rest(tail.stdout)]
    finally:
        live.stop_training()

    assert [event["kind"] for event in events] == ["metric"] * 3
    assert [event["run_id"] for event in events] == [run_id] * 3
    assert [event["values"]["loss"] for event in events] == [1.0, None, 3.0]


@pytest.mark.timeout(60)
def test_tail_n_prints_the_latest_events_then_the_live_ones_without_a_gap(live: WebMonitor, tails: list[Tail]) -> None:
    """tail -n 3 first prints the last three matching events the server kept, then live ones, none twice."""
    run_id = live.start_training(run_id="tail-replay")
    try:
        for value in range(5):
            live.update_metrics({"loss": float(value)})
        live.record_event("checkpoint_saved", {"path": "c.pt"})  # another kind: filtered out of the replay
        tail = Tail(
            "--url",
            live.web_url,
            "--token",
            TOKEN,
            "--run",
            run_id,
            "--kinds",
            "metric",
            "--metrics",
            "loss",  # the system sampler's readings of the run are metrics too
            "-n",
            "3",
            "--count",
            "5",
            "--json",
        )
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        for value in (5.0, 6.0):
            live.update_metrics({"loss": value})
        assert tail.process.wait(timeout=TIMEOUT) == 0
        events = [orjson.loads(line) for line in tail.rest(tail.stdout)]
    finally:
        live.stop_training()

    assert [event["values"]["loss"] for event in events] == [2.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.timeout(60)
def test_tail_prints_one_line_per_event_and_stops_on_ctrl_c(live: WebMonitor, tails: list[Tail]) -> None:
    """Without --json each event is one readable line; SIGINT ends tail with status 0 and no traceback."""
    run_id = live.start_training(run_id="tail-pretty")
    try:
        tail = Tail("--url", live.web_url, "--token", TOKEN, "--run", run_id, "--kinds", "metric,log")
        tails.append(tail)
        tail.wait_for(tail.stderr, "subscribed")
        live.update_metrics({"loss": 0.25, "accuracy": 0.5})
        live.record_event("checkpoint_saved", {"path": "b.pt"})
        lines = tail.wait_for(tail.stdout, "checkpoint_saved")
        tail.process.send_signal(signal.SIGINT)
        assert tail.process.wait(timeout=TIMEOUT) == 0
        errors = b"".join(tail.rest(tail.stderr))
    finally:
        live.stop_training()

    text = [line.decode() for line in lines]
    assert len(text) == 2
    assert f"{run_id} metric" in text[0] and "loss=0.25 accuracy=0.5" in text[0]
    assert "log" in text[1] and 'info checkpoint_saved {"path":"b.pt"}' in text[1]
    assert b"Traceback" not in errors


def test_tail_without_the_token_fails_in_one_line(runner: CliRunner, live: WebMonitor) -> None:
    """A server that requires a token refuses tail without one: exit 1 and one line that says to pass --token."""
    result = invoke(runner, "tail", "--url", live.web_url, "--count", "1")

    assert_one_line_error(result, code=1, mentions="--token")


def test_tail_to_a_closed_port_fails_in_one_line(runner: CliRunner) -> None:
    """tail to a port nobody listens on exits 1 with one line saying it cannot connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is free again: nothing listens there (a race with another process is harmless here).

    result = invoke(runner, "tail", "--url", f"http://127.0.0.1:{port}", "--count", "1")

    assert_one_line_error(result, code=1, mentions="cannot connect")


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        pytest.param(["--kinds", "metric,bogus"], "unknown kind 'bogus'", id="unknown-kind"),
        pytest.param(["--url", "ftp://example.org"], "--url", id="bad-scheme"),
        pytest.param(["--url", "127.0.0.1:8080"], "--url", id="no-scheme"),
    ],
)
def test_tail_with_bad_options_fails_in_one_line(runner: CliRunner, options: list[str], mentions: str) -> None:
    """Unknown kinds and unusable URLs are bad arguments (exit 2, one line), found before connecting."""
    result = invoke(runner, "tail", *options)

    assert_one_line_error(result, code=2, mentions=mentions)
