"""The dashboard in a real browser: headless Chromium against an in-process WebMonitor.

What a person would see, checked through the DOM hooks the dashboard keeps
stable (``#run-title``, ``div.chart[data-metric]`` with ``data-points``,
``tr[data-run-id]`` ...):

- a metric name never seen before gets its chart live, within 2 s of being
  logged, without a reload;
- the runs list updates a run's status live when it completes;
- the sessions list shows a session created over REST, turns its badge hung
  within a second of a liveness verdict and ended when it ends; the session
  page shows its state, events and metrics, live;
- a firing alert appears in the run page's alerts panel within a second;
- no uncaught JavaScript exception (nor a render error the dashboard logs
  with ``console.error``) happens meanwhile.

The README's screenshot, ``docs/dashboard.png``, is the demo mid-run, taken by
``tests/screenshot_dashboard.py`` (smoke-tested here).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser import Browser, find_chromium

from runwatch import AlertEvent, MonitorConfig, WebMonitor
from runwatch.demo import DemoSettings, simulate_training

pytestmark = pytest.mark.timeout(120)

VIEWPORT = (1280, 900)
NEW_METRIC = "e2e/new_metric"
NEW_METRIC_DEADLINE = 2.0  # seconds from update_metrics() to the chart being in the page
STATUS_DEADLINE = 3.0  # seconds from stop_training() to "completed" in the runs list
HUNG_DEADLINE = 1.0  # seconds from a liveness verdict to "hung" in the sessions list
ENDED_DEADLINE = 3.0  # seconds from POST /end to "ended" in the sessions list
ALERT_DEADLINE = 1.0  # seconds from an alert event to it in the alerts panel
LIVE_DEADLINE = 2.0  # seconds from a session write to it on the session page


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

    # 3. A simulated training run (with a NaN loss spell), drawn.
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
        " && document.querySelector('#system-panel .gauge[data-metric=\"system/reported/cpu_percent\"]') !== null"
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


# -- sessions and alerts --------------------------------------------------------------


@pytest.fixture
def http(monitor: WebMonitor) -> Iterator[httpx.Client]:
    """A REST client of the monitor's web server (no proxy: it is on loopback)."""
    with httpx.Client(base_url=monitor.web_url or "", timeout=10, trust_env=False) as client:
        yield client


def post_ok(http: httpx.Client, path: str, body: Any = None, status: int = 200) -> dict[str, Any]:
    response = http.post(path, json={} if body is None else body)
    assert response.status_code == status, f"POST {path}: {response.status_code} {response.text}"
    answer: dict[str, Any] = response.json()
    return answer


def wait_timed(browser: Browser, expression: str, expected: Any, since: float, limit: float, what: str) -> float:
    """Polls until ``expression`` is ``expected``; returns the delay from ``since`` (asserted <= ``limit``)."""
    try:
        browser.wait_for(
            expression, predicate=lambda value: value == expected, timeout=limit + 8, interval=0.01, what=what
        )
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    delay = time.monotonic() - since
    assert delay <= limit, f"{what}: after {delay:.2f} s (limit {limit} s)"
    return delay


def verdict_time(http: httpx.Client, session_id: str, browser: Browser) -> float:
    """When the session's newest ``application_appears_hung`` event happened (epoch seconds).

    A verdict of the server's liveness stage reaches the store within its commit
    interval, so this polls (pumping the browser's events meanwhile) up to 10 s.
    """
    deadline = time.monotonic() + 10
    while True:
        answer = http.get(f"/api/sessions/{session_id}", params={"events_limit": 100})
        assert answer.status_code == 200, answer.text
        verdicts = [e for e in answer.json()["events"] if e["name"] == "application_appears_hung"]
        if verdicts:
            return datetime.fromisoformat(verdicts[0]["timestamp"]).timestamp()
        assert time.monotonic() < deadline, f"no verdict stored for {session_id}"
        browser.pump(0.05)


def stays(browser: Browser, expression: str, expected: Any, seconds: float, what: str) -> None:
    """``expression`` keeps the value ``expected`` for ``seconds`` (polled; no flicker)."""
    seen = set()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        seen.add(json.dumps(browser.evaluate(expression)))
        browser.pump(0.05)
    assert seen == {json.dumps(expected)}, f"{what}: saw {seen}"


