"""The main process of a run: plan → bridge + workers → the one writer of the result files.

It owns every decision that must be made once: which attempt starts next, retries of infrastructure
failures (exponential backoff with jitter), the budget, what Ctrl-C means, and the records. Workers only
run what they are given and report back.
"""

from __future__ import annotations

import heapq
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from orchestrator.hosts import marks as host_marks
from orchestrator.hosts.logs import keep_log
from orchestrator.hosts.provider import host_provider
from orchestrator.processes import children, runtime_dir
from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.store import AttemptRecord, ResultsWriter
from orchestrator.run.jobs import HOST_LOGS, Job, JobResult, WorkerConfig, new_record
from orchestrator.run.pool import Executor, ExecutorStartError, Finished, Lost, Pool
from orchestrator.run.supervisor import BridgeSupervisor
from orchestrator.status import Status
from orchestrator.suite.config import Suite
from orchestrator.suite.plan import Attempt, AttemptKey

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
WORKER_MAIN = "orchestrator.run.worker:worker_main"  # by name: the main process never imports the worker
BRIDGE_LOG = "bridge.log"
CANCEL_WAIT = 8.0
BREAKER_FACTOR = 2
"""The circuit breaker trips when the first tries of the first ``BREAKER_FACTOR x slots`` keys all fail
alike."""
REAP_INTERVAL = 10.0
"""How often orphans of the run's processes, adopted by this one, are reaped while it runs."""


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
    workers: int | None = None
    keep_workspaces: bool = False
    seed: int | None = None
    ray_address: str | None = None
    bridge_restarts: int = 10
    """How often the bridge may die within a minute before the run stops."""
    """With ``target.executor: ray``: the cluster to join (``auto``, an address); None starts a local one."""


