"""The dashboard in a real browser: headless Chromium against an in-process WebMonitor.

What a person would see, checked through the DOM hooks the dashboard keeps
stable (``#run-title``, ``div.chart[data-metric]`` with ``data-points``,
``tr[data-run-id]`` ...):

- a metric name never seen before gets its chart live, within 2 s of being
  logged, without a reload;
- the runs list updates a run's status live when it completes;
- no uncaught JavaScript exception (nor a render error the dashboard logs
  with ``console.error``) happens meanwhile.

With ``RUNWATCH_UPDATE_SCREENSHOT=1`` it also refreshes ``docs/dashboard.png``,
the README's screenshot, from a simulated training run.

Needs Debian's Chromium (``.ci/install-chromium``). Without it the test is
skipped on a developer's machine and fails on CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser import Browser, find_chromium

from runwatch import MonitorConfig, WebMonitor
from runwatch.demo import DemoSettings, simulate_training

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
SCREENSHOT = REPO / "docs" / "dashboard.png"
VIEWPORT = (1280, 900)
NEW_METRIC = "e2e/new_metric"
NEW_METRIC_DEADLINE = 2.0  # seconds from update_metrics() to the chart being in the page
STATUS_DEADLINE = 3.0  # seconds from stop_training() to "completed" in the runs list


# -- fixtures -------------------------------------------------------------------------


def _chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail("CI=true but Chromium is not installed: .ci/run must call .ci/install-chromium first")
        pytest.skip("Chromium is not installed (/usr/bin/chromium); run .ci/install-chromium to run this test")
    return path


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    config = MonitorConfig(db_path=str(tmp_path / "monitoring.db"), data_dir=str(tmp_path / "data"), web_port=0)
    with WebMonitor(config) as monitor:
        assert monitor.web_url is not None, "the web server did not start"
        assert monitor.web_url.startswith("http://127.0.0.1:"), monitor.web_url
        yield monitor


@pytest.fixture
def browser() -> Iterator[Browser]:
    with Browser.launch(executable=_chromium(), width=VIEWPORT[0], height=VIEWPORT[1]) as browser:
        yield browser


# -- helpers --------------------------------------------------------------------------


def js(value: Any) -> str:
    """A Python value as a JavaScript literal."""
    return json.dumps(value)


def chart_selector(name: str) -> str:
    return f"div.chart[data-metric={json.dumps(name)}]"


def diagnostics(browser: Browser) -> str:
    """What the page logged, for assertion messages."""
    browser.pump(0.05)
    lines = browser.exception_texts() + [json.dumps(entry)[:500] for entry in browser.console_errors]
    try:
        state = browser.evaluate(
            "JSON.stringify({hash: location.hash, title: document.querySelector('#run-title')?.textContent,"
            " badge: document.querySelector('#status-badge')?.textContent,"
            " conn: document.querySelector('#conn-status')?.dataset.state,"
            " error: Array.from(document.querySelectorAll('.error:not([hidden])')).map(e => e.textContent),"
            " banner: document.querySelector('#banner:not([hidden])')?.textContent ?? null,"
            " charts: Array.from(document.querySelectorAll('div.chart'))"
            ".map(c => c.dataset.metric + ':' + c.dataset.points)})"
        )
    except Exception as exc:  # the page may be gone
        state = f"(page state unavailable: {exc})"
    return f"page: {state}; JS errors: {lines or 'none'}"


def mark_page(browser: Browser) -> str:
    """Tags the current document, so a reload (which loses the tag) can be detected."""
    token = f"e2e-{time.monotonic_ns()}"
    browser.evaluate(f"window.__e2eDocument = {js(token)}")
    return token


def assert_same_document(browser: Browser, token: str, navigations_before: int) -> None:
    assert browser.evaluate("window.__e2eDocument") == token, "the page reloaded"
    browser.pump(0.05)
    assert len(browser.navigations) == navigations_before, f"the page navigated: {browser.navigations}"


def assert_no_js_errors(browser: Browser) -> None:
    browser.pump(0.3)  # events already sent by the page
    assert browser.exceptions == [], "uncaught JavaScript exceptions:\n" + "\n".join(browser.exception_texts())
    # The dashboard catches render errors per frame and reports them with console.error.
    errors = [entry for entry in browser.console_errors if entry.get("type") == "error"]
    assert errors == [], f"console.error calls: {json.dumps(errors)[:3000]}"


def wait_until_live(browser: Browser) -> None:
    """The dashboard's websocket is subscribed (the header dot says live)."""
    browser.wait_for(
        "document.querySelector('#conn-status')?.dataset.state === 'live'", timeout=15, what="the live connection"
    )


