"""Tests for runwatch.config.MonitorConfig: defaults, validation, files and environment layering."""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from plugins_for_overload import StuckSink

from runwatch import ConfigError, MonitorConfig, WebMonitor
from runwatch.assemble import monitor_pipeline_config
from runwatch.pipeline.config import load_pipeline_config
from runwatch.pipeline.runtime import Pipeline

SHUTDOWN = "shutdown_timeout_seconds"

SEED_DEFAULTS = {
    "db_path": "monitoring.db",
    "data_dir": "monitor_data",
    "static_dir": "static",
    "web_port": 8080,
    "update_interval": 1.0,
    "snapshot_interval": 300.0,
    "max_events": 1000,
    "max_snapshots": 100,
    "debug": False,
}

PIPELINE_TOML = """
[pipeline.sources.app]
type = "in_process"

[pipeline.sinks.store]
type = "sqlite"
inputs = ["app"]
flush_interval_seconds = 0.25
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every MONITOR_* variable and RUNWATCH_TOKEN so the host environment cannot leak in."""
    for name in list(os.environ):
        if name.startswith("MONITOR_") or name == "RUNWATCH_TOKEN":
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and validation ----------------------------------------------------------


def test_defaults_match_the_seed_api() -> None:
    """MonitorConfig() has exactly the seed's defaults, its fields first in the seed's order."""
    config = MonitorConfig()

    assert {name: getattr(config, name) for name in SEED_DEFAULTS} == SEED_DEFAULTS
    assert [field.name for field in fields(MonitorConfig)][: len(SEED_DEFAULTS)] == list(SEED_DEFAULTS)
    assert (config.pipeline, config.web_host, config.web_token) == (None, "127.0.0.1", None)


def test_positional_arguments_follow_the_seed_order() -> None:
    """The seed's constructor parameters can be passed positionally in the seed's order."""
    config = MonitorConfig("a.db", "data", "www", 9000, 2.0, 60.0, 10, 5, True)

    assert (config.db_path, config.data_dir, config.static_dir, config.web_port) == ("a.db", "data", "www", 9000)
    assert (config.update_interval, config.snapshot_interval, config.max_events) == (2.0, 60.0, 10)
    assert (config.max_snapshots, config.debug) == (5, True)


def test_load_without_environment_gives_the_defaults() -> None:
    """MonitorConfig.load() with no MONITOR_* variables equals the plain defaults."""
    assert MonitorConfig.load() == MonitorConfig()


