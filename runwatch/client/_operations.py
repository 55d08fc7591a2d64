"""From a call's arguments to a neutral operation (pure): the less common paths of log_event and
log_metric, where datacat's fields are given. The common calls are built inline in ``_client``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ._aggregate import DEFAULT_BUCKETS
from ._checks import check_bounds, check_count, check_mapping, check_strings, check_tags, check_text, check_value

__all__ = ["Aggregated", "add_event_fields", "seed_event_arguments", "typed_metric"]


def seed_event_arguments(
    category: object, group: str | None, data: Mapping[str, Any] | None, level: str | None
) -> tuple[None, None, Mapping[str, Any], str | None]:
    """The seed's ``log_event(name, data[, level])``: a dict where datacat has ``category``.

    Returns:
        ``(category, group, data, level)`` as the call means them.

    Raises:
        TypeError: the argument is neither a string nor a dict, or data or level is given twice.
    """
    if not isinstance(category, Mapping):
        raise TypeError(f"data must be a dict (or category a string), got {type(category).__name__}")
    if data is not None:
        raise TypeError("data given twice: as the third argument (a dict) and as data=")
    if group is not None:  # the seed's positional level
        if level is not None:
            raise TypeError("level given twice: as the fourth argument and as level=")
        level = group
    return None, None, category, level


def add_event_fields(
    operation: dict[str, Any],
    group: str | None,
    labels: list[str] | None,
    message: str | None,
    stacktrace: list[str] | None,
    exception_type: str | None,
    exception_msg: str | None,
    source_file: str | None,
    source_line: int | None,
    source_function: str | None,
) -> None:
    """Add datacat's optional event fields to ``operation``: as datacat's client, those given and non-empty.

    Raises:
        TypeError, ValueError: a field of the wrong type.
    """
    texts = (
        ("group", group),
        ("message", message),
        ("exception_type", exception_type),
        ("exception_msg", exception_msg),
        ("source_file", source_file),
        ("source_function", source_function),
    )
    for key, text in texts:
        if text is not None and check_text(key, text):
            operation[key] = text
    if labels is not None:
        operation["labels"] = check_strings("labels", labels)
    if stacktrace is not None:
        lines = check_strings("stacktrace", stacktrace)
        if lines:
            operation["stacktrace"] = lines
    if source_line is not None:
        operation["source_line"] = check_count("source_line", source_line)


class Aggregated(NamedTuple):
    """A metric kept by the client's aggregator instead of being sent: a counter delta or a histogram sample.

    Attributes:
        kind: ``"counter"`` or ``"histogram"``.
        tags: the series' tags.
        amount: the counter's delta, or the histogram's sample.
        bounds: the histogram's sorted bucket bounds (empty for a counter).
        unit: the histogram's unit (``""``: none).
        metadata: the histogram's further metadata.
    """

    kind: str
    tags: list[str]
    amount: float
    bounds: tuple[float, ...]
    unit: str
    metadata: dict[str, Any]


def typed_metric(
    name: str,
    value: float,
    tags: list[str] | None,
    metric_type: str,
    count: int | None,
    unit: str | None,
    metadata: Mapping[str, Any] | None,
    delta: float | None,
    now: float,
) -> dict[str, Any] | Aggregated:
    """The operation of a metric with datacat's fields, or what to aggregate (a counter delta, a histogram).

    ``value`` is already checked. As datacat's client, ``unit`` and ``metadata``
    are sent when non-empty, ``count`` when given, ``type`` unless ``gauge``.

    Raises:
        TypeError, ValueError: an argument the server would refuse.
    """
    metric_type = check_text("metric_type", metric_type) or "gauge"
    tag_list = check_tags(tags) if tags is not None else []
    if unit is not None:
        check_text("unit", unit)
    extra = check_mapping("metadata", metadata) if metadata is not None else {}
    if delta is not None:
        if metric_type != "counter":
            raise ValueError(f"delta is for metric_type 'counter', not {metric_type!r}")
        return Aggregated("counter", tag_list, check_value(name, delta), (), "", {})
    if metric_type == "histogram":
        bounds = check_bounds(extra.pop("buckets")) if "buckets" in extra else DEFAULT_BUCKETS
        return Aggregated("histogram", tag_list, value, bounds, unit or "", extra)
    operation: dict[str, Any] = {"op": "metric", "name": name, "value": value, "timestamp": now}
    if tags is not None:
        operation["tags"] = tag_list
    if metric_type != "gauge":
        operation["type"] = metric_type
    if count is not None:
        operation["count"] = check_count("count", count)
    if unit:
        operation["unit"] = unit
    if extra:
        operation["metadata"] = extra
    return operation
