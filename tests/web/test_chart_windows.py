"""Chart windows beyond a run's data answer with empty series, on a real server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor

POINTS = 1100  # past 512 points a bucket at max_points=4: the compare view charts from summaries


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, float, float]]:
    """A monitor's server with one completed run of POINTS calls; its first and last call times."""
    tmp: Path = tmp_path_factory.mktemp("windows")
    config = MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, update_interval=3600)
    with WebMonitor(config) as monitor:
        monitor.start_training(run_id="r")
        t0 = 1_796_600_000.0
        for i in range(POINTS):
            monitor.update_metrics({"loss": 1.0 / (i + 1)}, t0 + i, step=i)
        monitor.stop_training()
        assert monitor.web_url is not None
        with httpx.Client(base_url=monitor.web_url, timeout=30) as client:
            yield client, t0, t0 + POINTS - 1


@pytest.mark.parametrize("window", ["since=after", "until=before"])
def test_a_run_metrics_window_beyond_the_data_is_empty(served: tuple[httpx.Client, float, float], window: str) -> None:
    """since after the last point (a poll for new points) or until before the first gives empty series, not 422."""
    client, first, last = served
    bound, where = window.split("=")
    at = last + 10 if where == "after" else first - 10
    for max_points in (2000, 4):  # point by point, and from chunk summaries
        response = client.get("/api/runs/r/metrics", params={"names": "loss", bound: at, "max_points": max_points})
        assert response.status_code == 200, response.text
        assert response.json()["series"]["loss"]["total_points"] == 0


@pytest.mark.parametrize(("x", "offset"), [("step", 10.0), ("time", 10.0), ("relative", 1e6)])
def test_a_compare_window_after_the_data_is_empty(
    served: tuple[httpx.Client, float, float], x: str, offset: float
) -> None:
    """A compare view zoomed past a long run's last point answers 200 without points."""
    client, _, last = served
    x_min = {"step": POINTS - 1 + offset, "time": last + offset, "relative": offset}[x]
    response = client.get(
        "/api/compare", params={"runs": "r", "metrics": "loss", "x": x, "x_min": x_min, "max_points": 4}
    )
    assert response.status_code == 200, response.text
    assert sum(series["total_points"] for series in response.json()["series"]) == 0