@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        pytest.param({"web_port": -1}, ValueError, "web_port", id="negative-port"),
        pytest.param({"web_port": 70000}, ValueError, "web_port", id="port-70000"),
        pytest.param({"web_port": "8080"}, TypeError, "web_port", id="string-port"),
        pytest.param({"web_port": True}, TypeError, "web_port", id="bool-port"),
        pytest.param({"update_interval": 0}, ValueError, "update_interval", id="zero-update-interval"),
        pytest.param({"update_interval": -1.0}, ValueError, "update_interval", id="negative-update-interval"),
        pytest.param({"update_interval": math.inf}, ValueError, "update_interval", id="inf-update-interval"),
        pytest.param({"update_interval": math.nan}, ValueError, "update_interval", id="nan-update-interval"),
        pytest.param({"snapshot_interval": 0.0}, ValueError, "snapshot_interval", id="zero-snapshot-interval"),
        pytest.param({"snapshot_interval": -5}, ValueError, "snapshot_interval", id="negative-snapshot-interval"),
        pytest.param({"snapshot_interval": math.inf}, ValueError, "snapshot_interval", id="inf-snapshot-interval"),
        pytest.param({"max_events": 0}, ValueError, "max_events", id="zero-max-events"),
        pytest.param({"max_events": 1.5}, TypeError, "max_events", id="float-max-events"),
        pytest.param({"max_snapshots": 0}, ValueError, "max_snapshots", id="zero-max-snapshots"),
        pytest.param({"debug": "yes"}, TypeError, "debug", id="string-debug"),
        pytest.param({"debug": 1}, TypeError, "debug", id="int-debug"),
        pytest.param({"db_path": ""}, ValueError, "db_path", id="empty-db-path"),
        pytest.param({"db_path": 3}, TypeError, "db_path", id="int-db-path"),
        pytest.param({"data_dir": None}, TypeError, "data_dir", id="none-data-dir"),
        pytest.param({"web_host": ""}, TypeError, "web_host", id="empty-web-host"),
        pytest.param({"web_token": "short"}, ValueError, "web_token", id="short-token"),
        pytest.param({"pipeline": ["sources"]}, TypeError, "pipeline", id="list-pipeline"),
        pytest.param({"shutdown_timeout_seconds": 0}, ValueError, "shutdown_timeout_seconds", id="zero-shutdown"),
        pytest.param(
            {"shutdown_timeout_seconds": -1.0}, ValueError, "shutdown_timeout_seconds", id="negative-shutdown"
        ),
        pytest.param({"shutdown_timeout_seconds": math.inf}, ValueError, "shutdown_timeout_seconds", id="inf-shutdown"),
        pytest.param({"shutdown_timeout_seconds": math.nan}, ValueError, "shutdown_timeout_seconds", id="nan-shutdown"),
        pytest.param({"shutdown_timeout_seconds": "5"}, TypeError, "shutdown_timeout_seconds", id="string-shutdown"),
        pytest.param({"shutdown_timeout_seconds": True}, TypeError, "shutdown_timeout_seconds", id="bool-shutdown"),
        pytest.param({"max_images_per_second": 0}, ValueError, "max_images_per_second", id="zero-image-rate"),
        pytest.param({"max_images_per_second": "5"}, TypeError, "max_images_per_second", id="string-image-rate"),
        pytest.param({"max_image_bytes_per_run": 0}, ValueError, "max_image_bytes_per_run", id="zero-image-budget"),
        pytest.param({"max_image_bytes_per_run": 1.5}, TypeError, "max_image_bytes_per_run", id="float-image-budget"),
    ],
)
def test_invalid_values_raise_naming_the_field(changes: dict[str, Any], error: type[Exception], field: str) -> None:
    """An out-of-range or wrongly typed value raises ValueError/TypeError whose message names the field."""
    with pytest.raises(error, match=re.escape(field)):
        MonitorConfig(**changes)


def test_with_changes_validates_again() -> None:
    """with_changes returns a changed copy and rejects an invalid change like the constructor."""
    config = MonitorConfig()

    assert config.with_changes(web_port=0).web_port == 0
    assert config.web_port == 8080
    with pytest.raises(ValueError, match="max_events"):
        config.with_changes(max_events=0)


def test_path_like_values_become_strings(tmp_path: Path) -> None:
    """Path objects for db_path, data_dir and pipeline are stored as strings."""
    config = MonitorConfig(db_path=tmp_path / "m.db", data_dir=tmp_path, pipeline=tmp_path / "p.toml")

    assert (config.db_path, config.data_dir, config.pipeline) == (
        str(tmp_path / "m.db"),
        str(tmp_path),
        str(tmp_path / "p.toml"),
    )


def test_pipeline_accepts_a_path_or_a_mapping(tmp_path: Path) -> None:
    """pipeline may be a config file path or a mapping, and both load as the same valid graph."""
    path = write(tmp_path / "pipeline.toml", PIPELINE_TOML)
    mapping = {"sources": {"app": {"type": "in_process"}}, "sinks": {"store": {"type": "sqlite", "inputs": ["app"]}}}

    from_path = MonitorConfig(pipeline=str(path))
    from_mapping = MonitorConfig(pipeline=mapping)

    assert from_path.pipeline == str(path)
    assert from_mapping.pipeline == mapping
    for config in (from_path, from_mapping):
        spec = load_pipeline_config(config.pipeline)  # type: ignore[arg-type]
        assert [component.path for component in spec.components] == ["sources.app", "sinks.store"]


# -- files ----------------------------------------------------------------------------


def test_from_file_reads_json(tmp_path: Path) -> None:
    """A JSON file's settings replace the defaults; the others stay."""
    path = write(tmp_path / "monitor.json", json.dumps({"web_port": 9001, "debug": True, "db_path": "runs.db"}))

    config = MonitorConfig.from_file(path)

    assert (config.web_port, config.debug, config.db_path) == (9001, True, "runs.db")
    assert config.max_events == SEED_DEFAULTS["max_events"]


