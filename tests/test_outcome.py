"""The outcome rules, fed by every real recording."""

from __future__ import annotations

import pytest

from ipc_bridge.roo.events import Message, parse_task_event
from orchestrator.outcome import OutcomeTracker
from orchestrator.status import OutcomeLimits, Status
from tests.conftest import load_recording, recording_names
from tests.outcome_events import LIMITS, is_msg, name_of, replay, t_of

# expected outcome of every recording: status, tokens in/out, subtasks
EXPECTED: dict[str, tuple[Status, int, int, int]] = {
    "api-error-3.52.1.jsonl": (Status.API_ERROR, 0, 0, 0),
    "api-error-429-3.52.1.jsonl": (Status.API_ERROR, 0, 0, 0),
    "api-error-noauto-3.52.1.jsonl": (Status.API_ERROR, 0, 0, 0),
    "cancel-3.52.1.jsonl": (Status.ABORTED, 0, 0, 0),
    "complete-3.50.4.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "complete-3.52.1.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "followup-3.50.4.jsonl": (Status.STUCK, 1234, 56, 0),
    "followup-3.52.1.jsonl": (Status.STUCK, 1234, 56, 0),
    "long-stream-3.52.1.jsonl": (Status.COMPLETED, 1234, 56, 0),
    "long-stream-fast-3.52.1.jsonl": (Status.COMPLETED, 1234, 56, 0),
    "queries-3.52.1.jsonl": (Status.INFRA_ERROR, 0, 0, 0),
    "queries-listener-3.52.1.jsonl": (Status.INFRA_ERROR, 0, 0, 0),
    "resume-3.52.1.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "start-while-streaming-3.52.1.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "subtask-3.52.1.jsonl": (Status.COMPLETED, 4936, 224, 1),
    "tool-failure-3.50.4.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "tool-failure-3.52.1.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "tool-failure-nomatch-3.50.4.jsonl": (Status.COMPLETED, 2468, 112, 0),
    "tool-failure-nomatch-3.52.1.jsonl": (Status.COMPLETED, 2468, 112, 0),
}


def test_every_recording_has_an_expected_outcome() -> None:
    assert sorted(EXPECTED) == recording_names()


@pytest.mark.parametrize("name", recording_names())
def test_recording_outcome(name: str) -> None:
    status, tokens_in, tokens_out, subtasks = EXPECTED[name]
    rep = replay(name)
    result = rep.tracker.result()
    assert result.status is status, result.reason
    assert result.metrics.tokens_in == tokens_in
    assert result.metrics.tokens_out == tokens_out
    assert result.metrics.subtasks == subtasks
    assert result.metrics.cost_usd == 0  # the stub model is free
    assert result.decided_at <= result.ended_at
    if status is not Status.INFRA_ERROR:
        # the root is the first task created after StartNewTask
        assert result.task_id == rep.created_ids()[0]
        assert result.metrics.task_ids[0] == result.task_id
        assert result.metrics.time_to_first_event_s is not None
        assert 0 <= result.metrics.time_to_first_event_s < 0.1


@pytest.mark.parametrize("name", recording_names())
def test_raw_events_decide_as_their_models_do(name: str) -> None:
    # feed_raw takes taskCreated, taskIdle & co. without their model: same attribution, same deadlines
    # at every step, same outcome and metrics as feeding every event's model.
    rows = [r for r in load_recording(name) if r["dir"] == "in" and r["msg"]["type"] == "TaskEvent"]
    now = start = rows[0]["t"] / 1000 - 0.01 if rows else 0.0
    by_model, raw = OutcomeTracker(start, LIMITS), OutcomeTracker(start, LIMITS)
    for row in rows:
        now, data = row["t"] / 1000, row["msg"]["data"]
        assert raw.feed_raw(data, now) == by_model.feed(parse_task_event(data), now)
        assert raw.next_deadline() == by_model.next_deadline()
        assert raw.status == by_model.status
    for tracker in (raw, by_model):
        tracker.tick(now + 600)
    assert raw.result() == by_model.result()


