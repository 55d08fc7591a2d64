"""The Store interface, exercised the same way on every backend (see conftest.BACKENDS).

Everything goes in through the store's one write path (``open_writer``) and
comes back through its reads; nothing here knows which backend it runs on.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runwatch.events import (
    AlertEvent,
    Heartbeat,
    HistogramEvent,
    ImageEvent,
    IngestReceipt,
    LogEvent,
    Metric,
    RunLifecycle,
    RunTransition,
    StatePatch,
)
from runwatch.exceptions import StoreError, StoreUnavailable, UnknownRunError
from runwatch.media.histograms import bin_values, take_values
from runwatch.media.images import encode_image, take_image
from runwatch.session_events import SESSION_KIND, encode_session_tags
from runwatch.store.base import Store
from runwatch.store.schema import SCHEMA_VERSION

from .conftest import write, write_counting

T0 = 1_700_000_000.0


def started(run_id: str, at: float = T0, **fields: object) -> RunLifecycle:
    return RunLifecycle(run_id, at, RunTransition.STARTED, **fields)  # type: ignore[arg-type]


def calls(run_id: str, count: int, *, at: float = T0) -> list[Metric]:
    """``count`` logging calls of loss and accuracy, one per step."""
    return [Metric(run_id, at + i, {"loss": 1.0 / (i + 1), "accuracy": i / count}, i) for i in range(count)]


# -- the store itself ----------------------------------------------------------------------------


def test_a_new_store_does_not_exist_and_its_reads_say_so(store: Store) -> None:
    """Before anything creates it, the store does not exist: reads fail with StoreError, lookups find nothing."""
    assert not store.exists()
    with pytest.raises(StoreError):
        store.list_runs()
    assert store.run_statuses(["a"]) == {}
    assert store.stored_batch_digest("a", "b") is None
    assert store.latest_snapshots(["a"]) == {}
    assert store.run_activity(None) == []


def test_prepare_creates_the_newest_schema_and_migrations_step_down_and_up(store: Store) -> None:
    """prepare() creates the store at the newest version; migrate() walks the versions both ways."""
    store.prepare()
    assert store.exists() and store.schema_version() == SCHEMA_VERSION
    assert store.migrate(1) == list(range(SCHEMA_VERSION - 1, 0, -1))
    assert store.schema_version() == 1
    assert store.migrate() == list(range(2, SCHEMA_VERSION + 1))
    assert store.list_runs() == []


# -- writing and reading runs ---------------------------------------------------------------------


async def test_a_written_run_reads_back_with_its_summary_state_and_events(store: Store) -> None:
    """One batch of every kind: the run, its per-metric statistics, merged state and events come back."""
    batch = [
        started("r1", config={"lr": 0.1}),
        *calls("r1", 10),
        StatePatch("r1", T0 + 1, {"game": {"level": 1, "score": 5}}),
        StatePatch("r1", T0 + 2, {"game": {"score": 9}}),
        LogEvent("r1", T0 + 3, "checkpoint", "info", {"path": "a.pt"}),
        Heartbeat("r1", T0 + 4, {"total_steps": 10, "total_episodes": 2}),
    ]
    await write(store, batch)

    (run,) = store.list_runs()
    assert (run["run_id"], run["kind"], run["status"], run["total_steps"]) == ("r1", "training", "running", 10)
    summary = store.run_summary("r1")
    assert summary["config"] == {"lr": 0.1}
    loss = summary["metrics"]["loss"]
    assert (loss["count"], loss["last"], loss["min"], loss["max"]) == (10, 0.1, 0.1, 1.0)
    assert loss["last_step"] == 9
    assert store.run_state("r1") == {"game": {"level": 1, "score": 9}}
    assert [entry["patch"] for entry in store.state_history("r1")] == [
        {"game": {"level": 1, "score": 5}},
        {"game": {"score": 9}},
    ]
    events = store.run_events("r1", "checkpoint")
    assert [(event["event_type"], event["event_data"]) for event in events] == [("checkpoint", {"path": "a.pt"})]
    with pytest.raises(UnknownRunError):
        store.run_summary("nope")


async def test_lifecycle_transitions_set_the_status_and_statuses_read_back(store: Store) -> None:
    """Completed and failed runs report their status; run_statuses and has_run answer per run."""
    await write(
        store,
        [started("done"), started("broken"), started("live")],
        [
            RunLifecycle("done", T0 + 5, RunTransition.COMPLETED, final_reward=3.5),
            RunLifecycle("broken", T0 + 6, RunTransition.FAILED),
        ],
    )
    assert store.run_statuses(["done", "broken", "live", "other"]) == {
        "done": "completed",
        "broken": "failed",
        "live": "running",
    }
    assert store.run_summary("done")["final_reward"] == 3.5
    assert store.has_run("live") and not store.has_run("other")
    assert [run["run_id"] for run in store.list_runs(status="completed")] == ["done"]
    assert [activity.run_id for activity in store.run_activity(None)] == ["live"]


async def test_events_page_newest_first(store: Store) -> None:
    """run_events pages backwards with before_id and a limit, newest first."""
    await write(store, [started("r"), *[LogEvent("r", T0 + i, "tick", "info", {"i": i}) for i in range(5)]])
    first = store.run_events("r", "tick", limit=2, newest_first=True)
    assert [event["event_data"]["i"] for event in first] == [4, 3]
    rest = store.run_events("r", "tick", limit=10, before_id=first[-1]["id"], newest_first=True)
    assert [event["event_data"]["i"] for event in rest] == [2, 1, 0]


# -- metrics ------------------------------------------------------------------------------------


async def test_metrics_read_back_per_call_and_per_step_keeping_nan_and_infinities(store: Store) -> None:
    """Calls come back as logged (NaN and ±Inf kept); a step's calls merge into one row."""
    await write(
        store,
        [
            started("r"),
            Metric("r", T0, {"loss": math.nan}, 0),
            Metric("r", T0 + 1, {"loss": math.inf, "reward": -math.inf}, 1),
            Metric("r", T0 + 2, {"reward": 2.0}, 1),
        ],
    )
    per_call = store.run_metrics("r", align="call")
    assert len(per_call) == 3
    assert math.isnan(per_call["loss"].iloc[0]) and per_call["loss"].iloc[1] == math.inf
    per_step = store.run_metrics("r", align="step")
    assert per_step["step"].tolist() == [0, 1]
    assert per_step["loss"].iloc[1] == math.inf and per_step["reward"].iloc[1] == 2.0
    series = store.read_series("r", ["reward"])["reward"].points
    assert series.values.tolist() == [-math.inf, 2.0]
    later = store.read_series("r", ["reward"], start=int(series.seq[0]) + 1)["reward"].points
    assert later.values.tolist() == [2.0]


