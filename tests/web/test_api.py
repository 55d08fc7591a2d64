"""Tests for the REST routes of runwatch.web: every route of docs/protocol.md against a real server on loopback."""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from runwatch.config import MonitorConfig
from runwatch.monitor import WebMonitor
from runwatch.pipeline.config import default_pipeline_config

JSON = {"content-type": "application/json"}
RUN_ROW_FIELDS = {
    "run_id",
    "kind",
    "status",
    "start_time",
    "end_time",
    "updated_at",
    "last_heartbeat",
    "total_steps",
    "total_episodes",
    "final_reward",
}
METRIC_STAT_FIELDS = {"last", "min", "max", "mean", "count", "nan_count", "last_step", "last_timestamp"}
EVENT_ROW_FIELDS = {"id", "timestamp", "kind", "event_type", "level", "event_data"}

LOSS_POINTS = 50
LOSS_NAN_AT = 20
SPIKY_POINTS = 3000
SPIKE_AT, DIP_AT = 1234, 2345
CHECKPOINTS = 25
EPISODES = 3
# run_started + checkpoints + episode_end events + run_completed
RUN_A_EVENTS = 1 + CHECKPOINTS + EPISODES + 1


@dataclass
class Logged:
    """A monitor with three runs logged: run-c (session, oldest), run-a (rich, completed), run-b (running)."""

    monitor: WebMonitor
    client: httpx.Client
    t0: float


def new_monitor(tmp: Path, **options: Any) -> WebMonitor:
    """A monitor with its web server on a free loopback port.

    Without alert rules: these runs log NaN and Inf on purpose, and the events
    they check are the ones they logged.
    """
    options.setdefault("pipeline", default_pipeline_config(snapshots=True))
    return WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, **options))


def fresh_get(monitor: WebMonitor, path: str, **kwargs: Any) -> httpx.Response:
    """GET on a new connection (a server error may close a pooled one).

    After a 5xx one more request is answered before returning: the server
    logs the error's traceback on its own thread right after the response,
    and with CPython 3.11.7 a traceback formatted there while pytest formats
    the failure here has raised "AST constructor recursion depth mismatch"
    (see python/cpython gh-106905), aborting the whole session.
    """
    with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
        response = client.get(path, **kwargs)
    if response.status_code >= 500:
        with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
            client.get("/api/health")
    return response


