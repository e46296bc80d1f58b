"""``orchestrate run`` end to end on the simulator: real bridge, real worker processes, real hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet
import pytest

from orchestrator.results.records import read_records
from orchestrator.results.store import load
from tests.runs import EXERCISES, ROOT, SECRET, orchestrate
from tests.runs import simulator_suite as _suite

pytestmark = pytest.mark.timeout(180)


GOOD = f"""
- id: two-fer
  prompt: Implement two_fer.
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  tags: [easy]
  simulate:
    text: "using key {SECRET} is forbidden to show"
    completion: "done; the key was {SECRET}"
    files:
      two_fer.py: |
        def two_fer(name="you"):
            return f"One for {{name}}, one for me."
      notes/key.txt: "key={SECRET}\\n"
- id: leap-wrong
  prompt: Implement leap_year.
  workspace: {EXERCISES}/python/leap
  check: python3 -m unittest -q
  simulate:
    files: {{leap.py: "def leap_year(year):\\n    return True\\n"}}
- id: api-down
  prompt: Implement leap_year.
  workspace: {EXERCISES}/python/leap
  check: python3 -m unittest -q
  simulate: {{outcome: api_error_noauto}}
"""


def test_run_grades_retries_and_writes_loadable_results(tmp_path: Path) -> None:
    suite = _suite(tmp_path, GOOD)
    # Every log line of every process (orchestrator, workers, bridge) is emitted: the secret grep covers them.
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--run-id",
        "r1",
        "--json",
        # The check's unittest writes __pycache__/ into the workspace: the diff, taken before, has none.
        env_extra={"ORCHESTRATE_LOG_LEVEL": "DEBUG", "PYTHONDONTWRITEBYTECODE": ""},
    )
    assert res.returncode == 0, res.stderr
    assert "DEBUG" in res.stderr or "INFO" in res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[-1]["type"] == "summary"
    assert sum(1 for line in lines if line["type"] == "attempt") == 4  # api-down is tried twice

    run_dir = tmp_path / "r" / "r1"
    records = read_records(run_dir / "results.jsonl")
    final = {r.case_id: r for r in records if r.final}
    assert set(final) == {"two-fer", "leap-wrong", "api-down"}
    assert final["two-fer"].status.value == "completed"
    assert final["two-fer"].passed is True
    assert final["leap-wrong"].passed is False
    assert final["leap-wrong"].check is not None
    assert final["leap-wrong"].check.exit_code != 0
    assert final["api-down"].status.value == "api_error"
    assert final["api-down"].attempt == 2
    assert [r.attempt for r in records if r.case_id == "api-down"] == [1, 2]

    # What the agent changed, and only that.
    assert final["two-fer"].diff_file == "events/two-fer__m1__0__1.diff"
    diff = (run_dir / final["two-fer"].diff_file).read_text()
    assert '-    raise NotImplementedError("implement two_fer")' in diff
    assert '+    return f"One for {name}, one for me."' in diff
    assert "--- /dev/null\n+++ b/notes/key.txt\n@@ -0,0 +1 @@\n+key=***\n" in diff
    assert "__pycache__" not in diff
    assert final["api-down"].diff_file is None  # nothing written

    df = load(run_dir)
    assert len(df) == 3
    assert df.set_index("case_id").loc["two-fer", "diff_file"] == final["two-fer"].diff_file
    assert set(df["status"]) == {"completed", "api_error"}

    # the secret reached the host (configuration) but no file of the run
    for path in run_dir.rglob("*"):
        if path.suffix == ".parquet":
            # compressed columns: look at the values, not the bytes
            assert SECRET not in str(pyarrow.parquet.read_table(path).to_pylist()), path
        elif path.is_file():
            assert SECRET not in path.read_text(), path
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["suite"]["defaults"]["configuration"]["openRouterApiKey"] == "***"
    assert SECRET not in res.stdout + res.stderr  # --json lines included (tests/test_secrets.py has more)
    assert final["two-fer"].metrics.completion == "done; the key was ***"


def test_resume_of_a_finished_run_runs_nothing_more(tmp_path: Path) -> None:
    suite = _suite(tmp_path, GOOD.split("- id: leap-wrong")[0])
    args = ["run", str(suite), "--results", str(tmp_path / "r"), "--quiet"]
    assert orchestrate(*args, "--run-id", "r").returncode == 0
    again = orchestrate(*args, "--resume", "r")
    assert again.returncode == 0, again.stderr
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert len(records) == 1


def test_bad_suite_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    suite = _suite(tmp_path, GOOD + "  bogus_key: 1\n")
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"))
    assert res.returncode == 2
    assert "suite.yaml" in res.stderr
    assert "bogus_key" in res.stderr
    assert not (tmp_path / "r").exists()


def test_unset_secret_is_a_clear_error(tmp_path: Path) -> None:
    suite = _suite(tmp_path, GOOD)
    env = {k: v for k, v in os.environ.items() if k != "TEST_KEY"}
    res = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(suite), "--results", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2
    assert "TEST_KEY" in res.stderr


@pytest.mark.parametrize("engine", ["3.52", "3.50"])
def test_the_default_suite_shows_every_outcome(tmp_path: Path, engine: str) -> None:
    """README command 1: each case of configs/suite.yaml ends the way its comment says, for both models,
    on both engines (3.50 signals completion with taskCompleted, 3.52 only with the completion ask)."""
    source = (ROOT / "configs" / "suite.yaml").read_text()
    suite = tmp_path / "suite.yaml"
    suite.write_text(source.replace("  kind: simulator\n", f"  kind: simulator\n  engine: '{engine}'\n"))
    (tmp_path / "exercises").symlink_to(ROOT / "configs" / "exercises")
    res = orchestrate("run", str(suite), "--results", str(tmp_path), "--run-id", "d", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp_path / "d" / "results.jsonl")
    final = {(r.case_id, r.model_id): r for r in records if r.final}
    expected = {
        "py-two-fer": ("completed", True),
        "py-leap": ("completed", True),
        "py-reverse-string": ("completed", False),
        "py-isogram": ("completed", True),
        "py-two-fer-asks": ("stuck", False),
        "py-leap-api-down": ("api_error", None),
        "py-isogram-slow": ("timeout", False),
        "py-reverse-crash": ("infra_error", None),
        "py-leap-gives-up": ("aborted", False),
    }
    if engine == "3.50":
        # as on the real 3.50.4: the parent re-created after its subtask has lost its provider (#14)
        expected["py-isogram"] = ("api_error", None)
    for model in ("sonnet", "gpt"):
        got = {case: (final[case, model].status.value, final[case, model].passed) for case in expected}
        assert got == expected
    assert final["py-isogram", "sonnet"].metrics.subtasks == 1
    assert final["py-reverse-string", "sonnet"].metrics.tool_failures  # the apply_diff that did not match
    # The crashing host is in the bridge's log next to the results, not printed over the progress bar.
    assert "down" in (tmp_path / "d" / "bridge.log").read_text()
    assert "down" not in res.stderr
    task_ids = [r.task_id for r in records if r.task_id]
    assert len(task_ids) == len(set(task_ids))  # each attempt's host has its own seed, like real UUIDv7s
    retried = sorted({r.case_id for r in records if not r.final})
    api_errors = ["py-isogram", "py-leap-api-down"] if engine == "3.50" else ["py-leap-api-down"]
    assert retried == [*api_errors, "py-reverse-crash"]
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["totals"]["passed"] == (4 if engine == "3.50" else 6)
    completions = {r.reason for r in records if r.final and r.status.value == "completed"}
    assert any("taskCompleted" in reason for reason in completions) == (engine == "3.50")


def test_the_circuit_breaker_counts_first_tries_alike_and_anything_else_disarms_it() -> None:
    from datetime import datetime, timezone

    from orchestrator.results.records import AttemptRecord
    from orchestrator.run.scheduler import _Breaker
    from orchestrator.status import Status

    now = datetime.now(timezone.utc)

    def rec(status: Status, reason: str = "extension host did not come up") -> AttemptRecord:
        return AttemptRecord(
            run_id="r", case_id="c", model_id="m", repeat=0, config_hash="h", attempt=1, final=False,
            status=status, passed=None, reason=reason, error="exit code 3\nno display",
            started_at=now, ended_at=now, duration_s=0,
        )  # fmt: skip

    breaker = _Breaker(3)
    infra = rec(Status.INFRA_ERROR)
    assert not breaker.see(infra, first_try=True)
    assert not breaker.see(infra, first_try=False)  # a retry failing alike: not a new attempt's evidence
    assert not breaker.see(rec(Status.CANCELLED), first_try=True)  # our own stop says nothing
    assert not breaker.see(infra, first_try=True)
    assert breaker.tripped is None
    assert breaker.see(infra, first_try=True)
    assert breaker.tripped == (
        'the first tries of the first 3 attempts all ended infra_error "extension host did not come up" '
        "(no display)"
    )
    for other in (rec(Status.COMPLETED, ""), rec(Status.INFRA_ERROR, "worker died"), rec(Status.TIMEOUT)):
        breaker = _Breaker(2)
        assert not breaker.see(infra, first_try=True)
        assert not breaker.see(other, first_try=False)  # disarmed for good, a retry's outcome included
        assert not breaker.see(infra, first_try=True) and not breaker.see(infra, first_try=True)
        assert breaker.tripped is None


def test_the_progress_counts_cancelled_attempts_apart_from_retried_ones() -> None:
    from datetime import datetime, timezone

    from ipc_bridge.redaction import Redactor
    from orchestrator.cli.progress import Progress
    from orchestrator.results.records import AttemptRecord
    from orchestrator.status import Status

    now = datetime.now(timezone.utc)
    progress = Progress(3, quiet=True, as_json=False, redactor=Redactor(), slots=1)
    for status, final, passed in [
        (Status.CANCELLED, False, None),
        (Status.INFRA_ERROR, False, None),
        (Status.COMPLETED, True, True),
    ]:
        progress(
            AttemptRecord(
                run_id="r",
                case_id="c",
                model_id="m",
                repeat=0,
                config_hash="h",
                attempt=1,
                final=final,
                status=status,
                passed=passed,
                started_at=now,
                ended_at=now,
                duration_s=0,
            )
        )
    assert progress.counts == {"passed": 1, "failed": 0, "errors": 0, "retried": 1, "cancelled": 1}


def test_a_timeout_during_an_api_outage_is_a_retried_api_error(tmp_path: Path) -> None:
    """The engine waits 5, 10, 20 s between API retries: a timeout shorter than that ends the try
    before api_retry_limit can call the outage, and it is still the API's failure, not the agent's."""
    outage = f"""
    - id: outage
      prompt: the API is down
      workspace: {EXERCISES}/python/leap
      timeout: 3s
      simulate: {{outcome: api_error, error: {{status: 503, first_wait: 200}}}}
    """
    suite = _suite(tmp_path, outage)
    res = orchestrate("run", str(suite), "--results", str(tmp_path), "--run-id", "o", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp_path / "o" / "results.jsonl")
    assert [(r.attempt, r.status.value, r.final) for r in records] == [
        (1, "api_error", False),
        (2, "api_error", True),
    ], records
    for r in records:
        assert "failed 1 time in a row" in r.reason and "no outcome within 3 s" in r.reason, r.reason
        assert "503" in r.reason, r.reason
