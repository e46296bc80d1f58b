"""Helpers of the outcome tests: recordings replayed through the tracker, and synthetic events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipc_bridge.roo.events import Message, TaskEvent, make_event, parse_task_event
from orchestrator.outcome import OutcomeTracker
from orchestrator.status import OutcomeLimits
from tests.conftest import load_recording

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
