"""The simulator target with ``process_per_host``: each host a simulator process of its own, launched like
any other host (docs/simulator.md)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from orchestrator.hosts.host import HostPlace
from orchestrator.hosts.launched import ProcessProvider
from orchestrator.hosts.process import LaunchCommand
from orchestrator.hosts.simulated import host_params
from orchestrator.suite.targets import SimulatorTarget


def simulator_argv(
    *,
    engine: str | None = None,
    time_scale: float | None = None,
    status_delay: float | None = None,
    engine_lags: bool | None = None,
    seed: int | None = None,
) -> list[str]:
    """The command line of a simulated host (the socket comes from the environment)."""
    argv = [sys.executable, "-m", "orchestrator", "simulate"]
    if engine:
        argv += ["--engine", engine]
    if time_scale is not None:
        argv += ["--time-scale", repr(time_scale)]
    if status_delay is not None:
        argv += ["--status-delay", repr(status_delay)]
    if engine_lags is not None:
        argv.append("--engine-lags" if engine_lags else "--no-engine-lags")
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv


@dataclass(frozen=True)
class SimulatorProcessProvider(ProcessProvider[SimulatorTarget]):
    def default_prelaunch(self) -> int:
        return self.target.slots  # a simulator process is small and starts in well under a second

    def command(self, place: HostPlace) -> LaunchCommand:
        argv = simulator_argv(**host_params(self.target, place))
        return LaunchCommand([*argv, "--workspace", str(place.workspace)])
