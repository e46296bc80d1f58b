"""TaskEvent: every event name of @roo-code/types 1.115.0 with its typed payload tuple.

Lenient: an unknown event name (forks such as ZooCode add their own) becomes :class:`UnknownEvent`, and so
does a known name whose payload does not match its tuple (a newer engine), with the validation error kept.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PrivateAttr, ValidationError

from ipc_bridge.roo.shapes import (
    CommandInfo,
    MessagePayload,
    ModeInfo,
    ProtocolError,
    QueuedMessage,
    SubtaskFlag,
    TokenUsage,
    ToolUsage,
    WireModel,
)


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


ID_ONLY_EVENTS = frozenset(
    name
    for name, cls in KNOWN_EVENTS.items()
    if cls.model_fields["payload"].annotation == tuple[str] and cls is not ModeChanged  # (its mode)
)
"""The events whose payload is the task id alone (taskCreated, taskIdle, taskAborted, ...)."""


def id_only_event(data: dict[str, Any]) -> tuple[str, str] | None:
    """``(eventName, task id)`` of a raw TaskEvent of :data:`ID_ONLY_EVENTS` that certainly validates as
    its model (nothing but ``eventName`` and a one-string ``payload``), without building the model: a
    consumer that needs no more than these two (the outcome tracker) skips the parse. None for any other
    event, which :func:`parse_task_event` is for."""
    if len(data) != 2:
        return None
    name = data.get("eventName")
    payload = data.get("payload")
    if name in ID_ONLY_EVENTS and type(payload) is list and len(payload) == 1:
        task = payload[0]
        if type(task) is str:
            return name, task
    return None


def make_event(event_name: str, *payload: Any) -> _Event:
    """Build an outgoing event (simulator side), validated against its typed tuple."""
    cls = KNOWN_EVENTS.get(event_name)
    if cls is None:
        return UnknownEvent(eventName=event_name, payload=list(payload))
    return cls.model_validate({"eventName": event_name, "payload": list(payload)})


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
