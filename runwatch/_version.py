"""The version of runwatch (one place: the package, the CLI and the session records read it)."""

from __future__ import annotations

__version__ = "0.1.0"