def ingest(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    """POST a batch and require it accepted."""
    response = client.post("/api/ingest", content=json.dumps(events), headers=JSON)
    assert response.status_code == 202, response.text


def iso_to_epoch(text: str) -> float:
    """Parse an ISO-8601 UTC timestamp of the protocol."""
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None and parsed.utcoffset().total_seconds() == 0, text
    return parsed.timestamp()


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """A server whose store holds a small, known set of runs."""
    monitor = new_monitor(tmp_path_factory.mktemp("api"))
    client = httpx.Client(base_url=monitor.web_url, timeout=10)
    try:
        t0 = float(int(time.time()) - 600)
        ingest(
            client,
            [
                {
                    "kind": "lifecycle",
                    "run_id": "run-c",
                    "timestamp": t0 - 1000,
                    "transition": "started",
                    "run_kind": "session",
                    "config": {},
                },
                {"kind": "lifecycle", "run_id": "run-c", "timestamp": t0 - 900, "transition": "completed"},
            ],
        )
        monitor.start_training({"lr": 0.01, "layers": [64, 64]}, run_id="run-a")
        for i in range(LOSS_POINTS):
            loss = math.nan if i == LOSS_NAN_AT else 1.0 / (i + 1)
            monitor.update_metrics({"loss": loss, "train/acc": i / LOSS_POINTS, "train/lr": 0.01}, timestamp=t0 + i)
        monitor.update_metrics({"grad_norm": math.inf}, timestamp=t0 + 30.5)
        monitor.update_metrics({"grad_norm": -math.inf}, timestamp=t0 + 31.5)
        for i in range(SPIKY_POINTS):
            value = 1e6 if i == SPIKE_AT else -1e6 if i == DIP_AT else math.sin(i / 10)
            monitor.update_metrics({"spiky": value}, timestamp=t0 + 100 + i * 0.01)
        for k in range(CHECKPOINTS):
            monitor.record_event("checkpoint", {"n": k}, level="warning" if k % 5 == 0 else "info")
        for episode in range(EPISODES):
            monitor.update_episode(episode, total_reward=episode * 1.5, steps=10, success=episode % 2 == 0)
        monitor.update_game_state({"score": 7, "level": 2}, frame_number=11)
        monitor.stop_training(final_reward=9.5)
        monitor.start_training({"lr": 0.5}, run_id="run-b")
        monitor.update_metrics({"loss": 0.5, "nan_metric": math.nan, "inf_metric": math.inf})
        monitor.update_game_state({"score": 1})
        monitor.record_event("hello", {"x": 1})
        assert monitor.flush()
        yield Logged(monitor, client, t0)
    finally:
        client.close()
        monitor.close()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server over an empty store."""
    monitor = new_monitor(tmp_path_factory.mktemp("empty"))
    try:
        with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
            yield client
    finally:
        monitor.close()


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebMonitor]:
    """A server whose store holds 60 completed session runs (none running)."""
    monitor = new_monitor(tmp_path_factory.mktemp("many"))
    try:
        base = float(int(time.time()) - 10_000)
        events = []
        for n in range(60):
            run_id = f"s{n:02d}"
            events.append(
                {
                    "kind": "lifecycle",
                    "run_id": run_id,
                    "timestamp": base + n,
                    "transition": "started",
                    "run_kind": "session",
                    "config": {},
                }
            )
            events.append(
                {"kind": "lifecycle", "run_id": run_id, "timestamp": base + n + 0.5, "transition": "completed"}
            )
        with httpx.Client(base_url=monitor.web_url, timeout=10) as client:
            ingest(client, events)
        yield monitor
    finally:
        monitor.close()


# -- /api/runs ----------------------------------------------------------------------------


def test_list_runs_is_newest_first_with_run_rows(logged: Logged) -> None:
    """GET /api/runs lists every run newest first, each a RunRow with ISO times."""
    response = logged.client.get("/api/runs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    runs = response.json()["runs"]
    assert [run["run_id"] for run in runs] == ["run-b", "run-a", "run-c"]
    for run in runs:
        assert set(run) == RUN_ROW_FIELDS
        iso_to_epoch(run["start_time"])
    by_id = {run["run_id"]: run for run in runs}
    assert by_id["run-a"]["status"] == "completed"
    assert by_id["run-a"]["kind"] == "training"
    assert by_id["run-a"]["final_reward"] == 9.5
    assert by_id["run-a"]["total_episodes"] == EPISODES
    assert by_id["run-b"]["status"] == "running" and by_id["run-b"]["end_time"] is None
    assert by_id["run-c"]["kind"] == "session"
    assert iso_to_epoch(by_id["run-c"]["start_time"]) == pytest.approx(logged.t0 - 1000)
    assert iso_to_epoch(by_id["run-c"]["end_time"]) == pytest.approx(logged.t0 - 900)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("status=completed", ["run-a", "run-c"], id="status-completed"),
        pytest.param("status=running", ["run-b"], id="status-running"),
        pytest.param("status=failed", [], id="status-none"),
        pytest.param("kind=session", ["run-c"], id="kind-session"),
        pytest.param("kind=training", ["run-b", "run-a"], id="kind-training"),
        pytest.param("kind=training&status=completed", ["run-a"], id="kind-and-status"),
        pytest.param("limit=1", ["run-b"], id="limit-1"),
        pytest.param("limit=2", ["run-b", "run-a"], id="limit-2"),
    ],
)
def test_list_runs_filters(logged: Logged, query: str, expected: list[str]) -> None:
    """status, kind and limit narrow the run list (and keep newest first)."""
    response = logged.client.get(f"/api/runs?{query}")
    assert response.status_code == 200
    assert [run["run_id"] for run in response.json()["runs"]] == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        pytest.param("limit=0", "limit", id="limit-0"),
        pytest.param("limit=-3", "limit", id="limit-negative"),
        pytest.param("limit=abc", "limit", id="limit-not-int"),
        pytest.param("limit=10001", "limit", id="limit-too-big"),
        pytest.param("status=bogus", None, id="status-unknown"),
    ],
)
def test_list_runs_bad_parameters_are_422(logged: Logged, query: str, field: str | None) -> None:
    """Out-of-range or unknown filters answer 422 with the protocol's error body."""
    response = logged.client.get(f"/api/runs?{query}")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["status"] == 422
    assert isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert error["field"] == field


def test_list_runs_accepts_every_documented_status(logged: Logged) -> None:
    """Every status docs/protocol.md lists (including "hung") is a valid filter."""
    for status in ("running", "paused", "completed", "failed", "crashed", "hung"):
        response = fresh_get(logged.monitor, f"/api/runs?status={status}")
        assert response.status_code == 200, (status, response.text)


def test_list_runs_default_limit_is_50(many_runs: WebMonitor) -> None:
    """Without limit, /api/runs returns the 50 newest runs, as docs/protocol.md says."""
    runs = fresh_get(many_runs, "/api/runs").json()["runs"]
    assert [run["run_id"] for run in runs[:2]] == ["s59", "s58"]
    assert len(runs) == 50


# -- /api/runs/{run_id} ---------------------------------------------------------------------


def test_run_summary_fields_and_values(logged: Logged) -> None:
    """A run's summary has RunRow fields, config, state, event counts and per-metric statistics."""
    response = logged.client.get("/api/runs/run-a")
    assert response.status_code == 200
    summary = response.json()
    assert RUN_ROW_FIELDS | {"config", "metadata", "duration_seconds", "state", "event_counts", "metrics"} <= set(
        summary
    )
    assert summary["run_id"] == "run-a"
    assert summary["config"] == {"lr": 0.01, "layers": [64, 64]}
    assert summary["status"] == "completed"
    assert summary["duration_seconds"] >= 0
    assert summary["state"]["game_state"] == {"score": 7, "level": 2}
    assert summary["state"]["frame_number"] == 11
    assert summary["event_counts"] == {
        "checkpoint": CHECKPOINTS,
        "episode_end": EPISODES,
        "run_completed": 1,
        "run_started": 1,
    }
    metrics = summary["metrics"]
    assert {"loss", "train/acc", "train/lr", "grad_norm", "spiky", "episode/total_reward"} <= set(metrics)
    for stats in metrics.values():
        assert set(stats) == METRIC_STAT_FIELDS
    loss = metrics["loss"]
    assert loss["count"] == LOSS_POINTS
    assert loss["nan_count"] == 1
    assert loss["min"] == pytest.approx(1.0 / LOSS_POINTS)
    assert loss["max"] == 1.0
    assert loss["last"] == pytest.approx(1.0 / LOSS_POINTS)
    assert iso_to_epoch(loss["last_timestamp"]) == pytest.approx(logged.t0 + LOSS_POINTS - 1)
    grad = metrics["grad_norm"]
    assert grad["max"] == "Infinity" and grad["min"] == "-Infinity" and grad["last"] == "-Infinity"
    assert grad["mean"] is None or grad["mean"] in ("Infinity", "-Infinity")  # NaN (inf - inf) is null


def test_run_summary_nan_last_is_null(logged: Logged) -> None:
    """A metric whose last value was NaN reports last as null and ±Inf as strings."""
    metrics = logged.client.get("/api/runs/run-b").json()["metrics"]
    assert metrics["nan_metric"]["last"] is None
    assert metrics["nan_metric"]["nan_count"] == 1
    assert metrics["inf_metric"]["last"] == "Infinity"


@pytest.mark.parametrize(
    "suffix",
    [
        pytest.param("", id="summary"),
        pytest.param("/metrics", id="metrics"),
        pytest.param("/metrics/names", id="metric-names"),
        pytest.param("/events", id="events"),
        pytest.param("/state", id="state"),
        pytest.param("/export", id="export"),
    ],
)
def test_unknown_run_is_404_naming_run_id(logged: Logged, suffix: str) -> None:
    """Every per-run route answers an unknown run id with a 404 JSON error whose field is run_id."""
    response = logged.client.get(f"/api/runs/no-such-run{suffix}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": {"status": 404, "message": "unknown run id 'no-such-run'", "field": "run_id"}}


def test_unknown_route_is_json_404(logged: Logged) -> None:
    """A path no route serves is a JSON 404 error body."""
    response = logged.client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


# -- metrics ----------------------------------------------------------------------------------


def test_metric_names_are_sorted(logged: Logged) -> None:
    """/metrics/names lists the run's metric names, sorted."""
    response = logged.client.get("/api/runs/run-a/metrics/names")
    assert response.status_code == 200
    names = response.json()["names"]
    assert names == sorted(names)
    assert {"loss", "train/acc", "train/lr", "grad_norm", "spiky"} <= set(names)
    assert "nan_metric" not in names  # that is run-b's


def test_metrics_without_names_returns_every_series(logged: Logged) -> None:
    """Without names every metric of the run comes back, each with t/step/v columns of equal length."""
    body = logged.client.get("/api/runs/run-a/metrics").json()
    assert body["run_id"] == "run-a"
    names = logged.client.get("/api/runs/run-a/metrics/names").json()["names"]
    assert sorted(body["series"]) == names
    for series in body["series"].values():
        assert set(series) == {"t", "step", "v", "total_points", "downsampled"}
        assert len(series["t"]) == len(series["step"]) == len(series["v"])


def test_metric_series_values_and_non_finite_encoding(logged: Logged) -> None:
    """A series holds every logged point in time order; NaN is null and ±Inf are strings."""
    series = logged.client.get("/api/runs/run-a/metrics?names=loss,grad_norm").json()["series"]
    loss = series["loss"]
    assert loss["total_points"] == LOSS_POINTS and loss["downsampled"] is False
    assert loss["t"] == [logged.t0 + i for i in range(LOSS_POINTS)]
    expected = [None if i == LOSS_NAN_AT else pytest.approx(1.0 / (i + 1)) for i in range(LOSS_POINTS)]
    assert loss["v"] == expected
    assert series["grad_norm"]["v"] == ["Infinity", "-Infinity"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param("loss", {"loss"}, id="exact"),
        pytest.param("train/*", {"train/acc", "train/lr"}, id="glob"),
        pytest.param("loss,train/a*", {"loss", "train/acc"}, id="mixed"),
        pytest.param("*_norm", {"grad_norm"}, id="suffix-glob"),
        pytest.param("nope", set(), id="no-match"),
    ],
)
def test_metrics_names_filter_with_globs(logged: Logged, names: str, expected: set[str]) -> None:
    """names= selects series by exact name or glob."""
    response = logged.client.get("/api/runs/run-a/metrics", params={"names": names})
    assert response.status_code == 200
    assert set(response.json()["series"]) == expected