def test_from_file_reads_toml_at_the_top_level(tmp_path: Path) -> None:
    """A TOML file may hold the settings at its top level."""
    path = write(tmp_path / "monitor.toml", 'web_port = 9002\nupdate_interval = 0.5\ndata_dir = "out"\n')

    config = MonitorConfig.from_file(path)

    assert (config.web_port, config.update_interval, config.data_dir) == (9002, 0.5, "out")


def test_from_file_reads_a_monitor_table_and_a_pipeline_table(tmp_path: Path) -> None:
    """TOML settings may sit in a [monitor] table beside a [pipeline] table that becomes the graph mapping."""
    path = write(tmp_path / "monitor.toml", "[monitor]\nweb_port = 9003\nmax_events = 50\n" + PIPELINE_TOML)

    config = MonitorConfig.from_file(path)

    assert (config.web_port, config.max_events) == (9003, 50)
    assert isinstance(config.pipeline, dict)
    assert config.pipeline["sinks"]["store"]["flush_interval_seconds"] == 0.25
    spec = load_pipeline_config(config.pipeline)
    assert [component.path for component in spec.components] == ["sources.app", "sinks.store"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("monitor.toml", "web_prot = 9000\n", id="toml-top-level"),
        pytest.param("monitor.toml", "[monitor]\nweb_prot = 9000\n", id="toml-monitor-table"),
        pytest.param("monitor.json", '{"web_prot": 9000}', id="json"),
    ],
)
def test_unknown_key_in_a_file_raises_config_error_naming_it(tmp_path: Path, name: str, text: str) -> None:
    """An unknown setting in a config file raises ConfigError whose path is that key."""
    path = write(tmp_path / name, text)

    with pytest.raises(ConfigError, match="web_prot") as raised:
        MonitorConfig.from_file(path)

    assert raised.value.path == "web_prot"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("monitor.toml", "web_port = \n", id="bad-toml"),
        pytest.param("monitor.json", "{", id="bad-json"),
        pytest.param("monitor.json", "[1, 2]", id="json-list"),
    ],
)
def test_unparsable_file_raises_config_error(tmp_path: Path, name: str, text: str) -> None:
    """A file that is not a table of settings raises ConfigError naming the file."""
    path = write(tmp_path / name, text)

    with pytest.raises(ConfigError, match=re.escape(str(path))):
        MonitorConfig.from_file(path)


def test_missing_file_raises_config_error(tmp_path: Path) -> None:
    """A config file that does not exist raises ConfigError naming it."""
    with pytest.raises(ConfigError, match="absent.toml"):
        MonitorConfig.from_file(tmp_path / "absent.toml")


def test_invalid_value_in_a_file_raises_naming_the_field(tmp_path: Path) -> None:
    """A file value out of range raises ValueError naming the field."""
    path = write(tmp_path / "monitor.toml", "web_port = -1\n")

    with pytest.raises(ValueError, match="web_port"):
        MonitorConfig.from_file(path)


# -- environment and layering --------------------------------------------------------


def test_environment_overrides_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """MONITOR_* variables are parsed to each field's type by load()."""
    monkeypatch.setenv("MONITOR_WEB_PORT", "9100")
    monkeypatch.setenv("MONITOR_DEBUG", "yes")
    monkeypatch.setenv("MONITOR_DB_PATH", "/srv/runs.db")
    monkeypatch.setenv("MONITOR_UPDATE_INTERVAL", "0.25")
    monkeypatch.setenv("MONITOR_WEB_TOKEN", "env-token-123")

    config = MonitorConfig.load()

    assert (config.web_port, config.debug, config.db_path) == (9100, True, "/srv/runs.db")
    assert (config.update_interval, config.web_token) == (0.25, "env-token-123")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1", True, id="1"),
        pytest.param("TRUE", True, id="TRUE"),
        pytest.param("on", True, id="on"),
        pytest.param("0", False, id="0"),
        pytest.param("False", False, id="False"),
        pytest.param("off", False, id="off"),
    ],
)
def test_boolean_environment_values(monkeypatch: pytest.MonkeyPatch, text: str, expected: bool) -> None:
    """MONITOR_DEBUG accepts the usual spellings of true and false, case-insensitively."""
    monkeypatch.setenv("MONITOR_DEBUG", text)

    assert MonitorConfig.load().debug is expected


