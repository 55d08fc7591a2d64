"""The compare view in headless Chromium: first paint, frame time while live, JS heap.

    python benchmarks/bench_dashboard.py [--calls 100000] [--live-seconds 60] [--quick]

A store gets 10 runs × 12 metrics, ``--calls`` logging calls per run (each
call logs the 12 metrics), written through ``WebMonitor``. Then, against a
freshly started ``runwatch serve`` over that store (a cold server: its own
process, nothing cached), Chromium opens ``#/compare`` with the 10 runs:

1. **Time to first full paint**: from navigation start to every one of the
   12 charts drawn with its 10 runs (the viewport is tall enough to show all
   of them), measured in the page; with it, the time to the first run drawn
   (the view reads one run per ``GET /api/compare``, two at a time, and
   draws each as it arrives) and the requests' own times.
2. **Main-thread time per animation frame while live**: the 10 runs log
   1,000 calls/s each (12 metrics per call) through ``POST /api/ingest``,
   paced; a Chromium trace of the renderer's main thread is cut into 16.7 ms
   frames and each frame's task time summed (p50, p95, max), as CPU time of
   the thread (the trace's ``tdur``): the server and the load generator run
   on the same cores, and the thread's waits for a core are not its work.
   The interval between ``requestAnimationFrame`` callbacks is reported
   beside it (it does include those waits).
3. **JS heap**: the page's live JS heap after a forced collection, sampled
   every 10 s of the live period; flat means the last samples do not grow.
4. **The page at the target rate**: on a shared 2-core host the server
   cannot always take 10,000 calls/s (it stores and fans out 120,000 values a
   second beside Chromium and the load generator), so the rate it took is
   reported, and then the page alone is fed 1,000 calls/s per run: the
   same ``columns`` messages the server sends, handed to the page's live
   socket in 50 ms batches (building them is a few string joins, counted in
   the page's time), traced as in 2.

Baseline, from the same run: the same view over a store of ``--calls / 10``
calls per run, so the cost of history shows.

Everything stays on 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from browser import Browser, find_chromium  # noqa: E402

from runwatch import MonitorConfig, WebMonitor  # noqa: E402

RUNS = 10
METRICS = [f"{group}/{name}" for group in ("train", "val", "opt") for name in ("loss", "accuracy", "grad_norm", "lr")]
VIEWPORT = (1280, 2400)
LIVE_RATE = 1_000  # logging calls per second per run

# Keeps the page's websocket reachable (window.__liveSocket), to feed it messages directly.
CAPTURE_SOCKET = """
(() => {
  const Native = window.WebSocket;
  window.WebSocket = function (...args) { const ws = new Native(...args); window.__liveSocket = ws; return ws; };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""

# Feeds the page's socket `columns` messages: `rate` calls/s for each run, every 50 ms as many
# calls as are due by the clock (a late timer catches up, so the rate holds on a busy host).
FEED_PAGE = """
((runs, names, rate, firstStep) => {
  let step = firstStep;
  let sent = 0;
  const started = performance.now();
  const rows = Math.round(rate * 0.05);
  // The values repeat from message to message (their text is built once per length); steps and times advance.
  const texts = new Map();
  const valuesText = (r, n) => {
    const key = r + ':' + n;
    if (!texts.has(key)) texts.set(key, JSON.stringify(names.map((_, k) =>
      Array.from({ length: n }, (_, j) => 0.2 + 0.05 * Math.sin(j / 9 + k + r)))));
    return texts.get(key);
  };
  const namesText = JSON.stringify(names);
  window.__feed = setInterval(() => {
    // In multiples of 10 calls, so the values' texts come in at most 4 * rows / 10 lengths.
    const behind = Math.floor(((performance.now() - started) / 1000) * rate) - sent;
    const due = Math.floor(Math.min(4 * rows, behind) / 10) * 10;
    if (due <= 0) return;
    const now = Date.now() / 1000;
    const steps = Array.from({ length: due }, (_, j) => step + j).join(',');
    const times = Array.from({ length: due }, (_, j) => (now - (due - j) * 0.001).toFixed(6)).join(',');
    const blocks = runs.map((run, r) => `{"run_id":${JSON.stringify(run)},"names":${namesText},`
      + `"steps":[${steps}],"timestamps":[${times}],"values":${valuesText(r, due)}}`);
    window.__liveSocket.onmessage({ data: `{"type":"columns","events":[],"metrics":[${blocks.join(',')}]}` });
    step += due;
    sent += due;
    window.__fedRate = (sent * runs.length) / ((performance.now() - started) / 1000);
  }, 50);
  return true;
})
"""
FRAME_MS = 1000 / 60


def write_store(directory: Path, calls: int) -> tuple[Path, list[str]]:
    """10 runs × 12 metrics × ``calls`` logging calls, through WebMonitor."""
    db_path = directory / "monitoring.db"
    config = MonitorConfig(db_path=str(db_path), data_dir=str(directory / "data"), web_port=0)
    run_ids = []
    with WebMonitor(config) as monitor:
        for r in range(RUNS):
            run_id = monitor.start_training(config={"lr": 10 ** -(1 + r / 4), "seed": r}, run_id=f"bench-{r}")
            run_ids.append(run_id)
            for i in range(calls):
                x = i / calls
                monitor.update_metrics(
                    {
                        name: math.exp(-3 * x * (1 + r / 10)) + 0.05 * math.sin(i / 7 + k)
                        for k, name in enumerate(METRICS)
                    }
                )
            monitor.stop_training()
        assert monitor.flush(120)
    return db_path, run_ids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``runwatch serve`` in its own process, on a free loopback port."""

    def __init__(self, db_path: Path, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        runwatch = str(Path(sys.executable).with_name("runwatch"))
        command = [runwatch, "serve", "--db", str(db_path), "--port", str(self.port)]
        command += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/api/health", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("runwatch serve did not start")
            time.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


FULL_PAINT_PROBE = f"""
(() => {{
  const start = () => {{
    const check = () => {{
      const charts = Array.from(document.querySelectorAll('#compare-charts div.chart'));
      if (window.__firstRunPaint === undefined && charts.some((c) => c.__chart && c.__chart.lastDraw
        && c.__chart.lastDraw.traces > 0)) window.__firstRunPaint = performance.now();
      const done = charts.length === {len(METRICS)} && charts.every((c) => c.__chart && c.__chart.lastDraw
        && c.__chart.lastDraw.traces === {RUNS});
      if (done) window.__fullPaint = performance.now();
      else requestAnimationFrame(check);
    }};
    requestAnimationFrame(check);
  }};
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
}})();
"""


def first_paint(browser: Browser, url: str) -> dict[str, float]:
    browser.navigate(url, timeout=120)
    browser.wait_for("window.__fullPaint !== undefined", timeout=300, interval=0.05, what="the full paint")
    paint = float(browser.evaluate("window.__fullPaint"))
    first = float(browser.evaluate("window.__firstRunPaint"))
    # One GET /api/compare per run (read two at a time): the longest, and all of them end to end
    # (not the later reads of the live tail, which name an x_min).
    requests = browser.evaluate(
        "(() => { const es = performance.getEntriesByType('resource')"
        ".filter(r => r.name.includes('api/compare') && !r.name.includes('x_min'));"
        " return {n: es.length, longest: Math.max(...es.map(e => e.duration)),"
        " span: Math.max(...es.map(e => e.responseEnd)) - Math.min(...es.map(e => e.startTime)),"
        " bytes: es.reduce((a, e) => a + e.encodedBodySize, 0)}; })()"
    )
    return {
        "full_paint_ms": paint,
        "first_run_paint_ms": first,
        "compare_requests": requests["n"],
        "compare_request_longest_ms": requests["longest"],
        "compare_requests_span_ms": requests["span"],
        "compare_bytes": requests["bytes"],
    }


def ingest_loop(url: str, run_ids: list[str], start_step: int, seconds: float, stop: threading.Event) -> dict[str, Any]:
    """Log LIVE_RATE calls/s per run through POST /api/ingest, paced in 50 ms batches; bounded by ``seconds``."""
    period = 0.05
    per_batch = int(LIVE_RATE * period)
    sent = 0
    late = 0
    step = start_step
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        tick = 0
        while not stop.is_set() and time.monotonic() - started < seconds:
            now = time.time()
            events = []
            for j in range(per_batch):
                for r, run_id in enumerate(run_ids):
                    values = {name: 0.2 + 0.05 * math.sin((step + j) / 9 + k + r) for k, name in enumerate(METRICS)}
                    events.append(
                        {
                            "kind": "metric",
                            "run_id": run_id,
                            "timestamp": now + j * period / per_batch,
                            "step": step + j,
                            "values": values,
                        }
                    )
            response = client.post(
                "/api/ingest", content=orjson.dumps(events), headers={"content-type": "application/json"}
            )
            if response.status_code not in (200, 202):
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")
            sent += len(events)
            step += per_batch
            tick += 1
            wait = started + tick * period - time.monotonic()
            if wait > 0:
                stop.wait(wait)
            else:
                late += 1
    elapsed = time.monotonic() - started
    return {"calls_per_second": sent / elapsed, "late_batches": late, "batches": tick}


def trace_main_thread(browser: Browser, seconds: float) -> list[float]:
    """Busy milliseconds of the page's main thread in each 16.7 ms frame, from a Chromium trace."""
    categories = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "__metadata"]
    browser.send("Tracing.start", {"traceConfig": {"includedCategories": categories}, "transferMode": "ReportEvents"})
    browser.pump(seconds)
    events: list[dict[str, Any]] = []
    browser.ws.send(json.dumps({"id": 999_999, "method": "Tracing.end", "params": {}}))  # type: ignore[union-attr]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = browser._receive(5)
        if message is None:
            continue
        if message.get("method") == "Tracing.dataCollected":
            events.extend(message["params"]["value"])
        elif message.get("method") == "Tracing.tracingComplete":
            break
    main_threads = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("args", {}).get("name") == "CrRendererMain"
    }
    tasks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in events:
        key = (e.get("pid"), e.get("tid"))
        if e.get("ph") == "X" and key in main_threads and e.get("name") in ("RunTask", "ThreadControllerImpl::RunTask"):
            # tdur is the thread's CPU time in the task: on a machine whose cores the server
            # and the load generator share, wall time would count the time the thread waited.
            spent = e.get("tdur", e.get("dur", 0))
            tasks.setdefault(key, []).append((e["ts"] / 1000, (e["ts"] + spent) / 1000))
    if not tasks:
        return []
    busiest = max(tasks.values(), key=lambda spans: sum(b - a for a, b in spans))
    # Tasks nest (a RunTask inside ThreadControllerImpl::RunTask): count busy time once.
    merged: list[list[float]] = []
    for a, b in sorted(busiest):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    begin = merged[0][0]
    end = max(b for _, b in merged)
    frames = [0.0] * (int((end - begin) / FRAME_MS) + 1)
    for a, b in merged:
        index = int((a - begin) / FRAME_MS)
        while a < b and index < len(frames):
            frame_end = begin + (index + 1) * FRAME_MS
            frames[index] += min(b, frame_end) - a
            a = frame_end
            index += 1
    return frames[1:-1]  # the first and last frames are partial