@pytest.mark.parametrize("name", ["complete-3.52.1.jsonl", "complete-3.50.4.jsonl"])
def test_complete_usage_tools_and_text(name: str) -> None:
    result = replay(name).tracker.result()
    m = result.metrics
    assert (m.tokens_in, m.tokens_out, m.cache_reads, m.cache_writes, m.context_tokens) == (
        2468,
        112,
        0,
        0,
        1290,
    )
    assert {k: (v.attempts, v.failures) for k, v in m.tool_usage.items()} == {
        "write_to_file": (1, 0),
        "attempt_completion": (1, 0),
    }
    assert m.completion == "Created hello.txt"
    assert m.api_requests == 2
    assert m.partial_updates > 0 and m.messages > 5


def test_complete_352_ends_at_the_ask_and_waits_for_idle() -> None:
    rep = replay("complete-3.52.1.jsonl")
    result = rep.tracker.result()
    ask_t = t_of(rep, lambda e: is_msg(e, "ask", "completion_result"))
    idle_t = t_of(rep, lambda e: name_of(e) == "taskIdle")
    usage_t = max(t for t, e, _ in rep.events if name_of(e) == "taskTokenUsageUpdated")
    assert result.decided_at == ask_t
    assert result.ended_at == idle_t  # after the final token usage
    assert usage_t < idle_t
    assert "completion_result" in result.reason


def test_complete_350_ends_at_task_completed_plus_grace() -> None:
    rep = replay("complete-3.50.4.jsonl")
    result = rep.tracker.result()
    completed_t = t_of(rep, lambda e: name_of(e) == "taskCompleted")
    assert result.decided_at == completed_t
    assert "taskCompleted" in result.reason
    # no taskIdle in this recording: the grace ends it
    assert result.ended_at == pytest.approx(completed_t + LIMITS.completion_grace)


def test_subtask_completes_after_delegation_with_both_tasks_summed() -> None:
    rep = replay("subtask-3.52.1.jsonl")
    result = rep.tracker.result()
    parent, child = rep.created_ids()[0], rep.created_ids()[1]
    assert result.status is Status.COMPLETED
    assert result.task_id == parent
    assert result.metrics.task_ids == [parent, child]
    aborted_root_t = t_of(rep, lambda e: name_of(e) == "taskAborted" and e.task_id == parent)
    assert result.decided_at > aborted_root_t + 1  # the parent's abort was a delegation, not the end
    tools = {k: (v.attempts, v.failures) for k, v in result.metrics.tool_usage.items()}
    assert tools == {"new_task": (1, 0), "write_to_file": (1, 0), "attempt_completion": (2, 0)}
    # the parent was created twice (delegation re-creates it with the same id)
    assert rep.created_ids().count(parent) == 2


def test_subtask_with_a_too_short_settle_window_would_be_aborted() -> None:
    # the child starts ~107 ms after the parent's abort: the settle window is what tells them apart
    rep = replay("subtask-3.52.1.jsonl", OutcomeLimits(abort_settle=0.05))
    result = rep.tracker.result()
    assert result.status is Status.ABORTED
    child_t = t_of(rep, lambda e: name_of(e) == "taskCreated" and e.task_id == rep.created_ids()[1])
    assert result.decided_at < child_t


def test_cancel_root_is_the_new_task_not_the_old_one() -> None:
    rep = replay("cancel-3.52.1.jsonl")
    result = rep.tracker.result()
    old = next(e.task_id for _, e, _ in rep.events if name_of(e) == "taskAborted")
    assert old != result.task_id
    assert old not in result.metrics.task_ids
    assert all(not attributed for _, e, attributed in rep.events if e.task_id == old)
    assert result.status is Status.ABORTED
    # decided at the resume_task ask that follows CancelTask, before taskResumable
    assert result.decided_at == t_of(rep, lambda e: is_msg(e, "ask", "resume_task"))


def test_start_while_streaming_old_task_is_never_attributed() -> None:
    rep = replay("start-while-streaming-3.52.1.jsonl")
    result = rep.tracker.result()
    rows = load_recording("start-while-streaming-3.52.1.jsonl")
    old = next(
        r["msg"]["data"]["payload"][0]
        for r in rows
        if r["msg"].get("data", {}).get("eventName") == "taskCreated"
    )
    assert old != result.task_id
    old_events = [(e, a) for _, e, a in rep.events if e.task_id == old]
    assert [name_of(e) for e, _ in old_events] == ["taskUnfocused", "taskAborted"]
    assert not any(a for _, a in old_events)
    assert result.status is Status.COMPLETED
    assert result.metrics.task_ids == [result.task_id]


