"""The marks of hosts' processes: which a teardown or the next run ends, and which it spares."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.hosts import marks as host_marks
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
