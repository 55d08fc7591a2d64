"""Model-based test of the delivery guarantee: a real WebMonitor on a real SQLite file.

A hypothesis state machine drives a child process that runs a ``WebMonitor``
(commands over a pipe) and keeps a model of everything it asked the child
to emit. Its rules emit metrics (random finite and non-finite values), log
events and state patches for two runs (the monitor's active run through the
``update_*`` facade, a second run through ``emit_event``), make invalid calls,
flush, crash the child with SIGKILL and start a new one, close it cleanly and
start a new one, fill the disk and free it again, and read everything back.

The disk is "full" through ``PRAGMA max_page_count`` on the SQLite sink's own
connection (a per-connection limit, so it is set inside the child, on the
sink's connection, and set again after a restart): every commit that needs a
new page fails with ``SQLITE_FULL``, the real error of a full disk, and the
sink keeps its events pending and retries. The sink has no fault hook of its
own, so the child reaches its connection through the ``store`` component.

Invariants (after every step, read through ``DatabaseManager`` in this process):

* acknowledged ⊆ stored ⊆ emitted: every event emitted before a ``flush()``
  that returned ``True`` (or before a clean close) is stored, and every stored
  event is one that was emitted, with exactly the emitted data (NaN, ±Inf,
  -0.0, subnormals, 64-bit integers as float64);
* no event is stored twice, and each run's events of each kind are stored in
  the order they were emitted;
* what one monitor process stored is a gap-free prefix of what it emitted,
  per run and kind (a crash loses a tail, never a middle);
* when no emitted event can still be in flight (after a successful flush, a
  clean close or a crash): the run's state is its stored patches merged in
  order, and the per-metric statistics count what the stored rows hold;
* the statistics balance (read on the pipeline's loop, so no counter is
  caught mid-update): at the intake, calls = accepted + buffered + dropped
  and invalid calls are rejected without being counted; along every edge of
  the graph, what a component sent is what its consumers received; at every
  buffer, received = delivered + buffered + dropped; and at the store,
  received = stored + dropped + pending.
"""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from tiers import soak_timeout, tier

from runwatch.events import merge_state
from runwatch.store import queries
from runwatch.store.manager import DatabaseManager


