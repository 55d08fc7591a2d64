"""Run comparison and run annotations: the multi-run read, GET /api/compare, tags and notes.

Real stores and a real server on a loopback port: ``WebMonitor`` writes the
runs, ``DatabaseManager``, the REST API and an export/import round trip
read them back.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from runwatch import AlertEvent, DatabaseManager, MonitorConfig, UnknownRunError, WebMonitor
from runwatch.store.export import export_run
from runwatch.store.importer import import_run
from runwatch.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from runwatch.web.series import bucket_series

TOKEN = "compare-token-123456"


@dataclass
class Logged:
    """A monitor with three runs: two plain ones and an RL one."""

    monitor: WebMonitor
    db_path: Path
    plain: str
    other: str
    rl: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.monitor.web_url or "", timeout=10, trust_env=False, **kwargs)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    tmp = tmp_path_factory.mktemp("compare")
    db_path = tmp / "m.db"
    config = MonitorConfig(db_path=str(db_path), data_dir=str(tmp / "data"), web_port=0, web_token=TOKEN)
    with WebMonitor(config) as monitor:
        plain = monitor.start_training(config={"lr": 0.1, "optimizer": {"name": "adam"}})
        for i in range(100):
            values = {"loss": 1.0 / (i + 1), "acc": i / 100}
            if i == 40:
                values["loss"] = math.nan
            if i == 60:
                values["loss"] = math.inf
            monitor.update_metrics(values)
        monitor.stop_training()
        other = monitor.start_training(config={"lr": 0.01})
        for i in range(30):
            monitor.update_metrics({"loss": 2.0 / (i + 1)})
        monitor.stop_training()
        rl = monitor.start_training(config={"lr": 0.001})
        for episode in range(3):
            for step in range(5):  # update_step's step counts within the episode
                monitor.update_step(step, 0.5, "left", 0.01, {"x": step})
            monitor.update_episode(episode, 2.5, 5, True)
        monitor.emit_event(AlertEvent(rl, time.time(), "slow", "firing", "warning"))
        monitor.stop_training(final_reward=2.5)
        assert monitor.flush(10)
        yield Logged(monitor, db_path, plain, other, rl)


# -- the multi-run read ---------------------------------------------------------------------


def test_get_runs_metrics_is_a_long_frame_per_run_metric_and_call(logged: Logged) -> None:
    """One row per logged value with run_id, a global step, a UTC timestamp, metric and value."""
    frame = logged.monitor.get_runs_metrics([logged.plain, logged.other])
    assert list(frame.columns) == ["run_id", "step", "timestamp", "metric", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["step"].dtype == np.int64 and frame["value"].dtype == np.float64
    assert len(frame) == 100 * 2 + 30
    loss = frame[(frame.run_id == logged.plain) & (frame.metric == "loss")]
    assert list(loss["step"]) == list(range(100))
    assert math.isnan(loss["value"].iloc[40]) and loss["value"].iloc[60] == math.inf
    wide = frame.pivot_table(index=["run_id", "step"], columns="metric", values="value", dropna=False)
    assert wide.loc[(logged.other, 29), "loss"] == pytest.approx(2.0 / 30)


def test_get_runs_metrics_filters_metrics_and_keeps_the_given_run_order(tmp_path: Path, logged: Logged) -> None:
    """metric_names selects; runs come in the order given; DatabaseManager answers the same."""
    with DatabaseManager(logged.db_path) as db:
        frame = db.get_runs_metrics([logged.other, logged.plain], metric_names=["acc"])
    assert list(frame["run_id"].unique()) == [logged.plain]  # the other run never logged acc
    assert set(frame["metric"]) == {"acc"}
    with DatabaseManager(logged.db_path) as db:
        both = db.get_runs_metrics([logged.other, logged.plain], metric_names=["loss"])
    assert list(both["run_id"].unique()) == [logged.other, logged.plain]


def test_the_global_step_of_an_rl_run_is_monotone(logged: Logged) -> None:
    """update_step's per-episode step (0..4 five times) never becomes the x axis: the global step rises."""
    frame = logged.monitor.get_runs_metrics([logged.rl], ["reward"])
    steps = list(frame["step"])
    assert len(steps) == 15
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False)), steps
    episode_steps = logged.monitor.get_runs_metrics([logged.rl], ["episode_step"])["value"].tolist()
    assert episode_steps[:6] == [0, 1, 2, 3, 4, 0], "the per-episode step is still recorded"


