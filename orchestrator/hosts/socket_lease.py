"""The socket target: hosts the user started, each serving one attempt at a time. The orchestrator never
launches or closes them; it leases their sockets, one to each running job."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import HostError, HostPlace
from orchestrator.suite.targets import SocketTarget


class SocketLeases:
    """The run's sockets, each leased to one job at a time (the scheduler's side); a socket given back
    goes to the end of the line, so the hosts take turns."""

    def __init__(self, sockets: Iterable[str]) -> None:
        self._free = list(sockets)
        self._leased: dict[str, str] = {}

    @property
    def free(self) -> bool:
        """Whether a socket is free for the next job."""
        return bool(self._free)

    def take(self, job_id: str) -> str:
        """Lease the next free socket to ``job_id`` (only when :attr:`free`)."""
        if not self._free:
            raise LookupError("every socket is leased")
        socket = self._leased[job_id] = self._free.pop(0)
        return socket

    def give_back(self, job_id: str) -> None:
        """``job_id`` is over: its socket, if it leased one, is free again (idempotent)."""
        socket = self._leased.pop(job_id, None)
        if socket is not None:
            self._free.append(socket)


@dataclass(frozen=True)
class SocketLeaseProvider:
    target: SocketTarget

    @property
    def launch_timeout(self) -> float:
        """How long attaching to a leased host's socket may take."""
        return float(self.target.connect_timeout)

    @property
    def close_grace(self) -> float:
        return 0.0  # a leased host is left running: there is nothing to wait for

    @property
    def executor(self) -> Literal["local", "ray"]:
        return "local"

    @property
    def not_on_ray(self) -> str | None:
        return (
            "a socket target attaches to hosts already running on this machine; use a simulator, "
            "vscode or command target, whose hosts each node launches itself"
        )

    def prelaunch(self, *, budget: bool) -> int:
        return 0  # a leased host serves one attempt at a time: none can be readied on it ahead

    def leases(self) -> SocketLeases:
        return SocketLeases(str(p) for p in self.target.sockets)

    def farm(self, runtime_dir: Path, work_dir: Path, wid: int) -> SimulatorFarm | None:
        return None

    async def open(self, place: HostPlace, farm: SimulatorFarm | None) -> tuple[None, str]:
        """No host of ours: the socket the job leased."""
        if place.leased is None:
            raise HostError("socket target without a leased socket")
        return None, place.leased
