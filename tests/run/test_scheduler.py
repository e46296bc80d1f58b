"""The scheduler in-process, with a fake executor on a fake clock (:mod:`tests.run.fake_executor`): the
decisions of a run (retries and backoff, the budget, start order, Ctrl-C, lost workers, the circuit
breaker) without a bridge, a worker or a sleep. The records are written by the real results writer."""

from __future__ import annotations

import itertools
import signal
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from orchestrator.results.manifest import build_manifest
from orchestrator.results.record_queue import RecordQueue
from orchestrator.results.records import AttemptRecord, read_records
from orchestrator.results.store import ResultsWriter
from orchestrator.run.attempt import CANCELLED_WITHIN
from orchestrator.run.jobs import Job
from orchestrator.run.scheduler import Interrupted, RunOptions, Scheduler
from orchestrator.run.supervisor import BridgeFailed
from orchestrator.status import Status
from orchestrator.suite.config import load_suite
from orchestrator.suite.plan import build_plan, pending
from tests.run.fake_executor import FakeClock, FakeExecutor, Step, factory

RUN = "r"
INFRA = Step(seconds=0.5, status=Status.INFRA_ERROR, reason="extension host did not start")
BUDGET = "budget: {max_cost_usd: 1.0}\n"


@dataclass
class Run:
    stop: str
    scheduler: Scheduler
    executor: FakeExecutor
    records: list[AttemptRecord]
    reported: list[AttemptRecord]


