"""The pure core of webhook delivery: an ordered, bounded outbox with capped exponential backoff."""

from __future__ import annotations

from dataclasses import dataclass

from .policy import AlertGroup


@dataclass(eq=False)
class Delivery:
    """One notification waiting to be delivered (its JSON body serialised once)."""

    group: AlertGroup
    body: bytes
    attempts: int = 0
    next_attempt_at: float = 0.0
    in_flight: bool = False


class Outbox:
    """A bounded queue of deliveries with retries and capped exponential backoff (pure).

    Deliveries of one group leave in order: a group's next notification waits
    until the one before it is delivered or dropped, so a receiver never sees
    ``resolved`` before the ``firing`` it ends.

    Args:
        max_notifications: the bound; when full, the oldest delivery not in
            flight is dropped to make room.
        max_retries: attempts after the first before a delivery is dropped.
        backoff_initial_seconds: the wait before the first retry; it doubles
            with each retry, up to ``backoff_max_seconds``.
    """

    def __init__(
        self,
        *,
        max_notifications: int = 1000,
        max_retries: int = 5,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        if max_notifications < 1:
            raise ValueError(f"max_notifications must be at least 1, got {max_notifications}")
        self.max_notifications = max_notifications
        self.max_retries = max_retries
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self._entries: list[Delivery] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def in_flight(self) -> int:
        """How many deliveries are being attempted."""
        return sum(1 for delivery in self._entries if delivery.in_flight)

    def put(self, delivery: Delivery, now: float) -> Delivery | None:
        """Queue a delivery, due at once; returns the delivery dropped to make room, if any."""
        delivery.next_attempt_at = now
        dropped = None
        if len(self._entries) >= self.max_notifications:
            waiting = [entry for entry in self._entries if not entry.in_flight]
            if not waiting:
                return delivery
            dropped = waiting[0]
            self._entries.remove(dropped)
        self._entries.append(delivery)
        return dropped

    def take_due(self, now: float, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries to attempt now (at most one per group), marked in flight."""
        taken: list[Delivery] = []
        blocked: set[AlertGroup] = set()
        for delivery in self._entries:
            if len(taken) >= limit:
                break
            if delivery.group in blocked:
                continue
            blocked.add(delivery.group)
            if not delivery.in_flight and delivery.next_attempt_at <= now:
                delivery.in_flight = True
                taken.append(delivery)
        return taken

    def backoff_seconds(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt (1, 2...)."""
        exponent = min(attempts - 1, 62)  # 2**62 already exceeds any sane cap
        return float(min(self.backoff_max_seconds, self.backoff_initial_seconds * 2**exponent))

    def succeeded(self, delivery: Delivery) -> None:
        """The delivery arrived: forget it."""
        self._entries.remove(delivery)

    def failed(self, delivery: Delivery, now: float, *, retryable: bool, reason: str = "rejected") -> str | None:
        """An attempt failed: schedule a retry and return ``None``, or drop the delivery
        and return why (``reason`` when not ``retryable``, else ``retries_exhausted``)."""
        delivery.in_flight = False
        delivery.attempts += 1
        if not retryable:
            self._entries.remove(delivery)
            return reason
        if delivery.attempts > self.max_retries:
            self._entries.remove(delivery)
            return "retries_exhausted"
        delivery.next_attempt_at = now + self.backoff_seconds(delivery.attempts)
        return None

    def drop_all(self) -> int:
        """Forget every delivery; returns how many there were."""
        count = len(self._entries)
        self._entries.clear()
        return count