def test_plain_constructor_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MonitorConfig(...) takes exactly what it is given; only load() and from_file() read MONITOR_*."""
    monkeypatch.setenv("MONITOR_WEB_PORT", "9100")

    assert MonitorConfig().web_port == 8080
    assert MonitorConfig.load().web_port == 9100


def test_layering_file_then_environment_then_keywords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file beats the defaults, the environment beats the file, keyword arguments beat both."""
    path = write(tmp_path / "monitor.toml", 'web_port = 9000\ndebug = false\ndb_path = "file.db"\nmax_events = 7\n')
    monkeypatch.setenv("MONITOR_WEB_PORT", "9001")
    monkeypatch.setenv("MONITOR_DEBUG", "true")

    config = MonitorConfig.from_file(path, web_port=9002)

    assert config.web_port == 9002  # keyword beats environment and file
    assert config.debug is True  # environment beats file
    assert (config.db_path, config.max_events) == ("file.db", 7)  # file beats defaults
    assert MonitorConfig.from_file(path).web_port == 9001


def test_load_keywords_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """load(**overrides) applies keyword arguments over MONITOR_* variables."""
    monkeypatch.setenv("MONITOR_DB_PATH", "env.db")
    monkeypatch.setenv("MONITOR_MAX_EVENTS", "20")

    config = MonitorConfig.load(db_path="kw.db")

    assert (config.db_path, config.max_events) == ("kw.db", 20)


def test_unknown_keyword_is_a_type_error() -> None:
    """load() with a keyword that is no setting raises TypeError naming it."""
    with pytest.raises(TypeError, match="web_prot"):
        MonitorConfig.load(web_prot=9000)


@pytest.mark.parametrize(
    ("variable", "text"),
    [
        pytest.param("MONITOR_WEB_PORT", "eighty", id="port-not-int"),
        pytest.param("MONITOR_WEB_PORT", "80.5", id="port-float"),
        pytest.param("MONITOR_DEBUG", "maybe", id="debug-not-bool"),
        pytest.param("MONITOR_UPDATE_INTERVAL", "fast", id="interval-not-float"),
        pytest.param("MONITOR_MAX_EVENTS", "", id="max-events-empty"),
    ],
)
def test_bad_environment_value_raises_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str
) -> None:
    """An unparsable MONITOR_* value raises ValueError naming the variable."""
    monkeypatch.setenv(variable, text)

    with pytest.raises(ValueError, match=variable):
        MonitorConfig.load()


def test_runwatch_token_fills_web_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """RUNWATCH_TOKEN fills web_token for load() and from_file(); a keyword or MONITOR_WEB_TOKEN wins over it."""
    monkeypatch.setenv("RUNWATCH_TOKEN", "shared-secret-token")
    path = write(tmp_path / "monitor.toml", "web_port = 9000\n")

    assert MonitorConfig.load().web_token == "shared-secret-token"
    assert MonitorConfig.from_file(path).web_token == "shared-secret-token"
    assert MonitorConfig.load(web_token="keyword-token").web_token == "keyword-token"
    monkeypatch.setenv("MONITOR_WEB_TOKEN", "monitor-env-token")
    assert MonitorConfig.load().web_token == "monitor-env-token"
    assert MonitorConfig().web_token is None


def test_pipeline_from_the_environment_is_a_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """MONITOR_PIPELINE names a pipeline config file."""
    path = write(tmp_path / "pipeline.toml", PIPELINE_TOML)
    monkeypatch.setenv("MONITOR_PIPELINE", str(path))

    config = MonitorConfig.load()

    assert config.pipeline == str(path)
    assert len(load_pipeline_config(config.pipeline).components) == 2


# -- shutdown_timeout_seconds -----------------------------------------------------------------

STUCK = f"{StuckSink.__module__}:StuckSink"