def _suite(tmp: Path, *, slots: int, prelaunch: int | None, repeats: int, retries: int, extra: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    ahead = "" if prelaunch is None else f", prelaunch: {prelaunch}"
    path = tmp / "suite.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: t
            target: {{kind: simulator, slots: {slots}{ahead}}}
            defaults: {{timeout: 30s, retries: {retries}, retry_backoff: 1s, retry_backoff_max: 3s}}
            repeats: {repeats}
            cases:
              - {{id: a, prompt: x}}
              - {{id: b, prompt: x}}
              - {{id: c, prompt: x}}
            """
        )
        + extra
    )
    return path


def _run(
    tmp: Path,
    script: Callable[[Job], Step],
    *,
    slots: int = 2,
    prelaunch: int | None = 0,
    repeats: int = 1,
    retries: int = 2,
    extra: str = "",
    on_poll: Callable[[FakeExecutor], None] = lambda e: None,
    answer_cancel: bool = True,
    raises: type[BaseException] | None = None,
    decide_at: int | None = None,
) -> Run:
    """One run of the suite (cases a, b, c) through the real Scheduler and results writer, on the fake
    executor; ``raises``: the run must end with this exception; ``decide_at``: ``on_record`` stops
    the run ``decided`` (as ``--stop-when-decided`` does) when that many records are reported."""
    suite = load_suite(
        _suite(tmp, slots=slots, prelaunch=prelaunch, repeats=repeats, retries=retries, extra=extra)
    )
    plan = build_plan(suite)
    manifest = build_manifest(
        suite,
        run_id=RUN,
        config_hash="h",
        argv=[],
        started_at=datetime.now(timezone.utc),
        attempts_planned=len(plan),
    )
    writer = ResultsWriter.create(tmp / "results" / RUN, manifest)
    clock = FakeClock()
    start, made = factory(clock, script, on_poll=on_poll, answer_cancel=answer_cancel)
    reported: list[AttemptRecord] = []

    def on_record(record: AttemptRecord) -> None:
        reported.append(record)
        if len(reported) == decide_at:
            scheduler.stop_starting("decided")

    scheduler = Scheduler(
        suite,
        pending(plan, writer.finished_keys()),
        writer,
        run_id=RUN,
        options=RunOptions(seed=7),
        executor=start,
        on_record=on_record,
        clock=clock,
    )
    stop = "raised"
    try:
        if raises is None:
            stop = scheduler.run()
        else:
            with pytest.raises(raises):
                scheduler.run()
    finally:
        writer.close()
    return Run(stop, scheduler, made[0], read_records(writer.run_dir / "results.jsonl"), reported)


def _by_case(script: dict[str, list[Step]]) -> Callable[[Job], Step]:
    """Each case's tries in turn (its last step repeats)."""

    def step(job: Job) -> Step:
        steps = script[job.attempt.key.case_id]
        return steps[min(job.tries, len(steps) - 1)]

    return step


def _ids(records: list[AttemptRecord]) -> list[tuple[str, int, str, bool]]:
    return [(r.case_id, r.attempt, r.status.value, r.final) for r in records]


def _started(done: Run) -> list[str]:
    return [job_id for _, job_id in done.executor.starts]


# ------------------------------------------------------------------------------ retries and backoff


def test_an_infra_error_is_retried_after_a_doubling_jittered_backoff_until_retries_run_out(
    tmp_path: Path,
) -> None:
    instant = Step(seconds=0.0)  # b and c never hold the one slot when a retry is due
    done = _run(tmp_path, _by_case({"a": [INFRA], "b": [instant], "c": [instant]}), slots=1, retries=4)
    assert done.stop == "finished"
    a = [r for r in done.records if r.case_id == "a"]
    # retries: 4 -> five tries, the last one final.
    assert [(r.attempt, r.final) for r in a] == [(1, False), (2, False), (3, False), (4, False), (5, True)]
    starts = [t for t, job_id in done.executor.starts if job_id.startswith("a")]
    gaps = [later - (earlier + 0.5) for earlier, later in itertools.pairwise(starts)]
    # retry_backoff 1s, doubling up to retry_backoff_max 3s, each x [0.5, 1.5); a due retry starts at the
    # scheduler's next look (after a poll of 0.2 s).
    for gap, base in zip(gaps, [1.0, 2.0, 3.0, 3.0], strict=True):
        assert 0.5 * base <= gap <= 1.5 * base + 0.2, (gaps, base)
    assert len(set(gaps)) == len(gaps)  # jittered
    assert done.reported == done.records  # every record reported once written, in order


def test_a_retry_takes_its_turn_behind_the_attempts_due_before_it(tmp_path: Path) -> None:
    flaky = [Step(seconds=0.1, status=Status.INFRA_ERROR, reason="x"), Step(seconds=1.0)]
    done = _run(tmp_path, _by_case({"a": flaky, "b": [Step(seconds=5.0)], "c": [Step()]}), slots=1)
    # a fails at 0.1; b takes the slot; when b ends (5.1) a's retry is long due, but c was due first.
    assert _started(done) == ["a__default__0#1", "b__default__0#1", "c__default__0#1", "a__default__0#2"]
    assert _ids(done.records) == [
        ("a", 1, "infra_error", False),
        ("b", 1, "completed", True),
        ("c", 1, "completed", True),
        ("a", 2, "completed", True),
    ]


def test_a_crashed_runner_is_a_harness_error_and_retried(tmp_path: Path) -> None:
    crash = Step(crash="KeyError: 'boom'")
    done = _run(tmp_path, _by_case({"a": [crash, Step()], "b": [Step()], "c": [Step()]}))
    a = [r for r in done.records if r.case_id == "a"]
    assert [(r.status, r.error_class, r.reason, r.error, r.final) for r in a] == [
        (Status.INFRA_ERROR, "harness", "worker error", "KeyError: 'boom'", False),
        (Status.COMPLETED, None, "", None, True),
    ]


def test_a_dead_worker_loses_its_attempts_which_are_recorded_and_retried(tmp_path: Path) -> None:
    # a's first try kills its worker while b runs beside it: both are lost, recorded, and retried.
    die = Step(seconds=0.5, die=True)
    done = _run(tmp_path, _by_case({"a": [die, Step()], "b": [Step(seconds=2.0)], "c": [Step()]}))
    assert done.stop == "finished"
    lost = [r for r in done.records if r.reason == "worker died"]
    assert sorted((r.case_id, r.attempt, r.error_class, r.final) for r in lost) == [
        ("a", 1, "infra", False),
        ("b", 1, "infra", False),
    ]
    assert {r.error for r in lost} == {"worker process 7 died (exit code -9)"}
    final = {r.case_id: (r.attempt, r.status) for r in done.records if r.final}
    assert final == {"a": (2, Status.COMPLETED), "b": (2, Status.COMPLETED), "c": (1, Status.COMPLETED)}


# --------------------------------------------------------------------------------------- slots


@pytest.mark.parametrize(("slots", "prelaunch"), [(1, 0), (2, 0), (2, 2), (3, 1)])
def test_never_more_than_slots_tasks_nor_more_than_slots_plus_prelaunch_jobs(
    tmp_path: Path, slots: int, prelaunch: int
) -> None:
    durations = [0.3, 1.7, 0.9, 2.2, 0.1, 1.1]

    def script(job: Job) -> Step:
        return Step(seconds=durations[(job.attempt.index * 7 + job.number) % len(durations)])

    done = _run(tmp_path, script, slots=slots, prelaunch=prelaunch, repeats=4)
    assert done.stop == "finished"
    assert len(done.records) == 12 and all(r.final for r in done.records)
    assert done.executor.most_running == slots
    assert done.executor.most_in_flight == slots + prelaunch
    assert done.executor.closed is False  # closed, gently


def test_without_prelaunch_attempts_start_in_plan_order_as_slots_free(tmp_path: Path) -> None:
    done = _run(tmp_path, lambda job: Step(seconds=1.0 + job.attempt.index % 2), repeats=2)
    plan = [f"{c}__default__{r}#1" for r in (0, 1) for c in "abc"]
    assert [job_id for _, job_id in done.executor.submitted] == plan
    assert _started(done) == plan


@pytest.mark.parametrize(("budget", "readied"), [("", 2), (BUDGET, 0)])
def test_the_simulator_readies_slots_attempts_ahead_by_default_but_none_under_a_budget(
    tmp_path: Path, budget: str, readied: int
) -> None:
    done = _run(tmp_path, lambda job: Step(seconds=1.0), prelaunch=None, repeats=2, extra=budget)
    assert done.executor.spare == readied
    assert done.executor.most_in_flight == 2 + readied


# -------------------------------------------------------------------------------------- budget


def test_a_spent_budget_stops_starting_attempts_but_lets_running_ones_finish(tmp_path: Path) -> None:
    # a (1 s, $1) and b (5 s) start together; at 1 s a has spent the budget: b runs on to its end.
    script = _by_case(
        {"a": [Step(seconds=1.0, cost=1.0)], "b": [Step(seconds=5.0, cost=0.25)], "c": [Step()]}
    )
    done = _run(tmp_path, script, repeats=2, extra=BUDGET)
    assert done.stop == "budget"
    assert not done.executor.cancelled
    assert _ids(done.records) == [("a", 1, "completed", True), ("b", 1, "completed", True)]
    assert [job_id for _, job_id in done.executor.submitted] == ["a__default__0#1", "b__default__0#1"]
    assert done.scheduler.skipped_budget == 4 and done.scheduler.pending == 4


def test_a_spent_budget_holds_back_readied_attempts_and_they_leave_no_record(tmp_path: Path) -> None:
    # One slot, two readied ahead (prelaunch set, so they are readied under a budget too), $0.5 each
    # against $0.9: the first two spend it; the third took the slot as the second's task ended, before
    # its cost was known (the overshoot the docs warn of); the fourth, readied meanwhile, is held back.
    budget = "budget: {max_cost_usd: 0.9}\n"
    script = lambda job: Step(seconds=0.3, cost=0.5)  # noqa: E731
    done = _run(tmp_path, script, slots=1, prelaunch=2, repeats=2, extra=budget)
    assert done.stop == "budget"
    assert done.executor.held and not done.executor.cancelled
    assert [r.status for r in done.records] == [Status.COMPLETED] * 3
    assert len(done.executor.submitted) == 4  # the fourth was readied, then came back unstarted
    assert len(done.executor.starts) == 3
    assert done.scheduler.skipped_budget == 3  # it, and the two never submitted


# ------------------------------------------------------------------------- --stop-when-decided


def _after_first_record(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeExecutor], None]:
    """An ``on_poll`` that, once the first attempt has ended (at 1 s), waits until the writing thread
    has written its record and queued it for the scheduler, so that it is reported at once, in fake
    time. (Its line in results.jsonl shows before that: a loaded machine can run a poll in between.)"""
    batches = threading.Semaphore(0)
    write = RecordQueue._write

    def write_and_signal(self: RecordQueue, items: Any) -> None:
        write(self, items)
        batches.release()  # the batch's records are in the queue the scheduler reads

    monkeypatch.setattr(RecordQueue, "_write", write_and_signal)
    seen = False

    def wait(executor: FakeExecutor) -> None:
        nonlocal seen
        if executor.clock.now >= 1.0 and not seen:
            assert batches.acquire(timeout=60), "the first record was not written within 60 s"
            seen = True

    return wait


