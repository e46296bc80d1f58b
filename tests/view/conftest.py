"""A real run on the simulator, made once for the viewer's tests: two models, tags, streamed text, a
tool call, a command, a subtask, a failing check, a secret the agent echoes and writes into a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runs import EXERCISES, SECRET, orchestrate, simulator_suite

CASES = f"""
- id: rich
  prompt: Implement two_fer.
  tags: [python, rich]
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  simulate:
    text: "I will implement two_fer now, carefully. The key is {SECRET}."
    chunks: 3
    files:
      two_fer.py: |
        def two_fer(name="you"):
            return f"One for {{name}}, one for me."
      notes/key.txt: "key={SECRET}\\n"
    tools:
      - {{tool: execute_command, command: "echo zebra-crossing", output: "zebra-crossing 42"}}
    subtasks:
      - {{prompt: "Write the README for two_fer", files: {{"README.md": "# two-fer\\n"}}}}
    completion: "Implemented two_fer; the tests pass."
    cost: 0.25
- id: broken
  prompt: Implement two_fer.
  tags: [python]
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  simulate: {{text: "I give up.", cost: 0.1}}
"""


@pytest.fixture(scope="session")
def sim_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``results/`` holding run ``r1``: 2 cases x 2 models on the simulator."""
    tmp = tmp_path_factory.mktemp("view-sim")
    suite = simulator_suite(tmp, CASES)
    suite.write_text(suite.read_text().replace("  - {id: m1}\n", "  - {id: m1}\n  - {id: m2}\n"))
    results = tmp / "results"
    res = orchestrate("run", str(suite), "--results", str(results), "--run-id", "r1")
    assert res.returncode in (0, 1), res.stderr
    return results