def test_sessions_list_and_session_page(monitor: WebMonitor, browser: Browser, http: httpx.Client) -> None:
    # 1. A session created over REST, with a state patch, an event and a metric.
    created = post_ok(
        http,
        "/api/sessions",
        {"product": "e2e-app", "version": "1.2.3", "hostname": "e2e-host", "metadata": {"user": "alice"}},
    )
    session_id = created["session_id"]
    base = f"/api/sessions/{session_id}"
    post_ok(http, f"{base}/state", {"level": {"name": "forest", "boss": True}, "e2e_key": 7})
    post_ok(http, f"{base}/events", {"name": "level_started", "data": {"level": "forest"}})
    post_ok(http, f"{base}/metrics", {"name": "fps", "value": 59.5, "tags": ["gpu:e2e"]})

    # 2. The list shows it, active.
    browser.navigate(f"{monitor.web_url}/#/sessions")
    row = f"#sessions-table tr[data-session-id={json.dumps(session_id)}]"
    status_js = f"document.querySelector({js(row + ' .badge[data-status]')})?.dataset.status ?? null"
    browser.wait_for(status_js, predicate=lambda s: s == "active", timeout=15, what=f"the row of {session_id}")
    cells = browser.evaluate(f"Array.from(document.querySelector({js(row)}).cells).map(c => c.textContent)")
    assert cells[:5] == [session_id, "active", "e2e-app", "1.2.3", "e2e-host"], cells
    assert browser.evaluate(f"document.querySelector({js(row + ' .badge')}).textContent") == "active"
    wait_until_live(browser)
    token = mark_page(browser)
    navigations = len(browser.navigations)

    # 3. A liveness verdict turns it hung within a second of the verdict event. (The server's
    # liveness stage writes this log event; a client may too, and the store sets the status from it.)
    verdict = {"name": "application_appears_hung", "category": "warning", "data": {"status": "hung"}}
    post_ok(http, f"{base}/events", verdict)
    try:
        browser.wait_for(status_js, predicate=lambda s: s == "hung", timeout=10, interval=0.01, what="hung")
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    delay = time.time() - verdict_time(http, session_id, browser)
    assert delay <= HUNG_DEADLINE, f"the list showed hung {delay:.2f} s after the verdict event"
    print(f"sessions list showed hung {delay:.3f} s after the verdict event")
    response = http.get("/api/sessions", params={"status": "hung"})
    assert [s["id"] for s in response.json()["sessions"]] == [session_id]

    # 4. Ending it turns it ended within 3 s, and it stays so while the list re-reads the store.
    sent = time.monotonic()
    assert post_ok(http, f"{base}/end") == {"status": "ok"}
    delay = wait_timed(browser, status_js, "ended", sent, ENDED_DEADLINE, f"{session_id} to show ended")
    print(f"sessions list showed ended {delay:.3f} s after POST /end")
    stays(browser, status_js, "ended", 2.0, f"the row of {session_id}")
    # The status chips filter through the API.
    browser.evaluate("document.querySelector('#session-filters .chip[data-status=\"active\"]').click(); true")
    browser.wait_for(f"document.querySelector({js(row)}) === null", timeout=10, what="the active filter")
    assert "status=active" in browser.evaluate("location.hash")
    browser.evaluate("document.querySelector('#session-filters .chip[data-status=\"ended\"]').click(); true")
    browser.wait_for(status_js, predicate=lambda s: s == "ended", timeout=10, what="the ended filter")
    assert_same_document(browser, token, navigations)

    # 5. Its page: header, the state tree with the key set through /state, history, events, metrics.
    browser.evaluate(f"document.querySelector({js(row + ' a')}).click(); true")
    browser.wait_for(
        f"document.querySelector('#session-title')?.textContent === {js(session_id)}"
        " && document.querySelector('#session-status')?.dataset.status === 'ended'",
        timeout=15,
        what="the session page",
    )
    keys_js = (  # the top-level keys of the state tree
        "Array.from(document.querySelectorAll('#session-state-tree > .tree > .tree-leaf > .tree-key,"
        " #session-state-tree > .tree > details > summary > .tree-key')).map(e => e.textContent)"
    )
    keys = browser.wait_for(keys_js, predicate=lambda k: bool(k) and "e2e_key" in k, timeout=10, what="the state tree")
    assert sorted(keys) == ["e2e_key", "level", "product", "version"], keys
    page = browser.wait_for(
        "(() => ({events: Array.from(document.querySelectorAll('#session-events li.event')).map(li => li.dataset.name),"
        " history: document.querySelectorAll('#session-state-history li.history-item').length,"
        " charts: Array.from(document.querySelectorAll('#session-metrics div.chart'))"
        ".map(c => c.dataset.metric + ':' + c.dataset.points),"
        " values: Array.from(document.querySelectorAll('#session-metrics-table tbody tr[data-metric]'))"
        ".map(tr => tr.textContent),"
        " product: document.querySelector('#session-product-tag')?.textContent}))()",
        predicate=lambda p: bool(p) and len(p["events"]) >= 2 and p["charts"],
        timeout=10,
        what="the session page's panels",
    )
    assert page["events"] == ["application_appears_hung", "level_started"], page
    # The history: the first state (product and version), then the patch sent through /state.
    assert page["history"] == 2 and page["charts"] == ["fps:1"] and page["product"] == "e2e-app", page
    assert len(page["values"]) == 1 and "59.5" in page["values"][0] and "gpu:e2e" in page["values"][0], page

    # 6. A live session's page follows its writes without a reload.
    other = post_ok(http, "/api/sessions", {"product": "e2e-app", "version": "2"})["session_id"]
    browser.navigate(f"{monitor.web_url}/#/sessions/{quote(other, safe='')}")
    browser.wait_for(
        f"document.querySelector('#session-title')?.textContent === {js(other)}"
        " && document.querySelector('#session-status')?.dataset.status === 'active'",
        timeout=15,
        what="the second session's page",
    )
    wait_until_live(browser)
    token = mark_page(browser)
    navigations = len(browser.navigations)
    sent = time.monotonic()
    post_ok(http, f"/api/sessions/{other}/state", {"live_key": {"nested": [1, 2]}})
    post_ok(http, f"/api/sessions/{other}/events", {"name": "live_event", "category": "error", "data": {"n": 1}})
    post_ok(http, f"/api/sessions/{other}/metrics", {"name": "latency_ms", "value": 12.5})
    live_js = (
        "(() => { const keys = Array.from(document.querySelectorAll('#session-state-tree .tree-key'))"
        ".map(e => e.textContent);"
        " const ev = document.querySelector('#session-events li.event[data-name=\"live_event\"]');"
        " const chart = document.querySelector('#session-metrics div.chart[data-metric=\"latency_ms\"]');"
        " return keys.includes('live_key') && ev?.dataset.level === 'error' && chart?.dataset.points === '1'"
        " && document.querySelectorAll('#session-state-history li.history-item').length === 2; })()"
    )
    delay = wait_timed(browser, live_js, True, sent, LIVE_DEADLINE, "the live state, event and metric")
    print(f"session page showed live writes {delay:.3f} s after them")
    # Re-reading the session (1.5 s after subscribing) neither doubles the live point nor the patch.
    stays(browser, live_js, True, 2.0, "the live state, event and metric")
    sent = time.monotonic()
    post_ok(http, f"/api/sessions/{other}/end")
    wait_timed(
        browser,
        "document.querySelector('#session-status')?.dataset.status",
        "ended",
        sent,
        ENDED_DEADLINE,
        "the session page to show ended",
    )
    browser.wait_for(
        "!['', '—'].includes(document.querySelector('#session-ended')?.textContent ?? '')",
        timeout=10,
        what="the session's end time",
    )
    assert_same_document(browser, token, navigations)
    assert_no_js_errors(browser)


