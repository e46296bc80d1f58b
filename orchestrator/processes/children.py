"""Every process a run starts has ended before ``orchestrate run`` does.

The run's direct children (workers, the bridge) are stopped in order by their owners. What they start
(extension hosts, checks, the simulator farm, and whatever those start) lives in sessions of its own,
and when its parent dies first (a worker terminated at a stop, a host's leader gone before its helpers)
it would be re-parented to init and outlive the run, unwaited for. So for the length of a run this
process is a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``): such orphans become its children. They
are reaped while the run goes on (no zombies pile up), and killed and waited for when it ends.

multiprocess's resource tracker, a child that ends only once this process has closed its pipe, is
stopped and waited for too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Collection

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper(on: bool) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)


def _children() -> dict[int, tuple[str, int, int]]:
    """This process's children: pid -> (state, process group, session), from /proc."""
    me = os.getpid()
    out: dict[int, tuple[str, int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            out[int(entry.name)] = (fields[0].decode(), int(fields[2]), int(fields[3]))
    return out


def _wait(pid: int, deadline: float) -> bool:
    """Reap ``pid`` (a child of ours) by ``deadline``; whether it was."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
        fd = os.pidfd_open(pid)  # readable once the process has exited
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        return bool(os.waitpid(pid, os.WNOHANG)[0])
    except (ChildProcessError, ProcessLookupError):
        return True  # reaped by its owner meanwhile


class Adoptions:
    """Orphans of the run's processes, adopted by this one for the run's length (see the module)."""

    def __init__(self) -> None:
        self.enabled = sys.platform.startswith("linux") and hasattr(os, "pidfd_open") and _set_subreaper(True)
        self._session = os.getsid(0)
        # Children this process had before (a caller's own): never ours to reap or kill.
        self._before = set(_children()) if self.enabled else set()

    def _adopted(self, keep: Collection[int]) -> dict[int, tuple[str, int, int]]:
        """Children in other sessions than this one's: what the workers started, never the workers
        (or multiprocess's resource tracker), which are in this session. ``keep``: direct children in
        sessions of their own (the bridge), reaped by their owners."""
        return {
            pid: info
            for pid, info in _children().items()
            if info[2] != self._session and pid not in self._before and pid not in keep
        }

    def reap(self, keep: Collection[int] = ()) -> int:
        """Reap the adopted children that have exited; how many."""
        if not self.enabled:
            return 0
        reaped = 0
        for pid, (state, _, _) in self._adopted(keep).items():
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                    reaped += 1
        return reaped

    def close(self, timeout: float = 10.0) -> int:
        """At the run's end, its own processes stopped: kill every adopted child (and its process
        group) and wait for it, until none is left; then stop adopting. Returns how many were alive."""
        if not self.enabled:
            return 0
        killed = 0
        deadline = time.monotonic() + timeout
        try:
            while adopted := self._adopted(()):
                for pid, (state, group, _) in adopted.items():
                    if state != "Z":
                        killed += 1
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(group, signal.SIGKILL)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, signal.SIGKILL)
                waited = [_wait(pid, deadline) for pid in adopted]
                if not all(waited) and time.monotonic() >= deadline:
                    log.error("processes of the run did not end within %.0fs of SIGKILL", timeout)
                    break
        finally:
            _set_subreaper(False)
            self.enabled = False
        if killed:
            log.warning("killed %d process(es) that the run's workers left behind", killed)
        return killed


def stop_resource_tracker() -> None:
    """Stop multiprocess's resource tracker and wait for it, once the pool's queues (whose semaphores it
    tracks) are gone: it would otherwise end only after this process, unwaited for."""
    gc.collect()  # the pool's queues, and with them their semaphores' registrations
    try:
        from multiprocess import resource_tracker
    except ImportError:
        return
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    stop = getattr(tracker, "_stop", None)
    if callable(stop):
        with contextlib.suppress(OSError):
            stop()
