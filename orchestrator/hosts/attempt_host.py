"""Where an attempt's extension host comes from, and where what it leaves is kept.

A launched host's output goes to the run's results directory (``hosts/``), as does a workspace that
``--keep-workspaces`` keeps (``workspaces/``): no sweep of runtime directories reaches them there, and a
record names them relative to the run directory. A Ray node, which may not see the driver's results
directory, keeps them in its own work directory.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from orchestrator.hosts.logs import keep_log, output_tail
from orchestrator.hosts.process import launch
from orchestrator.hosts.providers import (
    Host,
    HostError,
    SimulatorFarm,
    fill_placeholders,
    simulator_argv,
    socket_path_for,
    vscode_argv,
    xvfb_wrap,
)
from orchestrator.run.jobs import HOST_LOGS, KEPT_WORKSPACES, Job, WorkerConfig, host_seed
from orchestrator.suite.targets import CommandTarget, SimulatorTarget, SocketTarget, VscodeTarget


def simulator_farm(config: WorkerConfig, wid: int) -> SimulatorFarm | None:
    """The simulator farm of worker ``wid``, not started yet; None when its target has no farm."""
    target = config.target
    if not isinstance(target, SimulatorTarget) or target.options.get("process_per_host"):
        return None
    return SimulatorFarm(
        socket_path_for(config.runtime_dir, f"farm-w{wid}"),
        log_path=Path(config.work_dir) / f"farm-w{wid}.log",
        ready_timeout=float(target.launch_timeout),
    )


def kept(config: WorkerConfig, name: str) -> Path:
    """A directory for what outlives the run (host logs, kept workspaces): in the run's results
    directory, where no sweep of runtime directories reaches; on a Ray node, in its work directory."""
    path = Path(config.results_dir or config.work_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _attempt_name(job: Job) -> str:
    """``<case>__<model>__<repeat>__<attempt>``, as its transcript is named."""
    return f"{job.attempt.key.slug}__{job.number}"


def _host_seed(base: Any, job: Job) -> int:
    return host_seed(base, job.attempt.key, job.number)


class AttemptHosts:
    """One worker's hosts and workspaces (its simulator farm, started on first use, included)."""

    def __init__(self, config: WorkerConfig, wid: int, farm: SimulatorFarm | None = None) -> None:
        self.config = config
        self.wid = wid
        self._farm = farm

    async def close(self) -> None:
        """Stop the simulator farm, if one was started."""
        if self._farm is not None:
            await self._farm.close()
            if self._farm.log_path is not None:
                dest = kept(self.config, HOST_LOGS) / self._farm.log_path.name
                await asyncio.to_thread(keep_log, self._farm.log_path, dest, self.config.redactor.text)

    def workspace(self, job: Job) -> Path:
        """A fresh workspace: in the runtime directory, or with ``--keep-workspaces`` in the results'
        ``workspaces/<case>__<model>__<repeat>__<attempt>/``."""
        if not self.config.keep_workspaces:
            return Path(tempfile.mkdtemp(prefix=f"{job.attempt.key.slug[:40]}-", dir=self.config.work_dir))
        parent, name = kept(self.config, KEPT_WORKSPACES), _attempt_name(job)
        try:
            (parent / name).mkdir()
        except FileExistsError:  # an attempt of a run killed before its record was written
            return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        return parent / name

    def in_results(self, path: Path) -> str:
        """``path`` as a record names it: relative to the run's results directory when inside it."""
        if self.config.results_dir and path.is_relative_to(self.config.results_dir):
            return str(path.relative_to(self.config.results_dir))
        return str(path)

    async def output(self, job: Job, log_path: Path | None, *, tail: bool) -> tuple[str | None, str | None]:
        """Keep an ended host's log (``log_path``, in the runtime directory) in ``hosts/``, redacted.
        Returns its path as the record names it (None if the host wrote nothing), and with ``tail``
        its last ~2 KB."""
        if log_path is None:
            return None, None
        dest = kept(self.config, HOST_LOGS) / f"{_attempt_name(job)}.log"
        if not await asyncio.to_thread(keep_log, log_path, dest, self.config.redactor.text):
            return None, None
        return self.in_results(dest), (await asyncio.to_thread(output_tail, dest) if tail else None)

    def launch_timeout(self) -> float:
        target = self.config.target
        if isinstance(target, SocketTarget):
            return float(target.connect_timeout)
        return float(target.launch_timeout)

    async def host(self, job: Job, workspace: Path, slot: str) -> tuple[Host | None, str]:
        target = self.config.target
        if isinstance(target, SocketTarget):
            if job.socket is None:
                raise HostError("socket target without a leased socket")
            return None, job.socket
        socket_path = socket_path_for(self.config.runtime_dir, slot)
        if isinstance(target, SimulatorTarget) and not target.options.get("process_per_host"):
            return await self._farm_host(target, job, workspace, socket_path), socket_path
        log_path = Path(self.config.work_dir) / f"{slot}.host.log"
        if isinstance(target, SimulatorTarget):
            opts = target.options
            argv = [
                *simulator_argv(
                    engine=target.engine,
                    time_scale=opts.get("time_scale"),
                    status_delay=opts.get("status_delay"),
                    seed=_host_seed(opts.get("seed"), job),
                ),
                "--workspace",
                str(workspace),
            ]
            env: dict[str, str] = {}
        elif isinstance(target, VscodeTarget):
            user_data = target.user_data_dir or Path(self.config.work_dir) / f"{slot}.vscode"
            extra = list(target.args)
            if target.extensions_dir:
                extra.append(f"--extensions-dir={target.extensions_dir}")
            xvfb = "auto" if target.xvfb == "auto" else ("on" if target.xvfb else "off")
            argv = xvfb_wrap(vscode_argv(target.code, workspace, user_data, extra), xvfb)
            env = dict(target.env)
        elif isinstance(target, CommandTarget):
            values = {"socket": socket_path, "workspace": str(workspace), "slot": slot}
            argv = fill_placeholders(target.argv, values)
            env = {k: fill_placeholders([v], values)[0] for k, v in target.env.items()}
        else:  # pragma: no cover - the config union is exhaustive
            raise HostError(f"unknown target {target!r}")
        host = await launch(
            argv,
            socket_path=socket_path,
            workspace=workspace,
            env=env,
            log_path=log_path,
            tmpdir=Path(self.config.runtime_dir) / f"{slot}.tmp",
        )
        return host, socket_path

    async def _farm_host(self, target: SimulatorTarget, job: Job, workspace: Path, socket_path: str) -> Host:
        if self._farm is None:
            self._farm = simulator_farm(self.config, self.wid)
        assert self._farm is not None
        opts = target.options
        params = {k: opts[k] for k in ("time_scale", "status_delay") if opts.get(k) is not None}
        params["seed"] = _host_seed(opts.get("seed"), job)
        if target.engine:
            params["engine"] = target.engine
        return await self._farm.host(socket_path, workspace, timeout=float(target.launch_timeout), **params)
