"""What an attempt can end as (:class:`Status`), the timers that decide it (:class:`OutcomeLimits`), and
what it measured (:class:`Metrics`): the vocabulary of :mod:`orchestrator.outcome`'s rules and of the
records, without the rules themselves."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from ipc_bridge.durations import PositiveDuration


class Status(str, Enum):
    COMPLETED = "completed"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    STUCK = "stuck"
    API_ERROR = "api_error"
    INFRA_ERROR = "infra_error"
    CANCELLED = "cancelled"
    """Stopped by the orchestrator itself (Ctrl-C, budget): not a result; resume runs the attempt again."""

    @property
    def is_infra(self) -> bool:
        """An infrastructure failure, retried; not the agent's fault."""
        return self in (Status.API_ERROR, Status.INFRA_ERROR)

    @property
    def task_left_running(self) -> bool:
        """The engine still works on the task when this outcome is decided: send CancelTask."""
        return self in (Status.TIMEOUT, Status.STUCK, Status.API_ERROR, Status.CANCELLED)


class OutcomeLimits(BaseModel):
    """Timers of the outcome rules, in seconds (any form of :mod:`ipc_bridge.durations`). ``None``
    disables a timer. The one place their defaults are written: a suite's ``defaults`` block
    (:class:`orchestrator.suite.config.Defaults`) is this model plus the run's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: PositiveDuration = 300.0
    """Wall clock for the whole attempt, from StartNewTask (Roo's own evals use 5 minutes)."""
    start_timeout: PositiveDuration = 30.0
    """No task created this long after StartNewTask: the host dropped the command (infra_error)."""
    ask_timeout: PositiveDuration = 60.0
    """An ask nobody answers (followup, a command not auto-approved, mistake_limit_reached, ...) this
    long: stuck."""
    idle_timeout: PositiveDuration | None = None
    """No event at all from the task tree this long: stuck. Off by default: an agent running a quiet
    command (a long test suite) sends nothing for minutes; the wall clock still applies."""
    api_retry_limit: int = Field(default=3, ge=0)
    """Consecutive api_req_retry_delayed waits tolerated in one task; one more is api_error."""
    abort_settle: PositiveDuration = 5.0
    """How long a root taskAborted waits for a child task or the root's re-activation."""
    completion_grace: PositiveDuration = 3.0
    """After completion, how long to wait for taskIdle(root) and the final token usage."""
    cancel_timeout: PositiveDuration = 10.0
    """After CancelTask (timeout, stuck, api_error), how long the host may take to react with an event
    before it counts as unresponsive (an infra_error, retried on a fresh host)."""


class ToolCount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attempts: int = 0
    failures: int = 0


class ToolFailure(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: str
    tool: str
    error: str


class Metrics(BaseModel):
    """What an attempt cost and did, summed over its task tree."""

    model_config = ConfigDict(extra="forbid")

    tokens_in: int = 0
    tokens_out: int = 0
    cache_reads: int = 0
    cache_writes: int = 0
    context_tokens: int = 0
    """The root's last context size (not summed: it is a level, not a total)."""
    cost_usd: float = 0.0
    tool_usage: dict[str, ToolCount] = Field(default_factory=dict)
    tool_failures: list[ToolFailure] = Field(default_factory=list)
    """taskToolFailed events; some failures show only in ``tool_usage[...].failures`` and ``errors``."""
    errors: list[str] = Field(default_factory=list)
    """Texts of ``say: error`` messages."""
    subtasks: int = 0
    task_ids: list[str] = Field(default_factory=list)
    """The task tree, root first."""
    messages: int = 0
    """Distinct ClineMessages (by task and ts), partial or not."""
    partial_updates: int = 0
    events: int = 0
    """Events attributed to the attempt."""
    api_requests: int = 0
    api_retries: int = 0
    time_to_first_event_s: float | None = None
    """From StartNewTask to the root's taskCreated."""
    completion: str | None = None
    """The root's final ``say: completion_result`` text."""


class AttemptOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status
    reason: str
    task_id: str | None
    """The root task's id (None when no task started)."""
    decided_at: float
    ended_at: float
    metrics: Metrics
    error: str | None = None
    """What an infra_error's reason does not say (what the host did not do), for the record."""
