"""Every suite shipped in configs/ stays valid, and its exercise stubs really fail before an agent works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suite_is_valid(path: Path) -> None:
    suite = load_suite(path, env={"OPENROUTER_API_KEY": "sk-or-not-a-real-key"})
    plan = build_plan(suite)
    assert len(plan) >= 4
    assert all(case.workspace is not None and case.workspace.is_dir() for case in suite.cases)


@pytest.mark.parametrize(
    "exercise", sorted((CONFIGS / "exercises" / "python").iterdir()), ids=lambda p: p.name
)
def test_exercise_stub_fails_its_tests(exercise: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "-q"],
        cwd=exercise,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # keep the templates clean
    )
    assert result.returncode != 0
    assert "NotImplementedError" in result.stderr