async def test_a_chart_buckets_min_and_max_on_a_shared_step_range(store: Store) -> None:
    """Two runs on one step range: each bucket counts its points and keeps their extremes."""
    await write(store, [started("a"), started("b"), *calls("a", 100), *calls("b", 50)])
    charts = store.chart(["a", "b"], ["loss"], x="step", buckets=10)
    a, b = charts[("a", "loss")], charts[("b", "loss")]
    assert a.edges[0] == 0 and a.edges[-1] == 99
    assert int(a.count.sum()) == 100 and int(b.count.sum()) == 50
    assert a.max[0] == 1.0 and a.min[-1] == pytest.approx(1 / 100)
    assert np.isnan(b.min[-1])  # b stops at step 49: its last buckets are empty
    with pytest.raises(UnknownRunError):
        store.chart(["missing"], ["loss"])


async def test_several_runs_read_at_once_on_their_global_steps_and_in_a_window(store: Store) -> None:
    """runs_metrics gives each run's arrays (a call without a step at the one before it); a window cuts them."""
    await write(
        store,
        [
            started("a", at=T0),
            started("b", at=T0 + 100),
            *calls("a", 20),
            Metric("a", T0 + 30, {"loss": 0.01}),  # stored without a step: at step 19
            *calls("b", 5, at=T0 + 100),
        ],
    )
    found = store.runs_metrics(["b", "a"], ["loss"])
    assert list(found) == ["b", "a"]
    assert found["a"]["loss"]["step"].tolist() == [*range(20), 19]
    assert found["a"]["loss"]["value"][-1] == 0.01 and found["b"]["loss"]["ts"][0] == T0 + 100
    assert set(store.runs_metrics(["a"])["a"]) == {"loss", "accuracy"}
    window = store.runs_metrics(["a", "b"], ["loss"], x="step", x_min=3, x_max=5)
    assert window["a"]["loss"]["step"].tolist() == [3, 4, 5] and window["b"]["loss"]["step"].tolist() == [3, 4]
    relative = store.runs_metrics(["a", "b"], ["loss"], x="relative", x_min=2, x_max=3)
    assert relative["a"]["loss"]["step"].tolist() == [2, 3] and relative["b"]["loss"]["step"].tolist() == [2, 3]
    frame = store.runs_metrics_frame(["a", "b"], ["accuracy"])
    assert list(frame.columns) == ["run_id", "step", "timestamp", "metric", "value"]
    assert frame.groupby("run_id").size().to_dict() == {"a": 20, "b": 5}
    with pytest.raises(UnknownRunError):
        store.runs_metrics(["a", "missing"])
    with pytest.raises(ValueError):
        store.runs_metrics(["a"], x="episode", x_min=1)


