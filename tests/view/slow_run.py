"""A run whose one slow attempt stays running until the test lets it end: its agent says something (with
the suite's secret in it), then runs a command that waits for a file the test makes (``release()``).
Beside it a quick attempt ends at once. For the live tests of the viewer (local and Ray)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.results.records import RESULTS
from tests.runs import SECRET, poll_until, run_argv, simulator_suite

SAID = "First I look around. The key is ${TEST_KEY}."
SHOWN = "First I look around. The key is ***."
DONE = "Done with it: the command said released-ok."
SLOW = "slow__m1__0__1.jsonl"
"""The slow attempt's transcript name (and its live file's)."""


@dataclass
class SlowRun:
    run_dir: Path
    gate: Path
    proc: subprocess.Popen[bytes]

    @property
    def live_file(self) -> Path:
        return self.run_dir / "live" / SLOW

    def recorded(self, case: str) -> bool:
        path = self.run_dir / RESULTS
        return path.is_file() and any(
            json.loads(line)["case_id"] == case for line in path.read_text().splitlines() if line.strip()
        )

    def release(self) -> None:
        self.gate.touch()

    def wait_said(self, timeout: float = 120) -> None:
        """Until the slow attempt's text is in its live file (the command it then waits in is running)."""
        poll_until(
            lambda: self.live_file.is_file() and SHOWN.encode() in self.live_file.read_bytes(),
            timeout,
            "the slow attempt's first message in its live transcript",
        )

    def wait_ended(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout)


@contextlib.contextmanager
def slow_run(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[SlowRun]:
    gate = tmp / "release"
    command = f"until [ -f {gate} ]; do sleep 0.05; done; echo released-ok"
    cases = f"""
    - id: quick
      prompt: Say hello.
      simulate: {{text: "Hello there.", duration: 100ms}}
    - id: slow
      prompt: Implement two_fer.
      simulate:
        text: "{SAID}"
        tools:
          - {{tool: execute_command, command: "{command}", run: true, run_timeout: 150}}
        completion: "{DONE}"
    """
    suite = simulator_suite(tmp, cases, slots=2)
    suite.write_text(
        suite.read_text().replace("timeout: 30s", "timeout: 170s").replace("retries: 1", "retries: 0")
    )
    results = tmp / "results"
    proc = subprocess.Popen(
        run_argv(suite, results, "r", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TEST_KEY": SECRET, **(env or {})},
    )
    try:
        yield SlowRun(results / "r", gate, proc)
    finally:
        gate.touch()
        if proc.poll() is None:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
