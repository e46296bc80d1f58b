"""What the providers of launched hosts share (simulator farm, simulator process, vscode, command): the
target's own launch timeout, close grace and executor, the prelaunch rule, and no socket to lease."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import HostPlace
from orchestrator.hosts.process import LaunchCommand, ProcessHost, launch_at
from orchestrator.suite.targets import CommandTarget, SimulatorTarget, VscodeTarget

T = TypeVar("T", SimulatorTarget, VscodeTarget, CommandTarget)


class Unleased:
    """The leases of a target whose hosts are launched: there is always room, and no socket to hand out
    (each host gets a socket of its own when it is launched)."""

    @property
    def free(self) -> bool:
        return True

    def take(self, job_id: str) -> None:
        return None

    def give_back(self, job_id: str) -> None:
        return None


@dataclass(frozen=True)
class LaunchedProvider(Generic[T]):
    """The part of a launched target's provider that does not depend on how its hosts start."""

    target: T

    @property
    def launch_timeout(self) -> float:
        return float(self.target.launch_timeout)

    @property
    def close_grace(self) -> float:
        return float(self.target.close_grace)

    @property
    def executor(self) -> Literal["local", "ray"]:
        return self.target.executor

    @property
    def not_on_ray(self) -> str | None:
        return None  # each Ray node launches hosts of its own

    def default_prelaunch(self) -> int:
        """Attempts readied ahead when the suite does not say: none, since each readied host is a whole
        window (vscode) or whatever the command starts; the simulator's are cheap."""
        return 0

    def prelaunch(self, *, budget: bool) -> int:
        """Attempts readied ahead while every slot is busy (``prelaunch``). None on Ray nodes; by default
        none under a ``budget`` either: a readied attempt starts as soon as a slot frees, before the cost
        of the attempt that freed it is known."""
        if self.target.executor == "ray":
            return 0
        if self.target.prelaunch is not None:
            return self.target.prelaunch
        return 0 if budget else self.default_prelaunch()

    def leases(self) -> Unleased:
        return Unleased()

    def farm(self, runtime_dir: Path, work_dir: Path, wid: int) -> SimulatorFarm | None:
        return None


class ProcessProvider(LaunchedProvider[T], ABC):
    """A provider whose hosts are processes of their own, one per attempt: it says how to launch one."""

    @abstractmethod
    def command(self, place: HostPlace) -> LaunchCommand:
        """The host's command line and environment at ``place`` (what :meth:`open` launches)."""

    async def open(self, place: HostPlace, farm: SimulatorFarm | None) -> tuple[ProcessHost, str]:
        return await launch_at(place, self.command(place)), place.socket_path
