"""Take the README's screenshot: the demo's run page in headless Chromium, mid-run.

    .venv/bin/python tests/screenshot_dashboard.py [--output docs/dashboard.png]

The demo's simulated training runs in a thread of this process (its own store in a temporary
directory, its web interface on a free loopback port); once it is well into its episodes and
the loss has gone NaN and back, the run page is captured while charts still move.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser import Browser  # noqa: E402  (the harness lives beside this script)

from runwatch import MonitorConfig, WebMonitor  # noqa: E402
from runwatch.demo import DemoSettings, simulate_training  # noqa: E402

WIDTH, HEIGHT = 1400, 1000


def take(output: Path, *, episodes: int = 40, capture_at_episode: int = 16, timeout: float = 120.0) -> Path:
    """Run the demo and write a PNG of its run page to ``output`` while it trains; returns ``output``."""
    settings = DemoSettings(episodes=episodes, diverge_at_episode=min(12, capture_at_episode - 2))
    with tempfile.TemporaryDirectory(prefix="runwatch-screenshot-") as directory:
        config = MonitorConfig(db_path=f"{directory}/monitoring.db", data_dir=directory, web_port=0)
        with WebMonitor(config) as monitor:
            url = monitor.web_url
            if url is None:
                raise RuntimeError("the web interface did not start")
            started = threading.Event()
            run_ids: list[str] = []

            def on_start(run_id: str) -> None:
                run_ids.append(run_id)
                started.set()

            trainer = threading.Thread(target=simulate_training, args=(monitor, settings, on_start), daemon=True)
            trainer.start()
            if not started.wait(timeout):
                raise TimeoutError("the demo's run did not start")
            with Browser.launch(width=WIDTH, height=HEIGHT) as browser:
                browser.navigate(f"{url}/#/runs/{quote(run_ids[0], safe='')}")
                browser.wait_for("document.querySelector('#conn-status')?.dataset.state === 'live'", timeout=30)
                browser.wait_for(
                    f"Number(document.querySelector('#run-episodes')?.textContent.replace(/\\D/g, '') || 0)"
                    f" >= {capture_at_episode}",
                    timeout=timeout,
                    what="the demo to get well into its run",
                )
                browser.pump(1.0)  # a second of live points and redraws
                output.parent.mkdir(parents=True, exist_ok=True)
                browser.screenshot(output)
            trainer.join(timeout)  # the run completes; leaving `with` then closes the monitor
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
    )
    args = parser.parse_args()
    print(take(args.output))


if __name__ == "__main__":
    main()
