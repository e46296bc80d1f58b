"""The executor protocol: what the scheduler asks of whatever runs its jobs, and the messages that carry
jobs and their results between processes.

Two executors implement :class:`Executor`: the local one (:class:`orchestrator.run.local.LocalExecutor`:
the run's bridge and a pool of worker processes) and the Ray one (``orchestrator.ray.pool.RayPool``: one
actor per node). The command line picks one and hands the scheduler a way to start it (an
:data:`ExecutorFactory`); the scheduler never imports either.

Every message is a frozen dataclass, dispatched with ``match``. What an attempt produced
(:class:`~orchestrator.run.jobs.JobResult`: its record and transcript) travels inside :class:`Done`
and :class:`Finished` as it is: this module does not look into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from orchestrator.run.jobs import Job, JobResult, WorkerConfig

# ------------------------------------------------------------------------- executor -> scheduler


@dataclass(frozen=True)
class Crashed:
    """A job that ended without a result: a bug in the runner, an error the executor caught around it.
    The scheduler records it as a ``harness`` infrastructure error (and retries it)."""

    detail: str


@dataclass(frozen=True)
class Finished:
    """A job that came back: with its result, or :class:`Crashed`."""

    job_id: str
    job: Job
    result: JobResult | Crashed


@dataclass(frozen=True)
class Lost:
    """Jobs that were in flight on a worker (or Ray node) that died."""

    wid: int
    exitcode: int | None
    jobs: dict[str, Job]


class ExecutorStartError(RuntimeError):
    """The executor could not start (Ray not installed, the cluster unreachable, no node offering
    slots): the user's set-up, reported as one message before any attempt runs."""


class Executor(Protocol):
    """What the scheduler needs of whatever runs its jobs."""

    @property
    def capacity(self) -> int:
        """Jobs it takes at once: its slots, plus those it readies ahead (``prelaunch``)."""
        ...

    @property
    def in_flight(self) -> int:
        """Jobs submitted and not yet returned by :meth:`poll`."""
        ...

    def submit(self, job_id: str, job: Job) -> None: ...

    def poll(self, timeout: float) -> list[Finished | Lost]:
        """What came back within ``timeout`` (waiting at most that long for the first)."""
        ...

    def hold_all(self) -> None:
        """Start no more tasks: jobs readied ahead come back unstarted (``JobResult.unstarted``)."""
        ...

    def cancel_all(self) -> None:
        """Cancel every job; each still comes back (with a ``cancelled`` record, or unstarted)."""
        ...

    def close(self, *, kill: bool = False) -> None:
        """Stop everything it started; ``kill``: at once (a second Ctrl-C), else gracefully."""
        ...


@dataclass(frozen=True)
class Launch:
    """What the scheduler hands an :data:`ExecutorFactory`."""

    config: WorkerConfig
    """The workers' configuration; the executor fills in where the bridge and the runtime dir are."""
    slots: int
    """Tasks at once (``target.slots``)."""
    spare: int
    """Jobs readied ahead of a free slot, on top of ``slots`` (an executor may ready fewer)."""


ExecutorFactory = Callable[[Launch], Executor]
"""Starts an executor: may raise :class:`ExecutorStartError`."""

# ------------------------------------------------------------------------- main process -> worker


@dataclass(frozen=True)
class Connect:
    """Where the bridge is: sent to every worker before any job (the pool starts while the bridge does)."""

    connection_file: str


@dataclass(frozen=True)
class Assign:
    """Run this job."""

    job_id: str
    job: Job


@dataclass(frozen=True)
class Go:
    """A readied job may start its task: it has one of the run's slots."""

    job_id: str


@dataclass(frozen=True)
class Hold:
    """Start no more tasks: readied jobs end unstarted."""


@dataclass(frozen=True)
class Cancel:
    """Cancel every job (those whose task has not started end unstarted)."""


@dataclass(frozen=True)
class Stop:
    """Finish what runs, close, exit."""


ToWorker = Connect | Assign | Go | Hold | Cancel | Stop

# ------------------------------------------------------------------------- worker -> main process
# Ready, Released and Handoff exist only with spare capacity (``prelaunch``): a readied job asks for one
# of the run's slots, and gives it back as soon as its task is over (before its teardown and check), or
# hands it to a job readied on the same worker.


@dataclass(frozen=True)
class Done:
    """A job came back (its result, or :class:`Crashed`)."""

    wid: int
    job_id: str
    result: JobResult | Crashed


@dataclass(frozen=True)
class Ready:
    """A job is readied (workspace, host, attach) and waits for a slot (:class:`Go`)."""

    wid: int
    job_id: str


@dataclass(frozen=True)
class Released:
    """A job's task is over: its slot is free."""

    wid: int
    job_id: str


@dataclass(frozen=True)
class Handoff:
    """A job's task is over and its slot went to ``to_job_id``, readied on the same worker."""

    wid: int
    job_id: str
    to_job_id: str


FromWorker = Done | Ready | Released | Handoff