@pytest.mark.parametrize("name", ["followup-3.52.1.jsonl", "followup-3.50.4.jsonl"])
def test_followup_is_stuck_after_the_ask_limit(name: str) -> None:
    rep = replay(name)
    result = rep.tracker.result()
    ask_t = t_of(rep, lambda e: is_msg(e, "ask", "followup"))
    interactive_t = t_of(rep, lambda e: name_of(e) == "taskInteractive")
    assert result.status is Status.STUCK
    assert "followup" in result.reason
    assert result.decided_at == pytest.approx(ask_t + LIMITS.ask_timeout)
    assert result.decided_at < interactive_t + 0.1  # the ask, not the status event 2 s later, starts it
    assert result.status.task_left_running


def test_followup_with_a_long_ask_limit_ends_as_aborted_by_the_cancel() -> None:
    rep = replay("followup-3.52.1.jsonl", OutcomeLimits(ask_timeout=60))
    assert rep.tracker.result().status is Status.ABORTED


@pytest.mark.parametrize("name", ["api-error-3.52.1.jsonl", "api-error-429-3.52.1.jsonl"])
def test_api_retry_waits_past_the_limit_are_api_error(name: str) -> None:
    rep = replay(name)
    result = rep.tracker.result()
    waits = [
        t
        for t, e, _ in rep.events
        if is_msg(e, "say", "api_req_retry_delayed", final=False)
        and isinstance(e, Message)
        and e.payload[0].action == "created"
    ]
    assert len(waits) == 3
    assert result.status is Status.API_ERROR
    assert result.status.is_infra and result.status.task_left_running
    assert result.decided_at == waits[2]  # the third wait is one more than the limit of 2
    assert result.metrics.api_retries == 3
    assert ("500" in result.reason) or ("429" in result.reason)


def test_api_retry_limit_not_reached_runs_until_the_cancel() -> None:
    rep = replay("api-error-3.52.1.jsonl", OutcomeLimits(api_retry_limit=5))
    # CancelTask at 30 s: the root is aborted and asks resume_task
    assert rep.tracker.result().status is Status.ABORTED


def test_api_error_without_auto_approval_is_decided_at_the_ask() -> None:
    rep = replay("api-error-noauto-3.52.1.jsonl")
    result = rep.tracker.result()
    assert result.status is Status.API_ERROR
    assert result.decided_at == t_of(rep, lambda e: is_msg(e, "ask", "api_req_failed"))
    assert "HTTP 500" in result.reason


def test_tool_failure_missing_file_counts_in_usage_and_errors() -> None:
    m = replay("tool-failure-3.52.1.jsonl").tracker.result().metrics
    assert m.tool_usage["apply_diff"].failures == 1
    assert m.tool_failures == []  # no taskToolFailed for a missing file
    assert len(m.errors) == 1 and "does not exist" in m.errors[0]


@pytest.mark.parametrize("name", ["tool-failure-nomatch-3.52.1.jsonl", "tool-failure-nomatch-3.50.4.jsonl"])
def test_tool_failure_nomatch_counts_the_tool_failed_event(name: str) -> None:
    result = replay(name).tracker.result()
    assert result.status is Status.COMPLETED
    m = result.metrics
    assert [f.tool for f in m.tool_failures] == ["apply_diff"]
    assert m.tool_failures[0].task_id == result.task_id
    assert m.tool_usage["apply_diff"].failures == 1


def test_long_stream_counts_partials() -> None:
    m = replay("long-stream-3.52.1.jsonl").tracker.result().metrics
    assert m.partial_updates >= 100
    assert m.completion == "long stream done"


def test_resume_later_events_do_not_change_the_outcome() -> None:
    rep = replay("resume-3.52.1.jsonl")
    result = rep.tracker.result()
    first_idle = t_of(rep, lambda e: name_of(e) == "taskIdle")
    assert result.status is Status.COMPLETED
    assert result.ended_at == first_idle
    assert rep.events[-1][0] > first_idle + 4  # the ResumeTask re-creation came after


def test_queries_without_a_task_are_an_infra_error_at_the_start_timeout() -> None:
    result = replay("queries-3.52.1.jsonl").tracker.result()
    assert result.status is Status.INFRA_ERROR
    assert result.task_id is None
    assert result.decided_at == LIMITS.start_timeout
    assert result.metrics.events == 0
