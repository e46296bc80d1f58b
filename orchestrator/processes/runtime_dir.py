"""A run's private runtime directory (sockets, the bridge's endpoints, workspaces), and the removal of
those left behind by runs that were killed outright.

A run removes its directory when it ends. One killed by SIGKILL or the OOM killer cannot: its processes
die with it (``PR_SET_PDEATHSIG``), but the workspaces and sockets stay. So each directory names its
owner (pid and process start time, which a reused pid does not share), and every run starting in the
same parent first removes the directories whose owner is gone.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "orc-"
OWNER = "owner"
BRIDGE_LOG = "bridge.log"
"""The bridge's log: in the results directory of a local run, in its runtime directory on a Ray node."""
MAX_PARENT = 40
"""Host sockets live below the runtime dir, and sun_path allows ~104 bytes."""


def parent() -> str:
    """Where runtime directories go: $TMPDIR when its path is short (:data:`MAX_PARENT`), else /tmp."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= MAX_PARENT else "/tmp"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), "" where unknown; None if no such
    process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the comm
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def owner_alive(directory: Path) -> bool:
    try:
        pid_text, _, started = (directory / OWNER).read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # not ours to judge: being created, or made by an older version
    now = _start_time(pid)
    return now is not None and (not now or not started or now == started.strip())


def create(parent: str | Path, *, owned: bool = True) -> Path:
    """A new private (0700) runtime directory under ``parent`` that names this process as its owner.
    ``owned=False``: it names none, so no sweep ever removes it (a Ray node keeping its workspaces
    there for the user)."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    path.chmod(0o700)
    if owned:
        (path / OWNER).write_text(f"{os.getpid()} {_start_time(os.getpid()) or ''}")
    return path


def sweep(parent: str | Path) -> int:
    """Remove the runtime directories under ``parent`` whose owner process is gone; how many."""
    removed = 0
    try:
        candidates = list(Path(parent).glob(f"{PREFIX}*"))
    except OSError:
        return 0
    for directory in candidates:
        try:
            mine = directory.is_dir() and directory.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and not owner_alive(directory):
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    if removed:
        log.info(
            "removed %d runtime director%s of runs killed outright", removed, "y" if removed == 1 else "ies"
        )
    return removed