def test_a_decision_stops_starting_attempts_but_lets_running_ones_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slots 2 and one readied ahead: a (1 s) and b, c (10 s) run; the decision comes with a's record;
    # at 1 s c had taken a's slot and a's second repeat was readied. b and c end at 10 and 11 s with
    # free slots and six attempts queued: none starts, the readied one comes back unstarted.
    script = lambda job: Step(seconds=1.0 if job.attempt.index == 0 else 10.0)  # noqa: E731
    on_poll = _after_first_record(monkeypatch)
    done = _run(tmp_path, script, prelaunch=1, repeats=3, decide_at=1, on_poll=on_poll)
    assert done.stop == "decided"
    assert done.executor.held and not done.executor.cancelled
    assert _started(done) == ["a__default__0#1", "b__default__0#1", "c__default__0#1"]
    assert max(t for t, _ in done.executor.starts) == 1.0  # nothing started after the decision
    # The running ones finished (not cancelled); the held one left no record: a resume runs it.
    assert _ids(done.records) == [
        ("a", 1, "completed", True),
        ("b", 1, "completed", True),
        ("c", 1, "completed", True),
    ]
    assert [job_id for _, job_id in done.executor.submitted][3:] == ["a__default__1#1"]
    assert done.executor.clock.now >= 11.0
    assert done.scheduler.pending == 6 and done.scheduler.skipped_budget == 0


