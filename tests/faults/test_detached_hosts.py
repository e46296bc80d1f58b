"""Hosts that detach (issue 15): a launcher like VS Code's ``code`` starts the real host in a session of its
own (tests/faults/standin_code.py). On every path, nothing the host start created outlives its teardown (or, for
a run killed outright, the next run's start), checked by scanning /proc for a marker in the environment
that every process the test's run starts inherits."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hosts import owned
from orchestrator.results.records import AttemptRecord, read_records
from orchestrator.results.store import load
from tests.runs import (
    EXERCISES,
    SECRET,
    TWO_FER,
    alive,
    cases,
    cmdline,
    descendants,
    kill_all,
    marked_processes,
    poll_until,
    run_argv,
    write_suite,
)

pytestmark = pytest.mark.timeout(240)

STANDIN = Path(__file__).with_name("standin_code.py")
LAUNCH_TIMEOUT = 60
HANG = f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: hang}}\n"


@pytest.fixture
def marker(tmp_path: Path) -> Iterator[str]:
    """``NAME=value`` in every process of the test's runs; whatever still carries it at the end is
    killed (the test then fails on its own assertion), and so is what the stand-ins started that shed
    it (by pid, if the process still has the start time it had when the test first saw it)."""
    mark = f"ORC_DETACH_TEST={uuid.uuid4().hex}"
    yield mark
    kill_all(marked_processes(mark))
    for pid, start in _SHED.items():
        if owned.start_time(pid) == start:
            kill_all([pid])
    _SHED.clear()


_SHED: dict[int, str] = {}
"""Processes the stand-ins started without the test's marker: pid -> start time."""


def _env(marker: str, **extra: str) -> dict[str, str]:
    name, _, value = marker.partition("=")
    return {**os.environ, "TEST_KEY": SECRET, name: value, **extra}


def _suite(
    tmp_path: Path,
    *,
    wait: bool = True,
    linger: bool = False,
    helper: bool = False,
    body: str = TWO_FER,
    **standin: str,
) -> Path:
    """``standin``: more of the stand-in's variables (``cleared="daemon"``: ``STANDIN_CLEARED=daemon``)."""
    flags = "--wait, " if wait else ""
    argv = f"[{sys.executable}, {STANDIN}, {flags}-n, '{{workspace}}']"
    env = f"STANDIN_REPORT: '{tmp_path / 'report.jsonl'}'"
    env += ", STANDIN_LINGER: '1'" if linger else ""
    env += ", STANDIN_HELPER: '1'" if helper else ""
    env += "".join(f", STANDIN_{name.upper()}: '{value}'" for name, value in standin.items())
    # A grace a closing app meets on a busy machine: what it names in host_killed is then only what stayed.
    target = f"{{kind: command, slots: 1, close_grace: 5s, launch_timeout: {LAUNCH_TIMEOUT}s, argv: {argv}"
    return write_suite(tmp_path, f"{target}, env: {{{env}}}}}", cases(1, body))


