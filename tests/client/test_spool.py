"""Tests of runwatch.client._spool: undelivered calls spooled at close and replayed later."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from ._doubles import TIMEOUT, FakeServer, open_client


def test_the_spool_keeps_undelivered_calls_for_the_next_client(fake: FakeServer, tmp_path: Path) -> None:
    """Calls undelivered at close are spooled and sent by the next client with their original batch ids."""
    fake.operations["s"] = []
    fake.down = True
    first = open_client(fake, spool_dir=tmp_path)
    for index in range(5):
        first.log_event("s", "e", {"i": index})
    fake.wait_for(lambda: len(fake.requests) >= 1)
    first.close(timeout=0.05)
    assert first.statistics().spooled == 5
    assert len(list(tmp_path.glob("*.jsonl"))) == 1
    tried = {doc["batch_id"] for _, _, doc in fake.requests}
    with fake.lock:
        fake.down = False
    with open_client(fake, spool_dir=tmp_path) as second:
        assert second.flush(TIMEOUT)
        assert second.statistics().replayed == 5
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(5))
    assert tried & set(fake.batch_ids), "the batch in flight keeps its batch_id in the spool"
    assert list(tmp_path.iterdir()) == []


def test_a_spooled_batch_that_was_applied_before_is_not_applied_twice(fake: FakeServer, tmp_path: Path) -> None:
    """A batch whose answer was lost, then spooled, is a duplicate on replay: applied once."""
    fake.operations["s"] = []
    fake.lose_answers = 10**9  # every answer is lost
    first = open_client(fake, spool_dir=tmp_path)
    first.log_event("s", "e")
    fake.wait_for(lambda: len(fake.batch_ids) == 1)
    first.close(timeout=0.05)
    fake.lose_answers = 0
    with open_client(fake, spool_dir=tmp_path) as second:
        assert second.flush(TIMEOUT)
        assert second.statistics().duplicate_batches == 1
    assert fake.names("s") == ["e"]


def test_interpreter_exit_with_the_server_down_spools_within_the_deadline(fake: FakeServer, tmp_path: Path) -> None:
    """With the server unreachable, exit waits only exit_timeout_seconds, spools, and a later process sends it."""
    spool = tmp_path / "spool"
    script = tmp_path / "app.py"
    script.write_text(
        "from runwatch.client import DatacatClient\n"
        "client = DatacatClient('http://127.0.0.1:9', blocking=False, retry_max_seconds=0.05,\n"  # discard port
        f"                       exit_timeout_seconds=0.3, spool_dir={str(spool)!r})\n"
        "for index in range(10):\n"
        "    client.log_event('s', 'tick', {'i': index})\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < TIMEOUT / 2
    assert "spooled" in result.stderr
    fake.operations["s"] = []
    with open_client(fake, spool_dir=spool) as client:
        assert client.flush(TIMEOUT)
    assert [op["data"]["i"] for op in fake.operations["s"]] == list(range(10))


def test_a_replayed_batch_has_the_same_content_under_its_id(fake: FakeServer, tmp_path: Path) -> None:
    """A batch attempted, spooled and replayed sends the same body under its id (a server refuses other content)."""
    fake.operations["s"] = []
    fake.down = True
    first = open_client(fake, spool_dir=tmp_path)
    first.log_event("s", "e", "ui", "grp", ["l"], "hi", {"k": 1})
    first.log_metric("s", "t", 0.5, metric_type="timer", count=2)
    fake.wait_for(lambda: any(path.endswith("/batch") for _, path, _ in fake.requests))
    first.close(timeout=0.05)
    with fake.lock:
        fake.down = False
    with open_client(fake, spool_dir=tmp_path) as second:
        assert second.flush(TIMEOUT)
    sent: dict[str, list[str]] = {}
    for _, path, document in fake.requests:
        if path.endswith("/batch"):
            sent.setdefault(document["batch_id"], []).append(json.dumps(document, sort_keys=True))
    assert any(len(bodies) > 1 for bodies in sent.values())  # tried before the close, replayed after
    assert all(len(set(bodies)) == 1 for bodies in sent.values())
    assert [op["name"] for op in fake.operations["s"]] == ["e", "t"]
    assert fake.operations["s"][0]["data"]["category"] == "ui"
