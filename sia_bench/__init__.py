"""sia-bench: fair, reproducible benchmarks for self-improving agents (harness, weights, or both)."""

__version__ = "0.1.0"
