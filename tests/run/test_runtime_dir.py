"""Runtime directories of runs killed outright are removed by the next run in the same place; those of
live runs, and those that name no owner, are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.processes import runtime_dir


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(child.stdout)  # reaped: no process has this pid now (until it is reused)


def test_create_names_this_process_and_is_private(tmp_path: Path) -> None:
    path = runtime_dir.create(tmp_path)
    assert path.name.startswith(runtime_dir.PREFIX)
    assert path.stat().st_mode & 0o777 == 0o700
    pid, started = (path / runtime_dir.OWNER).read_text().split(" ")
    assert int(pid) == os.getpid() and started


def test_sweep_removes_only_directories_whose_owner_is_gone(tmp_path: Path) -> None:
    live = runtime_dir.create(tmp_path)
    (live / "work").mkdir()
    dead = runtime_dir.create(tmp_path)
    (dead / "work" / "case").mkdir(parents=True)
    (dead / "work" / "case" / "big.txt").write_text("x" * 1000)
    (dead / runtime_dir.OWNER).write_text(f"{_dead_pid()} 123")
    reused = runtime_dir.create(tmp_path)  # this pid, but another process's start time: pid reused
    (reused / runtime_dir.OWNER).write_text(f"{os.getpid()} 1")
    unknown = tmp_path / "orc-older-version"
    unknown.mkdir()
    other = tmp_path / "not-a-run"
    other.mkdir()

    assert runtime_dir.sweep(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unknown.name, other.name])
    assert runtime_dir.sweep(tmp_path) == 0


def test_sweep_of_a_missing_parent_is_nothing(tmp_path: Path) -> None:
    assert runtime_dir.sweep(tmp_path / "missing") == 0
