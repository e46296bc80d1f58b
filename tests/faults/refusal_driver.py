"""``orchestrate run`` on many suite files in one process, each under an alarm (for the bounded-resources
test in tests/faults/test_broken_suites.py, which runs this under a memory limit).

``python -m tests.faults.refusal_driver ROWS.json SECONDS``: ROWS.json is a list of
``[suite, results, env]``; prints one JSON line per row: its exit code, stderr and any exception.
"""

from __future__ import annotations

import json
import signal
import sys
from types import FrameType

from click.testing import CliRunner

from orchestrator.cli.main import main


def _out_of_time(signum: int, frame: FrameType | None) -> None:
    raise TimeoutError("no answer within the bound")


def run(rows: list[tuple[str, str, dict[str, str]]], bound: int) -> None:
    signal.signal(signal.SIGALRM, _out_of_time)
    for suite, results, env in rows:
        signal.alarm(bound)
        try:
            res = CliRunner(env=env).invoke(main, ["run", suite, "--results", results])
        finally:
            signal.alarm(0)
        error = res.exception if not isinstance(res.exception, (SystemExit, type(None))) else None
        line = {
            "suite": suite,
            "exit": res.exit_code,
            "stderr": res.stderr,
            "error": repr(error) if error else None,
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as fh:
        run(json.load(fh), int(sys.argv[2]))
