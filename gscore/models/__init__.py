"""Adapters for the real networks used in tests, demos and benchmarks."""
