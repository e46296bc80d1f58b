"""Fixtures of tests/analysis: the results directory and the two runs of tests/results (one definition,
in tests/results/conftest.py; pytest finds fixtures by their names here)."""

from tests.results.conftest import results, run_a, run_b  # noqa: F401