@pytest.mark.parametrize(
    ("run_ids", "error"),
    [
        pytest.param([], ValueError, id="none"),
        pytest.param("run-a", TypeError, id="a-string"),
        pytest.param([1], TypeError, id="not-text"),
        pytest.param([f"r{i}" for i in range(51)], ValueError, id="too-many"),
        pytest.param(["no-such-run"], UnknownRunError, id="unknown"),
    ],
)
def test_get_runs_metrics_bad_run_ids(logged: Logged, run_ids: Any, error: type[Exception]) -> None:
    """Bad run ids raise a clear error naming what was wrong."""
    with pytest.raises(error):
        logged.monitor.get_runs_metrics(run_ids)


def test_a_call_without_a_step_takes_the_step_before_it(tmp_path: Path) -> None:
    """Calls stored without a step (a remote producer's, the sampler's) sit at the step of the call before them."""
    from runwatch import Metric

    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as monitor:
        run = monitor.start_training()
        now = time.time()
        monitor.emit_event(Metric(run, now, {"x": 1.0}))  # no step before any: step 0
        monitor.update_metrics({"x": 2.0}, step=5)
        monitor.emit_event(Metric(run, now + 1, {"x": 3.0}))
        monitor.update_metrics({"x": 4.0})
        frame = monitor.get_runs_metrics([run])
    assert list(frame["step"]) == [0, 5, 5, 6]
    assert list(frame["value"]) == [1.0, 2.0, 3.0, 4.0]


def test_a_call_without_a_step_takes_the_latest_step_of_any_metric(tmp_path: Path) -> None:
    """The step carried to a call without one is that of the latest earlier call, whichever metrics it logged."""
    from runwatch import Metric

    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as monitor:
        run = monitor.start_training()
        now = time.time()
        monitor.update_metrics({"loss": 1.0}, step=3)
        monitor.update_metrics({"acc": 0.5}, step=7)
        monitor.emit_event(Metric(run, now + 1, {"sampled": 1.0}))  # after acc's step 7, not loss's 3
        monitor.update_metrics({"loss": 2.0}, step=9)
        monitor.update_metrics({"acc": 0.6}, step=4)  # a step going back is still the latest call's
        monitor.emit_event(Metric(run, now + 2, {"sampled": 2.0}))
        frame = monitor.get_runs_metrics([run], ["sampled"])
    assert list(frame["step"]) == [7, 4]
    assert list(frame["value"]) == [1.0, 2.0]


def test_bucket_series_keeps_band_and_non_finite_marks() -> None:
    """Bucketing gives the mean line, the min/max band and the buckets that held NaN or ±Inf."""
    values = np.array([1.0, 3.0, np.nan, 2.0, 10.0, -np.inf, 4.0, 4.0])
    series = {"ts": np.arange(8.0) + 100, "step": np.arange(8), "value": values}
    out = bucket_series(series, x="step", start_time=100.0, x_min=None, x_max=None, max_points=4)
    assert out["downsampled"] is True and out["total_points"] == 8
    assert out["step"] == [1, 3, 5, 7] and out["t"] == [101.0, 103.0, 105.0, 107.0]
    assert out["v"] == [2.0, 2.0, 10.0, 4.0]
    assert out["lo"] == [1.0, 2.0, 10.0, 4.0] and out["hi"] == [3.0, 2.0, 10.0, 4.0]
    assert out["marks"] == {"nan": [1], "pinf": [], "ninf": [2]}
    whole = bucket_series(series, x="relative", start_time=100.0, x_min=2, x_max=5, max_points=10)
    assert whole["downsampled"] is False and whole["step"] == [2, 3, 4, 5]
    assert whole["v"] == [None, 2.0, 10.0, "-Infinity"]


# -- GET /api/compare ---------------------------------------------------------------------------


