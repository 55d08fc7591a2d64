"""Tests for runwatch.pipeline.config: loading, validation, and errors that name the key path."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from plugins_for_tests import NotAComponent, RecordingSink

from runwatch.exceptions import ConfigError
from runwatch.pipeline.buffer import OverflowPolicy
from runwatch.pipeline.config import (
    BUILTIN_COMPONENTS,
    BufferSpec,
    PipelineSpec,
    default_pipeline_config,
    load_pipeline_config,
    resolve_component_class,
)
from runwatch.sinks.blackhole import BlackholeSink
from runwatch.sinks.sqlite import SQLiteSink
from runwatch.sources.in_process import InProcessSource
from runwatch.stages.filter import FilterStage

RECORDING_SINK = f"{RecordingSink.__module__}:RecordingSink"

TOML_CONFIG = """
[sources.app]
type = "in_process"
max_events = 500
when_full = "drop_oldest"

[stages.keep_metrics]
type = "filter"
inputs = ["app"]
kinds = ["metric"]

[sinks.store]
type = "sqlite"
inputs = ["keep_metrics"]
flush_interval_seconds = 0.25
buffer = { max_events = 100, when_full = "drop_newest" }

[sinks.void]
type = "blackhole"
inputs = ["app", "keep_metrics"]
"""


def base(**sections: Any) -> dict[str, Any]:
    """A config with one in-process source ``app`` plus the given sections."""
    config: dict[str, Any] = {"sources": {"app": {"type": "in_process"}}}
    config.update(sections)
    return config


def config_error(config: Any) -> ConfigError:
    """The ConfigError that loading ``config`` raises."""
    with pytest.raises(ConfigError) as info:
        load_pipeline_config(config)
    assert isinstance(info.value, ValueError), "ConfigError is also a ValueError"
    return info.value


def assert_same_graph(spec: PipelineSpec) -> None:
    """The graph described by TOML_CONFIG, however it was loaded."""
    ids = [component.id for component in spec.components]
    assert ids.index("app") < ids.index("keep_metrics") < ids.index("store")
    assert ids.index("keep_metrics") < ids.index("void")
    app = spec.get("app")
    assert app.cls is InProcessSource
    assert app.inputs == ()
    assert app.options.max_events == 500
    assert app.options.when_full == "drop_oldest"
    stage = spec.get("keep_metrics")
    assert stage.cls is FilterStage
    assert stage.options.kinds == ["metric"]
    store = spec.get("store")
    assert store.cls is SQLiteSink
    assert store.path == "sinks.store"
    assert store.inputs == ("keep_metrics",)
    assert store.options.flush_interval_seconds == 0.25
    assert store.buffer == BufferSpec(max_events=100, when_full=OverflowPolicy.DROP_NEWEST, max_bytes=32 << 20)
    void = spec.get("void")
    assert void.cls is BlackholeSink
    assert void.inputs == ("app", "keep_metrics")
    assert void.buffer == BufferSpec()
    assert [c.id for c in spec.consumers_of("app")] == ["keep_metrics", "void"]
    assert spec.sink_paths("app") == 3  # app→void, app→keep_metrics→store, app→keep_metrics→void


# -- loading ------------------------------------------------------------------------


def test_load_from_a_dict() -> None:
    """A mapping is validated into a PipelineSpec in topological order."""
    import tomllib

    assert_same_graph(load_pipeline_config(tomllib.loads(TOML_CONFIG)))


def test_load_from_a_toml_file(tmp_path: Path) -> None:
    """A .toml file (given as str or Path) loads to the same graph as the dict."""
    path = tmp_path / "pipeline.toml"
    path.write_text(TOML_CONFIG)
    assert_same_graph(load_pipeline_config(path))
    assert_same_graph(load_pipeline_config(str(path)))


def test_load_from_a_json_file(tmp_path: Path) -> None:
    """A .json file loads to the same graph as the TOML one."""
    import tomllib

    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(tomllib.loads(TOML_CONFIG)))
    assert_same_graph(load_pipeline_config(path))


def test_a_file_may_nest_the_graph_under_pipeline(tmp_path: Path) -> None:
    """A monitor config file with the graph under [pipeline] loads that graph."""
    path = tmp_path / "monitor.toml"
    path.write_text(re.sub(r"^\[", "[pipeline.", TOML_CONFIG, flags=re.MULTILINE))
    assert_same_graph(load_pipeline_config(path))


def test_default_graph() -> None:
    """No config gives the default graph: it validates, and the in-process source reaches the SQLite store."""
    spec = load_pipeline_config(None)
    assert load_pipeline_config(default_pipeline_config()) == spec
    app = spec.get("app")
    assert app.cls is InProcessSource
    store = spec.get("store")
    assert store.cls is SQLiteSink
    assert store.inputs == ("liveness",) and spec.get("liveness").inputs == ("app", "ingest")
    product = load_pipeline_config(default_pipeline_config(alerts=True, snapshots=True))
    assert product.get("store").inputs == ("alerts",) and product.get("snapshots").inputs == ("alerts",)
    assert store.buffer.when_full is OverflowPolicy.BLOCK, "the store loses nothing by default"


def test_int_is_accepted_for_a_float_option() -> None:
    """A whole number (as TOML writes 1) is valid for a float option."""
    spec = load_pipeline_config(
        base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "flush_interval_seconds": 1}})
    )
    assert spec.get("store").options.flush_interval_seconds == 1.0


def test_options_are_frozen() -> None:
    """Validated options cannot be changed after loading."""
    options = load_pipeline_config(None).get("store").options
    with pytest.raises(ValueError):
        options.max_events = 5


def test_builtin_types_resolve_lazily_to_their_classes() -> None:
    """Every built-in type name resolves to a component class of the role its section expects."""
    for name in BUILTIN_COMPONENTS:
        cls = resolve_component_class(name)
        assert cls.role in ("source", "stage", "sink")


# -- globs -------------------------------------------------------------------------------------


def test_glob_inputs_resolve_to_matching_sources_and_stages() -> None:
    """An input glob like 'app*' expands to every matching source and stage id, without duplicates."""
    spec = load_pipeline_config(
        {
            "sources": {
                "app_train": {"type": "in_process"},
                "app_eval": {"type": "in_process"},
                "sys": {"type": "in_process"},
            },
            "stages": {"apply": {"type": "filter", "inputs": ["app_*"]}},
            "sinks": {"out": {"type": "blackhole", "inputs": ["app_eval", "app*"]}},
        }
    )
    assert spec.get("apply").inputs == ("app_train", "app_eval")
    assert spec.get("out").inputs == ("app_eval", "app_train", "apply")


def test_glob_never_matches_its_own_component_or_sinks() -> None:
    """A stage's glob skips the stage itself, and globs never match sink ids."""
    spec = load_pipeline_config(
        {
            "sources": {"a_src": {"type": "in_process"}},
            "stages": {"a_stage": {"type": "filter", "inputs": ["a_*"]}},
            "sinks": {
                "a_sink": {"type": "blackhole", "inputs": ["a_stage"]},
                "other": {"type": "blackhole", "inputs": ["a*"]},
            },
        }
    )
    assert spec.get("a_stage").inputs == ("a_src",)
    assert spec.get("other").inputs == ("a_src", "a_stage")


