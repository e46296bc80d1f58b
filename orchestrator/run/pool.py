"""Worker processes and the main process's side of them.

The main process assigns each job to one specific worker (never a shared queue), so that when a worker
dies it knows exactly which jobs were in flight there and can hand them back to the scheduler. Workers
are started with ``spawn``: each creates its own event loop and ZMQ context after it starts, and no
socket or context ever crosses a process boundary. Workers ignore SIGINT; the main process decides what
Ctrl-C means and tells them.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import pickle
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiprocess as mp

from ipc_bridge.lifeline import die_with_parent
from orchestrator.run.channel import Receiver, Sender
from orchestrator.run.executor import (
    Assign,
    Cancel,
    Connect,
    Done,
    Finished,
    FromWorker,
    Go,
    Handoff,
    Hold,
    Lost,
    Ready,
    Released,
    Stop,
    ToWorker,
)
from orchestrator.run.jobs import Job

log = logging.getLogger(__name__)

# The messages (orchestrator.run.executor) cross the pipes as stdlib pickles (see send/receive), on
# pipes that carry bytes as they are (orchestrator.run.channel): multiprocess would pickle them with
# dill's pure-Python pickler, ~20x slower per Job, and its queues pickled even the bytes again.
WorkerMain = Callable[[int, Any, Any, Any, bool], None] | str
"""The worker's entry point, or ``"module:function"`` naming it: then the main process need not import
the worker's machinery at all (it is imported in the worker)."""


@dataclass
class WorkerHandle:
    wid: int
    seat: int
    """Its place in the pool: a dead worker's replacement takes its seat, and with it its share."""
    process: Any
    inbox: Sender
    results: Receiver
    """Its own pipe back: what it wrote whole before it died is still read (see :meth:`Pool._reap`)."""
    capacity: int
    jobs: dict[str, Job] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.jobs)


def share(total: int, parts: int, index: int) -> int:
    """``index``'s part of ``total`` split as evenly as whole numbers allow (the parts add up to it)."""
    return total // parts + (1 if index < total % parts else 0)


class Grants:
    """The run's slots when jobs are readied ahead (``prelaunch``): a readied job waits here for one, in
    the order the jobs became ready, and never more than ``slots`` are held at once. No processes: the
    pool feeds it what its workers say."""

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._ready: deque[tuple[int, str]] = deque()
        """(wid, job_id) of readied jobs waiting for a slot, oldest first."""
        self._granted: set[str] = set()
        self._held = False

    @property
    def granted(self) -> int:
        return len(self._granted)

    def ready(self, wid: int, job_id: str) -> None:
        self._ready.append((wid, job_id))

    def release(self, job_id: str) -> None:
        """``job_id``'s task is over (or the job is done, or lost): its slot, if it held one, is free."""
        self._granted.discard(job_id)

    def hand_off(self, job_id: str, to_job_id: str) -> None:
        """A worker gave ``job_id``'s slot to ``to_job_id``, readied there (no round trip through us)."""
        self._granted.discard(job_id)
        self._granted.add(to_job_id)
        # It waits no more: granted again once its task is over, it would hold a slot through its
        # teardown and check while another readied job waits for one.
        self._ready = deque(entry for entry in self._ready if entry[1] != to_job_id)

    def hold(self) -> None:
        """No more grants: what waits is dropped (its worker ends it unstarted)."""
        self._held = True
        self._ready.clear()

    def grant(self, waiting: Callable[[int, str], bool]) -> list[tuple[int, str]]:
        """The readied jobs that get a slot now, oldest first; ``waiting(wid, job_id)`` says whether
        one still waits (not done meanwhile, nor lost with its worker)."""
        out: list[tuple[int, str]] = []
        while self._ready and len(self._granted) < self._slots and not self._held:
            wid, job_id = self._ready.popleft()
            if job_id in self._granted or not waiting(wid, job_id):
                continue  # handed a slot on its worker; cancelled while it waited; lost
            self._granted.add(job_id)
            out.append((wid, job_id))
        return out


