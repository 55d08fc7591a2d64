"""The scale tier: real NATS JetStream and PostgreSQL servers on loopback (``make scale-test``)."""
