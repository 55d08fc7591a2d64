"""Comparing runs in a real browser: headless Chromium against an in-process WebMonitor.

- two runs checked in the runs table open in the compare view, both in one
  chart, and a running one keeps updating there;
- smoothing and the log scale change what is drawn;
- tags and notes round-trip between the UI and the API;
- the alerts page shows a resolved alert and links to its run at that moment;
- the step axis of an RL run (update_step counts steps per episode) is monotone;
- the dashboard still runs when the server maps .js to a non-JavaScript type.

With ``RUNWATCH_UPDATE_SCREENSHOT=1`` it also refreshes ``docs/compare.png``,
the README's screenshot of the compare view.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser import Browser

from runwatch import AlertEvent, WebMonitor

from .test_dashboard_e2e import (
    VIEWPORT,
    assert_no_js_errors,
    chart_selector,
    diagnostics,
    frames,
    js,
    png_size,
    wait_until_live,
)
from .test_dashboard_e2e import browser as browser  # noqa: F401 (the fixture)
from .test_dashboard_e2e import monitor as monitor  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent.parent
SCREENSHOT = REPO / "docs" / "compare.png"
LIVE_DEADLINE = 3.0  # seconds from update_metrics() to the point in the compare view


def log_run(monitor: WebMonitor, lr: float, steps: int, seed: int, *, stop: bool = True) -> str:
    """A training-like run: loss falling at a pace set by lr, with noise; accuracy rising."""
    rng = random.Random(seed)
    run_id = monitor.start_training(config={"lr": lr, "batch_size": 64, "optimizer": {"name": "adam"}})
    for step in range(steps):
        pace = lr * 40
        loss = 2.5 * math.exp(-pace * step / steps) + 0.08 * rng.random() + 0.1
        monitor.update_metrics(
            {
                "train/loss": loss,
                "train/grad_norm": 1.5 * math.exp(-step / steps) + 0.3 * rng.random(),
                "val/loss": loss + 0.15 + 0.05 * rng.random(),
                "val/accuracy": 1 - 0.9 * math.exp(-pace * step / steps) - 0.03 * rng.random(),
            }
        )
    if stop:
        monitor.stop_training()
    return run_id


def canvas_digest(browser: Browser, name: str) -> str:
    """A cheap fingerprint of a chart's pixels (changes when what is drawn changes)."""
    return str(
        browser.evaluate(
            f"(() => {{ const c = document.querySelector({js(chart_selector(name) + ' canvas')});"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let h = 0, n = 0;"
            " for (let i = 0; i < d.length; i += 4) {"
            " if (d[i + 3]) { n++; h = (h * 31 + d[i] * 7 + d[i + 1] * 3 + d[i + 2] + i) | 0; } }"
            " return n + ':' + h; })()"
        )
    )


def last_draw(browser: Browser, name: str) -> Any:
    return browser.evaluate(f"document.querySelector({js(chart_selector(name))})?.__chart?.lastDraw ?? null")