def test_a_run_decided_before_it_starts_starts_nothing(tmp_path: Path) -> None:
    suite = load_suite(_suite(tmp_path, slots=2, prelaunch=0, repeats=1, retries=0, extra=""))
    plan = build_plan(suite)
    manifest = build_manifest(
        suite, run_id=RUN, config_hash="h", argv=[], started_at=datetime.now(timezone.utc), attempts_planned=3
    )
    writer = ResultsWriter.create(tmp_path / RUN, manifest)
    start, made = factory(FakeClock(), lambda job: Step())
    scheduler = Scheduler(suite, list(plan), writer, run_id=RUN, options=RunOptions(), executor=start)
    with pytest.raises(ValueError, match="interrupted"):
        scheduler.stop_starting("interrupted")  # a stop that cancels is not this one's to make
    scheduler.stop_starting("decided")  # a resume of a run decided already
    try:
        assert scheduler.run() == "decided"
    finally:
        writer.close()
    assert made[0].submitted == [] and scheduler.pending == 3
    assert read_records(writer.run_dir / "results.jsonl") == []


# ----------------------------------------------------------------------------- stops and breaker


def _interrupt_at(when: float, *, repeat: bool = False) -> Callable[[FakeExecutor], None]:
    def interrupt(executor: FakeExecutor) -> None:
        if executor.clock.now >= when and (repeat or not executor.cancelled):
            signal.raise_signal(signal.SIGINT)  # to the scheduler's own handler: it only sets a flag

    return interrupt


