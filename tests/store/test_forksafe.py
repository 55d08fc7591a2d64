"""Tests for runwatch.store.forksafe: no SQLite connection crosses a fork.

Real forks, real SQLite files in WAL mode. Each child reports through a pipe
and leaves with ``os._exit`` (never returning into pytest).
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runwatch.store import forksafe

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TIMEOUT = 10


def wal_store(path: Path) -> sqlite3.Connection:
    """A new WAL store with one table, on a connection of this test's own (closed by the caller)."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE t (x INTEGER)")
    return connection


def in_child(
    first: Callable[[], dict[str, Any]], then: Callable[[], None] | None = None
) -> tuple[dict[str, Any], Callable[[], None]]:
    """Fork; the child runs ``first`` and reports, then waits for the parent's go and runs ``then``.

    Returns the child's report and a function that lets it go on and waits for its exit (which
    must be clean: ``then`` did not raise).
    """
    report_read, report_write = os.pipe()
    go_read, go_write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(report_read)
            os.close(go_write)
            os.write(report_write, (json.dumps(first()) + "\n").encode())
            os.read(go_read, 1)
            if then is not None:
                then()
            status = 0
        finally:
            os._exit(status)
    os.close(report_write)
    os.close(go_read)
    with os.fdopen(report_read, "r") as reports:
        report: dict[str, Any] = json.loads(reports.readline())

    def finish() -> None:
        os.write(go_write, b"1")
        os.close(go_write)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    return report, finish


def test_a_forked_child_closes_the_connections_it_inherited(tmp_path: Path) -> None:
    """In the child, a connection the parent opened is closed; in the parent it goes on working."""
    db = tmp_path / "t.db"
    wal_store(db).close()
    inherited = sqlite3.connect(db, factory=forksafe.ForkSafeConnection, isolation_level=None)
    try:
        inherited.execute("INSERT INTO t VALUES (1)")

        def child() -> dict[str, Any]:
            try:
                inherited.execute("SELECT 1")
            except sqlite3.ProgrammingError as exc:
                return {"closed": "closed" in str(exc)}
            return {"closed": False}

        report, finish = in_child(child)
        finish()
        assert report == {"closed": True}
        inherited.execute("INSERT INTO t VALUES (2)")
        assert inherited.execute("SELECT count(*) FROM t").fetchone() == (2,)
    finally:
        inherited.close()


def test_a_child_keeps_its_commits_when_the_parent_closes_first(tmp_path: Path) -> None:
    """A child's own connection holds real locks: the parent's last close cannot delete the WAL under it."""
    db = tmp_path / "t.db"
    wal_store(db).close()
    parent = sqlite3.connect(db, factory=forksafe.ForkSafeConnection, isolation_level=None)
    parent.execute("INSERT INTO t VALUES (0)")
    connections: list[sqlite3.Connection] = []

    def child() -> dict[str, Any]:
        connection = forksafe.connect(db, isolation_level=None, timeout=TIMEOUT)
        connections.append(connection)
        connection.execute("INSERT INTO t VALUES (1)")
        return {"wrote": 1}

    def after_the_parent_closed() -> None:
        connections[0].execute("INSERT INTO t VALUES (2)")
        connections[0].close()

    try:
        report, finish = in_child(child, after_the_parent_closed)  # the child pauses, its connection open
    finally:
        parent.close()  # the parent's last connection: it may checkpoint, never delete the child's WAL
    finish()
    assert report["wrote"] == 1
    check = sqlite3.connect(db)
    try:
        rows = sorted(x for (x,) in check.execute("SELECT x FROM t"))
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()
    assert rows == [0, 1, 2]
