"""Launched hosts as real users run them (``command`` targets such as the Roo CLI): a stdin that stays
open, both socket variables, a private TMPDIR, and a host that dies says why, at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from orchestrator.hosts.process import launch
from orchestrator.results.records import read_records
from orchestrator.results.store import load
from tests.runs import (
    EXERCISES,
    SECRET,
    cases,
    cmdline,
    descendants,
    kill_all,
    marked_processes,
    orchestrate,
    poll_until,
    run_argv,
    write_suite,
)

pytestmark = pytest.mark.timeout(180)

HOST = """\
import json, os, signal, subprocess, sys, tempfile

mode, report = sys.argv[1], sys.argv[2]
simulator = [sys.executable, "-m", "orchestrator", "simulate", "--workspace", os.getcwd(),
             "--time-scale", "0.05", "--status-delay", "0.1"]
if mode == "die":  # a host that cannot start: says why on stderr, exits before it listens
    print("starting up", flush=True)
    print(f"fatal: cannot reach the model with key {os.environ['TEST_KEY']}", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "cli":  # like the Roo CLI in --stdin-prompt-stream mode: ends when stdin reaches EOF
    child = subprocess.Popen(simulator)
    print("cli: waiting for commands on stdin", flush=True)
    sys.stdin.buffer.read()
    print("no stdin command provided", file=sys.stderr, flush=True)
    child.terminate()
    child.wait()
    sys.exit(1)
if mode == "loud":  # says something, then serves (the case's simulate: outcome decides how it ends)
    print("serving; the model API is unreachable", file=sys.stderr, flush=True)
    os.execv(sys.executable, simulator)
if mode == "mute":  # listens, takes every command, never answers one (wedged before its first task)
    import socket, threading
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.environ["ROO_CODE_IPC_SOCKET_PATH"])
    server.listen()
    def drain(conn):
        from ipc_bridge.roo.framing import encode_frame
        from ipc_bridge.roo.protocol import Ack, AckMessage
        ack = AckMessage(data=Ack(clientId="0123456789ab", pid=os.getpid(), ppid=os.getppid()))
        conn.sendall(encode_frame(ack))
        while conn.recv(65536):
            pass
    while True:
        threading.Thread(target=drain, args=(server.accept()[0],), daemon=True).start()
if mode == "daemon":  # starts a helper of its own that leaves its session (as some helpers do)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    with open(report, "a") as fh:
        fh.write("helper started\\n")
    os.execv(sys.executable, simulator)
if mode == "env":  # says what it was given, leaves a file in its TMPDIR (the CLI's --ephemeral dir)
    tmp = tempfile.mkdtemp(prefix="roo-cli-")
    with open(report, "a") as fh:
        fh.write(json.dumps({k: os.environ.get(k) for k in
                 ("ROO_CODE_IPC_SOCKET_PATH", "KILO_IPC_SOCKET_PATH", "TMPDIR")} | {"ephemeral": tmp}) + "\\n")
    os.execv(sys.executable, simulator)
"""


def _host_script(tmp_path: Path) -> Path:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    return script


def _command_suite(tmp_path: Path, mode: str, *, n: int = 1, target_extra: str = "") -> Path:
    report = tmp_path / "report.jsonl"
    argv = f"[{sys.executable}, {_host_script(tmp_path)}, {mode}, '{report}']"
    target = f"{{kind: command, slots: 1, close_grace: 1s, argv: {argv}{target_extra}}}"
    configuration = ', configuration: {apiProvider: openrouter, openRouterApiKey: "${TEST_KEY}"}'
    return write_suite(tmp_path, target, cases(n), defaults=configuration)


def _run(tmp_path: Path, suite: Path, *extra: str, env_extra: dict[str, str] | None = None) -> Path:
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--run-id",
        "r",
        "--quiet",
        *extra,
        env_extra=env_extra,
    )
    assert res.returncode == 0, res.stderr
    return tmp_path / "r" / "r"


def test_a_host_that_ends_at_stdin_eof_runs_its_attempt(tmp_path: Path) -> None:
    """The Roo CLI exits ~4 s after stdin reaches EOF: a host's stdin stays open for its whole life."""
    run_dir = _run(tmp_path, _command_suite(tmp_path, "cli"))
    (record,) = read_records(run_dir / "results.jsonl")
    assert (record.status.value, record.passed) == ("completed", True), record.reason