async def test_tags_and_a_note_are_kept_per_run_and_show_in_its_summary_and_the_runs_table(store: Store) -> None:
    """annotate_run stores tags and a note (either alone leaves the other); reads and the runs table show them."""
    await write(
        store,
        [
            started("a", config={"lr": 0.1, "opt": {"name": "adam"}}),
            *calls("a", 10),
            started("b"),
            AlertEvent("b", T0 + 1, "slow", "firing", severity="warning"),
        ],
    )
    first = store.annotate_run("a", tags=[" best ", "best", "v2"], now=T0 + 5)
    assert first == {"tags": ["best", "v2"], "note": "", "updated_at": T0 + 5}
    assert store.annotate_run("a", note="the good one", now=T0 + 6)["tags"] == ["best", "v2"]
    summary = store.run_summary("a")
    assert (summary["tags"], summary["note"]) == (["best", "v2"], "the good one")
    assert (store.run_summary("b")["tags"], store.run_summary("b")["note"]) == ([], "")
    details = store.runs_table_details(["a", "b"], ["loss"])
    a, b = details["runs"]["a"], details["runs"]["b"]
    assert a["config"] == {"lr": 0.1, "opt": {"name": "adam"}} and a["step"] == 9
    assert a["metrics"]["loss"] == {"last": 0.1, "min": 0.1, "max": 1.0}
    assert b["alerts"] == {"firing": 1, "pending": 0} and b["step"] is None
    assert details["metric_names"] == ["accuracy", "loss"]
    for bad in ({"tags": "best"}, {"tags": ["x" * 65]}, {"note": "n" * 10_001}):
        with pytest.raises((TypeError, ValueError)):
            store.annotate_run("a", **bad)  # type: ignore[arg-type]
    assert store.run_summary("a")["tags"] == ["best", "v2"]
    with pytest.raises(UnknownRunError):
        store.annotate_run("missing", note="x")


async def test_the_runs_list_leaves_out_a_kind(store: Store) -> None:
    """exclude_kind keeps every other run, newest first; the page is filled from the runs kept."""
    await write(
        store, [started("t1", at=T0), started("s1", at=T0 + 1, run_kind=SESSION_KIND), started("t2", at=T0 + 2)]
    )
    assert [run["run_id"] for run in store.list_runs(exclude_kind=SESSION_KIND)] == ["t2", "t1"]
    assert [run["run_id"] for run in store.list_runs(exclude_kind=SESSION_KIND, limit=1)] == ["t2"]


# -- ingest receipts -------------------------------------------------------------------------------


async def test_a_receipt_commits_with_its_events_and_its_digest_reads_back(store: Store) -> None:
    """write() returns the keys of the receipts it committed; the digest of each is stored under its key."""
    keys = await write(store, [started("r"), *calls("r", 3), IngestReceipt("r", T0, "batch-1", 4, "d1")])
    assert keys == [("r", "batch-1")]
    assert store.stored_batch_digest("r", "batch-1") == "d1"
    assert store.stored_batch_digest("r", "batch-2") is None
    assert store.stored_batch_digest("other", "batch-1") is None


async def test_an_unstorable_event_is_named_and_refuses_its_transaction(store: Store) -> None:
    """unstorable() points at the event no transaction could take; writing it stores nothing of the batch."""
    batch = [started("r"), Metric("r", T0, {"bad\ud800name": 1.0}), Metric("r", T0, {"fine": 1.0})]
    writer = store.open_writer(owner="h:1:1.0")
    await writer.open()
    try:
        assert writer.unstorable(batch) == [1]
        with pytest.raises(Exception) as caught:
            await writer.write(batch)
        assert not isinstance(caught.value, StoreUnavailable)
        await writer.write([batch[0], batch[2]])
    finally:
        await writer.aclose()
    assert list(store.run_summary("r")["metrics"]) == ["fine"]


