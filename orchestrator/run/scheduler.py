"""The main process of a run: plan → bridge + workers → the one writer of the result files.

It owns every decision that must be made once: which attempt starts next, retries of infrastructure
failures (exponential backoff with jitter), the budget, what Ctrl-C means, and the records. Workers only
run what they are given and report back.
"""

from __future__ import annotations

import heapq
import logging
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from orchestrator.hosts.provider import host_provider
from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.records import AttemptRecord
from orchestrator.results.store import ResultsWriter
from orchestrator.run.attempt import CANCELLED_WITHIN
from orchestrator.run.executor import Crashed, Executor, ExecutorFactory, Finished, Launch, Lost
from orchestrator.run.jobs import Job, JobResult, WorkerConfig, new_record
from orchestrator.status import Status
from orchestrator.suite.config import Suite
from orchestrator.suite.plan import Attempt, AttemptKey
from orchestrator.verdict import WorkerDied, WorkerError, decide

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
BREAKER_FACTOR = 2
"""The circuit breaker trips when the first tries of the first ``BREAKER_FACTOR x slots`` keys all fail
alike."""
SOFT_STOPS = ("budget", "decided")
"""Stop reasons that only stop new starts (see :meth:`Scheduler.stop_starting`)."""


@dataclass(order=True)
class _Queued:
    not_before: float
    index: int
    number: int = field(compare=False)
    attempt: Attempt = field(compare=False)
    tries: int = field(default=0, compare=False)
    """Real tries recorded before this one (see :attr:`Job.tries`)."""


@dataclass
class RunOptions:
    keep_workspaces: bool = False
    seed: int | None = None
    """Seeds the retries' jitter."""


class Interrupted(Exception):
    """Ctrl-C twice: stop now."""


class _Breaker:
    """Watches a run's first tries (each key's first in this process): when the first ``window`` of them all end ``infra_error``
    for the same reason (a host that cannot start, a setup command that cannot run), the rest would
    too: the run stops rather than grind through the suite. Any other outcome first, a retry's
    included, disarms it for good. Retries failing alike do not count: a run of fewer keys than
    ``window``, where the breaker would save little, is left to its retries."""

    def __init__(self, window: int) -> None:
        self.window = max(window, 1)
        self._armed = True
        self._seen = 0
        self._first: AttemptRecord | None = None
        self.tripped: str | None = None
        """Why it tripped, in words (None while it has not)."""

    def see(self, record: AttemptRecord, *, first_try: bool) -> bool:
        """Count one try's record (``first_try``: its key's first real try); True when this one trips
        the breaker."""
        if not self._armed or record.status is Status.CANCELLED:
            return False  # a stop of ours says nothing about the infrastructure
        if record.status is not Status.INFRA_ERROR or (
            self._first is not None and record.reason != self._first.reason
        ):
            self._armed = False
            return False
        self._first = self._first or record
        if not first_try:
            return False
        self._seen += 1
        if self._seen < self.window:
            return False
        self._armed = False
        detail = (self._first.error or "").strip().splitlines()
        self.tripped = (
            f"the first tries of the first {self._seen} attempts all ended infra_error "
            f'"{self._first.reason}"' + (f" ({detail[-1][:300]})" if detail else "")
        )
        return True


