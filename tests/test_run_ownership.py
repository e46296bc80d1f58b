"""One process owns a run directory at a time (``results/<run>/.lock``), and a try cancelled by Ctrl-C is
not a try: what survives two processes on one run, and what an interrupted run records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.results import ResultsWriter, RunInProgressError, read_records
from tests.runs import EXERCISES, cases, orchestrate, running, simulator_suite, write_suite
from tests.test_results import key, record

pytestmark = pytest.mark.timeout(180)

HOST = os.uname()[1]
HOLDER = """
import sys
from pathlib import Path
from orchestrator.results import ResultsWriter
w = ResultsWriter.resume(Path(sys.argv[1]))
print("owned", flush=True)
sys.stdin.read()  # until killed
"""


def test_one_process_owns_a_run_and_a_killed_owner_frees_it_at_once(tmp_path: Path) -> None:
    writer = ResultsWriter.create(tmp_path / "run-1", {"run_id": "run-1"})
    writer.append(record(key("a")))
    writer.close()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(writer.run_dir)],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "owned\n"
        before = writer.results_path.read_bytes()
        with open(writer.results_path, "ab") as fh:
            fh.write(b'{"torn')  # what the owner may be writing right now: not the resumer's to cut
        for attempt in (
            lambda: ResultsWriter.resume(writer.run_dir),
            lambda: ResultsWriter.create(writer.run_dir, {}),
        ):
            with pytest.raises(RunInProgressError) as refused:
                attempt()
            assert str(refused.value) == f"run run-1 is in progress (pid {holder.pid} on host {HOST})"
        assert writer.results_path.read_bytes() == before + b'{"torn'
        holder.kill()  # SIGKILL: nothing of the owner's runs, the kernel drops its lock
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    resumed = ResultsWriter.resume(writer.run_dir)
    try:
        assert resumed.finished_keys() == {key("a")}
        assert writer.results_path.read_bytes() == before  # the torn line was now the resumer's to cut
    finally:
        resumed.close()


QUICK = f"""
  workspace: {EXERCISES}/python/leap
  simulate: {{duration: 10s}}
"""


def test_a_run_in_progress_refuses_a_resume_and_its_run_id_and_completes_alone(
    tmp_path: Path, sockdir: Path
) -> None:
    target = "{kind: simulator, slots: 2, options: {time_scale: 0.05, status_delay: 0.1}}"
    # The gated case's setup waits for a file this test makes: the run is in progress until then.
    gate = tmp_path / "open"
    gated = f"{QUICK}  setup: [\"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done'\"]\n"
    suite = write_suite(tmp_path, target, cases(1, gated, prefix="gated") + cases(11, QUICK))
    results = tmp_path / "r"
    with running(suite, results, env={"TMPDIR": str(sockdir)}) as (proc, first):
        assert first["case_id"].startswith("c")
        for args in (("--resume", "r"), ("--run-id", "r")):
            res = orchestrate("run", str(suite), "--results", str(results), "--quiet", *args)
            assert res.returncode == 2, (args, res.stderr)
            assert f"run r is in progress (pid {proc.pid} on host {HOST})" in res.stderr, res.stderr
        gate.touch()
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert json.loads(out.splitlines()[-1])["stop_reason"] == "finished"
    records = read_records(results / "r" / "results.jsonl")
    finals = sorted(r.case_id for r in records if r.final)
    assert finals == sorted(["gated0", *(f"c{i}" for i in range(11))]), records  # one final per key
    numbers = [(r.case_id, r.attempt) for r in records]
    assert len(numbers) == len(set(numbers))


def test_a_try_cancelled_by_ctrl_c_is_recorded_with_what_was_known_and_is_not_a_try(tmp_path: Path) -> None:
    # Each try of `api` waits on the model API until its second retry wait (8 s at this time scale) is
    # one more than api_retry_limit; retries: 2 gives it 3 real tries, however often it is interrupted.
    api = f"""
    - id: api
      prompt: the API is down
      workspace: {EXERCISES}/python/leap
      simulate: {{outcome: api_error, error: {{status: 500, first_wait: 160}}}}
    - id: quick
      prompt: quick
      workspace: {EXERCISES}/python/two-fer
      simulate: {{duration: 20s}}
    """
    suite = simulator_suite(tmp_path, api, slots=2)
    text = suite.read_text().replace("retries: 1", "retries: 2\n  api_retry_limit: 1")
    suite.write_text(text)
    with running(suite, tmp_path / "r") as (proc, first):
        assert first["case_id"] == "quick"  # api's first try started with it and waits on the API
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    run_dir = tmp_path / "r" / "r"
    (cancelled,) = [r for r in read_records(run_dir / "results.jsonl") if r.case_id == "api"]
    assert (cancelled.attempt, cancelled.status.value, cancelled.final) == (1, "cancelled", False)
    # What was known when it stopped is in the record, as it is in its transcript.
    assert cancelled.task_id is not None and cancelled.metrics.task_ids == [cancelled.task_id]
    assert cancelled.timings.agent_s is not None and cancelled.timings.agent_s > 0
    assert cancelled.metrics.api_requests >= 1 and cancelled.metrics.api_retries >= 1
    assert cancelled.metrics.events > 0 and cancelled.events_file is not None
    assert cancelled.task_id in (run_dir / cancelled.events_file).read_text()
    summary = json.loads(out.splitlines()[-1])
    assert (summary["totals"]["cancelled"], summary["totals"]["retried"]) == (1, 0)

    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--resume", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    api_records = [r for r in read_records(run_dir / "results.jsonl") if r.case_id == "api"]
    assert [(r.attempt, r.status.value, r.final) for r in api_records] == [
        (1, "cancelled", False),
        (2, "api_error", False),
        (3, "api_error", False),
        (4, "api_error", True),  # three real tries: the cancelled one was not one
    ]
    report = orchestrate("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    assert "2 retried attempts, 1 cancelled" in report.stdout
