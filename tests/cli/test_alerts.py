"""Tests of ``runwatch alerts`` (runwatch.cli._alerts) on a store written by a real monitor.

The store's run ``alpha`` logged an infinite loss, so the built-in ``non_finite_metric`` rule fired and
resolved there. tests/web/test_alerts.py runs the command against a monitor with rules of its own.
"""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from ._helpers import Store, invoke


def test_alerts_without_an_active_alert_says_so_on_stderr(runner: CliRunner, template: Store) -> None:
    """With nothing pending or firing, alerts prints no table, a note on stderr, and [] as JSON."""
    table = invoke(runner, "alerts", "--db", template.path)
    as_json = invoke(runner, "alerts", "--db", template.path, "--json")

    assert table.exit_code == 0, table.output
    assert table.stdout == ""
    assert table.stderr.strip() == "no alert is pending or firing"
    assert as_json.exit_code == 0, as_json.output
    assert orjson.loads(as_json.stdout) == []


def test_alerts_state_and_run_select_the_resolved_alert(runner: CliRunner, template: Store) -> None:
    """--state resolved lists alpha's resolved alert with its rule, severity and summary; --run beta excludes it."""
    table = invoke(runner, "alerts", "--db", template.path, "--state", "resolved")
    as_json = invoke(runner, "alerts", "--db", template.path, "--state", "resolved", "--json")
    other_run = invoke(runner, "alerts", "--db", template.path, "--state", "resolved", "--run", "beta", "--json")

    assert table.exit_code == 0, table.output
    row = next(line for line in table.stdout.splitlines() if "non_finite_metric" in line)
    assert "alpha" in row and "resolved" in row and "critical" in row and "loss is inf in run alpha" in row
    (alert,) = orjson.loads(as_json.stdout)
    assert (alert["rule"], alert["run_id"], alert["state"], alert["labels"]) == (
        "non_finite_metric",
        "alpha",
        "resolved",
        {"metric": "loss"},
    )
    assert orjson.loads(other_run.stdout) == []
