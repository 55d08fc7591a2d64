"""Tests of ``runwatch check-config`` (runwatch.cli._config)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runwatch.cli import app

VALID_PIPELINE = """
[sources.app]
type = "in_process"

[stages.keep_metrics]
type = "filter"
inputs = ["app"]
kinds = ["metric"]

[sinks.store]
type = "sqlite"
inputs = ["keep_metrics"]
flush_interval_seconds = 0.25
"""


def test_check_config_on_a_valid_file_prints_ok_and_the_graph(runner: CliRunner, tmp_path: Path) -> None:
    """check-config on a valid TOML exits 0, says ok with the component count, and prints each component."""
    path = tmp_path / "pipeline.toml"
    path.write_text(VALID_PIPELINE, encoding="utf-8")

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: ok (3 components)"
    assert lines[1:] == [
        "  sources.app (in_process)",
        "  stages.keep_metrics (filter) <- app",
        "  sinks.store (sqlite) <- keep_metrics",
    ]


def test_check_config_reads_the_pipeline_table_of_a_monitor_config(runner: CliRunner, tmp_path: Path) -> None:
    """check-config on a monitor config validates its [pipeline] table."""
    path = tmp_path / "monitor.toml"
    path.write_text(
        'web_port = 9000\n[pipeline.sources.app]\ntype = "in_process"\n'
        '[pipeline.sinks.void]\ntype = "blackhole"\ninputs = ["app"]\n',
        encoding="utf-8",
    )

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code == 0, result.output
    assert "ok (2 components)" in result.stdout
    assert "  sinks.void (blackhole) <- app" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        pytest.param(
            VALID_PIPELINE.replace("flush_interval_seconds = 0.25", "flush_interval_seconds = -1"),
            "sinks.store.flush_interval_seconds",
            id="bad-option-value",
        ),
        pytest.param(
            VALID_PIPELINE.replace('kinds = ["metric"]', 'kinds = ["metric"]\nbogus = 1'),
            "stages.keep_metrics.bogus",
            id="unknown-option",
        ),
        pytest.param(
            VALID_PIPELINE.replace('inputs = ["keep_metrics"]', 'inputs = ["nowhere"]'),
            "sinks.store.inputs[0]",
            id="unknown-input",
        ),
        pytest.param(
            VALID_PIPELINE.replace('type = "sqlite"', 'type = "no_such_type"'),
            "sinks.store.type",
            id="unknown-type",
        ),
    ],
)
def test_check_config_on_an_invalid_file_prints_one_line_naming_the_key_path(
    runner: CliRunner, tmp_path: Path, text: str, key_path: str
) -> None:
    """check-config on an invalid config exits non-zero with a single error line naming the key path, no traceback."""
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f"{key_path}:" in lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_check_config_on_a_missing_file_fails_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    """check-config on a file that does not exist exits non-zero with one error line naming the file."""
    path = tmp_path / "absent.toml"

    result = runner.invoke(app, ["check-config", str(path)])

    assert result.exit_code != 0
    assert len(result.stderr.splitlines()) == 1
    assert "absent.toml" in result.stderr
    assert "Traceback" not in result.output
