"""A sink that writes events to Python logging (one line per event)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from ..pipeline.component import Options as BaseOptions
from ..pipeline.component import Sink
from ..wire import event_to_dict

__all__ = ["LogSink"]


class LogSink(Sink):
    """Logs each event at ``level`` on the logger named ``logger``.

    Options:
        logger: the logger name (default ``runwatch.events``).
        level: the logging level name.
    """

    class Options(BaseOptions):
        logger: str = "runwatch.events"
        level: Literal["debug", "info", "warning", "error", "critical"] = "info"

    async def write(self, batch: list[Any]) -> None:
        log = logging.getLogger(self.options.logger)
        level = logging.getLevelName(self.options.level.upper())
        if not log.isEnabledFor(level):
            return
        for event in batch:
            log.log(level, "%s", event_to_dict(event))