def iso(seconds: float) -> str:
    """An ISO-8601 UTC string for epoch seconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("epoch", id="epoch"),
        pytest.param("iso", id="iso"),
        pytest.param("iso-naive", id="iso-naive-is-utc"),
    ],
)
def test_metrics_since_until_bound_the_range(logged: Logged, form: str) -> None:
    """since/until (epoch seconds or ISO-8601) keep the points inside the closed range."""
    start, end = logged.t0 + 10, logged.t0 + 19

    def render(seconds: float) -> str:
        if form == "epoch":
            return repr(seconds)
        text = iso(seconds)
        return text.replace("+00:00", "") if form == "iso-naive" else text

    response = logged.client.get(
        "/api/runs/run-a/metrics", params={"names": "loss", "since": render(start), "until": render(end)}
    )
    assert response.status_code == 200
    loss = response.json()["series"]["loss"]
    assert loss["t"] == [logged.t0 + i for i in range(10, 20)]
    assert loss["total_points"] == 10


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("since=yesterday", id="since-garbage"),
        pytest.param("until=2026-13-45", id="until-bad-iso"),
        pytest.param("since=nan", id="since-nan"),
        pytest.param("since=inf", id="since-inf"),
        pytest.param("max_points=1", id="max-points-1"),
        pytest.param("max_points=100001", id="max-points-huge"),
    ],
)
def test_metrics_bad_parameters_are_422(logged: Logged, query: str) -> None:
    """Unparseable times and out-of-range max_points answer 422."""
    response = logged.client.get(f"/api/runs/run-a/metrics?names=loss&{query}")
    assert response.status_code == 422
    assert response.json()["error"]["status"] == 422


def test_metrics_max_points_downsamples_and_keeps_spikes(logged: Logged) -> None:
    """max_points reduces a long series but keeps a one-sample spike and dip, in time order."""
    response = logged.client.get("/api/runs/run-a/metrics", params={"names": "spiky", "max_points": 100})
    spiky = response.json()["series"]["spiky"]
    assert spiky["total_points"] == SPIKY_POINTS
    assert spiky["downsampled"] is True
    assert 2 <= len(spiky["v"]) <= 100
    assert 1e6 in spiky["v"] and -1e6 in spiky["v"]
    assert spiky["t"] == sorted(spiky["t"])
    spike_time = logged.t0 + 100 + SPIKE_AT * 0.01
    assert spiky["t"][spiky["v"].index(1e6)] == pytest.approx(spike_time)
    again = logged.client.get("/api/runs/run-a/metrics", params={"names": "spiky", "max_points": 100}).json()
    assert again["series"]["spiky"] == spiky  # deterministic


# -- events -------------------------------------------------------------------------------------


def test_run_events_are_newest_first_event_rows(logged: Logged) -> None:
    """/events returns EventRows newest first with ISO timestamps and parsed event_data."""
    body = logged.client.get("/api/runs/run-a/events").json()
    events = body["events"]
    assert body["next_cursor"] is None
    assert len(events) == RUN_A_EVENTS
    for event in events:
        assert set(event) == EVENT_ROW_FIELDS
        iso_to_epoch(event["timestamp"])
        assert event["kind"] in ("log", "lifecycle", "exception", "alert")
        assert event["level"] in ("debug", "info", "warning", "error", "critical")
    assert events[0]["event_type"] == "run_completed"
    assert events[-1]["event_type"] == "run_started"
    assert events[-1]["event_data"]["config"] == {"lr": 0.01, "layers": [64, 64]}
    ids = [event["id"] for event in events]
    assert ids == sorted(ids, reverse=True)
    checkpoints = [e["event_data"]["n"] for e in events if e["event_type"] == "checkpoint"]
    assert checkpoints == list(reversed(range(CHECKPOINTS)))


@pytest.mark.parametrize("limit", [pytest.param(1, id="1"), pytest.param(7, id="7"), pytest.param(30, id="exact")])
def test_run_events_paging_covers_every_event_once(logged: Logged, limit: int) -> None:
    """Following next_cursor with a limit visits every event exactly once, newest first."""
    everything = [e["id"] for e in logged.client.get("/api/runs/run-a/events?limit=1000").json()["events"]]
    seen: list[int] = []
    cursor = None
    for _ in range(RUN_A_EVENTS + 2):  # bounded: one page per event at most
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        body = logged.client.get("/api/runs/run-a/events", params=params).json()
        assert len(body["events"]) <= limit
        seen.extend(e["id"] for e in body["events"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert cursor is None, "paging did not end"
    assert seen == everything
    assert len(set(seen)) == RUN_A_EVENTS


@pytest.mark.parametrize(
    ("query", "count"),
    [
        pytest.param("type=checkpoint", CHECKPOINTS, id="type"),
        pytest.param("type=episode_end", EPISODES, id="type-episode"),
        pytest.param("level=warning", 5, id="level"),
        pytest.param("kind=lifecycle", 2, id="kind"),
        pytest.param("kind=log&level=info", CHECKPOINTS - 5 + EPISODES, id="kind-and-level"),
        pytest.param("kind=exception", 0, id="kind-none"),
    ],
)
def test_run_events_filters(logged: Logged, query: str, count: int) -> None:
    """type, level and kind narrow a run's events."""
    response = logged.client.get(f"/api/runs/run-a/events?{query}&limit=1000")
    assert response.status_code == 200
    events = response.json()["events"]
    assert len(events) == count
    for key, value in (part.split("=") for part in query.split("&")):
        column = "event_type" if key == "type" else key
        assert all(event[column] == value for event in events)


