"""A run's state: the deep merge of its state patches (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["copy_state", "merge_state", "merge_state_into"]


def merge_state(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``patch`` into ``base`` and return the new state.

    Nested mappings merge key by key; lists and scalars replace; a ``None``
    value deletes the key. Neither argument is modified.
    """
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_state(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def merge_state_into(state: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Deep-merge ``patch`` into ``state`` in place, as :func:`merge_state` does.

    The cost is the patch's size, not the state's: for a state that takes
    patch after patch (the store's writer, the snapshot stage). ``state`` and
    every mapping nested in it must belong to the caller; mappings taken from
    ``patch`` are copied, never shared, so a later merge cannot change a patch
    (lists and scalars are shared: nothing here changes them).
    """
    for key, value in patch.items():
        if value is None:
            state.pop(key, None)
        elif isinstance(value, Mapping):
            current = state.get(key)
            if type(current) is not dict:
                current = state[key] = {}
            merge_state_into(current, value)
        else:
            state[key] = value


def copy_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a state whose nested mappings are copies too (lists are shared: never changed),
    so :func:`merge_state_into` may merge into it."""
    return {key: copy_state(value) if isinstance(value, Mapping) else value for key, value in state.items()}