def test_a_host_that_dies_while_starting_says_why_at_once(tmp_path: Path) -> None:
    # launch_timeout 150 s: were the host's exit not watched, the run would outlast the test's timeout.
    # The host is given the key on purpose (its target's env:): children inherit no suite secret.
    extra = ', launch_timeout: 150s, env: {TEST_KEY: "${TEST_KEY}"}'
    suite = _command_suite(tmp_path, "die", target_extra=extra)
    run_dir = _run(tmp_path, suite)
    records = read_records(run_dir / "results.jsonl")
    assert [(r.attempt, r.status.value, r.final) for r in records] == [
        (1, "infra_error", False),
        (2, "infra_error", True),
    ]
    for record in records:
        assert record.reason == "extension host exited with code 3 before listening on its socket"
        tail = record.host_output_tail
        assert tail is not None and "fatal: cannot reach the model with key ***" in tail
        assert "starting up" in tail
        assert SECRET not in tail
        # The whole log is kept in the results (redacted too), named like the attempt's transcript.
        assert (
            record.host_log
            == f"hosts/{record.case_id}__{record.model_id}__{record.repeat}__{record.attempt}.log"
        )
        log = (run_dir / record.host_log).read_text()
        assert "fatal: cannot reach the model" in log and SECRET not in log
    frame = load(run_dir, all_attempts=True)
    assert list(frame["host_log"]) == [r.host_log for r in records]
    assert all("fatal" in t for t in frame["host_output_tail"])


def test_a_host_that_dies_mid_task_says_how_and_what_it_printed(tmp_path: Path) -> None:
    crash = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: crash}}\n"
    suite = _command_suite(tmp_path, "loud")
    suite.write_text(suite.read_text().split("cases:\n")[0] + "cases:\n" + cases(1, crash))
    run_dir = _run(tmp_path, suite)
    records = read_records(run_dir / "results.jsonl")
    assert len(records) == 2
    for record in records:
        assert (record.status.value, record.reason) == ("infra_error", "extension host disconnected")
        assert record.error == "the extension host exited with code 1"
        assert record.host_output_tail is not None
        assert record.host_output_tail.startswith("serving; the model API is unreachable\n")


def test_a_host_that_never_starts_its_task_is_not_given_the_close_grace(tmp_path: Path) -> None:
    """CloseTask is for a task; a host that never reported one is stopped at once (close_grace 200 s
    here: waiting for it would outlast the 150 s this test waits)."""
    suite = _command_suite(tmp_path, "mute")
    suite.write_text(
        suite.read_text()
        .replace("close_grace: 1s", "close_grace: 200s")
        .replace("retries: 1", "retries: 0, start_timeout: 2s")
    )
    run_dir = _run(tmp_path, suite)
    (record,) = read_records(run_dir / "results.jsonl")
    assert record.status.value == "infra_error"
    assert record.task_id is None
    assert record.timings.teardown_s is not None and record.timings.teardown_s < 200


def test_a_completed_attempt_keeps_its_host_log_without_a_tail(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, _command_suite(tmp_path, "cli"))
    (record,) = read_records(run_dir / "results.jsonl")
    assert record.host_output_tail is None
    assert record.host_log is not None
    assert "cli: waiting for commands on stdin" in (run_dir / record.host_log).read_text()


def test_hosts_get_both_socket_variables_and_a_private_tmpdir_removed_with_them(tmp_path: Path) -> None:
    outer_tmp = tmp_path / "tmp"
    outer_tmp.mkdir()
    suite = _command_suite(tmp_path, "env", n=2)
    _run(tmp_path, suite, env_extra={"TMPDIR": str(outer_tmp)})
    reports = [json.loads(line) for line in (tmp_path / "report.jsonl").read_text().splitlines()]
    assert len(reports) == 2
    tmpdirs = {r["TMPDIR"] for r in reports}
    assert len(tmpdirs) == 2  # one per host
    for report in reports:
        socket = report["ROO_CODE_IPC_SOCKET_PATH"]
        assert socket and report["KILO_IPC_SOCKET_PATH"] == socket
        # In the run's private runtime directory, beside the host's socket.
        assert Path(report["TMPDIR"]).parent == Path(socket).parent
        assert Path(report["ephemeral"]).parent == Path(report["TMPDIR"])
    # Everything the hosts left in their TMPDIR went with them; the run's runtime dir too.
    assert not any(Path(r["TMPDIR"]).exists() for r in reports)
    assert list(outer_tmp.iterdir()) == []