def test_alerts_panel_shows_a_firing_alert_live(monitor: WebMonitor, browser: Browser) -> None:
    run_id = monitor.start_training(config={"algorithm": "e2e"})
    monitor.update_metrics({"loss": 0.5})
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    browser.wait_for(
        f"document.querySelector('#run-title')?.textContent === {js(run_id)}", timeout=15, what="#run-title"
    )
    wait_until_live(browser)
    browser.wait_for(
        f"Number(document.querySelector({js(chart_selector('loss'))})?.dataset.points) >= 1",
        timeout=10,
        what="the run's history",
    )
    assert browser.evaluate("document.querySelectorAll('#alerts li[data-rule]').length") == 0
    token = mark_page(browser)
    navigations = len(browser.navigations)

    alert = '#alerts li[data-rule="nan_loss"][data-state="firing"]'
    present_js = f"document.querySelector({js(alert)}) !== null"
    sent = time.monotonic()
    monitor.emit_event(
        AlertEvent(run_id, time.time(), "nan_loss", "firing", "critical", annotations={"summary": "loss is NaN"})
    )
    delay = wait_timed(browser, present_js, True, sent, ALERT_DEADLINE, "the firing nan_loss alert")
    print(f"alerts panel showed the firing alert {delay:.3f} s after the event")
    text = browser.evaluate(f"document.querySelector({js(alert)}).textContent")
    assert "loss is NaN" in text and "critical" in text, text
    assert browser.evaluate("document.querySelector('#alerts').dataset.firing") == "1"
    # It stays while the page re-reads its history (the store has it by then).
    stays(browser, present_js, True, 2.0, "the firing alert")

    sent = time.monotonic()
    monitor.emit_event(AlertEvent(run_id, time.time(), "nan_loss", "resolved", "critical"))
    wait_timed(
        browser,
        "document.querySelectorAll('#alerts li[data-state=\"firing\"]').length",
        0,
        sent,
        ALERT_DEADLINE,
        "the resolved alert to stop firing",
    )
    # It stays listed as resolved (a NaN burst's alert may fire and resolve within milliseconds).
    resolved = '#alerts li[data-rule="nan_loss"][data-state="resolved"]'
    stays(browser, f"document.querySelector({js(resolved)}) !== null", True, 2.0, "the resolved alert")
    assert browser.evaluate("document.querySelector('#alerts').dataset.firing") == "0"
    assert "No firing alerts" in browser.evaluate("document.querySelector('#alerts').textContent")
    assert_same_document(browser, token, navigations)
    assert_no_js_errors(browser)


