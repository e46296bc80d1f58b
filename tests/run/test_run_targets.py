"""More of ``orchestrate run`` end to end: engines, budget, hard kill + resume, command and vscode targets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.results.records import read_records
from tests.runs import (
    EXERCISES,
    SIM,
    cases,
    orchestrate,
    running,
    write_suite,
)

pytestmark = pytest.mark.timeout(180)


def test_engine_3_50_completes_through_task_completed(tmp_path: Path) -> None:
    target = "{kind: simulator, slots: 1, engine: '3.50', options: {time_scale: 0.05, status_delay: 0.1}}"
    suite = write_suite(tmp_path, target, cases(1))
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    (record,) = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert record.status.value == "completed"
    assert record.passed is True
    assert "taskCompleted" in record.reason
    assert record.events_file is not None
    transcript = (tmp_path / "r" / "r" / record.events_file).read_text().splitlines()
    names = [json.loads(line)["event"]["eventName"] for line in transcript]
    assert "taskCompleted" in names


def test_budget_stops_starting_attempts(tmp_path: Path) -> None:
    target = "{kind: simulator, slots: 1, options: {time_scale: 0.05, status_delay: 0.1}}"
    suite = write_suite(tmp_path, target, cases(5), top="budget: {max_cost_usd: 0.9}\n")
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["stop_reason"] == "budget"
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert len(records) == 2  # 0.5 spent after one, 1.0 >= 0.9 after two: no third start
    assert summary["skipped_budget"] == 3


def test_resume_refuses_a_changed_suite_without_force(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, SIM, cases(1))
    assert (
        orchestrate(
            "run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--quiet"
        ).returncode
        == 0
    )
    suite.write_text(suite.read_text().replace("Implement two_fer.", "Implement two_fer, please."))
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--resume", "r", "--quiet")
    assert res.returncode == 2
    assert "--force" in res.stderr
    forced = orchestrate(
        "run", str(suite), "--results", str(tmp_path / "r"), "--resume", "r", "--force", "--quiet"
    )
    assert forced.returncode == 0, forced.stderr
    assert len([r for r in read_records(tmp_path / "r" / "r" / "results.jsonl") if r.final]) == 2


def test_command_target_fills_the_template(tmp_path: Path) -> None:
    argv = (
        f"[{sys.executable}, -m, orchestrator, simulate, --socket, '{{socket}}', --workspace, '{{workspace}}',"
        " --time-scale, '0.05', --status-delay, '0.1']"
    )
    target = f"{{kind: command, slots: 2, argv: {argv}, env: {{SLOT_NAME: 'slot-{{slot}}'}}}}"
    suite = write_suite(tmp_path, target, cases(3))
    res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--quiet")
    assert res.returncode == 0, res.stderr
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert [(r.status.value, r.passed) for r in records] == [("completed", True)] * 3


def test_vscode_target_launches_code_like_roo_does(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls.jsonl"
    code = bindir / "code"
    # A stand-in `code`: records how it was called, then serves the simulator where Roo would listen.
    code.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import json, os, sys
            with open({str(calls)!r}, "a") as fh:
                fh.write(json.dumps({{"argv": sys.argv[1:], "socket": os.environ.get("ROO_CODE_IPC_SOCKET_PATH"),
                                      "cwd": os.getcwd(), "extra": os.environ.get("EXTRA")}}) + "\\n")
            workspace = sys.argv[-1]
            os.execv({sys.executable!r}, [{sys.executable!r}, "-m", "orchestrator", "simulate",
                     "--workspace", workspace, "--time-scale", "0.05", "--status-delay", "0.1"])
            """
        )
    )
    code.chmod(code.stat().st_mode | stat.S_IEXEC)
    target = "{kind: vscode, slots: 1, code: code, xvfb: false, args: [--log, trace], env: {EXTRA: 'yes'}}"
    suite = write_suite(tmp_path, target, cases(1))
    env_path = f"{bindir}:{os.environ['PATH']}"
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--run-id",
        "r",
        "--quiet",
        env_extra={"PATH": env_path},
    )
    assert res.returncode == 0, res.stderr
    (record,) = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert record.passed is True
    (call,) = [json.loads(line) for line in calls.read_text().splitlines()]
    argv = call["argv"]
    assert argv[-2] == "-n"
    assert argv[-1] == call["cwd"]  # the workspace copy, opened in a new window
    assert "--disable-workspace-trust" in argv
    assert any(a.startswith("--user-data-dir=") for a in argv)
    assert "--log" in argv
    assert call["socket"].endswith(".sock")
    assert len(call["socket"].encode()) < 104
    assert call["extra"] == "yes"
    assert not Path(call["socket"]).exists()  # the host is gone and its socket with it


def test_sigint_reaches_only_the_orchestrator_not_the_bridge(tmp_path: Path) -> None:
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: hang}}\n"
    suite = write_suite(tmp_path, SIM, cases(1) + cases(1, hang, prefix="h"))
    with running(suite, tmp_path / "r", start_new_session=True) as (proc, first):
        assert first["case_id"] == "c0"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        proc.communicate(timeout=20)
    assert proc.returncode == 130
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    # The cancel went through the bridge: it was still up when the worker sent CancelTask.
    (hung,) = [r for r in records if r.case_id == "h0"]
    assert hung.status.value == "cancelled"
    assert hung.events_file is not None