async def test_launch_gives_a_stdin_open_until_stop_and_a_private_tmpdir(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """\
        import os, stat, sys
        st = os.stat(os.environ["TMPDIR"])
        print(stat.S_IMODE(st.st_mode), os.environ["TMP"] == os.environ["TMPDIR"], flush=True)
        print(len(sys.stdin.buffer.read()), "at eof", flush=True)
        """
    )
    log = tmp_path / "host.log"
    tmpdir = tmp_path / "t"
    host = await launch(
        [sys.executable, "-c", probe],
        socket_path=str(tmp_path / "h.sock"),
        workspace=tmp_path,
        log_path=log,
        tmpdir=tmpdir,
    )
    try:
        started = lambda: log.exists() and log.read_text().endswith("\n")  # noqa: E731
        await asyncio.to_thread(poll_until, started, 30, "the probe's first line")
        assert tmpdir.is_dir()
    finally:
        await host.stop(grace=10)
    assert not tmpdir.exists()
    # Never at EOF: its stdin stayed open until it was stopped.
    assert log.read_text().splitlines() == [f"{0o700} True"]
    assert host.stdin is None


def test_no_process_the_run_started_outlives_it(tmp_path: Path) -> None:
    """Not even a host's helper that left the host's session and process group."""
    marker = f"ORC_TEST_MARK={uuid.uuid4().hex}"
    name, _, value = marker.partition("=")
    suite = _command_suite(tmp_path, "daemon", n=2)
    res = orchestrate(
        "run",
        str(suite),
        "--results",
        str(tmp_path / "r"),
        "--run-id",
        "r",
        "--quiet",
        env_extra={name: value},
    )
    left = marked_processes(marker)
    kill_all(left)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "report.jsonl").read_text().count("helper started") == 2
    assert left == []
    assert "leaked" not in res.stderr and "resource_tracker" not in res.stderr


def test_no_process_outlives_a_run_stopped_by_a_second_ctrl_c(tmp_path: Path) -> None:
    marker = f"ORC_TEST_MARK={uuid.uuid4().hex}"
    name, _, value = marker.partition("=")
    report = tmp_path / "report.jsonl"
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: hang}}\n"
    suite = _command_suite(tmp_path, "daemon")
    suite.write_text(suite.read_text().split("cases:\n")[0] + "cases:\n" + cases(1, hang))
    proc = subprocess.Popen(
        run_argv(suite, tmp_path / "r", "r", "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TEST_KEY": SECRET, name: value},
    )
    try:
        poll_until(lambda: report.exists() and "helper started" in report.read_text(), 60, "the host")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = marked_processes(marker)
    kill_all(left)
    assert proc.returncode == 130, stderr
    assert left == []


def test_the_log_of_a_host_whose_worker_died_is_kept_too(tmp_path: Path, sockdir: Path) -> None:
    hang = f"\n  workspace: {EXERCISES}/python/leap\n  timeout: 3s\n  simulate: {{outcome: hang}}\n"
    suite = _command_suite(tmp_path, "loud")
    suite.write_text(suite.read_text().split("cases:\n")[0] + "cases:\n" + cases(1, hang))
    proc = subprocess.Popen(
        run_argv(suite, tmp_path / "r", "r", "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TEST_KEY": SECRET, "TMPDIR": str(sockdir)},
    )
    try:
        poll_until(lambda: list(sockdir.glob("orc-*/w*-1.sock")), 60, "the first host's socket")
        (worker,) = [p for p in descendants(proc.pid) if b"spawn_main" in cmdline(p)]
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert (records[0].attempt, records[0].reason) == (1, "worker died")
    kept = list((tmp_path / "r" / "r" / "hosts").glob("w*-1.host.log"))
    assert len(kept) == 1 and "serving; the model API is unreachable" in kept[0].read_text()
