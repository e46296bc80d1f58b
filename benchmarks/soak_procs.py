"""The soak's view of a run's processes, read from /proc: the process tree below the orchestrator, each
process's role (bridge, worker, simulator farm), its RSS and CPU time, and the sampler that records them
while the run goes (see benchmarks/soak.py)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from orchestrator.hosts.farm import FORKED_FARM_NAME

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    orchestrator: int
    bridge: int
    workers: int
    farms: int

    @property
    def total(self) -> int:
        return self.orchestrator + self.bridge + self.workers


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children[int(fields[1])].append(int(stat_file.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cmdline(pid: int) -> bytes:
    """The command line, and the name when it is not the command's (a farm forked by its worker)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        name = Path(f"/proc/{pid}/comm").read_bytes().strip()
    except OSError:
        return b""
    return cmd + (b" comm=" + name if name == FORKED_FARM_NAME.encode() else b"")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` (0 for a process that is gone or a zombie)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def role(cmd: bytes) -> str:
    if b"ipc_bridge.server.cli" in cmd:
        return "bridge"
    if b"--farm" in cmd or b"simulate" in cmd or FORKED_FARM_NAME.encode() in cmd:
        return "farm"
    if b"spawn_main" in cmd or b"multiprocess" in cmd:
        return "worker"
    return "other"


def bridges(root: int) -> list[int]:
    return [p for p in descendants(root) if role(cmdline(p)) == "bridge" and alive(p)]


class Sampler(threading.Thread):
    """RSS of the run's processes by role, every ``interval`` seconds, and every pid it ever saw."""

    def __init__(self, root: int, interval: float, t0: float) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.root = root
        self.interval = interval
        self.t0 = t0
        self.samples: list[Sample] = []
        self.seen: dict[int, bytes] = {}
        self.bridge_rss: dict[int, list[tuple[float, int, float]]] = defaultdict(list)
        """(t, RSS, CPU seconds) of each bridge process over time (a killed bridge's successor starts
        afresh)."""
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def sample(self) -> None:
        by_role: Counter[str] = Counter()
        now = time.monotonic() - self.t0
        orchestrator = rss_bytes(self.root)
        for pid in descendants(self.root):
            cmd = self.seen.setdefault(pid, cmdline(pid))
            rss = rss_bytes(pid)
            by_role[role(cmd)] += rss
            if role(cmd) == "bridge" and rss:
                self.bridge_rss[pid].append((now, rss, cpu_seconds(pid)))
        if orchestrator:
            self.samples.append(
                Sample(
                    now,
                    orchestrator,
                    by_role["bridge"],
                    by_role["worker"],
                    by_role["farm"],
                )
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
