"""Benchmarks: one script per kernel family; each prints a table and never asserts."""
