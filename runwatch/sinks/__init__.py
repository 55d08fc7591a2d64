"""Sinks: where paths of the pipeline end (store, websockets, notifiers, plugins)."""