def test_compare_serves_every_run_and_metric_in_one_request(logged: Logged) -> None:
    """One request: each run's summary and a series per run and metric, bucketed to max_points."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get("/api/compare", params={"runs": f"{logged.plain},{logged.other}", "max_points": 50})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["x"] == "step" and body["metrics"] == ["acc", "loss"]
    assert [run["run_id"] for run in body["runs"]] == [logged.plain, logged.other]
    found = {(s["run_id"], s["metric"]): s for s in body["series"]}
    assert set(found) == {(logged.plain, "acc"), (logged.plain, "loss"), (logged.other, "loss")}
    loss = found[(logged.plain, "loss")]
    assert loss["downsampled"] is True and len(loss["v"]) == 50 and loss["total_points"] == 100
    assert loss["marks"]["nan"] == [20] and loss["marks"]["pinf"] == [30]
    short = found[(logged.other, "loss")]
    assert short["downsampled"] is False and short["step"] == list(range(30))


def test_compare_x_range_in_each_axis(logged: Logged) -> None:
    """x_min/x_max cut the series in the chosen axis: global step, wall time or time since start."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        by_step = client.get("/api/compare", params={"runs": logged.plain, "metrics": "acc", "x_min": 10, "x_max": 19})
        # A chart's zoom sends fractional steps.
        fractional = client.get(
            "/api/compare", params={"runs": logged.plain, "metrics": "acc", "x_min": 9.5, "x_max": 19.75}
        )
        whole = client.get("/api/compare", params={"runs": logged.plain, "metrics": "acc"}).json()["series"][0]
        t10, t19 = whole["t"][10], whole["t"][19]
        by_time = client.get(
            "/api/compare", params={"runs": logged.plain, "metrics": "acc", "x": "time", "x_min": t10, "x_max": t19}
        )
    assert by_step.json()["series"][0]["step"] == list(range(10, 20))
    assert fractional.json()["series"][0]["step"] == list(range(10, 20))
    # Times are kept to the microsecond: a call in the same microsecond as step 10 or 19 is in the window too.
    in_window = [(step, t) for step, t in zip(whole["step"], whole["t"], strict=True) if t10 <= t <= t19]
    assert by_time.json()["series"][0]["step"] == [step for step, _ in in_window]
    assert {step for step, _ in in_window} >= set(range(10, 20))
    assert all(10 <= step <= 19 or t in (t10, t19) for step, t in in_window)