def test_ctrl_c_cancels_what_runs_and_records_it_as_cancelled_not_as_a_try(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    done = _run(tmp_path, lambda job: Step(seconds=3.0), prelaunch=1, on_poll=_interrupt_at(1.0))
    assert done.stop == "interrupted"
    assert done.executor.cancelled and done.executor.closed is False
    # The two running tasks are cancelled (non-final records, not retried: resume runs them); the
    # readied third comes back unstarted, without a record, still to run.
    assert _ids(done.records) == [("a", 1, "cancelled", False), ("b", 1, "cancelled", False)]
    assert done.scheduler.pending == 1
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_second_ctrl_c_stops_at_once_and_kills_the_executor(tmp_path: Path) -> None:
    interrupt = _interrupt_at(1.0, repeat=True)
    script = lambda job: Step(seconds=3.0)  # noqa: E731
    done = _run(tmp_path, script, answer_cancel=False, on_poll=interrupt, raises=Interrupted)
    assert done.executor.cancelled and done.executor.closed is True
    assert done.records == []
    assert done.scheduler.pending == 3  # a and b ran without a record, c never started


def test_a_stop_waits_for_cancelled_attempts_only_so_long(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = lambda job: Step(seconds=100.0)  # noqa: E731
    done = _run(tmp_path, script, answer_cancel=False, on_poll=_interrupt_at(1.0))
    assert done.stop == "interrupted"
    assert 1.0 + CANCELLED_WITHIN < done.executor.clock.now <= 1.0 + CANCELLED_WITHIN + 0.6
    assert "did not finish within" in caplog.text
    assert done.records == []
    assert done.scheduler.pending == 3  # the two whose cancel went unanswered, and c


def test_first_tries_failing_alike_trip_the_circuit_breaker(tmp_path: Path) -> None:
    # slots 1: the window is 2 first tries. a fails, b fails alike: c never starts, b is not retried.
    done = _run(tmp_path, lambda job: INFRA, slots=1)
    assert done.stop == "circuit_breaker"
    assert done.scheduler.tripped is not None and "extension host did not start" in done.scheduler.tripped
    assert _ids(done.records) == [("a", 1, "infra_error", False), ("b", 1, "infra_error", False)]
    assert done.scheduler.pending == 2  # c, and a's retry (queued before it tripped)


def test_the_circuit_breaker_cancels_what_still_runs(tmp_path: Path) -> None:
    # slots 2: the window is 4 first tries. c runs long while the first tries of a, b (both repeats) fail.
    script = _by_case({"a": [INFRA], "b": [INFRA], "c": [Step(seconds=10.0)]})
    done = _run(tmp_path, script, repeats=2)
    assert done.stop == "circuit_breaker" and done.executor.cancelled
    assert sorted((r.case_id, r.repeat, r.status.value) for r in done.records) == [
        ("a", 0, "infra_error"),
        ("a", 1, "infra_error"),
        ("b", 0, "infra_error"),
        ("b", 1, "infra_error"),
        ("c", 0, "cancelled"),
    ]


def test_the_circuit_breaker_is_disarmed_by_any_other_outcome_first(tmp_path: Path) -> None:
    other = Step(status=Status.INFRA_ERROR, reason="something else")
    done = _run(tmp_path, _by_case({"a": [INFRA, Step()], "b": [other, Step()], "c": [Step()]}), slots=1)
    assert done.stop == "finished" and done.scheduler.tripped is None
    assert {r.case_id: r.attempt for r in done.records if r.final} == {"a": 2, "b": 2, "c": 1}


# ------------------------------------------------------------------------------- bridge failures


def test_attempts_cut_short_by_a_bridge_restart_are_retried(tmp_path: Path) -> None:
    cut = Step(seconds=0.5, status=Status.INFRA_ERROR, reason="lost the event stream: bridge restarted")
    done = _run(tmp_path, _by_case({"a": [cut, Step()], "b": [cut, Step()], "c": [Step()]}))
    assert done.stop == "finished" and done.scheduler.tripped is None  # fewer than 2 x slots alike
    assert {r.case_id: r.attempt for r in done.records if r.final} == {"a": 2, "b": 2, "c": 1}


def test_a_bridge_that_keeps_dying_ends_the_run_with_every_record_written(tmp_path: Path) -> None:
    def fail(executor: FakeExecutor) -> None:
        if executor.clock.now >= 1.5:
            raise BridgeFailed("the bridge died 11 times within 60s")

    done = _run(tmp_path, lambda job: Step(seconds=1.0), on_poll=fail, raises=BridgeFailed)
    assert done.executor.closed is False  # closed, and the records flushed, on the way out
    assert _ids(done.records) == [("a", 1, "completed", True), ("b", 1, "completed", True)]
    assert done.reported == done.records
    # c was running when the bridge gave up: no record, so it is still to run (summary.json's pending)
    assert [job_id for _, job_id in done.executor.starts] == [
        "a__default__0#1",
        "b__default__0#1",
        "c__default__0#1",
    ]
    assert done.scheduler.pending == 1
