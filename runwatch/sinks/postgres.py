"""The ``postgres`` sink: batched, atomic writes of every event kind into a PostgreSQL store.

Purpose: the store of scale-out workers (docs/scale.md), or of a single
``runwatch serve --store postgresql://…``. Status: beta. Delivery: exactly
once for batches with a key (claimed in the transaction that stores them).
Egress: batch. State: stateless.

It is the SQLite sink (:class:`~runwatch.sinks.sqlite.SQLiteSink`: the same
batching, back-off, pending bounds and accounting) on
:class:`~runwatch.store.postgres.writer.PostgresWriter`. Beside a bus source
that offers :data:`FENCES` (a worker's ``nats`` source), every transaction
proves its partitions' fencing tokens first; events of a partition whose
lease moved to another worker are left out (``fenced_out``), and that worker
stores them.

Example::

    [sinks.store]
    type = "postgres"
    inputs = ["alerts"]
    dsn = "postgresql://runwatch@db/runwatch"
    flush_interval_seconds = 0.1

Statistics: those of the SQLite sink, plus ``fenced_out_events`` and
``duplicate_events`` (events of batches already stored, left out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError
from ..pipeline.component import ComponentContext, ServiceKey
from ..store.backends import is_postgres_url
from ..store.base import StoreWriter
from .sqlite import SQLiteSink, process_owner

if TYPE_CHECKING:  # the writer needs asyncpg (the scale extras): imported when the sink is built
    from ..store.postgres.writer import FenceProvider, PostgresWriter

__all__ = ["FENCES", "PostgresSink"]

#: The fences of each batch, offered by a worker's bus source.
FENCES: ServiceKey[FenceProvider] = ServiceKey("bus_fences")


class PostgresSink(SQLiteSink):
    """Writes events into a PostgreSQL store in batched transactions (see the module docs).

    Options (beside the SQLite sink's batching options):
        dsn: the store's URL (default: the pipeline's store, which must then be a PostgreSQL URL).
    """

    class Options(SQLiteSink.Options):
        dsn: str | None = None

    _postgres: PostgresWriter

    def __init__(self, id: str, options: Options, context: ComponentContext) -> None:
        if options.path is not None:
            raise ConfigError(f"sinks.{id}.path", "a postgres sink takes dsn = 'postgresql://…', not a path")
        dsn = options.dsn or context.db_path
        if not is_postgres_url(dsn):
            raise ConfigError(f"sinks.{id}.dsn", f"must be a postgresql:// URL, got {dsn!r}")
        super().__init__(id, options.model_copy(update={"path": dsn}), context)

    def _open_writer(self) -> StoreWriter:
        from ..store.postgres.writer import PostgresWriter

        self._postgres = PostgresWriter(
            self.path, process_owner(), max_image_bytes_per_run=self.options.max_image_bytes_per_run
        )
        return self._postgres

    async def start(self) -> None:
        self._postgres.fences = self.context.services.get(FENCES)
        await super().start()

    def lost_events(self) -> dict[str, int]:
        lost = super().lost_events()
        if self._postgres.fenced_out_events:
            lost["fenced_out"] = self._postgres.fenced_out_events
        return lost

    def statistics(self) -> dict[str, Any]:
        stats = super().statistics()
        stats["fenced_out_events"] = self._postgres.fenced_out_events
        stats["duplicate_events"] = self._postgres.duplicate_events
        return stats