class Pool:
    """``workers`` processes running up to ``slots`` tasks at once between them, and holding ``spare``
    more jobs, readied (set up, host attached) while every slot is busy.

    With spare capacity the slots are granted here (:class:`Grants`), one run-wide pool of them, in the
    order the jobs became ready: a readied job never waits behind a long task of its own worker while
    another worker's slot is free."""

    def __init__(
        self,
        target: WorkerMain,
        config: Any,
        *,
        workers: int,
        slots: int,
        spare: int = 0,
    ) -> None:
        self._ctx = mp.get_context("spawn")
        self._target = target
        self._config = config
        self._seats = workers
        self._slots = slots
        self._spare = spare
        self._grants = Grants(slots)
        self._readable = select.poll()
        self._by_fd: dict[int, int] = {}
        """A worker's pipe back -> its wid."""
        self._workers: dict[int, WorkerHandle] = {}
        self._next_wid = 0
        self._closing = False
        self._announcement: ToWorker | None = None
        for seat in range(workers):
            self._start_worker(seat)

    def _start_worker(self, seat: int) -> WorkerHandle:
        wid = self._next_wid
        self._next_wid += 1
        inbox_r, inbox_w = self._ctx.Pipe(duplex=False)
        results_r, results_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_worker_entry,
            args=(self._target, wid, inbox_r, results_w, self._config, self._spare > 0, os.getpid()),
            name=f"orchestrate-worker-{wid}",
            daemon=True,
        )
        try:
            proc.start()
        finally:
            # The worker has its ends now: ours would keep its pipe back from ever ending when it dies.
            inbox_r.close()
            results_w.close()
        handle = WorkerHandle(
            wid,
            seat,
            proc,
            Sender(inbox_w),
            Receiver(results_r),
            share(self._slots + self._spare, self._seats, seat),
        )
        if self._announcement is not None:
            send(handle.inbox, self._announcement)
        self._workers[wid] = handle
        self._by_fd[handle.results.fileno()] = wid
        self._readable.register(handle.results.fileno(), select.POLLIN)
        return handle

    @property
    def capacity(self) -> int:
        return self._slots + self._spare

    @property
    def free_slots(self) -> int:
        return sum(w.free for w in self._workers.values() if w.process.is_alive())

    @property
    def in_flight(self) -> int:
        return sum(len(w.jobs) for w in self._workers.values())

    def announce(self, msg: ToWorker) -> None:
        """Send ``msg`` to every worker before any job, and to every worker started later (a dead
        worker's replacement) first thing."""
        self._announcement = msg
        for worker in self._workers.values():
            if worker.process.is_alive():
                send(worker.inbox, msg)

    def submit(self, job_id: str, job: Job) -> None:
        """Give a job to the least loaded live worker."""
        live = [w for w in self._workers.values() if w.process.is_alive() and w.free > 0]
        if not live:
            raise RuntimeError("no free worker slot")
        worker = max(live, key=lambda w: w.free)
        worker.jobs[job_id] = job
        send(worker.inbox, Assign(job_id, job))

    def poll(self, timeout: float) -> list[Finished | Lost]:
        """Results that arrived within ``timeout``, and jobs lost with a dead worker (then replaced)."""
        out: list[Finished | Lost] = []
        deadline = time.monotonic() + timeout
        while True:
            # Until the first result or the deadline; then only what is there already.
            wait = 0 if out else math.ceil(max(0.0, deadline - time.monotonic()) * 1000)
            ready = self._readable.poll(wait)
            if not ready:
                break
            for fd, _ in ready:
                self._read(self._workers[self._by_fd[fd]], out)
        self._reap(out)
        self._grant()
        return out

    def _read(self, worker: WorkerHandle, out: list[Finished | Lost]) -> None:
        """Handle what ``worker`` wrote so far; its pipe leaves the poll once it has ended."""
        for raw in worker.results.read():
            self._handle(worker, receive(raw), out)
            self._grant()
        if worker.results.ended and worker.results.fileno() in self._by_fd:
            del self._by_fd[worker.results.fileno()]
            self._readable.unregister(worker.results.fileno())

    def _handle(self, worker: WorkerHandle, msg: ToWorker | FromWorker, out: list[Finished | Lost]) -> None:
        match msg:
            case Done(_, job_id, result):
                job = worker.jobs.pop(job_id, None)
                self._grants.release(job_id)
                if job is not None:
                    out.append(Finished(job_id, job, result))
            case Ready(_, job_id):
                self._grants.ready(worker.wid, job_id)
            case Released(_, job_id):
                self._grants.release(job_id)
            case Handoff(_, job_id, to_job_id):
                self._grants.hand_off(job_id, to_job_id)
            case other:
                log.error("unexpected message from a worker: %r", other)

    def _grant(self) -> None:
        for wid, job_id in self._grants.grant(self._waiting):
            send(self._workers[wid].inbox, Go(job_id))

    def _waiting(self, wid: int, job_id: str) -> bool:
        worker = self._workers.get(wid)
        return worker is not None and job_id in worker.jobs

    def _reap(self, out: list[Finished | Lost]) -> None:
        """Dead workers: what they wrote whole is handled first (a result written just before the
        worker died is a result, not a lost job), then their jobs still in flight are lost."""
        for wid, worker in list(self._workers.items()):
            if worker.process.is_alive():
                continue
            self._read(worker, out)
            self._forget(worker)
            if worker.jobs:
                log.error(
                    "worker %d died (exit code %s) with %d attempt(s) in flight",
                    wid,
                    worker.process.exitcode,
                    len(worker.jobs),
                )
                out.append(Lost(wid, worker.process.exitcode, dict(worker.jobs)))
                for job_id in worker.jobs:
                    self._grants.release(job_id)
            if not self._closing:
                self._start_worker(worker.seat)

    def _forget(self, worker: WorkerHandle) -> None:
        del self._workers[worker.wid]
        if self._by_fd.pop(worker.results.fileno(), None) is not None:
            self._readable.unregister(worker.results.fileno())
        worker.inbox.close()
        worker.results.close()

    def hold_all(self) -> None:
        """Start no more tasks: jobs readied ahead come back unstarted (``JobResult.unstarted``)."""
        self._grants.hold()
        self._broadcast(Hold())

    def cancel_all(self) -> None:
        """Ask every worker to cancel its in-flight jobs; they still report them as done (those whose
        task had not started, unstarted)."""
        self._broadcast(Cancel())

    def _broadcast(self, msg: ToWorker) -> None:
        for worker in self._workers.values():
            if worker.process.is_alive():
                send(worker.inbox, msg)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers: ask, then terminate, then kill."""
        self._closing = True
        self._broadcast(Stop())
        deadline = time.monotonic() + timeout / 2
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in self._workers.values():
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + timeout / 2
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
        for worker in list(self._workers.values()):
            self._forget(worker)


_WIRE: tuple[type[ToWorker | FromWorker], ...] = (
    Connect,
    Assign,
    Go,
    Hold,
    Cancel,
    Stop,
    Done,
    Ready,
    Released,
    Handoff,
)
"""Every message type, numbered by its place here on the wire."""
_TAG = {kind: tag for tag, kind in enumerate(_WIRE)}


def send(q: Any, msg: ToWorker | FromWorker) -> None:
    """Put a message on a pool pipe (:class:`~orchestrator.run.channel.Sender`): a stdlib pickle (the C pickler, protocol 5) of a tuple, its type's
    number then its fields. Pickling the dataclass itself names its class, which costs an import
    look-up each way: 3-5x the time of the tuple, on every message of every attempt."""
    q.put(pickle.dumps((_TAG[type(msg)], *msg.__dict__.values()), protocol=5))


def receive(raw: bytes) -> ToWorker | FromWorker:
    tag, *fields = pickle.loads(raw)
    msg: ToWorker | FromWorker = _WIRE[tag](*fields)
    return msg


def _worker_entry(
    target: WorkerMain, wid: int, inbox: Any, outbox: Any, config: Any, gated: bool, parent: int
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL, expected_parent=parent)
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        assert callable(target)
    target(wid, inbox, outbox, config, gated)