@pytest.mark.parametrize("form", [pytest.param("epoch", id="epoch"), pytest.param("iso", id="iso")])
def test_run_events_since_filters_by_time(logged: Logged, form: str) -> None:
    """since (epoch or ISO) drops events older than the given time."""
    since = logged.t0 - 950  # between run-c's start (t0 - 1000) and its end (t0 - 900)
    value = repr(since) if form == "epoch" else iso(since)
    events = logged.client.get("/api/runs/run-c/events", params={"since": value}).json()["events"]
    assert [e["event_type"] for e in events] == ["run_completed"]
    everything = logged.client.get("/api/runs/run-c/events").json()["events"]
    assert [e["event_type"] for e in everything] == ["run_completed", "run_started"]


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("abc", id="letters"),
        pytest.param("-1", id="negative"),
        pytest.param("1.5", id="float"),
        pytest.param("²", id="unicode-digit"),
        pytest.param("99999999999999999999", id="beyond-int64"),
    ],
)
def test_run_events_bad_cursor_is_422(logged: Logged, cursor: str) -> None:
    """A cursor this server could not have returned answers 422 naming cursor (never 5xx)."""
    response = fresh_get(logged.monitor, "/api/runs/run-a/events", params={"cursor": cursor})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "cursor"


def test_run_events_limit_zero_is_422(logged: Logged) -> None:
    """limit must be at least 1."""
    response = logged.client.get("/api/runs/run-a/events?limit=0")
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "limit"