# -- images and histograms ------------------------------------------------------------------------


def image(run_id: str, step: int, shade: int, name: str = "frame") -> ImageEvent:
    """A 8x6 image of one grey ``shade`` (the same shade is the same content)."""
    encoded = encode_image(take_image(np.full((6, 8, 3), shade, np.uint8)))
    fields = (encoded.data, encoded.mime, encoded.width, encoded.height, encoded.digest)
    return ImageEvent(run_id, T0 + step, name, step, *fields, f"step {step}")


def histogram(run_id: str, step: int, values: list[float], name: str = "q") -> HistogramEvent:
    b = bin_values(take_values(values), 4)
    fields = (b.size, b.nan_count, b.posinf_count, b.neginf_count, b.min, b.max, b.sum, b.low, b.high, b.counts)
    return HistogramEvent(run_id, T0 + step, name, step, *fields)


async def test_images_read_back_by_name_and_step_with_each_content_once(store: Store) -> None:
    """Images come back as names with their latest, lists by step, the latest at or before a step, and
    contents by digest; a content logged twice is one content."""
    frames = [image("r", step, shade) for step, shade in ((0, 10), (2, 20), (4, 10))]
    other = image("r", 1, 30, name="map")
    await write(store, [started("r"), *frames, other])
    names = store.image_names("r")
    assert [(n["name"], n["count"], n["first_step"], n["last_step"]) for n in names] == [
        ("frame", 3, 0, 4),
        ("map", 1, 1, 1),
    ]
    assert names[0]["latest"]["step"] == 4 and names[0]["latest"]["caption"] == "step 4"
    listed = store.images("r", "frame", start_step=1)
    assert [(row["step"], row["digest"]) for row in listed] == [(2, frames[1].digest), (4, frames[0].digest)]
    at = store.image_at("r", "frame", 3, with_data=True)
    assert at is not None and at["step"] == 2 and at["data"] == frames[1].data
    assert store.image_at("r", "frame", -1) is None
    assert store.image_content(frames[0].digest) == ("image/png", frames[0].data)
    contents = len(frames[0].data) + len(frames[1].data) + len(other.data)  # frames 0 and 2 share a content
    assert store.media_usage("r") == {"image_bytes": contents, "images_over_budget": 0}
    with pytest.raises(UnknownRunError):
        store.image_names("absent")


async def test_a_run_past_its_image_budget_refuses_new_images_and_counts_them(store: Store) -> None:
    """The writer's budget is per run and counts each content once; an image past it is refused, counted,
    never raised, and the run's other events are stored."""
    first, repeat, other = image("r", 0, 10), image("r", 1, 10), image("r", 2, 99)
    budget = len(first.data)
    _, counters = await write_counting(
        store, [started("r"), first, repeat, other, *calls("r", 2)], max_image_bytes_per_run=budget
    )
    assert [row["step"] for row in store.images("r")] == [0, 1]
    assert store.media_usage("r") == {"image_bytes": budget, "images_over_budget": 1}
    assert counters["images_stored"] == 2 and counters["images_over_budget"] == 1
    assert store.run_summary("r")["metrics"]["loss"]["count"] == 2


async def test_histograms_read_back_by_step_with_their_bins_and_summary(store: Store) -> None:
    """A histogram keeps its counts, range and summary (NaN and infinities counted apart)."""
    await write(
        store,
        [started("r"), histogram("r", 0, [0.0, 1.0, 2.0, 3.0]), histogram("r", 5, [1.0, math.nan, math.inf])],
    )
    assert store.histogram_names("r") == [{"name": "q", "count": 2, "first_step": 0, "last_step": 5}]
    rows = store.histograms("r", "q")
    assert [(row["step"], row["size"], sum(row["counts"]), row["nan_count"], row["posinf_count"]) for row in rows] == [
        (0, 4, 4, 0, 0),
        (5, 3, 1, 1, 1),
    ]
    assert (rows[0]["low"], rows[0]["high"], rows[0]["sum"]) == (0.0, 3.0, 6.0)
    assert [row["step"] for row in store.histograms("r", "q", start_step=1)] == [5]


