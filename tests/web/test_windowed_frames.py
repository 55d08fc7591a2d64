"""A time window merged by step reads the same over REST (a remote reader's pages) as from the file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from runwatch.config import MonitorConfig
from runwatch.events import Metric, RunLifecycle, RunTransition
from runwatch.monitor import WebMonitor
from runwatch.remote.reader import RestReader
from runwatch.store.manager import DatabaseManager
from runwatch.store.sqlite import SQLiteStore

T0 = 1_796_600_000.0


async def test_a_remote_window_gives_its_first_calls_the_step_in_progress(tmp_path: Path) -> None:
    """Sampler readings at a window's start join the step in progress over /metrics/calls pages too."""
    db = tmp_path / "store.db"
    writer = SQLiteStore(db).open_writer(owner="frames-host:1:1.0")
    await writer.open()
    try:
        await writer.write([RunLifecycle("r", T0, RunTransition.STARTED), Metric("r", T0 + 0.5, {"loss": 1.0}, 0)])
        await writer.write([Metric("r", T0 + 1 + i * 0.001, {"cpu": float(i)}, None) for i in range(2000)])
        await writer.write([Metric("r", T0 + 10, {"loss": 2.0}, 1), Metric("r", T0 + 11, {"cpu": -1.0}, None)])
        await writer.write([RunLifecycle("r", T0 + 12, RunTransition.COMPLETED)])
    finally:
        await writer.aclose()
    start = T0 + 1 + 1.5
    local = DatabaseManager(db).get_run_metrics("r", align="step", start_time=start)
    assert local["step"].tolist() == [0, 1] and local["cpu"].tolist() == [1999.0, -1.0]
    config = MonitorConfig(db_path=str(db), data_dir=str(tmp_path / "d"), web_port=0, update_interval=3600)
    with WebMonitor(config) as monitor:
        assert monitor.web_url is not None
        with RestReader(monitor.web_url) as reader:
            for calls_per_page in (50_000, 7):  # the step travels on the first page only
                reader.calls_per_page = calls_per_page
                remote = reader.get_run_metrics("r", align="step", start_time=start)
                pd.testing.assert_frame_equal(remote, local, check_exact=True)
