"""The outcome rules, fed by synthetic sequences."""

from __future__ import annotations

import pytest

from ipc_bridge.roo.events import make_event, parse_task_event
from orchestrator.outcome import OutcomeTracker
from orchestrator.status import OutcomeLimits, Status
from orchestrator.verdict import HostDisconnected, StreamLost
from tests.outcome_events import msg, replay, started, usage


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
    tr.force(HostDisconnected(), 5.0)
    assert tr.result().status is Status.INFRA_ERROR and tr.result().reason == "extension host disconnected"
    assert tr.result().ended_at == 5.0
    tr2 = OutcomeTracker(0.0)
    started(tr2)
    tr2.feed(msg("r", 5, "ask", "completion_result"), 2.0)
    tr2.force(StreamLost("bridge restarted"), 3.0)
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
