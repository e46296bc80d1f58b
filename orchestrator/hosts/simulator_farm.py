"""The simulator target's hosts served by a simulator farm: one farm process per worker, started on first
use (or forked before the worker's loop starts), one simulated host in it per attempt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.hosts.farm import FarmHost, SimulatorFarm
from orchestrator.hosts.host import HostError, HostPlace, socket_path_for
from orchestrator.hosts.launched import LaunchedProvider
from orchestrator.hosts.simulated import host_params
from orchestrator.suite.targets import SimulatorTarget


@dataclass(frozen=True)
class SimulatorFarmProvider(LaunchedProvider[SimulatorTarget]):
    def default_prelaunch(self) -> int:
        return self.target.slots  # a farmed host costs a socket and a task in the farm's loop

    def farm(self, runtime_dir: Path, work_dir: Path, wid: int) -> SimulatorFarm:
        """Worker ``wid``'s farm, not started yet: it comes up within the target's ``launch_timeout``."""
        return SimulatorFarm(
            socket_path_for(runtime_dir, f"farm-w{wid}"),
            log_path=work_dir / f"farm-w{wid}.log",
            ready_timeout=self.launch_timeout,
        )

    async def open(self, place: HostPlace, farm: SimulatorFarm | None) -> tuple[FarmHost, str]:
        if farm is None:
            raise HostError("a simulated host needs its worker's simulator farm")
        socket_path = place.socket_path
        host = await farm.host(
            socket_path, place.workspace, timeout=self.launch_timeout, **host_params(self.target, place)
        )
        return host, socket_path