# -- state and export ---------------------------------------------------------------------------


def test_run_state(logged: Logged) -> None:
    """/state returns the run's merged state."""
    body = logged.client.get("/api/runs/run-a/state").json()
    assert body["run_id"] == "run-a"
    assert body["state"] == {"game_state": {"score": 7, "level": 2}, "frame_number": 11}


def test_export_is_a_zip_of_the_run(logged: Logged) -> None:
    """/export downloads a zip holding run.json, the metrics and the events."""
    response = logged.client.get("/api/runs/run-a/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    assert "run-a" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = set(archive.namelist())
        assert {"run.json", "events.jsonl", "state_history.jsonl"} <= names
        assert names & {"metrics.csv", "metrics.parquet"}
        run = json.loads(archive.read("run.json"))
        assert run["run_id"] == "run-a"
        assert len(archive.read("events.jsonl").splitlines()) == RUN_A_EVENTS


def test_export_leaves_no_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving an export (found or not) leaves nothing behind in the temporary directory once the server stops."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monitor = new_monitor(tmp_path)
    try:
        monitor.start_training(run_id="tiny")
        monitor.update_metrics({"loss": 1.0})
        assert monitor.flush()
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        assert fresh_get(monitor, "/api/runs/tiny/export").status_code == 200
        assert fresh_get(monitor, "/api/runs/no-such-run/export").status_code == 404
    finally:
        monitor.close()  # the server finishes every response (and its clean-up) before it stops
    assert sorted(str(path.relative_to(scratch)) for path in scratch.rglob("*")) == []


# -- current-run shortcuts -------------------------------------------------------------------------


def test_status_is_the_running_runs_summary(logged: Logged) -> None:
    """/api/status is the summary of the newest running run."""
    body = logged.client.get("/api/status").json()
    assert body["run_id"] == "run-b"
    assert body["status"] == "running"
    assert body["config"] == {"lr": 0.5}
    assert {"metrics", "event_counts", "state", "duration_seconds"} <= set(body)


def test_stats_are_latest_values(logged: Logged) -> None:
    """/api/stats maps each metric of the current run to its latest value (NaN null, Inf string)."""
    assert logged.client.get("/api/stats").json() == {
        "run_id": "run-b",
        "metrics": {"loss": 0.5, "nan_metric": None, "inf_metric": "Infinity"},
    }


def test_state_shortcut_has_game_state(logged: Logged) -> None:
    """/api/state is the current run's state with the game state under game_state."""
    body = logged.client.get("/api/state").json()
    assert body["run_id"] == "run-b"
    assert body["state"]["game_state"] == {"score": 1}


def test_metric_history_of_current_run(logged: Logged) -> None:
    """/api/metrics/history returns the metric's recent points and statistics."""
    body = logged.client.get("/api/metrics/history", params={"metric": "loss", "minutes": 10}).json()
    assert body["metric"] == "loss"
    assert len(body["data"]) == 1
    point = body["data"][0]
    assert set(point) == {"timestamp", "step", "value"}
    assert point["value"] == 0.5
    assert time.time() - iso_to_epoch(point["timestamp"]) < 600
    assert body["statistics"] == {"mean": 0.5, "min": 0.5, "max": 0.5, "last": 0.5, "count": 1}


def test_metric_history_non_finite_values(logged: Logged) -> None:
    """History encodes a NaN value as null and has no finite statistics for it."""
    body = logged.client.get("/api/metrics/history", params={"metric": "nan_metric"}).json()
    assert [p["value"] for p in body["data"]] == [None]
    assert body["statistics"]["count"] == 1
    assert body["statistics"]["last"] is None and body["statistics"]["mean"] is None
    inf = logged.client.get("/api/metrics/history", params={"metric": "inf_metric"}).json()
    assert [p["value"] for p in inf["data"]] == ["Infinity"]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("", id="metric-missing"),
        pytest.param("metric=loss&minutes=0", id="minutes-zero"),
        pytest.param("metric=loss&minutes=-1", id="minutes-negative"),
        pytest.param("metric=", id="metric-empty"),
    ],
)
def test_metric_history_bad_parameters_are_422(logged: Logged, query: str) -> None:
    """metric is required and minutes must be positive."""
    assert logged.client.get(f"/api/metrics/history?{query}").status_code == 422