def raf_intervals(browser: Browser, seconds: float) -> list[float]:
    browser.evaluate(
        "window.__raf = []; (() => { let last = performance.now(); const tick = (t) => {"
        " window.__raf.push(t - last); last = t; if (window.__raf.length < 100000) requestAnimationFrame(tick); };"
        " requestAnimationFrame(tick); })(); true"
    )
    browser.pump(seconds)
    values: list[float] = browser.evaluate("window.__raf.slice(1)")
    return values


def heap_mb(browser: Browser) -> float:
    browser.send("HeapProfiler.collectGarbage", session=True, timeout=60)
    usage = browser.send("Runtime.getHeapUsage", session=True)
    return float(usage["usedSize"]) / 1e6


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(calls: int, live_seconds: float, directory: Path, *, live: bool) -> dict[str, Any]:
    written = time.monotonic()
    db_path, run_ids = write_store(directory, calls)
    result: dict[str, Any] = {"calls_per_run": calls, "write_seconds": round(time.monotonic() - written, 1)}
    server = Server(db_path, directory / "serve-data")
    try:
        with Browser.launch(width=VIEWPORT[0], height=VIEWPORT[1], startup_timeout=60) as browser:
            browser.send("HeapProfiler.enable", session=True)
            browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": FULL_PAINT_PROBE}, session=True)
            browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_SOCKET}, session=True)
            result.update(first_paint(browser, f"{server.url}/#/compare?runs={','.join(run_ids)}"))
            if not live:
                return result
            browser.evaluate("window.scrollTo(0, 0); true")
            stop = threading.Event()
            stats: dict[str, Any] = {}
            thread = threading.Thread(
                target=lambda: stats.update(ingest_loop(server.url, run_ids, calls, live_seconds + 20, stop)),
                name="bench-ingest",
            )
            thread.start()
            try:
                browser.pump(3)  # the live stream reaches the page
                heap = [heap_mb(browser)]
                frames = trace_main_thread(browser, 8)
                intervals = raf_intervals(browser, 5)
                remaining = max(0.0, live_seconds - 16)
                samples = int(remaining // 10)
                for _ in range(samples):
                    browser.pump(10)
                    heap.append(heap_mb(browser))
                points = browser.evaluate("Number(document.querySelector('#compare-charts div.chart').dataset.points)")
            finally:
                stop.set()
                thread.join(60)
            # The page alone at the target rate (the server no longer sends: its runs are quiet).
            first_step = calls + int(stats.get("calls_per_second", 0) * (live_seconds + 20)) + 1_000_000
            args = f"{json.dumps(run_ids)}, {json.dumps(METRICS)}, {LIVE_RATE}, {first_step}"
            browser.evaluate(f"{FEED_PAGE}({args})")
            try:
                browser.pump(3)
                fed_frames = trace_main_thread(browser, 8)
                fed_intervals = raf_intervals(browser, 5)
                fed_rate = browser.evaluate("window.__fedRate")
            finally:
                browser.evaluate("clearInterval(window.__feed); true")
            result.update(
                {
                    "live_calls_per_second": round(stats.get("calls_per_second", 0)),
                    "late_ingest_batches": stats.get("late_batches"),
                    "frame_busy_ms_p50": round(percentile(frames, 0.5), 2),
                    "frame_busy_ms_p95": round(percentile(frames, 0.95), 2),
                    "frame_busy_ms_max": round(max(frames, default=math.nan), 2),
                    "frames_traced": len(frames),
                    "raf_interval_ms_p50": round(percentile(intervals, 0.5), 2),
                    "raf_interval_ms_p95": round(percentile(intervals, 0.95), 2),
                    "heap_mb": [round(h, 1) for h in heap],
                    "fed_calls_per_second": round(fed_rate),
                    "fed_frame_busy_ms_p50": round(percentile(fed_frames, 0.5), 2),
                    "fed_frame_busy_ms_p95": round(percentile(fed_frames, 0.95), 2),
                    "fed_frame_busy_ms_max": round(max(fed_frames, default=math.nan), 2),
                    "fed_raf_interval_ms_p95": round(percentile(fed_intervals, 0.95), 2),
                    "points_in_first_chart": points,
                }
            )
            errors = browser.exception_texts()
            if errors:
                result["js_errors"] = errors[:3]
    finally:
        server.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="logging calls per run (12 metrics each)")
    parser.add_argument("--live-seconds", type=float, default=60.0, help="how long the runs log live")
    parser.add_argument("--quick", action="store_true", help="10,000 calls per run, 20 s live")
    args = parser.parse_args()
    if find_chromium() is None:
        raise SystemExit("Chromium is not installed (.ci/install-chromium)")
    calls = 10_000 if args.quick else args.calls
    live_seconds = 20.0 if args.quick else args.live_seconds
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        baseline = measure(max(1_000, calls // 10), live_seconds, Path(tmp) / "baseline", live=False)
        print(f"baseline ({baseline['calls_per_run']:,} calls/run): {json.dumps(baseline)}", flush=True)
        full = measure(calls, live_seconds, Path(tmp) / "full", live=True)
        print(f"compare view ({full['calls_per_run']:,} calls/run): {json.dumps(full)}", flush=True)
    heap = full.get("heap_mb", [])
    summary = {
        "runs": RUNS,
        "metrics": len(METRICS),
        "calls_per_run": calls,
        "first_full_paint_ms": round(full["full_paint_ms"]),
        "first_run_paint_ms": round(full["first_run_paint_ms"]),
        "compare_requests_span_ms": round(full["compare_requests_span_ms"]),
        "compare_request_longest_ms": round(full["compare_request_longest_ms"]),
        "baseline_first_full_paint_ms": round(baseline["full_paint_ms"]),
        "baseline_first_run_paint_ms": round(baseline["first_run_paint_ms"]),
        "baseline_calls_per_run": baseline["calls_per_run"],
        "live_calls_per_second_total": full.get("live_calls_per_second"),
        "frame_busy_ms_p95": full.get("frame_busy_ms_p95"),
        "raf_interval_ms_p95": full.get("raf_interval_ms_p95"),
        "fed_calls_per_second": full.get("fed_calls_per_second"),
        "fed_frame_busy_ms_p95": full.get("fed_frame_busy_ms_p95"),
        "fed_raf_interval_ms_p95": full.get("fed_raf_interval_ms_p95"),
        "heap_mb_first_last": [heap[0], heap[-1]] if heap else None,
    }
    print(json.dumps(summary, indent=2))
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "bench_dashboard.json").write_text(json.dumps({"summary": summary, "full": full, "baseline": baseline}))
    os.sync()


if __name__ == "__main__":
    main()
