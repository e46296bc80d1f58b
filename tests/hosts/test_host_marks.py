"""The marks of hosts' processes: which a teardown or the next run ends, and which it spares."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.hosts import marks as host_marks
from orchestrator.hosts import owned
from orchestrator.processes import runtime_dir

SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _marked(
    spawn: list[subprocess.Popen[bytes]], mark: str, *, detached: bool = False
) -> subprocess.Popen[bytes]:
    env = {**os.environ, host_marks.MARK_ENV: mark}
    proc = subprocess.Popen(SLEEP, env=env, start_new_session=detached)
    spawn.append(proc)
    return proc


def test_a_teardown_ends_its_hosts_processes_and_spares_the_others(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    mine = _marked(spawn, str(tmp_path / "w0-1.sock"), detached=True)
    other = _marked(spawn, str(tmp_path / "w0-2.sock"))
    ended = host_marks.end_marked(host_marks.of_host(str(tmp_path / "w0-1.sock")), grace=5.0)
    assert len(ended) == 1 and ended[0].endswith(f"(pid {mine.pid})")
    assert mine.wait(timeout=30) is not None
    assert other.poll() is None
    assert host_marks.end_marked(host_marks.of_host(str(tmp_path / "w0-1.sock"))) == []


def test_a_workers_marks_are_its_hosts_only(tmp_path: Path) -> None:
    of_w1 = host_marks.of_worker(tmp_path, 1)
    assert of_w1(str(tmp_path / "w1-3.sock"))
    assert not of_w1(str(tmp_path / "w12-3.sock"))
    assert not of_w1(str(tmp_path / "sub" / "w1-3.sock"))


def test_the_next_run_ends_only_marks_of_runs_whose_owner_is_gone(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    live = runtime_dir.create(tmp_path)  # owned by this process: alive
    dead = runtime_dir.create(tmp_path)
    gone = subprocess.Popen(SLEEP)
    gone.kill()
    gone.wait()
    (dead / runtime_dir.OWNER).write_text(f"{gone.pid} 1")
    unowned = tmp_path / "orc-being-made"  # no owner file yet: not ours to judge
    unowned.mkdir()
    elsewhere = tmp_path / "other" / "orc-x"
    elsewhere.mkdir(parents=True)
    match = host_marks.of_dead_runs(tmp_path)
    assert match(str(dead / "w0-1.sock"))
    assert match(str(tmp_path / "orc-removed" / "w0-1.sock"))  # its directory is gone with its run
    assert not match(str(live / "w0-1.sock"))
    assert not match(str(unowned / "w0-1.sock"))
    assert not match(str(elsewhere / "w0-1.sock"))
    assert not match(str(tmp_path / "w0-1.sock"))
    left = _marked(spawn, str(dead / "w0-1.sock"))
    spared = _marked(spawn, str(live / "w0-1.sock"))
    expected = [host_marks.describe(left.pid)]
    assert host_marks.end_marked(match) == expected
    assert left.wait(timeout=30) is not None
    assert spared.poll() is None


def test_a_marked_process_in_a_session_it_did_not_make_takes_nothing_else_with_it(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Marked but in this test's session (which no host made): its session-mates, this process among
    them, are not the host's."""
    marked = _marked(spawn, str(tmp_path / "w0-1.sock"))
    sibling = subprocess.Popen(SLEEP)
    spawn.append(sibling)
    expected = [host_marks.describe(marked.pid)]
    assert host_marks.end_marked(host_marks.of_host(str(tmp_path / "w0-1.sock"))) == expected
    assert marked.wait(timeout=30) is not None
    assert sibling.poll() is None


def test_what_a_host_started_without_its_mark_is_ended_by_session_and_by_record(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A marked session leader's child that cleared its environment is found by its session; a process
    its record names is found if it still has the recorded start time, and only then."""
    socket = str(tmp_path / "w0-1.sock")
    code = f"import subprocess, time; subprocess.Popen({SLEEP!r}, env={{}}); time.sleep(600)"
    leader = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, host_marks.MARK_ENV: socket}, start_new_session=True
    )
    spawn.append(leader)
    recorded = subprocess.Popen(SLEEP, start_new_session=True)
    misrecorded = subprocess.Popen(SLEEP, start_new_session=True)
    spawn.extend([recorded, misrecorded])
    start = owned.start_time(recorded.pid)
    owned.record_of(socket).write_text(f"{recorded.pid} {start}\n{misrecorded.pid} 1\n")

    def child() -> list[int]:
        return [p for p, s in owned.snapshot().items() if s.ppid == leader.pid]

    deadline = time.monotonic() + 30
    while not child() and time.monotonic() < deadline:
        time.sleep(0.02)  # nothing tells us when the leader has started its child
    (cleared,) = child()
    assert host_marks.mark_of(cleared) is None
    expected = sorted(host_marks.describe(p) for p in (leader.pid, cleared, recorded.pid))
    assert sorted(host_marks.end_marked(host_marks.of_host(socket))) == expected
    assert recorded.wait(timeout=30) is not None and leader.wait(timeout=30) is not None
    left = owned.snapshot().get(cleared)
    assert left is None or left.zombie
    assert misrecorded.poll() is None
