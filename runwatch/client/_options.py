"""A client's options, checked once (pure), and the defaults datacat's signatures imply."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._wire import PROTOCOLS

__all__ = ["DEFAULT_VERSION", "WHEN_FULL", "ClientOptions", "default_product", "is_port"]

#: The version a session gets when none is given (datacat's server requires one).
DEFAULT_VERSION: Final = "unknown"
#: Values of ``when_full``: drop the newest call, or wait for room.
WHEN_FULL: Final = ("drop_newest", "block")


def default_product() -> str:
    """The product of a session created without one: the program's name (``python`` if none)."""
    main = sys.argv[0] if sys.argv else ""
    name = Path(main).stem if main not in ("", "-c", "-m", "-") else ""
    if name == "__main__":  # python -m package: the package's directory
        name = Path(main).resolve().parent.name
    return name or "python"


def is_port(value: object) -> bool:
    """Whether ``value`` is a ``daemon_port`` datacat takes: ``"auto"`` or a port number."""
    return value == "auto" or (type(value) is int and 0 <= value < 65536) or (type(value) is str and value.isdigit())


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ClientOptions:
    """Every option of a :class:`~runwatch.client.DatacatClient` (documented there), checked and normalised.

    Raises:
        TypeError: a token that is not a non-empty string.
        ValueError: any other option out of its domain (the message names it).
    """

    base_url: str
    token: str | None = None
    timeout: float = 10.0
    protocol: str = "auto"
    blocking: bool = True
    max_queue: int = 10_000
    when_full: str = "drop_newest"
    batch_size: int = 500
    flush_interval: float = 0.5
    spool_dir: Path | None = None
    retry_max_seconds: float = 30.0
    exit_timeout_seconds: float = 5.0
    aggregate_interval_seconds: float = 5.0
    keepalive_interval_seconds: float | None = 15.0

    def __post_init__(self) -> None:
        if self.token is not None and (type(self.token) is not str or not self.token):
            raise TypeError("token must be a non-empty string or None")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.when_full not in WHEN_FULL:
            raise ValueError(f"when_full must be one of {', '.join(WHEN_FULL)}, got {self.when_full!r}")
        for name in ("max_queue", "batch_size"):
            count = getattr(self, name)
            if type(count) is not int or count < 1:
                raise ValueError(f"{name} must be a positive integer, got {count!r}")
        seconds = ["timeout", "flush_interval", "retry_max_seconds", "aggregate_interval_seconds"]
        if self.keepalive_interval_seconds is not None:
            seconds.append("keepalive_interval_seconds")
        for name in seconds:
            object.__setattr__(self, name, _positive_seconds(name, getattr(self, name)))
        exit_timeout = self.exit_timeout_seconds
        if isinstance(exit_timeout, bool) or not isinstance(exit_timeout, (int, float)) or not exit_timeout >= 0:
            raise ValueError(f"exit_timeout_seconds must be a number of seconds >= 0, got {exit_timeout!r}")
        object.__setattr__(self, "exit_timeout_seconds", float(exit_timeout))
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        object.__setattr__(self, "blocking", bool(self.blocking))
        if self.spool_dir is not None:
            object.__setattr__(self, "spool_dir", Path(os.fspath(self.spool_dir)))