def test_metric_summary_of_current_run(logged: Logged) -> None:
    """/api/metrics/summary gives mean/min/max/last/count per metric of the current run."""
    body = logged.client.get("/api/metrics/summary").json()
    assert set(body) == {"loss", "nan_metric", "inf_metric"}
    assert body["loss"] == {"mean": 0.5, "min": 0.5, "max": 0.5, "last": 0.5, "count": 1}
    assert body["nan_metric"]["last"] is None
    assert body["inf_metric"]["max"] == "Infinity"


def test_events_shortcut_of_current_run(logged: Logged) -> None:
    """/api/events lists the current run's events newest first, filtered by type and limited."""
    body = logged.client.get("/api/events").json()
    assert [e["event_type"] for e in body["events"]] == ["hello", "run_started"]
    assert all(set(e) == EVENT_ROW_FIELDS for e in body["events"])
    assert [e["event_type"] for e in logged.client.get("/api/events?type=hello").json()["events"]] == ["hello"]
    assert len(logged.client.get("/api/events?limit=1").json()["events"]) == 1
    assert logged.client.get("/api/events?limit=0").status_code == 422


def test_current_run_falls_back_to_newest_run(many_runs: WebMonitor) -> None:
    """With no running run, the shortcuts use the newest run."""
    body = fresh_get(many_runs, "/api/status").json()
    assert body["run_id"] == "s59"
    assert body["status"] == "completed"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/api/status", {"status": "idle"}, id="status"),
        pytest.param("/api/stats", {"metrics": {}}, id="stats"),
        pytest.param("/api/state", {"state": {}}, id="state"),
        pytest.param("/api/metrics/history?metric=loss", {"data": []}, id="history"),
        pytest.param("/api/events", {"events": []}, id="events"),
        pytest.param("/api/runs", {"runs": []}, id="runs"),
    ],
)
def test_shortcuts_on_an_empty_store_are_idle(empty: httpx.Client, path: str, expected: dict[str, Any]) -> None:
    """With no runs at all every shortcut answers 200 with an empty or idle body."""
    response = empty.get(path)
    assert response.status_code == 200
    body = response.json()
    for key, value in expected.items():
        assert body[key] == value


