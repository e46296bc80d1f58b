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
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import multiprocess as mp

from ipc_bridge.lifeline import die_with_parent

log = logging.getLogger(__name__)

# Messages worker -> main: ("done", wid, job_id, result)
# Messages main -> worker: ("connect", connection_file) | ("job", job_id, payload) | ("cancel",) | ("stop",)
# They cross the queues as stdlib pickles (see send/receive): multiprocess would pickle them with dill's
# pure-Python pickler, ~20x slower per Job, and that was most of the main process's CPU per attempt.
WorkerMain = Callable[[int, Any, Any, Any], None] | str
"""The worker's entry point, or ``"module:function"`` naming it: then the main process need not import
the worker's machinery at all (it is imported in the worker)."""


@dataclass
class WorkerHandle:
    wid: int
    process: Any
    inbox: Any
    capacity: int
    jobs: dict[str, Any] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.jobs)


@dataclass
class Finished:
    job_id: str
    payload: Any
    result: Any


@dataclass
class Lost:
    """Jobs that were in flight on a worker that died."""

    wid: int
    exitcode: int | None
    jobs: dict[str, Any]


class ExecutorStartError(RuntimeError):
    """The pool could not start (Ray not installed, the cluster unreachable, no node offering slots):
    the user's set-up, reported as one message before any attempt runs."""


class Executor(Protocol):
    """What the scheduler needs of a pool: the local :class:`Pool` or ``RayPool`` (one per node)."""

    @property
    def in_flight(self) -> int: ...

    def submit(self, job_id: str, payload: Any) -> int: ...

    def poll(self, timeout: float) -> list[Finished | Lost]: ...

    def cancel_all(self) -> None: ...

    def close(self, timeout: float = 10.0) -> None: ...


class Pool:
    """``workers`` processes, each running up to ``slots_per_worker`` jobs at once."""

    def __init__(
        self,
        target: WorkerMain,
        config: Any,
        *,
        workers: int,
        slots_per_worker: int,
    ) -> None:
        self._ctx = mp.get_context("spawn")
        self._target = target
        self._config = config
        self._slots = slots_per_worker
        self._outbox = self._ctx.Queue()
        self._workers: dict[int, WorkerHandle] = {}
        self._next_wid = 0
        self._closing = False
        self._announcement: tuple[Any, ...] | None = None
        for _ in range(workers):
            self._start_worker()

    def _start_worker(self) -> WorkerHandle:
        wid = self._next_wid
        self._next_wid += 1
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(
            target=_worker_entry,
            args=(self._target, wid, inbox, self._outbox, self._config, os.getpid()),
            name=f"orchestrate-worker-{wid}",
            daemon=True,
        )
        proc.start()
        if self._announcement is not None:
            send(inbox, self._announcement)
        handle = WorkerHandle(wid, proc, inbox, self._slots)
        self._workers[wid] = handle
        return handle

    @property
    def free_slots(self) -> int:
        return sum(w.free for w in self._workers.values() if w.process.is_alive())

    @property
    def in_flight(self) -> int:
        return sum(len(w.jobs) for w in self._workers.values())

    def announce(self, msg: tuple[Any, ...]) -> None:
        """Send ``msg`` to every worker before any job, and to every worker started later (a dead
        worker's replacement) first thing."""
        self._announcement = msg
        for worker in self._workers.values():
            if worker.process.is_alive():
                send(worker.inbox, msg)

    def submit(self, job_id: str, payload: Any) -> int:
        """Give a job to the least loaded live worker. Returns its worker id."""
        live = [w for w in self._workers.values() if w.process.is_alive() and w.free > 0]
        if not live:
            raise RuntimeError("no free worker slot")
        worker = max(live, key=lambda w: w.free)
        worker.jobs[job_id] = payload
        send(worker.inbox, ("job", job_id, payload))
        return worker.wid

    def poll(self, timeout: float) -> list[Finished | Lost]:
        """Results that arrived within ``timeout``, and jobs lost with a dead worker (then replaced)."""
        out: list[Finished | Lost] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = receive(
                    self._outbox.get(timeout=max(0.0, remaining)) if not out else self._outbox.get_nowait()
                )
            except queue.Empty:
                break
            if msg[0] == "done":
                _, wid, job_id, result = msg
                payload = self._workers[wid].jobs.pop(job_id, None) if wid in self._workers else None
                out.append(Finished(job_id, payload, result))
        out.extend(self._reap())
        return out

    def _reap(self) -> list[Lost]:
        lost: list[Lost] = []
        for wid, worker in list(self._workers.items()):
            if worker.process.is_alive():
                continue
            del self._workers[wid]
            if worker.jobs:
                log.error(
                    "worker %d died (exit code %s) with %d attempt(s) in flight",
                    wid,
                    worker.process.exitcode,
                    len(worker.jobs),
                )
                lost.append(Lost(wid, worker.process.exitcode, dict(worker.jobs)))
            if not self._closing:
                self._start_worker()
        return lost

    def cancel_all(self) -> None:
        """Ask every worker to cancel its in-flight jobs; they still report them as done."""
        for worker in self._workers.values():
            if worker.process.is_alive():
                send(worker.inbox, ("cancel",))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the workers: ask, then terminate, then kill."""
        self._closing = True
        for worker in self._workers.values():
            if worker.process.is_alive():
                send(worker.inbox, ("stop",))
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
        self._outbox.close()
        self._outbox.cancel_join_thread()

    def kill_worker_for_test(self, job_id: str) -> int:
        """SIGKILL the worker holding ``job_id`` (fault injection)."""
        for worker in self._workers.values():
            if job_id in worker.jobs:
                worker.process.kill()
                return int(worker.wid)
        raise KeyError(job_id)


def send(q: Any, msg: tuple[Any, ...]) -> None:
    """Put a message on a pool queue (a stdlib pickle: the C pickler, protocol 5)."""
    q.put(pickle.dumps(msg, protocol=5))


def receive(raw: bytes) -> tuple[Any, ...]:
    msg: tuple[Any, ...] = pickle.loads(raw)
    return msg


def _worker_entry(target: WorkerMain, wid: int, inbox: Any, outbox: Any, config: Any, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL, expected_parent=parent)
    if isinstance(target, str):
        module, _, name = target.partition(":")
        target = getattr(importlib.import_module(module), name)
        assert callable(target)
    target(wid, inbox, outbox, config)