def test_select_two_runs_and_see_both_in_one_chart(monitor: WebMonitor, browser: Browser, tmp_path: Path) -> None:
    """Checked runs open in the compare view, one chart per metric holding every run, live, shareable."""
    runs = [log_run(monitor, lr, 300, seed) for seed, lr in enumerate((0.1, 0.05, 0.02))]
    live = log_run(monitor, 0.08, 150, 7, stop=False)
    assert monitor.flush(10)

    browser.navigate(f"{monitor.web_url}/#/")
    for run_id in (runs[0], live):
        box = f"#runs-table tr[data-run-id={json.dumps(run_id)}] input.select-run"
        browser.wait_for(f"document.querySelector({js(box)}) !== null", timeout=15, what=f"the row of {run_id}")
        browser.evaluate(f"document.querySelector({js(box)}).click(); true")
    assert browser.evaluate("document.querySelector('#compare-selected').textContent") == "Compare 2 runs"
    browser.evaluate("document.querySelector('#compare-selected').click(); true")

    loss = f"#compare-charts {chart_selector('train/loss')}"
    try:
        browser.wait_for(
            f"Number(document.querySelector({js(loss)})?.dataset.traces) === 2"
            f" && document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 2",
            timeout=15,
            what="the train/loss chart with both runs drawn",
        )
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc
    hash_ = browser.evaluate("location.hash")
    assert hash_.startswith("#/compare?runs=") and runs[0] in hash_ and live in hash_, hash_
    legend = browser.evaluate(
        "Array.from(document.querySelectorAll('#compare-legend .legend-item')).map(e => e.dataset.runId)"
    )
    assert legend == [live, runs[0]] or legend == [runs[0], live], legend
    assert browser.evaluate(f"Number(document.querySelector({js(loss)}).dataset.points)") == 300 + 150
    wait_until_live(browser)

    # The running run keeps updating in the compare view.
    sent = time.monotonic()
    monitor.update_metrics({"train/loss": 0.05, "val/loss": 0.2, "val/accuracy": 0.9, "train/grad_norm": 0.1})
    browser.wait_for(
        f"Number(document.querySelector({js(loss)}).dataset.points)",
        predicate=lambda n: n == 300 + 151,
        timeout=LIVE_DEADLINE + 8,
        what="the live point in the compare view",
    )
    delay = time.monotonic() - sent
    assert delay <= LIVE_DEADLINE, f"the live point showed {delay:.2f} s after update_metrics()"
    monitor.stop_training()

    # A run toggled off in the legend leaves every chart, and the URL remembers it.
    browser.evaluate(
        f"document.querySelector('#compare-legend [data-run-id={json.dumps(live)}] .legend-toggle').click(); true"
    )
    browser.wait_for(
        f"Number(document.querySelector({js(loss)}).dataset.traces) === 1", timeout=5, what="one run hidden"
    )
    assert "hide=" + quote(live, safe="") in browser.evaluate("location.hash")

    # The shared URL opens the same view: every run of a wider comparison, smoothed.
    url = f"{monitor.web_url}/#/compare?runs={','.join([*runs, live])}&smooth=0.8"
    browser.navigate(url)
    browser.wait_for(
        f"document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 4",
        timeout=15,
        what="four runs in the shared view",
    )
    browser.evaluate(
        "document.querySelector('#compare-charts .chart-group[data-prefix=\"val\"] .chart .chart-wide-btn')"
        ".click(); true"
    )
    browser.evaluate("window.scrollTo(0, 0); document.activeElement?.blur(); true")
    frames(browser, 4)
    browser.wait_for(
        "Array.from(document.querySelectorAll('#compare-charts div.chart')).every(c => c.__chart.lastDraw)",
        timeout=10,
        what="every chart drawn",
    )
    png = browser.screenshot(tmp_path / "compare.png")
    if os.environ.get("RUNWATCH_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(png)
    assert png_size(png) == VIEWPORT and len(png) > 10_000
    assert_no_js_errors(browser)


def pick_run_to_add(browser: Browser, run_id: str) -> None:
    """Chooses a run in the compare view's "Add a run" list, once the list offers it."""
    option = f"#compare-add option[value={json.dumps(run_id)}]"
    browser.wait_for(f"document.querySelector({js(option)}) !== null", timeout=10, what=f"{run_id} offered")
    browser.evaluate(
        f"(() => {{ const s = document.querySelector('#compare-add'); s.value = {json.dumps(run_id)};"
        " s.dispatchEvent(new Event('change')); return true; })()"
    )


def test_runs_are_added_from_the_compare_view(monitor: WebMonitor, browser: Browser) -> None:
    """The compare view with no runs offers every training run; each one added joins the charts and the URL."""
    first, second = (log_run(monitor, lr, 120, seed) for seed, lr in enumerate((0.1, 0.03)))
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/compare?smooth=0.5")
    browser.wait_for("document.querySelector('#compare-add') !== null", timeout=15, what="the run picker")
    assert "No runs chosen" in browser.evaluate("document.querySelector('#app .error').textContent")

    pick_run_to_add(browser, first)
    loss = f"#compare-charts {chart_selector('train/loss')}"
    browser.wait_for(f"document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 1", timeout=15, what="one run")
    pick_run_to_add(browser, second)
    browser.wait_for(
        f"document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 2", timeout=15, what="two runs"
    )

    hash_ = browser.evaluate("location.hash")
    assert hash_ == f"#/compare?runs={first},{second}&smooth=0.5", hash_
    offered = browser.evaluate("Array.from(document.querySelectorAll('#compare-add option')).map(o => o.value)")
    assert first not in offered and second not in offered, offered
    assert_no_js_errors(browser)


def test_a_run_that_cannot_be_read_leaves_the_others_drawn(monitor: WebMonitor, browser: Browser) -> None:
    """Each run's history is its own read: an unknown run in a shared link is named, the known ones still drawn."""
    known = log_run(monitor, 0.05, 80, 21)
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/compare?runs={known},no-such-run")
    loss = f"#compare-charts {chart_selector('train/loss')}"
    browser.wait_for(f"document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 1", timeout=15)
    error = browser.wait_for(
        "document.querySelector('#app .error:not([hidden])')?.textContent ?? ''",
        predicate=lambda text: "no-such-run" in text,
        timeout=10,
        what="the unknown run named",
    )
    assert known not in error, error
    assert browser.evaluate("document.querySelector('#compare-count').textContent") == "2 runs"
    assert not browser.exception_texts()


def drag_across(browser: Browser, selector: str, start: float, end: float) -> None:
    """Presses the mouse at ``start`` of the element's width, moves to ``end`` and releases (real input events)."""
    left, top, width, height = browser.evaluate(
        f"(() => {{ const r = document.querySelector({js(selector)}).getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()"
    )
    y = top + height / 2
    x0, x1 = left + width * start, left + width * end

    def mouse(kind: str, x: float, **extra: Any) -> None:
        browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra}, session=True)

    mouse("mouseMoved", x0)
    mouse("mousePressed", x0, button="left", clickCount=1)
    for k in range(1, 6):
        mouse("mouseMoved", x0 + (x1 - x0) * k / 5, button="left", buttons=1)
    mouse("mouseReleased", x1, button="left", clickCount=1)


