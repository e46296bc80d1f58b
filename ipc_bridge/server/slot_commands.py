"""The bridge's requests that act on one slot: ``attach``, ``detach``, ``task_command``, ``snapshot``, and
(wire format 1.3) ``attach_start`` and ``close_detach``, which each do two of them in one round trip.

A worker's attempt used to take five round trips to the bridge (attach, the welcome and a snapshot,
StartNewTask, CloseTask, detach), each costing the worker and the bridge about half a millisecond of
CPU: with the combined requests it takes two (docs/wire-format.md section 3).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

from ipc_bridge.roo.protocol import QUERY_RESPONSES, CloseTask, StartNewTask
from ipc_bridge.server.replay_buffer import BufferedEvent
from ipc_bridge.server.slot_registry import SlotRegistry
from ipc_bridge.server.slots import OWNER_EXPIRED, Slot, SlotError, validate_command
from ipc_bridge.wire.liveness import PeerRegistry
from ipc_bridge.wire.messages import (
    AttachReply,
    AttachRequest,
    AttachStartReply,
    AttachStartRequest,
    CloseDetachReply,
    CloseDetachRequest,
    Content,
    DetachReply,
    DetachRequest,
    ErrorCode,
    ErrorReply,
    SnapshotReply,
    SnapshotRequest,
    TaskCommandReply,
    TaskCommandRequest,
)
from ipc_bridge.wire.session import Message

ReplyParts = tuple[Content, list[bytes]]
"""A reply's content and its buffers (only ``snapshot`` has any)."""

_CLOSE_TASK = CloseTask()


class SlotCommands:
    """The handlers; :class:`~ipc_bridge.server.bridge.Bridge` dispatches to them and replies."""

    def __init__(
        self,
        slots: SlotRegistry,
        peers: PeerRegistry,
        new_slot: Callable[[str, str], Slot],
        snapshot_max_bytes: int,
    ) -> None:
        self.slots = slots
        self.peers = peers
        self._new_slot = new_slot
        self._snapshot_max_bytes = snapshot_max_bytes

    async def attach(self, msg: Message, req: AttachRequest) -> ReplyParts:
        return AttachReply(slot=(await self._attach(msg, req)).info()), []

    async def _attach(self, msg: Message, req: AttachRequest) -> Slot:
        slot = self.slots.get(req.slot)
        if slot is not None and slot.state != "detached":
            raise SlotError(ErrorCode.SLOT_EXISTS, f"slot {req.slot} is already {slot.state}")
        if slot is None:
            slot = self.slots[req.slot] = self._new_slot(req.slot, req.socket_path)
        self.slots.reclaim(req.slot)
        slot.socket_path = req.socket_path
        slot.state = "connecting"
        try:
            await slot.connect(req.connect_timeout)
        except BaseException:
            slot.state = "detached"
            if slot.seq == 0:
                del self.slots[req.slot]
            raise
        owner = msg.header.session
        if owner not in self.peers:  # expired while the host was connecting: nobody holds it now
            await slot.detach(OWNER_EXPIRED)
            self.slots.retire(slot)
            raise SlotError(ErrorCode.SLOT_DOWN, f"slot {slot.name}: {OWNER_EXPIRED} during attach")
        slot.owner = owner
        return slot

    async def detach(self, msg: Message, req: DetachRequest) -> ReplyParts:
        slot = self.slots.lookup(req.slot)
        await slot.detach()
        self.slots.retire(slot)
        return DetachReply(slot=req.slot), []

    async def task_command(self, msg: Message, req: TaskCommandRequest) -> ReplyParts:
        slot = self.slots.lookup(req.slot)
        try:
            command = validate_command(req.command)
        except ValidationError as exc:
            raise SlotError(ErrorCode.INVALID_COMMAND, short_reason(exc)) from None
        name = command.commandName
        reply = TaskCommandReply(slot=slot.name, command_name=name)
        if slot.state == "detached":
            raise SlotError(ErrorCode.SLOT_DOWN, f"slot {slot.name} is detached")
        if isinstance(command, StartNewTask):
            reply.task_id = await slot.start_task(command, msg.header, req.start_timeout)
        elif name in QUERY_RESPONSES:
            reply.response = await slot.query(command, QUERY_RESPONSES[name], msg.header)
        else:
            await slot.send(command)
        return reply, []

    async def attach_start(self, msg: Message, req: AttachStartRequest) -> ReplyParts:
        """Attach, then StartNewTask. A failed attach is the reply's error (nothing is attached, as for
        ``attach``); a failed start is ``start_error`` in an ok reply, the slot attached all the same."""
        try:
            command = validate_command(req.command)
        except ValidationError as exc:
            raise SlotError(ErrorCode.INVALID_COMMAND, short_reason(exc)) from None
        if not isinstance(command, StartNewTask):
            raise SlotError(
                ErrorCode.INVALID_COMMAND, f"attach_start takes StartNewTask, not {command.commandName}"
            )
        slot = await self._attach(msg, req)
        reply = AttachStartReply(slot=slot.info())
        try:
            reply.task_id = await slot.start_task(command, msg.header, req.start_timeout)
        except SlotError as exc:
            reply.start_error = error_reply(exc.code, exc.reason)
        return reply, []

    async def close_detach(self, msg: Message, req: CloseDetachRequest) -> ReplyParts:
        """CloseTask, then detach. The frame is written before the connection closes, and a host reads
        it before it sees the end of the connection."""
        slot = self.slots.lookup(req.slot)
        reply = CloseDetachReply(slot=req.slot)
        try:
            if slot.state == "detached":
                raise SlotError(ErrorCode.SLOT_DOWN, f"slot {slot.name} is detached")
            await slot.send(_CLOSE_TASK)
        except SlotError as exc:
            reply.close_error = error_reply(exc.code, exc.reason)
        await slot.detach()
        self.slots.retire(slot)
        return reply, []

    async def snapshot(self, msg: Message, req: SnapshotRequest) -> ReplyParts:
        slot = self.slots.lookup(req.slot)
        events: list[BufferedEvent] = []
        complete, more = True, False
        if req.since_seq is not None:
            events, complete, more = slot.replay(req.since_seq, req.limit, self._snapshot_max_bytes)
        reply = SnapshotReply(
            slot=slot.name,
            since_seq=req.since_seq,
            first_seq=slot.buffer.first_seq,
            last_seq=slot.seq,
            count=len(events),
            complete=complete,
            more=more,
        )
        return reply, [frame for ev in events for frame in ev.frames]


def error_reply(code: ErrorCode, reason: str) -> ErrorReply:
    return ErrorReply(error=code.value, reason=reason)


def short_reason(exc: ValidationError) -> str:
    """A validation error in one line: its first error, where, and how many there were."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{first['msg']} at {where or '<root>'} ({exc.error_count()} error(s))"
