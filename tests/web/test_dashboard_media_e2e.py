"""Images and histograms in a real browser: headless Chromium against an in-process WebMonitor.

- the run page shows each image name's latest image live, and its step slider
  scrubs back through the run (the image at or before the chosen step), until
  "Live" follows new images again;
- the histograms panel draws the distribution over steps and the histogram at
  a chosen step (by slider or by a click on the distribution), live;
- the compare view shows one image name side by side across runs, under one
  step slider;
- the demo's frames and Q-value histograms, live (the README's screenshot).

What is on screen is checked by its pixels: each logged image has its own
colour, read back from the ``<img>`` the page shows. With
``RUNWATCH_UPDATE_SCREENSHOT=1`` the demo's test refreshes ``docs/media.png``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from browser import Browser

from runwatch import MonitorConfig, WebMonitor
from runwatch.demo import DemoSettings, simulate_training

from .test_dashboard_e2e import VIEWPORT, assert_no_js_errors, diagnostics, frames, js, png_size, wait_until_live
from .test_dashboard_e2e import browser as browser  # noqa: F401 (the fixture)
from .test_dashboard_e2e import monitor as monitor  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent.parent
SCREENSHOT = REPO / "docs" / "media.png"
#: Seconds from log_image() to the image on screen, a generous bound: the measured figure is
#: benchmarks/bench_media.py's.
LIVE_DEADLINE = 30.0  # generous: a shared, loaded machine


def color(step: int, run: int = 0) -> tuple[int, int, int]:
    """A colour of its own for each step (and run)."""
    return ((step * 23 + run * 101) % 256, (250 - step * 11) % 256, (40 + run * 80 + step * 3) % 256)


def frame(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.full((36, 40, 3), rgb, np.uint8)


def tile_selector(name: str, scope: str = "#images") -> str:
    return f"{scope} .image-tile[data-image-name={js(name)}]"


def tile_data(browser: Browser, selector: str, key: str) -> str | None:
    value = browser.evaluate(f"document.querySelector({js(selector)})?.dataset[{js(key)}] ?? null")
    return None if value is None else str(value)


def shown_pixel(browser: Browser, selector: str) -> tuple[int, int, int]:
    """The colour of the image a tile shows, read back from its <img> once it has loaded."""
    browser.wait_for(
        f"(img => !!img && img.complete && img.naturalWidth > 0)"
        f"(document.querySelector({js(selector + ' img.image-frame')}))",
        timeout=15,
        what=f"the image of {selector} loaded",
    )
    rgba = browser.evaluate(
        f"(() => {{ const img = document.querySelector({js(selector + ' img.image-frame')});"
        " const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
        " const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);"
        " return Array.from(ctx.getImageData(2, 2, 1, 1).data); })()"
    )
    return (rgba[0], rgba[1], rgba[2])


def set_slider(browser: Browser, selector: str, value: int) -> None:
    browser.evaluate(
        f"(() => {{ const s = document.querySelector({js(selector)}); s.value = {js(str(value))};"
        " s.dispatchEvent(new Event('input', { bubbles: true })); return true; })()"
    )


def click(browser: Browser, selector: str) -> None:
    browser.evaluate(f"document.querySelector({js(selector)}).click(); true")


def wait_step(browser: Browser, selector: str, step: int, what: str, timeout: float = 15) -> None:
    try:
        browser.wait_for(
            f"document.querySelector({js(selector)})?.dataset.step === {js(str(step))}", timeout=timeout, what=what
        )
    except Exception as exc:
        raise AssertionError(f"{exc}; {diagnostics(browser)}") from exc


def test_run_page_images_follow_live_and_the_slider_scrubs_back(monitor: WebMonitor, browser: Browser) -> None:
    """The latest image per name is shown live; the slider shows the image at or before a step; Live follows
    again; a new image logged later reaches the screen live."""
    run_id = monitor.start_training()
    for step in range(0, 20, 2):
        monitor.log_image("env/frame", frame(color(step)), step=step, caption=f"s{step}")
    monitor.log_image("plots/map", frame(color(3, run=1)), step=3)
    assert monitor.flush(10)
    tile = tile_selector("env/frame")

    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    wait_step(browser, tile, 18, "the latest frame")
    assert shown_pixel(browser, tile) == color(18)
    assert browser.evaluate("Array.from(document.querySelectorAll('#images .image-tile')).length") == 2
    wait_step(browser, tile_selector("plots/map"), 3, "the other name's image")
    assert shown_pixel(browser, tile_selector("plots/map")) == color(3, run=1)
    wait_until_live(browser)

    # Scrubbing back: the frame at or before the chosen step, and no longer live.
    set_slider(browser, f"{tile} .image-slider", 7)
    wait_step(browser, tile, 6, "the frame at or before step 7")
    assert shown_pixel(browser, tile) == color(6)
    assert tile_data(browser, tile, "live") == "false"
    assert browser.evaluate(f"document.querySelector({js(tile + ' .image-meta')}).textContent") == "step 6 · s6"

    # A new frame while scrubbed widens the slider and leaves the chosen frame on screen.
    monitor.log_image("env/frame", frame(color(20)), step=20, caption="s20")
    browser.wait_for(f"document.querySelector({js(tile + ' .image-slider')}).max === '20'", timeout=10, what="max")
    browser.pump(0.3)
    assert tile_data(browser, tile, "step") == "6"

    click(browser, f"{tile} .image-live")
    wait_step(browser, tile, 20, "the latest frame again")
    assert shown_pixel(browser, tile) == color(20)
    assert tile_data(browser, tile, "live") == "true"

    # Live: a new frame reaches the screen (how fast is bench_media's to measure, not a test's).
    monitor.log_image("env/frame", frame(color(22)), step=22)
    wait_step(browser, tile, 22, "the live frame", timeout=LIVE_DEADLINE)
    assert int(tile_data(browser, tile, "shownAt") or 0) > 0
    assert shown_pixel(browser, tile) == color(22)
    assert_no_js_errors(browser)


def test_histograms_show_the_distribution_over_steps_and_the_histogram_at_a_step(
    monitor: WebMonitor, browser: Browser
) -> None:
    """The distribution over steps follows the values' drift; the histogram at a chosen step comes by slider or
    by a click on the distribution; new histograms arrive live; values outside the bins are counted apart."""
    rng = np.random.default_rng(7)
    run_id = monitor.start_training()
    for step in range(10):
        monitor.log_histogram("q_values", rng.normal(step, 1.0, 1000), step=step, bins=16)
    monitor.log_histogram("grads", np.array([1.0, 2.0, np.nan, np.inf, 2.5]), step=0, bins=4)
    assert monitor.flush(10)
    card = "#histograms .histogram-card[data-histogram-name='q_values']"
    bars = f"{card} canvas.histogram-at"

    browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_id, safe='')}")
    browser.wait_for(
        f"document.querySelector({js(card + ' canvas.distribution')})?.dataset.drawn === '10'"
        f" && document.querySelector({js(bars)})?.dataset.step === '9'",
        timeout=15,
        what="the distribution of 10 histograms and the latest one",
    )
    assert tile_data(browser, bars, "total") == "1000"
    assert browser.evaluate("document.querySelector('#images').hidden") is True  # no images in this run
    # The values drift upwards over the steps: so does the drawn band, from left to right.
    heights = browser.evaluate(
        f"(() => {{ const c = document.querySelector({js(card + ' canvas.distribution')});"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height); const dpr = c.width / c.clientWidth;"
        " const centre = (x) => { let sum = 0, n = 0; for (let y = 0; y < c.height; y++) {"
        " const i = (y * c.width + Math.round(x * dpr)) * 4;"
        " if (d.data[i + 3] > 0 && d.data[i + 2] > d.data[i] + 40) { sum += y; n++; } } return n ? sum / n : null; };"
        " return [centre(56), centre(c.clientWidth - 12)]; })()"
    )
    assert heights[0] is not None and heights[1] is not None, heights
    assert heights[0] > heights[1], f"the band's centre on screen, left and right: {heights}"

    set_slider(browser, f"{card} .histogram-slider", 3)
    wait_step(browser, bars, 3, "the histogram at step 3")
    assert "step 3" in browser.evaluate(f"document.querySelector({js(card + ' .histogram-info')}).textContent")
    browser.evaluate(
        f"(() => {{ const c = document.querySelector({js(card + ' canvas.distribution')});"
        " const r = c.getBoundingClientRect();"
        " c.dispatchEvent(new MouseEvent('click', { clientX: r.left + 53, clientY: r.top + 40, bubbles: true }));"
        " return true; })()"
    )
    wait_step(browser, bars, 0, "the histogram at the clicked step")
    wait_until_live(browser)

    monitor.log_histogram("q_values", rng.normal(10, 1.0, 1000), step=10, bins=16)
    browser.wait_for(f"document.querySelector({js(card)}).dataset.histograms === '11'", timeout=10, what="live")
    assert tile_data(browser, bars, "step") == "0"  # the chosen step stays
    click(browser, f"{card} .histogram-live")
    wait_step(browser, bars, 10, "the latest histogram")

    grads = "#histograms .histogram-card[data-histogram-name='grads'] .histogram-info"
    info = browser.evaluate(f"document.querySelector({js(grads)})?.textContent ?? ''")
    assert "5 values" in info and "1 NaN" in info and "1 +Inf" in info, info
    assert_no_js_errors(browser)


def test_compare_view_shows_an_image_name_side_by_side_across_runs(monitor: WebMonitor, browser: Browser) -> None:
    """Each image name of any compared run is a row with one tile per run; the row's slider moves them all to
    a step; Live follows each run's latest image again."""
    runs = []
    for index in range(2):
        run_id = monitor.start_training(run_id=f"media-cmp-{index}")
        for step in range(5):
            monitor.log_image("env/frame", frame(color(step, run=index)), step=step)
        if index == 0:
            monitor.stop_training()
        runs.append(run_id)
    monitor.log_image("env/map", frame(color(1, run=1)), step=1)  # the second run alone
    assert monitor.flush(10)
    row = "#compare-images .compare-image-row[data-image-name='env/frame']"
    tiles = [f"{row} .image-tile[data-run-id={js(run_id)}]" for run_id in runs]

    browser.navigate(f"{monitor.web_url}/#/compare?runs={','.join(runs)}")
    for index, tile in enumerate(tiles):
        wait_step(browser, tile, 4, f"run {index}'s latest frame")
        assert shown_pixel(browser, tile) == color(4, run=index)
    map_row = "#compare-images .compare-image-row[data-image-name='env/map']"
    assert browser.evaluate(f"document.querySelectorAll({js(map_row + ' .image-tile')}).length") == 2
    wait_step(browser, f"{map_row} .image-tile[data-run-id={js(runs[1])}]", 1, "the second run's map")
    first_map = f"{map_row} .image-tile[data-run-id={js(runs[0])}] .image-meta"
    assert browser.evaluate(f"document.querySelector({js(first_map)}).textContent") == "no image yet"
    wait_until_live(browser)

    set_slider(browser, f"{row} .image-slider", 2)
    for index, tile in enumerate(tiles):
        wait_step(browser, tile, 2, f"run {index}'s frame at step 2")
        assert shown_pixel(browser, tile) == color(2, run=index)

    monitor.log_image("env/frame", frame(color(5, run=1)), step=5)  # the running run goes on
    browser.wait_for(f"document.querySelector({js(row + ' .image-slider')}).max === '5'", timeout=10, what="max")
    assert tile_data(browser, tiles[1], "step") == "2"
    click(browser, f"{row} .image-live")
    wait_step(browser, tiles[1], 5, "the running run's latest frame")
    wait_step(browser, tiles[0], 4, "the finished run's latest frame")
    assert shown_pixel(browser, tiles[1]) == color(5, run=1)
    frames(browser)
    assert_no_js_errors(browser)


