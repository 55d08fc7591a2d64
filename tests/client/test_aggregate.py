"""Tests of runwatch.client._aggregate: counters as running totals and histograms as buckets (pure)."""

from __future__ import annotations

import pytest

from runwatch.client._aggregate import DEFAULT_BUCKETS, MetricAggregator


def test_counters_are_running_totals_per_name_and_sorted_tags() -> None:
    """Deltas add up per (name, sorted tags); a snapshot sends each total, re-sent unchanged while idle."""
    aggregates = MetricAggregator()
    for _ in range(3):
        aggregates.add_counter("s", "requests", [], 1)
    aggregates.add_counter("s", "bytes", ["b:1", "a:2"], 1000)
    aggregates.add_counter("s", "bytes", ["a:2", "b:1"], 24)
    first = aggregates.snapshot("s", 10.0)
    assert first == [
        {"op": "metric", "name": "requests", "value": 3, "timestamp": 10.0, "type": "counter"},
        {"op": "metric", "name": "bytes", "value": 1024, "timestamp": 10.0, "type": "counter", "tags": ["a:2", "b:1"]},
    ]
    assert type(first[0]["value"]) is int  # sent as 3, not 3.0
    assert [point["value"] for point in aggregates.snapshot("s", 15.0)] == [3, 1024]


def test_histogram_points_carry_buckets_count_and_sum_in_metadata() -> None:
    """Samples land in the first bucket whose bound is >= the value; above the last, in the last."""
    aggregates = MetricAggregator()
    for value in (0.004, 0.2, 99.0):
        aggregates.add_histogram("s", "latency", [], value, bounds=DEFAULT_BUCKETS, unit="seconds", metadata={})
    (point,) = aggregates.snapshot("s", 5.0)
    assert point["type"] == "histogram" and point["unit"] == "seconds"
    assert point["value"] == pytest.approx(33.068)
    counts = {bucket["le"]: bucket["count"] for bucket in point["metadata"]["buckets"]}
    assert [bucket["le"] for bucket in point["metadata"]["buckets"]] == list(DEFAULT_BUCKETS)
    assert {le: n for le, n in counts.items() if n} == {0.005: 1, 0.25: 1, 60: 1}
    assert point["metadata"]["count"] == 3 and point["metadata"]["sum"] == pytest.approx(99.204)


def test_histograms_keep_the_first_samples_unit_tags_and_metadata_per_bucket_list() -> None:
    """The series is (name, tags, bounds); the first sample's unit, tags and metadata stay; counts are per bucket."""
    aggregates = MetricAggregator()
    bounds = (1 / 60, 1 / 30, 0.1)
    aggregates.add_histogram("s", "frame", ["t"], 0.016, bounds=bounds, unit="", metadata={"note": "x"})
    aggregates.add_histogram("s", "frame", ["t"], 0.02, bounds=bounds, unit="ms", metadata={"note": "y"})
    aggregates.add_histogram("s", "frame", ["t"], 0.5, bounds=(1.0,), unit="", metadata={})
    first, other = aggregates.snapshot("s", 1.0)
    assert "unit" not in first and first["tags"] == ["t"]
    assert first["metadata"] == {
        "note": "x",
        "buckets": [{"le": 1 / 60, "count": 1}, {"le": 1 / 30, "count": 1}, {"le": 0.1, "count": 0}],
        "count": 2,
        "sum": pytest.approx(0.036),
    }
    assert other["metadata"]["buckets"] == [{"le": 1.0, "count": 1}]


def test_sessions_are_separate_and_forgotten_at_their_end() -> None:
    """Each session has its own series; forget() drops them."""
    aggregates = MetricAggregator()
    aggregates.add_counter("a", "c", [], 1)
    aggregates.add_counter("b", "c", [], 2)
    assert sorted(aggregates.sessions()) == ["a", "b"]
    aggregates.forget("a")
    assert aggregates.sessions() == ["b"]
    assert aggregates.snapshot("a", 0.0) == []
