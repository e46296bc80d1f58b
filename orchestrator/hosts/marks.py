"""Every process a host start creates, wherever it re-parents: found by a mark in its environment.

A launcher such as VS Code's ``code`` starts the real host (Electron, its extension host, where Roo Code
and its socket live) detached: in a session and process group of its own, which neither the launcher's
group signal nor its ``PR_SET_PDEATHSIG`` reaches. Whatever a host starts inherits its environment, so
each launched host gets :data:`MARK_ENV` set to its socket path (``<runtime dir>/<slot>.sock``). That one
value names the host (its slot) and its run (the runtime directory, whose ``owner`` file names the run's
process): a host's teardown ends every live process carrying its mark, the main process ends the marks
of a worker that died, and the next run ends those of runs that were killed outright (their owner gone),
never those of a live run.

Signals go through a pidfd opened on a process whose mark was read after opening it, so a pid reused
meanwhile is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

from orchestrator.processes import runtime_dir

log = logging.getLogger(__name__)

MARK_ENV = "ORCHESTRATE_HOST"
"""The variable that marks a host's processes; its value is the host's socket path."""
_PREFIX = f"{MARK_ENV}=".encode()
_POLL = 0.05


def _mark(pid: int) -> str | None:
    """The mark in ``pid``'s environment, if it is a live process of ours that has one (a zombie's
    environment reads empty; another user's cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_PREFIX):
            return entry[len(_PREFIX) :].decode(errors="surrogateescape")
    return None


def marked(match: Callable[[str], bool]) -> dict[int, str]:
    """Live processes whose mark ``match`` accepts: pid -> mark. Not this process."""
    me = os.getpid()
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            mark = _mark(int(entry.name))
            if mark is not None and match(mark):
                found[int(entry.name)] = mark
    return found


def of_host(socket_path: str) -> Callable[[str], bool]:
    """The mark of one host."""
    return lambda mark: mark == socket_path


def of_worker(runtime: str | Path, wid: int) -> Callable[[str], bool]:
    """The marks of worker ``wid``'s hosts (slots ``w<wid>-<n>``) of the run whose runtime dir it is."""
    prefix = os.path.join(str(runtime), f"w{wid}-")
    return lambda mark: mark.startswith(prefix)


def of_run(runtime: str | Path) -> Callable[[str], bool]:
    """The marks of every host of the run whose runtime dir it is."""
    return lambda mark: os.path.dirname(mark) == str(runtime)


def of_dead_runs(parent: str | Path) -> Callable[[str], bool]:
    """The marks of hosts of runs under ``parent`` whose owner is gone (killed outright): their runtime
    directory is gone, or names an owner no longer alive. A live run's directory lives as long as it."""

    def match(mark: str) -> bool:
        directory = Path(os.path.dirname(mark))
        if directory.parent != Path(parent) or not directory.name.startswith(runtime_dir.PREFIX):
            return False
        return not directory.is_dir() or not runtime_dir.owner_alive(directory)

    return match


def describe(pid: int) -> str:
    """``code (pid 123)``: what a record says of a process it had to end."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        name = "?"
    return f"{name} (pid {pid})"


def _open(pid: int, match: Callable[[str], bool]) -> int | None:
    """A pidfd of ``pid`` if it still carries a mark ``match`` accepts (read after opening: not a
    reused pid)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    mark = _mark(pid)
    if mark is None or not match(mark):
        os.close(fd)
        return None
    return fd


def _signal(fd: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        signal.pidfd_send_signal(fd, sig)


def _wait(fds: dict[int, int], deadline: float) -> None:
    """Wait until every process of ``fds`` (pid -> pidfd) has exited or ``deadline``; zombies that are
    our children are reaped (a subreaper's adoptees)."""
    pending = dict(fds)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select(list(pending.values()), [], [], remaining)
        for pid, fd in list(pending.items()):
            if fd in ready:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                del pending[pid]


def end_marked(
    match: Callable[[str], bool], *, grace: float = 0.0, exclude: int | None = None, timeout: float = 10.0
) -> list[str]:
    """End every live process whose mark ``match`` accepts: SIGTERM, ``grace`` seconds to exit, then
    SIGKILL, until none is left (a process may fork meanwhile) or ``timeout`` after the SIGKILL.
    Returns what it found alive (:func:`describe`), ``exclude`` (the host's own process, whose end its
    owner reports) left out of the list though not spared."""
    found: list[str] = []
    seen: set[int] = set()
    fds: dict[int, int] = {}

    def collect() -> None:
        for pid in marked(match):
            if pid in seen:
                continue
            fd = _open(pid, match)
            if fd is None:
                continue
            seen.add(pid)
            fds[pid] = fd
            if pid != exclude:
                found.append(describe(pid))

    try:
        collect()
        if not fds:
            return []
        if grace > 0:
            for fd in fds.values():
                _signal(fd, signal.SIGTERM)
            _wait(fds, time.monotonic() + grace)
        deadline = time.monotonic() + timeout
        while True:
            collect()
            for fd in fds.values():
                _signal(fd, signal.SIGKILL)
            _wait(fds, deadline)
            if not marked(match) or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)  # not yet visible as gone: /proc lags the pidfd by a moment
        if left := marked(match):
            log.error("processes %s of a host survived SIGKILL for %.0fs", sorted(left), timeout)
    finally:
        for fd in fds.values():
            os.close(fd)
    if found:
        log.warning("ended %d process(es) a host left: %s", len(found), ", ".join(found))
    return found


def wait_unmarked(match: Callable[[str], bool], timeout: float | None) -> bool:
    """Wait until no live process carries a mark ``match`` accepts; whether none does by ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while marked(match):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(_POLL * 4)
    return True
