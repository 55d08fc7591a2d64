"""The few SQL spellings that differ between the store's backends, for statements built once for both.

A statement builder that serves SQLite and PostgreSQL alike takes a
:class:`Dialect` and a parameter list: each value it binds goes through
:meth:`Dialect.param` (SQLite's ``?`` in text order, PostgreSQL's numbered
``$n``), and JSON fields, lists of values and the false literal are spelled
the backend's way. Values are always bound, never written into the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import orjson

__all__ = ["POSTGRES", "SQLITE", "Dialect"]


class Dialect:
    """SQLite's spellings (the default); :class:`_Postgres` overrides them."""

    #: The literal false.
    false = "0"

    def param(self, params: list[Any], value: Any) -> str:
        """Bind ``value`` (appended to ``params``); its placeholder."""
        params.append(value)
        return "?"

    def one_of(self, column: str, params: list[Any], values: Sequence[str]) -> str:
        """``column`` is one of ``values`` (bound as one parameter)."""
        return f"{column} IN (SELECT value FROM json_each({self.param(params, orjson.dumps(list(values)).decode())}))"

    def json_text(self, column: str, field: str) -> str:
        """The top-level ``field`` of the JSON text in ``column``, as SQL text (``NULL`` when absent)."""
        return f"{column} ->> '$.{field}'"

    def json_number(self, column: str, field: str) -> str:
        """The top-level ``field`` of the JSON text in ``column`` as a number (SQLite: as JSON stores it)."""
        return f"{column} ->> '$.{field}'"

    def json_present(self, column: str, field: str) -> str:
        """The top-level ``field`` of the JSON text in ``column`` is there and not JSON ``null``."""
        return f"{column} ->> '$.{field}' IS NOT NULL"


class _Postgres(Dialect):
    """PostgreSQL's spellings (JSON columns are text, read as ``jsonb``)."""

    false = "false"

    def param(self, params: list[Any], value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    def one_of(self, column: str, params: list[Any], values: Sequence[str]) -> str:
        return f"{column} = ANY({self.param(params, list(values))}::text[])"

    def json_text(self, column: str, field: str) -> str:
        return f"({column}::jsonb ->> '{field}')"

    def json_number(self, column: str, field: str) -> str:
        value = f"({column}::jsonb -> '{field}')"
        return f"(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({value})::text::float8 END)"

    def json_present(self, column: str, field: str) -> str:
        value = f"({column}::jsonb -> '{field}')"
        return f"{value} IS NOT NULL AND jsonb_typeof({value}) <> 'null'"


SQLITE: Final[Dialect] = Dialect()
POSTGRES: Final[Dialect] = _Postgres()
