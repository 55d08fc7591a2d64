"""Stages: components between sources and sinks (filtering, snapshots)."""
