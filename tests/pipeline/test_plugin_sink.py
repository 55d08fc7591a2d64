"""The example plugin in examples/plugin_sink, pip-installed and found through its entry point
(installed as tests/installed_examples.py says)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from installed_examples import installed_example

from runwatch.events import Heartbeat, LogEvent, Metric, RunLifecycle
from runwatch.exceptions import ConfigError
from runwatch.pipeline.component import ComponentContext, Sink
from runwatch.pipeline.config import ENTRY_POINT_GROUP, load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.wire import event_from_dict

pytestmark = pytest.mark.timeout(120)

MODULE = "runwatch_example_sink"
TIMEOUT = 10
TS = 1_700_000_000.0


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example plugin once for this module and put it on sys.path."""
    with installed_example("plugin_sink", MODULE, tmp_path_factory) as target:
        yield target


def plugin_config(path: Path) -> str:
    """A TOML pipeline config using the plugin by its entry-point name."""
    return f"""
[sources.app]
type = "in_process"

[sinks.lines]
type = "jsonl_file"
inputs = ["app"]
path = {json.dumps(str(path))}
"""


def test_the_entry_point_is_registered(installed_plugin: Path) -> None:
    """After installation, the runwatch.components group names jsonl_file → JsonLinesSink."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found.get("jsonl_file") == f"{MODULE}:JsonLinesSink"


def test_a_config_resolves_the_type_through_the_entry_point(installed_plugin: Path, tmp_path: Path) -> None:
    """type = 'jsonl_file' resolves to the plugin's Sink class, and opening nothing while loading."""
    out = tmp_path / "events.jsonl"
    config = tmp_path / "pipeline.toml"
    config.write_text(plugin_config(out))
    spec = load_pipeline_config(config)
    lines = spec.get("lines")
    assert issubclass(lines.cls, Sink)
    assert lines.cls.__module__ == MODULE
    assert lines.options.path == str(out)
    assert not out.exists()


def test_the_plugin_validates_its_options(installed_plugin: Path) -> None:
    """The plugin's required path option is enforced with a key path, like a built-in's."""
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(
            {"sources": {"app": {"type": "in_process"}}, "sinks": {"lines": {"type": "jsonl_file", "inputs": ["app"]}}}
        )
    assert info.value.path == "sinks.lines.path"


async def test_the_plugin_writes_every_event_as_a_json_line(installed_plugin: Path, tmp_path: Path) -> None:
    """A pipeline with the plugin writes each event as one JSON line, complete once flush returns."""
    out = tmp_path / "nested" / "events.jsonl"
    config = tmp_path / "pipeline.toml"
    config.write_text(plugin_config(out))
    events: list[Any] = [
        RunLifecycle("run-1", TS, "started", config={"lr": 0.01}),
        *(Metric("run-1", TS + step, {"loss": 1.0 / (step + 1)}, step=step) for step in range(50)),
        LogEvent("run-1", TS + 60, "episode_end", data={"reward": 2.5}),
        Heartbeat("run-1", TS + 61, {"total_steps": 50}),
    ]
    pipeline = Pipeline(config, context=ComponentContext(db_path=str(tmp_path / "unused.db"), data_dir=tmp_path))
    with anyio.fail_after(TIMEOUT):
        async with pipeline:
            await anyio.to_thread.run_sync(lambda: [pipeline.emit(event) for event in events])
            assert await pipeline.flush(timeout=TIMEOUT) is True
            written = (await anyio.Path(out).read_bytes()).splitlines()
            assert [event_from_dict(orjson.loads(line)) for line in written] == events
            stats = pipeline.statistics()["components"]["lines"]
            assert stats["written_events"] == len(events)
            assert stats["flushes"] >= 1
            pipeline.emit(Heartbeat("run-1", TS + 62))
    # Stop drained the last event into the file and closed it.
    written = (await anyio.Path(out).read_bytes()).splitlines()
    assert len(written) == len(events) + 1
    assert orjson.loads(written[-1])["kind"] == "heartbeat"