def test_a_long_series_is_bucketed_from_the_store_summaries(tmp_path: Path) -> None:
    """Past 512 points per bucket, /api/compare buckets equal step ranges from the store's summaries
    (no point read): the mean of finite values, their band, and marks where NaN or ±Inf were."""
    from runwatch.store.sqlite import SQLiteStore
    from runwatch.web.compare import _compare

    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    spikes = {500: math.nan, 1500: math.inf, 2600: -math.inf}
    with WebMonitor(config) as monitor:
        run = monitor.start_training()
        for i in range(4096):
            monitor.update_metrics({"flat": spikes.get(i, 1.0), "ramp": float(i)})
        monitor.stop_training()
        assert monitor.flush(10)
    store = SQLiteStore(tmp_path / "m.db")
    reads: list[Any] = []
    read_points = store.runs_metrics
    store.runs_metrics = lambda *args, **kwargs: reads.append(args) or read_points(*args, **kwargs)  # type: ignore[method-assign]
    body = _compare(store, [run], [], "step", None, None, 8)
    zoomed = _compare(store, [run], ["ramp"], "step", 1000.0, 1400.0, 8)["series"][0]
    assert reads == []  # no series was read point by point
    few = _compare(store, [run], ["ramp"], "step", 1000.0, 1003.0, 8)["series"][0]
    found = {s["metric"]: s for s in body["series"]}
    flat, ramp = found["flat"], found["ramp"]
    assert flat["downsampled"] is True and flat["total_points"] == 4096 and len(flat["v"]) == 4
    assert flat["v"] == flat["lo"] == flat["hi"] == [1.0] * 4
    assert flat["marks"] == {"nan": [0], "pinf": [1], "ninf": [2]}
    assert flat["step"] == sorted(flat["step"]) and flat["step"][-1] == 4095
    assert flat["t"] == sorted(flat["t"])
    # Equal step ranges: each bucket's mean is near its middle (a block may count in the bucket next to it).
    assert all(abs(mean - (k + 0.5) * 1024) < 64 for k, mean in enumerate(ramp["v"]))
    assert ramp["lo"][0] == 0.0 and ramp["hi"][-1] == 4095.0
    # A window: its buckets cut its own range; one holding at most max_points points is read point by point.
    assert zoomed["total_points"] == 401 and len(zoomed["v"]) == 4 and zoomed["step"][-1] == 1400
    assert zoomed["lo"][0] == 1000.0 and zoomed["hi"][-1] == 1400.0
    assert few["step"] == [1000, 1001, 1002, 1003] and few["downsampled"] is False and len(reads) == 1


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        pytest.param({"runs": "no-such-run"}, 404, "run_id", id="unknown-run"),
        pytest.param({"runs": ","}, 422, "runs", id="no-run"),
        pytest.param({"runs": ",".join(f"r{i}" for i in range(51))}, 422, "runs", id="too-many"),
        pytest.param({"runs": "x", "x": "epoch"}, 422, "x", id="bad-axis"),
        pytest.param({"runs": "x", "x_min": "nan"}, 422, "x_min", id="nan-bound"),
        pytest.param({"runs": "x", "max_points": 1}, 422, "max_points", id="too-few-points"),
    ],
)
def test_compare_bad_parameters(logged: Logged, params: dict[str, Any], status: int, field: str) -> None:
    """Bad parameters answer 4xx naming the field."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.get("/api/compare", params=params)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


# -- tags and notes ------------------------------------------------------------------------------


def test_patch_sets_tags_and_note_behind_the_token(logged: Logged) -> None:
    """PATCH /api/runs/{id} needs the token, stores tags and note, and the runs list and summary show them."""
    path = f"/api/runs/{logged.other}"
    with logged.client() as anonymous:
        assert anonymous.patch(path, json={"note": "x"}).status_code == 401
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.patch(path, json={"tags": [" best ", "lr-sweep", "best"], "note": "keeps\nlines"})
        assert response.status_code == 200, response.text
        assert response.json()["tags"] == ["best", "lr-sweep"] and response.json()["note"] == "keeps\nlines"
        # Only the note: the tags stay.
        assert client.patch(path, json={"note": "second"}).json()["tags"] == ["best", "lr-sweep"]
        listed = client.get("/api/runs", params={"details": "true", "metrics": "loss"}).json()
        summary = client.get(path).json()
    row = next(run for run in listed["runs"] if run["run_id"] == logged.other)
    assert row["tags"] == ["best", "lr-sweep"] and row["note"] == "second"
    assert row["config"] == {"lr": 0.01}
    assert row["metrics"]["loss"] == {"last": pytest.approx(2 / 30), "min": pytest.approx(2 / 30), "max": 2.0}
    assert "acc" in listed["metric_names"] and "loss" in listed["metric_names"]
    assert summary["tags"] == ["best", "lr-sweep"] and summary["note"] == "second"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param({"tags": "best"}, 422, "tags", id="tags-not-a-list"),
        pytest.param({"tags": [""]}, 422, "tags", id="empty-tag"),
        pytest.param({"tags": ["x" * 65]}, 422, "tags", id="long-tag"),
        pytest.param({"tags": [f"t{i}" for i in range(51)]}, 422, "tags", id="too-many-tags"),
        pytest.param({"note": 3}, 422, "note", id="note-not-text"),
        pytest.param({"note": "x" * 10_001}, 422, "note", id="long-note"),
        pytest.param({"note": None}, 422, "note", id="null-note"),
        pytest.param({"color": "red"}, 422, "color", id="unknown-field"),
        pytest.param({}, 422, None, id="nothing"),
        pytest.param([], 422, None, id="not-an-object"),
    ],
)
def test_patch_refuses_bad_bodies_and_stores_nothing(logged: Logged, body: Any, status: int, field: str | None) -> None:
    """A bad body answers 422 naming the field, and the run's tags and note are unchanged."""
    path = f"/api/runs/{logged.plain}"
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        before = client.get(path).json()
        response = client.patch(path, json=body)
        after = client.get(path).json()
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field
    assert (after["tags"], after["note"]) == (before["tags"], before["note"])


