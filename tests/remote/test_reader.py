"""The remote-mode reader: DatabaseManager's read methods over a real server's REST API, in the same shapes.

A real monitor logs a run with NaN, ±Inf, steps, several key sets, events, state and an alert, and serves
it on loopback. Every read through :class:`RestReader` must equal the same read through
:class:`DatabaseManager` on the server's file: the DataFrame value for value.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from runwatch.config import MonitorConfig
from runwatch.exceptions import StoreError, UnknownRunError
from runwatch.monitor import WebMonitor
from runwatch.remote.reader import RestReader
from runwatch.store.manager import DatabaseManager

TOKEN = "reader-token-123456"


def to_microseconds(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alerts with their epoch times rounded to the microsecond."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return [{**a, "updated_at": rounded(a["updated_at"]), "active_since": rounded(a["active_since"])} for a in alerts]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebMonitor, DatabaseManager]]:
    """A monitor (token required) that logged two runs, serving them on loopback; and a manager on its file."""
    tmp = tmp_path_factory.mktemp("reader")
    monitor = WebMonitor(MonitorConfig(db_path=str(tmp / "m.db"), data_dir=str(tmp / "d"), web_port=0, web_token=TOKEN))
    try:
        monitor.start_training({"lr": 0.1}, run_id="mixed")
        for step in range(300):
            values: dict[str, Any] = {"loss": 1.0 / (step + 1)}
            if step % 3 == 0:
                values["eval"] = {"acc": step / 300}
            monitor.update_metrics(values)
            if step % 50 == 0:
                monitor.record_event("checkpoint", {"step": step})
        monitor.update_metrics({"loss": math.nan, "spike": math.inf})
        monitor.update_metrics({"loss": -math.inf, "spike": -math.inf, "gone": math.nan}, step=299)  # joins step 299
        monitor.update_game_state({"level": 4, "hero": {"hp": 3}})
        monitor.stop_training(final_reward=2.0)
        monitor.start_training(run_id="second")
        monitor.update_metrics({"x": 1.0})
        monitor.pause_training()
        assert monitor.flush()
        yield monitor, DatabaseManager(monitor.config.db_path)
    finally:
        monitor.close()


@pytest.fixture
def reader(served: tuple[WebMonitor, DatabaseManager]) -> Iterator[RestReader]:
    """A reader of the served store, with the token."""
    monitor, _ = served
    assert monitor.web_url is not None
    with RestReader(monitor.web_url, token=TOKEN) as opened:
        yield opened


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="steps"),
        pytest.param({"align": "call"}, id="calls"),
        pytest.param({"metric_names": ["eval/acc", "nothing"]}, id="names"),
        pytest.param({"metric_names": []}, id="no-names"),
        pytest.param(
            {"start_time": datetime.fromtimestamp(0, UTC), "end_time": datetime(2200, 1, 1, tzinfo=UTC)}, id="window"
        ),
    ],
)
def test_metrics_come_back_as_the_same_dataframe(
    served: tuple[WebMonitor, DatabaseManager], reader: RestReader, kwargs: dict[str, Any]
) -> None:
    """get_run_metrics over REST equals DatabaseManager's frame: dtypes, NaN, ±Inf, steps, columns."""
    _, db = served
    reader.calls_per_page = 37  # many pages: they join into one frame
    expected = db.get_run_metrics("mixed", **kwargs)
    got = reader.get_run_metrics("mixed", **kwargs)
    pd.testing.assert_frame_equal(got, expected)
    if not kwargs:
        assert set(got["spike"].dropna()) == {math.inf, -math.inf} and got["loss"].isna().sum() == 1


