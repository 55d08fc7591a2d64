"""The bus's partition owners in the store: who wrote each partition last, with which token, up to where.

A worker that takes a partition over records its lease's token here first
(:func:`claim_partition`), in a statement that waits for the row lock of a
transaction of the previous owner still running; from then on that owner's
writes are fenced out (:mod:`.writer`), and the new owner resumes after the
committed sequence it read in the same statement.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

__all__ = ["claim_partition", "partition_owners"]

_CLAIM: Final = """
INSERT INTO partition_owners (partition, token, owner) VALUES ($1, $2, $3)
ON CONFLICT (partition) DO UPDATE SET token = EXCLUDED.token, owner = EXCLUDED.owner
WHERE partition_owners.token < EXCLUDED.token
RETURNING committed_seq
"""


async def claim_partition(connection: asyncpg.Connection, partition: int, token: int, owner: str) -> int | None:
    """Record ``owner``'s ``token`` for ``partition``; the sequence committed so far.

    Returns:
        The partition's last committed stream sequence (0: none yet), or
        ``None`` when a newer token is stored already (the lease moved on).
    """
    async with connection.transaction():
        committed = await connection.fetchval(_CLAIM, partition, token, owner)
    return None if committed is None else int(committed)


async def partition_owners(connection: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every partition's row: ``partition``, ``token``, ``owner``, ``committed_seq``."""
    rows = await connection.fetch("SELECT partition, token, owner, committed_seq FROM partition_owners ORDER BY 1")
    return [dict(row) for row in rows]