def test_drag_zooms_every_run_and_double_click_goes_back(monitor: WebMonitor, browser: Browser) -> None:
    """Dragging across a compare chart reads that step range again for every run; a double-click returns to all."""
    runs = [log_run(monitor, lr, 2000, seed) for seed, lr in enumerate((0.1, 0.02))]
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/compare?runs={','.join(runs)}&metrics=train%2Floss")
    loss = f"#compare-charts {chart_selector('train/loss')}"
    browser.wait_for(f"document.querySelector({js(loss)})?.__chart?.lastDraw?.traces === 2", timeout=15)
    scale = (
        f"(() => {{ const u = document.querySelector({js(loss)}).__chart.u;"
        " return [u.scales.x.min, u.scales.x.max]; })()"
    )
    whole = browser.evaluate(scale)
    # Downsampled: each bucket sits at its last point's step, so the first is a few steps in.
    assert whole[0] < 20 and whole[1] == 1999, whole

    drag_across(browser, loss + " .u-over", 0.25, 0.5)
    browser.wait_for(
        "document.querySelector('.zoom-info:not([hidden])')?.textContent ?? ''",
        predicate=lambda text: text.startswith("Zoomed"),
        timeout=10,
        what="the zoomed range",
    )
    low, high = browser.wait_for(scale, predicate=lambda r: r[1] - r[0] < (whole[1] - whole[0]) / 2, timeout=10)
    assert whole[0] < low < high < whole[1]
    # Both runs are drawn from a read of that range: every point shown lies inside it.
    xs = browser.evaluate(f"document.querySelector({js(loss)}).__chart.data.xs")
    assert len(xs) == 2 and all(xs_run and low - 5 <= min(xs_run) and max(xs_run) <= high + 5 for xs_run in xs)

    body = js(loss + " .chart-body")
    browser.evaluate(
        f"document.querySelector({body}).dispatchEvent(new MouseEvent('dblclick', {{bubbles: true}})); true"
    )
    browser.wait_for("document.querySelector('.zoom-info').hidden", timeout=5, what="back to the whole range")
    browser.wait_for(scale, predicate=lambda r: r[1] - r[0] >= (whole[1] - whole[0]) * 0.99, timeout=5)
    assert_no_js_errors(browser)


