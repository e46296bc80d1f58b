"""Pydantic models of every message of the Roo Code IPC protocol (@roo-code/types 1.115.0).

Strict on output, lenient on input:

* everything we *send* is built from these models and serialised through ``.wire()`` and :mod:`.framing`, which
  yields compact JSON that passes ``ipcMessageSchema`` (lowercase origins, ``clientId`` always present,
  NaN/Infinity rejected at construction);
* everything we *receive* is parsed with ``extra="allow"``: unknown keys are kept and re-emitted,
  unknown event names become :class:`UnknownEvent` (forks such as ZooCode add their own), unknown tool
  names are plain dictionary keys, and a known event whose payload does not match its tuple is kept as an
  :class:`UnknownEvent` carrying the validation error instead of crashing anything.

Field declaration order is wire order: the engine writes ``{taskId, action, message}`` and
``{ts, type, ask|say, text, ...}``, and so do we.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ipc_bridge.roo.events import (
    TaskEvent,
    parse_task_event,
)
from ipc_bridge.roo.shapes import (
    Ack,
    ProtocolError,
    RooCodeSettings,
    WireModel,
)

# ------------------------------------------------------------------------------------ TaskCommand


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

    def event(self) -> TaskEvent:
        return self.data if isinstance(self.data, TaskEvent) else parse_task_event(self.data)

    def wire(self) -> dict[str, Any]:
        data = self.data.wire() if isinstance(self.data, TaskEvent) else self.data
        out: dict[str, Any] = {"type": self.type, "origin": self.origin}
        if self.relayClientId is not None:
            out["relayClientId"] = self.relayClientId
        out["data"] = data
        return out


IpcMessage = AckMessage | TaskCommandMessage | TaskEventMessage


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


def event_message(event: TaskEvent) -> TaskEventMessage:
    return TaskEventMessage(data=event)


# The one import point for the protocol: shapes and events are re-exported here.
