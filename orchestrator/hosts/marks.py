"""Every process a host start creates, wherever it re-parents: found by a mark in its environment.

A launcher such as VS Code's ``code`` starts the real host (Electron, its extension host, where Roo Code
and its socket live) detached: in a session and process group of its own, which neither the launcher's
group signal nor its ``PR_SET_PDEATHSIG`` reaches. Whatever a host starts inherits its environment, so
each launched host gets :data:`MARK_ENV` set to its socket path (``<runtime dir>/<slot>.sock``). That one
value names the host (its slot) and its run (the runtime directory, whose ``owner`` file names the run's
process): a host's teardown ends every live process carrying its mark, the main process ends the marks
of a worker that died, and the next run ends those of runs that were killed outright (their owner gone),
never those of a live run. Each time, so are the processes the same hosts' records name and what those
marked or recorded processes started (:mod:`orchestrator.hosts.owned`): a process that clears its
environment sheds the mark.

Signals go through a pidfd opened on a process whose start time was read after opening it, so a pid
reused meanwhile is never signalled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.hosts import owned
from orchestrator.processes import runtime_dir

log = logging.getLogger(__name__)

MARK_ENV = "ORCHESTRATE_HOST"
"""The variable that marks a host's processes; its value is the host's socket path."""
_PREFIX = f"{MARK_ENV}=".encode()
_POLL = 0.05


def mark_of(pid: int) -> str | None:
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


@dataclass(frozen=True)
class Selection:
    """Which hosts' processes: a test of a mark, and where the same hosts' processes are recorded
    (:mod:`orchestrator.hosts.owned`: those found without the mark)."""

    match: Callable[[str], bool]
    records: Callable[[], list[Path]]

    def __call__(self, mark: str) -> bool:
        return self.match(mark)


def _glob(directory: Path, pattern: str) -> list[Path]:
    try:
        return list(directory.glob(pattern))
    except OSError:
        return []


def of_host(socket_path: str) -> Selection:
    """The mark of one host."""
    return Selection(lambda mark: mark == socket_path, lambda: [owned.record_of(socket_path)])


def of_worker(runtime: str | Path, wid: int) -> Selection:
    """The marks of worker ``wid``'s hosts (slots ``w<wid>-<n>``) of the run whose runtime dir it is."""
    prefix = os.path.join(str(runtime), f"w{wid}-")
    return Selection(
        lambda mark: mark.startswith(prefix),
        lambda: [
            *_glob(Path(runtime), f"w{wid}-*{owned.RECORD_SUFFIX}"),
            owned.record_below(os.path.join(str(runtime), f"w{wid}-0.sock")),
        ],
    )


def of_run(runtime: str | Path) -> Selection:
    """The marks of every host of the run whose runtime dir it is."""
    return Selection(
        lambda mark: os.path.dirname(mark) == str(runtime),
        lambda: _glob(Path(runtime), f"*{owned.RECORD_SUFFIX}"),
    )


def of_dead_runs(parent: str | Path) -> Selection:
    """The marks of hosts of runs under ``parent`` whose owner is gone (killed outright): their runtime
    directory is gone, or names an owner no longer alive. A live run's directory lives as long as it."""

    def dead(directory: Path) -> bool:
        if directory.parent != Path(parent) or not directory.name.startswith(runtime_dir.PREFIX):
            return False
        return not directory.is_dir() or not runtime_dir.owner_alive(directory)

    def records() -> list[Path]:
        dirs = _glob(Path(parent), f"{runtime_dir.PREFIX}*")
        return [path for d in dirs if dead(d) for path in _glob(d, f"*{owned.RECORD_SUFFIX}")]

    return Selection(lambda mark: dead(Path(os.path.dirname(mark))), records)


def describe(pid: int) -> str:
    """``code (pid 123)``: what a record says of a process it had to end."""
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        name = "?"
    return f"{name} (pid {pid})"


def _open(pid: int, start: str) -> int | None:
    """A pidfd of ``pid`` if it is still the process that started at ``start`` (read after opening:
    not a reused pid)."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if owned.start_time(pid) != start:
        os.close(fd)
        return None
    return fd


def members(selection: Selection, also: Mapping[int, str] | None = None) -> dict[int, str]:
    """The live processes of the hosts ``selection`` names: pid -> start time. Those carrying their
    mark, those their records name, ``also``, and what those started (:func:`owned.members`)."""
    known = {**owned.read_records(selection.records()), **(also or {})}
    return owned.members(owned.snapshot(), known, lambda pid: carries(pid, selection))


def carries(pid: int, match: Callable[[str], bool]) -> bool:
    """Whether ``pid`` carries a mark ``match`` accepts."""
    mark = mark_of(pid)
    return mark is not None and match(mark)


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
    selection: Selection, *, grace: float = 0.0, exclude: int | None = None, timeout: float = 10.0
) -> list[str]:
    """End every live process of the hosts ``selection`` names (:func:`members`): SIGTERM, ``grace``
    seconds to exit, then SIGKILL, until none is left (a process may fork meanwhile) or ``timeout``
    after the SIGKILL. Returns what it found alive (:func:`describe`), ``exclude`` (the host's own
    process, whose end its owner reports) left out of the list though not spared."""
    found: list[str] = []
    seen: dict[int, str] = {}
    fds: dict[int, int] = {}

    def collect() -> dict[int, str]:
        live = members(selection, seen)
        for pid, start in live.items():
            if seen.get(pid) == start:
                continue
            fd = _open(pid, start)
            if fd is None:
                continue
            seen[pid] = start
            fds[pid] = fd
            if pid != exclude:
                found.append(describe(pid))
        return live

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
            left = members(selection, seen)
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)  # not yet visible as gone: /proc lags the pidfd by a moment
        if left:
            log.error("processes %s of a host survived SIGKILL for %.0fs", sorted(left), timeout)
    finally:
        for fd in fds.values():
            os.close(fd)
    if found:
        log.warning("ended %d process(es) a host left: %s", len(found), ", ".join(found))
    return found