def test_smoothing_and_log_scale_change_what_is_drawn(monitor: WebMonitor, browser: Browser) -> None:
    """The smoothing slider adds a smoothed line over a faint raw one; log y redraws on a log scale."""
    runs = [log_run(monitor, lr, 200, seed) for seed, lr in enumerate((0.1, 0.03))]
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/compare?runs={','.join(runs)}")
    name = "train/loss"
    browser.wait_for(
        f"document.querySelector({js(chart_selector(name))})?.__chart?.lastDraw?.traces === 2",
        timeout=15,
        what="the chart",
    )
    frames(browser, 2)
    before = canvas_digest(browser, name)
    assert last_draw(browser, name)["smoothing"] is False
    series_before = browser.evaluate(f"document.querySelector({js(chart_selector(name))}).__chart.u.series.length")

    browser.evaluate(
        "(() => { const s = document.querySelector('.smooth-input'); s.value = '0.9';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); return true; })()"
    )
    browser.wait_for(
        f"document.querySelector({js(chart_selector(name))}).__chart.lastDraw.smoothing === true",
        timeout=5,
        what="smoothing drawn",
    )
    frames(browser, 2)
    smoothed = canvas_digest(browser, name)
    assert smoothed != before, "smoothing did not change the chart's pixels"
    series_after = browser.evaluate(f"document.querySelector({js(chart_selector(name))}).__chart.u.series.length")
    assert series_after == series_before + 2, "one smoothed line per run is drawn over the raw ones"
    assert "smooth=0.9" in browser.evaluate("location.hash")

    browser.evaluate("document.querySelector('.log-input').click(); true")
    browser.wait_for(
        f"document.querySelector({js(chart_selector(name))}).__chart.lastDraw.logY === true"
        f" && document.querySelector({js(chart_selector(name))}).__chart.u.scales.y.distr === 3",
        timeout=5,
        what="the log scale",
    )
    frames(browser, 2)
    assert canvas_digest(browser, name) not in (before, smoothed), "the log scale did not change the chart's pixels"
    assert "log=1" in browser.evaluate("location.hash")
    assert_no_js_errors(browser)


def test_tags_and_notes_round_trip_through_the_ui_and_the_api(monitor: WebMonitor, browser: Browser) -> None:
    """Tags and a note typed in the runs table reach the API; ones set through the API show in the UI."""
    run_id = log_run(monitor, 0.1, 20, 1)
    other = log_run(monitor, 0.01, 20, 2)
    assert monitor.flush(10)
    row = f"#runs-table tr[data-run-id={json.dumps(run_id)}]"
    browser.navigate(f"{monitor.web_url}/#/")
    browser.wait_for(f"document.querySelector({js(row)}) !== null", timeout=15, what="the row")
    browser.evaluate(f"document.querySelector({js(row + ' .edit-run')}).click(); true")
    editor = f"#runs-table tr[data-editor-for={json.dumps(run_id)}]"
    browser.wait_for(f"document.querySelector({js(editor + ' .tags-input')}) !== null", timeout=5, what="the editor")
    browser.evaluate(
        f"(() => {{ const e = document.querySelector({js(editor)});"
        " e.querySelector('.tags-input').value = 'baseline, keep';"
        " e.querySelector('.note-input').value = 'first try, lr too high';"
        " e.querySelector('.save-annotations').click(); return true; })()"
    )
    browser.wait_for(
        f"Array.from(document.querySelectorAll({js(row + ' .run-tag')})).map(e => e.textContent).join(',')"
        " === 'baseline,keep'",
        timeout=10,
        what="the saved tags in the row",
    )
    with httpx.Client(base_url=monitor.web_url or "", timeout=10, trust_env=False) as client:
        summary = client.get(f"/api/runs/{run_id}").json()
        assert summary["tags"] == ["baseline", "keep"] and summary["note"] == "first try, lr too high"
        # And the other way: set through the API, seen in the UI after its next read.
        answer = client.patch(f"/api/runs/{other}", json={"tags": ["from-api"], "note": "set by a script"})
        assert answer.status_code == 200, answer.text
    assert browser.evaluate(f"document.querySelector({js(row + ' .run-note')}).textContent") == "first try, lr too high"
    browser.navigate(f"{monitor.web_url}/#/?q={quote('tag:from-api')}")
    other_row = f"#runs-table tr[data-run-id={json.dumps(other)}]"
    browser.wait_for(
        f"document.querySelector({js(other_row + ' .run-tag')})?.textContent === 'from-api'",
        timeout=10,
        what="the tag set through the API",
    )
    # The filter box keeps only the tagged run.
    assert browser.evaluate("document.querySelectorAll('#runs-table tbody tr[data-run-id]').length") == 1
    assert browser.evaluate("document.querySelector('#runs-filter').value") == "tag:from-api"
    # Columns picked in the UI: a config key and a metric statistic, then sorted by it.
    browser.navigate(f"{monitor.web_url}/#/")
    browser.wait_for(f"document.querySelector({js(row)}) !== null", timeout=15, what="the runs table again")
    browser.evaluate("document.querySelector('#columns-picker summary').click(); true")
    for column in ("config:lr", "metric:val/loss:min"):
        box = f"#columns-picker input[data-column={json.dumps(column)}]"
        browser.wait_for(f"document.querySelector({js(box)}) !== null", timeout=10, what=f"the {column} option")
        browser.evaluate(f"document.querySelector({js(box)}).click(); true")
        browser.wait_for(
            f"document.querySelector('#runs-table th[data-column={json.dumps(column)}]') !== null",
            timeout=10,
            what=f"the {column} column",
        )
    browser.wait_for(
        f"document.querySelector({js(row)}).lastElementChild.textContent !== '—'", timeout=10, what="metric cells"
    )
    assert "cols=config%3Alr,metric%3Aval%2Floss%3Amin" in browser.evaluate("location.hash")
    browser.evaluate("document.querySelector('#runs-table th[data-column=\"config:lr\"] .sort-btn').click(); true")
    order = browser.evaluate(
        "Array.from(document.querySelectorAll('#runs-table tbody tr[data-run-id]')).map(tr => tr.dataset.runId)"
    )
    assert order == [other, run_id], order  # lr 0.01 before 0.1
    browser.evaluate("document.querySelector('#runs-table th[data-column=\"config:lr\"] .sort-btn').click(); true")
    order = browser.evaluate(
        "Array.from(document.querySelectorAll('#runs-table tbody tr[data-run-id]')).map(tr => tr.dataset.runId)"
    )
    assert order == [run_id, other], order
    # The run page shows and edits the same.
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(other, safe='')}")
    browser.wait_for(
        "document.querySelector('#run-annotations .run-note')?.textContent === 'set by a script'",
        timeout=10,
        what="the note on the run page",
    )
    assert_no_js_errors(browser)