# -- custom components ---------------------------------------------------------------------------


def test_custom_component_by_module_and_class() -> None:
    """type = 'module:Class' loads a user's Sink subclass and validates its options."""
    spec = load_pipeline_config(base(sinks={"rec": {"type": RECORDING_SINK, "inputs": ["app"], "label": "x"}}))
    rec = spec.get("rec")
    assert rec.cls is RecordingSink
    assert rec.options.label == "x"


def test_custom_component_options_are_validated_with_paths() -> None:
    """A custom component's unknown or ill-typed options name the component and key."""
    error = config_error(base(sinks={"rec": {"type": RECORDING_SINK, "inputs": ["app"], "colour": "red"}}))
    assert error.path == "sinks.rec.colour"
    assert "label" in error.reason, "the message lists the known options"
    error = config_error(base(sinks={"rec": {"type": RECORDING_SINK, "inputs": ["app"], "batch_limit": "many"}}))
    assert error.path == "sinks.rec.batch_limit"


# -- errors name the path ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path", "reason"),
    [
        pytest.param(
            base(sinks={"x": {"type": "nope", "inputs": ["app"]}}),
            "sinks.x.type",
            "unknown type 'nope'",
            id="unknown-type",
        ),
        pytest.param(base(sinks={"x": {"inputs": ["app"]}}), "sinks.x.type", "required", id="missing-type"),
        pytest.param(
            base(sinks={"x": {"type": "no_such_module_xyz:Sink", "inputs": ["app"]}}),
            "sinks.x.type",
            "cannot import",
            id="unimportable-module",
        ),
        pytest.param(
            base(sinks={"x": {"type": f"{RecordingSink.__module__}:Missing", "inputs": ["app"]}}),
            "sinks.x.type",
            "cannot import",
            id="missing-class",
        ),
        pytest.param(
            base(sinks={"x": {"type": f"{NotAComponent.__module__}:NotAComponent", "inputs": ["app"]}}),
            "sinks.x.type",
            "not a runwatch",
            id="not-a-component",
        ),
        pytest.param(
            base(sinks={"x": {"type": "in_process", "inputs": ["app"]}}), "sinks.x.type", "is a source", id="wrong-role"
        ),
        pytest.param(
            base(sinks={"x": {"type": "blackhole", "inputs": ["nowhere"]}}),
            "sinks.x.inputs[0]",
            "unknown input 'nowhere'",
            id="unknown-input",
        ),
        pytest.param(
            base(
                sinks={
                    "a": {"type": "blackhole", "inputs": ["app"]},
                    "b": {"type": "blackhole", "inputs": ["app", "a"]},
                }
            ),
            "sinks.b.inputs[1]",
            "is a sink",
            id="input-is-a-sink",
        ),
        pytest.param(base(sinks={"x": {"type": "blackhole"}}), "sinks.x.inputs", "required", id="missing-inputs"),
        pytest.param(
            base(sinks={"x": {"type": "blackhole", "inputs": []}}),
            "sinks.x.inputs",
            "non-empty list",
            id="empty-inputs",
        ),
        pytest.param(
            base(sinks={"x": {"type": "blackhole", "inputs": "app"}}),
            "sinks.x.inputs",
            "non-empty list",
            id="inputs-string",
        ),
        pytest.param(
            {
                "sources": {"app": {"type": "in_process", "inputs": ["app"]}},
                "sinks": {"x": {"type": "blackhole", "inputs": ["app"]}},
            },
            "sources.app.inputs",
            "takes no inputs",
            id="inputs-on-a-source",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "flush_interval_seconds": "fast"}}),
            "sinks.store.flush_interval_seconds",
            "'fast'",
            id="wrong-option-type",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "flush_interval_seconds": -1.0}}),
            "sinks.store.flush_interval_seconds",
            "greater than 0",
            id="option-out-of-range",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "batch_size": 10}}),
            "sinks.store.batch_size",
            "unknown option",
            id="unknown-option",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": {"when_full": "explode"}}}),
            "sinks.store.buffer.when_full",
            "explode",
            id="bad-when-full",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": {"max_events": 0}}}),
            "sinks.store.buffer.max_events",
            "positive integer",
            id="bad-buffer-max-events",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": {"max_bytes": 1024}}}),
            "sinks.store.buffer.max_bytes",
            "at least 65536 bytes",
            id="buffer-max-bytes-too-small",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": {"max_bytes": "1 MiB"}}}),
            "sinks.store.buffer.max_bytes",
            "'1 MiB'",
            id="buffer-max-bytes-not-an-integer",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "max_pending_bytes": 10}}),
            "sinks.store.max_pending_bytes",
            "greater than or equal to 65536",
            id="store-max-pending-bytes",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": {"size": 5}}}),
            "sinks.store.buffer.size",
            "unknown buffer option",
            id="unknown-buffer-option",
        ),
        pytest.param(
            base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "buffer": 5}}),
            "sinks.store.buffer",
            "must be a table",
            id="buffer-not-a-table",
        ),
        pytest.param(
            base(
                stages={"app": {"type": "filter", "inputs": ["app"]}},
                sinks={"x": {"type": "blackhole", "inputs": ["app"]}},
            ),
            "stages.app",
            "sources.app",
            id="duplicate-id-across-sections",
        ),
        pytest.param(
            base(sinks={"x": {"type": "blackhole", "inputs": ["zz*"]}}),
            "sinks.x.inputs[0]",
            "'zz*' matches no",
            id="glob-matches-nothing",
        ),
        pytest.param(
            base(sinks={"bad id": {"type": "blackhole", "inputs": ["app"]}}),
            "sinks.bad id",
            "component id",
            id="bad-id",
        ),
        pytest.param(base(sinks={"x": "blackhole"}), "sinks.x", "must be a table", id="component-not-a-table"),
        pytest.param(base(sinks=["x"]), "sinks", "table of components", id="section-not-a-table"),
        pytest.param(base(sinks={}), "sinks", "at least one sink", id="no-sink"),
        pytest.param(
            {"sinks": {"x": {"type": "blackhole", "inputs": ["app"]}}}, "sources", "at least one source", id="no-source"
        ),
        pytest.param(base(transforms={}), "transforms", "unknown section", id="unknown-section"),
    ],
)
def test_errors_name_the_key_path(config: dict[str, Any], path: str, reason: str) -> None:
    """Every invalid config raises ConfigError whose path names the component and key."""
    error = config_error(config)
    assert error.path == path
    assert reason in error.reason
    assert str(error).startswith(f"{path}: ")


