"""What every event class shares: tuple-backed and immutable, equal only to an event of its own kind."""

from __future__ import annotations

from typing import ClassVar, cast

__all__ = ["EventBase", "tuple_new"]


class EventBase:
    """Shared behaviour of every event class (all are tuple-backed and immutable)."""

    __slots__ = ()
    kind: ClassVar[str]

    # Tuple equality would let two kinds with equal fields compare equal.
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(cast("tuple[object, ...]", self), other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.kind, tuple.__hash__(cast("tuple[object, ...]", self))))


#: Builds an event's tuple without ``NamedTuple``'s own ``__new__`` (the constructors validate first).
tuple_new = tuple.__new__