def test_alerts_page_shows_a_resolved_alert(monitor: WebMonitor, browser: Browser) -> None:
    """An alert that fired and resolved within a second is listed as resolved, with its history and run link."""
    run_id = log_run(monitor, 0.1, 50, 3, stop=False)
    fired = time.time()
    monitor.emit_event(AlertEvent(run_id, fired, "nan_loss", "firing", "critical", annotations={"summary": "NaN"}))
    monitor.emit_event(AlertEvent(run_id, fired + 0.03, "nan_loss", "resolved", "critical"))
    monitor.stop_training()
    assert monitor.flush(10)

    browser.navigate(f"{monitor.web_url}/#/alerts")
    row = f'#alerts-table tr.alert-row[data-rule="nan_loss"][data-run-id={json.dumps(run_id)}]'
    state = browser.wait_for(
        f"document.querySelector({js(row)})?.dataset.state ?? null", predicate=bool, timeout=15, what="the alert"
    )
    assert state == "resolved"
    assert "NaN" in browser.evaluate(f"document.querySelector({js(row)}).textContent")
    browser.evaluate(f"document.querySelector({js(row + ' button')}).click(); true")
    history = browser.wait_for(
        "Array.from(document.querySelectorAll('#alerts-table .alert-history li')).map(li => li.dataset.state)",
        predicate=lambda states: bool(states),
        timeout=5,
        what="the alert's history",
    )
    assert history == ["resolved", "firing"]
    browser.evaluate("document.querySelector('#alert-state-filters .chip[data-state=\"firing\"]').click(); true")
    browser.wait_for(f"document.querySelector({js(row)}) === null", timeout=5, what="the firing filter")
    assert "state=firing" in browser.evaluate("location.hash")
    browser.evaluate("document.querySelector('#alert-state-filters .chip[data-state=\"resolved\"]').click(); true")
    browser.wait_for(f"document.querySelector({js(row)}) !== null", timeout=5, what="the resolved filter")

    # Its link opens the run zoomed to the moment it fired.
    href = browser.evaluate(f"document.querySelector({js(row + ' a.alert-run-link')}).getAttribute('href')")
    assert href.startswith(f"#/runs/{quote(run_id, safe='')}?since="), href
    since = float(href.split("since=")[1].split("&")[0])
    assert fired - 60 < since < fired
    browser.evaluate(f"document.querySelector({js(row + ' a.alert-run-link')}).click(); true")
    browser.wait_for(
        "document.querySelector('.zoom-info:not([hidden])')?.textContent.startsWith('Zoomed')"
        " && document.querySelector('#x-axis [aria-pressed=\"true\"]')?.dataset.x === 'time'",
        timeout=15,
        what="the run zoomed to the alert",
    )
    # The run page's history panel lists the resolved alert too.
    assert browser.evaluate("document.querySelectorAll('#alert-history li[data-alert-state=\"resolved\"]').length") == 1
    # The time axis came with the link, not from a choice: a setting changed meanwhile does not
    # make it the axis the next run page opens with.
    browser.evaluate(
        "(() => { const s = document.querySelector('#run-page .smooth-input, .smooth-input'); s.value = '0.3';"
        " s.dispatchEvent(new Event('input')); return true; })()"
    )
    assert json.loads(browser.evaluate("localStorage.getItem('runwatch.runCharts')"))["x"] != "time"
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    browser.wait_for(
        "document.querySelector('#x-axis [aria-pressed=\"true\"]')?.dataset.x ?? null",
        predicate=lambda mode: mode not in (None, "time"),
        timeout=10,
        what="the run page on the remembered axis",
    )
    # And the runs list no longer counts it as active.
    assert_no_js_errors(browser)