@pytest.fixture
def liveness_monitor(tmp_path: Path) -> Iterator[WebMonitor]:
    """A WebMonitor whose pipeline has the liveness stage (checking every 50 ms)."""
    live_inputs = ["alive"]  # the verdicts join the events the store and the hub take
    pipeline = {
        "sources": {"app": {"type": "in_process"}, "ingest": {"type": "ingest"}},
        "stages": {"alive": {"type": "liveness", "inputs": ["app", "ingest"], "check_interval_seconds": 0.05}},
        "sinks": {
            "store": {"type": "sqlite", "inputs": live_inputs},
            "live": {
                "type": "websocket_hub",
                "inputs": live_inputs,
                "buffer": {"max_events": 100_000, "when_full": "drop_oldest"},
            },
        },
    }
    config = MonitorConfig(
        db_path=str(tmp_path / "monitoring.db"), data_dir=str(tmp_path / "data"), web_port=0, pipeline=pipeline
    )
    with WebMonitor(config) as monitor:
        assert monitor.web_url is not None, "the web server did not start"
        yield monitor


def test_sessions_list_shows_a_silent_datacat_session_suspended(liveness_monitor: WebMonitor, browser: Browser) -> None:
    monitor = liveness_monitor
    timeout = 3.0
    with httpx.Client(base_url=monitor.web_url or "", timeout=10, trust_env=False) as http:
        body = {"product": "e2e-liveness", "version": "1", "heartbeat_timeout_seconds": timeout}
        session_id = post_ok(http, "/api/sessions", body)["session_id"]
        post_ok(http, f"/api/sessions/{session_id}/heartbeat")
        heartbeat = datetime.fromisoformat(
            http.get(f"/api/sessions/{session_id}", params={"events_limit": 1}).json()["last_heartbeat"]
        ).timestamp()
        browser.navigate(f"{monitor.web_url}/#/sessions")
        row = f"#sessions-table tr[data-session-id={json.dumps(session_id)}]"
        status_js = f"document.querySelector({js(row + ' .badge[data-status]')})?.dataset.status ?? null"
        browser.wait_for(status_js, predicate=lambda s: s == "active", timeout=15, what=f"the row of {session_id}")
        wait_until_live(browser)

        # Silent past its timeout after its heartbeat, it is suspended (datacat's liveness: the server's
        # liveness stage writes no verdict for it); the list shows it without a reload or an event.
        try:
            browser.wait_for(
                status_js, predicate=lambda s: s == "suspended", timeout=15, interval=0.01, what="suspended"
            )
        except Exception as exc:
            raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
        delay = time.time() - (heartbeat + timeout)
        assert delay <= HUNG_DEADLINE, f"the list showed suspended {delay:.2f} s after the timeout"
        print(f"sessions list showed suspended {delay:.3f} s after the timeout")
        listed = http.get("/api/sessions", params={"status": "suspended"}).json()["sessions"]
        assert [s["id"] for s in listed] == [session_id]
        answer = http.get(f"/api/sessions/{session_id}", params={"events_limit": 10}).json()
        assert answer["events"] == []  # no liveness verdict was written

        # A heartbeat makes it active again.
        sent = time.monotonic()
        post_ok(http, f"/api/sessions/{session_id}/heartbeat")
        wait_timed(browser, status_js, "active", sent, HUNG_DEADLINE, f"{session_id} to be active again")
    assert_no_js_errors(browser)