def test_patch_unknown_run_is_404(logged: Logged) -> None:
    """Annotating a run that does not exist answers 404 naming run_id."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        response = client.patch("/api/runs/no-such-run", json={"note": "x"})
    assert response.status_code == 404 and response.json()["error"]["field"] == "run_id"


def test_tags_and_note_survive_export_and_import(tmp_path: Path, logged: Logged) -> None:
    """An exported run carries its tags and note; importing it elsewhere restores them."""
    with DatabaseManager(logged.db_path) as db:
        db.annotate_run(logged.rl, tags=["rl", "keep"], note="the good one")
    archive = export_run(str(logged.db_path), logged.rl, tmp_path / "out")
    target = tmp_path / "other.db"
    imported = import_run(str(target), archive, rename="copied")
    with DatabaseManager(target) as db:
        summary = db.get_run_summary(imported)
    assert summary["tags"] == ["rl", "keep"] and summary["note"] == "the good one"


def test_runs_list_details_count_alerts_and_leave_out_sessions(logged: Logged) -> None:
    """details=true adds alert counts; exclude_kind leaves out sessions and still fills the page."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        created = client.post("/api/sessions", json={"product": "app", "version": "1"})
        assert created.status_code == 200, created.text
        assert logged.monitor.flush(10)
        rows = client.get("/api/runs", params={"details": "true", "exclude_kind": "session", "limit": 3}).json()["runs"]
        every = client.get("/api/runs", params={"limit": 10}).json()["runs"]
    assert "session" in {run["kind"] for run in every}
    assert [run["run_id"] for run in rows] == [logged.rl, logged.other, logged.plain]
    assert rows[0]["alerts"] == {"firing": 1, "pending": 0}
    assert rows[1]["alerts"] == {"firing": 0, "pending": 0}


def test_runs_list_details_give_each_runs_latest_global_step(logged: Logged) -> None:
    """details=true gives each run its latest global step, an RL run's too (update_step's steps apart)."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        rows = client.get("/api/runs", params={"details": "true", "exclude_kind": "session"}).json()["runs"]
    by_id = {row["run_id"]: row for row in rows}
    assert by_id[logged.plain]["step"] == 99 and by_id[logged.plain]["total_steps"] == 0
    assert by_id[logged.other]["step"] == 29
    # 15 update_step calls and 3 update_episode calls, each a logging call of its own.
    assert by_id[logged.rl]["step"] == 17 and by_id[logged.rl]["total_steps"] == 15


def test_alert_history_filters_by_rule(logged: Logged) -> None:
    """GET /api/alerts/history?rule= keeps that rule's transitions only."""
    with logged.client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert [a["rule"] for a in client.get("/api/alerts/history", params={"rule": "slow"}).json()["alerts"]] == [
            "slow"
        ]
        assert client.get("/api/alerts/history", params={"rule": "other"}).json()["alerts"] == []


# -- the schema ----------------------------------------------------------------------------------


def test_annotations_migration_goes_forward_and_back(tmp_path: Path) -> None:
    """The version that adds run_annotations steps back without it; a store read there has no annotations."""
    db_path = tmp_path / "m.db"
    with DatabaseManager(db_path) as db:
        db.init_database()
    # The version before the one that adds the table (migrations are numbered in order).
    before = next(m.version for m in MIGRATIONS if any("run_annotations" in s for s in m.up)) - 1
    connection = sqlite3.connect(db_path)
    try:
        assert SCHEMA_VERSION > before
        migrate(connection, before)
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "run_annotations" not in tables
        connection.execute(
            "INSERT INTO runs (run_id, start_time, updated_at) VALUES ('old', 1, 1)",
        )
        connection.commit()
    finally:
        connection.close()
    with DatabaseManager(db_path) as db:
        assert db.get_run_summary("old")["tags"] == []
        with pytest.raises(Exception, match="migrate"):
            db.annotate_run("old", note="x")
        db.migrate_schema()
        assert db.annotate_run("old", note="now")["note"] == "now"