@pytest.mark.parametrize(("count", "max_count", "steps"), [(10, 4, [0, 3, 6, 9]), (10, 3, [0, 5, 9]), (5, 1, [4])])
async def test_histograms_thin_evenly_to_max_count_keeping_the_first_and_last(
    store: Store, count: int, max_count: int, steps: list[int]
) -> None:
    """max_count keeps that many histograms at most, evenly spaced, the first and the last included."""
    await write(store, [started("r"), *(histogram("r", step, [float(step)]) for step in range(count))])
    assert [row["step"] for row in store.histograms("r", "q", max_count=max_count)] == steps
    assert len(store.histograms("r", "q", max_count=count)) == count


async def test_cleanup_removes_a_runs_images_and_histograms_and_contents_no_image_names(store: Store) -> None:
    """A removed run takes its images, histograms and the contents only it named; a content another run
    still names stays."""
    shared, own = image("old", 0, 10), image("old", 1, 50)
    await write(
        store,
        [started("old"), shared, own, histogram("old", 0, [1.0]), started("kept"), image("kept", 0, 10)],
        [RunLifecycle("old", T0 + 10, RunTransition.COMPLETED)],
    )
    assert store.cleanup_old_data(T0 + 3600) >= 3
    assert [run["run_id"] for run in store.list_runs()] == ["kept"]
    assert store.image_content(own.digest) is None
    assert store.image_content(shared.digest) == ("image/png", shared.data)
    assert [row["step"] for row in store.images("kept")] == [0]


async def test_export_carries_images_once_and_histograms(store: Store, tmp_path: Path) -> None:
    """The run's archive lists every image and holds each content once, beside its histograms."""
    await write(store, [started("r"), image("r", 0, 10), image("r", 1, 10), histogram("r", 0, [1.0, 2.0])])
    archive = store.export_run("r", tmp_path / "out")
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        assert len(zipped.read("images.jsonl").splitlines()) == 2
        assert len(zipped.read("histograms.jsonl").splitlines()) == 1
    assert len([name for name in names if name.startswith("media/")]) == 1


# -- alerts ---------------------------------------------------------------------------------------


async def test_alerts_read_as_current_states_and_as_a_history(store: Store) -> None:
    """The latest transition of each alert instance is its state; the history lists every transition."""
    await write(
        store,
        [
            started("r"),
            AlertEvent("r", T0 + 1, "loss_nan", "firing", severity="critical", labels={"metric": "loss"}),
            AlertEvent("r", T0 + 2, "slow", "firing", severity="warning"),
            AlertEvent("r", T0 + 3, "loss_nan", "resolved", severity="critical", labels={"metric": "loss"}),
        ],
    )
    assert [(alert["rule"], alert["state"]) for alert in store.alerts()] == [("slow", "firing")]
    assert [alert["rule"] for alert in store.alerts(states=("resolved",))] == ["loss_nan"]
    history = store.alert_events(run_id="r")
    assert [(alert["rule"], alert["state"]) for alert in history] == [
        ("loss_nan", "resolved"),
        ("slow", "firing"),
        ("loss_nan", "firing"),
    ]
    assert [alert["rule"] for alert in store.alert_events(severity="warning")] == ["slow"]
    assert [alert["state"] for alert in store.alert_events(rule="loss_nan")] == ["resolved", "firing"]


# -- snapshots ------------------------------------------------------------------------------------


async def test_snapshots_of_held_runs_are_kept_newest_first_and_rotated(store: Store) -> None:
    """Only runs the store holds take snapshots; the newest max_snapshots of each stay."""
    await write(store, [started("r")])
    assert store.stored_runs(["r", "ghost"]) == {"r"}
    for i in range(3):
        written, rotated = store.save_snapshots([("r", b'{"n": %d}' % i), ("ghost", b"{}")], T0 + i, 2)
        assert written == ["r"] and rotated == (1 if i == 2 else 0)
    assert store.latest_snapshots(["r", "ghost"]) == {"r": '{"n": 2}'}


# -- sessions -------------------------------------------------------------------------------------


