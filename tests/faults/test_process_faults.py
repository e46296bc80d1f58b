"""Processes killed or frozen mid-run, a second process on a running run, hosts that can never start:
every attempt still ends with exactly one final record, the run finishes or resumes to completion, and
nothing is left running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from orchestrator.hosts.farm import FORKED_FARM_NAME
from orchestrator.results.records import read_records
from tests.runs import (
    EXERCISES,
    SIM_IN_ORDER,
    alive,
    cases,
    cmdline,
    descendants,
    orchestrate,
    poll_until,
    running,
    simulator_suite,
    write_suite,
)

pytestmark = pytest.mark.timeout(180)

HOST = os.uname()[1]


def test_sigkill_of_the_orchestrator_leaves_nothing_and_resume_completes(
    tmp_path: Path, sockdir: Path
) -> None:
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  timeout: 3s\n  simulate: {{outcome: hang}}\n"
    suite = write_suite(tmp_path, SIM_IN_ORDER, cases(1) + cases(2, hang, prefix="h"))
    # The killed run cannot remove its runtime directory: put it where the fixture cleans up.
    with running(suite, tmp_path / "r", env={"TMPDIR": str(sockdir)}) as (proc, first):
        assert first["case_id"] == "c0"
        tree = descendants(proc.pid)
        assert len(tree) >= 4  # bridge, workers, at least one host
        proc.kill()
        proc.wait()
    # Every process of the run dies with it (PR_SET_PDEATHSIG), without anyone reaping them here.

    poll_until(lambda: not [p for p in tree if alive(p)], 60, "the killed run's processes to die")

    (stale,) = sockdir.glob("orc-*")  # its sockets and workspaces: only the next run can remove them
    assert list(stale.glob("work/*"))
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--resume",
        "r",
        "--quiet",
        env_extra={"TMPDIR": str(sockdir)},
    )
    assert res.returncode == 0, res.stderr  # a SIGKILLed owner never blocks the resume
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    finals = sorted(r.case_id for r in records if r.final)
    assert finals == ["c0", "h0", "h1"], records  # exactly one final record per key
    assert not list(sockdir.glob("orc-*"))  # the killed run's directory went with the resume's own


def test_a_sigkilled_worker_loses_its_attempt_which_is_retried_and_recorded_once(
    tmp_path: Path, sockdir: Path
) -> None:
    # A timeout far longer than the kill takes on a loaded machine: h0's first try is in flight when
    # its worker dies (its second try then pays the timeout once).
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  timeout: 12s\n  simulate: {{outcome: hang}}\n"
    # One attempt at a time, in plan order (none readied ahead: h0's socket then means it runs).
    one_slot = "{kind: simulator, slots: 1, prelaunch: 0, options: {time_scale: 0.05, status_delay: 0.1}}"
    suite = write_suite(tmp_path, one_slot, cases(1) + cases(1, hang, prefix="h"))
    with running(suite, tmp_path / "r", env={"TMPDIR": str(sockdir)}) as (proc, first):
        assert first["case_id"] == "c0"
        # h0 runs next on the only worker; its host socket appearing means the attempt is in flight.
        poll_until(lambda: list(sockdir.glob("orc-*/w*-2.sock")), 60, "h0's host socket")
        workers = [p for p in descendants(proc.pid) if b"spawn_main" in cmdline(p) and not _farm(p)]
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        proc.communicate(timeout=90)
    assert proc.returncode == 0
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    h0 = [(r.attempt, r.status.value, r.final, r.reason) for r in records if r.case_id == "h0"]
    assert [t[:3] for t in h0] == [(1, "infra_error", False), (2, "timeout", True)], h0
    assert h0[0][3] == "worker died", h0
    assert len([r for r in records if r.final]) == 2, records  # exactly one final record per key


def _farm(pid: int) -> bool:
    """A simulator farm its worker forked: same command line, its own name."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == FORKED_FARM_NAME
    except OSError:
        return False


def _bridges(pid: int) -> list[int]:
    return [p for p in descendants(pid) if b"ipc_bridge.server.cli" in cmdline(p)]


