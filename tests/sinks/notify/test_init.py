"""Tests of the runwatch.sinks.notify package: its public names, the old import path, the config's type names."""

from __future__ import annotations

import pytest

import runwatch.sinks.notifiers
import runwatch.sinks.notify
from runwatch.pipeline.config import load_pipeline_config
from runwatch.sinks.notify import CallbackNotifier, LogNotifier, WebhookNotifier

PUBLIC_NAMES = [
    "AlertGroup",
    "CallbackNotifier",
    "Delivery",
    "LogNotifier",
    "Notification",
    "NotificationPolicy",
    "Outbox",
    "WebhookNotifier",
    "severity_level",
]


def test_the_package_exports_the_pinned_names() -> None:
    """runwatch.sinks.notify.__all__ is the pinned list, and each name is an attribute of the package."""
    assert runwatch.sinks.notify.__all__ == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(runwatch.sinks.notify, name) is not None


def test_the_first_import_path_gives_the_same_objects() -> None:
    """runwatch.sinks.notifiers re-exports exactly the package's names, as the same objects."""
    assert runwatch.sinks.notifiers.__all__ == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(runwatch.sinks.notifiers, name) is getattr(runwatch.sinks.notify, name)


@pytest.mark.parametrize(
    ("type_name", "options", "cls"),
    [
        pytest.param("log_notifier", {}, LogNotifier, id="log_notifier"),
        pytest.param("webhook", {"url": "http://127.0.0.1:9/hook"}, WebhookNotifier, id="webhook"),
        pytest.param("callback", {"target": "json:dumps"}, CallbackNotifier, id="callback"),
        pytest.param(
            "runwatch.sinks.notifiers:WebhookNotifier",
            {"url": "http://127.0.0.1:9/hook"},
            WebhookNotifier,
            id="old-module-path",
        ),
    ],
)
def test_config_type_names_build_the_notifiers(type_name: str, options: dict[str, object], cls: type) -> None:
    """The config's type names, and a module path through the old module, resolve to the notifier classes."""
    config = {
        "sources": {"app": {"type": "in_process"}},
        "sinks": {"notify": {"type": type_name, "inputs": ["app"], **options}},
    }

    spec = load_pipeline_config(config)

    (component,) = [component for component in spec.components if component.id == "notify"]
    assert component.cls is cls
