"""The shared shapes of the Roo Code IPC protocol: the base model, ClineMessage, TokenUsage & co., Ack.

Everything here is lenient on input (``extra="allow"``: unknown keys are kept and re-emitted) and
strict on output (NaN/Infinity refused). Field declaration order is wire order.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

# --------------------------------------------------------------------------------------------- base


class WireModel(BaseModel):
    """Base of every protocol object: keeps unknown keys, refuses NaN/Infinity."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, populate_by_name=True)

    # Discriminators (commandName, eventName, type, origin) have defaults but must always be written.
    _always_written: ClassVar[tuple[str, ...]] = ()

    def wire(self) -> dict[str, Any]:
        """The JSON-ready dict as it goes on the wire (unset optional keys are omitted, as JS does)."""
        out = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        if self._always_written:
            out = {**{k: getattr(self, k) for k in self._always_written}, **out}
        return out


# ------------------------------------------------------------------------------------ shared shapes

Number = int | float
"""A JS number: ints stay ints on the way back out (``0``, not ``0.0``)."""

IDLE_ASKS = frozenset(
    {
        "completion_result",
        "api_req_failed",
        "resume_completed_task",
        "mistake_limit_reached",
        "auto_approval_max_req_reached",
    }
)
INTERACTIVE_ASKS = frozenset({"followup", "command", "tool", "use_mcp_server"})
RESUMABLE_ASKS = frozenset({"resume_task"})


class ClineMessage(WireModel):
    ts: int
    type: Literal["ask", "say"]
    ask: str | None = None
    say: str | None = None
    text: str | None = None
    images: list[str] | None = None
    partial: bool | None = None
    reasoning: str | None = None
    conversationHistoryIndex: int | None = None
    checkpoint: dict[str, Any] | None = None
    progressStatus: dict[str, Any] | None = None
    contextCondense: dict[str, Any] | None = None
    contextTruncation: dict[str, Any] | None = None
    isProtected: bool | None = None
    apiProtocol: str | None = None
    isAnswered: bool | None = None


class MessagePayload(WireModel):
    """``payload[0]`` of the ``message`` event."""

    taskId: str
    action: Literal["created", "updated"]
    message: ClineMessage


class TokenUsage(WireModel):
    """Cumulative totals for a task (not deltas)."""

    totalTokensIn: Number
    totalTokensOut: Number
    totalCacheWrites: Number | None = None
    totalCacheReads: Number | None = None
    totalCost: Number
    contextTokens: Number


class ToolStats(WireModel):
    attempts: int
    failures: int


ToolUsage = dict[str, ToolStats]
"""``z.record(ToolName, {attempts, failures})``; tool names stay open strings."""


class SubtaskFlag(WireModel):
    isSubtask: bool


class QueuedMessage(WireModel):
    timestamp: Number
    id: str
    text: str
    images: list[str] | None = None


class ModeInfo(WireModel):
    slug: str
    name: str


class CommandInfo(WireModel):
    name: str
    source: str
    filePath: str | None = None
    description: str | None = None
    argumentHint: str | None = None


# -------------------------------------------------------------------------------------------- Ack


class Ack(WireModel):
    clientId: str
    pid: int
    ppid: int


class ProtocolError(ValueError):
    """A message that is not a valid IpcMessage at all (no usable ``type``)."""


class RooCodeSettings(WireModel):
    """The ``configuration`` of StartNewTask: an open mapping, with the keys we rely on typed.

    One wrong-typed key makes the engine drop the whole command silently, so the keys we know are
    validated here, before anything is sent.
    """

    apiProvider: str | None = None
    mode: str | None = None
    apiModelId: str | None = None
    openRouterModelId: str | None = None
    openAiModelId: str | None = None
    openAiBaseUrl: str | None = None
    autoApprovalEnabled: bool | None = None
    alwaysAllowReadOnly: bool | None = None
    alwaysAllowWrite: bool | None = None
    alwaysAllowExecute: bool | None = None
    alwaysAllowSubtasks: bool | None = None
    alwaysAllowFollowupQuestions: bool | None = None
    followupAutoApproveTimeoutMs: int | None = None
    allowedCommands: list[str] | None = None
    deniedCommands: list[str] | None = None
    commandExecutionTimeout: Number | None = None
    requestDelaySeconds: Number | None = None
    writeDelayMs: Number | None = None
    rateLimitSeconds: Number | None = None
    consecutiveMistakeLimit: int | None = None
    allowedMaxRequests: int | None = None
    allowedMaxCost: Number | None = None
    enableCheckpoints: bool | None = None
    checkpointTimeout: int | None = Field(default=None, ge=10, le=60)
    mcpEnabled: bool | None = None
    modelTemperature: Number | None = None
    modelMaxTokens: int | None = None
    language: str | None = None
    experiments: dict[str, bool] | None = None
    customModes: list[dict[str, Any]] | None = None