def test_frame_of_no_values_is_empty_with_the_columns(tmp_path: Path) -> None:
    """A run that logged nothing gives an empty frame with the documented columns and dtypes."""
    config = MonitorConfig(db_path=str(tmp_path / "m.db"), data_dir=str(tmp_path / "d"), web_port=0)
    with WebMonitor(config) as monitor:
        run = monitor.start_training()
        frame = monitor.get_runs_metrics([run])
    assert isinstance(frame, pd.DataFrame) and frame.empty
    assert list(frame.columns) == ["run_id", "step", "timestamp", "metric", "value"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


@pytest.fixture(scope="module")
def irregular(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A run whose x values are out of logging order: calls without a step, a step going back, times out of order."""
    from datetime import UTC, datetime

    from runwatch import Metric

    tmp = tmp_path_factory.mktemp("irregular")
    config = MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0)
    rng = np.random.default_rng(5)
    with WebMonitor(config) as monitor:
        run = monitor.start_training()
        now = time.time()
        for i in range(3):  # before any step: at step 0
            monitor.emit_event(Metric(run, now + i, {"a": float(i)}))
        for i in range(400):
            when = datetime.fromtimestamp(now + 5 + i + float(rng.uniform(-3, 3)), tz=UTC)
            step = None if i % 7 == 3 else (i if i < 250 else i - 150)  # resumed from an earlier step at 250
            if i % 11 == 5:
                monitor.emit_event(Metric(run, now + 5 + i, {"a": -1.0, "b": float(i)}))  # no step
            else:
                monitor.update_metrics({"a": float(i)} if i % 3 else {"a": float(i), "b": -float(i)}, when, step=step)
        monitor.stop_training()
        assert monitor.flush(10)
    yield tmp / "m.db", run


@pytest.mark.parametrize("x", ["step", "time", "relative"])
def test_a_windowed_read_is_the_full_read_cut_to_the_window(irregular: tuple[Path, str], x: str) -> None:
    """Reading an x window gives exactly the points of the full read inside it, on every axis, whatever the order."""
    from runwatch.store.queries.compare import runs_metric_series

    db_path, run = irregular
    connection = sqlite3.connect(db_path)
    try:
        full = runs_metric_series(connection, [run])[run]
        start = float(connection.execute("SELECT start_time FROM runs WHERE run_id = ?", (run,)).fetchone()[0])
        rng = np.random.default_rng(11)
        axis_of = {
            "step": lambda s: s["step"].astype(float),
            "time": lambda s: s["ts"],
            "relative": lambda s: s["ts"] - start,
        }[x]
        every = np.concatenate([axis_of(series) for series in full.values()])
        low_end, high_end = float(every.min()), float(every.max())
        windows = [(None, None), (low_end, None), (None, high_end), (high_end + 1, None), (None, low_end - 1)]
        for _ in range(40):
            a, b = sorted(rng.uniform(low_end - 5, high_end + 5, size=2).tolist())
            windows.append((a, b))
            windows.append((float(rng.choice(every)), float(rng.choice(every))))
        for x_min, x_max in windows:
            cut = runs_metric_series(connection, [run], x=x, x_min=x_min, x_max=x_max)[run]
            expected = {}
            for name, series in full.items():
                axis = axis_of(series)
                keep = np.ones(len(axis), dtype=bool)
                if x_min is not None:
                    keep &= axis >= x_min
                if x_max is not None:
                    keep &= axis <= x_max
                if keep.any():
                    expected[name] = {key: array[keep] for key, array in series.items()}
            assert sorted(cut) == sorted(expected), (x_min, x_max)
            for name, series in expected.items():
                for key in ("ts", "step", "value"):
                    assert np.array_equal(cut[name][key], series[key], equal_nan=True), (x_min, x_max, name, key)
    finally:
        connection.close()


def test_a_windowed_read_decodes_only_the_calls_of_its_window(logged: Logged) -> None:
    """A window at the end of a run reads from the first call inside it: the steps carried before it still count."""
    from runwatch.store.queries.compare import runs_metric_series

    connection = sqlite3.connect(logged.db_path)
    try:
        full = runs_metric_series(connection, [logged.plain])[logged.plain]["acc"]
        since = float(full["ts"][60])
        tail = runs_metric_series(connection, [logged.plain], ["acc"], x="time", x_min=since)[logged.plain]["acc"]
        after_the_end = runs_metric_series(connection, [logged.plain], x="step", x_min=float(full["step"][-1]) + 1)
        with pytest.raises(ValueError, match="x must be one of"):
            runs_metric_series(connection, [logged.plain], x="episode", x_min=1)
    finally:
        connection.close()
    first = int(np.searchsorted(full["ts"], since))
    assert list(tail["step"]) == list(full["step"][first:]) and tail["step"][0] == first
    assert np.array_equal(tail["value"], full["value"][first:])
    assert after_the_end == {logged.plain: {}}
