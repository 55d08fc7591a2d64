"""The README stays true: its Python blocks run, and its cheap shell commands succeed, in order, in one directory."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
# runwatch commands the test runs; the others keep running (serve, tail) or install things (make, pip, source).
CHEAP_COMMANDS = frozenset({"runs", "show", "db-info", "--help", "--version"})
TIMEOUT = 60


def blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the README, in order."""
    return [(language, code) for language, code in BLOCK.findall(README.read_text())]


def shell_commands(code: str) -> list[list[str]]:
    """The argv of each command line of a shell block (comments dropped)."""
    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def runwatch_executable() -> str:
    """The ``runwatch`` console script of the interpreter running the tests."""
    return str(Path(sys.executable).parent / "runwatch")


def test_readme_names_both_make_commands() -> None:
    """The README keeps the two commands a new user starts with."""
    text = README.read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.timeout(180)
def test_readme_code_blocks_run_in_order(tmp_path: Path) -> None:
    """Every Python block runs without error and every cheap runwatch command exits 0, in README order, in one
    directory (so later blocks see what earlier ones wrote)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MONITOR_", "RUNWATCH_"))}
    ran_python = ran_shell = 0
    for index, (language, code) in enumerate(blocks()):
        if language == "python":
            script = tmp_path / f"block_{index}.py"
            script.write_text(code)
            result = subprocess.run(
                [sys.executable, str(script)],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert result.returncode == 0, f"README block {index} failed:\n{code}\n{result.stderr}"
            ran_python += 1
        elif language == "sh":
            for argv in shell_commands(code):
                if Path(argv[0]).name != "runwatch" or len(argv) < 2 or argv[1] not in CHEAP_COMMANDS:
                    continue
                if not Path(argv[0]).is_absolute() and argv[0] != "runwatch":
                    continue  # a path into a checkout's .venv: the demo's store is not here
                result = subprocess.run(
                    [runwatch_executable(), *argv[1:]],
                    cwd=tmp_path,
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                )
                assert result.returncode == 0, f"README command failed: {shlex.join(argv)}\n{result.stderr}"
                ran_shell += 1
    assert ran_python >= 3 and ran_shell >= 2  # the tour's blocks were found and run
