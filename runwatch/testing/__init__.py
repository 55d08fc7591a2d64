"""Real servers and runwatch processes on loopback, for the scale tier, its benchmark and ``make scale-demo``.

- :mod:`.servers`: ``nats-server`` (one, or a JetStream cluster) and a
  PostgreSQL cluster, each in a temporary directory, readiness checked,
  torn down whatever happens;
- :mod:`.processes`: ``runwatch serve`` nodes and ``runwatch worker``
  processes on such servers.

Only the standard library: nothing here imports the rest of runwatch (the
processes run ``python -m runwatch.cli``).
"""

from __future__ import annotations
