"""One process owns a run directory at a time: an ``flock`` on ``results/<run>/.lock``.

Two writers of one results.jsonl would each believe they own the run: both run the same pending keys
and both append final records for them. The lock is held for the writer's life and released by the
kernel when its process dies however it dies, so a SIGKILLed owner never blocks a resume. The file
names its owner (pid and host) for the refusal message; its content is advice only, the flock is the
truth. Its descriptor is close-on-exec, so no child (bridge, worker, host) keeps it past its owner.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from orchestrator.results.records import ResultsError

LOCK = ".lock"
_OWNER_WAIT = 1.0
"""How long a refused process waits for a new owner to write its name (it writes right after locking)."""
_PROBE_WAIT = 0.5
"""How long taking the lock tries again: :meth:`RunLock.held` probes with a shared lock held for
microseconds (``orchestrate view`` does, every second), and a run starting at that instant must not be
refused for it. An owner holds the lock for its whole life, so half a second tells the two apart."""


class RunInProgressError(ResultsError):
    """Another live process owns the run directory."""

    def __init__(self, run_dir: Path, owner: str) -> None:
        self.run_dir = run_dir
        super().__init__(f"run {run_dir.name} is in progress ({owner})")


class RunLock:
    """An exclusive, non-blocking lock of one run directory; :meth:`release` (or process death) frees it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            os.close(fd)
            raise RunInProgressError(Path(run_dir), _owner(self.path)) from None
        except OSError:
            os.close(fd)
            raise
        self._fd: int | None = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        except OSError:
            self.release()
            raise

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = None

    @staticmethod
    def held(run_dir: Path) -> str | None:
        """Who holds ``run_dir``'s lock right now ("pid N on host H"), or None if nobody does."""
        path = Path(run_dir) / LOCK
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _owner(path)
        except OSError:
            return None
        finally:
            os.close(fd)  # also drops the shared lock if it was taken
        return None


def _lock_exclusive(fd: int) -> None:
    """``LOCK_EX``, tried again while a :meth:`RunLock.held` probe may be what holds it."""
    deadline = time.monotonic() + _PROBE_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.005)  # a probe holds it for microseconds; an owner, for its life


def _owner(path: Path) -> str:
    deadline = time.monotonic() + _OWNER_WAIT
    text = ""
    while True:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").strip()
        if text or time.monotonic() >= deadline:
            break
        time.sleep(0.02)  # the owner locks first, then writes its name
    pid, _, host = text.partition(" ")
    if not pid:
        return "another process holds its lock"
    return f"pid {pid} on host {host or '?'}"