def test_second_sigint_exits_at_once_with_valid_files(tmp_path: Path) -> None:
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: hang}}\n"
    suite = write_suite(tmp_path, SIM, cases(1) + cases(1, hang, prefix="h"))
    with running(suite, tmp_path / "r") as (proc, first):
        assert first["case_id"] == "c0"
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)

        proc.communicate(timeout=60)  # a hang would never end: no cancel is waited for
    assert proc.returncode == 130
    run_dir = tmp_path / "r" / "r"
    finals = [r for r in read_records(run_dir / "results.jsonl") if r.final]
    # "At once": the hung attempt's CancelTask was not waited for, so it has no record (after one Ctrl-C
    # it would be recorded as cancelled). A wall-clock bound would fail on a busy machine, not on a wait.
    assert [r.case_id for r in finals] == ["c0"]
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] in ("killed", "interrupted")


def test_socket_target_leases_running_hosts_and_leaves_them_running(tmp_path: Path, sockdir: Path) -> None:
    hosts = []
    try:
        for seed, name in enumerate(("a", "b")):
            ws = tmp_path / f"ws-{name}"
            ws.mkdir()
            hosts.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "orchestrator",
                        "simulate",
                        "--socket",
                        str(sockdir / f"{name}.sock"),
                        "--workspace",
                        str(ws),
                        "--time-scale",
                        "0.05",
                        "--status-delay",
                        "0.1",
                        "--seed",
                        str(seed),  # two real hosts never share task ids
                    ],
                    stdin=subprocess.DEVNULL,
                )
            )
        target = f"{{kind: socket, sockets: ['{sockdir}/a.sock', '{sockdir}/b.sock']}}"
        cases = "".join(
            f"- id: c{i}\n  prompt: p{i}\n  simulate: {{files: {{out{i}.txt: '{i}'}}}}\n" for i in range(5)
        )
        suite = write_suite(tmp_path, target, cases)
        res = orchestrate("run", str(suite), "--results", str(tmp_path / "r"), "--run-id", "r", "--quiet")
        assert res.returncode == 0, res.stderr
        records = read_records(tmp_path / "r" / "r" / "results.jsonl")
        assert sorted((r.case_id, r.status.value) for r in records) == [
            (f"c{i}", "completed") for i in range(5)
        ]
        # Each attempt's root is the task its own StartNewTask created, though the hosts were reused.
        assert len({r.task_id for r in records}) == 5
        # The hosts were leased, not closed: both still run and wrote every file between them.
        assert all(h.poll() is None for h in hosts)
        written = sorted(p.name for p in tmp_path.glob("ws-*/out*.txt"))
        assert written == [f"out{i}.txt" for i in range(5)]
    finally:
        for h in hosts:
            h.terminate()
            h.wait(timeout=10)


async def test_sigint_cancels_the_task_on_a_leased_host(tmp_path: Path, sockdir: Path) -> None:
    from ipc_bridge.roo.extension import connect

    sock = sockdir / "leased.sock"
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator",
        "simulate",
        "--socket",
        str(sock),
        "--workspace",
        str(tmp_path),
        "--time-scale",
        "0.05",
        "--status-delay",
        "0.1",
        stdin=subprocess.DEVNULL,
    )
    observer = None
    run = None
    try:
        observer = await connect(str(sock), timeout=20)  # a second client sees every broadcast event
        target = f"{{kind: socket, sockets: ['{sock}']}}"
        suite = write_suite(tmp_path, target, "- id: h0\n  prompt: hang\n  simulate: {outcome: hang}\n")
        run = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            str(suite),
            "--results",
            str(tmp_path / "r"),
            "--run-id",
            "r",
            "--quiet",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def first(name: str) -> str:
            async for event in observer.events():
                if event.eventName == name and event.task_id:
                    return event.task_id
            raise AssertionError(f"host closed before {name}")

        task_id = await asyncio.wait_for(first("taskStarted"), 30)
        run.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(first("taskAborted"), 15) == task_id
        assert await asyncio.wait_for(run.wait(), 20) == 130
        assert host.returncode is None  # leased, not closed
    finally:
        if run is not None and run.returncode is None:
            run.kill()
            await run.wait()
        if observer is not None:
            await observer.close()
        if host.returncode is None:
            host.terminate()
            await host.wait()


def test_kept_workspaces_are_in_the_results_named_in_records_and_survive_later_runs(
    tmp_path: Path, sockdir: Path
) -> None:
    """Not in the runtime directory, which the next run's sweep removes once its owner is gone."""
    suite = write_suite(tmp_path, SIM, cases(2))
    env = {"TMPDIR": str(sockdir)}
    results = tmp_path / "r"
    res = orchestrate(
        "run", str(suite), "--results", str(results), "--run-id", "a", "--keep-workspaces", env_extra=env
    )
    assert res.returncode == 0, res.stderr
    kept_dir = results / "a" / "workspaces"
    assert f"workspaces kept in {kept_dir}" in res.stdout
    records = read_records(results / "a" / "results.jsonl")
    assert sorted(r.kept_workspace or "" for r in records) == [
        f"workspaces/c{i}__default__0__1" for i in range(2)
    ]
    assert not list(sockdir.glob("orc-*"))  # the runtime dir went: nothing kept was in it
    res = orchestrate("run", str(suite), "--results", str(results), "--run-id", "b", "--json", env_extra=env)
    assert res.returncode == 0, res.stderr
    assert "workspaces_dir" not in json.loads(res.stdout.splitlines()[-1])
    for record in records:
        assert record.kept_workspace is not None
        # The agent's work, as the check graded it.
        assert "One for {name}" in (results / "a" / record.kept_workspace / "two_fer.py").read_text()
    assert not (results / "b" / "workspaces").exists()
