"""The ``callback`` sink: each notification handed to a Python function."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, cast

import anyio
import anyio.to_thread
from pydantic import Field

from ...exceptions import ConfigError
from ...pipeline.component import ComponentContext
from .base import Notifier, NotifierOptions
from .policy import Notification

NotificationCallback = Callable[[dict[str, Any]], Any]


class CallbackNotifier(Notifier):
    """Calls a Python function with each notification's dict (see the module docs).

    Configure it with ``target = "module:function"``, or build one in code
    with :meth:`from_callable`. A plain function runs in a worker thread (so
    a slow one never stalls the event loop); an ``async def`` function is
    awaited on the loop. Calls happen one at a time, in order. An exception
    from the function is counted (drop reason ``callback_error``) and logged,
    never raised. A call still running after ``timeout_seconds`` is given up
    (drop reason ``callback_timeout``; a plain function keeps running in its
    thread, as threads cannot be interrupted), so a stuck function holds the
    sink for at most that long.

    Options:
        target: ``"module:function"`` (``"module:object.method"`` also works).
        timeout_seconds: the longest one call is waited for.
        group_wait_seconds, repeat_interval_seconds, send_resolved,
        group_by_labels: the :class:`NotificationPolicy` settings.

    Raises:
        ConfigError: from the constructor, when ``target`` is missing or
            cannot be imported.
    """

    class Options(NotifierOptions):
        target: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$")
        timeout_seconds: float = Field(10.0, gt=0)

    def __init__(
        self, id: str, options: Options, context: ComponentContext, *, fn: NotificationCallback | None = None
    ) -> None:
        super().__init__(id, options, context)
        if fn is None:
            fn = _import_target(f"sinks.{id}.target", options.target)
        self.fn = fn
        self.failed_callbacks = 0

    @classmethod
    def from_callable(
        cls, fn: NotificationCallback, *, id: str = "callback", context: ComponentContext | None = None, **options: Any
    ) -> CallbackNotifier:
        """A notifier calling ``fn``; ``options`` are the policy settings (keyword-only).

        Raises:
            pydantic.ValidationError: an unknown or ill-typed option.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        return cls(id, cls.Options(**options), context or ComponentContext(), fn=fn)

    async def _notify(self, notifications: list[Notification], now: float, *, final: bool = False) -> None:
        for notification in notifications:
            payload = notification.to_dict()
            try:
                with anyio.move_on_after(self.options.timeout_seconds) as deadline:
                    if inspect.iscoroutinefunction(self.fn):
                        await self.fn(payload)
                    else:
                        result = await anyio.to_thread.run_sync(self.fn, payload, abandon_on_cancel=True)
                        if inspect.isawaitable(result):
                            await result
            except Exception as exc:
                self.failed_callbacks += 1
                self._count_drop("callback_error", 1, f"{type(exc).__name__}: {exc}", exc)
                continue
            if deadline.cancelled_caught:
                self.failed_callbacks += 1
                self._count_drop("callback_timeout", 1, f"no return within {self.options.timeout_seconds:g} s")
            else:
                self.sent_notifications += 1

    def statistics(self) -> dict[str, Any]:
        stats = super().statistics()
        stats["failed_callbacks"] = self.failed_callbacks
        return stats


def _import_target(path: str, target: str | None) -> NotificationCallback:
    if target is None:
        raise ConfigError(path, "is required: 'module:function' (or build the notifier with from_callable)")
    module_name, _, attribute = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(path, f"cannot import {target!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(path, f"{target!r} is not callable")
    return cast("NotificationCallback", obj)
