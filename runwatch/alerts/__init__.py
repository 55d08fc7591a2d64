"""Alerts: rules evaluated over the event stream with Prometheus semantics.

:mod:`runwatch.alerts.rules` is the rule model, :mod:`runwatch.alerts.engine`
the pure evaluator (no I/O, no clock) and :mod:`runwatch.alerts.stage` the
pipeline stage (type ``alerts``) that runs it, persists its state and
publishes the alert events. Only the pure parts are re-exported here.
"""

from __future__ import annotations

from .engine import AlertEngine as AlertEngine
from .rules import DEFAULT_RULES as DEFAULT_RULES
from .rules import AbsenceRule as AbsenceRule
from .rules import AnomalyRule as AnomalyRule
from .rules import NonFiniteRule as NonFiniteRule
from .rules import RateRule as RateRule
from .rules import Rule as Rule
from .rules import StagnationRule as StagnationRule
from .rules import ThresholdRule as ThresholdRule
from .rules import parse_rule as parse_rule
from .rules import parse_rules as parse_rules

__all__ = [
    "DEFAULT_RULES",
    "AbsenceRule",
    "AlertEngine",
    "AnomalyRule",
    "NonFiniteRule",
    "RateRule",
    "Rule",
    "StagnationRule",
    "ThresholdRule",
    "parse_rule",
    "parse_rules",
]
