"""What a target kind decides, and the one place that picks the provider of a target's kind.

A provider is made from the suite's target wherever it is needed (the scheduler, each worker, each Ray
node): it holds nothing but the target, so what crosses to a worker stays plain data (the target in the
worker's configuration, the leased socket in the job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from orchestrator.hosts.command import CommandProvider
from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import Host, HostPlace
from orchestrator.hosts.simulator_farm import SimulatorFarmProvider
from orchestrator.hosts.simulator_process import SimulatorProcessProvider
from orchestrator.hosts.socket_lease import SocketLeaseProvider
from orchestrator.hosts.vscode import VscodeProvider
from orchestrator.suite.targets import CommandTarget, SimulatorTarget, SocketTarget, Target, VscodeTarget


class Leases(Protocol):
    """The scheduler's side of a target's sockets: which job holds which."""

    @property
    def free(self) -> bool:
        """Whether another job may start now."""

    def take(self, job_id: str) -> str | None:
        """The socket ``job_id`` leases (only when :attr:`free`); None: its host gets its own."""

    def give_back(self, job_id: str) -> None:
        """``job_id`` is over: what it leased is free again."""


class HostProvider(Protocol):
    """Where a target's hosts come from: how they start, how long that may take, how they end."""

    @property
    def launch_timeout(self) -> float:
        """How long a host may take until its socket answers."""

    @property
    def close_grace(self) -> float:
        """After CloseTask, how long a host may take to exit before it is terminated."""

    @property
    def executor(self) -> Literal["local", "ray"]:
        """Where the attempts run: worker processes here, or Ray nodes."""

    @property
    def not_on_ray(self) -> str | None:
        """Why this target's hosts cannot run on Ray nodes (None: they can)."""

    def prelaunch(self, *, budget: bool) -> int:
        """Attempts readied ahead while every slot is busy; ``budget``: the suite sets one."""

    def leases(self) -> Leases:
        """A run's leases of the target's sockets (one per run, in the scheduler)."""

    def farm(self, runtime_dir: Path, work_dir: Path, wid: int) -> SimulatorFarm | None:
        """Worker ``wid``'s simulator farm, not started yet; None unless the hosts live in one."""

    async def open(self, place: HostPlace, farm: SimulatorFarm | None) -> tuple[Host | None, str]:
        """One attempt's host at ``place`` (``farm``: the worker's, for a farmed host), and the socket
        the attempt attaches to; None for a host the orchestrator does not own. Raises
        :class:`~orchestrator.hosts.host.HostError` when it cannot start."""


def host_provider(target: Target) -> HostProvider:
    """The provider of ``target``'s kind: the one place where a target's kind is told apart."""
    match target:
        case SocketTarget():
            return SocketLeaseProvider(target)
        case VscodeTarget():
            return VscodeProvider(target)
        case CommandTarget():
            return CommandProvider(target)
        case SimulatorTarget() if target.options.get("process_per_host"):
            return SimulatorProcessProvider(target)
        case SimulatorTarget():
            return SimulatorFarmProvider(target)
