"""How one turn of the scripted agent spreads its share of the script's ``duration`` over its steps.

A turn plans its steps before the first one (``latency``, then ``text`` if the turn has text, then what
its branch does: a tool's ask, a command's asks, a delegation, the completion...). Each step has a weight
(:data:`WEIGHTS`); a step takes ``share * weight / sum(planned weights)``, times the script's seeded
jitter factor, so whatever a turn's steps are, together they take exactly its share (with ``jitter: 0``).
Waits on things outside the agent (the answer to a question, a subtask's own work, a command that runs,
the engine's write delay, API retry waits) are not steps and not part of the share.

The plan is checked as the turn runs: a step taken out of its planned order, or a planned step left
untaken when the turn's work ends, is a programming error, so a step added to the agent without being
planned fails every test of that turn's shape instead of silently breaking the ``duration`` promise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

WEIGHTS: dict[str, float] = {
    "latency": 0.25,  # api_req_started -> the model's first output
    "text": 0.25,  # the turn's text streams
    "hang_text": 0.75,  # a stream that never ends (``hang``): its text trickles in for good
    "tool_ask": 0.3,  # a tool's ask streams and is approved (or a call fails before asking)
    "command_ask": 0.1,  # ask:command -> approved
    "command_output_ask": 0.05,  # ask:command_output -> approved
    "command_output": 0.05,  # the command's output is shown
    "command_done": 0.1,  # the output's token update -> the tool's end
    "next_request": 0.2,  # a tool's result (or a question's answer) -> the next request
    "delegate_ask": 0.1,  # the newTask ask -> approved, the parent aborted
    "delegate_start": 0.1,  # the parent aborted -> the child created
    "resume": 0.05,  # the child handed back -> the parent re-created
    "complete": 0.1,  # completion_result streams -> the completion ask
    "complete_after_text": 0.05,  # the final text -> completion_result, whole
    "abort": 0.2,  # the final text -> the task aborts itself
    "hand_back": 0.05,  # a subtask's finishTask ask -> approved, the child aborted
}
"""Relative weight of each step in its turn: only the ratios within one turn matter."""

_EPS = 1e-9


class Pace:
    """One turn's plan: its share of ``duration`` (seconds, already scaled) over its planned steps."""

    def __init__(self, share: float, steps: Sequence[str], factor: Callable[[], float]) -> None:
        self._share = share
        self._planned = list(steps)
        self._total = sum(WEIGHTS[step] for step in steps) or 1.0
        self._factor = factor
        """The seeded jitter factor, drawn once per sleep (even with ``jitter: 0``, so that every other
        seeded choice stays the same)."""
        self._next = 0
        self._taken = 0.0  # the part of the next step already taken (a streamed text takes it in pieces)

    def seconds(self, step: str, part: float = 1.0) -> float:
        """How long ``part`` of ``step`` (the next planned one) takes."""
        planned = self._planned[self._next] if self._next < len(self._planned) else None
        if step != planned:
            raise AssertionError(f"step {step!r} is not the next one planned: {self._planned[self._next :]}")
        self._taken += part
        if self._taken >= 1 - _EPS:
            self._next, self._taken = self._next + 1, 0.0
        return self._share * WEIGHTS[step] / self._total * part * self._factor()

    def after(self, weight: float) -> float:
        """A wait after the turn's work (not part of its share): ``weight`` of the share, jittered."""
        return self._share * weight * self._factor()

    def finish(self) -> None:
        """The turn's work ends here: every planned step must have been taken."""
        if self._next != len(self._planned):
            raise AssertionError(f"the turn ended before its planned steps {self._planned[self._next :]}")


TOOL_STEPS = ("tool_ask", "next_request")
"""A tool call that asks (or fails before asking)."""
COMMAND_STEPS = ("command_ask", "command_output_ask", "command_output", "command_done", "next_request")
FOLLOWUP_STEPS = ("next_request",)
DELEGATE_STEPS = ("delegate_ask", "delegate_start", "resume")


def turn_steps(branch: Sequence[str], *, text: bool) -> tuple[str, ...]:
    """A turn's plan: the request's latency, the text (if any), then the branch's own steps."""
    return ("latency", *(("text",) if text else ()), *branch)


def final_steps(outcome: str, *, text: bool, subtask: bool) -> tuple[str, ...]:
    """The final turn's plan, by how it ends (up to the completion ask, or a subtask's hand-back)."""
    if outcome in ("api_error", "api_error_noauto"):
        return ()  # the request fails at once: the retry waits are the engine's, not the agent's work
    if outcome in ("crash", "freeze"):
        return ("latency",)
    if outcome == "hang":
        return turn_steps(("hang_text",) if text else (), text=False)
    if outcome == "aborted":
        return turn_steps(("abort",), text=text)
    completion = ("complete_after_text",) if text else ("complete",)
    return turn_steps((*completion, *(("hand_back",) if subtask else ())), text=text)
