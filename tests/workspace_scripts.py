"""Training processes for the workspace tests and benchmark: run as ``python tests/workspace_scripts.py ROLE JSON``.

``embedded`` writes a store with a :class:`~runwatch.WebMonitor` (as a training script does);
``remote`` sends to a runwatch server through the remote sink and its spool. Both log metric
``i`` = the step and ``sent_at`` = the wall clock when logged, and talk to their parent on
stdio: a line ``phase <n>`` once phase ``n`` is logged (and flushed); with ``report_every``,
a line ``step <n> spooled <events on disk>`` every that many steps (remote); between phases,
when asked to, they wait for a line on stdin; ``done`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from runwatch.events import Metric, RunLifecycle, RunTransition


def _pace(started: float, done: int, rate: float | None) -> None:
    """Sleep until ``done`` steps are due at ``rate`` steps per second since ``started``."""
    if rate:
        ahead = started + done / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


def embedded(options: dict[str, Any]) -> None:
    """A training script writing the store directly (embedded mode)."""
    from runwatch import MonitorConfig, WebMonitor

    config = MonitorConfig(db_path=options["db"], data_dir=options["data_dir"], web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id=options["run_id"])
        step = 0
        for phase, count in enumerate(options["phases"], 1):
            started = time.monotonic()
            for index in range(count):
                monitor.update_metrics({"i": step, "sent_at": time.time()}, step=step)
                step += 1
                _pace(started, index + 1, options.get("rate"))
            monitor.flush()
            print(f"phase {phase}", flush=True)
            if options.get("wait_between_phases") and phase < len(options["phases"]):
                sys.stdin.readline()
        monitor.stop_training()
    print("done", flush=True)


def remote(options: dict[str, Any]) -> None:
    """A training process sending to a server (remote mode): in-process source → remote sink → spool → server."""
    from runwatch.pipeline.component import ComponentContext
    from runwatch.pipeline.runtime import Pipeline
    from runwatch.pipeline.thread import PipelineThread
    from runwatch.remote.reader import RestReader

    sink = {
        "type": "remote",
        "inputs": ["app"],
        "url": options["url"],
        "spool_dir": options["spool_dir"],
        "retry_max_seconds": 0.5,
        "drain_timeout_seconds": options.get("drain_timeout_seconds", 10.0),
    }
    graph = {"sources": {"app": {"type": "in_process"}}, "sinks": {"server": sink}}
    thread = PipelineThread(Pipeline(graph, context=ComponentContext(data_dir=options["spool_dir"])))
    thread.start()
    emit = thread.pipeline.intake.bridge.emit
    remote_sink = thread.pipeline.component("server")
    run_id = options["run_id"]
    step = 0
    if options.get("resume"):
        # What an earlier process of this run spooled goes first; then continue after the server's last step.
        remote_sink.wait_delivered(60)
        with RestReader(options["url"]) as reader:
            summary = reader.get_run_summary(run_id)
        step = int(summary["metrics"]["i"]["last_step"]) + 1
        emit(RunLifecycle(run_id, time.time(), RunTransition.RESUMED))
        print(f"resumed {step}", flush=True)
    else:
        emit(RunLifecycle(run_id, time.time(), RunTransition.STARTED))
    report_every = options.get("report_every", 0)
    for phase, count in enumerate(options["phases"], 1):
        started = time.monotonic()
        for index in range(count):
            emit(Metric(run_id, time.time(), {"i": step, "sent_at": time.time()}, step=step))
            step += 1
            if report_every and step % report_every == 0:
                print(f"step {step} spooled {remote_sink.statistics()['spooled_events']}", flush=True)
            _pace(started, index + 1, options.get("rate"))
        thread.flush(30)
        print(f"phase {phase}", flush=True)
        if options.get("wait_between_phases") and phase < len(options["phases"]):
            sys.stdin.readline()
    emit(RunLifecycle(run_id, time.time(), RunTransition.COMPLETED))
    thread.flush(30)
    delivered = remote_sink.wait_delivered(options.get("deliver_timeout", 60))
    print(f"delivered {delivered}", flush=True)
    thread.close()
    print("done", flush=True)


if __name__ == "__main__":
    {"embedded": embedded, "remote": remote}[sys.argv[1]](json.loads(sys.argv[2]))