def frames(browser: Browser, count: int = 2) -> None:
    """Lets the page render ``count`` animation frames (charts draw in requestAnimationFrame)."""
    browser.evaluate(
        f"new Promise(resolve => {{ let n = {count};"
        " const next = () => (--n > 0 ? requestAnimationFrame(next) : resolve(true));"
        " requestAnimationFrame(next); })",
        timeout=10,
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- tests ----------------------------------------------------------------------------


def test_new_metric_gets_a_chart_live_and_screenshot(monitor: WebMonitor, browser: Browser, tmp_path: Path) -> None:
    # 1. A run with a few metrics, open on its page.
    run_id = monitor.start_training(config={"algorithm": "e2e", "learning_rate": 0.001})
    for step in range(5):
        monitor.update_metrics({"loss": 1.0 / (step + 1), "accuracy": 0.5 + step / 10})
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    browser.wait_for(
        f"document.querySelector('#run-title')?.textContent === {js(run_id)}", timeout=15, what="#run-title"
    )
    wait_until_live(browser)
    # History is in: the metrics logged before the page opened have their charts.
    browser.wait_for(
        f"Number(document.querySelector({js(chart_selector('loss'))})?.dataset.points) >= 5",
        timeout=10,
        what="the loss chart's history",
    )
    assert browser.evaluate(f"document.querySelector({js(chart_selector(NEW_METRIC))})") is None
    token = mark_page(browser)
    navigations = len(browser.navigations)

    # 2. A brand-new metric name, logged from another thread, gets its chart live.
    emitted: dict[str, float] = {}

    def emit() -> None:
        emitted["at"] = time.monotonic()
        monitor.update_metrics({NEW_METRIC: 0.25})

    thread = threading.Thread(target=emit, name="e2e-emit")
    thread.start()
    thread.join(5)
    assert "at" in emitted and not thread.is_alive()
    points = browser.wait_for(
        f"Number(document.querySelector({js(chart_selector(NEW_METRIC))})?.dataset.points ?? 0)",
        predicate=lambda n: isinstance(n, (int, float)) and n >= 1,
        timeout=NEW_METRIC_DEADLINE + 8,  # a late chart fails below with its real delay
        interval=0.01,
        what=f"the {NEW_METRIC} chart",
    )
    delay = time.monotonic() - emitted["at"]
    assert delay <= NEW_METRIC_DEADLINE, (
        f"the {NEW_METRIC} chart appeared {delay:.2f} s after the emit (limit {NEW_METRIC_DEADLINE} s)"
    )
    assert points == 1
    # Then it is drawn (on the next animation frame): its header shows the value.
    chart = browser.wait_for(
        f"(() => {{ const c = document.querySelector({js(chart_selector(NEW_METRIC))});"
        " return {hidden: c.hidden, canvas: c.querySelector('canvas')?.width > 0,"
        " last: c.querySelector('.chart-last')?.textContent}; })()",
        predicate=lambda value: bool(value) and value["last"] != "",
        timeout=5,
        what=f"the {NEW_METRIC} chart to be drawn",
    )
    assert chart == {"hidden": False, "canvas": True, "last": "0.25"}, chart
    print(f"{NEW_METRIC} chart live {delay:.3f} s after the emit")
    assert_same_document(browser, token, navigations)
    monitor.stop_training()

    # 3. The README screenshot: a simulated training run (with a NaN loss spell), drawn.
    settings = DemoSettings(episodes=3, steps_per_episode=150, step_seconds=0, diverge_at_episode=1)
    result: dict[str, Any] = {}

    def demo() -> None:
        result["run_id"] = simulate_training(monitor, settings)

    thread = threading.Thread(target=demo, name="e2e-demo")
    thread.start()
    deadline = time.monotonic() + 30
    while monitor.current_run_id is None and "run_id" not in result and thread.is_alive():
        assert time.monotonic() < deadline, "the simulated run did not start"
        time.sleep(0.002)
    demo_run = monitor.current_run_id or result.get("run_id")
    assert demo_run is not None, "the simulated run failed to start"
    # Open it while it runs (when it has not finished already): history plus live points.
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(demo_run, safe='')}")
    thread.join(60)
    assert not thread.is_alive() and result.get("run_id") == demo_run
    assert monitor.flush(10)
    summary = monitor.get_run_summary(demo_run)
    assert summary["status"] == "completed"
    assert summary["metrics"]["loss"]["nan_count"] > 0

    try:
        browser.wait_for(
            f"document.querySelector('#run-title')?.textContent === {js(demo_run)}"
            " && document.querySelector('#status-badge')?.textContent === 'completed'",
            timeout=15,
            what="the simulated run's page to show it completed",
        )
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    # Every metric has a visible chart holding every point (the server downsamples only past
    # 2 points per canvas pixel; this run stays below that), the NaN spell included.
    expected = {name: stats["count"] for name, stats in summary["metrics"].items() if not name.startswith("system/")}
    counts_js = (
        "JSON.stringify({width: document.querySelector('div.chart canvas')?.clientWidth || 0,"
        " charts: Object.fromEntries(Array.from(document.querySelectorAll('div.chart:not([hidden])'))"
        ".map(c => [c.dataset.metric, Number(c.dataset.points)]))})"
    )

    def complete(value: Any) -> bool:
        if not value:
            return False
        page = json.loads(value)
        charts, limit = page["charts"], 2 * page["width"]
        if sorted(charts) != sorted(expected) or not limit:
            return False
        return all(
            charts[name] == count if count <= limit else charts[name] >= limit // 4 for name, count in expected.items()
        )

    try:
        browser.wait_for(counts_js, predicate=complete, timeout=20, interval=0.1, what=f"charts holding {expected}")
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    browser.wait_for(
        "document.querySelectorAll('#events li.event').length >= 5"
        " && document.querySelectorAll('#system-panel .gauge').length === 3"
        " && document.querySelector('#pipeline-panel .component') !== null"
        " && document.querySelector('#state-tree .tree') !== null",
        timeout=10,
        what="the events, system, state and pipeline panels",
    )
    browser.evaluate("window.scrollTo(0, 0); document.activeElement?.blur(); true")
    frames(browser, 3)
    # The canvases are drawn: the loss chart has ink.
    inked = browser.evaluate(
        f"(() => {{ const c = document.querySelector({js(chart_selector('loss'))} + ' canvas');"
        " if (!c.width || !c.height) return 0;"
        " const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++; return n; })()"
    )
    assert inked > 500, f"the loss chart looks blank ({inked} painted pixels)"

    png = browser.screenshot(tmp_path / "dashboard.png")
    if os.environ.get("RUNWATCH_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(png)
    assert len(png) > 10_000, f"the screenshot is only {len(png)} bytes"
    assert png_size(png) == VIEWPORT
    assert (tmp_path / "dashboard.png").read_bytes() == png

    # Nothing went wrong in the page.
    assert_no_js_errors(browser)


def test_runs_list_shows_completion_live(monitor: WebMonitor, browser: Browser) -> None:
    run_id = monitor.start_training(config={"algorithm": "e2e"})
    monitor.update_metrics({"loss": 0.5})
    assert monitor.flush(10)

    browser.navigate(f"{monitor.web_url}/#/")
    row = f"#runs-table tr[data-run-id={json.dumps(run_id)}]"
    badge = browser.wait_for(
        f"document.querySelector({js(row + ' .badge')})?.textContent",
        predicate=lambda text: text == "running",
        timeout=15,
        what=f"the row of {run_id} with a running badge",
    )
    assert badge == "running"
    assert browser.evaluate(f"document.querySelector({js(row + ' .badge')}).classList.contains('status-running')")
    wait_until_live(browser)
    token = mark_page(browser)
    navigations = len(browser.navigations)

    # Past the list's 1 s refresh throttle, as when a person has watched it for a while: the
    # refresh that the lifecycle event triggers then runs at once, before the store commits it.
    time.sleep(1.5)
    stopped_at = time.monotonic()
    monitor.stop_training(final_reward=1.5)
    try:
        browser.wait_for(
            f"document.querySelector({js(row + ' .badge')})?.textContent",
            predicate=lambda text: text == "completed",
            timeout=STATUS_DEADLINE + 12,  # a late update fails below with its real delay
            interval=0.02,
            what=f"{run_id} to show completed",
        )
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    delay = time.monotonic() - stopped_at
    assert delay <= STATUS_DEADLINE, f"the runs list showed completed {delay:.2f} s after stop_training()"
    print(f"runs list showed completed {delay:.3f} s after stop_training()")
    row_state = (
        f"(() => {{ const tr = document.querySelector({js(row)});"
        " return tr && {status: tr.dataset.status, badge: tr.querySelector('.badge').textContent,"
        " cls: tr.querySelector('.badge').className, reward: tr.lastElementChild.textContent}; })()"
    )
    status = browser.evaluate(row_state)
    assert status["status"] == "completed" and "status-completed" in status["cls"], status
    assert status["reward"] == "1.5", status
    # It stays completed while the list re-reads the store (no flicker back to a stale "running").
    seen = set()
    until = time.monotonic() + 2.0
    while time.monotonic() < until:
        state = browser.evaluate(row_state)
        seen.add((state or {}).get("badge"))
        browser.pump(0.1)
    assert seen == {"completed"}, f"the row showed {seen} after completing"
    assert_same_document(browser, token, navigations)
    assert_no_js_errors(browser)
