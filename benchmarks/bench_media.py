"""Images and histograms: the training loop's cost, what gets stored, and how fast it is seen live.

    python benchmarks/bench_media.py [--seconds S] [--quick]

1. ``log_image`` of a 160×144×3 uint8 frame (a game-like screen: flat
   colours, a scrolling background and moving sprites) at 60 calls a second
   for ``--seconds``: the call's median and p99, frames stored per second,
   the media thread's CPU (share of one core), store bytes per frame. The
   baseline from the same run: ``update_metrics`` at the same cadence, and a
   bare ``numpy`` copy of the frame (the floor of taking a private copy).
2. Live: the time from the ``log_image`` call to a ``/ws`` subscriber's
   announcement of the frame, and to its bytes being served by
   ``/api/media/{digest}`` (what the run page fetches), over 30 frames.
   Then the run page itself in headless Chromium: from the ``log_image``
   call to the frame on screen (the page notes when each frame's image has
   loaded and replaced the previous one), at 60 calls/s (where a frame that
   arrives while the previous one loads replaces it in the queue) and at
   4 calls/s (every frame shown); the REST figures above are its baseline.
3. ``log_histogram`` of 1M float64 (an array; then a list, and a float32
   array as a CPU tensor would hand over), against ``numpy.copy`` of the array
   and ``numpy.histogram`` of it (what binning on the loop would cost).
4. PNG zlib level 1 (runwatch's) against Pillow's default 6: bytes and
   encoding time per frame.

Every loop is bounded in count; everything runs on loopback and local files.
Figures print as a table and go to ``benchmarks/results/media.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runwatch import MonitorConfig, WebMonitor

FRAME_SHAPE = (144, 160, 3)
RATE = 60.0


def game_frames(count: int) -> list[np.ndarray]:
    """Frames like a handheld game's: a 4-shade palette, a scrolling tiled background, two moving sprites."""
    palette = np.array([[224, 248, 208], [136, 192, 112], [52, 104, 86], [8, 24, 32]], np.uint8)
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 4, size=(18, 20))
    tile_pixels = np.kron(tiles, np.ones((8, 8), int))
    frames = []
    for index in range(count):
        shifted = np.roll(tile_pixels, shift=index % 160, axis=1)
        shades = shifted.copy()
        for sprite, (y, x) in enumerate(((60 + index % 40, 70), (20, (3 * index) % 150))):
            shades[y : y + 16, x : x + 10] = 3 - sprite
        frames.append(palette[shades])
    return frames


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def paced(seconds: float, call: Any) -> list[float]:
    """Call ``call(i)`` at RATE per second for ``seconds``; the call times in µs."""
    count = int(seconds * RATE)
    times = []
    start = time.perf_counter()
    for index in range(count):
        target = start + index / RATE
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter_ns()
        call(index)
        times.append((time.perf_counter_ns() - began) / 1000)
    return times


def bench_log_image(directory: Path, seconds: float) -> dict[str, Any]:
    frames = game_frames(int(seconds * RATE))
    config = MonitorConfig(db_path=str(directory / "images.db"), data_dir=str(directory / "data"), web_port=0)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="frames")
        metric_times = paced(min(seconds, 3.0), lambda i: monitor.update_metrics({"reward": float(i)}))
        copy_times = paced(min(seconds, 3.0), lambda i: frames[i].copy())
        cpu_before = monitor.statistics()["media"]["cpu_seconds"]
        started = time.perf_counter()
        image_times = paced(seconds, lambda i: monitor.log_image("frame", frames[i], step=i))
        monitor.flush()
        elapsed = time.perf_counter() - started
        stats = monitor.statistics()
        media = stats["media"]
        store = stats["components"]["store"]
        stored = len(monitor.db.get_run_images("frames", "frame"))
        monitor.stop_training()
    return {
        "calls": len(image_times),
        "log_image_median_us": statistics.median(image_times),
        "log_image_p99_us": percentile(image_times, 0.99),
        "update_metrics_median_us": statistics.median(metric_times),
        "update_metrics_p99_us": percentile(metric_times, 0.99),
        "numpy_copy_median_us": statistics.median(copy_times),
        "frames_stored": stored,
        "frames_stored_per_second": stored / elapsed,
        "encoder_cpu_share_of_one_core": (media["cpu_seconds"] - cpu_before) / elapsed,
        "store_bytes_per_frame": store["image_blob_bytes"] / max(1, stored),
        "raw_bytes_per_frame": int(np.prod(FRAME_SHAPE)),
        "dropped": media["dropped"],
    }