def _reports(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "report.jsonl"
    reports = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for report in reports:
        if report.get("cleared") and report["cleared"] not in _SHED:
            _SHED[report["cleared"]] = owned.start_time(report["cleared"]) or ""
    return reports


def _run(tmp_path: Path, suite: Path, marker: str, *extra: str) -> list[AttemptRecord]:
    res = subprocess.run(
        run_argv(suite, tmp_path / "r", "r", "--quiet", *extra),
        capture_output=True,
        text=True,
        env=_env(marker),
        timeout=200,
    )
    assert res.returncode == 0, res.stderr
    return read_records(tmp_path / "r" / "r" / "results.jsonl")


def _killed(record: AttemptRecord) -> set[int]:
    """The pids a record says its teardown had to end."""
    return {int(entry.rsplit("pid ", 1)[1].rstrip(")")) for entry in record.host_killed}


def _start(
    tmp_path: Path, suite: Path, marker: str, run_id: str = "r", **extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_argv(suite, tmp_path / "r", run_id, "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(marker, **extra),
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _gone(pid: int) -> bool:
    return not alive(pid)


def _app_started(tmp_path: Path, n: int = 1) -> dict[str, Any]:
    poll_until(lambda: len(_reports(tmp_path)) >= n, 90, "the detached app")
    return _reports(tmp_path)[n - 1]


@pytest.mark.parametrize("wait", [True, False], ids=["code--wait", "code"])
def test_a_completed_attempt_leaves_nothing_and_names_the_helper_it_ended(
    tmp_path: Path, marker: str, wait: bool
) -> None:
    """The app closes on CloseTask; its detached helper does not, and is ended at the teardown."""
    (record,) = _run(tmp_path, _suite(tmp_path, wait=wait, helper=True), marker)
    assert (record.status.value, record.passed) == ("completed", True), record.error
    (report,) = _reports(tmp_path)
    assert _killed(record) == {report["helper"]}
    assert marked_processes(marker) == []
    frame = load(tmp_path / "r" / "r")
    assert list(frame["host_killed"]) == [record.host_killed]


def test_a_host_that_closes_on_close_task_leaves_nothing_to_kill(tmp_path: Path, marker: str) -> None:
    (record,) = _run(tmp_path, _suite(tmp_path), marker)
    assert record.passed is True
    assert record.host_killed == []
    assert marked_processes(marker) == []


def test_a_timed_out_host_that_ignores_close_task_and_sigterm_is_ended(tmp_path: Path, marker: str) -> None:
    suite = _suite(tmp_path, linger=True, body=HANG + "  timeout: 2s\n")
    (record,) = _run(tmp_path, suite, marker)
    assert record.status.value == "timeout"
    (report,) = _reports(tmp_path)
    # Ended by the attempt's teardown, before its record: not left to the run's end.
    assert report["app"] in _killed(record)
    assert marked_processes(marker) == []


def test_a_frozen_host_is_ended(tmp_path: Path, marker: str) -> None:
    started = (
        f"\n  workspace: {EXERCISES}/python/leap\n  simulate: {{outcome: hang, files: {{started.txt: x}}}}\n"
    )
    suite = _suite(tmp_path, body=started + "  timeout: 4s\n")
    suite.write_text(suite.read_text().replace("retries: 1", "retries: 0, cancel_timeout: 2s"))
    proc = _start(tmp_path, suite, marker)
    try:
        report = _app_started(tmp_path)
        # Frozen once its task runs (it wrote its first file): then CancelTask finds it silent.
        poll_until(lambda: (Path(report["workspace"]) / "started.txt").exists(), 90, "the task")
        os.killpg(report["app"], signal.SIGSTOP)  # the app and its extension host: frozen
        assert proc.wait(timeout=200) == 0
    finally:
        _stop(proc)
    (record,) = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert (record.status.value, record.reason) == ("infra_error", "extension host unresponsive")
    assert {report["app"], report["host"]} <= _killed(record)
    assert marked_processes(marker) == []


def test_the_detached_hosts_of_a_worker_killed_are_ended_while_the_run_goes_on(
    tmp_path: Path, marker: str
) -> None:
    suite = _suite(tmp_path, helper=True, body=HANG + "  timeout: 60s\n")
    proc = _start(tmp_path, suite, marker)
    try:
        report = _app_started(tmp_path)
        (worker,) = [p for p in descendants(proc.pid) if b"spawn_main" in cmdline(p)]
        os.kill(worker, signal.SIGKILL)
        for pid in (report["app"], report["host"], report["helper"]):
            poll_until(partial(_gone, pid), 60, f"process {pid} of the dead worker's host")
        assert proc.poll() is None  # ended by the run at the worker's death, not at its end
        second = _app_started(tmp_path, 2)  # the retry, on a new worker
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        _stop(proc)
    assert second["socket"] != report["socket"]
    assert marked_processes(marker) == []


def test_a_run_stopped_by_ctrl_c_leaves_nothing_and_records_the_cancelled_try(
    tmp_path: Path, marker: str
) -> None:
    # A close grace far longer than the run waits for its cancelled attempts after a ctrl-c: a stop does
    # not sit it out (the user wants out), and the try is still recorded.
    suite = _suite(tmp_path, linger=True, helper=True, body=HANG)
    suite.write_text(suite.read_text().replace("close_grace: 5s", "close_grace: 300s"))
    proc = _start(tmp_path, suite, marker)
    try:
        report = _app_started(tmp_path)
        poll_until(lambda: _task_started(tmp_path), 90, "the task")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        _stop(proc)
    assert marked_processes(marker) == []
    (record,) = read_records(tmp_path / "r" / "r" / "results.jsonl")
    assert (record.status.value, record.final) == ("cancelled", False)
    assert report["app"] in _killed(record)


def _task_started(tmp_path: Path) -> bool:
    live = tmp_path / "r" / "r" / "live"
    return any(b'"taskStarted"' in path.read_bytes() for path in live.glob("*.jsonl"))


def test_the_next_run_ends_what_a_killed_run_left_and_spares_a_live_runs(
    tmp_path: Path, marker: str, sockdir: Path
) -> None:
    """Runs sharing a runtime parent ($TMPDIR): the resume of a SIGKILLed run ends the hosts it left,
    and not those of a run still going."""
    dead_dir, live_dir = tmp_path / "dead", tmp_path / "live"
    dead_dir.mkdir()
    live_dir.mkdir()
    dead_suite = _suite(dead_dir, linger=True, helper=True, body=HANG + "  timeout: 3s\n")
    dead_suite.write_text(dead_suite.read_text().replace("retries: 1", "retries: 0"))
    live_suite = _suite(live_dir, linger=True, body=HANG + "  timeout: 150s\n")  # running all along
    dead = _start(dead_dir, dead_suite, marker, TMPDIR=str(sockdir))
    live = _start(live_dir, live_suite, marker, TMPDIR=str(sockdir))
    try:
        left = _app_started(dead_dir)
        alive_ = _app_started(live_dir)
        dead.kill()
        dead.wait()
        # What `code` started outlives the run killed outright: re-parented away from it.
        for pid in (left["app"], left["host"], left["helper"]):
            assert alive(pid)
        resumed = subprocess.run(
            run_argv(dead_suite, dead_dir / "r", "r", "--quiet", "--resume", "r"),
            capture_output=True,
            text=True,
            env=_env(marker, TMPDIR=str(sockdir)),
            timeout=200,
        )
        assert resumed.returncode == 0, resumed.stderr
        for pid in (left["app"], left["host"], left["helper"]):
            assert not alive(pid)
        assert alive(alive_["app"]) and alive(alive_["host"])
        live.send_signal(signal.SIGINT)
        assert live.wait(timeout=120) == 130
    finally:
        _stop(dead)
        _stop(live)
    assert marked_processes(marker) == []


def test_the_vscode_target_owns_what_code_starts_detached(tmp_path: Path, marker: str) -> None:
    """``code --wait`` as the vscode target runs it: a host that ignores CloseTask is ended."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    code = bindir / "code"
    code.write_text(f'#!/bin/sh\nexec {sys.executable} {STANDIN} "$@"\n')
    code.chmod(code.stat().st_mode | stat.S_IEXEC)
    report = tmp_path / "report.jsonl"
    env = f"{{STANDIN_REPORT: '{report}', STANDIN_LINGER: '1', STANDIN_HELPER: '1'}}"
    target = f"{{kind: vscode, slots: 1, code: {code}, xvfb: false, close_grace: 1s, env: {env}}}"
    suite = write_suite(tmp_path, target, cases(1))
    (record,) = _run(tmp_path, suite, marker)
    assert record.passed is True
    (started,) = _reports(tmp_path)
    assert {started["app"], started["helper"]} <= _killed(record)
    assert marked_processes(marker) == []


def test_a_handed_off_host_that_dies_before_listening_fails_the_attempt_at_once(
    tmp_path: Path, marker: str
) -> None:
    """``code`` exits 0 (it handed the host over), then the app it started dies before it listens: the
    attempt fails with the reason, not after the whole launch timeout."""
    suite = _suite(tmp_path, wait=False, dies="1")
    suite.write_text(suite.read_text().replace("retries: 1", "retries: 0"))
    (record,) = _run(tmp_path, suite, marker)
    assert record.status.value == "infra_error"
    assert (
        record.reason
        == "extension host was handed over by its launcher and ended before listening on its socket"
    )
    assert (record.ended_at - record.started_at).total_seconds() < LAUNCH_TIMEOUT / 2
    assert marked_processes(marker) == []


@pytest.mark.parametrize("mode", ["session", "daemon"])
def test_a_process_that_sheds_the_mark_is_ended(tmp_path: Path, marker: str, mode: str) -> None:
    """The app starts a process with an empty environment (no mark) whose parent exits at once. Found by
    its session, it is ended at the teardown and named in the record; one that also left the session
    is known as the run's only (it was below the worker), and ended with the run."""
    (record,) = _run(tmp_path, _suite(tmp_path, cleared=mode), marker)
    assert record.passed is True
    (report,) = _reports(tmp_path)
    if mode == "session":
        assert report["cleared"] in _killed(record)
    assert not alive(report["cleared"])
    assert marked_processes(marker) == []


def _recorded(parent: Path, pid: int) -> bool:
    """Whether a run's runtime directory under ``parent`` records ``pid`` (orchestrator.hosts.owned)."""
    return any(
        line.split(" ")[0] == str(pid)
        for path in parent.glob(f"orc-*/*{owned.RECORD_SUFFIX}")
        for line in path.read_text().splitlines()
    )


def test_a_daemon_without_the_mark_is_ended_by_the_next_run_after_a_sigkill(
    tmp_path: Path, marker: str, sockdir: Path
) -> None:
    """The app starts a daemon that sheds the environment and the session and whose parent exits at
    once: nothing marks it, nothing of ours is its parent once the run is SIGKILLed. The run recorded
    it (pid and start time) as it appeared; the next run ends it."""
    suite = _suite(tmp_path, cleared="daemon", body=HANG + "  timeout: 60s\n")
    suite.write_text(suite.read_text().replace("retries: 1", "retries: 0"))
    proc = _start(tmp_path, suite, marker, TMPDIR=str(sockdir))
    try:
        report = _app_started(tmp_path)
        daemon = report["cleared"]
        poll_until(lambda: _recorded(sockdir, daemon), 60, "the daemon's record")
        proc.kill()
        proc.wait()
    finally:
        _stop(proc)
    assert alive(daemon) and daemon not in marked_processes(marker)  # escaped the mark, outlived the run
    # The next run in the same $TMPDIR, whatever it runs (the resume would run the hanging case again).
    (tmp_path / "next").mkdir()
    quick = write_suite(tmp_path / "next", "{kind: simulator, slots: 1}", cases(1))
    following = subprocess.run(
        run_argv(quick, tmp_path / "r", "next", "--quiet"),
        capture_output=True,
        text=True,
        env=_env(marker, TMPDIR=str(sockdir)),
        timeout=200,
    )
    assert following.returncode == 0, following.stderr
    for pid in (daemon, report["app"], report["host"]):
        assert not alive(pid)
    assert marked_processes(marker) == []


@pytest.mark.parametrize("per_host", [False, True], ids=["simulator-farm", "simulator-process"])
def test_simulated_hosts_die_with_a_run_killed_outright(
    tmp_path: Path, marker: str, sockdir: Path, per_host: bool
) -> None:
    """A farm (one per worker) and a simulator launched per host both die with their worker, which dies
    with the run (``PR_SET_PDEATHSIG``): nothing of them is left, with no next run to end it."""
    options = f"{{time_scale: 0.05, status_delay: 0.1, process_per_host: {str(per_host).lower()}}}"
    suite = write_suite(tmp_path, f"{{kind: simulator, slots: 1, options: {options}}}", cases(1, HANG))
    proc = _start(tmp_path, suite, marker, TMPDIR=str(sockdir))
    try:
        poll_until(lambda: list(sockdir.glob("orc-*/w*-1.sock")), 90, "the host's socket")
        proc.kill()
        proc.wait()
    finally:
        _stop(proc)
    poll_until(lambda: not marked_processes(marker), 60, "the killed run's hosts to die")