def child_main(conn: Connection, db: str, data: str) -> None:
    """The monitor process: runs a WebMonitor and answers the machine's commands over ``conn``."""
    import logging
    import time

    from runwatch import MonitorConfig, WebMonitor
    from runwatch.events import LogEvent, Metric, StatePatch

    logging.getLogger("runwatch").setLevel(logging.CRITICAL)  # store faults are logged on purpose
    monitor = WebMonitor(MonitorConfig(db_path=db, data_dir=data, web_port=0))
    thread = monitor.pipeline_thread
    pipeline = thread.pipeline
    sink = pipeline.component("store")

    # Count every event the monitor hands to its intake (ours, and its own heartbeats
    # and lifecycle events), so the intake's counters can be balanced exactly.
    producer_emits = 0
    real_emit = monitor._emit

    def counting_emit(event: Any) -> None:
        nonlocal producer_emits
        producer_emits += 1
        real_emit(event)

    monitor._emit = counting_emit  # type: ignore[method-assign]
    monitor.start_training(run_id="A")
    edges = {spec.id: [c.id for c in pipeline.spec.consumers_of(spec.id)] for spec in pipeline.spec.components}
    normal_max_pages: int | None = None

    def with_extras(stats: dict[str, Any]) -> dict[str, Any]:
        stats["producer_emits"] = producer_emits
        stats["edges"] = edges
        return stats

    async def snapshot() -> dict[str, Any]:
        return with_extras(monitor.statistics())  # on the loop: every counter at one instant

    def statistics() -> dict[str, Any]:
        return thread.call(snapshot, timeout=10)

    async def set_max_pages(pages: int) -> int:
        async with sink._writer._db.execute(f"PRAGMA max_page_count = {int(pages)}") as cursor:
            return (await cursor.fetchone())[0]

    def disk(full: bool) -> int:
        nonlocal normal_max_pages
        if normal_max_pages is None:
            normal_max_pages = thread.call(set_max_pages, -1, timeout=10)  # a negative value only reads it
        # max_page_count cannot go below the file's size: 1 means "not one page more than now".
        return thread.call(set_max_pages, 1 if full else normal_max_pages, timeout=10)

    def emit(kind: str, run: str, seq: int, payload: dict[str, Any], level: str) -> None:
        if run == "A":  # the monitor's active run, through the training-loop facade
            if kind == "metric":
                monitor.update_metrics(payload)
            elif kind == "log":
                monitor.record_event("model_log", payload, level=level)
            else:
                monitor.update_game_state(payload, frame_number=seq)
        elif kind == "metric":  # any run, through typed events
            monitor.emit_event(Metric(run, time.time(), payload, step=seq))
        elif kind == "log":
            monitor.emit_event(LogEvent(run, time.time(), "model_log", level, payload))
        else:
            monitor.emit_event(StatePatch(run, time.time(), payload))

    invalid = {
        "metric_string": lambda: monitor.update_metrics({"seq": "1"}),
        "metric_empty_name": lambda: monitor.update_metrics({"": 1.0}),
        "log_level": lambda: monitor.record_event("model_log", {}, level="loud"),
        "log_data": lambda: monitor.record_event("model_log", {"x": {1, 2}}),
        "state_key": lambda: monitor.update_game_state({1: "x"}),
        "typed_metric": lambda: monitor.emit_event(Metric("B", 1.0, {"x": 1.0}, step=1.5)),
    }

    def intake_total() -> int:
        intake = statistics()["components"]["app"]["intake"]
        return intake["accepted_events"] + intake["buffered_events"] + sum(intake["dropped_events"].values())

    conn.send({"ready": True})
    while True:
        command = conn.recv()
        op = command["op"]
        if op == "emit":
            for item in command["items"]:
                emit(*item)
            conn.send({"ok": True})
        elif op == "burst":
            for seq in range(command["first"], command["first"] + command["count"]):
                monitor.update_metrics({"seq": float(seq), "loss": 1.0 / (seq + 1)})
            conn.send({"ok": True})
        elif op == "invalid":
            before, calls = intake_total(), producer_emits
            error = None
            try:
                invalid[command["what"]]()
            except (TypeError, ValueError) as exc:
                error = type(exc).__name__
            conn.send({"error": error, "counted": intake_total() - before, "emitted": producer_emits - calls})
        elif op == "flush":
            conn.send({"ok": monitor.flush(timeout=command["timeout"])})
        elif op == "stats":
            conn.send(statistics())
        elif op == "disk":
            conn.send({"max_page_count": disk(command["full"])})
        elif op == "close":
            monitor.close()
            conn.send(with_extras(monitor.statistics()))  # stopped: nothing moves any more
            return


# Monitor processes fork from a server that has imported runwatch (FastAPI, pandas...)
# once: a restart then costs ~0.1 s instead of ~1 s of imports on this 2-core machine.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(
    [
        __name__,
        "runwatch.monitor",
        "runwatch.server",
        "runwatch.pipeline.runtime",
        "runwatch.pipeline.thread",
        "runwatch.sinks.sqlite",
        "runwatch.sinks.websocket",
        "runwatch.sources.in_process",
        "runwatch.sources.ingest",
        "runwatch.sources.system",
        "runwatch.stages.liveness",
        "runwatch.stages.snapshot",
        "runwatch.alerts.stage",
        "runwatch.store.manager",
        "runwatch.web.server",
        "runwatch.web.app",
        "uvicorn.main",
        "uvicorn.protocols.http.h11_impl",
        "uvicorn.protocols.websockets.websockets_sansio_impl",
        "uvicorn.lifespan.off",
        "pandas",
    ]
)


