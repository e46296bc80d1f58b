"""Fixtures of tests/analysis: the results directory and the two runs of tests/results (one definition,
in tests/results/conftest.py)."""

from tests.results.conftest import results, run_a, run_b

__all__ = ["results", "run_a", "run_b"]
