"""Tests of the store layer that hold for every backend."""
