"""The scripted agent: replays, for one task, the event sequences the real engine sends (protocol notes 7).

A script becomes a list of *turns*, one model request each: an optional followup question, one turn per
tool call (``files`` first, then ``tools``), one per subtask delegation, then the final turn, which
carries the outcome. The first turn streams the script's ``text``. ``duration`` is spread evenly over the
turns, and each turn's share over the steps it plans (:mod:`ipc_bridge.simulator.pace`), so the agent's own
work takes ``duration`` whatever its turns do; waits on outside things (an answer, a subtask, a command
that runs, the write delay, API retries) come on top. The seed jitters each step by +-20 % (``jitter``), so
timings vary between seeds and never within one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ipc_bridge.redaction import Redactor
from ipc_bridge.simulator.failures import api_error, lost_provider
from ipc_bridge.simulator.host_link import MODE_NAMES, HostLink
from ipc_bridge.simulator.pace import (
    COMMAND_STEPS,
    DELEGATE_STEPS,
    FOLLOWUP_STEPS,
    TOOL_STEPS,
    Pace,
    final_steps,
    turn_steps,
)
from ipc_bridge.simulator.requests import Request, share_of
from ipc_bridge.simulator.script import Script, ToolCall
from ipc_bridge.simulator.task import Clock, TaskInstance, Tokens
from ipc_bridge.simulator.tools import ToolStep, dumps, prepare, run_command

_NO_REQUEST_END = {"hang", "crash", "freeze", "api_error", "api_error_noauto"}


class Agent:
    """Runs one script for one task id (and, recursively, its subtasks) on one clock."""

    def __init__(
        self,
        host: HostLink,
        script: Script,
        *,
        engine: str,
        seed: int | str,
        workspace: Path,
        clock: Clock,
        auto_approval: bool = True,
        redactor: Redactor | None = None,
        no_profile: bool = False,
    ) -> None:
        self.host = host
        self.no_profile = no_profile
        """StartNewTask's configuration named no provider profile (``currentApiConfigName: ""``): a
        re-created parent then has nothing to restore and keeps its provider, on 3.50 too
        (docs/delegation-3.50.md)."""
        self.redactor = redactor
        """Secrets of the task's configuration, redacted out of a command's real output."""
        self.script = script
        self.engine = script.engine or engine
        self.seed = script.seed if script.seed is not None else seed
        self.workspace = Path(script.workspace) if script.workspace else workspace
        self.clock = clock
        self.auto_approval = auto_approval
        self.rng = random.Random(f"agent:{self.seed}")
        self.turns: list[tuple[str, Any]] = []
        if script.outcome == "followup":
            self.turns.append(("followup", None))
        self.turns += [("tool", call) for call in script.tool_calls()]
        self.turns += [("delegate", sub) for sub in script.subtasks]
        self.turns.append(("final", script.outcome))
        self.budget = script.duration * host.time_scale / len(self.turns)
        """Each turn's share of ``duration`` (seconds, scaled)."""
        self._pace = self._plan(())
        self._requests = len(self.turns) - (1 if script.outcome in _NO_REQUEST_END else 0)
        if script.outcome == "followup":
            # the turns after the question are not planned: they happen only if it is answered. The
            # script's tokens are what the question's request shows; later requests add as much again
            self._requests = 1
        self._done_requests = 0

    # ------------------------------------------------------------------------------- plumbing

    def new_instance(
        self, task_id: str, tokens: Tokens | None = None, parent_id: str | None = None
    ) -> TaskInstance:
        return TaskInstance(
            task_id,
            emit=self.host.emit,
            next_ts=self.host.next_ts,
            clock=self.clock,
            usage_window=self.host.usage_window,
            tokens=tokens,
            parent_id=parent_id,
        )

    def _factor(self) -> float:
        jitter = self.script.jitter
        return self.rng.uniform(1 - jitter, 1 + jitter)

    def _plan(self, steps: tuple[str, ...]) -> Pace:
        """The next turn's steps: together they take the turn's share of ``duration``."""
        return Pace(self.budget, steps, self._factor)

    async def _sleep(self, step: str, part: float = 1.0) -> None:
        """The agent's own work: ``part`` of the current turn's planned ``step``."""
        await self.clock.sleep(self._pace.seconds(step, part))

    def _count(self, inst: TaskInstance, request: Request) -> None:
        """The request's tokens count in the task's usage (its message may show them later)."""
        if request.shown is None:
            request.shown = self._count_request(inst)

    def _reach(self, inst: TaskInstance, request: Request, point: str) -> None:
        """The turn reaches ``point``: the request's token update shows here if it is due by now."""
        if not request.due(point):
            return
        self._count(inst, request)
        request.done = True
        inst.update(request.ts, text=request.shown)

    def _count_request(self, inst: TaskInstance) -> str:
        """A request ends: its tokens count in the task's usage. Returns the api_req_started text that
        shows them; the engine sends that update only when the stream's usage chunk has been handled,
        which may come after the task moved on (or never, when the task is aborted first)."""
        share = share_of(self.script, self._done_requests, self._requests)
        self._done_requests += 1
        inst.add_request(share.tokens_in, share.tokens_out, share.cache_writes, share.cache_reads, share.cost)
        return share.shown()

    async def _stream(
        self,
        inst: TaskInstance,
        text: str,
        step: str,
        *,
        finish: bool = True,
        request: Request | None = None,
    ) -> None:
        n = max(1, min(self.script.chunks, len(text)))
        cuts = [len(text) * k // n for k in range(n + 1)]
        ts = inst.say("text", text[: cuts[1]], partial=True)
        for k in range(2, n + 1):
            await self._sleep(step, 1 / n)
            inst.update(ts, text=text[: cuts[k]], partial=True)
        if finish:
            if request is not None:
                # the usage drain finishes while the engine still finalizes the text
                self._reach(inst, request, "text")
            await self._sleep(step, 1 / n)
            inst.update(ts, text=text, partial=False)

    # ---------------------------------------------------------------------------------- task

    def start_at_once(self, inst: TaskInstance, prompt: str) -> None:
        """A task starts (7.1) with no lag: created, focused, the prompt, zero usage, started."""
        inst.event("taskCreated")
        inst.event("taskFocused")
        inst.say("text", prompt)
        inst.event("taskStarted")

    async def start(self, inst: TaskInstance, prompt: str) -> None:
        """A task starts (7.1): created, focused, the prompt, zero usage (leading throttle), started,
        spread over the engine's lag."""
        lag = self.host.start_lag()
        if not lag:
            self.start_at_once(inst, prompt)
            return
        inst.event("taskCreated")
        inst.event("taskFocused")
        await self.clock.sleep(lag / 3)
        inst.say("text", prompt)
        await self.clock.sleep(lag - lag / 3)
        inst.event("taskStarted")

    async def work(self, inst: TaskInstance, *, subtask: bool = False) -> bool:
        """Play the turns. Returns True when a subtask finished (its parent resumes), False when the
        task ended otherwise; a root that completed never returns (it idles until aborted)."""
        current: TaskInstance | None = inst
        for index, (kind, arg) in enumerate(self.turns):
            assert current is not None
            text = self.script.text if index == 0 else None
            if kind == "final":
                if self.script.final_text is not None:
                    text = self.script.final_text
                return await self._final(current, text, arg, subtask)
            usage_at = (
                arg.usage_at if kind == "tool" else self.script.usage_at if kind == "followup" else None
            )
            if kind == "tool" and arg.text:
                text = arg.text
            step = prepare(arg, self.workspace) if kind == "tool" else None
            self._pace = self._plan(turn_steps(self._branch_steps(kind, step), text=bool(text)))
            req = Request(current.say("api_req_started", dumps({"apiProtocol": "openai"})), usage_at)
            await self._sleep("latency")
            if text:
                await self._stream(current, text, "text", request=req)
            if step is not None:
                await self._tool(current, req, arg, step, after_text=bool(text))
            elif kind == "followup":
                await self._followup(current, req, after_text=bool(text))
            else:
                current = await self._delegate(current, req, arg, index)
                if current is None:
                    return False
            self._pace.finish()
            if kind == "delegate" and not self._keeps_provider():
                await lost_provider(current, self.script.error, self.host.time_scale)
        raise AssertionError("a script always ends with a final turn")

    @staticmethod
    def _branch_steps(kind: str, step: ToolStep | None) -> tuple[str, ...]:
        """The steps of a turn after its text, by what the turn does."""
        if step is not None:
            return COMMAND_STEPS if step.ask == "command" and step.failure is None else TOOL_STEPS
        return FOLLOWUP_STEPS if kind == "followup" else DELEGATE_STEPS

    async def _tool(
        self, inst: TaskInstance, req: Request, call: ToolCall, step: ToolStep, *, after_text: bool
    ) -> None:
        if step.ask == "command" and step.failure is None:
            await self._command(inst, req, call, after_text=after_text)
        elif step.ask is not None:
            req.resolve("ask")
            ts = inst.ask(step.ask, step.partial_text, partial=True)
            self._reach(inst, req, "ask")
            await self._sleep("tool_ask")
            inst.update(ts, text=step.final_text, partial=False, isProtected=False)
            inst.update(ts, isAnswered=True)
            inst.event("taskAskResponded")
            failed = self._apply(inst, step.apply)
            inst.count_tool(step.name, failed=failed)
            if step.output is not None and not failed:
                inst.say("command_output", step.output)
            self._reach(inst, req, "end")
            if step.apply is not None and not failed:
                # the engine waits writeDelayMs (1 s by default) after a file edit, for diagnostics,
                # before its next request: real runs show ~1.03 s there, not the model's latency
                await self.clock.sleep(self.script.write_delay * self.host.time_scale)
        else:
            # a call that fails before asking reports the failure while the stream ends: the request's
            # token update follows the error (cli-runs tool-fail)
            req.resolve("end")
            await self._sleep("tool_ask")
            self._reach(inst, req, "ask")
            if step.failure in ("say_error", "both"):
                inst.say("error", step.error)
            if step.failure in ("tool_failed", "both"):
                inst.event("taskToolFailed", step.name, step.error)
            self._reach(inst, req, "end")
            inst.count_tool(step.name, failed=True)
        await self._sleep("next_request")

    async def _command(self, inst: TaskInstance, req: Request, call: ToolCall, *, after_text: bool) -> None:
        """execute_command (cli-runs write-ok): ``ask:command``, answered; ``ask:command_output``, answered;
        then ``say:command_output`` (streamed on 3.52, whole on 3.50) and the request's token update."""
        command = call.command or ""
        req.resolve("end")
        self._reach(inst, req, "ask")
        if after_text:
            inst.ask("command", command)
        else:
            ts = inst.ask("command", command, partial=True)
            inst.update(ts, partial=False)
        await self._sleep("command_ask")
        inst.event("taskAskResponded")
        inst.ask("command_output", "")
        await self._sleep("command_output_ask")
        inst.event("taskAskResponded")
        output = call.output
        if call.runs:
            output = await run_command(
                call.command or "", self.workspace, call.run_timeout, self.clock, redactor=self.redactor
            )
        await self._sleep("command_output")
        if self.engine == "3.52":
            ts = inst.say("command_output", output, partial=True)
            inst.update(ts, partial=False)
        else:
            inst.say("command_output", output)
        self._reach(inst, req, "end")
        inst.count_tool("execute_command")
        await self._sleep("command_done")

    @staticmethod
    def _apply(inst: TaskInstance, apply: Callable[[], None] | None) -> bool:
        """Run a tool's effect on the workspace; a failing write shows as say:error. True if it failed."""
        if apply is None:
            return False
        try:
            apply()
        except OSError as exc:
            inst.say("error", f"Error writing file: {exc}")
            return True
        return False

    async def _followup(self, inst: TaskInstance, req: Request, *, after_text: bool) -> None:
        spec = self.script.followup
        question = {"question": spec.question, "suggest": [{"answer": s, "mode": None} for s in spec.suggest]}
        req.resolve("end")
        self._reach(inst, req, "ask")
        if after_text:
            inst.ask("followup", dumps(question))
        else:
            # a question that opens the model's answer is shown while it streams: partial, then whole
            ts = inst.ask("followup", dumps(question), partial=True)
            inst.update(ts, partial=False)
        self._reach(inst, req, "end")
        inst.count_tool("ask_followup_question")
        interactive = False
        if inst.queue:
            # a message queued while the task worked answers the question at once
            answer = str(inst.queue.pop(0)["text"])
            inst.event("queuedMessagesUpdated", list(inst.queue))
        else:
            token = object()

            def become_interactive() -> None:
                nonlocal interactive
                interactive = True
                inst.status("taskInteractive")

            self.clock.schedule(self.clock.now + self.host.status_delay, token, become_interactive)
            inst.answer = asyncio.get_running_loop().create_future()
            try:
                answer = await self.clock.wait(inst.answer)
            finally:
                inst.answer = None
                self.clock.cancel(token)
        inst.event("taskAskResponded")
        if interactive:
            inst.event("taskActive")
        inst.say("user_feedback", answer)
        await self._sleep("next_request")

    async def _delegate(
        self, parent: TaskInstance, req: Request, sub: Script, index: int
    ) -> TaskInstance | None:
        """new_task (7.3): the parent is aborted, the child runs, the parent is re-created (same id)."""
        prompt = sub.prompt or f"Subtask {index} of {parent.id}"
        ask = {"tool": "newTask", "mode": MODE_NAMES.get(sub.mode, sub.mode), "content": prompt, "todos": []}
        ts = parent.ask("tool", dumps(ask), isProtected=False)
        # the request's tokens count, but the parent is aborted before its api_req_started shows them
        self._count(parent, req)
        await self._sleep("delegate_ask")
        parent.update(ts, isAnswered=True)
        parent.event("taskAskResponded")
        parent.count_tool("new_task")
        parent.event("taskUnfocused")
        parent.throttle.flush()
        parent.event("taskAborted")
        parent.aborted = True
        parent.end()
        await self._sleep("delegate_start")

        child_agent = Agent(
            self.host,
            sub,
            engine=self.engine,
            seed=f"{self.seed}/{index}",
            workspace=self.workspace,
            clock=self.clock,
            auto_approval=self.auto_approval,
            redactor=self.redactor,
            no_profile=self.no_profile,
        )
        child = child_agent.new_instance(self.host.new_task_id(), parent_id=parent.id)
        self.host.set_current(child)
        await child_agent.start(child, prompt)
        if not await child_agent.work(child, subtask=True):
            return None
        await self._sleep("resume")

        resumed = self.new_instance(parent.id, tokens=parent.tokens, parent_id=parent.parent_id)
        self.host.set_current(resumed)
        resumed.event("taskCreated")
        resumed.event("taskFocused")
        resumed.throttle.call()
        resumed.event("taskActive")
        resumed.event("taskStarted")
        return resumed

    def _keeps_provider(self) -> bool:
        if self.script.parent_keeps_provider is not None:
            return self.script.parent_keeps_provider
        return self.engine != "3.50" or self.no_profile

    # ------------------------------------------------------------------------------- outcomes

    async def _final(self, inst: TaskInstance, text: str | None, outcome: str, subtask: bool) -> bool:
        self._pace = self._plan(final_steps(outcome, text=bool(text), subtask=subtask))
        req = Request(inst.say("api_req_started", dumps({"apiProtocol": "openai"})), self.script.usage_at)
        if outcome in ("api_error", "api_error_noauto"):
            auto = outcome == "api_error" and self.auto_approval
            scale, delay = self.host.time_scale, self.host.status_delay
            await api_error(inst, self.script.error, auto=auto, scale=scale, status_delay=delay)
        if outcome == "crash":
            await self._sleep("latency")
            self.host.crash()
            await self.clock.forever()
        if outcome == "freeze":
            await self._sleep("latency")
            self.host.freeze()
            await self.clock.forever()
        await self._sleep("latency")
        if outcome == "hang":
            # the model stream never ends: partial text (if any), then silence
            if text:
                await self._stream(inst, text, "hang_text", finish=False)
            await self.clock.forever()
        if text:
            await self._stream(inst, text, "text", request=req)
        if outcome == "aborted":
            req.resolve("end")
            self._reach(inst, req, "end")
            await self._sleep("abort")
            self._pace.finish()
            inst.throttle.flush()
            inst.event("taskAborted")
            inst.aborted = True
            inst.end()
            return False
        if text:
            # after the turn's text, the completion arrives whole (cli-runs); as the model's first
            # block it is shown while it streams (recordings complete-*)
            return await self._complete_after_text(inst, req, subtask)
        return await self._complete(inst, req, subtask)

    async def _complete(self, inst: TaskInstance, req: Request, subtask: bool) -> bool:
        """attempt_completion (7.2): 3.50 sends taskCompleted, 3.52 only the completion ask."""
        req.resolve("ask")
        result = inst.say("completion_result", "", partial=True)
        self._reach(inst, req, "ask")
        self._count(inst, req)
        await self._sleep("complete")
        inst.count_tool("attempt_completion")
        if self.engine == "3.50":
            inst.throttle.flush()
            inst.event("taskCompleted", *inst.usage_payload(), {"isSubtask": subtask})
        inst.update(result, text=self.script.completion, partial=False)
        inst.completed = True
        if subtask:
            await self._finish_subtask(inst)
            return True
        self._pace.finish()
        inst.ask("completion_result", "")
        self._reach(inst, req, "end")
        inst.schedule_status("taskIdle", self.host.status_delay)
        await self.clock.forever()
        return False  # pragma: no cover - forever() only ends by cancellation

    async def _complete_after_text(self, inst: TaskInstance, req: Request, subtask: bool) -> bool:
        """attempt_completion after the turn's text (the cli-runs recordings): ``say:completion_result``
        arrives whole; on 3.50 the usage and ``taskCompleted`` follow it, before the ask. The request's
        token update comes after the ask by default (most real runs), and then never for a subtask, which
        is aborted first."""
        req.resolve("end")
        self._count(inst, req)
        await self._sleep("complete_after_text")
        self._reach(inst, req, "ask")
        inst.count_tool("attempt_completion")
        inst.say("completion_result", self.script.completion)
        if self.engine == "3.50":
            inst.throttle.flush()
            inst.event("taskCompleted", *inst.usage_payload(), {"isSubtask": subtask})
        inst.completed = True
        if subtask:
            await self._finish_subtask(inst)
            return True
        self._pace.finish()
        inst.ask("completion_result", "")
        # the stream's usage drain ends after the work: its wait is not part of ``duration``
        await self.clock.sleep(self._pace.after(0.05))
        self._reach(inst, req, "end")
        inst.schedule_status("taskIdle", self.host.status_delay)
        await self.clock.forever()
        return False  # pragma: no cover - forever() only ends by cancellation

    async def _finish_subtask(self, inst: TaskInstance) -> None:
        """A subtask hands back to its parent: finishTask ask (answered), unfocused, usage, aborted."""
        ts = inst.ask("tool", dumps({"tool": "finishTask"}), isProtected=False)
        await self._sleep("hand_back")
        self._pace.finish()
        inst.update(ts, isAnswered=True)
        inst.event("taskAskResponded")
        inst.event("taskUnfocused")
        inst.throttle.flush()
        inst.event("taskAborted")
        inst.aborted = True
        inst.end()
