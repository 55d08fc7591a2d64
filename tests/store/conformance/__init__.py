"""The store conformance suite: one set of tests that every Store backend passes."""
