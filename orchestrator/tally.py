"""What an attempt's task tree spent and did, summed into :class:`~orchestrator.status.Metrics`: the
bookkeeping half of :mod:`orchestrator.outcome`, whose tracker decides the outcome and feeds this. Pure:
no clock, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ipc_bridge.roo.shapes import TokenUsage, ToolUsage
from orchestrator.status import Metrics, ToolCount, ToolFailure

MAX_LISTED = 50
"""Bound on the error texts and tool failures kept per attempt (a looping agent must not grow a record)."""
MAX_TEXT = 2000

_TOTALS = {
    "totalTokensIn": "tokens_in",
    "totalTokensOut": "tokens_out",
    "totalCacheReads": "cache_reads",
    "totalCacheWrites": "cache_writes",
    "totalCost": "cost_usd",
}


@dataclass
class TaskUsage:
    """What one task of the tree reported spending."""

    totals: dict[str, float] = field(default_factory=dict)
    context_tokens: float = 0
    # One ToolUsage per incarnation: ToolUsage lives in memory only and restarts at {} when a task is
    # re-created (delegation, cancel), while token totals are rebuilt from the persisted messages.
    tools: list[dict[str, list[int]]] = field(default_factory=lambda: [{}])

    def reported(self, usage: TokenUsage, tools: ToolUsage) -> None:
        """A taskTokenUsageUpdated or taskCompleted payload."""
        # totals are cumulative; max() keeps a rehydrated task's lower report from erasing spent cost
        for key in _TOTALS:
            value = getattr(usage, key, None) or 0
            self.totals[key] = max(self.totals.get(key, 0), value)
        self.context_tokens = usage.contextTokens
        current = self.tools[-1]
        for tool, stats in tools.items():
            prev = current.get(tool, [0, 0])
            current[tool] = [max(prev[0], stats.attempts), max(prev[1], stats.failures)]

    def recreated(self) -> None:
        """The task was created again (delegation, cancel): its tool counts start over."""
        self.tools.append({})


@dataclass
class Tally:
    """The counts of the whole tree."""

    events: int = 0
    messages: int = 0
    partial_updates: int = 0
    api_requests: int = 0
    api_retries: int = 0
    completion: str | None = None
    errors: list[str] = field(default_factory=list)
    tool_failures: list[ToolFailure] = field(default_factory=list)
    _error_ts: set[tuple[str, int]] = field(default_factory=set)

    def error(self, task_id: str, ts: int, text: str | None) -> None:
        """A ``say: error`` message (each counted once, however often it is updated)."""
        if (task_id, ts) in self._error_ts:
            return
        self._error_ts.add((task_id, ts))
        if len(self.errors) < MAX_LISTED:
            self.errors.append((text or "")[:MAX_TEXT])

    def tool_failed(self, task_id: str, tool: str, error: str) -> None:
        if len(self.tool_failures) < MAX_LISTED:
            self.tool_failures.append(ToolFailure(task_id=task_id, tool=tool, error=error[:MAX_TEXT]))

    def metrics(
        self, tasks: Mapping[str, TaskUsage], root: str | None, time_to_first_event: float | None
    ) -> Metrics:
        """The tree's metrics; ``tasks`` root first."""
        totals = dict.fromkeys(_TOTALS.values(), 0.0)
        tools: dict[str, ToolCount] = {}
        for task in tasks.values():
            for key, name in _TOTALS.items():
                totals[name] += task.totals.get(key, 0)
            for incarnation in task.tools:
                for tool, (attempts, failures) in incarnation.items():
                    count = tools.setdefault(tool, ToolCount())
                    count.attempts += attempts
                    count.failures += failures
        root_usage = tasks.get(root) if root else None
        return Metrics(
            tokens_in=int(totals["tokens_in"]),
            tokens_out=int(totals["tokens_out"]),
            cache_reads=int(totals["cache_reads"]),
            cache_writes=int(totals["cache_writes"]),
            context_tokens=int(root_usage.context_tokens) if root_usage else 0,
            cost_usd=totals["cost_usd"],
            tool_usage=dict(sorted(tools.items())),
            tool_failures=list(self.tool_failures),
            errors=list(self.errors),
            subtasks=max(len(tasks) - 1, 0),
            task_ids=list(tasks),
            messages=self.messages,
            partial_updates=self.partial_updates,
            events=self.events,
            api_requests=self.api_requests,
            api_retries=self.api_retries,
            time_to_first_event_s=time_to_first_event,
            completion=self.completion,
        )