def test_shutdown_timeout_defaults_to_10_seconds_and_layers_like_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """shutdown_timeout_seconds defaults to 10 and layers file < MONITOR_SHUTDOWN_TIMEOUT_SECONDS < keywords."""
    assert MonitorConfig().shutdown_timeout_seconds == 10.0
    path = write(tmp_path / "monitor.toml", "shutdown_timeout_seconds = 3\n")
    assert MonitorConfig.from_file(path).shutdown_timeout_seconds == 3
    monkeypatch.setenv("MONITOR_SHUTDOWN_TIMEOUT_SECONDS", "2.5")
    assert MonitorConfig.load().shutdown_timeout_seconds == 2.5
    assert MonitorConfig.from_file(path).shutdown_timeout_seconds == 2.5  # the environment beats the file
    assert MonitorConfig.from_file(path, shutdown_timeout_seconds=1.5).shutdown_timeout_seconds == 1.5
    monkeypatch.setenv("MONITOR_SHUTDOWN_TIMEOUT_SECONDS", "soon")
    with pytest.raises(ValueError, match="MONITOR_SHUTDOWN_TIMEOUT_SECONDS"):
        MonitorConfig.load()
    monkeypatch.setenv("MONITOR_SHUTDOWN_TIMEOUT_SECONDS", "0")
    with pytest.raises(ValueError, match="shutdown_timeout_seconds.*MONITOR_SHUTDOWN_TIMEOUT_SECONDS"):
        MonitorConfig.load()


USER_GRAPH = {"sources": {"app": {"type": "in_process"}}, "sinks": {"out": {"type": "blackhole", "inputs": ["app"]}}}


@pytest.mark.parametrize(
    ("pipeline", "expected"),
    [
        pytest.param(None, 4.0, id="default-graph"),
        pytest.param(USER_GRAPH, 4.0, id="own-graph-without-deadline"),
        pytest.param({**USER_GRAPH, "shutdown_timeout_seconds": 7}, 7.0, id="own-graph-with-deadline"),
        pytest.param("file", 6.0, id="own-graph-file-with-deadline"),
    ],
)
def test_shutdown_timeout_reaches_the_pipeline_unless_its_own_config_sets_one(
    tmp_path: Path, pipeline: Any, expected: float
) -> None:
    """The monitor's shutdown_timeout_seconds is the graph's deadline; a user graph's own top-level value wins."""
    if pipeline == "file":
        pipeline = str(write(tmp_path / "graph.json", json.dumps({**USER_GRAPH, "shutdown_timeout_seconds": 6})))
    config = MonitorConfig(pipeline=pipeline, shutdown_timeout_seconds=4.0)
    assert Pipeline(monitor_pipeline_config(config)).shutdown_timeout_seconds == expected


def test_a_monitor_with_a_stuck_sink_closes_within_its_shutdown_timeout(tmp_path: Path) -> None:
    """With a sink that never returns and shutdown_timeout_seconds=1, close() returns after about 1 s, not 10."""
    pipeline = {"sources": {"app": {"type": "in_process"}}, "sinks": {"stuck": {"type": STUCK, "inputs": ["app"]}}}
    config = MonitorConfig(
        db_path=str(tmp_path / "m.db"),
        data_dir=str(tmp_path / "d"),
        web_port=0,
        pipeline=pipeline,
        shutdown_timeout_seconds=1.0,
        commit_timeout_seconds=0.5,  # start_training waits this long for the stuck sink
    )
    monitor = WebMonitor(config)
    try:
        monitor.start_training()  # no run id: this graph has no store to look an existing run up in
        for step in range(100):
            monitor.update_metrics({"loss": float(step)})
    finally:
        started = time.monotonic()
        monitor.close()
        elapsed = time.monotonic() - started
    assert monitor.pipeline_thread.pipeline.shutdown_timeout_seconds == 1.0
    assert 0.9 <= elapsed < 1.0 + 5, f"close took {elapsed:.2f} s"


def test_media_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MONITOR_MAX_IMAGES_PER_SECOND and MONITOR_MAX_IMAGE_BYTES_PER_RUN set the media limits; empty means none."""
    monkeypatch.setenv("MONITOR_MAX_IMAGES_PER_SECOND", "12.5")
    monkeypatch.setenv("MONITOR_MAX_IMAGE_BYTES_PER_RUN", "")
    config = MonitorConfig.load()
    assert (config.max_images_per_second, config.max_image_bytes_per_run) == (12.5, None)
