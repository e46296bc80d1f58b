"""Runtime directories of runs killed outright are removed by the next run in the same place; those of
live runs, and those that name no owner, are left alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.processes import runtime_dir
from orchestrator.run.local import new_runtime_dir


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


def test_the_parent_is_tmpdir_unless_its_path_is_too_long_for_sockets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        assert runtime_dir.parent() == short
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("x" * runtime_dir.MAX_PARENT)))
        assert runtime_dir.parent() == "/tmp"
    finally:
        shutil.rmtree(short)


def test_a_new_runtime_dir_sweeps_first_and_one_kept_for_its_workspaces_is_never_swept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a local run and a Ray node actor both do at their start (a killed actor's dir included)."""
    short = tempfile.mkdtemp(prefix="rd", dir="/tmp")
    try:
        monkeypatch.setattr(tempfile, "tempdir", short)
        dead = runtime_dir.create(short)
        (dead / runtime_dir.OWNER).write_text(f"{_dead_pid()} 123")
        kept = new_runtime_dir(owned=False)
        assert not dead.exists()
        assert not (kept / runtime_dir.OWNER).exists()
        (kept / "work").mkdir()
        mine = new_runtime_dir()
        assert kept.exists() and runtime_dir.owner_alive(mine)
        assert sorted(p.name for p in Path(short).iterdir()) == sorted([kept.name, mine.name])
    finally:
        shutil.rmtree(short)
