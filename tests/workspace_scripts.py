"""Training processes for the workspace tests and benchmark: run as ``python tests/workspace_scripts.py ROLE JSON``.

``embedded`` writes a store with a :class:`~runwatch.WebMonitor` (as a training script does);
``remote`` is the same script in remote mode (``MonitorConfig(server_url=...)``): it sends to a runwatch
server through its spool. Both log metric
``i`` = the step and ``sent_at`` = the wall clock when logged, and talk to their parent on
stdio: a line ``phase <n>`` once phase ``n`` is logged (and flushed); with ``report_every``,
a line ``step <n> spooled <events on disk>`` every that many steps (remote); between phases,
when asked to, they wait for a line on stdin; ``done`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


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
    """A training script in remote mode: ``MonitorConfig(server_url=...)``, its spool under ``spool_dir``.

    ``update_interval`` is an hour: no heartbeats or system samples beside the start's, so what the
    spool holds is the run's start, one heartbeat and its logged calls.
    """
    from runwatch import MonitorConfig, WebMonitor

    config = MonitorConfig(
        db_path=str(Path(options["spool_dir"]) / "never.db"),
        data_dir=options["spool_dir"],
        server_url=options["url"],
        update_interval=3600.0,
    )
    with WebMonitor(config) as monitor:
        sink = monitor.pipeline_thread.pipeline.component("server")
        run_id = options["run_id"]
        monitor.start_training(run_id=run_id)  # an existing run resumes after the server's last step
        step = 0 if monitor.step is None else monitor.step + 1
        if options.get("resume"):
            print(f"resumed {step}", flush=True)
        report_every = options.get("report_every", 0)
        for phase, count in enumerate(options["phases"], 1):
            started = time.monotonic()
            for index in range(count):
                monitor.update_metrics({"i": step, "sent_at": time.time()}, step=step)
                step += 1
                if report_every and step % report_every == 0:
                    print(f"step {step} spooled {sink.statistics()['spooled_events']}", flush=True)
                _pace(started, index + 1, options.get("rate"))
            monitor.flush(30)
            print(f"phase {phase}", flush=True)
            if options.get("wait_between_phases") and phase < len(options["phases"]):
                sys.stdin.readline()
        monitor.stop_training()
        delivered = monitor.wait_delivered(options.get("deliver_timeout", 60))
        print(f"delivered {delivered}", flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    {"embedded": embedded, "remote": remote}[sys.argv[1]](json.loads(sys.argv[2]))
