"""The executor of a local run: a private runtime directory, the run's bridge (kept alive by
:class:`~orchestrator.run.supervisor.BridgeSupervisor`) and a :class:`~orchestrator.run.pool.Pool` of
worker processes, all on this machine and none outliving the run.

Everything here is about processes and files; what to run, when, and what a result means is the
scheduler's (:mod:`orchestrator.run.scheduler`), which sees only the :class:`Executor` protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from orchestrator.hosts import marks as host_marks
from orchestrator.hosts.logs import keep_log
from orchestrator.processes import children, runtime_dir
from orchestrator.run.executor import Connect, Finished, Launch, Lost
from orchestrator.run.jobs import HOST_LOGS, Job, WorkerConfig
from orchestrator.run.pool import Pool
from orchestrator.run.supervisor import BridgeSupervisor

log = logging.getLogger(__name__)

WORKER_MAIN = "orchestrator.run.worker:worker_main"  # by name: the main process never imports the worker
REAP_INTERVAL = 10.0
"""How often orphans of the run's processes, adopted by this one, are reaped while it runs."""


class Supervisor(Protocol):
    """What the executor needs of :class:`BridgeSupervisor` (a fake in unit tests)."""

    def check(self) -> bool: ...

    def bridge_pid(self) -> int | None: ...

    def stop(self, *, kill: bool = False) -> None: ...


class Workers(Protocol):
    """What the executor needs of :class:`Pool` (a fake in unit tests)."""

    @property
    def capacity(self) -> int: ...

    @property
    def in_flight(self) -> int: ...

    def submit(self, job_id: str, job: Job) -> None: ...

    def poll(self, timeout: float) -> list[Finished | Lost]: ...

    def hold_all(self) -> None: ...

    def cancel_all(self) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


class LocalExecutor:
    """Implements :class:`orchestrator.run.executor.Executor` with local processes. Build it with
    :meth:`start`; the constructor takes its parts as they are (unit tests give fakes)."""

    def __init__(
        self,
        pool: Workers,
        supervisor: Supervisor,
        *,
        runtime: Path,
        config: WorkerConfig,
        adoptions: children.Adoptions | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._supervisor = supervisor
        self._runtime = runtime
        self._config = config
        self._adoptions = adoptions
        self._clock = clock
        self._next_reap = 0.0

    @classmethod
    def start(cls, launch: Launch, *, workers: int | None, bridge_restarts: int) -> LocalExecutor:
        """Sweep what runs killed outright left, make the run's runtime dir, start the workers and the
        bridge (their start-ups overlap), and tell the workers where the bridge is."""
        runtime = new_runtime_dir()
        work = runtime / "work"
        work.mkdir()
        config = dataclasses.replace(launch.config, runtime_dir=str(runtime), work_dir=str(work))
        adoptions: children.Adoptions | None = None
        pool: Pool | None = None
        supervisor: BridgeSupervisor | None = None
        try:
            # Before the first child: what the run starts never outlives it (orchestrator.processes.children).
            adoptions = children.Adoptions()
            supervisor = BridgeSupervisor(
                runtime / "bridge",
                Path(config.results_dir) / runtime_dir.BRIDGE_LOG,
                max_restarts=bridge_restarts,
                secrets=config.redactor.values,
            )
            # A worker with no slot of its own would hold readied jobs it can never start.
            count = min(workers or 2, launch.slots)
            # The workers spawn and import while the bridge starts; then they are told where it is.
            pool = Pool(WORKER_MAIN, config, workers=count, slots=launch.slots, spare=launch.spare)
            pool.announce(Connect(str(supervisor.start().connection_file)))
        except BaseException:
            cls._end(pool, supervisor, adoptions, runtime, config, kill=False)
            raise
        return cls(pool, supervisor, runtime=runtime, config=config, adoptions=adoptions)

    @property
    def capacity(self) -> int:
        return self._pool.capacity

    @property
    def in_flight(self) -> int:
        return self._pool.in_flight

    def submit(self, job_id: str, job: Job) -> None:
        self._pool.submit(job_id, job)

    def poll(self, timeout: float) -> list[Finished | Lost]:
        """The pool's results; then the bridge is restarted if it died (raises
        :class:`~orchestrator.run.supervisor.BridgeFailed` when it dies too often), and exited orphans
        reaped."""
        items = self._pool.poll(timeout)
        for item in items:
            if isinstance(item, Lost):
                # Its hosts died with it (PR_SET_PDEATHSIG); what they started detached did not.
                host_marks.end_marked(host_marks.of_worker(self._runtime, item.wid))
        self._supervisor.check()
        self._reap()
        return items

    def hold_all(self) -> None:
        self._pool.hold_all()

    def cancel_all(self) -> None:
        self._pool.cancel_all()

    def close(self, *, kill: bool = False) -> None:
        self._end(self._pool, self._supervisor, self._adoptions, self._runtime, self._config, kill=kill)
        self._adoptions = None

    def _reap(self) -> None:
        now = self._clock()
        if self._adoptions is None or now < self._next_reap:
            return
        self._next_reap = now + REAP_INTERVAL
        bridge = self._supervisor.bridge_pid()
        self._adoptions.reap(keep=() if bridge is None else (bridge,))

    @staticmethod
    def _end(
        pool: Workers | None,
        supervisor: Supervisor | None,
        adoptions: children.Adoptions | None,
        runtime: Path,
        config: WorkerConfig,
        *,
        kill: bool,
    ) -> None:
        """Workers, then the bridge, then whatever they left; the host logs are kept, the dir goes."""
        if pool is not None:
            pool.close(timeout=2.0 if kill else 10.0)
        if supervisor is not None:
            supervisor.stop(kill=kill)
        if adoptions is not None:
            adoptions.close()
            # Whatever carries the mark of one of this run's hosts and escaped adoption.
            host_marks.end_marked(host_marks.of_run(runtime))
            children.stop_resource_tracker()
        # Kept workspaces and host logs are in the results directory, not here.
        _keep_host_logs(runtime / "work", config)
        shutil.rmtree(runtime, ignore_errors=True)


def new_runtime_dir(*, owned: bool = True) -> Path:
    """This process's runtime directory (see :mod:`orchestrator.processes.runtime_dir`), made after
    removing what runs killed outright left in the same place: their hosts' processes (found by their
    mark), then their directories. A local run's, and a Ray node actor's."""
    parent = runtime_dir.parent()
    host_marks.end_marked(host_marks.of_dead_runs(parent))
    runtime_dir.sweep(parent)
    return runtime_dir.create(parent, owned=owned)


def _keep_host_logs(work: Path, config: WorkerConfig) -> None:
    """Keep the logs that workers could not (a worker that died with hosts running, or was terminated
    at a stop): ``hosts/w<worker>-<n>.host.log``, ``hosts/farm-w<worker>.log``."""
    redact = config.redactor.text
    for raw in work.glob("*.log"):
        try:
            keep_log(raw, Path(config.results_dir) / HOST_LOGS / raw.name, redact)
        except OSError as exc:  # the records matter more: a run never fails over a log
            log.warning("cannot keep %s: %s", raw.name, exc)
