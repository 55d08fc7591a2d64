"""The remote producer's on-disk spool: records kept in order until acknowledged, across process deaths."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runwatch.remote.spool import Spool, spool_directories

TIMEOUT = 20


def test_records_come_back_in_order_and_acknowledged_ones_never_again(tmp_path: Path) -> None:
    """Appended records are read oldest first; after a reopen only the unacknowledged ones are there."""
    spool = Spool.create(tmp_path)
    for number in range(5):
        spool.append(f"body-{number}".encode(), events=number + 1)
    first = spool.first()
    assert first is not None and spool.read(first) == b"body-0"
    spool.acknowledge(first)
    second = spool.first()
    assert second is not None
    spool.acknowledge(second)
    assert spool.unacked_records == 3 and spool.unacked_events == 3 + 4 + 5
    directory = spool.directory
    spool.close()
    adopted = Spool.adopt(directory)
    assert adopted is not None
    got = []
    while (record := adopted.first()) is not None:
        got.append((adopted.read(record), record.events))
        adopted.acknowledge(record)
    assert got == [(b"body-2", 3), (b"body-3", 4), (b"body-4", 5)]
    adopted.close()
    assert not directory.exists()  # nothing left: the spool is gone


def test_only_the_oldest_record_can_be_acknowledged(tmp_path: Path) -> None:
    """Acknowledging out of order is a ValueError: records go to the server in order."""
    spool = Spool.create(tmp_path)
    spool.append(b"a", 1)
    second = spool.append(b"b", 1)
    with pytest.raises(ValueError, match="not the oldest"):
        spool.acknowledge(second)
    spool.close()


def test_a_torn_record_at_the_end_is_cut_off_and_nothing_before_it_is_lost(tmp_path: Path) -> None:
    """A crash in the middle of a write leaves a partial frame: reopening keeps every whole record."""
    spool = Spool.create(tmp_path)
    spool.append(b"whole-1", 1)
    spool.append(b"whole-2", 2)
    directory = spool.directory
    segment = next(directory.glob("*.seg"))
    spool.close(remove_if_empty=False)
    with open(segment, "ab") as file:
        file.write(b"\x40\x00\x00\x00\x01\x02")  # a frame header cut short
    adopted = Spool.adopt(directory)
    assert adopted is not None
    assert adopted.torn_bytes == 6
    assert [adopted.read(r) for r in adopted._records] == [b"whole-1", b"whole-2"]
    adopted.close(remove_if_empty=False)


def test_a_corrupt_record_ends_what_is_trusted(tmp_path: Path) -> None:
    """A record whose checksum does not match (a damaged disk block) and everything after it are not sent."""
    spool = Spool.create(tmp_path)
    spool.append(b"good", 1)
    spool.append(b"damaged", 1)
    spool.append(b"after", 1)
    directory = spool.directory
    spool.close(remove_if_empty=False)
    segment = next(directory.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[data.index(b"damaged")] ^= 0xFF
    segment.write_bytes(bytes(data))
    adopted = Spool.adopt(directory)
    assert adopted is not None
    assert [adopted.read(r) for r in adopted._records] == [b"good"]
    adopted.close(remove_if_empty=False)


def test_segments_roll_over_and_finished_ones_are_deleted(tmp_path: Path) -> None:
    """Past segment_bytes a new segment starts; once every record of one is acknowledged its file goes."""
    spool = Spool.create(tmp_path, segment_bytes=1024)
    for number in range(10):
        spool.append(bytes([number]) * 400, 1)
    assert len(list(spool.directory.glob("*.seg"))) >= 3
    for _ in range(8):
        record = spool.first()
        assert record is not None
        spool.acknowledge(record)
    left = sorted(int(path.stem) for path in spool.directory.glob("*.seg"))
    assert left == sorted({record.segment for record in spool._records})  # only those holding records 8 and 9
    assert [spool.read(r)[0] for r in spool._records] == [8, 9]
    spool.close(remove_if_empty=False)


def test_a_spool_in_use_is_not_adopted_and_one_left_behind_is(tmp_path: Path) -> None:
    """A live process keeps its spool (flock); once it is gone another process takes it over."""
    spool = Spool.create(tmp_path)
    spool.append(b"left", 1)
    assert Spool.adopt(spool.directory) is None
    spool.close()  # records left: the directory stays
    assert spool_directories(tmp_path) == [spool.directory]
    adopted = Spool.adopt(spool.directory)
    assert adopted is not None and adopted.unacked_records == 1
    adopted.close(remove_if_empty=False)


def test_a_spool_held_by_another_live_process_is_not_adopted_until_it_dies(tmp_path: Path) -> None:
    """The lock belongs to a process: while a child holds its spool it cannot be adopted; after kill -9 it can."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from runwatch.remote.spool import Spool
        spool = Spool.create(Path({str(tmp_path)!r}))
        spool.append(b"from-child", 3)
        print(spool.directory, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        directory = Path(child.stdout.readline().strip())
        assert Spool.adopt(directory) is None
        child.kill()
        child.wait(TIMEOUT)
        adopted = Spool.adopt(directory)
        assert adopted is not None
        record = adopted.first()
        assert record is not None and adopted.read(record) == b"from-child" and record.events == 3
        adopted.close(remove_if_empty=False)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()


def test_a_new_spool_is_private(tmp_path: Path) -> None:
    """Spooled events can be sensitive: the spool's directory is 0700 and its files 0600."""
    spool = Spool.create(tmp_path / "root")
    spool.append(b"x", 1)
    assert spool.directory.stat().st_mode & 0o777 == 0o700
    for path in spool.directory.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    spool.close(remove_if_empty=False)


def test_sync_is_cheap_when_nothing_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sync() after sync() does not fsync again (the remote sink calls it every second)."""
    spool = Spool.create(tmp_path)
    spool.append(b"x", 1)
    spool.sync()
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    spool.sync()
    assert calls == []
    spool.append(b"y", 1)
    spool.sync()
    assert len(calls) == 1
    spool.close(remove_if_empty=False)
