"""The outcome rules that take inputs besides the slot's events: the root named by the bridge's
StartNewTask reply, and a host that lets the CancelTask after a timeout go unanswered."""

from __future__ import annotations

import pytest

from ipc_bridge.roo.events import make_event, parse_task_event
from orchestrator.outcome import OutcomeTracker
from orchestrator.status import OutcomeLimits, Status
from orchestrator.verdict import UNRESPONSIVE
from tests.conftest import load_recording
from tests.outcome_events import msg, started

# ---------------------------------------------------------------------------------- the root


def test_the_reply_names_the_root_whatever_the_slot_replays_first() -> None:
    """The slot's stream starts at its first event: a task the host ran before our StartNewTask (here
    the recording's first task, replaced by the second command) comes first. Left to the events, the
    tracker takes that task as the root and the real one as its subtask; the reply says otherwise."""
    rows = load_recording("start-while-streaming-3.52.1.jsonl")
    events = [
        (row["t"] / 1000, parse_task_event(row["msg"]["data"]))
        for row in rows
        if row["dir"] == "in" and row["msg"]["type"] == "TaskEvent"
    ]
    created = [e.task_id for _, e in events if getattr(e, "eventName", "") == "taskCreated"]
    earlier, ours = created[0], created[-1]
    assert earlier != ours

    def outcome(seed: bool) -> tuple[Status, str | None, list[str]]:
        tracker = OutcomeTracker(0.0)
        if seed:
            tracker.task_started(ours, 0.0)
        for now, event in events:
            tracker.feed(event, now)
        tracker.tick(events[-1][0] + 1000)
        result = tracker.result()
        return result.status, result.task_id, result.metrics.task_ids

    # What deriving the root alone gets wrong: the task that completed is taken for a subtask
    # whose completion_result ask nobody answers.
    assert outcome(seed=False) == (Status.STUCK, earlier, [earlier, ours])
    assert outcome(seed=True) == (Status.COMPLETED, ours, [ours])


def test_a_seeded_root_counts_from_its_own_task_created() -> None:
    tracker = OutcomeTracker(10.0, OutcomeLimits(start_timeout=5))
    tracker.task_started("r", 10.5)
    tracker.tick(20)  # the reply said the task exists: no "no task was created" timer
    assert not tracker.done
    assert not tracker.feed(make_event("taskCreated", "old"), 21)
    started(tracker, at=22)
    assert tracker.feed(make_event("taskCreated", "child"), 23)  # after the root's: a subtask
    assert tracker.metrics().task_ids == ["r", "child"]
    assert tracker.metrics().time_to_first_event_s == 12.0


def test_a_reply_naming_another_root_than_the_events_is_refused() -> None:
    tracker = OutcomeTracker(0.0)
    started(tracker, "a")
    tracker.task_started("a", 1.0)  # the same: nothing to do
    with pytest.raises(ValueError, match="the root is a already"):
        tracker.task_started("b", 1.0)


# ----------------------------------------------------------------------- an unanswered cancel


def timed_out(cancel_timeout: float = 10.0) -> OutcomeTracker:
    tracker = OutcomeTracker(0.0, OutcomeLimits(timeout=60, cancel_timeout=cancel_timeout))
    tracker.task_started("r", 0.1)
    started(tracker)
    tracker.tick(60)
    assert tracker.status is Status.TIMEOUT and tracker.done
    return tracker


def test_an_outcome_that_leaves_the_task_running_wants_a_cancel() -> None:
    tracker = timed_out()
    assert tracker.wants_cancel and not tracker.settled
    assert tracker.next_deadline() is None  # nothing happens until the cancel is sent


def test_a_host_silent_after_cancel_is_unresponsive_not_the_agents_timeout() -> None:
    tracker = timed_out()
    tracker.feed(msg("r", 5, "say", "text", "late"), 60.5)  # before the command: no answer to it
    tracker.cancel_sent(61)
    assert tracker.awaiting_cancel and tracker.next_deadline() == 71
    tracker.tick(70.9)
    assert tracker.status is Status.TIMEOUT and tracker.host_responsive
    tracker.tick(71)
    result = tracker.result()
    assert tracker.settled and not tracker.host_responsive
    assert (result.status, result.reason) == (Status.INFRA_ERROR, UNRESPONSIVE)
    assert result.error == "timeout, then no event within 10s of CancelTask"
    tracker.feed(make_event("taskAborted", "r"), 72)  # too late to count
    assert tracker.result().status is Status.INFRA_ERROR


def test_any_event_after_cancel_is_an_answer() -> None:
    tracker = timed_out()
    tracker.cancel_sent(61)
    tracker.feed(make_event("taskAborted", "someone-else"), 65)
    tracker.tick(100)
    result = tracker.result()
    assert tracker.settled and tracker.host_responsive
    assert (result.status, result.error) == (Status.TIMEOUT, None)


def test_a_cancel_that_cannot_be_delivered_is_unresponsive_at_once() -> None:
    tracker = timed_out(cancel_timeout=3)
    tracker.cancel_undelivered(62)
    result = tracker.result()
    assert tracker.settled and (result.status, result.decided_at) == (Status.INFRA_ERROR, 62)
    assert result.error == "timeout, then no event within 3s of CancelTask"


def test_an_ended_task_wants_no_cancel() -> None:
    tracker = OutcomeTracker(0.0)
    tracker.task_started("r", 0.1)
    started(tracker)
    tracker.feed(msg("r", 9, "ask", "completion_result"), 2)
    tracker.tick(10)
    assert tracker.result().status is Status.COMPLETED
    assert tracker.settled and not tracker.wants_cancel
    tracker.cancel_sent(11)  # not asked for: ignored
    assert not tracker.awaiting_cancel
