"""A host's processes beyond its mark: those found by parentage and session, and their record on disk.

The mark (:mod:`orchestrator.hosts.marks`) is inherited through the environment, so a process that
clears its environment (``env -i``, ``execve`` with an empty one) sheds it. Such a process is still
found while the run lives:

- the process that launches hosts (a worker, a Ray node actor) is a child subreaper (Linux
  ``PR_SET_CHILD_SUBREAPER``): whatever a host starts stays below it, re-parented to it if its own parent
  dies, instead of going to init;
- a process belongs to a host if its parent does, or if it is in a session one of the host's live
  processes is in (a session's id is never reused while any process is in it), starting from the
  launched process and the processes carrying the host's mark.

A watch of each launched host (:class:`Watch`) looks twice a second and appends every process it finds,
by pid and start time, to the host's record (``<runtime dir>/<slot>.pids``). After a SIGKILL of the run,
when nothing of ours is left to be a parent, the next run reads the records of the dead run's runtime
directory and ends what is still alive under a pid with the recorded start time: a reused pid never
has it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".pids"
SCAN_INTERVAL = 0.5
"""How often a launched host's processes are looked for (and a handed-off host's end noticed)."""
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Stat:
    """What /proc/<pid>/stat says of a process that matters here."""

    ppid: int
    session: int
    start: str
    """Start time in clock ticks since boot: with the pid, names one process for good."""
    zombie: bool


def _stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Counted after the comm: state is field 3 of proc(5), ppid 4, session 6, starttime 22.
    return Stat(int(fields[1]), int(fields[3]), fields[19].decode(), fields[0] == b"Z")


def start_time(pid: int) -> str | None:
    """``pid``'s start time, None if there is no such process."""
    stat = _stat(pid)
    return None if stat is None else stat.start


def snapshot() -> dict[int, Stat]:
    """Every process now: pid -> :class:`Stat`."""
    table: dict[int, Stat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def subtree(table: Mapping[int, Stat], root: int) -> set[int]:
    """The descendants of ``root`` in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _ancestry(table: Mapping[int, Stat], pid: int) -> set[int]:
    """``pid`` and its ancestors: never a host's, whatever a record or a mark says."""
    found: set[int] = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        stat = table.get(pid)
        pid = stat.ppid if stat is not None else 0
    return found


def members(
    table: Mapping[int, Stat],
    known: Mapping[int, str],
    marked: Callable[[int], bool],
    candidates: Iterable[int] | None = None,
) -> dict[int, str]:
    """The live processes of a host (or of several): pid -> start time. Those of ``known`` (pid -> start
    time) still alive with that start time, those of ``candidates`` (default: all of ``table``) that
    ``marked`` accepts, and then, until nothing is added, every process whose parent is one of them or
    that is in a session one of them made and one of them is in (a session's id, its leader's pid, is
    not reused while the session has a process). Never this process."""
    spared = _ancestry(table, os.getpid())
    found = {
        pid: start
        for pid, start in known.items()
        if (stat := table.get(pid)) is not None
        and stat.start == start
        and not stat.zombie
        and pid not in spared
    }
    rest = {pid for pid in (table if candidates is None else candidates) if pid in table}
    rest -= set(found) | spared
    for pid in list(rest):
        if not table[pid].zombie and marked(pid):
            found[pid] = table[pid].start
            rest.discard(pid)
    grown = True
    while grown:
        grown = False
        # Only sessions one of ours made: led by one of them, alive or recorded (a marked process may
        # be in a session it did not make, such as its starter's).
        sessions = {sid for pid in found if (sid := table[pid].session) in found or sid in known}
        for pid in list(rest):
            stat = table[pid]
            if not stat.zombie and (stat.ppid in found or stat.session in sessions):
                found[pid] = stat.start
                rest.discard(pid)
                grown = True
    return found


def record_of(socket_path: str) -> Path:
    """Where a launched host's processes are recorded: beside its socket, ``<slot>.pids``."""
    return Path(socket_path).with_suffix(RECORD_SUFFIX)


def read_records(paths: Iterable[Path]) -> dict[int, str]:
    """The processes ``paths`` record (``pid start`` lines; a torn last line is skipped)."""
    found: dict[int, str] = {}
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            pid, _, start = line.partition(" ")
            if pid.isdigit() and start.strip().isdigit():
                found[int(pid)] = start.strip()
    return found


def append_record(path: Path, found: Mapping[int, str]) -> None:
    """Add processes to a host's record as they are found (no fsync: a SIGKILL of the run keeps what
    was written; a crash of the machine takes the processes too)."""
    if found:
        with open(path, "a") as fh:
            fh.write("".join(f"{pid} {start}\n" for pid, start in found.items()))


@functools.cache
def adopt_orphans() -> bool:
    """Make this process (the one that launches hosts) a child subreaper, once: what its hosts start
    then stays below it whatever dies in between. Whether it could."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def record_below(socket_path: str) -> Path:
    """Where everything below the process that launches a host is recorded (its worker's, for slot
    ``w<worker>-<n>``: ``w<worker>.below.pids``)."""
    return Path(socket_path).with_name(f"{Path(socket_path).stem.rsplit('-', 1)[0]}.below{RECORD_SUFFIX}")


class Watch:
    """One launched host's processes as they appear: each scan finds them (:func:`members`, marks read
    only below this process, where a subreaper keeps them), appends the new ones to its record, and
    reaps those of them that ended as our adoptees. Each scan also records every process below this
    one (:func:`record_below`): one that shed the mark, left its session and lost its parent between
    two scans is no longer known as the host's, but it is still the run's, and ended with it. Scans
    run in a thread, one at a time."""

    def __init__(self, socket_path: str, launcher: int, marked: Callable[[int], bool]) -> None:
        self.record = record_of(socket_path)
        self.below = record_below(socket_path)
        self.launcher = launcher
        self._marked = marked
        self._below: dict[int, str] = {}
        start = start_time(launcher)
        self.known: dict[int, str] = {} if start is None else {launcher: start}
        try:
            self.record.write_text("".join(f"{pid} {start}\n" for pid, start in self.known.items()))
        except OSError as exc:  # the record is a fallback: never fail a host over it
            log.warning("cannot record the processes of %s: %s", self.record.name, exc)

    def _add(self, path: Path, seen: dict[int, str], found: Mapping[int, str]) -> None:
        new = {pid: start for pid, start in found.items() if seen.get(pid) != start}
        seen.update(new)
        try:
            append_record(path, new)
        except OSError as exc:
            log.warning("cannot record the processes of %s: %s", path.name, exc)

    def scan(self) -> dict[int, str]:
        """The host's live processes now (the launcher included while it runs)."""
        table = snapshot()
        me = os.getpid()
        below = subtree(table, me)
        found = members(table, self.known, self._marked, below)
        self._add(self.record, self.known, found)
        self._add(self.below, self._below, {pid: table[pid].start for pid in below if not table[pid].zombie})
        for pid in self.known:
            stat = table.get(pid)
            if pid != self.launcher and stat is not None and stat.zombie and stat.ppid == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # an adoptee of ours: nobody else waits for it
        return found

    def forget(self) -> None:
        """The host is gone and all it started ended: its record goes."""
        with contextlib.suppress(FileNotFoundError):
            self.record.unlink()
