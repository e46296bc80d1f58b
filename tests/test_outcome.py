"""The outcome rules, fed by every real recording and by synthetic sequences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ipc_bridge.roo.events import Message, TaskEvent, make_event, parse_task_event
from orchestrator.outcome import OutcomeTracker
from orchestrator.status import OutcomeLimits, Status
from tests.conftest import load_recording, recording_names

# Short limits so that the followup and API-error recordings (a few seconds to 30 s long) reach them.
LIMITS = OutcomeLimits(api_retry_limit=2, ask_timeout=2.0)


@dataclass
class Replay:
    tracker: OutcomeTracker
    start: float
    events: list[tuple[float, TaskEvent, bool]] = field(default_factory=list)
    """Every TaskEvent after our StartNewTask: (seconds, event, attributed)."""

    def created_ids(self) -> list[str]:
        return [e.task_id for _, e, _ in self.events if name_of(e) == "taskCreated" and e.task_id]


def replay(name: str, limits: OutcomeLimits = LIMITS, *, settle_after: float = 30.0) -> Replay:
    """Feed a recording's `in` events after its (last) StartNewTask, with its own timestamps as the
    clock; then let time pass so the pending timers fire."""
    rows = load_recording(name)
    starts = [
        i
        for i, r in enumerate(rows)
        if r["dir"] == "out" and r["msg"]["data"].get("commandName") == "StartNewTask"
    ]
    first = starts[-1] + 1 if starts else 0
    t0 = rows[starts[-1]]["t"] / 1000 if starts else 0.0
    out = Replay(OutcomeTracker(t0, limits), t0)
    now = t0
    for row in rows[first:]:
        if row["dir"] != "in" or row["msg"]["type"] != "TaskEvent":
            continue
        now = row["t"] / 1000
        event = parse_task_event(row["msg"]["data"])
        out.events.append((now, event, out.tracker.feed(event, now)))
    if not out.tracker.done:
        out.tracker.tick(now + settle_after)
    return out


def name_of(event: TaskEvent) -> str:
    name: str = getattr(event, "eventName", "")
    return name


def t_of(rep: Replay, pred: Any) -> float:
    """Time of the first event matching ``pred``."""
    return next(t for t, e, _ in rep.events if pred(e))


def is_msg(e: TaskEvent, kind: str, name: str, *, final: bool = True) -> bool:
    if not isinstance(e, Message):
        return False
    m = e.payload[0].message
    return getattr(m, kind, None) == name and m.type == kind and (not final or m.partial is not True)


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


# ---------------------------------------------------------------------------------- synthetic


def msg(
    task: str,
    ts: int,
    kind: str,
    name: str,
    text: str = "",
    *,
    partial: bool | None = None,
    action: str = "created",
) -> TaskEvent:
    message: dict[str, Any] = {"ts": ts, "type": kind, kind: name, "text": text}
    if partial is not None:
        message["partial"] = partial
    return make_event("message", {"taskId": task, "action": action, "message": message})


def usage(
    task: str,
    tokens_in: int,
    tokens_out: int,
    cost: float,
    tools: dict[str, Any] | None = None,
    *,
    context: int = 100,
) -> TaskEvent:
    totals = {
        "totalTokensIn": tokens_in,
        "totalTokensOut": tokens_out,
        "totalCost": cost,
        "contextTokens": context,
    }
    return make_event("taskTokenUsageUpdated", task, totals, tools or {})


def started(tracker: OutcomeTracker, root: str = "r", at: float = 0.1) -> None:
    tracker.feed(make_event("taskCreated", root), at)
    tracker.feed(make_event("taskStarted", root), at)


def test_timeout_by_tick() -> None:
    tr = OutcomeTracker(100.0, OutcomeLimits(timeout=60))
    started(tr, at=100.1)
    tr.feed(msg("r", 1, "say", "text", "thinking", partial=True), 101)
    assert tr.next_deadline() == 160.0
    tr.tick(159.99)
    assert not tr.done and tr.status is None
    tr.tick(160.5)
    result = tr.result()
    assert result.status is Status.TIMEOUT
    assert result.decided_at == 160.0
    assert result.status.task_left_running
    assert tr.next_deadline() is None


def test_root_abort_without_recreation_is_aborted_after_the_settle_window() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(abort_settle=5))
    started(tr)
    tr.feed(make_event("taskAborted", "r"), 1.0)
    assert tr.next_deadline() == 6.0
    tr.tick(5.9)
    assert not tr.done
    # re-created but not active (as CancelTask does): still aborted at the end of the window
    tr.feed(make_event("taskCreated", "r"), 2.0)
    tr.feed(make_event("taskFocused", "r"), 2.0)
    tr.tick(6.0)
    result = tr.result()
    assert result.status is Status.ABORTED
    assert result.decided_at == 6.0


def test_root_abort_then_reactivation_is_not_the_end() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(abort_settle=5))
    started(tr)
    tr.feed(make_event("taskAborted", "r"), 1.0)
    tr.feed(make_event("taskCreated", "r"), 2.0)
    tr.feed(make_event("taskActive", "r"), 2.1)
    tr.tick(10.0)
    assert tr.status is None
    tr.feed(msg("r", 5, "ask", "completion_result"), 11.0)
    assert tr.status is Status.COMPLETED and not tr.done
    tr.feed(make_event("taskIdle", "r"), 12.0)
    assert tr.done and tr.result().ended_at == 12.0


def test_task_completed_path_of_350_engines() -> None:
    tr = OutcomeTracker(0.0)
    started(tr)
    tr.feed(make_event("taskCreated", "child"), 1.0)
    done_child = {"totalTokensIn": 10, "totalTokensOut": 5, "totalCost": 0.05, "contextTokens": 10}
    tr.feed(make_event("taskCompleted", "child", done_child, {}, {"isSubtask": True}), 2.0)
    assert tr.status is None  # a subtask's completion is not the attempt's
    totals = {"totalTokensIn": 100, "totalTokensOut": 50, "totalCost": 0.25, "contextTokens": 90}
    tools = {"write_to_file": {"attempts": 2, "failures": 1}}
    tr.feed(make_event("taskCompleted", "r", totals, tools, {"isSubtask": False}), 3.0)
    assert tr.status is Status.COMPLETED and not tr.done
    assert tr.next_deadline() == 3.0 + OutcomeLimits().completion_grace
    tr.feed(msg("r", 9, "say", "completion_result", "all done"), 3.01)
    tr.tick(6.0)
    result = tr.result()
    assert result.ended_at == 6.0
    assert result.metrics.cost_usd == pytest.approx(0.30)
    assert (result.metrics.tokens_in, result.metrics.tokens_out) == (110, 55)
    assert result.metrics.context_tokens == 90
    assert result.metrics.tool_usage["write_to_file"].failures == 1
    assert result.metrics.completion == "all done"


def test_cost_sums_last_cumulative_usage_per_task_and_survives_rehydration() -> None:
    tr = OutcomeTracker(0.0)
    started(tr)
    tr.feed(usage("r", 100, 10, 0.10, {"read_file": {"attempts": 3, "failures": 0}}), 1.0)
    tr.feed(usage("r", 200, 20, 0.20, {"read_file": {"attempts": 3, "failures": 0}}), 1.5)
    tr.feed(make_event("taskAborted", "r"), 2.0)
    tr.feed(make_event("taskCreated", "c"), 2.1)
    tr.feed(usage("c", 50, 5, 0.05), 3.0)
    tr.feed(make_event("taskAborted", "c"), 3.1)
    tr.feed(make_event("taskCreated", "r"), 3.2)
    tr.feed(usage("r", 150, 15, 0.15), 3.3)  # rehydrated lower: spent money stays spent
    tr.feed(make_event("taskActive", "r"), 3.3)
    tr.feed(usage("r", 300, 30, 0.30, {"read_file": {"attempts": 2, "failures": 1}}), 4.0)
    m = tr.metrics()
    assert m.cost_usd == pytest.approx(0.35)
    assert (m.tokens_in, m.tokens_out) == (350, 35)
    # ToolUsage restarts at {} in a re-created task: incarnations add up
    assert (m.tool_usage["read_file"].attempts, m.tool_usage["read_file"].failures) == (5, 1)
    assert m.subtasks == 1 and m.task_ids == ["r", "c"]


def test_unanswered_tool_ask_is_stuck_answered_is_not() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(ask_timeout=10))
    started(tr)
    tr.feed(msg("r", 2, "ask", "tool", '{"tool":"readFile"}', partial=True), 1.0)
    assert tr.next_deadline() == 300.0  # a partial ask waits for nobody yet
    tr.feed(msg("r", 2, "ask", "tool", '{"tool":"readFile"}', partial=False, action="updated"), 1.1)
    tr.feed(msg("r", 2, "ask", "tool", '{"tool":"readFile"}', partial=False, action="updated"), 1.2)
    assert tr.next_deadline() == pytest.approx(11.1)
    tr.feed(make_event("taskAskResponded", "r"), 2.0)
    assert tr.next_deadline() == 300.0
    tr.feed(msg("r", 3, "ask", "command", "rm -rf /"), 3.0)
    tr.tick(12.9)
    assert not tr.done
    tr.tick(13.0)
    result = tr.result()
    assert result.status is Status.STUCK and "command" in result.reason


def test_a_running_command_is_not_a_waiting_ask() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(ask_timeout=10))
    started(tr)
    tr.feed(msg("r", 2, "ask", "command", "pytest"), 1.0)
    tr.feed(make_event("taskAskResponded", "r"), 1.1)
    tr.feed(msg("r", 3, "ask", "command_output", ""), 1.2)
    tr.tick(100.0)
    assert tr.status is None


def test_a_new_message_after_an_ask_clears_it() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(ask_timeout=10))
    started(tr)
    tr.feed(msg("r", 2, "ask", "followup", "?"), 1.0)
    tr.feed(msg("r", 3, "say", "text", "answered by auto-approval", partial=True), 5.0)
    tr.tick(20.0)
    assert tr.status is None


def test_api_retry_count_resets_when_a_request_goes_through() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(api_retry_limit=1))
    started(tr)
    tr.feed(msg("r", 1, "say", "api_req_retry_delayed", "500 <retry_timer>5</retry_timer>", partial=True), 1)
    tr.feed(msg("r", 2, "say", "api_req_started", "{}"), 7)
    tr.feed(msg("r", 3, "say", "api_req_retry_delayed", "500 <retry_timer>5</retry_timer>", partial=True), 8)
    assert tr.status is None
    tr.feed(
        msg("r", 4, "say", "api_req_retry_delayed", "500 <retry_timer>10</retry_timer>", partial=True), 14
    )
    assert tr.status is Status.API_ERROR and tr.done
    assert "retry_timer" not in tr.result().reason
    assert tr.metrics().api_retries == 3


def test_idle_timeout_when_enabled() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(idle_timeout=30))
    started(tr, at=1.0)
    tr.feed(msg("r", 1, "say", "text", "x", partial=True), 10.0)
    assert tr.next_deadline() == 40.0
    tr.tick(40.0)
    assert tr.result().status is Status.STUCK
    assert "no event" in tr.result().reason


def test_previous_tasks_are_never_the_root() -> None:
    tr = OutcomeTracker(0.0, previous_tasks=("old",))
    assert not tr.feed(make_event("taskCreated", "old"), 0.01)
    assert tr.root is None
    assert tr.feed(make_event("taskCreated", "new"), 0.02)
    assert tr.root == "new"
    assert not tr.feed(make_event("taskCreated", "old"), 0.03)  # an old task coming back is not a child
    assert tr.metrics().subtasks == 0


def test_force_sets_infra_error_but_keeps_a_decided_completion() -> None:
    tr = OutcomeTracker(0.0)
    started(tr)
    tr.force(Status.INFRA_ERROR, "host died", 5.0)
    assert tr.result().status is Status.INFRA_ERROR and tr.result().reason == "host died"
    tr2 = OutcomeTracker(0.0)
    started(tr2)
    tr2.feed(msg("r", 5, "ask", "completion_result"), 2.0)
    tr2.force(Status.INFRA_ERROR, "host died", 3.0)
    assert tr2.result().status is Status.COMPLETED and tr2.result().ended_at == 3.0


def test_events_after_done_update_metrics_only() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(timeout=10))
    started(tr)
    tr.tick(10.0)
    assert tr.result().status is Status.TIMEOUT
    assert tr.feed(usage("r", 7, 3, 0.01), 11.0)
    tr.feed(msg("r", 5, "ask", "completion_result"), 12.0)
    assert tr.result().status is Status.TIMEOUT
    assert tr.result().metrics.tokens_in == 7


def test_result_before_the_end_raises() -> None:
    tr = OutcomeTracker(0.0)
    started(tr)
    with pytest.raises(RuntimeError):
        tr.result()


def test_an_event_whose_payload_does_not_validate_still_counts() -> None:
    # a newer engine adding a tuple member must not hide the root
    event = parse_task_event({"eventName": "taskCreated", "payload": ["r", {"extra": 1}]})
    assert type(event).__name__ == "UnknownEvent"
    tr = OutcomeTracker(0.0)
    assert tr.feed(event, 0.1)
    assert tr.root == "r"
    odd_done = {"eventName": "taskCompleted", "payload": ["r", {"bad": 1}, {}, {"isSubtask": False}]}
    tr.feed(parse_task_event(odd_done), 1.0)
    assert tr.status is Status.COMPLETED


def test_feed_raw_and_events_without_task_ids() -> None:
    tr = OutcomeTracker(0.0)
    assert not tr.feed_raw({"eventName": "modesResponse", "payload": [[]]}, 0.1)
    assert tr.feed_raw({"eventName": "taskCreated", "payload": ["r"]}, 0.2)
    assert tr.root == "r"


def test_a_worker_loop_driven_by_next_deadline() -> None:
    """What the worker does: wait until next_deadline for an event, tick, repeat."""
    tr = OutcomeTracker(0.0, OutcomeLimits(timeout=100, start_timeout=30))
    script = [(0.5, make_event("taskCreated", "r")), (1.0, msg("r", 1, "ask", "followup", "?"))]
    now = 0.0
    while not tr.done:
        deadline = tr.next_deadline()
        assert deadline is not None and deadline > now
        if script and script[0][0] <= deadline:
            now, event = script.pop(0)
            tr.feed(event, now)
        else:
            now = deadline
            tr.tick(now)
    assert tr.result().status is Status.STUCK
    assert tr.result().decided_at == 61.0


# ------------------------------------------------------------------- timers during an API outage


def test_a_timeout_while_waiting_on_api_retries_is_api_error_not_the_agents_timeout() -> None:
    # The real engine's waits (5 s, then 10 s): a 10 s timeout runs out during the second, before
    # api_retry_limit (5 here) could call the outage.
    rep = replay("api-error-3.52.1.jsonl", OutcomeLimits(api_retry_limit=5, timeout=10))
    result = rep.tracker.result()
    assert result.status is Status.API_ERROR, result.reason
    assert result.status.is_infra and result.status.task_left_running
    assert result.decided_at == pytest.approx(rep.start + 10)
    assert "failed 2 times in a row" in result.reason
    assert "no outcome within 10 s" in result.reason and "500" in result.reason


def test_a_timeout_after_the_api_recovered_is_the_agents_timeout() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(timeout=30, api_retry_limit=5))
    started(tr)
    tr.feed(msg("r", 1, "say", "api_req_retry_delayed", "500 boom\n<retry_timer>5</retry_timer>"), 1)
    tr.feed(msg("r", 1, "say", "api_req_retry_delayed", "500 boom", action="updated"), 2)
    tr.feed(msg("r", 2, "say", "api_req_started", "{}"), 7)
    tr.feed(msg("r", 3, "say", "text", "working", partial=True), 8)
    tr.tick(31)
    assert tr.result().status is Status.TIMEOUT


@pytest.mark.parametrize(
    ("limits", "status_event"),
    [
        (OutcomeLimits(idle_timeout=20, api_retry_limit=5), None),
        (OutcomeLimits(ask_timeout=5, api_retry_limit=5), "taskInteractive"),
    ],
    ids=["idle_timeout", "ask_timeout"],
)
def test_stuck_timers_while_a_subtask_waits_on_api_retries_are_api_error(
    limits: OutcomeLimits, status_event: str | None
) -> None:
    tr = OutcomeTracker(0.0, limits)
    started(tr)
    tr.feed(make_event("taskCreated", "child"), 1)
    tr.feed(msg("child", 5, "say", "api_req_retry_delayed", "429 Too Many Requests\nslow down"), 2)
    tr.feed(msg("child", 6, "say", "api_req_retry_delayed", "429 Too Many Requests"), 3)
    if status_event is not None:
        tr.feed(make_event(status_event, "child"), 4)
    tr.tick(100)
    result = tr.result()
    assert result.status is Status.API_ERROR, result.reason
    assert "failed 2 times in a row" in result.reason and "429 Too Many Requests" in result.reason


def test_an_ask_after_the_retries_is_stuck_not_an_outage() -> None:
    tr = OutcomeTracker(0.0, OutcomeLimits(ask_timeout=5, api_retry_limit=5))
    started(tr)
    tr.feed(msg("r", 1, "say", "api_req_retry_delayed", "500"), 1)
    tr.feed(msg("r", 2, "ask", "followup", "which file?"), 2)
    tr.tick(100)
    assert tr.result().status is Status.STUCK
