"""The nine Roo TaskCommands as methods of :class:`~ipc_bridge.client.bridge_client.BridgeClient` (a mixin: the
client's request machinery is in :mod:`ipc_bridge.client.bridge_client`, this is what workers call), and
the requests that bracket a task in one round trip each (wire format 1.3): :meth:`TaskCommands.attach_start`
and :meth:`TaskCommands.close_detach`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ipc_bridge.client.types import ERRORS, BridgeError, CommandError
from ipc_bridge.roo.protocol import QUERY_RESPONSES, StartNewTask, StartNewTaskData
from ipc_bridge.roo.shapes import RooCodeSettings, WireModel
from ipc_bridge.wire.messages import (
    AttachStartReply,
    AttachStartRequest,
    CloseDetachReply,
    CloseDetachRequest,
    ErrorCode,
    ErrorReply,
    Reply,
    SlotInfo,
    TaskCommandReply,
    TaskCommandRequest,
)

R = TypeVar("R", bound=Reply)


class StartFailed(BridgeError):
    """:meth:`TaskCommands.attach_start` attached the slot (``slot``), but its StartNewTask failed:
    ``cause`` is what :meth:`TaskCommands.start_task` would have raised. The slot stays attached."""

    def __init__(self, cause: CommandError, slot: SlotInfo) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.slot = slot


def _raised(error: ErrorReply, msg_type: str) -> CommandError:
    return ERRORS.get(error.error, CommandError)(error.error, error.reason, msg_type)


def _start_command(
    text: str,
    configuration: RooCodeSettings | dict[str, Any] | None,
    images: list[str] | None,
    new_tab: bool | None,
) -> StartNewTask:
    data: dict[str, Any] = {"text": text, "configuration": configuration or {}}
    if images is not None:
        data["images"] = images
    if new_tab is not None:
        data["newTab"] = new_tab
    return StartNewTask(data=StartNewTaskData.model_validate(data))


def _reply_timeout(timeout: float | None, start_timeout: float | None) -> float:
    """How long to wait for a StartNewTask's reply: 10 s more than the bridge waits for its
    ``taskCreated`` (40 s without a ``start_timeout``), unless ``timeout`` says."""
    if timeout is not None:
        return timeout
    return 40.0 if start_timeout is None else start_timeout + 10


class TaskCommands:
    if TYPE_CHECKING:

        async def _typed(self, cls: type[R], msg_type: str, content: BaseModel, **kwargs: Any) -> R: ...

    async def task_command(
        self,
        slot: str,
        command: BaseModel | dict[str, Any],
        *,
        timeout: float | None = None,
        start_timeout: float | None = None,
    ) -> TaskCommandReply:
        """Any of the nine TaskCommands, as a ``protocol`` model or its wire dict. ``start_timeout``:
        how long the bridge waits for a StartNewTask's ``taskCreated`` (None: its default)."""
        if isinstance(command, WireModel):
            wire = command.wire()
        elif isinstance(command, BaseModel):
            wire = command.model_dump()
        else:
            wire = command
        req = TaskCommandRequest(slot=slot, command=wire, start_timeout=start_timeout)
        return await self._typed(TaskCommandReply, "task_command", req, timeout=timeout)

    async def start_task(
        self,
        slot: str,
        text: str,
        configuration: RooCodeSettings | dict[str, Any] | None = None,
        *,
        images: list[str] | None = None,
        new_tab: bool | None = None,
        start_timeout: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """StartNewTask; returns the Roo task id. The bridge waits ``start_timeout`` s for the task's
        ``taskCreated`` (None: the bridge's ``--start-timeout``); ``timeout``, the wait for the reply,
        defaults to 10 s more than that (40 s without a ``start_timeout``)."""
        command = _start_command(text, configuration, images, new_tab)
        timeout = _reply_timeout(timeout, start_timeout)
        reply = await self.task_command(slot, command, timeout=timeout, start_timeout=start_timeout)
        if reply.task_id is None:
            raise CommandError(
                ErrorCode.INTERNAL.value, "StartNewTask reply without a task id", "task_command"
            )
        return reply.task_id

    async def attach_start(
        self,
        slot: str,
        socket_path: str,
        text: str,
        configuration: RooCodeSettings | dict[str, Any] | None = None,
        *,
        connect_timeout: float = 30.0,
        images: list[str] | None = None,
        new_tab: bool | None = None,
        start_timeout: float | None = None,
        timeout: float | None = None,
    ) -> str:
        """``attach`` and :meth:`start_task` in one request; returns the Roo task id. A failed attach
        raises as ``attach`` does (nothing is attached); a failed start raises :class:`StartFailed`
        (the slot is attached). To see the slot's every event, open its stream (``events(slot, 0)``)
        before: its subscription then goes out first, and the stream needs no snapshot."""
        req = AttachStartRequest(
            slot=slot,
            socket_path=socket_path,
            connect_timeout=connect_timeout,
            command=_start_command(text, configuration, images, new_tab).wire(),
            start_timeout=start_timeout,
        )
        timeout = connect_timeout + _reply_timeout(timeout, start_timeout)
        reply = await self._typed(AttachStartReply, "attach_start", req, timeout=timeout)
        if reply.start_error is not None:
            raise StartFailed(_raised(reply.start_error, "task_command"), reply.slot)
        if reply.task_id is None:
            cause = CommandError(
                ErrorCode.INTERNAL.value, "StartNewTask reply without a task id", "task_command"
            )
            raise StartFailed(cause, reply.slot)
        return reply.task_id

    async def close_detach(self, slot: str) -> bool:
        """CloseTask, then detach, in one request. Returns whether the CloseTask went out (the host
        may then be closing); the slot is detached either way."""
        reply = await self._typed(CloseDetachReply, "close_detach", CloseDetachRequest(slot=slot))
        return reply.close_error is None

    async def cancel(self, slot: str) -> None:
        await self.task_command(slot, {"commandName": "CancelTask"})

    async def close_task(self, slot: str) -> None:
        """CloseTask: in VS Code this closes the whole window (the slot goes down)."""
        await self.task_command(slot, {"commandName": "CloseTask"})

    async def resume(self, slot: str, task_id: str) -> None:
        await self.task_command(slot, {"commandName": "ResumeTask", "data": task_id})

    async def send_message(self, slot: str, text: str | None = None, images: list[str] | None = None) -> None:
        data: dict[str, Any] = {}
        if text is not None:
            data["text"] = text
        if images is not None:
            data["images"] = images
        await self.task_command(slot, {"commandName": "SendMessage", "data": data})

    async def delete_queued_message(self, slot: str, message_id: str) -> None:
        await self.task_command(slot, {"commandName": "DeleteQueuedMessage", "data": message_id})

    async def query(self, slot: str, command_name: str, *, timeout: float = 15.0) -> Any:
        """GetCommands / GetModes / GetModels: the first element of the response event's payload."""
        if command_name not in QUERY_RESPONSES:
            raise ValueError(f"{command_name} is not one of {sorted(QUERY_RESPONSES)}")
        reply = await self.task_command(slot, {"commandName": command_name}, timeout=timeout)
        payload = reply.response
        return payload[0] if isinstance(payload, list) and payload else payload