def test_images_load_behind_a_bearer_token(tmp_path: Path, browser: Browser) -> None:
    """With a token configured, the page's <img> requests carry it (an <img> cannot send the header) and the
    images show; the same URL without the token is refused."""
    config = MonitorConfig(
        db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0, web_token="media-secret"
    )
    with WebMonitor(config) as monitor:
        run_id = monitor.start_training()
        monitor.log_image("env/frame", frame(color(1)), step=1)
        assert monitor.flush(10)
        tile = tile_selector("env/frame")
        browser.navigate(f"{monitor.web_url}/?token=media-secret#/runs/{quote(run_id, safe='')}")
        wait_step(browser, tile, 1, "the frame behind the token")
        assert shown_pixel(browser, tile) == color(1)
        digest = tile_data(browser, tile, "digest")
        assert "token" not in browser.evaluate("location.href")  # taken out of the address bar
        refused = httpx.get(f"{monitor.web_url}/api/media/{digest}", timeout=10)
        assert refused.status_code == 401
        assert_no_js_errors(browser)


def test_the_demo_shows_its_frames_and_q_value_histograms_live(
    monitor: WebMonitor, browser: Browser, tmp_path: Path
) -> None:
    """The demo's run page, mid-run, shows its rendered frames (beside the charts) and Q-value histograms live
    (docs/media.png, the README's screenshot of the histograms, refreshed with RUNWATCH_UPDATE_SCREENSHOT=1)."""
    started = threading.Event()
    run_ids: list[str] = []

    def on_start(run_id: str) -> None:
        run_ids.append(run_id)
        started.set()

    settings = DemoSettings(episodes=4, diverge_at_episode=None)
    trainer = threading.Thread(target=simulate_training, args=(monitor, settings, on_start), daemon=True)
    trainer.start()
    try:
        assert started.wait(30), "the demo's run did not start"
        browser.navigate(f"{monitor.web_url}/#/runs/{quote(run_ids[0], safe='')}")
        wait_until_live(browser)
        tile = tile_selector("env/frame")
        card = "#histograms .histogram-card[data-histogram-name='q_values']"
        browser.wait_for(
            f"document.querySelector({js(tile)})?.dataset.digest !== undefined"
            f" && Number(document.querySelector({js(card + ' canvas.distribution')})?.dataset.drawn) >= 20",
            timeout=60,
            what="frames and a distribution of Q-values",
        )
        first = tile_data(browser, tile, "step")
        browser.wait_for(
            f"document.querySelector({js(tile)}).dataset.step !== {js(first)}", timeout=20, what="the next frame"
        )
        for _ in range(2):  # the charts above may still grow: scroll again once they have
            browser.evaluate(  # the histograms just below the sticky top bar
                "window.scrollTo(0, document.querySelector('#histograms').getBoundingClientRect().top + scrollY - 64);"
                " true"
            )
            frames(browser)
        png = browser.screenshot(tmp_path / "media.png")
    finally:
        trainer.join(60)
    assert not trainer.is_alive()
    if os.environ.get("RUNWATCH_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(png)
    assert png_size(png) == VIEWPORT and len(png) > 10_000
    assert_no_js_errors(browser)