class Scheduler:
    """Runs ``attempts`` of ``suite`` on the executor that ``executor`` starts, and writes every outcome
    through ``writer``. ``clock``: the monotonic clock of retries' backoff and of the stop's wait (the
    executor's :meth:`~orchestrator.run.executor.Executor.poll` is where the scheduler waits)."""

    def __init__(
        self,
        suite: Suite,
        attempts: list[Attempt],
        writer: ResultsWriter,
        *,
        run_id: str,
        options: RunOptions,
        executor: ExecutorFactory,
        on_record: Callable[[AttemptRecord], None] = lambda r: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.suite = suite
        self.writer = writer
        self.run_id = run_id
        self.options = options
        self.on_record = on_record
        self._start_executor = executor
        self._clock = clock
        self._rng = random.Random(options.seed)
        self._queue: list[_Queued] = []
        for a in attempts:
            heapq.heappush(
                self._queue, _Queued(0.0, a.index, writer.next_attempt(a.key), a, writer.tries(a.key))
            )
        self._stopping = ""
        self._interrupts = 0
        self._hosts = host_provider(suite.target)
        self._sockets = self._hosts.leases()
        self.skipped_budget = 0
        self._spent = writer.cost_usd
        """Cost of every record so far, those still being written included (the budget's measure)."""
        self._records: RecordQueue | None = None
        self._capacity = 0
        self._breaker = _Breaker(BREAKER_FACTOR * suite.target.slots)
        self._tried: set[AttemptKey] = set()
        """Keys with a real try recorded by this process (the breaker's first tries)."""
        self._in_flight: set[str] = set()
        """Jobs submitted whose result has not come back: if the run ends under them (a bridge that
        keeps dying, a second Ctrl-C, a stop whose cancel goes unanswered), they are still to run."""

    # ------------------------------------------------------------------------------------- run

    def run(self) -> str:
        """Run to the end (or until stopped); returns why it stopped: ``finished``, ``interrupted``,
        ``budget``, ``circuit_breaker`` (see :attr:`tripped`), or the reason given to
        :meth:`stop_starting`."""
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        executor: Executor | None = None
        records = self._records = RecordQueue(self.writer)
        try:
            config = WorkerConfig(
                run_id=self.run_id,
                connection_file="",  # the executor's bridge, and its runtime dir: filled in by it
                runtime_dir="",
                work_dir="",
                target=self.suite.target,
                keep_workspaces=self.options.keep_workspaces,
                results_dir=str(self.writer.run_dir.resolve()),
                redactor=self.suite.redactor(),
                referenced_env=self.suite.referenced_env,
            )
            executor = self._start_executor(Launch(config, self.suite.target.slots, self._spare()))
            self._capacity = executor.capacity
            return self._loop(executor)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if executor is not None:
                executor.close(kill=self._interrupts > 1)
            self._report(records.close())  # after the executor: no record can come after this
            if records.error is not None and sys.exc_info()[0] is None:
                raise records.error

    def _loop(self, executor: Executor) -> str:
        cancel_deadline: float | None = None
        held = False
        while True:
            if self._stopping in ("interrupted", "circuit_breaker") and cancel_deadline is None:
                executor.cancel_all()
                cancel_deadline = self._clock() + CANCELLED_WITHIN
            if not self._stopping:
                self._start_ready(executor)
            if self._stopping in SOFT_STOPS and not held:
                # Only new starts stop: what runs has been paid for, and ends by itself. Readied
                # attempts come back unstarted, without a record, to the queue (a resume runs them).
                executor.hold_all()
                held = True
            if executor.in_flight == 0 and (self._stopping or not self._queue):
                break
            if cancel_deadline is not None and self._clock() > cancel_deadline:
                log.error("in-flight attempts did not finish within %.0fs of the stop", CANCELLED_WITHIN)
                break
            if self._interrupts > 1:
                raise Interrupted
            # Records go to the writing thread: nothing here waits for a disk.
            for item in executor.poll(POLL_INTERVAL):
                match item:
                    case Finished():
                        self._finished(item)
                    case Lost():
                        self._lost(item)
            assert self._records is not None
            self._report(self._records.written())
            if self._records.error is not None:
                raise self._records.error
        if self._stopping == "budget":
            self.skipped_budget = len(self._queue)
        return self._stopping or "finished"

    def _start_ready(self, executor: Executor) -> None:
        now = self._clock()
        while self._queue and self._queue[0].not_before <= now and executor.in_flight < self._capacity:
            if self._over_budget():
                self._stopping = "budget"
                return
            if not self._sockets.free:
                return
            item = heapq.heappop(self._queue)
            job_id = f"{item.attempt.key.slug}#{item.number}"
            self._in_flight.add(job_id)
            executor.submit(
                job_id, Job(item.attempt, item.number, self._sockets.take(job_id), tries=item.tries)
            )

    def _spare(self) -> int:
        """Attempts readied ahead (the target's ``prelaunch``, its default under a budget included)."""
        return self._hosts.prelaunch(budget=self.suite.budget.max_cost_usd is not None)

    def _over_budget(self) -> bool:
        limit = self.suite.budget.max_cost_usd
        return limit is not None and self._spent >= limit

    # --------------------------------------------------------------------------------- results

    def _finished(self, item: Finished) -> None:
        job = item.job
        self._release(item.job_id)
        match item.result:
            case Crashed(detail):
                self._record(job, self._error_record(job, WorkerError(detail)))
            case JobResult(unstarted=True):
                # Held back before its task started: it is still to run (skipped now, or on resume).
                heapq.heappush(
                    self._queue, _Queued(0.0, job.attempt.index, job.number, job.attempt, job.tries)
                )
            case JobResult(record=record, transcript=transcript, diff=diff):
                self._record(job, AttemptRecord.model_validate(record), transcript, diff)

    def _lost(self, lost: Lost) -> None:
        for job_id, job in lost.jobs.items():
            self._release(job_id)
            self._record(job, self._error_record(job, WorkerDied(lost.wid, lost.exitcode)))

    def _record(
        self,
        job: Job,
        record: AttemptRecord,
        transcript: list[dict[str, Any]] | None = None,
        diff: str | None = None,
    ) -> None:
        assert self._records is not None
        self._records.put(record, job.attempt.key, job.number, transcript or (), diff)
        self._spent += record.metrics.cost_usd
        # A key's first try in this process counts, resumed keys included: a resume whose keys all
        # tried before must still be able to trip on the cause that stopped the run.
        first_try = job.attempt.key not in self._tried
        if record.status is not Status.CANCELLED:
            self._tried.add(job.attempt.key)
        if not self._stopping and self._breaker.see(record, first_try=first_try):
            log.error("stopping: %s", self._breaker.tripped)
            self._stopping = "circuit_breaker"
        if not record.final and record.status is not Status.CANCELLED and not self._stopping:
            delay = self._backoff(job.tries + 1)
            retry = _Queued(
                self._clock() + delay, job.attempt.index, job.number + 1, job.attempt, job.tries + 1
            )
            heapq.heappush(self._queue, retry)

    def _report(self, written: list[AttemptRecord]) -> None:
        for record in written:
            self.on_record(record)

    def _backoff(self, number: int) -> float:
        d = self.suite.defaults
        base = min(float(d.retry_backoff) * 2 ** (number - 1), float(d.retry_backoff_max))
        return float(base * self._rng.uniform(0.5, 1.5))

    def _release(self, job_id: str) -> None:
        """``job_id``'s result came back: its socket lease is free, and it is no longer in flight."""
        self._in_flight.discard(job_id)
        self._sockets.give_back(job_id)

    def _error_record(self, job: Job, ending: WorkerError | WorkerDied) -> AttemptRecord:
        """The record of a job whose worker failed it (its own record never came)."""
        now = datetime.now(timezone.utc)
        return new_record(self.run_id, job, decide(ending), started=now, ended=now, passed=None)

    def stop_starting(self, reason: str) -> None:
        """Start no more attempts, as a spent budget does: running ones end by themselves, readied ones
        come back unstarted and leave no record. ``reason`` (one of :data:`SOFT_STOPS`) is what
        :meth:`run` returns. Called from ``on_record`` (the scheduler's own thread), or before :meth:`run`
        (then nothing starts); a stop already under way is kept."""
        if reason not in SOFT_STOPS:
            raise ValueError(f"not a stop that lets running attempts finish: {reason!r}")
        self._stopping = self._stopping or reason

    # --------------------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags: the loop acts on them within POLL_INTERVAL, never in the middle of a write.
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("stopping: cancelling in-flight attempts (press Ctrl-C again to exit at once)")
            self._stopping = "interrupted"

    @property
    def pending(self) -> int:
        """Attempts still to run when :meth:`run` ended (summary.json's ``pending``; a resume runs them):
        those queued (never started, held back, or waiting for a retry) and those in flight that left
        no record, because the run ended under them."""
        return len(self._queue) + len(self._in_flight)

    @property
    def tripped(self) -> str | None:
        """Why the circuit breaker stopped the run (``stop_reason`` ``circuit_breaker``), else None."""
        return self._breaker.tripped
