"""A host's processes beyond its mark: those found by parentage and session, and their record on disk.

The mark (:mod:`orchestrator.hosts.marks`) is inherited through the environment, so a process that
clears its environment (``env -i``, ``execve`` with an empty one) sheds it. Such a process is still
found while the run lives:

- the process that launches hosts (a worker, a Ray node actor) is a child subreaper (Linux
  ``PR_SET_CHILD_SUBREAPER``): whatever a host starts stays below it, re-parented to it if its own parent
  dies, instead of going to init;
- a process belongs to a host if its parent does, or if it is in a session one of the host's processes
  made and one of them is in (a session's id, its leader's pid, is never reused while the session has a
  process), starting from the launched process and the processes that carried the host's mark when
  they were first seen.

A watch of each launched host (:class:`Watch`) looks twice a second and appends every process it finds,
by pid and start time, to the host's record (``<runtime dir>/<slot>.pids``), and everything below the
process that launches hosts to that process's record (``w<worker>.below.pids``). After a SIGKILL of the
run, when nothing of ours is left to be a parent, the next run reads the records of the dead run's
runtime directory and ends what is still alive under a pid with the recorded start time: a reused pid
never has it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
import threading
import time
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


def _children(pid: int) -> list[int] | None:
    """``pid``'s children from /proc/<pid>/task/<tid>/children (None where the kernel has no such file)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(child) for child in fh.read().split())
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task"):
                return []  # gone meanwhile
            return None
        except OSError:
            continue
    return found


def snapshot_below(root: int) -> dict[int, Stat]:
    """The descendants of ``root``: pid -> :class:`Stat`, read for them only where the kernel lists
    children (a whole :func:`snapshot` otherwise)."""
    table: dict[int, Stat] = {}
    todo = [root]
    while todo:
        children = _children(todo.pop())
        if children is None:
            whole = snapshot()
            return {pid: whole[pid] for pid in subtree(whole, root)}
        for child in children:
            if child not in table and (stat := _stat(child)) is not None:
                table[child] = stat
                todo.append(child)
    return table


class _Below:
    """What is below this process, shared by the watches of all its hosts: one pass over /proc serves
    every watch that asks within :data:`SCAN_INTERVAL` / 2, marks are read once per process, and
    everything is recorded once per record file."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.taken = -1.0
        self.table: dict[int, Stat] = {}
        self.marks: dict[tuple[int, str], str | None] = {}
        self.recorded: dict[Path, dict[int, str]] = {}

    def now(self, after: float) -> dict[int, Stat]:
        """A pass made since ``after`` (a monotonic time), and not older than half the interval."""
        with self.lock:
            now = time.monotonic()
            if self.taken <= after or now - self.taken >= SCAN_INTERVAL / 2:
                # Below this process when it is a subreaper (where a host's processes stay), else all.
                self.table = snapshot_below(os.getpid()) if adopt_orphans() else snapshot()
                self.taken = now  # when it began: it shows nothing older than that
                live = {(pid, stat.start) for pid, stat in self.table.items()}
                self.marks = {key: mark for key, mark in self.marks.items() if key in live}
            return self.table

    def mark(self, pid: int, stat: Stat, read: Callable[[int], str | None]) -> str | None:
        """``pid``'s mark, read once: what a process was started with (a process that clears its
        environment later is still the host's)."""
        key = (pid, stat.start)
        with self.lock:
            if key in self.marks:
                return self.marks[key]
        mark = read(pid)
        with self.lock:
            return self.marks.setdefault(key, mark)

    def record(self, path: Path, table: Mapping[int, Stat]) -> None:
        with self.lock:
            seen = self.recorded.setdefault(path, {})
            new = {
                pid: stat.start
                for pid, stat in table.items()
                if not stat.zombie and seen.get(pid) != stat.start
            }
            seen.update(new)
        try:
            append_record(path, new)
        except OSError as exc:
            log.warning("cannot record the processes of %s: %s", path.name, exc)


_BELOW = _Below()


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
) -> dict[int, str]:
    """The live processes of a host (or of several): pid -> start time. Those of ``known`` (pid -> start
    time) still alive with that start time, those of ``table`` that ``marked`` accepts, and then, until nothing is added, every process whose parent is one of them or
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
    rest = set(table) - set(found) - spared
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
    """One launched host's processes as they appear: each scan finds them (:func:`members` over what is
    below this process, where a subreaper keeps them), appends the new ones to its record, and reaps
    those of them that ended as our adoptees. Each scan also records every process below this one
    (:func:`record_below`): one that shed the mark, left its session and lost its parent between two
    scans is no longer known as the host's, but it is still the run's, and ended with it. Scans run in
    a thread; the watches of one process share their passes over /proc (:class:`_Below`)."""

    def __init__(self, socket_path: str, launcher: int, mark_of: Callable[[int], str | None]) -> None:
        self.socket_path = socket_path
        self.record = record_of(socket_path)
        self.below = record_below(socket_path)
        self.launcher = launcher
        self._mark_of = mark_of
        start = start_time(launcher)
        self.known: dict[int, str] = {} if start is None else {launcher: start}
        try:
            self.record.write_text("".join(f"{pid} {start}\n" for pid, start in self.known.items()))
        except OSError as exc:  # the record is a fallback: never fail a host over it
            log.warning("cannot record the processes of %s: %s", self.record.name, exc)

    def scan(self, *, after: float = 0.0) -> dict[int, str]:
        """The host's live processes now (the launcher included while it runs), from a pass over /proc
        made after ``after`` (a monotonic time: another watch's may serve)."""
        table = _BELOW.now(after)

        def marked(pid: int) -> bool:
            return _BELOW.mark(pid, table[pid], self._mark_of) == self.socket_path

        found = members(table, self.known, marked)
        new = {pid: start for pid, start in found.items() if self.known.get(pid) != start}
        self.known.update(new)
        try:
            append_record(self.record, new)
        except OSError as exc:
            log.warning("cannot record the processes of %s: %s", self.record.name, exc)
        _BELOW.record(self.below, table)
        me = os.getpid()
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