def test_a_sigkilled_bridge_is_restarted_and_its_lost_attempts_retried(tmp_path: Path, sockdir: Path) -> None:
    slow = f"""
  workspace: {EXERCISES}/python/two-fer
  check: python3 -m unittest -q
  simulate:
    duration: 100s
    files:
      two_fer.py: |
        def two_fer(name="you"):
            return f"One for {{name}}, one for me."
"""
    quick = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{duration: 1s}}\n"
    suite = write_suite(tmp_path, SIM_IN_ORDER, cases(1, quick, prefix="q") + cases(2, slow, prefix="s"))
    with running(suite, tmp_path / "r", env={"TMPDIR": str(sockdir)}) as (proc, first):
        assert first["case_id"] == "q0"
        # s0 and s1 (5 s each at this time scale) are both following their tasks now.
        poll_until(lambda: len(list(sockdir.glob("orc-*/w*.sock"))) >= 2, 60, "two attempts in flight")
        (old,) = _bridges(proc.pid)
        os.kill(old, signal.SIGKILL)
        poll_until(lambda: [p for p in _bridges(proc.pid) if p != old], 60, "a new bridge")
        tree = descendants(proc.pid)
        proc.communicate(timeout=90)
    assert proc.returncode == 0
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    retried = [r for r in records if not r.final]
    # The attempts following a task when the bridge died lost events: never graded, always retried.
    assert retried, records
    assert all(r.status.value == "infra_error" and r.passed is None for r in retried), retried
    assert {r.case_id for r in retried} <= {"s0", "s1"}, retried
    finals = sorted((r.case_id, r.status.value, r.passed) for r in records if r.final)
    assert finals == [("q0", "completed", True), ("s0", "completed", True), ("s1", "completed", True)], (
        records
    )
    assert not alive(old)
    # Processes that outlive the run die with it (PR_SET_PDEATHSIG), perhaps a moment later.
    poll_until(lambda: not [p for p in tree if alive(p)], 15, "the run's processes to exit")
    assert not list(sockdir.glob("orc-*"))


