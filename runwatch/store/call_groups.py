"""From a batch of logging calls to columns: one :class:`CallGroup` per (run, ordered metric names) (pure).

``numpy`` builds every column from the calls' value lists at once: no Python
object is made per value. Calls are numbered store-wide, in batch order, from
the number the caller gives (``seq``). :class:`~runwatch.store.series.SeriesBuilder`
appends the groups to each series' open chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["FLOAT_EXACT", "BoolArray", "CallGroup", "Int64Array", "group_calls", "group_rows", "time_to_us"]

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: The largest integer magnitude a float64 holds exactly.
FLOAT_EXACT: Final = float(2**53)


@dataclass(frozen=True, slots=True)
class CallGroup:
    """The calls of a batch that logged the same names in one run, as columns.

    Attributes:
        run: the run's integer key.
        names: the metric names, in the calls' order.
        seq, step, step_valid, time_us, tags: per call, as in :class:`ChunkColumns`.
        columns: per name, the values of every call: float64, int64, or (only
            when integers beyond 2**53 mix with floats) an object array.
        last_seconds: the last call's time as it was given (epoch seconds; the
            metric statistics keep it exactly), None when not known.
    """

    run: int
    names: tuple[str, ...]
    seq: Int64Array
    step: Int64Array
    step_valid: BoolArray | None
    time_us: Int64Array
    columns: tuple[npt.NDArray[Any], ...]
    tags: list[str | None] | None = None
    last_seconds: float | None = None


def time_to_us(seconds: npt.NDArray[np.float64]) -> Int64Array:
    """Epoch seconds → integer microseconds, rounded to nearest (exact below year 2255)."""
    return np.rint(seconds * 1e6).astype(np.int64)


def group_calls(calls: Sequence[Any], run_keys: Mapping[str, int], first_seq: int) -> list[CallGroup]:
    """Columns of a batch of metric calls, one :class:`CallGroup` per (run, names).

    Args:
        calls: :class:`runwatch.events.Metric` events, or tuples
            ``(run_id, timestamp_seconds, values: dict, step | None, tags | None)``.
            Values are ``int`` (int64 range) or ``float``, as
            ``Metric`` guarantees.
        run_keys: run id → the run's integer key, for every run in ``calls``.
        first_seq: the number of the first call; the others follow in batch
            order (calls are numbered store-wide, whatever their run).

    Returns:
        The groups in order of each group's first call.
    """
    count = len(calls)
    if count == 0:
        return []
    run_ids = list(map(itemgetter(0), calls))
    seqs = np.arange(first_seq, first_seq + count, dtype=np.int64)
    runs: list[int] | None = None
    if run_ids.count(run_ids[0]) == count:
        run = run_keys[run_ids[0]]
    else:
        runs = [run_keys[run_id] for run_id in run_ids]
    values = list(map(itemgetter(2), calls))
    first_names = tuple(values[0])
    # The common case, one run logging one set of names: every call has as many names as the
    # first (one C-level pass), and each column is taken by name from every call, which fails
    # (KeyError) if one lacks a name. Comparing each call's names instead costs a tuple per call.
    if runs is None and sum(map(len, values)) == count * len(first_names):
        try:
            return [_group_of_calls(run, first_names, calls, seqs)]
        except KeyError:
            pass  # same counts, other names: group them below
    # Each call's names tuple is compared and freed at once: keeping one per call would hand
    # the garbage collector a tracked object per call (and full collections over the batch).
    interned: dict[tuple[str, ...], tuple[str, ...]] = {}
    names = [interned.setdefault(key, key) for key in map(tuple, values)]
    members: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    keys: Iterable[tuple[int, tuple[str, ...]]] = (
        zip(runs, names, strict=True) if runs is not None else ((run, n) for n in names)
    )
    for index, key in enumerate(keys):
        found = members.get(key)
        if found is None:
            members[key] = [index]
        else:
            found.append(index)
    groups = []
    for (group_run, group_names), indices in members.items():
        picked = [calls[i] for i in indices]
        groups.append(_group_of_calls(group_run, group_names, picked, seqs[indices]))
    return groups


def group_rows(
    run: int,
    names: tuple[str, ...],
    seq: Int64Array,
    step: Int64Array,
    step_valid: BoolArray | None,
    time_us: Int64Array,
    rows: Sequence[Sequence[Any]],
    tags: list[str | None] | None = None,
) -> CallGroup:
    """A :class:`CallGroup` from value rows (one sequence per call, in ``names`` order).

    Used by the migration from per-call rows. Values are ``int`` or
    ``float``; rows must all have ``len(names)`` values.
    """
    count = len(rows)
    floats = [np.fromiter(map(itemgetter(j), rows), dtype=np.float64, count=count) for j in range(len(names))]
    columns = _typed_columns(floats, [type(v) is int for v in rows[0]], lambda j: list(map(itemgetter(j), rows)))
    return CallGroup(run, names, seq, step, step_valid, time_us, columns, tags)


def _group_of_calls(run: int, names: tuple[str, ...], calls: Sequence[Any], seq: Int64Array) -> CallGroup:
    """The columns of calls that logged ``names`` (in any order).

    Raises:
        KeyError: a call lacks one of ``names``.
    """
    count = len(calls)
    seconds = np.fromiter(map(itemgetter(1), calls), dtype=np.float64, count=count)
    steps = list(map(itemgetter(3), calls))
    valid: BoolArray | None = None
    if None in steps:
        valid = np.fromiter((s is not None for s in steps), dtype=np.bool_, count=count)
        step = np.array([0 if s is None else s for s in steps], dtype=np.int64)
    else:
        step = np.array(steps, dtype=np.int64)
    dicts = list(map(itemgetter(2), calls))
    # Column by column, straight from the calls' dicts in C: no Python object per value.
    floats = [np.fromiter(map(itemgetter(name), dicts), dtype=np.float64, count=count) for name in names]
    first = dicts[0]
    columns = _typed_columns(
        floats, [type(first[name]) is int for name in names], lambda j: list(map(itemgetter(names[j]), dicts))
    )
    tag_list = list(map(itemgetter(4), calls))
    tags = None if tag_list.count(None) == count else [_tags_text(t) for t in tag_list]
    return CallGroup(run, names, seq, step, valid, time_to_us(seconds), columns, tags, calls[-1][1])


def _tags_text(tags: Mapping[str, str] | None) -> str | None:
    return None if tags is None else orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode()


def _typed_columns(
    floats: list[npt.NDArray[np.float64]], first_is_int: list[bool], column_of: Callable[[int], list[Any]]
) -> tuple[npt.NDArray[Any], ...]:
    """Each column as float64, int64 or (exactness requires it) object.

    ``floats`` holds every column converted to float; ``first_is_int`` says
    which columns started with an integer; ``column_of(j)`` gives column j's
    original values, read only for columns that may hold integers.
    """
    out: list[npt.NDArray[Any]] = []
    for j, starts_int in enumerate(first_is_int):
        column = floats[j]
        # Floats at or beyond 2**53 in magnitude may be rounded integers: look at those columns' objects.
        if not starts_int and not bool((np.abs(column) >= FLOAT_EXACT).any()):
            out.append(column)
            continue
        original = column_of(j)
        kinds = set(map(type, original))
        if kinds == {int}:
            out.append(np.array(original, dtype=np.int64))
        elif int in kinds and any(type(v) is int and not -FLOAT_EXACT <= v <= FLOAT_EXACT for v in original):
            out.append(np.array(original, dtype=object))
        else:
            out.append(column)
    return tuple(out)
