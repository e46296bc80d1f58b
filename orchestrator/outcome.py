"""The outcome rules: a pure state machine over one slot's task events after our StartNewTask.

The engine has no single "this task is over" signal that holds across versions (protocol section 7), so
the attempt's fate is read from several:

* the root is the first ``taskCreated`` after our StartNewTask whose id is new; events about older tasks
  (the ``taskUnfocused``/``taskAborted`` of the task our command replaced) are never attributed;
* the task tree is the root plus every task created on the slot after it (subtasks of ``new_task``);
* ``completed`` at the first of ``taskCompleted(root, …, isSubtask false)`` (engines <= 3.50) or the
  root's non-partial ``ask: completion_result`` (>= 3.51 never send taskCompleted over IPC); the attempt
  then ends at ``taskIdle(root)`` or after a short grace, so that the throttled final token usage arrives;
* a root ``taskAborted`` is final only if, within a settle window, no child task is created and the root
  is not re-created as active: delegation aborts the parent and re-creates it with the same id;
* asks are the earliest signals (taskInteractive/taskIdle/taskResumable lag them by 2 s): an unanswered
  ask past a limit is ``stuck``; ``ask: api_req_failed`` (no auto-approval) or consecutive
  ``say: api_req_retry_delayed`` waits past a limit (auto-approval retries forever) are ``api_error``;
* a timer of the agent's (the wall clock, ``ask_timeout``, ``idle_timeout``) that runs out while the task
  tree's latest message is an ``api_req_retry_delayed`` wait is ``api_error`` too: the task was waiting
  on the model API, not working (the engine waits 5, 10, 20 s ... between retries, so a short timeout
  ends an outage before ``api_retry_limit`` can call it).
* the bridge's StartNewTask reply names the root (:meth:`OutcomeTracker.task_started`): then events of
  other tasks until the root's ``taskCreated`` are never attributed, whatever the slot replays;
* an outcome that leaves the task running (timeout, stuck, api_error) is followed by CancelTask; a host
  that sends no event within ``cancel_timeout`` of it (or never gets it) is alive but silent, stopped or
  wedged: the agent never had its chance, and the verdict becomes ``infra_error`` "extension host
  unresponsive".

No clock is read here: every call passes ``now`` (seconds, any monotonic origin), so recordings replay
with their own timestamps and tests are exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ipc_bridge.roo.events import (
    Message,
    TaskCompleted,
    TaskEvent,
    TaskTokenUsageUpdated,
    TaskToolFailed,
    id_only_event,
    parse_task_event,
)
from ipc_bridge.roo.shapes import IDLE_ASKS, INTERACTIVE_ASKS, RESUMABLE_ASKS
from orchestrator.status import AttemptOutcome, Metrics, OutcomeLimits, Status
from orchestrator.tally import Tally, TaskUsage
from orchestrator.verdict import HostDisconnected, StartFailed, StreamLost, Unresponsive, decide

_Timer = Literal["timeout", "start", "abort", "ask", "idle"]

# Asks that wait for a person. Others (command_output while a command runs, ...) mean work goes on.
_WAITING_ASKS = INTERACTIVE_ASKS | IDLE_ASKS | RESUMABLE_ASKS


@dataclass
class _Ask:
    ts: int
    ask: str
    since: float


@dataclass
class _Task:
    usage: TaskUsage = field(default_factory=TaskUsage)
    seen: set[int] = field(default_factory=set)
    created: int = 0
    pending: _Ask | None = None
    retry_waits: int = 0


def _first_line(text: str | None, limit: int = 300) -> str:
    line = (text or "").split("<retry_timer>")[0].strip().splitlines()
    return line[0][:limit] if line else ""


class OutcomeTracker:
    """Follows one attempt on one slot. Create it when StartNewTask is sent, give it the reply's task id
    (:meth:`task_started`); then :meth:`feed` every event of the slot in order and call :meth:`tick` at
    :meth:`next_deadline` (or whenever) until :attr:`done`. When :attr:`wants_cancel`, send CancelTask and
    say so (:meth:`cancel_sent`), then go on until :attr:`settled`; read :meth:`result`.

    ``previous_tasks``: ids of tasks the slot already held (never taken as the root).
    """

    def __init__(
        self, now: float, limits: OutcomeLimits | None = None, *, previous_tasks: Iterable[str] = ()
    ) -> None:
        self.limits = limits or OutcomeLimits()
        self.started_at = now
        self._old: set[str] = set(previous_tasks)
        self._root: str | None = None
        self._root_created_at: float | None = None
        self._tasks: dict[str, _Task] = {}
        self._last_progress = now
        self._abort_since: float | None = None
        self._status: Status | None = None
        self._reason = ""
        self._decided_at: float | None = None
        self._grace_until: float | None = None
        self._ended_at: float | None = None
        self._tally = Tally()
        self._waiting_on_api: tuple[str, str] | None = None
        """(task id, first line of the failure) while the tree's latest message is a retry wait."""
        self._cancel_deadline: float | None = None
        """While CancelTask waits for the host's answer: when the host counts as unresponsive."""
        self._cancel_state: str | None = None
        """None (no CancelTask), "sent", "answered" or "unanswered"."""
        self._error: str | None = None

    # ------------------------------------------------------------------------------------ state

    @property
    def root(self) -> str | None:
        return self._root

    @property
    def status(self) -> Status | None:
        """The decided outcome, possibly before :attr:`done` (completed waits for the final usage)."""
        return self._status

    @property
    def done(self) -> bool:
        return self._ended_at is not None

    def attributed(self, task_id: str | None) -> bool:
        return task_id is not None and task_id in self._tasks

    @property
    def wants_cancel(self) -> bool:
        """The outcome leaves the task running: CancelTask is due (then :meth:`cancel_sent`)."""
        return self._status is not None and self._status.task_left_running and self._cancel_state is None

    @property
    def awaiting_cancel(self) -> bool:
        """CancelTask went out and the host has not answered it yet."""
        return self._cancel_state == "sent"

    @property
    def settled(self) -> bool:
        """Nothing left to do: the outcome is decided and no CancelTask is due or waiting for its answer."""
        return self.done and not self.wants_cancel and not self.awaiting_cancel

    @property
    def host_responsive(self) -> bool:
        """False once the host let a CancelTask go unanswered."""
        return self._cancel_state != "unanswered"

    # ----------------------------------------------------------------------------------- inputs

    def task_started(self, task_id: str, now: float) -> None:
        """The bridge's StartNewTask reply: ``task_id`` (the first new ``taskCreated`` after the command,
        as the bridge saw it) is the root. Give it before the slot's events: until the root's
        ``taskCreated``, events of other tasks (the slot's history, replayed) are not the attempt's."""
        if self._root is not None:
            if self._root != task_id:
                raise ValueError(f"the root is {self._root} already; the reply names {task_id}")
            return
        self.tick(now)
        self._old.discard(task_id)
        self._root = task_id
        self._tasks[task_id] = _Task()

    def feed_raw(self, data: dict[str, Any], now: float) -> bool:
        """:meth:`feed` for a raw TaskEvent dict. An event that says no more than its name and task
        (taskCreated, taskIdle, ...) is taken without its model: nothing else of it is read."""
        simple = id_only_event(data)
        if simple is not None:
            return self._take(simple[0], simple[1], None, now)
        return self.feed(parse_task_event(data), now)

    def feed(self, event: TaskEvent, now: float) -> bool:
        """Take one event of the slot; returns whether it belongs to this attempt.

        Events after :attr:`done` still update the metrics (the final token usage may come late)
        but never change the outcome."""
        return self._take(getattr(event, "eventName", ""), event.task_id, event, now)

    def _take(self, name: str, tid: str | None, event: TaskEvent | None, now: float) -> bool:
        """:meth:`feed` of an event named ``name`` about task ``tid``; ``event`` is its model, None for
        an event of :data:`~ipc_bridge.roo.events.ID_ONLY_EVENTS` (whose rules read no more)."""
        self.tick(now)
        if self._cancel_state == "sent":
            self._cancel_state = "answered"  # any event at all: the host is alive and reacting
        if tid is None:
            return False
        if self._root is None:
            if name == "taskCreated" and tid not in self._old:
                self._root = tid
                self._root_created_at = now
                self._tasks[tid] = _Task()
            else:
                self._old.add(tid)
                return False
        elif self._root_created_at is None:  # named by the reply; its taskCreated is still to come
            if tid != self._root:
                self._old.add(tid)
                return False
            if name == "taskCreated":
                self._root_created_at = now
        elif name == "taskCreated" and tid not in self._tasks:
            if tid in self._old:
                return False
            self._add_child(tid)
        elif name in ("taskSpawned", "taskDelegated") and event is not None:
            child = _second_str(event)
            if tid in self._tasks and child is not None and child not in self._tasks:
                self._add_child(child)
        if tid not in self._tasks:
            return False
        self._tally.events += 1
        self._last_progress = now
        self._apply(name, tid, event, now)
        return True

    def tick(self, now: float) -> None:
        """Let time pass: decides timeouts, settles aborts, ends the completion grace, and finds a host
        that let CancelTask go unanswered."""
        if (
            self._cancel_deadline is not None
            and self._cancel_state == "sent"
            and now >= self._cancel_deadline
        ):
            self._unresponsive(self._cancel_deadline)
        if self.done:
            return
        if self._status is Status.COMPLETED:
            assert self._grace_until is not None
            if now >= self._grace_until:
                self._ended_at = self._grace_until
            return
        timer = self._first_timer()
        if timer is not None and timer[0] <= now:
            at, kind, tid = timer
            status, reason = self._timer_verdict(kind, tid)
            if status in (Status.TIMEOUT, Status.STUCK) and self._waiting_on_api is not None:
                status, reason = Status.API_ERROR, self._outage_reason(reason)
            self._decide(status, reason, at)
            self._ended_at = at

    def force(self, ending: StartFailed | StreamLost | HostDisconnected, now: float) -> None:
        """End the attempt from outside (no reply to StartNewTask, the stream lost, the host's connection
        down), with :func:`~orchestrator.verdict.decide`'s status and reason. A decided outcome is kept."""
        if self._status is None:
            verdict = decide(ending)
            self._decide(verdict.status, verdict.reason, now)
        if not self.done:
            self._ended_at = now

    def cancel_sent(self, now: float) -> None:
        """CancelTask (for :attr:`wants_cancel`) was delivered at ``now``: the host has ``cancel_timeout``
        to answer with any event. Events fed before this call do not count: they predate the command."""
        if self.wants_cancel:
            self._cancel_state = "sent"
            self._cancel_deadline = now + self.limits.cancel_timeout

    def cancel_undelivered(self, now: float) -> None:
        """CancelTask (for :attr:`wants_cancel`) could not be delivered (no reply): unresponsive at once."""
        if self.wants_cancel:
            self._unresponsive(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` could next change something (None once settled)."""
        if self.awaiting_cancel:
            return self._cancel_deadline
        if self.done:
            return None
        if self._status is Status.COMPLETED:
            return self._grace_until
        timer = self._first_timer()
        return None if timer is None else timer[0]

    # ---------------------------------------------------------------------------------- outputs

    def result(self) -> AttemptOutcome:
        if self._status is None or self._decided_at is None or self._ended_at is None:
            raise RuntimeError("the attempt is not over yet")
        return AttemptOutcome(
            status=self._status,
            reason=self._reason,
            task_id=self._root,
            decided_at=self._decided_at,
            ended_at=self._ended_at,
            metrics=self.metrics(),
            error=self._error,
        )

    def metrics(self) -> Metrics:
        first = None if self._root_created_at is None else self._root_created_at - self.started_at
        return self._tally.metrics({tid: task.usage for tid, task in self._tasks.items()}, self._root, first)

    # -------------------------------------------------------------------------------- internals

    def _outage_reason(self, timer: str) -> str:
        assert self._waiting_on_api is not None
        tid, failure = self._waiting_on_api
        waits = self._tasks[tid].retry_waits
        times = "time" if waits == 1 else "times"
        return (
            f"the model API failed {waits} {times} in a row and the task was waiting to retry it when "
            f"the timer ran out ({timer}): {failure}"
        )

    def _unresponsive(self, at: float) -> None:
        # The rule of the module docstring: a silent host overrides what the agent's events said.
        assert self._status is not None
        verdict = decide(Unresponsive(self._status, self.limits.cancel_timeout))
        self._status, self._reason, self._error = verdict.status, verdict.reason, verdict.error
        self._decided_at = at
        self._cancel_state = "unanswered"
        if self._ended_at is None:
            self._ended_at = at

    def _add_child(self, tid: str) -> None:
        self._tasks[tid] = _Task()
        # a child starting is what makes a root abort a delegation rather than an end
        self._abort_since = None

    def _decide(self, status: Status, reason: str, at: float) -> None:
        if self._status is not None:
            return
        self._status = status
        self._reason = reason
        self._decided_at = at
        if status is Status.COMPLETED:
            self._grace_until = at + self.limits.completion_grace

    def _finish(self, status: Status, reason: str, now: float) -> None:
        if self._status is None:
            self._decide(status, reason, now)
            self._ended_at = now

    def _first_timer(self) -> tuple[float, _Timer, str | None] | None:
        """The running timer that runs out first (of those that run out together, the first in this
        order: the wall clock, the start, an abort's settling, the tree's asks, idleness): when, which
        one and, for an ask, whose. Called at every event and deadline, so nothing is worded here: the
        reason is written only when the timer decides (:meth:`_timer_verdict`)."""
        lim = self.limits
        first: tuple[float, _Timer, str | None] | None = None
        if lim.timeout is not None:
            first = (self.started_at + lim.timeout, "timeout", None)
        if self._root is None:
            at = self.started_at + lim.start_timeout
            if first is None or at < first[0]:
                first = (at, "start", None)
        if self._abort_since is not None:
            at = self._abort_since + lim.abort_settle
            if first is None or at < first[0]:
                first = (at, "abort", None)
        for tid, task in self._tasks.items():
            if task.pending is not None:
                at = task.pending.since + lim.ask_timeout
                if first is None or at < first[0]:
                    first = (at, "ask", tid)
        if lim.idle_timeout is not None:
            at = self._last_progress + lim.idle_timeout
            if first is None or at < first[0]:
                first = (at, "idle", None)
        return first

    def _timer_verdict(self, kind: _Timer, tid: str | None) -> tuple[Status, str]:
        """The status and reason of timer ``kind`` (of task ``tid``'s ask) running out now."""
        lim = self.limits
        if kind == "timeout":
            return Status.TIMEOUT, f"no outcome within {lim.timeout:g} s"
        if kind == "start":
            return (
                Status.INFRA_ERROR,
                f"no task was created within {lim.start_timeout:g} s of StartNewTask "
                "(the host dropped the command: a wrong-typed configuration value does that)",
            )
        if kind == "abort":
            return Status.ABORTED, "the root task was aborted and neither resumed nor delegated"
        if kind == "ask":
            assert tid is not None
            pending = self._tasks[tid].pending
            assert pending is not None
            who = "the root task" if tid == self._root else f"subtask {tid}"
            return Status.STUCK, f"{who} waited {lim.ask_timeout:g} s on an unanswered ask: {pending.ask}"
        return Status.STUCK, f"no event from the task for {lim.idle_timeout:g} s"

    def _apply(self, name: str, tid: str, event: TaskEvent | None, now: float) -> None:
        task = self._tasks[tid]
        is_root = tid == self._root
        if name == "message" and isinstance(event, Message):
            self._message(tid, task, event, now)
        elif name == "taskTokenUsageUpdated" and isinstance(event, TaskTokenUsageUpdated):
            _, usage, tools = event.payload
            task.usage.reported(usage, tools)
        elif name == "taskCompleted":
            if isinstance(event, TaskCompleted):
                _, usage, tools, flag = event.payload
                task.usage.reported(usage, tools)
                is_subtask = flag.isSubtask
            else:
                is_subtask = _subtask_flag(event)
            if is_root and not is_subtask:
                self._decide(Status.COMPLETED, "taskCompleted for the root task", now)
        elif name == "taskCreated":
            task.created += 1
            if task.created > 1:
                task.usage.recreated()
        elif name == "taskAborted":
            task.pending = None
            if is_root and self._status is None:
                self._abort_since = now
        elif name in ("taskActive", "taskStarted"):
            if is_root:
                self._abort_since = None
        elif name == "taskAskResponded":
            task.pending = None
        elif name in ("taskInteractive", "taskIdle"):
            if is_root and name == "taskIdle" and self._status is Status.COMPLETED:
                if not self.done:
                    self._ended_at = now
            elif task.pending is None and self._status is None:
                # the ask itself was missed (or never sent): the status event stands in for it
                task.pending = _Ask(ts=-1, ask=name, since=now)
        elif name == "taskResumable":
            if is_root:
                self._finish(Status.ABORTED, "the root task was aborted (it is resumable)", now)
        elif name == "taskToolFailed" and isinstance(event, TaskToolFailed):
            _, tool, error = event.payload
            self._tally.tool_failed(tid, tool, error)

    def _message(self, tid: str, task: _Task, event: Message, now: float) -> None:
        msg = event.payload[0].message
        partial = msg.partial is True
        if partial:
            self._tally.partial_updates += 1
        new = msg.ts not in task.seen
        if new:
            task.seen.add(msg.ts)
            self._tally.messages += 1
            if task.pending is not None and task.pending.ts != msg.ts:
                task.pending = None  # the task moved on past its ask
        is_root = tid == self._root
        if msg.type == "say" and msg.say == "api_req_retry_delayed":
            # Its countdown updates the same message each second: the latest state until a new message.
            self._waiting_on_api = (tid, _first_line(msg.text))
        elif new:
            self._waiting_on_api = None  # the tree moved on (a request went through, an ask, ...)
        if msg.type == "say":
            say = msg.say
            if say == "api_req_retry_delayed":
                if new:
                    task.retry_waits += 1
                    self._tally.api_retries += 1
                    if task.retry_waits > self.limits.api_retry_limit:
                        self._finish(
                            Status.API_ERROR,
                            f"the model API failed {task.retry_waits} times in a row: {_first_line(msg.text)}",
                            now,
                        )
                return
            if new:
                task.retry_waits = 0
                if say == "api_req_started":
                    self._tally.api_requests += 1
            if say == "error" and not partial:
                self._tally.error(tid, msg.ts, msg.text)
            elif say == "completion_result" and not partial and is_root:
                self._tally.completion = msg.text
            return
        if partial:
            return
        ask = msg.ask or ""
        if ask == "completion_result" and is_root:
            self._decide(Status.COMPLETED, "the root task asked completion_result", now)
        elif ask == "api_req_failed":
            self._finish(Status.API_ERROR, f"the model API request failed: {_first_line(msg.text)}", now)
        elif ask == "resume_task" and is_root:
            self._finish(Status.ABORTED, "the root task was aborted (it asks resume_task)", now)
        elif ask in _WAITING_ASKS and (task.pending is None or task.pending.ts != msg.ts):
            task.pending = _Ask(ts=msg.ts, ask=ask, since=now)


def _second_str(event: TaskEvent) -> str | None:
    payload: Any = getattr(event, "payload", None)
    if isinstance(payload, (list, tuple)) and len(payload) > 1 and isinstance(payload[1], str):
        return payload[1]
    return None


def _subtask_flag(event: TaskEvent | None) -> bool:
    """``isSubtask`` of a taskCompleted whose payload did not validate (a newer engine's shape)."""
    payload: Any = getattr(event, "payload", None)
    if isinstance(payload, (list, tuple)):
        for item in payload[1:]:
            if isinstance(item, dict) and isinstance(item.get("isSubtask"), bool):
                return bool(item["isSubtask"])
    return False