def test_step_axis_of_an_rl_run_is_monotone(monitor: WebMonitor, browser: Browser) -> None:
    """update_step's step restarts every episode; the charts' step axis (the global step) only rises, live too."""
    run_id = monitor.start_training(config={"algorithm": "ppo"})
    for episode in range(4):
        for step in range(25):
            monitor.update_step(step, 0.1 * step, "left", 0.002, {"pos": step})
        monitor.update_episode(episode, 12.0, 25, True)
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    wait_until_live(browser)
    browser.evaluate("document.querySelector('#x-axis [data-x=\"step\"]').click(); true")
    xs_js = f"Array.from(document.querySelector({js(chart_selector('reward'))})?.__chart?.data?.xs?.[0] ?? [])"
    xs = browser.wait_for(
        xs_js, predicate=lambda v: isinstance(v, list) and len(v) == 100, timeout=15, what="100 steps"
    )
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False)), xs
    # Live steps continue the count.
    for step in range(10):
        monitor.update_step(step, 1.0, "right", 0.002, {"pos": step})
    xs = browser.wait_for(
        xs_js, predicate=lambda v: isinstance(v, list) and len(v) == 110, timeout=10, what="110 steps"
    )
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False)), xs
    # The header has the global step beside update_step's steps and the episodes.
    browser.wait_for(
        "document.querySelector('#run-step').textContent", predicate=lambda text: text == str(monitor.step), timeout=5
    )
    assert browser.evaluate(
        "['run-steps', 'run-episodes'].map(id => document.getElementById(id).parentNode.hidden)"
    ) == [
        False,
        False,
    ]
    monitor.stop_training()
    assert_no_js_errors(browser)


def test_a_supervised_runs_header_has_its_step_and_no_rl_counters(monitor: WebMonitor, browser: Browser) -> None:
    """A run that only logs metrics shows its global step; Steps, Episodes and Final reward stay out of its header."""
    run_id = log_run(monitor, 0.1, 40, 11)
    assert monitor.flush(10)
    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    browser.wait_for(
        "document.querySelector('#run-step')?.textContent ?? null", predicate=lambda text: text == "39", timeout=15
    )
    hidden = browser.evaluate(
        "['run-steps', 'run-episodes', 'run-reward'].map(id => document.getElementById(id).parentNode.hidden)"
    )
    assert hidden == [True, True, True]
    assert_no_js_errors(browser)


@pytest.fixture
def js_as_text(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The server's MIME table maps .js to text/plain (as a Windows registry can make Python's do)."""
    saved = mimetypes.types_map.get(".js")
    mimetypes.add_type("text/plain", ".js")
    try:
        yield
    finally:
        mimetypes.add_type(saved or "text/javascript", ".js")


def test_dashboard_runs_when_js_is_served_as_text(js_as_text: None, monitor: WebMonitor, browser: Browser) -> None:
    """Classic scripts run whatever type the server gives them: the runs table still renders."""
    run_id = log_run(monitor, 0.1, 5, 4)
    assert monitor.flush(10)
    with httpx.Client(base_url=monitor.web_url or "", timeout=10, trust_env=False) as client:
        assert client.get("/static/js/app.js").headers["content-type"].startswith("text/plain")
    browser.navigate(f"{monitor.web_url}/#/")
    browser.wait_for(
        f"document.querySelector('#runs-table tr[data-run-id={json.dumps(run_id)}]') !== null",
        timeout=15,
        what="the runs table",
    )
    assert_no_js_errors(browser)