def _runtime_parent() -> str:
    """$TMPDIR when its path is short: host sockets live below it and sun_path allows ~104 bytes."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 40 else "/tmp"


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
    """Runs ``attempts`` of ``suite`` and writes every outcome through ``writer``."""

    def __init__(
        self,
        suite: Suite,
        attempts: list[Attempt],
        writer: ResultsWriter,
        *,
        run_id: str,
        options: RunOptions,
        on_record: Callable[[AttemptRecord], None] = lambda r: None,
    ) -> None:
        self.suite = suite
        self.writer = writer
        self.run_id = run_id
        self.options = options
        self.on_record = on_record
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
        self._supervisor: BridgeSupervisor | None = None
        self._breaker = _Breaker(BREAKER_FACTOR * suite.target.slots)
        self._tried: set[AttemptKey] = set()
        """Keys with a real try recorded by this process (the breaker's first tries)."""
        self._adoptions: children.Adoptions | None = None
        self._runtime: Path | None = None
        self._next_reap = 0.0

    # ------------------------------------------------------------------------------------- run

    def run(self) -> str:
        """Run to the end (or until stopped); returns why it stopped: ``finished``, ``interrupted``,
        ``budget``, ``circuit_breaker`` (see :attr:`tripped`)."""
        parent = _runtime_parent()
        # What runs killed outright left: their hosts' processes (found by their mark), then their dirs.
        host_marks.end_marked(host_marks.of_dead_runs(parent))
        runtime_dir.sweep(parent)
        runtime = self._runtime = runtime_dir.create(parent)
        work = runtime / "work"
        work.mkdir()
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        pool: Executor | None = None
        records = self._records = RecordQueue(self.writer)
        try:
            slots = self.suite.target.slots
            config = WorkerConfig(
                run_id=self.run_id,
                connection_file="",
                runtime_dir=str(runtime),
                work_dir=str(work),
                target=self.suite.target,
                keep_workspaces=self.options.keep_workspaces,
                results_dir=str(self.writer.run_dir.resolve()),
                redactor=self.suite.redactor(),
                referenced_env=self.suite.referenced_env,
            )
            if self._hosts.executor == "ray":
                # Ray is an optional extra: imported only when asked for. Every node runs its own
                # bridge; nothing of the driver's runtime dir is used there.
                try:
                    from orchestrator.ray.pool import RayPool
                except ImportError as exc:
                    raise ExecutorStartError(
                        f"target.executor: ray needs Ray ({exc}): pip install '.[ray]'"
                    ) from None
                pool = RayPool(config, slots=slots, address=self.options.ray_address)
            else:
                # Before the first child: what the run starts never outlives it (orchestrator.processes.children).
                self._adoptions = children.Adoptions()
                self._supervisor = BridgeSupervisor(
                    runtime / "bridge",
                    self.writer.run_dir / BRIDGE_LOG,
                    max_restarts=self.options.bridge_restarts,
                    secrets=self.suite.secret_values,
                )
                # A worker with no slot of its own would hold readied jobs it can never start.
                workers = min(self.options.workers or 2, slots)
                spare = self._spare()
                # The workers spawn and import while the bridge starts; then they are told where it is.
                pool = Pool(WORKER_MAIN, config, workers=workers, slots=slots, spare=spare)
                pool.announce(("connect", str(self._supervisor.start().connection_file)))
                slots += spare
            self._capacity = slots
            return self._loop(pool)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            if pool is not None:
                pool.close(timeout=2.0 if self._interrupts > 1 else 10.0)
            if self._supervisor is not None:
                self._supervisor.stop(kill=self._interrupts > 1)
            if self._adoptions is not None:
                self._adoptions.close()
                # Whatever carries the mark of one of this run's hosts and escaped adoption.
                host_marks.end_marked(host_marks.of_run(runtime))
                pool = None  # its queues go, and the resource tracker with them
                children.stop_resource_tracker()
            # Kept workspaces and host logs are in the results directory, not here.
            self._keep_host_logs(runtime / "work")
            shutil.rmtree(runtime, ignore_errors=True)
            self._report(records.close())  # after the pool: no record can come after this
            if records.error is not None and sys.exc_info()[0] is None:
                raise records.error

    def _loop(self, pool: Executor) -> str:
        cancel_deadline: float | None = None
        while True:
            # A spent budget only stops new starts: what runs has been paid for, and ends by itself.
            if self._stopping in ("interrupted", "circuit_breaker") and cancel_deadline is None:
                pool.cancel_all()
                cancel_deadline = time.monotonic() + CANCEL_WAIT
            if not self._stopping:
                self._start_ready(pool)
            if pool.in_flight == 0 and (self._stopping or not self._queue):
                break
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                log.error("in-flight attempts did not finish within %.0fs of the stop", CANCEL_WAIT)
                break
            if self._interrupts > 1:
                raise Interrupted
            items = pool.poll(POLL_INTERVAL)
            if self._supervisor is not None:
                self._supervisor.check()
            self._reap()
            for item in items:  # records go to the writing thread: nothing here waits for a disk
                if isinstance(item, Finished):
                    self._finished(item)
                else:
                    self._lost(item)
            assert self._records is not None
            self._report(self._records.written())
            if self._records.error is not None:
                raise self._records.error
        if self._stopping == "budget":
            self.skipped_budget = len(self._queue)
        return self._stopping or "finished"

    def _keep_host_logs(self, work: Path) -> None:
        """Keep the logs that workers could not (a worker that died with hosts running, or was
        terminated at a stop): ``hosts/w<worker>-<n>.host.log``, ``hosts/farm-w<worker>.log``."""
        redact = self.suite.redactor().text
        for raw in work.glob("*.log"):
            try:
                keep_log(raw, self.writer.run_dir / HOST_LOGS / raw.name, redact)
            except OSError as exc:  # the records matter more: a run never fails over a log
                log.warning("cannot keep %s: %s", raw.name, exc)

    def _reap(self) -> None:
        now = time.monotonic()
        if self._adoptions is None or now < self._next_reap:
            return
        self._next_reap = now + REAP_INTERVAL
        bridge = self._supervisor.bridge.pid if self._supervisor is not None else None
        self._adoptions.reap(keep=() if bridge is None else (bridge,))

    def _start_ready(self, pool: Executor) -> None:
        now = time.monotonic()
        while self._queue and self._queue[0].not_before <= now and pool.in_flight < self._capacity:
            if self._over_budget():
                self._stopping = "budget"
                pool.hold_all()  # readied attempts are not started either
                return
            if not self._sockets.free:
                return
            item = heapq.heappop(self._queue)
            job_id = f"{item.attempt.key.slug}#{item.number}"
            pool.submit(job_id, Job(item.attempt, item.number, self._sockets.take(job_id), tries=item.tries))

    def _spare(self) -> int:
        """Attempts readied ahead (the target's ``prelaunch``, its default under a budget included)."""
        return self._hosts.prelaunch(budget=self.suite.budget.max_cost_usd is not None)

    def _over_budget(self) -> bool:
        limit = self.suite.budget.max_cost_usd
        return limit is not None and self._spent >= limit

    # --------------------------------------------------------------------------------- results

    def _finished(self, item: Finished) -> None:
        job: Job = item.payload
        result: JobResult = item.result
        self._release(item.job_id)
        if result.unstarted:
            # Held back before its task started: it is still to run (skipped now, or on resume).
            heapq.heappush(self._queue, _Queued(0.0, job.attempt.index, job.number, job.attempt, job.tries))
            return
        if "crash" in result.record:
            record = self._error_record(
                job, Status.INFRA_ERROR, "harness", "worker error", result.record["crash"]
            )
        else:
            record = AttemptRecord.model_validate(result.record)
        self._record(job, record, result.transcript)

    def _lost(self, lost: Lost) -> None:
        # Its hosts died with it (PR_SET_PDEATHSIG); what they started detached did not.
        if self._runtime is not None:
            host_marks.end_marked(host_marks.of_worker(self._runtime, lost.wid))
        for job_id, job in lost.jobs.items():
            self._release(job_id)
            detail = f"worker process {lost.wid} died (exit code {lost.exitcode})"
            self._record(job, self._error_record(job, Status.INFRA_ERROR, "infra", "worker died", detail))

    def _record(
        self, job: Job, record: AttemptRecord, transcript: list[dict[str, Any]] | None = None
    ) -> None:
        assert self._records is not None
        self._records.put(record, job.attempt.key, job.number, transcript or ())
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
                time.monotonic() + delay, job.attempt.index, job.number + 1, job.attempt, job.tries + 1
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
        self._sockets.give_back(job_id)

    def _error_record(
        self, job: Job, status: Status, error_class: Any, reason: str, detail: str
    ) -> AttemptRecord:
        now = datetime.now(timezone.utc)
        return new_record(
            self.run_id,
            job,
            status,
            started=now,
            ended=now,
            passed=None,
            reason=reason,
            error_class=error_class,
            error=detail,
        )

    # --------------------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags: the loop acts on them within POLL_INTERVAL, never in the middle of a write.
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("stopping: cancelling in-flight attempts (press Ctrl-C again to exit at once)")
            self._stopping = "interrupted"

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def tripped(self) -> str | None:
        """Why the circuit breaker stopped the run (``stop_reason`` ``circuit_breaker``), else None."""
        return self._breaker.tripped
