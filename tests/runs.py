"""Helpers of the end-to-end tests: a suite file, ``orchestrate`` as a subprocess, the process tree."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "configs" / "exercises"
SUITE = ROOT / "configs" / "suite.yaml"
"""The default suite."""
SECRET = "sk-test-4f1c9e2b7d"

TWO_FER = f"""
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  simulate:
    files:
      two_fer.py: |
        def two_fer(name="you"):
            return f"One for {{name}}, one for me."
    cost: 0.5
"""
SIM = "{kind: simulator, slots: 2, options: {time_scale: 0.05, status_delay: 0.1}}"
SIM_IN_ORDER = "{kind: simulator, slots: 2, prelaunch: 0, options: {time_scale: 0.05, status_delay: 0.1}}"
"""Attempts start in plan order: none is readied ahead, where whichever is ready first takes a slot."""


@contextlib.contextmanager
def running(
    suite: Path,
    results: Path,
    env: dict[str, str] | None = None,
    *,
    first: bool = True,
    args: tuple[str, ...] = (),
    **popen: Any,
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """``orchestrate run SUITE --json`` in the background, run id ``r``: yields the process and its first
    attempt record (the event the tests act on; ``{}`` unless ``first``), and leaves no process or pipe
    behind."""
    proc = subprocess.Popen(
        run_argv(suite, results, "r", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TEST_KEY": SECRET, **(env or {})},
        **popen,
    )
    try:
        assert proc.stdout is not None
        yield proc, json.loads(proc.stdout.readline()) if first else {}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def run_argv(suite: Path, results: Path, run_id: str, *extra: str) -> list[str]:
    """``orchestrate run SUITE --results RESULTS --run-id RUN_ID --json EXTRA...`` in this interpreter."""
    return [
        sys.executable,
        "-m",
        "orchestrator",
        "run",
        str(suite),
        "--results",
        str(results),
        "--run-id",
        run_id,
        "--json",
        *extra,
    ]


def orchestrate(
    *args: str, env_extra: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEST_KEY": SECRET, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
        **kw,
    )


def write_suite(tmp: Path, target: str, cases: str, defaults: str = "", top: str = "") -> Path:
    path = tmp / "suite.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: t
            target: {target}
            defaults: {{timeout: 30s, retries: 1, retry_backoff: 100ms, ask_timeout: 1s{defaults}}}
            """
        )
        + top
        + "cases:\n"
        + cases
    )
    return path


def cases(n: int, body: str = TWO_FER, prefix: str = "c") -> str:
    return "".join(f"- id: {prefix}{i}\n  prompt: Implement two_fer.{body}" for i in range(n))


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def marked_processes(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (a zombie's environment reads empty)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL what a test left (then fails over)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def poll_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Wait for a condition of the outside world (a process, a file) that nothing notifies us of."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def simulator_suite(tmp: Path, cases: str, *, extra: str = "", slots: int = 3) -> Path:
    """A suite on the simulator with a secret from $TEST_KEY and ``cases`` (YAML list items)."""
    text = f"""
    name: t
    target: {{kind: simulator, slots: {slots}, options: {{time_scale: 0.05, status_delay: 0.1}}}}
    defaults:
      timeout: 30s
      retries: 1
      retry_backoff: 100ms
      ask_timeout: 1s
      configuration: {{apiProvider: openrouter, openRouterApiKey: "${{TEST_KEY}}", mode: code}}
    models:
      - {{id: m1}}
    {extra}
    cases:
    """
    path = tmp / "suite.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.indent(textwrap.dedent(cases), "  "))
    return path


REGRESSIONS = {
    # py-leap forgets the century rule, py-two-fer the second half: their checks fail.
    "return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)": "return year % 4 == 0",
    'return f"One for {name}, one for me."': 'return f"One for {name}."',
}


FAST_TIMING = {
    "options: {time_scale: 0.25}": "options: {time_scale: 0.25, status_delay: 0.5, engine_lags: false}",
}
"""The default suite's simulator at the fast timing (no engine lags, a short status lag), for tests about
what a run decides, not about when the engine answers."""


def regressed_suite(tmp: Path, *, fast: bool = False) -> Path:
    """The default suite with the REGRESSIONS applied (and FAST_TIMING if ``fast``), beside a link to its
    exercises."""
    return suite_copy(tmp / "suite", {**REGRESSIONS, **(FAST_TIMING if fast else {})})


def suite_copy(directory: Path, replacements: dict[str, str]) -> Path:
    """``directory/suite.yaml``: the default suite with each text replaced (once), beside its exercises."""
    text = SUITE.read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    suite = directory / "suite.yaml"
    suite.parent.mkdir()
    (suite.parent / "exercises").symlink_to(SUITE.parent / "exercises")
    suite.write_text(text)
    return suite