def bench_live(directory: Path, frames_count: int = 30) -> dict[str, Any]:
    import httpx
    import orjson
    import websockets

    frames = game_frames(frames_count)
    config = MonitorConfig(db_path=str(directory / "live.db"), data_dir=str(directory / "data"), web_port=0)
    announced: list[float] = []
    served: list[float] = []
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="live")
        assert monitor.web_url is not None
        base = monitor.web_url

        async def main() -> None:
            async with (
                websockets.connect(base.replace("http", "ws", 1) + "/ws") as socket,
                httpx.AsyncClient(base_url=base) as client,
            ):
                await socket.send(orjson.dumps({"subscribe": {"kinds": ["image"], "runs": ["live"]}}))
                await socket.recv()
                for index in range(frames_count):
                    called = time.perf_counter()
                    await asyncio.to_thread(monitor.log_image, "frame", frames[index], step=index)
                    digest = None
                    while digest is None:
                        message = orjson.loads(await asyncio.wait_for(socket.recv(), 10))
                        for event in message.get("events", []):
                            if event.get("step") == index:
                                digest = event["digest"]
                    announced.append((time.perf_counter() - called) * 1000)
                    # As the run page does: fetch the bytes, again a little later while not yet committed.
                    for _ in range(200):
                        response = await client.get(f"/api/media/{digest}")
                        if response.status_code == 200:
                            break
                        await asyncio.sleep(0.01)
                    served.append((time.perf_counter() - called) * 1000)
                    await asyncio.sleep(1 / RATE)

        asyncio.run(main())
    return {
        "frames": frames_count,
        "announced_median_ms": statistics.median(announced),
        "announced_max_ms": max(announced),
        "served_median_ms": statistics.median(served),
        "served_max_ms": max(served),
    }


#: Notes, in the page, when each image tile shows a new step: [step, epoch ms].
_WATCH_TILES = """
window.__shown = [];
new MutationObserver((records) => {
  for (const r of records) {
    const t = r.target;
    if (t.classList && t.classList.contains('image-tile') && t.dataset.step !== undefined) {
      window.__shown.push([Number(t.dataset.step), Number(t.dataset.shownAt)]);
    }
  }
}).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-step'] });
true
"""