RUNS = ("A", "B")
KINDS = ("metric", "log", "state")
METRIC_NAMES = ("loss", "acc", "grad/norm", "lr")
#: Monitor processes one example may start after its first (each costs ~0.1-0.3 s).
MAX_RESTARTS = tier(3, 12)
#: The caller's mistakes the monitor process knows how to make (see ``child_main``).
INVALID_CALLS = ("metric_string", "metric_empty_name", "log_level", "log_data", "state_key", "typed_metric")
#: The most logging calls of one burst.
BURST = tier(300, 3000)

metric_values = st.one_of(
    st.floats(),  # NaN (any payload), ±Inf, -0.0, subnormals, the extremes
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(-(2**63), 2**63 - 1),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def items(draw: st.DrawFn) -> tuple[str, str, dict[str, Any] | None, str]:
    """One event to emit (the sequence number is added by the machine)."""
    kind = draw(st.sampled_from(KINDS))
    run = draw(st.sampled_from(RUNS))
    level = draw(st.sampled_from(["debug", "info", "warning", "error", "critical"]))
    if kind == "metric":
        names = draw(st.lists(st.sampled_from(METRIC_NAMES), unique=True, max_size=len(METRIC_NAMES)))
        payload: dict[str, Any] = {name: draw(metric_values) for name in names}
    elif kind == "log":
        payload = {"text": draw(st.text(max_size=12)), "value": draw(json_values)}
    else:
        payload = draw(st.dictionaries(st.sampled_from(["x", "y", "z"]), json_values, max_size=3))
    return kind, run, payload, level


def same_value(stored: float, emitted: float) -> bool:
    """Equal as float64 (a 64-bit integer comes back as the nearest float), NaN equal to NaN."""
    emitted = float(emitted)
    if math.isnan(emitted):
        return math.isnan(stored)
    return stored == emitted and math.copysign(1.0, stored) == math.copysign(1.0, emitted)


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """``grad/norm`` logged as ``{"grad": {"norm": ...}}`` (it must come back flattened)."""
    out = {name: value for name, value in values.items() if "/" not in name}
    for name, value in values.items():
        if "/" in name:
            group, leaf = name.split("/")
            out.setdefault(group, {})[leaf] = value
    return out


class Child:
    """A monitor process driven over a pipe."""

    def __init__(self, db: Path, data: Path) -> None:
        self.conn, child_end = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=child_main, args=(child_end, str(db), str(data)), daemon=True)
        self.process.start()
        child_end.close()
        assert self.ask(None) == {"ready": True}

    def ask(self, command: dict[str, Any] | None) -> Any:
        if command is not None:
            self.conn.send(command)
        if not self.conn.poll(60):
            raise AssertionError(f"the monitor process did not answer {command!r}")
        try:
            return self.conn.recv()
        except EOFError:
            raise AssertionError(f"the monitor process died (exit code {self.process.exitcode})") from None

    def kill(self) -> None:
        """SIGKILL: no atexit hook, no close, no drain."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)
        self.process.close()
        self.conn.close()

    def close(self) -> dict[str, Any]:
        stats = self.ask({"op": "close"})
        self.process.join(20)
        assert self.process.exitcode == 0
        self.process.close()
        self.conn.close()
        return stats


def check_balance(stats: dict[str, Any], *, stopped: bool = False) -> None:
    """Every counter of the pipeline balances (see the module docstring)."""
    components = stats["components"]
    intake = components["app"]["intake"]
    intake_dropped = sum(intake["dropped_events"].values())
    # Nothing a producer handed over is unaccounted for at the intake.
    assert stats["producer_emits"] == intake["accepted_events"] + intake["buffered_events"] + intake_dropped, intake
    received_from: dict[str, int] = {}
    for source, consumers in stats["edges"].items():
        for consumer in consumers:
            received_from[consumer] = received_from.get(consumer, 0) + components[source]["sent_events"]
    for cid, entry in components.items():
        buffer = entry.get("buffer")
        if buffer is None:
            continue
        dropped = sum(buffer["dropped_events"].values())
        if buffer["waiting_senders"] == 0:  # a blocked sender's batch is received but not yet buffered
            assert buffer["received_events"] == buffer["delivered_events"] + buffer["buffered_events"] + dropped, cid
            # What the inputs sent is what this consumer received.
            assert buffer["received_events"] == received_from.get(cid, 0), (cid, buffer, received_from)
        assert entry["processed_events"] == buffer["delivered_events"], cid
    store = components["store"]
    store_dropped = (
        sum(store["buffer"]["dropped_events"].values())
        + sum(store["dropped_events"].values())
        + sum(store["store_dropped_events"].values())
    )
    pending = store["buffer"]["buffered_events"] + store["pending_events"]
    assert store["buffer"]["received_events"] == store["committed_events"] + store_dropped + pending, store
    if stopped:  # a clean close with a healthy store: everything committed, nothing dropped anywhere
        assert pending == 0 and store_dropped == 0, store
        assert intake_dropped == 0 and intake["buffered_events"] == 0, intake


class MonitorMachine(RuleBasedStateMachine):
    """Emit, flush, crash, restart, fill the disk and read back; the model says what must be stored."""

    examples = 0

    def __init__(self, root: Path) -> None:
        super().__init__()
        MonitorMachine.examples += 1
        base = root / f"example-{MonitorMachine.examples}"
        self.db_path, self.data_dir = base / "runs.db", base / "data"
        self.db = DatabaseManager(self.db_path)
        self.generation = 0  # one per monitor process
        self.next_seq = 0
        # seq → (generation, run, kind, payload); streams: (run, kind) → seqs in emission order
        self.emitted: dict[int, tuple[int, str, str, Any]] = {}
        self.streams: dict[tuple[str, str], list[int]] = {(run, kind): [] for run in RUNS for kind in KINDS}
        self.acknowledged: set[int] = set()
        self.in_flight = False  # emitted events may still be committing
        self.disk_full = False
        self.restarts = 0
        self.child = self._start()

    def _start(self) -> Child:
        self.generation += 1
        child = Child(self.db_path, self.data_dir)
        if self.disk_full:  # the disk is still full after the restart
            child.ask({"op": "disk", "full": True})
        return child

    # -- rules ----------------------------------------------------------------------

    @rule(batch=st.lists(items(), min_size=1, max_size=6))
    def emit(self, batch: list[tuple[str, str, dict[str, Any], str]]) -> None:
        """Emit a few events; the model remembers each with a unique sequence number."""
        commands = []
        for kind, run, payload, level in batch:
            seq = self.next_seq
            self.next_seq += 1
            if kind == "metric":
                payload = {"seq": float(seq), **payload}
                sent: Any = nested(payload)
            elif kind == "log":
                payload = {"seq": seq, **payload}
                sent = payload
            else:
                payload = {"seq": seq, **payload}
                sent = payload
            self.emitted[seq] = (self.generation, run, kind, payload if kind != "log" else (payload, level))
            self.streams[(run, kind)].append(seq)
            commands.append([kind, run, seq, sent, level])
        assert self.child.ask({"op": "emit", "items": commands}) == {"ok": True}
        self.in_flight = True

    @rule(count=st.integers(1, BURST))
    def emit_burst(self, count: int) -> None:
        """Many logging calls at once, so a crash or a full disk can land inside a large transaction."""
        first = self.next_seq
        self.next_seq += count
        for seq in range(first, first + count):
            self.emitted[seq] = (self.generation, "A", "metric", {"seq": float(seq), "loss": 1.0 / (seq + 1)})
            self.streams[("A", "metric")].append(seq)
        assert self.child.ask({"op": "burst", "first": first, "count": count}) == {"ok": True}
        self.in_flight = True

    @rule(what=st.sampled_from(INVALID_CALLS))
    def emit_invalid(self, what: str) -> None:
        """A caller's mistake raises TypeError/ValueError at the call and reaches nothing."""
        answer = self.child.ask({"op": "invalid", "what": what})
        assert answer == {"error": answer["error"], "counted": 0, "emitted": 0}
        assert answer["error"] in ("TypeError", "ValueError"), answer

    @rule()
    def flush(self) -> None:
        """flush() returning True acknowledges everything emitted before it."""
        ok = self.child.ask({"op": "flush", "timeout": 0.3 if self.disk_full else 15.0})["ok"]
        if not self.disk_full:
            assert ok, "flush() failed while the store was healthy"
        if ok:
            self.acknowledge_generation()
            self.in_flight = False

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule()
    def crash_and_restart(self) -> None:
        """SIGKILL the monitor process wherever it is, then start a new one on the same store."""
        self.restarts += 1
        self.child.kill()
        self.in_flight = False  # whatever was not committed is gone for good
        self.check_store()  # the dead process's store, before the next one touches it
        self.child = self._start()

    @precondition(lambda self: not self.disk_full and self.restarts < MAX_RESTARTS)
    @rule()
    def close_and_restart(self) -> None:
        """A clean close drains every queue: everything emitted is stored, nothing is dropped."""
        self.restarts += 1
        stats = self.child.close()
        check_balance(stats, stopped=True)
        self.acknowledge_generation()
        self.in_flight = False
        self.check_store()
        self.child = self._start()

    def acknowledge_generation(self) -> None:
        """Everything this monitor process was given is committed (what a crashed one lost stays lost)."""
        self.acknowledged.update(seq for seq, (generation, *_) in self.emitted.items() if generation == self.generation)

    @rule(full=st.booleans())
    def set_disk_full(self, full: bool) -> None:
        """Fill the disk (commits fail with SQLITE_FULL) or free it again."""
        self.child.ask({"op": "disk", "full": full})
        self.disk_full = full

    @rule()
    def query(self) -> None:
        """Read everything back; when nothing can be in flight, check the derived data too."""
        self.check_store()

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def statistics_balance(self) -> None:
        """The pipeline's counters balance at every step."""
        check_balance(self.child.ask({"op": "stats"}))

    @invariant()
    def store_matches_model(self) -> None:
        """acknowledged ⊆ stored ⊆ emitted, without duplicates, in order (each read is one snapshot)."""
        self.check_store()

    def check_store(self) -> None:
        if not self.db_path.exists():
            return
        stored_by_stream: dict[tuple[str, str], list[int]] = {}
        known_runs = {run["run_id"] for run in self.db.get_training_runs()}
        for run in RUNS:
            if run not in known_runs:  # nothing of it stored yet (checked below against what was acknowledged)
                continue
            stored_by_stream[(run, "metric")] = self._stored_metrics(run)
            stored_by_stream[(run, "log")] = self._stored_logs(run)
            stored_by_stream[(run, "state")] = self._stored_states(run)
        for stream, emitted in self.streams.items():
            stored = stored_by_stream.get(stream, [])
            assert len(stored) == len(set(stored)), f"{stream}: an event was stored twice: {stored}"
            assert stored == sorted(stored), f"{stream}: stored out of order: {stored}"
            assert set(stored) <= set(emitted), f"{stream}: stored events that were never emitted"
            missing = sorted(set(emitted) & self.acknowledged - set(stored))
            assert not missing, f"{stream}: acknowledged events are missing: {missing}"
            # Per monitor process, what was stored is a gap-free prefix of what was emitted.
            for generation in {self.emitted[seq][0] for seq in emitted}:
                mine = [seq for seq in emitted if self.emitted[seq][0] == generation]
                kept = [seq for seq in stored if self.emitted[seq][0] == generation]
                assert kept == mine[: len(kept)], f"{stream}: generation {generation} stored {kept} of {mine}"
        if not self.in_flight:
            self._check_derived(known_runs)

    def _stored_metrics(self, run: str) -> list[int]:
        frame = self.db.get_run_metrics(run, ["seq", *METRIC_NAMES])
        frame = frame[frame["seq"].notna()]  # the system sampler's calls log no seq
        seqs = [int(seq) for seq in frame["seq"]]
        for seq in seqs:
            assert seq in self.emitted and self.emitted[seq][1:3] == (run, "metric"), (run, seq)
        if run == "B":  # emitted with step=seq
            assert frame["step"].tolist() == seqs
        for name in METRIC_NAMES:
            stored = frame[name].to_numpy(dtype=np.float64)
            # A call that did not log a metric has NaN in its column; a 64-bit integer comes back as float64.
            expected = np.array([float(self.emitted[seq][3].get(name, math.nan)) for seq in seqs], dtype=np.float64)
            assert np.array_equal(stored, expected, equal_nan=True), (run, name, stored, expected)
            numbers = ~np.isnan(expected)  # -0.0 stays -0.0
            assert np.array_equal(np.signbit(stored[numbers]), np.signbit(expected[numbers])), (run, name)
        return seqs

    def _stored_logs(self, run: str) -> list[int]:
        events = sorted(self.db.get_run_events(run, "model_log"), key=lambda event: event["id"])  # storage order
        seqs = []
        for event in events:
            seq = event["event_data"]["seq"]
            assert seq in self.emitted and self.emitted[seq][2] == "log", seq
            _, emitted_run, _, (data, level) = self.emitted[seq]
            assert emitted_run == run
            assert event["event_data"] == data and event["level"] == level and event["kind"] == "log"
            seqs.append(seq)
        return seqs

    def _stored_states(self, run: str) -> list[int]:
        seqs = []
        for entry in self._state_history(run):
            patch = entry["patch"]
            if run == "A":  # update_game_state(state, frame_number) → {"game_state": state, "frame_number": n}
                assert patch["frame_number"] == patch["game_state"]["seq"], patch
                patch = patch["game_state"]
            seq = patch["seq"]
            assert seq in self.emitted and self.emitted[seq][2] == "state", seq
            assert self.emitted[seq][1] == run and patch == self.emitted[seq][3], (seq, patch)
            seqs.append(seq)
        return seqs

    def _state_history(self, run: str) -> list[dict[str, Any]]:
        """The run's stored state patches in storage order (DatabaseManager has no query for them)."""
        conn = sqlite3.connect(self.db_path.absolute().as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            history = queries.state_history(conn, run)  # the store's read query: ordered by timestamp
        finally:
            conn.close()
        return sorted(history, key=lambda entry: entry["id"])

    def _check_derived(self, known_runs: set[str]) -> None:
        """Quiescent: no emitted event can still commit, so separate reads agree with each other."""
        for run in RUNS:
            if run not in known_runs:
                continue
            frame = self.db.get_run_metrics(run, ["seq", *METRIC_NAMES])
            frame = frame[frame["seq"].notna()]
            summary = self.db.get_run_summary(run)["metrics"]
            for name in ("seq", *METRIC_NAMES):
                logged = [seq for seq in frame["seq"] if name == "seq" or name in self.emitted[int(seq)][3]]
                stats = summary.get(name, {"count": 0, "nan_count": 0})
                assert stats["count"] == len(logged), (run, name, stats, len(logged))
                nans = sum(1 for seq in logged if name != "seq" and math.isnan(float(self.emitted[int(seq)][3][name])))
                assert stats["nan_count"] == nans, (run, name, stats, nans)
            expected: dict[str, Any] = {}
            for entry in self._state_history(run):
                expected = merge_state(expected, entry["patch"])
            assert self.db.get_run_state(run) == expected, run

    def teardown(self) -> None:
        self.child.kill()
        self.db.close()


@pytest.mark.soak
@soak_timeout(60, 900)
def test_monitor_keeps_its_delivery_guarantee_under_crashes_and_a_full_disk(tmp_path: Path) -> None:
    """Random emits, flushes, crashes, clean restarts and a full disk never break the delivery guarantee."""
    run_state_machine_as_test(
        lambda: MonitorMachine(tmp_path),
        settings=settings(
            max_examples=tier(8, 100),
            stateful_step_count=tier(25, 50),
            deadline=None,  # a step may start a monitor process (~0.5 s)
            database=None,
        ),
    )
