"""The nine Roo TaskCommands as methods of :class:`~ipc_bridge.client.bridge_client.BridgeClient` (a mixin: the
client's request machinery is in :mod:`ipc_bridge.client.bridge_client`, this is what workers call)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ipc_bridge.client.types import CommandError
from ipc_bridge.roo.protocol import QUERY_RESPONSES, StartNewTask, StartNewTaskData
from ipc_bridge.roo.shapes import RooCodeSettings, WireModel
from ipc_bridge.wire.messages import ErrorCode, Reply, TaskCommandReply, TaskCommandRequest

R = TypeVar("R", bound=Reply)


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
        data: dict[str, Any] = {"text": text, "configuration": configuration or {}}
        if images is not None:
            data["images"] = images
        if new_tab is not None:
            data["newTab"] = new_tab
        command = StartNewTask(data=StartNewTaskData.model_validate(data))
        if timeout is None:
            timeout = 40.0 if start_timeout is None else start_timeout + 10
        reply = await self.task_command(slot, command, timeout=timeout, start_timeout=start_timeout)
        if reply.task_id is None:
            raise CommandError(
                ErrorCode.INTERNAL.value, "StartNewTask reply without a task id", "task_command"
            )
        return reply.task_id

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
