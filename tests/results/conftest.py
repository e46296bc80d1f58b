"""Fixtures of tests/results: a results directory and two runs in it (tests/results/report_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.results.report_runs import make_run, run_a_records, run_b_records


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def run_a(results: Path) -> Path:
    return make_run(results, "run-a", run_a_records())


@pytest.fixture
def run_b(results: Path) -> Path:
    return make_run(results, "run-b", run_b_records())