async def test_a_stopped_host_is_unresponsive_and_retried_on_a_fresh_one(
    tmp_path: Path, sockdir: Path
) -> None:
    from ipc_bridge.roo.extension import connect

    target = (
        "{kind: simulator, slots: 1, options: {time_scale: 0.05, status_delay: 0.1, process_per_host: true}}"
    )
    # A task that sends events all along (a command every ~0.1 s for 5 s), so that only a frozen host
    # goes 5 s without one: the idle timer, not the wall clock, notices the freeze whenever it comes.
    commands = ", ".join(["{tool: execute_command, command: make, output: ok}"] * 40)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"""
name: t
target: {target}
defaults: {{timeout: 120s, idle_timeout: 5s, ask_timeout: 30s, cancel_timeout: 1s, retries: 1,
            retry_backoff: 100ms}}
cases:
  - id: h0
    prompt: work
    workspace: {EXERCISES}/python/leap
    simulate: {{duration: 100s, tools: [{commands}]}}
"""
    )
    with running(suite, tmp_path / "r", env={"TMPDIR": str(sockdir)}, first=False) as (proc, _):

        def h0_host() -> list[int]:
            return [p for p in descendants(proc.pid) if b"simulate" in cmdline(p) and b"/h0__" in cmdline(p)]

        ready = lambda: bool(h0_host()) and bool(list(sockdir.glob("orc-*/w*-1.sock")))  # noqa: E731
        await asyncio.to_thread(poll_until, ready, 60, "h0's host")
        (frozen,) = h0_host()
        (sock,) = await asyncio.to_thread(lambda: list(sockdir.glob("orc-*/w*-1.sock")))
        # A second client of the host sees every event it broadcasts: freeze it once the task runs
        # (events of a task: the observer may connect after taskStarted). The host writes each event to
        # every client before the next, so by the third the bridge has the task's first in its socket:
        # the freeze cannot fall before the orchestrator knows the task.
        observer = await connect(str(sock), timeout=60)
        seen = 0
        try:
            async for event in observer.events():
                seen += event.task_id is not None
                if seen == 3:
                    break
        finally:
            await observer.close()
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 150) == 0
        finally:
            if alive(frozen):
                os.kill(frozen, signal.SIGCONT)
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    h0 = [(r.attempt, r.status.value, r.final, r.reason) for r in records if r.case_id == "h0"]
    assert [t[:3] for t in h0] == [(1, "infra_error", False), (2, "completed", True)], h0
    assert h0[0][3] == "extension host unresponsive", h0  # the retry ran on a fresh host, to the end
    assert not alive(frozen)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_stops_cancels_and_resume_completes(tmp_path: Path, signum: int) -> None:
    hang = "".join(
        f"""
- id: hang-{i}
  prompt: never finishes
  workspace: {EXERCISES}/python/leap
  timeout: 20s
  simulate: {{outcome: hang, duration: 100ms}}
"""
        for i in range(2)
    )
    # quick lasts 3 s (time_scale 0.05): by its end both hang tasks have started (an attempt whose task
    # had not would end without a record), and their 20 s are far from over.
    quick = f"""
- id: quick
  prompt: quick
  workspace: {EXERCISES}/python/two-fer
  simulate: {{duration: 60s}}
"""
    suite = simulator_suite(tmp_path, hang + quick, slots=3)
    with running(suite, tmp_path / "r") as (proc, first):
        # Plan order starts hang-0 and hang-1 before quick; once quick's record is out, both hang.
        assert first["case_id"] == "quick"
        # Both hang tasks started (their live transcripts hold taskStarted): on a busy machine 3 s may
        # not be enough, and an attempt stopped before its task started rightly leaves no record.
        live = tmp_path / "r" / "r" / "live"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            (live / f"hang-{i}__m1__0__1.jsonl").is_file()
            and b'"taskStarted"' in (live / f"hang-{i}__m1__0__1.jsonl").read_bytes()
            for i in range(2)
        ):
            time.sleep(0.05)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert json.loads(out.splitlines()[-1])["stop_reason"] == "interrupted"
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert sorted((r.case_id, r.status.value, r.final) for r in records) == [
        ("hang-0", "cancelled", False),
        ("hang-1", "cancelled", False),
        ("quick", "completed", True),
    ], records

    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--resume", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    final = sorted((r.case_id, r.status.value, r.attempt) for r in records if r.final)
    assert final == [("hang-0", "timeout", 2), ("hang-1", "timeout", 2), ("quick", "completed", 1)], records


def test_a_bridge_that_keeps_dying_stops_the_run_cleanly_and_resume_completes(
    tmp_path: Path, sockdir: Path
) -> None:
    # One record is out and at least one 5 s case still runs, whichever came first: on a loaded machine
    # q0's grading can outlast s0's whole task, so the order of the first record is not asserted.
    slow = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{duration: 100s}}\n"
    quick = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{duration: 1s}}\n"
    suite = write_suite(tmp_path, SIM_IN_ORDER, cases(1, quick, prefix="q") + cases(2, slow, prefix="s"))
    env = {"TMPDIR": str(sockdir)}
    with running(suite, tmp_path / "r", env=env, args=("--max-bridge-restarts", "0")) as (proc, first):
        assert first["case_id"] in {"q0", "s0"}, first
        (bridge,) = _bridges(proc.pid)
        os.kill(bridge, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert json.loads(out.splitlines()[-1])["stop_reason"] == "bridge_failed"
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--resume", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert sorted(r.case_id for r in records if r.final) == ["q0", "s0", "s1"], records


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
    # both hosts listen at once (no engine start-up lag): api's try has started whenever quick's has
    text = text.replace("status_delay: 0.1}", "status_delay: 0.1, engine_lags: false}")
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


def test_a_host_that_cannot_start_trips_the_circuit_breaker(tmp_path: Path) -> None:
    """The first tries of the first 2 x slots attempts all infra_error alike: the run stops with exit 5
    and the reason instead of grinding through every case's retries, and stays resumable."""
    argv = '[sh, -c, "echo no display >&2; exit 3", "{socket}"]'
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: t\ntarget: {{kind: command, slots: 2, launch_timeout: 3s, argv: {argv}}}\n"
        "defaults: {retries: 2, retry_backoff: 100ms}\ncases:\n"
        + "".join(f"  - {{id: c{i}, prompt: x}}\n" for i in range(8))
    )
    args = ["run", str(suite), "--results", str(tmp_path / "r"), "--json"]
    res = orchestrate(*args, "--run-id", "r")
    assert res.returncode == 5, res.stderr
    assert (
        'first 4 attempts all ended infra_error "extension host exited with code 3 before listening'
        in res.stderr
    )
    assert "--resume r" in res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["stop_reason"] == "circuit_breaker"
    assert "exited with code 3 before listening" in summary["stop_detail"]
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    # 8 cases x 3 tries would be 24 records; none is a result, and every key is still to run.
    assert 4 <= len(records) <= 6 and not [r for r in records if r.final]
    assert all(r.status.value in ("infra_error", "cancelled") for r in records)
    again = orchestrate(*args, "--resume", "r")
    assert again.returncode == 5, (
        again.stderr,
        read_records(tmp_path / "r" / "r" / "results.jsonl"),
    )  # resumable: it runs, and trips again on the same cause


