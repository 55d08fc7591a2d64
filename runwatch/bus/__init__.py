"""The scale-out bus: NATS JetStream between serve nodes and workers (docs/scale.md).

- :mod:`.streams`: connecting to a NATS cluster, and the streams and
  key-value buckets runwatch uses, created (idempotently) and checked;
- :mod:`.partitions`: which partitions a worker should own, and the
  bookkeeping of its leases and in-flight messages (pure).

The pipeline components on top: the ``nats`` sink
(:mod:`runwatch.sinks.nats`: serve nodes publish batches and live events)
and the ``nats`` source (:mod:`runwatch.sources.nats`: workers consume
their partitions; serve nodes follow the live stream). The message form of
a batch is :mod:`runwatch.wire.bus`. Needs the ``scale`` extras (nats-py).
"""

from __future__ import annotations