async def test_sessions_read_back_with_pages_statistics_and_metrics(store: Store) -> None:
    """A session's run, its pages of events and metrics, the statistics and the metric export."""
    tags = encode_session_tags(user_id=7, metadata={"k": "v"})
    await write(
        store,
        [
            started("s1", run_kind=SESSION_KIND, metadata={"product": "app", "metadata": {}}),
            LogEvent("s1", T0 + 1, "session_created", "info", {"user_id": 7, "details": {}}),
            LogEvent("s1", T0 + 2, "session_error", "error", {"user_id": 7, "details": {"error_type": "x"}}),
            Metric("s1", T0 + 3, {"sync_time": 0.5}, tags=tags),
            Metric("s1", T0 + 4, {"sync_time": 1.5}, tags=tags),
        ],
    )
    assert store.session_run_status("s1") == "running"
    page = store.read_session("s1", events_limit=1, metrics_limit=5)
    assert page["session"]["metadata"]["product"] == "app"
    assert [event["name"] for event in page["events"]] == ["session_error", "session_created"]  # limit + 1
    assert [row["values"] for row in page["metrics"]] == [[("sync_time", 1.5)], [("sync_time", 0.5)]]
    (record,) = store.list_sessions(active=True, status=None, product="app", limit=10, before=None)
    assert record["run_id"] == "s1"
    stats = store.session_statistics(None)
    assert stats["sessions"]["created"] == 1 and stats["errors"]["by_type"] == {"x": 1}
    assert stats["metrics"]["sync_time"]["count"] == 2
    exported = store.session_metrics(T0 + 3.5, None)
    assert [(row["value"], row["user_id"], row["metadata"]) for row in exported] == [(1.5, 7, {"k": "v"})]
    with pytest.raises(UnknownRunError):
        store.session_run_status("r-not-a-session")


async def test_old_session_data_is_removed_and_ended_sessions_go_whole(store: Store) -> None:
    """remove_old_sessions drops rows before the cutoff and sessions that ended before it."""
    await write(
        store,
        [
            started("old", at=T0, run_kind=SESSION_KIND),
            Metric("old", T0 + 1, {"m": 1.0}),
            RunLifecycle("old", T0 + 2, RunTransition.COMPLETED),
        ],
    )
    removed = store.remove_old_sessions(cutoff=4_000_000_000.0)
    assert removed["sessions"] == 1 and removed["metric_rows"] == 1  # the calls whose values went
    assert not store.has_run("old")


# -- lifecycle ------------------------------------------------------------------------------------


async def test_a_cleanup_pass_removes_ended_runs_before_the_cutoff_and_keeps_active_ones(store: Store) -> None:
    """Work on a cleanup pass until it finishes: the old ended run goes, the running one stays."""
    await write(
        store,
        [started("ended", at=T0), *calls("ended", 5), started("active", at=T0)],
        [RunLifecycle("ended", T0 + 10, RunTransition.COMPLETED)],
    )
    assert store.cleanup_old_data(T0 + 3600, dry_run=True) > 5
    passes = [store.cleanup_pass(T0 + 3600, batch_rows=2, lock_wait_seconds=1.0)]
    finished = []
    for _ in range(100):
        done, busy = store.work(passes, work_seconds=0.5)
        finished += done
        assert not busy
        if not passes:
            break
    assert [job.done for job in finished] == [True]
    assert finished[0].counters()["removed_runs"] == 1
    assert [run["run_id"] for run in store.list_runs()] == ["active"]


async def test_runs_of_a_dead_owner_on_this_host_are_marked_crashed(store: Store) -> None:
    """mark_crashed_runs judges runs owned on the named host by a process that is gone."""
    await write(store, [started("orphan", owner="conformance-host:999999999:1.0")])
    assert store.mark_crashed_runs(host="conformance-host") == ["orphan"]
    assert store.run_statuses(["orphan"]) == {"orphan": "crashed"}
    assert [event["event_type"] for event in store.run_events("orphan")][-1] == "run_crashed"


async def test_export_writes_an_archive_of_the_run(store: Store, tmp_path: Path) -> None:
    """export_run writes a zip holding the run's summary, metrics and events."""
    await write(store, [started("r"), *calls("r", 3), LogEvent("r", T0, "note", "info", {})])
    archive = store.export_run("r", tmp_path / "out")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {"run.json", "events.jsonl", "metrics_long.jsonl"} <= names


async def test_info_and_optimize_report_the_store(store: Store) -> None:
    """info() counts rows per table; optimize() reports sizes before and after."""
    await write(store, [started("r"), *calls("r", 4)])
    tables = store.info()["tables"]
    assert tables["metric_series"] == 2 and tables["metric_chunks"] >= 2
    assert store.optimize()["size_bytes_after"] > 0