def test_metric_summary_on_an_empty_store_is_empty(empty: httpx.Client) -> None:
    """/api/metrics/summary with no runs is an empty object."""
    response = empty.get("/api/metrics/summary")
    assert response.status_code == 200
    assert response.json() == {}


# -- operations ----------------------------------------------------------------------------------------


def test_pipeline_view_shape(logged: Logged) -> None:
    """/api/pipeline reports running, health and per-component counters, buffers and rates."""
    logged.client.get("/api/pipeline")
    body = logged.client.get("/api/pipeline").json()
    assert body["running"] is True
    assert body["health"] == "ok"
    assert isinstance(body["started_at"], float)
    components = body["components"]
    assert {"app", "ingest", "store", "live"} <= set(components)
    for component in components.values():
        assert component["role"] in ("source", "stage", "sink")
        assert isinstance(component["type"], str)
        assert isinstance(component["processed_events"], int)
        assert isinstance(component["dropped_events"], dict)
        assert isinstance(component["errors"], int)
        rate = component["events_per_second"]
        assert isinstance(rate, float) and rate >= 0  # second call: a rate is known
    for sink in ("store", "live"):
        buffer = components[sink]["buffer"]
        assert {"buffered_events", "max_events"} <= set(buffer)
        assert 0 <= buffer["buffered_events"] <= buffer["max_events"]
    assert components["store"]["processed_events"] > SPIKY_POINTS
    assert "last_flush_seconds" in components["store"]


