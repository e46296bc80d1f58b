"""Tie a child process's life to its parent's (Linux ``PR_SET_PDEATHSIG``).

When the orchestrator is killed outright (SIGKILL, OOM), nothing of it may linger: its workers, its
bridge and their extension hosts must go too, or they hold sockets, CPU and workspaces forever. The
kernel delivers the signal when the parent *thread* that forked the child exits, so children are
always started from their parent's main thread. Elsewhere than Linux this is a no-op.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


@functools.cache
def _prctl() -> Any:
    # Resolved in the parent: a preexec_fn must not dlopen in a forked child (loader lock).
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(sig: int = signal.SIGKILL, *, expected_parent: int | None = None) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies. Returns whether it could.

    ``expected_parent``: if the parent already died before this call (we were re-parented), exit now."""
    prctl = _prctl()
    if prctl is None:
        return False
    ok = bool(prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # the parent died before the lifeline was set: the signal would never come
    return ok


def preexec_die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` for subprocesses (runs in the child between fork and exec), or None if
    unsupported here."""
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def _set() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return _set


def set_process_name(name: str) -> bool:
    """Name this process as ``ps`` and ``top`` show it (``/proc/PID/comm``, at most 15 bytes): for a child
    forked without exec, whose command line is still its parent's."""
    prctl = _prctl()
    if prctl is None:
        return False
    return bool(prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0) == 0)