# -- the live tail ----------------------------------------------------------------------------------


async def test_the_tail_reads_what_is_committed_after_it_opened_once(store: Store) -> None:
    """A tail opened on a store reads only later commits, each row once, and the progress of a live run."""
    await write(store, [started("old"), *calls("old", 3)])
    tail = store.open_tail()
    tail.open()
    try:
        await write(store, [started("new"), *calls("new", 4), Heartbeat("new", T0 + 9, {"total_steps": 4})])
        assert tail.changed()
        read = tail.read()
        events = [row.event for stream in tail.streams for row in read.rows[stream]]
        assert {event.run_id for event in events} == {"new"}
        assert sorted(event.step for event in events if isinstance(event, Metric)) == [0, 1, 2, 3]
        assert [(p.run_id, p.last_heartbeat, p.total_steps) for p in read.progress] == [("new", T0 + 9, 4)]
        for stream in tail.streams:
            tail.advance(stream, read.ends[stream])
        tail.took_heartbeat("new", T0 + 9)
        again = tail.read()
        assert not any(again.rows.values()) and again.progress == []
    finally:
        tail.close()


async def test_a_runs_end_goes_live_after_the_calls_logged_before_it_whatever_the_window(store: Store) -> None:
    """With a full window of calls, a later state patch and ``completed`` wait until every earlier call is read."""
    await write(store, [started("r")])
    tail = store.open_tail(max_rows=7)
    tail.open()
    try:
        ending = [StatePatch("r", T0 + 30, {"done": True}), RunLifecycle("r", T0 + 31, RunTransition.COMPLETED)]
        await write(store, [*calls("r", 20, at=T0 + 1), *ending])
        order: list[str] = []
        for _ in range(10):
            read = tail.read()
            order += [f"call {row.event.step}" for row in read.rows["metric_rows"]]
            order += [type(row.event).__name__ for stream in ("state_history", "events") for row in read.rows[stream]]
            for stream in tail.streams:
                tail.advance(stream, read.ends[stream])
            if not read.more:
                break
        assert order == [f"call {i}" for i in range(20)] + ["StatePatch", "RunLifecycle"]
    finally:
        tail.close()


async def test_a_writer_notes_its_rows_in_a_ledger_before_they_are_read(store: Store) -> None:
    """Every row a write puts in a stream is the ledger's own, so a tail of the same process can skip it."""
    from runwatch.store.ledger import OWN, CommitLedger

    store.prepare()
    tail = store.open_tail()
    tail.open()
    ledger = CommitLedger()
    writer = store.open_writer(owner="conformance-host:1:1.0")
    await writer.open()
    try:
        await writer.write([started("mine"), *calls("mine", 5), LogEvent("mine", T0 + 6, "note")], ledger=ledger)
        read = tail.read()
        rows = [row for stream in tail.streams for row in read.rows[stream]]
        assert len(rows) == 7
        assert all(ledger.owner(row.stream, row.position) == OWN for row in rows)
    finally:
        await writer.aclose()
        tail.close()


async def test_the_tail_does_not_read_the_ranges_its_caller_owns(store: Store) -> None:
    """Rows in ranges the caller skips (its ledger's settled ranges) are neither read nor returned, the
    cursors pass them, and another writer's rows between them still come back."""
    from runwatch.store.ledger import CommitLedger

    store.prepare()
    tail = store.open_tail()
    tail.open()
    ledger = CommitLedger()
    mine = store.open_writer(owner="conformance-host:1:1.0")
    await mine.open()
    try:
        await mine.write([started("mine"), *calls("mine", 5)], ledger=ledger)
        await write(store, [started("theirs"), *calls("theirs", 3)])
        await mine.write([*calls("mine", 4, at=T0 + 100), LogEvent("mine", T0 + 200, "note")], ledger=ledger)
        read = tail.read(ledger.settled_ranges())
        rows = [row for stream in tail.streams for row in read.rows[stream]]
        assert {row.event.run_id for row in rows} == {"theirs"} and len(rows) == 4
        assert read.skipped == 11  # 9 metric rows and 2 events of "mine"
        for stream in tail.streams:
            tail.advance(stream, read.ends[stream])
        assert not any(tail.read().rows.values())  # passed: nothing left behind
    finally:
        await mine.aclose()
        tail.close()