def test_a_cycle_between_two_stages_names_the_cycle() -> None:
    """Two stages feeding each other fail with the whole cycle path in the message."""
    error = config_error(
        base(
            stages={"a": {"type": "filter", "inputs": ["app", "b"]}, "b": {"type": "filter", "inputs": ["a"]}},
            sinks={"out": {"type": "blackhole", "inputs": ["b"]}},
        )
    )
    assert error.path in ("stages.a.inputs", "stages.b.inputs")
    assert "stages.a → stages.b → stages.a" in error.reason or "stages.b → stages.a → stages.b" in error.reason


def test_a_stage_feeding_itself_is_a_cycle() -> None:
    """A stage listing its own id as input is reported as a cycle."""
    error = config_error(
        base(stages={"a": {"type": "filter", "inputs": ["a"]}}, sinks={"out": {"type": "blackhole", "inputs": ["a"]}})
    )
    assert error.path == "stages.a.inputs"
    assert "stages.a → stages.a" in error.reason


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("broken.toml", "[sources.app\ntype = ", id="toml"),
        pytest.param("broken.json", "{not json", id="json"),
    ],
)
def test_unparsable_file_is_a_config_error(tmp_path: Path, name: str, text: str) -> None:
    """A file that is not valid TOML/JSON is a ConfigError naming the file and format."""
    path = tmp_path / name
    path.write_text(text)
    error = config_error(path)
    assert str(path) in error.reason
    assert ("JSON" if name.endswith(".json") else "TOML") in error.reason


def test_unparsable_upper_case_json_file_names_json(tmp_path: Path) -> None:
    """A broken file named *.JSON is parsed as JSON, so the error must say JSON, not TOML."""
    path = tmp_path / "BROKEN.JSON"
    path.write_text("{not json")
    error = config_error(path)
    assert "valid JSON" in error.reason


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming the file."""
    missing = tmp_path / "absent.toml"
    error = config_error(missing)
    assert str(missing) in error.reason


def test_file_holding_a_list_is_a_config_error(tmp_path: Path) -> None:
    """A JSON file whose top level is not a table is a ConfigError."""
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert "table" in config_error(path).reason


def test_a_config_of_the_wrong_type_is_a_type_error() -> None:
    """Passing something that is neither a mapping nor a path is a TypeError."""
    with pytest.raises(TypeError):
        load_pipeline_config(42)  # type: ignore[arg-type]


def test_loading_opens_nothing_but_the_config(tmp_path: Path) -> None:
    """Loading a config with a SQLite sink never creates the database file."""
    db = tmp_path / "never.db"
    load_pipeline_config(base(sinks={"store": {"type": "sqlite", "inputs": ["app"], "path": str(db)}}))
    assert not db.exists()
