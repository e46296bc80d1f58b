"""The executor's parts that need no process: the typed messages across a pool queue, the run-wide slot
grants of readied attempts, and the local executor's own duties (the bridge checked at every poll, what
it closes and keeps) with a fake pool and a fake supervisor."""

from __future__ import annotations

import pickle
import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ipc_bridge.redaction import Redactor
from orchestrator.run.executor import (
    Assign,
    Cancel,
    Connect,
    Crashed,
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
from orchestrator.run.jobs import Job, JobResult, WorkerConfig
from orchestrator.run.local import LocalExecutor
from orchestrator.run.pool import Grants, receive, send
from orchestrator.run.supervisor import BridgeFailed
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan

SECRET = "sk-test-9d2e4c1a77"


def _suite(tmp: Path) -> Path:
    path = tmp / "suite.yaml"
    path.write_text("name: t\ntarget: {kind: simulator, slots: 1}\ncases: [{id: a, prompt: x}]\n")
    return path


def _job(tmp: Path) -> Job:
    return Job(build_plan(load_suite(_suite(tmp))).attempts[0], 1)


def test_every_message_crosses_a_queue_as_itself(tmp_path: Path) -> None:
    job = _job(tmp_path)
    sent: list[ToWorker | FromWorker] = [
        Connect("/run/bridge/connection.json"),
        Assign("a#1", job),
        Go("a#1"),
        Hold(),
        Cancel(),
        Stop(),
        Done(3, "a#1", JobResult({"status": "completed"}, [{"t": 0.5, "event": {"x": 1}}])),
        Done(3, "a#2", Crashed("KeyError: 'x'")),
        Ready(3, "a#3"),
        Released(3, "a#3"),
        Handoff(3, "a#3", "a#4"),
    ]
    assert {type(m) for m in sent} == set(get_args(ToWorker)) | set(get_args(FromWorker))
    q: queue.Queue[bytes] = queue.Queue()
    for msg in sent:
        send(q, msg)
    received = [receive(q.get_nowait()) for _ in sent]
    assert received == sent
    match received[7]:
        case Done(wid, job_id, Crashed(detail)):
            assert (wid, job_id, detail) == (3, "a#2", "KeyError: 'x'")
        case _:
            pytest.fail(f"not a crash: {received[7]!r}")


def test_a_message_that_cannot_be_pickled_fails_at_send() -> None:
    """A message that failed to pickle in a feeder thread (as multiprocess's queues did) would only be
    logged and dropped: a Done lost so would leave its attempt in flight for good. ``send`` pickles in
    the caller (the stdlib's C pickler), so such a message raises there and nothing reaches the pipe."""
    q: queue.Queue[bytes] = queue.Queue()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        send(q, Done(3, "a#1", JobResult({"status": "completed", "why": lambda: None})))
    assert q.empty()


# ------------------------------------------------------------------------------------- grants


def test_readied_jobs_get_slots_in_the_order_they_became_ready() -> None:
    grants = Grants(2)
    for wid, job_id in [(0, "x"), (1, "y"), (0, "z")]:
        grants.ready(wid, job_id)
    waiting = lambda wid, job_id: True  # noqa: E731
    assert grants.grant(waiting) == [(0, "x"), (1, "y")]
    assert grants.grant(waiting) == []  # both slots held
    grants.release("y")
    assert grants.grant(waiting) == [(0, "z")]


def test_a_job_handed_a_slot_on_its_worker_is_not_granted_one_again_after_its_task() -> None:
    grants = Grants(1)
    for job_id in ("x", "y", "z"):
        grants.ready(0, job_id)
    assert grants.grant(lambda wid, job_id: True) == [(0, "x")]
    grants.hand_off("x", "y")  # x's task is over; its worker gave the slot to y
    grants.release("y")  # y's task is over; y is in its teardown and check, still on its worker
    assert grants.grant(lambda wid, job_id: True) == [(0, "z")]  # the slot goes to z, the one waiting


def test_held_grants_drop_what_waits_and_grant_nothing_more() -> None:
    grants = Grants(2)
    grants.ready(0, "x")
    grants.hold()
    grants.ready(0, "y")
    assert grants.grant(lambda wid, job_id: True) == []


@settings(max_examples=150)
@example(slots=1, steps=[("r", 0), ("r", 0), ("g", 0), ("e", 0), ("e", 0), ("g", 0)])  # hand-off, release
@given(
    slots=st.integers(1, 3),
    steps=st.lists(st.tuples(st.sampled_from("rggeedc"), st.integers(0, 5)), max_size=40),
)
def test_the_slots_granted_are_exactly_the_tasks_running_and_none_idles_while_a_job_waits(
    slots: int, steps: list[tuple[str, int]]
) -> None:
    """A model of the pool's workers (two of them) driving :class:`Grants` as the pool does: jobs are
    readied (r), slots granted (g), tasks end (e: the slot is handed to a job waiting on the same
    worker, else released), jobs finish their teardown (d), waiting jobs are cancelled (c)."""
    grants = Grants(slots)
    waiting: dict[str, int] = {}  # readied, no slot yet, in the order they became ready
    running: dict[str, int] = {}
    teardown: dict[str, int] = {}
    on_worker = lambda wid, job_id: job_id in waiting or job_id in running or job_id in teardown  # noqa: E731
    for n, (step, k) in enumerate(steps):
        if step == "r":
            wid = int(k == 5)  # mostly one worker: hand-offs are frequent
            waiting[f"j{n}"] = wid
            grants.ready(wid, f"j{n}")
        elif step == "g":
            for wid, job_id in grants.grant(on_worker):
                assert waiting.pop(job_id) == wid  # only a job still waiting is granted a slot
                running[job_id] = wid
            assert not waiting or len(running) == slots  # no slot idles while a job waits
        elif step == "e" and running:
            job_id, wid = list(running.items())[k % len(running)]
            teardown[job_id] = running.pop(job_id)
            heir = next((j for j, w in waiting.items() if w == wid), None)
            if heir is None:
                grants.release(job_id)
            else:
                grants.hand_off(job_id, heir)
                running[heir] = waiting.pop(heir)
        elif step == "d" and teardown:
            job_id = list(teardown)[k % len(teardown)]
            del teardown[job_id]
            grants.release(job_id)  # its Done
        elif step == "c" and waiting:
            job_id = list(waiting)[k % len(waiting)]
            del waiting[job_id]
            grants.release(job_id)  # its Done, unstarted
        assert grants.granted == len(running) <= slots


# ----------------------------------------------------------------------------- local executor


@dataclass
class FakeSupervisor:
    fail_at: int | None = None
    checks: int = 0
    stopped: bool | None = None

    def check(self) -> bool:
        self.checks += 1
        if self.checks == self.fail_at:
            raise BridgeFailed("the bridge died 11 times within 60s")
        return False

    def bridge_pid(self) -> int | None:
        return None

    def stop(self, *, kill: bool = False) -> None:
        self.stopped = kill


@dataclass
class FakePool:
    """Hands back what a test put in ``out``; notes how it was closed and when (against the bridge)."""

    supervisor: FakeSupervisor
    out: list[Finished | Lost] = field(default_factory=list)
    closed: float | None = None
    """The timeout it was closed with."""
    bridge_up_at_close: bool | None = None

    capacity: int = 3
    in_flight: int = 0

    def submit(self, job_id: str, job: Job) -> None:
        self.in_flight += 1

    def poll(self, timeout: float) -> list[Finished | Lost]:
        out, self.out = self.out, []
        return out

    def hold_all(self) -> None:
        pass

    def cancel_all(self) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        self.closed = timeout
        self.bridge_up_at_close = self.supervisor.stopped is None


def _local(tmp: Path, pool: FakePool, supervisor: FakeSupervisor) -> tuple[LocalExecutor, Path, Path]:
    runtime, results = tmp / "orc-x", tmp / "results"
    (runtime / "work").mkdir(parents=True)
    results.mkdir()
    config = WorkerConfig(
        run_id="r",
        connection_file="",
        runtime_dir=str(runtime),
        work_dir=str(runtime / "work"),
        target=load_suite(_suite(tmp)).target,  # unused here
        results_dir=str(results),
        redactor=Redactor([SECRET]),
    )
    return LocalExecutor(pool, supervisor, runtime=runtime, config=config), runtime, results


def test_the_bridge_is_checked_at_every_poll_and_its_failure_ends_the_poll(tmp_path: Path) -> None:
    supervisor = FakeSupervisor(fail_at=3)
    pool = FakePool(supervisor)
    executor, _, _ = _local(tmp_path, pool, supervisor)
    assert executor.capacity == 3
    executor.poll(0.1)
    executor.poll(0.1)
    assert supervisor.checks == 2
    with pytest.raises(BridgeFailed):
        executor.poll(0.1)
    executor.close()


@pytest.mark.parametrize("kill", [False, True])
def test_close_stops_the_workers_before_the_bridge_keeps_host_logs_redacted_and_removes_the_runtime_dir(
    tmp_path: Path, kill: bool
) -> None:
    supervisor = FakeSupervisor()
    pool = FakePool(supervisor)
    executor, runtime, results = _local(tmp_path, pool, supervisor)
    (runtime / "work" / "w0-1.host.log").write_text(f"key={SECRET}\nbye\n")
    executor.close(kill=kill)
    assert pool.bridge_up_at_close  # the workers stop first: they detach their slots from the bridge
    assert pool.closed == (2.0 if kill else 10.0) and supervisor.stopped is kill
    assert (results / "hosts" / "w0-1.host.log").read_text() == "key=***\nbye\n"
    assert not runtime.exists()
