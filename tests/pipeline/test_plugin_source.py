"""The example source plugin in examples/plugin_source, pip-installed and run through its entry point.

It was written from docs/components.md alone: a source with an intake of its
own (a file another program appends events to), its own stop, flush barrier
and loss counting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from installed_examples import installed_example

from runwatch.events import LogEvent, Metric, RunLifecycle
from runwatch.pipeline.component import ComponentContext, Source
from runwatch.pipeline.config import ENTRY_POINT_GROUP, load_pipeline_config
from runwatch.pipeline.runtime import Pipeline
from runwatch.store.sqlite import SQLiteStore
from runwatch.wire import event_to_dict

pytestmark = pytest.mark.timeout(120)

MODULE = "runwatch_example_source"
TIMEOUT = 10
TS = 1_700_000_000.0


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example source once for this module and put it on sys.path."""
    with installed_example("plugin_source", MODULE, tmp_path_factory) as target:
        yield target


def tail_config(source: Path, db: Path) -> dict[str, Any]:
    """The plugin (by its entry-point name) feeding the SQLite store at ``db``."""
    return {
        "sources": {"tail": {"type": "jsonl_tail", "path": str(source), "poll_interval_seconds": 0.01}},
        "sinks": {"store": {"type": "sqlite", "inputs": ["tail"], "path": str(db)}},
    }


def append(path: Path, *lines: bytes) -> None:
    """Append lines to the followed file, as another program would."""
    with path.open("ab") as file:
        file.write(b"".join(line + b"\n" for line in lines))


def line(event: Any) -> bytes:
    return orjson.dumps(event_to_dict(event))


def test_the_entry_point_is_registered_and_resolves_to_a_source(installed_plugin: Path, tmp_path: Path) -> None:
    """runwatch.components names jsonl_tail; a config using it loads without touching the file."""
    found = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert found.get("jsonl_tail") == f"{MODULE}:JsonLinesTailSource"
    spec = load_pipeline_config(tail_config(tmp_path / "events.jsonl", tmp_path / "store.db")).get("tail")
    assert issubclass(spec.cls, Source) and spec.options.poll_interval_seconds == 0.01
    assert not (tmp_path / "events.jsonl").exists()


async def test_appended_events_are_stored_and_a_flush_covers_every_line_written_before_it(
    installed_plugin: Path, tmp_path: Path
) -> None:
    """Lines appended before flush() are committed when it returns; bad lines are counted, not sent."""
    source, db = tmp_path / "events.jsonl", tmp_path / "store.db"
    append(source, line(RunLifecycle("r", TS, "started")), line(Metric("r", TS + 1, {"loss": 0.5}, 0)))
    context = ComponentContext(db_path=str(db), data_dir=tmp_path)
    with anyio.fail_after(TIMEOUT):
        async with Pipeline(tail_config(source, db), context=context) as pipeline:
            assert await pipeline.flush(TIMEOUT)
            assert SQLiteStore(db).run_summary("r")["metrics"]["loss"]["count"] == 1
            append(source, b"not json", json.dumps({"kind": "metric"}).encode(), line(LogEvent("r", TS + 2, "note")))
            assert await pipeline.flush(TIMEOUT)
            assert [event["event_type"] for event in SQLiteStore(db).run_events("r", "note")] == ["note"]
            stats = pipeline.statistics()["components"]["tail"]
            assert stats["read_lines"] == 3
            assert pipeline.lost_on_paths()["store"] == {"tail": 2}  # the two invalid lines, counted at the source
    assert SQLiteStore(db).list_runs()[0]["status"] == "running"