@pytest.mark.parametrize("per_host", [True, False], ids=["process_per_host", "farm"])
def test_an_unresponsive_host_is_killed_at_once_not_after_close_grace(tmp_path: Path, per_host: bool) -> None:
    """Once CancelTask got no event, the host is known unresponsive: it is killed then, without the
    CloseTask grace (200 s here: waiting for it would outlast the 150 s this test waits) or a SIGTERM that a
    stopped process cannot act on. The simulator's ``freeze`` outcome silences the host for good once
    its task runs, as a SIGSTOP would, without racing the task's start."""
    per_host_yaml = "true" if per_host else "false"
    options = f"{{time_scale: 0.05, status_delay: 0.1, process_per_host: {per_host_yaml}}}"
    target = f"{{kind: simulator, slots: 1, close_grace: 200s, options: {options}}}"
    frozen = f"\n  workspace: {EXERCISES}/python/leap\n  timeout: 3s\n  simulate: {{outcome: freeze}}\n"
    suite = write_suite(tmp_path, target, cases(1, frozen, prefix="f"), defaults=", cancel_timeout: 1s")
    suite.write_text(suite.read_text().replace("retries: 1", "retries: 0"))  # one attempt: this one
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    (record,) = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert (record.status.value, record.reason) == ("infra_error", "extension host unresponsive")
    assert record.timings.teardown_s is not None and record.timings.teardown_s < 200


def test_kept_workspaces_survive_the_sweep_after_a_sigkill(tmp_path: Path, sockdir: Path) -> None:
    """The next run removes a killed run's runtime directory: nothing kept may be in it."""
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  timeout: 3s\n  simulate: {{outcome: hang}}\n"
    suite = write_suite(tmp_path, SIM_IN_ORDER, cases(1) + cases(1, hang, prefix="h"))
    run_dir = tmp_path / "r" / "r"
    env = {"TMPDIR": str(sockdir)}
    with running(suite, tmp_path / "r", env=env, args=("--keep-workspaces",)) as (proc, first):
        assert first["case_id"] == "c0" and first["kept_workspace"]
        proc.kill()
        proc.wait()
    kept = run_dir / first["kept_workspace"]
    assert (kept / "two_fer.py").is_file()
    assert list(sockdir.glob("orc-*"))  # the killed run's runtime dir, for the next run to sweep
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--resume",
        "r",
        "--keep-workspaces",
        "--quiet",
        env_extra=env,
    )
    assert res.returncode == 0, res.stderr
    assert not list(sockdir.glob("orc-*"))
    assert (kept / "two_fer.py").is_file()
    records = read_records(run_dir / "results.jsonl")
    h0 = [r for r in records if r.case_id == "h0" and r.final]
    assert len(h0) == 1 and h0[0].kept_workspace is not None
    assert (run_dir / h0[0].kept_workspace).is_dir()