def bench_run_page(directory: Path, seconds: float) -> dict[str, Any]:
    """From log_image() to the frame on the run page's screen, in headless Chromium."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from browser import Browser, find_chromium

    chromium = find_chromium()
    if chromium is None:
        return {"skipped": "Chromium is not installed (/usr/bin/chromium)"}
    config = MonitorConfig(db_path=str(directory / "page.db"), data_dir=str(directory / "data"), web_port=0)
    out: dict[str, Any] = {}
    with WebMonitor(config) as monitor, Browser.launch(executable=chromium, width=1280, height=900) as browser:
        assert monitor.web_url is not None
        monitor.start_training(run_id="page")
        browser.navigate(f"{monitor.web_url}/#/runs/page")
        browser.wait_for("document.querySelector('#conn-status')?.dataset.state === 'live'", timeout=30)
        browser.evaluate(_WATCH_TILES)
        step = 0
        for rate, duration in ((RATE, seconds), (4.0, min(seconds, 10.0))):
            count = int(duration * rate)
            frames = game_frames(count)
            called: dict[int, float] = {}
            start = time.perf_counter()
            for index in range(count):
                pause = start + index / rate - time.perf_counter()
                if pause > 0:
                    browser.pump(pause)  # the browser's events keep flowing meanwhile
                called[step] = time.time()
                monitor.log_image("frame", frames[index], step=step)
                step += 1
            browser.wait_for(
                f"window.__shown.some(([s]) => s === {step - 1})", timeout=30, what="the last frame on screen"
            )
            shown = {s: at / 1000 for s, at in browser.evaluate("window.__shown") if s in called}
            delays = [(shown[s] - called[s]) * 1000 for s in sorted(shown)]
            out[f"{rate:.0f}_per_second"] = {
                "frames_logged": count,
                "frames_shown": len(delays),
                "delay_median_ms": statistics.median(delays),
                "delay_p95_ms": percentile(delays, 0.95),
                "delay_max_ms": max(delays),
                "within_250_ms": sum(1 for d in delays if d <= 250) / len(delays),
            }
        monitor.stop_training()
    return out


def bench_histogram(directory: Path, repeats: int) -> dict[str, Any]:
    values = np.random.default_rng(3).normal(size=1_000_000)
    as_list = values.tolist()
    as_float32 = values.astype(np.float32)
    config = MonitorConfig(db_path=str(directory / "hist.db"), data_dir=str(directory / "data"), web_port=0)
    results: dict[str, list[float]] = {"array": [], "list": [], "float32": [], "copy": [], "np_histogram": []}
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="hist")
        for step in range(repeats):
            for key, payload in (("array", values), ("list", as_list), ("float32", as_float32)):
                began = time.perf_counter_ns()
                monitor.log_histogram("q", payload, step=step)
                results[key].append((time.perf_counter_ns() - began) / 1e6)
                monitor.flush()  # one at a time: the queue's byte bound is not what is measured
            began = time.perf_counter_ns()
            values.copy()
            results["copy"].append((time.perf_counter_ns() - began) / 1e6)
            began = time.perf_counter_ns()
            np.histogram(values, bins=64)
            results["np_histogram"].append((time.perf_counter_ns() - began) / 1e6)
        cpu = monitor.statistics()["media"]["cpu_seconds"]
        binned = monitor.statistics()["media"]["histograms_binned"]
    out = {f"{key}_median_ms": statistics.median(times) for key, times in results.items()}
    out["media_thread_ms_per_histogram"] = cpu / max(1, binned) * 1000
    return out


def bench_png_levels(count: int) -> dict[str, Any]:
    from PIL import Image

    frames = game_frames(count)
    out: dict[str, Any] = {}
    for level in (1, 6):
        sizes, times = [], []
        for frame in frames:
            began = time.perf_counter_ns()
            buffer = io.BytesIO()
            Image.fromarray(frame).save(buffer, format="PNG", compress_level=level)
            times.append((time.perf_counter_ns() - began) / 1000)
            sizes.append(buffer.tell())
        out[f"level{level}_bytes"] = statistics.median(sizes)
        out[f"level{level}_encode_us"] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of log_image at 60 calls/s")
    parser.add_argument("--quick", action="store_true", help="a short run (5 s, 3 histogram repeats)")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="bench-media-") as temporary:
        directory = Path(temporary)
        results = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "log_image": bench_log_image(directory, seconds),
            "live": bench_live(directory),
            "run_page": bench_run_page(directory, min(seconds, 10.0)),
            "log_histogram_1M": bench_histogram(directory, 3 if args.quick else 10),
            "png": bench_png_levels(60),
        }
    image, live, histogram, png = results["log_image"], results["live"], results["log_histogram_1M"], results["png"]
    print(f"log_image 160x144x3 at {RATE:.0f}/s, {image['calls']} calls:")
    print(f"  call median {image['log_image_median_us']:.1f} us, p99 {image['log_image_p99_us']:.1f} us")
    print(
        f"  baseline: update_metrics median {image['update_metrics_median_us']:.1f} us"
        f" (p99 {image['update_metrics_p99_us']:.1f}); numpy copy of the frame {image['numpy_copy_median_us']:.1f} us"
    )
    print(
        f"  stored {image['frames_stored']} frames, {image['frames_stored_per_second']:.1f}/s;"
        f" media thread {100 * image['encoder_cpu_share_of_one_core']:.1f}% of a core;"
        f" {image['store_bytes_per_frame']:.0f} store bytes per frame (raw {image['raw_bytes_per_frame']})"
    )
    print(
        f"live: announced on /ws median {live['announced_median_ms']:.1f} ms (max {live['announced_max_ms']:.1f});"
        f" bytes served median {live['served_median_ms']:.1f} ms (max {live['served_max_ms']:.1f})"
    )
    for key, page in results["run_page"].items():
        if key == "skipped":
            print(f"run page: skipped ({page})")
            continue
        print(
            f"run page at {key.replace('_', ' ')}: {page['frames_shown']} of {page['frames_logged']} frames on screen,"
            f" call to screen median {page['delay_median_ms']:.0f} ms, p95 {page['delay_p95_ms']:.0f} ms,"
            f" max {page['delay_max_ms']:.0f} ms; {100 * page['within_250_ms']:.1f}% within 250 ms"
        )
    print(
        f"log_histogram 1M: array {histogram['array_median_ms']:.2f} ms,"
        f" float32 {histogram['float32_median_ms']:.2f} ms,"
        f" list {histogram['list_median_ms']:.1f} ms; baseline numpy copy {histogram['copy_median_ms']:.2f} ms,"
        f" numpy.histogram {histogram['np_histogram_median_ms']:.1f} ms;"
        f" media thread {histogram['media_thread_ms_per_histogram']:.1f} ms per histogram"
    )
    print(
        f"PNG per frame: level 1 {png['level1_bytes']:.0f} B in {png['level1_encode_us']:.0f} us;"
        f" level 6 {png['level6_bytes']:.0f} B in {png['level6_encode_us']:.0f} us"
    )
    out = Path(__file__).parent / "results" / "media.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench-media"
    sys.exit(main())