def test_alerts_panel_starts_from_the_alerts_api(monitor: WebMonitor, browser: Browser) -> None:
    """With GET /api/alerts served (here by a stand-in for the page's fetch), the panel starts from its answer."""
    run_id = monitor.start_training(config={"algorithm": "e2e"})
    monitor.update_metrics({"loss": 0.5})
    assert monitor.flush(10)
    now = time.time()
    served = [
        {
            "rule": "served_rule",
            "run_id": run_id,
            "state": "firing",
            "severity": "error",
            "value": 3.0,
            "labels": {"metric": "loss"},
            "annotations": {"summary": "from the API"},
            "active_since": datetime.fromtimestamp(now - 60, UTC).isoformat(),
            "updated_at": datetime.fromtimestamp(now, UTC).isoformat(),
        },
        {"rule": "other_run_rule", "run_id": "another-run", "state": "firing", "severity": "error"},
    ]
    # Installed before the dashboard's script runs; window.__servedAlerts is what the endpoint answers.
    shim = (
        f"window.__servedAlerts = {json.dumps(served)}; window.__alertsAsked = 0;"
        " const realFetch = window.fetch;"
        " window.fetch = (input, init) => {"
        "   const url = new URL(String(input), location.href);"
        "   if (!url.pathname.endsWith('/api/alerts')) return realFetch(input, init);"
        "   window.__alertsAsked += 1;"
        "   const run = url.searchParams.get('run_id');"
        "   const alerts = window.__servedAlerts.filter(a => a.run_id === run);"
        "   return Promise.resolve(new Response(JSON.stringify({alerts}),"
        "     {status: 200, headers: {'Content-Type': 'application/json'}}));"
        " };"
    )
    browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": shim}, session=True)
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    wait_until_live(browser)
    alert = '#alerts li[data-rule="served_rule"][data-state="firing"]'
    browser.wait_for(f"document.querySelector({js(alert)}) !== null", timeout=10, what="the served alert")
    assert browser.evaluate("window.__alertsAsked") >= 1
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('#alerts li[data-rule]')).map(li => li.dataset.rule)"
    ) == ["served_rule"]
    assert "from the API" in browser.evaluate(f"document.querySelector({js(alert)}).textContent")

    # A transition older than the served one is stale: the panel keeps the served state.
    monitor.emit_event(AlertEvent(run_id, now - 30, "served_rule", "pending", "error", labels={"metric": "loss"}))
    browser.wait_for(
        "Array.from(document.querySelectorAll('#events li.event[data-kind=\"alert\"]'))"
        ".some(li => li.textContent.includes('served_rule pending'))",
        timeout=10,
        what="the stale alert event in the timeline",
    )
    assert browser.evaluate(f"document.querySelector({js(alert)}) !== null"), diagnostics(browser)

    # The server resolves it: the live event removes it, and a re-read agrees.
    browser.evaluate("window.__servedAlerts = []; true")
    sent = time.monotonic()
    monitor.emit_event(AlertEvent(run_id, time.time(), "served_rule", "resolved", "error", labels={"metric": "loss"}))
    wait_timed(
        browser,
        "document.querySelectorAll('#alerts li[data-state=\"firing\"]').length",
        0,
        sent,
        ALERT_DEADLINE,
        "the resolved alert to stop firing",
    )
    assert browser.evaluate(
        "Array.from(document.querySelectorAll('#alerts li[data-rule]')).map(li => li.dataset.state)"
    ) == ["resolved"]
    assert_no_js_errors(browser)


def test_the_empty_runs_page_names_real_apis_and_an_unknown_run_page_prints_no_null(
    monitor: WebMonitor, browser: Browser
) -> None:
    """With no runs the runs page points at WebMonitor and runwatch demo; a run page for an unknown id shows
    its "unknown run" notice and no stray "null" text anywhere."""
    browser.navigate(f"{monitor.web_url}/#/")
    browser.wait_for("document.body.innerText.includes('No runs yet')", timeout=15)
    empty = browser.evaluate("document.body.innerText")
    assert "WebMonitor(" in empty and "runwatch demo" in empty and "runwatch.Monitor" not in empty

    browser.navigate(f"{monitor.web_url}/#/runs/no-such-run")
    browser.wait_for("document.body.innerText.includes('Unknown run')", timeout=15)
    browser.wait_for("document.querySelector('#event-filters .chip-group') !== null", timeout=15)
    text_nodes = browser.evaluate(
        "(() => { const found = []; const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);"
        " while (walker.nextNode()) found.push(walker.currentNode.textContent.trim()); return found; })()"
    )
    assert "null" not in text_nodes, diagnostics(browser)


def test_the_readme_screenshot_script_captures_the_demo_mid_run(tmp_path: Path) -> None:
    """tests/screenshot_dashboard.py (which made docs/dashboard.png) captures a running demo's page as a PNG."""
    from screenshot_dashboard import take

    _chromium()
    output = take(tmp_path / "shot.png", episodes=4, capture_at_episode=2, timeout=60)

    png = output.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1000)
