"""Pydantic models of every message of the Roo Code IPC protocol (@roo-code/types 1.115.0).

Strict on output, lenient on input:

* everything we *send* is built from these models and serialised by :func:`dump_ipc_message`, which
  yields compact JSON that passes ``ipcMessageSchema`` (lowercase origins, ``clientId`` always present,
  NaN/Infinity rejected at construction);
* everything we *receive* is parsed with ``extra="allow"``: unknown keys are kept and re-emitted,
  unknown event names become :class:`UnknownEvent` (forks such as ZooCode add their own), unknown tool
  names are plain dictionary keys, and a known event whose payload does not match its tuple is kept as an
  :class:`UnknownEvent` carrying the validation error instead of crashing anything.

Field declaration order is wire order: the engine writes ``{taskId, action, message}`` and
``{ts, type, ask|say, text, ...}``, and so do we.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
)

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


class IpcOrigin(str, Enum):
    CLIENT = "client"
    SERVER = "server"


class IpcMessageType(str, Enum):
    ACK = "Ack"
    TASK_COMMAND = "TaskCommand"
    TASK_EVENT = "TaskEvent"


# ------------------------------------------------------------------------------------ shared shapes

Number = int | float
"""A JS number: ints stay ints on the way back out (``0``, not ``0.0``)."""

ClineAsk = str
"""``followup, command, command_output, completion_result, tool, api_req_failed, resume_task, ...``:
kept as an open string because forks and newer engines add values."""

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


# ------------------------------------------------------------------------------------ TaskCommand


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


class StartNewTaskData(WireModel):
    configuration: RooCodeSettings = Field(default_factory=RooCodeSettings)
    text: str
    images: list[str] | None = None
    newTab: bool | None = None

    def wire(self) -> dict[str, Any]:
        # configuration is required on the wire even when empty
        out = super().wire()
        out.setdefault("configuration", {})
        out = {"configuration": out.pop("configuration"), **out}
        return out


class SendMessageData(WireModel):
    text: str | None = None
    images: list[str] | None = None


class StartNewTask(WireModel):
    commandName: Literal["StartNewTask"] = "StartNewTask"
    _always_written = ("commandName",)
    data: StartNewTaskData

    def wire(self) -> dict[str, Any]:
        return {"commandName": self.commandName, "data": self.data.wire()}


class CancelTask(WireModel):
    commandName: Literal["CancelTask"] = "CancelTask"
    _always_written = ("commandName",)


class CloseTask(WireModel):
    commandName: Literal["CloseTask"] = "CloseTask"
    _always_written = ("commandName",)


class ResumeTask(WireModel):
    commandName: Literal["ResumeTask"] = "ResumeTask"
    _always_written = ("commandName",)
    data: str


class SendMessage(WireModel):
    commandName: Literal["SendMessage"] = "SendMessage"
    _always_written = ("commandName",)
    data: SendMessageData = Field(default_factory=SendMessageData)

    def wire(self) -> dict[str, Any]:
        return {"commandName": self.commandName, "data": self.data.wire()}


class GetCommands(WireModel):
    commandName: Literal["GetCommands"] = "GetCommands"
    _always_written = ("commandName",)


class GetModes(WireModel):
    commandName: Literal["GetModes"] = "GetModes"
    _always_written = ("commandName",)


class GetModels(WireModel):
    commandName: Literal["GetModels"] = "GetModels"
    _always_written = ("commandName",)


class DeleteQueuedMessage(WireModel):
    commandName: Literal["DeleteQueuedMessage"] = "DeleteQueuedMessage"
    _always_written = ("commandName",)
    data: str


TaskCommand = Annotated[
    StartNewTask
    | CancelTask
    | CloseTask
    | ResumeTask
    | SendMessage
    | GetCommands
    | GetModes
    | GetModels
    | DeleteQueuedMessage,
    Field(discriminator="commandName"),
]
COMMAND_NAMES = (
    "StartNewTask",
    "CancelTask",
    "CloseTask",
    "ResumeTask",
    "SendMessage",
    "GetCommands",
    "GetModes",
    "GetModels",
    "DeleteQueuedMessage",
)
QUERY_RESPONSES = {
    "GetCommands": "commandsResponse",
    "GetModes": "modesResponse",
    "GetModels": "modelsResponse",
}
task_command_adapter: TypeAdapter[TaskCommand] = TypeAdapter(TaskCommand)


# -------------------------------------------------------------------------------------- TaskEvent


class _Event(WireModel):
    """Common part of every TaskEvent variant. ``taskId`` (a number) is Roo's eval DB id, not the
    Roo task id; the extension never sets it."""

    taskId: int | None = None
    _always_written = ("eventName",)

    @property
    def task_id(self) -> str | None:
        """The Roo task this event is about (the first string of the payload), if any."""
        payload: Any = getattr(self, "payload", None)
        if isinstance(payload, (list, tuple)) and payload:
            first = payload[0]
            if isinstance(first, str):
                return first
            if isinstance(first, MessagePayload):
                return first.taskId
        return None


class TaskCreated(_Event):
    eventName: Literal["taskCreated"] = "taskCreated"
    payload: tuple[str]


class TaskStarted(_Event):
    eventName: Literal["taskStarted"] = "taskStarted"
    payload: tuple[str]


class TaskCompleted(_Event):
    eventName: Literal["taskCompleted"] = "taskCompleted"
    payload: tuple[str, TokenUsage, ToolUsage, SubtaskFlag]


class TaskAborted(_Event):
    eventName: Literal["taskAborted"] = "taskAborted"
    payload: tuple[str]


class TaskFocused(_Event):
    eventName: Literal["taskFocused"] = "taskFocused"
    payload: tuple[str]


class TaskUnfocused(_Event):
    eventName: Literal["taskUnfocused"] = "taskUnfocused"
    payload: tuple[str]


class TaskActive(_Event):
    eventName: Literal["taskActive"] = "taskActive"
    payload: tuple[str]


class TaskInteractive(_Event):
    eventName: Literal["taskInteractive"] = "taskInteractive"
    payload: tuple[str]


class TaskResumable(_Event):
    eventName: Literal["taskResumable"] = "taskResumable"
    payload: tuple[str]


class TaskIdle(_Event):
    eventName: Literal["taskIdle"] = "taskIdle"
    payload: tuple[str]


class TaskPaused(_Event):
    eventName: Literal["taskPaused"] = "taskPaused"
    payload: tuple[str]


class TaskUnpaused(_Event):
    eventName: Literal["taskUnpaused"] = "taskUnpaused"
    payload: tuple[str]


class TaskSpawned(_Event):
    eventName: Literal["taskSpawned"] = "taskSpawned"
    payload: tuple[str, str]


class TaskDelegated(_Event):
    eventName: Literal["taskDelegated"] = "taskDelegated"
    payload: tuple[str, str]


class TaskDelegationCompleted(_Event):
    eventName: Literal["taskDelegationCompleted"] = "taskDelegationCompleted"
    payload: tuple[str, str, str]


class TaskDelegationResumed(_Event):
    eventName: Literal["taskDelegationResumed"] = "taskDelegationResumed"
    payload: tuple[str, str]


class Message(_Event):
    eventName: Literal["message"] = "message"
    payload: tuple[MessagePayload]


class TaskModeSwitched(_Event):
    eventName: Literal["taskModeSwitched"] = "taskModeSwitched"
    payload: tuple[str, str]


class TaskAskResponded(_Event):
    eventName: Literal["taskAskResponded"] = "taskAskResponded"
    payload: tuple[str]


class TaskUserMessage(_Event):
    eventName: Literal["taskUserMessage"] = "taskUserMessage"
    payload: tuple[str]


class QueuedMessagesUpdated(_Event):
    eventName: Literal["queuedMessagesUpdated"] = "queuedMessagesUpdated"
    payload: tuple[str, list[QueuedMessage]]


class TaskToolFailed(_Event):
    eventName: Literal["taskToolFailed"] = "taskToolFailed"
    payload: tuple[str, str, str]


class TaskTokenUsageUpdated(_Event):
    eventName: Literal["taskTokenUsageUpdated"] = "taskTokenUsageUpdated"
    payload: tuple[str, TokenUsage, ToolUsage]


class ModeChanged(_Event):
    eventName: Literal["modeChanged"] = "modeChanged"
    payload: tuple[str]


class ProviderProfileChanged(_Event):
    eventName: Literal["providerProfileChanged"] = "providerProfileChanged"
    payload: tuple[dict[str, Any]]


class CommandsResponse(_Event):
    eventName: Literal["commandsResponse"] = "commandsResponse"
    payload: tuple[list[CommandInfo]]


class ModesResponse(_Event):
    eventName: Literal["modesResponse"] = "modesResponse"
    payload: tuple[list[ModeInfo]]


class ModelsResponse(_Event):
    eventName: Literal["modelsResponse"] = "modelsResponse"
    payload: tuple[dict[str, Any]]


class EvalPass(_Event):
    eventName: Literal["evalPass"] = "evalPass"
    payload: None = None


class EvalFail(_Event):
    eventName: Literal["evalFail"] = "evalFail"
    payload: None = None


class UnknownEvent(_Event):
    """An event whose name we do not know, or whose payload did not match its known tuple.

    It is kept whole and passed on: forks add event names, newer engines add tuple members.
    """

    eventName: str
    payload: Any = None
    _invalid: str | None = PrivateAttr(default=None)

    @property
    def invalid(self) -> str | None:
        """Why a known event name did not validate against its tuple (None for a truly unknown name)."""
        return self._invalid


KNOWN_EVENTS: dict[str, type[_Event]] = {
    cls.model_fields["eventName"].default: cls
    for cls in (
        TaskCreated, TaskStarted, TaskCompleted, TaskAborted, TaskFocused, TaskUnfocused,
        TaskActive, TaskInteractive, TaskResumable, TaskIdle, TaskPaused, TaskUnpaused,
        TaskSpawned, TaskDelegated, TaskDelegationCompleted, TaskDelegationResumed, Message,
        TaskModeSwitched, TaskAskResponded, TaskUserMessage, QueuedMessagesUpdated,
        TaskToolFailed, TaskTokenUsageUpdated, ModeChanged, ProviderProfileChanged,
        CommandsResponse, ModesResponse, ModelsResponse, EvalPass, EvalFail,
    )
}  # fmt: skip

TaskEvent = _Event
"""Any TaskEvent: one of the classes in :data:`KNOWN_EVENTS`, or :class:`UnknownEvent`."""


def parse_task_event(data: Any) -> _Event:
    """Parse a TaskEvent body leniently. Never raises for a dict with a string ``eventName``."""
    if not isinstance(data, dict) or not isinstance(data.get("eventName"), str):
        raise ProtocolError(f"TaskEvent without a string eventName: {str(data)[:200]!r}")
    cls = KNOWN_EVENTS.get(data["eventName"])
    if cls is not None:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            event = UnknownEvent.model_validate(data)
            event._invalid = str(exc)
            return event
    return UnknownEvent.model_validate(data)


def make_event(event_name: str, *payload: Any) -> _Event:
    """Build an outgoing event (simulator side), validated against its typed tuple."""
    cls = KNOWN_EVENTS.get(event_name)
    if cls is None:
        return UnknownEvent(eventName=event_name, payload=list(payload))
    return cls.model_validate({"eventName": event_name, "payload": list(payload)})


# ------------------------------------------------------------------------------------- IpcMessage


class AckMessage(WireModel):
    type: Literal["Ack"] = "Ack"
    origin: Literal["server"] = "server"
    data: Ack

    def wire(self) -> dict[str, Any]:
        return {"type": self.type, "origin": self.origin, "data": self.data.wire()}


class TaskCommandMessage(WireModel):
    type: Literal["TaskCommand"] = "TaskCommand"
    origin: Literal["client"] = "client"
    clientId: str
    data: TaskCommand

    def wire(self) -> dict[str, Any]:
        return {"type": self.type, "origin": self.origin, "clientId": self.clientId, "data": self.data.wire()}


class TaskEventMessage(WireModel):
    type: Literal["TaskEvent"] = "TaskEvent"
    origin: Literal["server"] = "server"
    relayClientId: str | None = None
    data: Any  # a TaskEvent; parsed by parse_task_event so unknown names survive

    def event(self) -> _Event:
        return self.data if isinstance(self.data, _Event) else parse_task_event(self.data)

    def wire(self) -> dict[str, Any]:
        data = self.data.wire() if isinstance(self.data, _Event) else self.data
        out: dict[str, Any] = {"type": self.type, "origin": self.origin}
        if self.relayClientId is not None:
            out["relayClientId"] = self.relayClientId
        out["data"] = data
        return out


IpcMessage = AckMessage | TaskCommandMessage | TaskEventMessage


class ProtocolError(ValueError):
    """A message that is not a valid IpcMessage at all (no usable ``type``)."""


def parse_ipc_message(data: Any) -> IpcMessage:
    """Parse the ``data`` of a node-ipc envelope. Raises :class:`ProtocolError` when it is no IpcMessage."""
    if not isinstance(data, dict):
        raise ProtocolError(f"IpcMessage is not an object: {str(data)[:200]!r}")
    kind = data.get("type")
    try:
        if kind == "TaskEvent":
            msg = TaskEventMessage.model_validate(data)
            msg.data = parse_task_event(msg.data)
            return msg
        if kind == "Ack":
            return AckMessage.model_validate(data)
        if kind == "TaskCommand":
            return TaskCommandMessage.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {kind}: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from exc
    raise ProtocolError(f"unknown IpcMessage type {kind!r}")


def command_message(client_id: str, command: Any) -> TaskCommandMessage:
    """Wrap a command (a model or a dict) in the envelope Roo's IpcServer accepts."""
    cmd = command if isinstance(command, BaseModel) else task_command_adapter.validate_python(command)
    return TaskCommandMessage(clientId=client_id, data=cmd)


def event_message(event: _Event) -> TaskEventMessage:
    return TaskEventMessage(data=event)


def event_route(data: Any) -> tuple[str, str | None]:
    """``(eventName, roo task id)`` of a raw TaskEvent dict without validating it (the bridge's hot path).

    For ``message`` the task id is ``payload[0].taskId``; for every other event it is ``payload[0]``
    when that is a string (taskSpawned & co. name the parent first)."""
    name = data.get("eventName") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise ProtocolError("TaskEvent without a string eventName")
    payload = data.get("payload")
    task: str | None = None
    if isinstance(payload, list) and payload:
        first = payload[0]
        if isinstance(first, str):
            task = first
        elif isinstance(first, dict) and isinstance(first.get("taskId"), str):
            task = first["taskId"]
    return name, task
