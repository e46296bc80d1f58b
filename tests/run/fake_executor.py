"""A fake :class:`~orchestrator.run.executor.Executor` for in-process scheduler tests: jobs "run" on a
fake clock, each as a :class:`Step` decides, and nothing sleeps.

It models what the scheduler may rely on of a real executor: up to ``slots`` tasks run at once; up to
``spare`` more jobs are readied ahead and take a slot the moment one frees (before the scheduler hears of
the job that freed it, as the local pool's hand-off does); :meth:`hold_all` sends readied jobs back
unstarted; :meth:`cancel_all` ends running tasks ``cancelled`` and readied jobs unstarted; :meth:`poll`
advances the clock to the next end (or by its timeout) instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from orchestrator.run.executor import Crashed, Finished, Launch, Lost
from orchestrator.run.jobs import Job, JobResult, new_record
from orchestrator.status import Metrics, Status
from orchestrator.verdict import Verdict

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Step:
    """How one try goes: ``seconds`` of task, then a record of ``status``; or ``crash``: no record but a
    :class:`Crashed`; or ``die``: its worker dies (every job on it is :class:`Lost`)."""

    seconds: float = 1.0
    status: Status = Status.COMPLETED
    cost: float = 0.0
    reason: str = ""
    crash: str | None = None
    die: bool = False


@dataclass
class _Job:
    job_id: str
    job: Job
    step: Step
    started: float | None = None
    """When its task started on the fake clock (None while readied)."""


@dataclass
class FakeExecutor:
    clock: FakeClock
    script: Callable[[Job], Step]
    slots: int
    spare: int
    run_id: str
    on_poll: Callable[[FakeExecutor], None] = lambda executor: None
    """Called at the start of every poll (a test's hook: raise a signal, a bridge failure...)."""
    answer_cancel: bool = True
    """False: a cancel is never answered (a worker that hangs)."""
    jobs: dict[str, _Job] = field(default_factory=dict)
    starts: list[tuple[float, str]] = field(default_factory=list)
    """(clock, job id) of every task start, in order."""
    submitted: list[tuple[float, str]] = field(default_factory=list)
    most_running: int = 0
    most_in_flight: int = 0
    held: bool = False
    cancelled: bool = False
    closed: bool | None = None
    """None while open; then whether it was closed with ``kill``."""
    _out: list[Finished | Lost] = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return self.slots + self.spare

    @property
    def in_flight(self) -> int:
        return len(self.jobs) + sum(len(i.jobs) if isinstance(i, Lost) else 1 for i in self._out)

    @property
    def running(self) -> list[_Job]:
        return [j for j in self.jobs.values() if j.started is not None]

    def submit(self, job_id: str, job: Job) -> None:
        assert self.closed is None and job_id not in self.jobs
        self.submitted.append((self.clock.now, job_id))
        self.jobs[job_id] = _Job(job_id, job, self.script(job))
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self._start_readied()

    def poll(self, timeout: float) -> list[Finished | Lost]:
        self.on_poll(self)
        if not self._out:
            ends = [j.started + j.step.seconds for j in self.running if j.started is not None]
            self.clock.now = min([self.clock.now + timeout, *ends])
            self._end_due()
        out, self._out = self._out, []
        return out

    def hold_all(self) -> None:
        self.held = True
        for j in [j for j in self.jobs.values() if j.started is None]:
            self._finish(j, JobResult({}, unstarted=True))

    def cancel_all(self) -> None:
        self.cancelled = True
        if not self.answer_cancel:
            return
        for j in list(self.jobs.values()):
            if j.started is None:
                self._finish(j, JobResult({}, unstarted=True))
            else:
                self._finish(j, self._result(j, Status.CANCELLED, "cancelled by the orchestrator"))

    def close(self, *, kill: bool = False) -> None:
        self.closed = kill

    # ---------------------------------------------------------------------------------- internals

    def _start_readied(self) -> None:
        for j in self.jobs.values():
            if len(self.running) >= self.slots or self.held:
                return
            if j.started is None:
                j.started = self.clock.now
                self.starts.append((self.clock.now, j.job_id))
                self.most_running = max(self.most_running, len(self.running))

    def _end_due(self) -> None:
        for j in list(self.jobs.values()):
            if j.job_id not in self.jobs or j.started is None or j.started + j.step.seconds > self.clock.now:
                continue
            if j.step.die:
                lost = {o.job_id: o.job for o in self.jobs.values()}
                self.jobs.clear()
                self._out.append(Lost(7, -9, lost))
            elif j.step.crash is not None:
                self._finish(j, Crashed(j.step.crash))
            else:
                self._finish(j, self._result(j, j.step.status, j.step.reason))
            self._start_readied()  # the freed slot goes to a readied job at once

    def _finish(self, j: _Job, result: JobResult | Crashed) -> None:
        del self.jobs[j.job_id]
        self._out.append(Finished(j.job_id, j.job, result))

    def _result(self, j: _Job, status: Status, reason: str) -> JobResult:
        started = EPOCH + timedelta(seconds=j.started or 0.0)
        record = new_record(
            self.run_id,
            j.job,
            Verdict(status, reason, "infra" if status.is_infra else None),  # as scripted: a fake attempt's
            started=started,
            ended=EPOCH + timedelta(seconds=self.clock.now),
            passed=True if status is Status.COMPLETED else None,
            metrics=Metrics(cost_usd=j.step.cost if status is not Status.CANCELLED else 0.0),
        )
        return JobResult(record.model_dump(mode="json"), [{"t": 0.0, "event": {"fake": j.job_id}}])


def factory(
    clock: FakeClock,
    script: Callable[[Job], Step],
    *,
    on_poll: Callable[[FakeExecutor], None] = lambda executor: None,
    answer_cancel: bool = True,
) -> tuple[Callable[[Launch], FakeExecutor], list[FakeExecutor]]:
    """An executor factory for the scheduler, and the list its executor lands in (with the launch's
    slots and spare, as a real executor is started)."""
    made: list[FakeExecutor] = []

    def start(launch: Launch) -> FakeExecutor:
        executor = FakeExecutor(
            clock,
            script,
            launch.slots,
            launch.spare,
            launch.config.run_id,
            on_poll=on_poll,
            answer_cancel=answer_cancel,
        )
        made.append(executor)
        return executor

    return start, made
