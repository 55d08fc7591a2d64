"""Tests of the ``runwatch`` command as a whole (runwatch.cli): arguments, help, version, entry points."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from typer.testing import CliRunner

import runwatch.cli

from ._helpers import Store, invoke


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        pytest.param(["runs", "--kind", "robot"], "--kind: must be one of training, session", id="runs-kind"),
        pytest.param(["alerts", "--state", "bogus"], "--state: must be one of pending, firing, resolved", id="state"),
        pytest.param(["show", ""], "RUN", id="show-empty-run"),
        pytest.param(["cleanup", "--older-than", "soon"], "--older-than", id="cleanup-cutoff"),
        pytest.param(["migrate", "--to", "99"], "--to", id="migrate-version"),
        pytest.param(["tail", "-n", "-1"], "-n", id="tail-lines"),
    ],
)
def test_every_bad_argument_exits_2(runner: CliRunner, template: Store, args: list[str], mentions: str) -> None:
    """A bad argument to any command exits 2 with one line naming it, never Python's None or a traceback."""
    result = invoke(runner, *args, "--db", template.path) if args[0] != "tail" else invoke(runner, *args)

    assert result.exit_code == 2, result.output
    assert mentions in result.stderr
    assert "None" not in result.stderr and "Traceback" not in result.output


def test_every_help_shows_its_defaults_and_no_bool_metavar(runner: CliRunner) -> None:
    """Each command's --help keeps bracketed defaults verbatim and shows no <bool> placeholder on flags."""
    from typer.main import get_command

    from runwatch.cli import app as cli_app

    commands = sorted(get_command(cli_app).commands)  # type: ignore[attr-defined]
    assert {"serve", "runs", "alerts", "show", "tail"} <= set(commands)
    for command in commands:
        result = invoke(runner, command, "--help")
        assert result.exit_code == 0, result.output
        assert "<bool>" not in result.stdout, command
    serve = " ".join(invoke(runner, "serve", "--help").stdout.split())  # help wraps at the terminal's width
    assert "[default: 127.0.0.1]" in serve and "[default: 8080]" in serve and "[pipeline]" in serve
    assert "[default: pending and firing]" in " ".join(invoke(runner, "alerts", "--help").stdout.split())


def test_version_prints_the_package_version(runner: CliRunner) -> None:
    """runwatch --version prints the version and exits 0."""
    import runwatch

    result = invoke(runner, "--version")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"runwatch {runwatch.__version__}"


def test_python_m_runwatch_cli_runs_the_command() -> None:
    """``python -m runwatch.cli`` is the runwatch command (child processes of other tests start servers so)."""
    import runwatch

    completed = subprocess.run(
        [sys.executable, "-m", "runwatch.cli", "--version"], capture_output=True, text=True, timeout=30, check=False
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"runwatch {runwatch.__version__}"


def test_the_console_script_is_runwatch_cli_main() -> None:
    """The installed ``runwatch`` console script loads runwatch.cli.main."""
    (script,) = entry_points(group="console_scripts", name="runwatch")

    assert script.value == "runwatch.cli:main"
    assert script.load() is runwatch.cli.main