def test_a_summary_keeps_datetimes_nan_and_infinities(
    served: tuple[WebMonitor, DatabaseManager], reader: RestReader
) -> None:
    """get_run_summary over REST equals DatabaseManager's: aware datetimes, a NaN last value, ±Inf extremes."""
    _, db = served
    expected = db.get_run_summary("mixed")
    got = reader.get_run_summary("mixed")
    spike, expected_spike = got["metrics"]["spike"], expected["metrics"]["spike"]
    assert (spike["min"], spike["max"], spike["last"]) == (-math.inf, math.inf, -math.inf)
    assert math.isnan(spike.pop("mean")) and math.isnan(expected_spike.pop("mean"))  # +Inf and -Inf: NaN
    gone, expected_gone = got["metrics"]["gone"], expected["metrics"]["gone"]
    assert math.isnan(gone.pop("last")) and math.isnan(expected_gone.pop("last"))
    assert gone["mean"] is None and gone["min"] is None  # every value NaN: no statistics
    assert got == expected
    assert isinstance(got["start_time"], datetime) and got["start_time"].tzinfo is not None


def test_runs_events_state_and_alerts_are_the_managers(
    served: tuple[WebMonitor, DatabaseManager], reader: RestReader
) -> None:
    """The run list, events (filtered and windowed), state and alerts are what DatabaseManager returns."""
    _, db = served
    assert reader.get_training_runs() == db.get_training_runs()
    assert reader.get_training_runs(status="paused", limit=5) == db.get_training_runs(status="paused", limit=5)
    reader.events_per_page = 2
    assert reader.get_run_events("mixed") == db.get_run_events("mixed")
    assert reader.get_run_events("mixed", "checkpoint") == db.get_run_events("mixed", "checkpoint")
    middle = db.get_run_events("mixed")[3]["timestamp"]
    assert reader.get_run_events("mixed", end_time=middle) == db.get_run_events("mixed", end_time=middle)
    assert reader.get_run_state("mixed") == db.get_run_state("mixed") == {"game_state": {"level": 4, "hero": {"hp": 3}}}
    for state in (None, "pending", "firing", "resolved"):  # times travel as ISO text: to the microsecond
        assert to_microseconds(reader.get_alerts(state=state)) == to_microseconds(db.get_alerts(state=state))
    assert db.get_alerts(state="resolved") or db.get_alerts()  # the NaN loss raised an alert
    assert reader.mark_crashed_runs() == []


def test_an_unknown_run_is_unknown_and_bad_arguments_fail_before_any_request(reader: RestReader) -> None:
    """404 is UnknownRunError naming the run; a bad argument is the manager's TypeError/ValueError."""
    with pytest.raises(UnknownRunError, match="nope"):
        reader.get_run_metrics("nope")
    with pytest.raises(UnknownRunError):
        reader.get_run_summary("a/b?c")
    reader.close()
    with pytest.raises(TypeError):
        reader.get_run_summary("")  # checked before the closed reader is even asked
    with pytest.raises(ValueError, match="align"):
        reader.get_run_metrics("mixed", align="row")
    with pytest.raises(ValueError, match="state"):
        reader.get_alerts(state="firing!")
    with pytest.raises(StoreError, match="closed"):
        reader.get_run_state("mixed")


def test_a_missing_token_or_an_unreachable_server_is_a_store_error_without_the_token(
    served: tuple[WebMonitor, DatabaseManager],
) -> None:
    """401 and connection refused are StoreErrors naming the server; the token never appears in them."""
    monitor, _ = served
    assert monitor.web_url is not None
    with (
        RestReader(monitor.web_url, token="wrong-token-abcdef") as wrong,
        pytest.raises(StoreError, match="401") as info,
    ):
        wrong.get_training_runs()
    assert "wrong-token-abcdef" not in str(info.value)
    with RestReader("http://127.0.0.1:9", token=TOKEN) as nowhere, pytest.raises(StoreError, match="reached") as info:
        nowhere.get_training_runs()
    assert TOKEN not in str(info.value)


def test_reads_wait_for_what_was_sent_first(served: tuple[WebMonitor, DatabaseManager]) -> None:
    """before_read runs before every request (a remote monitor waits there until its events are delivered)."""
    monitor, _ = served
    assert monitor.web_url is not None
    calls: list[str] = []
    with RestReader(monitor.web_url, token=TOKEN, before_read=lambda: calls.append("wait")) as reader:
        reader.get_run_state("mixed")
        reader.get_training_runs()
    assert calls == ["wait", "wait"]
