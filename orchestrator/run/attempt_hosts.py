"""Where an attempt's extension host comes from, and where what it leaves is kept.

The host itself comes from the target's provider (:func:`orchestrator.hosts.provider.host_provider`).
A launched host's output goes to the run's results directory (``hosts/``), as does a workspace that
``--keep-workspaces`` keeps (``workspaces/``): no sweep of runtime directories reaches them there, and a
record names them relative to the run directory. A Ray node, which may not see the driver's results
directory, keeps them in its own work directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import stat
import tempfile
from pathlib import Path

from orchestrator.hosts.farm import SimulatorFarm
from orchestrator.hosts.host import Host, HostPlace
from orchestrator.hosts.logs import keep_log, output_tail
from orchestrator.hosts.provider import host_provider
from orchestrator.run.jobs import HOST_LOGS, KEPT_WORKSPACES, Job, WorkerConfig
from orchestrator.run.workspace_diff import workspace_diff


def simulator_farm(config: WorkerConfig, wid: int) -> SimulatorFarm | None:
    """The simulator farm of worker ``wid``, not started yet; None when its target has no farm."""
    return host_provider(config.target).farm(Path(config.runtime_dir), Path(config.work_dir), wid)


def kept(config: WorkerConfig, name: str) -> Path:
    """A directory for what outlives the run (host logs, kept workspaces): in the run's results
    directory, where no sweep of runtime directories reaches; on a Ray node, in its work directory."""
    path = Path(config.results_dir or config.work_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _attempt_name(job: Job) -> str:
    """``<case>__<model>__<repeat>__<attempt>``, as its transcript is named."""
    return f"{job.attempt.key.slug}__{job.number}"


def _empty(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is None


SPARE_WORKSPACES = 64
"""Empty workspaces a worker keeps for its next attempts (at most: one per attempt it runs at once)."""


class AttemptHosts:
    """One worker's hosts and workspaces (its simulator farm, started on first use, included)."""

    def __init__(self, config: WorkerConfig, wid: int, farm: SimulatorFarm | None = None) -> None:
        self.config = config
        self.wid = wid
        self.provider = host_provider(config.target)
        self._farm = farm
        self._numbers = itertools.count(1)
        self._spare: list[Path] = []
        """Workspaces of ended attempts, left empty: the next attempts take them, renamed. On ext4 a
        mkdir and an rmdir cost a worker ~0.3 ms of CPU per attempt (journalled), a rename a tenth."""

    async def close(self) -> None:
        """Stop the simulator farm, if one was started."""
        if self._farm is not None:
            await self._farm.close()
            if self._farm.log_path is not None:
                dest = kept(self.config, HOST_LOGS) / self._farm.log_path.name
                await asyncio.to_thread(keep_log, self._farm.log_path, dest, self.config.redactor.text)
        spare, self._spare = self._spare, []
        for path in spare:
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def workspace(self, job: Job) -> Path:
        """A fresh workspace (0700, empty, a name of its own): in the runtime directory, or with
        ``--keep-workspaces`` in the results' ``workspaces/<case>__<model>__<repeat>__<attempt>/``."""
        if not self.config.keep_workspaces:
            prefix = f"{job.attempt.key.slug[:40]}-"
            path = Path(self.config.work_dir) / f"{prefix}{os.getpid()}-{next(self._numbers)}"
            spare = self._spare.pop() if self._spare else None
            try:
                if spare is not None:
                    os.rename(spare, path)
                else:
                    os.mkdir(path, 0o700)
            except OSError:
                if spare is not None:
                    with contextlib.suppress(OSError):
                        os.rmdir(spare)
                return Path(tempfile.mkdtemp(prefix=prefix, dir=self.config.work_dir))
            return path
        parent, name = kept(self.config, KEPT_WORKSPACES), _attempt_name(job)
        try:
            (parent / name).mkdir()
        except FileExistsError:  # an attempt of a run killed before its record was written
            return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
        return parent / name

    async def release(self, workspace: Path) -> None:
        """An ended attempt's workspace (not one kept in the results): a spare for the next attempt when
        it is as :meth:`workspace` made it (empty, 0700), else removed."""
        try:
            fresh = stat.S_IMODE(os.stat(workspace).st_mode) == 0o700 and _empty(workspace)
        except OSError:
            return  # gone already
        if fresh and len(self._spare) < SPARE_WORKSPACES:
            self._spare.append(workspace)
            return
        try:
            os.rmdir(workspace)
        except OSError:
            # rmdir blocks for milliseconds per directory on some disks: not on the event loop
            await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)

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

    async def diff(self, job: Job, workspace: Path) -> str | None:
        """What the agent changed in ``workspace`` (against the case's template), redacted; None when
        nothing changed. The text travels with the attempt's result, as its transcript does, and the run's
        writer keeps it beside the transcript: a Ray node's worker cannot reach the run directory."""
        template = job.attempt.case.workspace
        if template is None and _empty(workspace):
            return None  # nothing was put in it (a leased host works elsewhere): one syscall, no thread
        text = await asyncio.to_thread(workspace_diff, template, workspace, self.config.redactor.text)
        return text or None

    def launch_timeout(self) -> float:
        return self.provider.launch_timeout

    @property
    def close_grace(self) -> float:
        return self.provider.close_grace

    async def host(self, job: Job, workspace: Path, slot: str) -> tuple[Host | None, str]:
        """``job``'s host in ``slot`` and the socket to attach to (None: a leased host, not ours)."""
        if self._farm is None:
            # a Ray node's farm, on its first attempt (a worker's was made when it started)
            self._farm = self.provider.farm(
                Path(self.config.runtime_dir), Path(self.config.work_dir), self.wid
            )
        place = HostPlace(
            slot=slot,
            workspace=workspace,
            runtime_dir=Path(self.config.runtime_dir),
            work_dir=Path(self.config.work_dir),
            key=job.attempt.key,
            number=job.number,
            leased=job.socket,
        )
        return await self.provider.open(place, self._farm)