def test_health_shape(logged: Logged) -> None:
    """/api/health says ok and describes the store."""
    body = logged.client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["store"]["health"] == "ok"
    assert body["store"]["last_commit_error"] is None
    assert body["store"]["pending_events"] == 0


PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
PROM_SAMPLE = re.compile(rf"^({PROM_NAME})(?:\{{(?:{PROM_LABEL}(?:,{PROM_LABEL})*)?\}})? (\S+)$")
PROM_LABELS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def test_prometheus_metrics_text(logged: Logged) -> None:
    """/metrics is Prometheus text: typed families, then `name{labels} value` samples that parse."""
    response = logged.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=0.0.4" in response.headers["content-type"]
    assert response.text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in response.text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[1] in ("HELP", "TYPE"), line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge"), line
                types[parts[2]] = parts[3]
            continue
        match = PROM_SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, value = match.group(1), float(match.group(2))
        assert name in types, f"sample before its TYPE: {line!r}"
        samples.setdefault(name, []).append((dict(PROM_LABELS.findall(line)), value))
    assert samples["runwatch_up"] == [({}, 1.0)]
    processed = {labels["component_id"]: value for labels, value in samples["runwatch_component_events_total"]}
    assert {"app", "ingest", "store", "live"} <= set(processed)
    assert processed["store"] > SPIKY_POINTS
    buffers = {labels["component_id"]: value for labels, value in samples["runwatch_buffer_max_events"]}
    assert {"app", "store", "live"} <= set(buffers) and all(value > 0 for value in buffers.values())
    byte_bounds = {labels["component_id"]: value for labels, value in samples["runwatch_buffer_max_bytes"]}
    assert set(byte_bounds) == set(buffers) and all(value >= 64 << 10 for value in byte_bounds.values())
    assert all(0 <= value <= byte_bounds[labels["component_id"]] for labels, value in samples["runwatch_buffer_bytes"])


def test_openapi_lists_the_routes(logged: Logged) -> None:
    """/openapi.json documents every REST route, including POST /api/ingest."""
    paths = logged.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/metrics",
        "/api/runs/{run_id}/metrics/names",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/state",
        "/api/runs/{run_id}/export",
        "/api/status",
        "/api/stats",
        "/api/state",
        "/api/metrics/history",
        "/api/metrics/summary",
        "/api/events",
        "/api/pipeline",
        "/api/health",
        "/metrics",
    ):
        assert "get" in paths[path], path
    ingest_route = paths["/api/ingest"]["post"]
    assert "application/json" in ingest_route["requestBody"]["content"]
    assert {"202", "400", "413", "415", "422"} <= set(ingest_route["responses"])
