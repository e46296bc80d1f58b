"""What workers use to talk to the bridge (asyncio): commands with replies, and ordered event streams.

* Commands go out on a DEALER (``IMMEDIATE=1``: nothing queues while the bridge is away) as Lazy Pirate
  requests: wait ``timeout``, resend with the *same* msg_id up to ``retries`` times, then raise
  :class:`BridgeTimeout`. The bridge replays its first reply to a repeated msg_id, so a retried
  StartNewTask never starts a second task. Error replies become typed exceptions.
* Events come in on a SUB. :meth:`BridgeClient.events` follows the Clone pattern: subscribe, wait for the
  bridge's welcome on that topic (no sleeps), take a snapshot, drop live events it already covered, then
  yield events in seq order. A seq gap (or a ``hugz`` showing a newer seq) is filled from the bridge's
  replay buffer; when the buffer no longer reaches back, :class:`EventGap` is raised: never a silent skip.
* A message from another bridge session means the bridge restarted: streams raise
  :class:`BridgeRestarted` and ``on_restart`` callbacks run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import zmq
import zmq.asyncio
from pydantic import BaseModel, ValidationError

from .client_types import (
    ERRORS,
    BridgeError,
    BridgeRestarted,
    BridgeTimeout,
    CommandError,
    CommandTimeout,
    ConnectFailed,
    Event,
    EventGap,
    InvalidCommand,
    ShuttingDown,
    SlotDown,
    SlotExists,
    UnknownSlot,
)
from .connection_file import ConnectionInfo, read_connection_file
from .protocol import (
    QUERY_RESPONSES,
    RooCodeSettings,
    StartNewTask,
    StartNewTaskData,
    WireModel,
)
from .wire import (
    EVENTS,
    AttachReply,
    AttachRequest,
    Content,
    DetachRequest,
    ErrorCode,
    ErrorReply,
    Header,
    HeartbeatReply,
    HeartbeatRequest,
    Message,
    Reply,
    Session,
    ShutdownReply,
    ShutdownRequest,
    SlotInfo,
    SlotsReply,
    SlotsRequest,
    SnapshotReply,
    SnapshotRequest,
    TaskCommandReply,
    TaskCommandRequest,
    WelcomeContent,
    WireError,
    parse_reply,
    slot_topic,
    split_snapshot_buffers,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)


_Item = Event | BridgeError
"""What a stream's queue holds: events, or the error that ends the stream (restart, client closed)."""


# ------------------------------------------------------------------------------------------ client


class BridgeClient:
    """Use :meth:`connect`. One client per process is plenty; it is not shared across processes."""

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        ctx: zmq.asyncio.Context | None = None,
        timeout: float = 2.5,
        retries: int = 3,
        rcvhwm: int = 100_000,
        linger_ms: int = 1000,
    ) -> None:
        self.info = info
        self.timeout = timeout
        self.retries = retries
        self.session = Session(info.key, signature_scheme=info.signature_scheme)
        self.bridge_session: str | None = info.session
        self.on_restart: list[Callable[[BridgeRestarted], None]] = []
        self._ctx = ctx or zmq.asyncio.Context.instance()
        self._linger = linger_ms
        self._dealer = self._ctx.socket(zmq.DEALER)
        self._sub = self._ctx.socket(zmq.SUB)
        for sock in (self._dealer, self._sub):
            sock.linger = linger_ms
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self._dealer.setsockopt(zmq.IMMEDIATE, 1)
        self._sub.rcvhwm = rcvhwm
        self._dealer.connect(info.command_endpoint)
        self._sub.connect(info.event_endpoint)
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._welcomes: dict[bytes, asyncio.Future[None]] = {}
        self._sub_counts: dict[bytes, int] = {}  # setsockopt(SUBSCRIBE) calls per topic
        self._users: dict[bytes, int] = {}  # streams using each topic
        self._listeners: dict[str, list[asyncio.Queue[_Item]]] = {}
        self._readers = [
            asyncio.ensure_future(self._read_replies()),
            asyncio.ensure_future(self._read_events()),
        ]
        self._closed = False

    @classmethod
    async def connect(
        cls, connection: ConnectionInfo | str | os.PathLike[str], **kwargs: Any
    ) -> BridgeClient:
        """A client for the bridge described by a connection file (path) or its parsed contents."""
        info = (
            connection if isinstance(connection, ConnectionInfo) else read_connection_file(Path(connection))
        )
        return cls(info, **kwargs)

    async def close(self, linger_ms: int | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        closed = BridgeError("client closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(closed)
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(closed)
        linger = self._linger if linger_ms is None else linger_ms
        self._dealer.close(linger=linger)
        self._sub.close(linger=linger)

    async def __aenter__(self) -> BridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------ requests

    async def request_message(
        self,
        msg_type: str,
        content: BaseModel,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Message:
        """Send a request (Lazy Pirate) and return the raw reply message; raises on error replies."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        msg_id = self.session.new_msg_id()
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            for attempt in range(retries + 1):
                # Same msg_id, fresh date: the bridge dedups by msg_id, replay checks see a new signature.
                frames = self.session.serialize(msg_type, content, msg_id=msg_id)
                try:
                    await asyncio.wait_for(self._dealer.send_multipart(frames), timeout)
                    reply = await asyncio.wait_for(asyncio.shield(fut), timeout)
                    break
                except asyncio.TimeoutError:
                    log.info("%s %s: no reply in %g s (attempt %d)", msg_type, msg_id, timeout, attempt + 1)
            else:
                raise BridgeTimeout(f"{msg_type}: no reply after {retries + 1} attempts of {timeout:g} s")
        finally:
            self._pending.pop(msg_id, None)
        parsed = parse_reply(msg_type, reply.content)
        if isinstance(parsed, ErrorReply):
            raise ERRORS.get(parsed.error, CommandError)(parsed.error, parsed.reason, msg_type)
        return reply

    async def request(
        self,
        msg_type: str,
        content: BaseModel,
        *,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> Reply:
        """Send a request and return its typed reply (``wire.REPLIES``); error replies raise."""
        reply = await self.request_message(msg_type, content, timeout=timeout, retries=retries)
        parsed = parse_reply(msg_type, reply.content)
        assert isinstance(parsed, Reply)
        return parsed

    async def _typed(self, cls: type[R], msg_type: str, content: BaseModel, **kwargs: Any) -> R:
        reply = await self.request_message(msg_type, content, **kwargs)
        return cls.model_validate(reply.content)

    async def _read_replies(self) -> None:
        while True:
            frames = await self._dealer.recv_multipart()
            try:
                msg = self.session.deserialize(frames)
            except WireError as exc:
                log.warning("dropped reply: %s", exc)
                continue
            self._check_session(msg.header)
            fut = self._pending.get(msg.parent_msg_id or "")
            if fut is not None and not fut.done():
                fut.set_result(msg)
            else:
                log.debug("reply to %s not awaited (late or duplicate)", msg.parent_msg_id)

    # ------------------------------------------------------------------------------------ commands

    async def heartbeat(self, timeout: float | None = None) -> HeartbeatReply:
        return await self._typed(HeartbeatReply, "heartbeat", HeartbeatRequest(), timeout=timeout)

    async def attach(self, slot: str, socket_path: str, connect_timeout: float = 30.0) -> SlotInfo:
        req = AttachRequest(slot=slot, socket_path=socket_path, connect_timeout=connect_timeout)
        reply = await self._typed(AttachReply, "attach", req, timeout=connect_timeout + self.timeout)
        return reply.slot

    async def detach(self, slot: str) -> None:
        await self.request("detach", DetachRequest(slot=slot))

    async def slots(self) -> list[SlotInfo]:
        return (await self._typed(SlotsReply, "slots", SlotsRequest())).slots

    async def shutdown(self) -> ShutdownReply:
        return await self._typed(ShutdownReply, "shutdown", ShutdownRequest())

    async def task_command(
        self, slot: str, command: BaseModel | dict[str, Any], *, timeout: float | None = None
    ) -> TaskCommandReply:
        """Any of the nine TaskCommands, as a ``protocol`` model or its wire dict."""
        if isinstance(command, WireModel):
            wire = command.wire()
        elif isinstance(command, BaseModel):
            wire = command.model_dump()
        else:
            wire = command
        req = TaskCommandRequest(slot=slot, command=wire)
        return await self._typed(TaskCommandReply, "task_command", req, timeout=timeout)

    async def start_task(
        self,
        slot: str,
        text: str,
        configuration: RooCodeSettings | dict[str, Any] | None = None,
        *,
        images: list[str] | None = None,
        new_tab: bool | None = None,
        timeout: float = 40.0,
    ) -> str:
        """StartNewTask; returns the Roo task id (``timeout`` must exceed the bridge's start timeout)."""
        data: dict[str, Any] = {"text": text, "configuration": configuration or {}}
        if images is not None:
            data["images"] = images
        if new_tab is not None:
            data["newTab"] = new_tab
        command = StartNewTask(data=StartNewTaskData.model_validate(data))
        reply = await self.task_command(slot, command, timeout=timeout)
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

    # -------------------------------------------------------------------------------------- events

    async def snapshot(
        self, slot: str, since_seq: int | None = 0, limit: int = 10_000
    ) -> tuple[SnapshotReply, list[Event]]:
        """Buffered events of ``slot`` after ``since_seq`` (one page of at most ``limit``)."""
        msg = await self.request_message(
            "snapshot", SnapshotRequest(slot=slot, since_seq=since_seq, limit=limit)
        )
        reply = SnapshotReply.model_validate(msg.content)
        events = []
        for frames in split_snapshot_buffers(msg.buffers):
            # Seen live already, perhaps: verify the signature but not against the replay history.
            event = self._parse_event(self.session.deserialize(frames, check_replay=False))
            if event is not None:
                events.append(event)
        return reply, events

    async def subscribe(self, slot: str, timeout: float | None = None) -> None:
        """Subscribe to every event of ``slot`` and return once the bridge has welcomed us."""
        await self._subscribe(slot_topic(slot), timeout)

    async def unsubscribe(self, slot: str) -> None:
        self._unsubscribe(slot_topic(slot))

    async def _subscribe(self, topic: bytes, timeout: float | None) -> None:
        timeout = self.timeout if timeout is None else timeout
        self._users[topic] = self._users.get(topic, 0) + 1
        welcome = self._welcomes.get(topic)
        if welcome is None:
            welcome = self._welcomes[topic] = asyncio.get_running_loop().create_future()
        try:
            for _ in range(self.retries + 1):
                if welcome.done():
                    return
                # XPUB_VERBOSE makes the bridge see (and welcome) every repeat of a subscription.
                self._sub.subscribe(topic)
                self._sub_counts[topic] = self._sub_counts.get(topic, 0) + 1
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(welcome), timeout)
            if not welcome.done():
                raise BridgeTimeout(f"no welcome for {topic.decode()} after {self.retries + 1} tries")
        except BaseException:
            self._unsubscribe(topic)
            raise

    def _unsubscribe(self, topic: bytes) -> None:
        self._users[topic] = self._users.get(topic, 1) - 1
        if self._users[topic] > 0:
            return
        del self._users[topic]
        self._welcomes.pop(topic, None)
        if not self._closed:
            for _ in range(self._sub_counts.pop(topic, 0)):
                self._sub.unsubscribe(topic)

    async def events(self, slot: str, since_seq: int | None = None) -> AsyncGenerator[Event, None]:
        """Every sequenced event of ``slot`` with seq > ``since_seq`` (None: from now on), in order,
        without gaps. Raises :class:`EventGap` or :class:`BridgeRestarted` rather than skip events."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._listeners.setdefault(slot, []).append(queue)
        topic = slot_topic(slot)
        subscribed = False
        try:
            await self._subscribe(topic, None)
            subscribed = True
            if since_seq is None:
                try:
                    last = (await self.snapshot(slot, None))[0].last_seq
                except UnknownSlot:
                    last = 0  # not attached yet: its first event will be seq 1
            else:
                last = since_seq
                with contextlib.suppress(UnknownSlot):  # not attached yet: nothing to replay
                    async for event in self._replay(slot, last):
                        last = cast(int, event.seq)
                        yield event
            while True:
                item = await queue.get()
                if isinstance(item, BridgeError):
                    raise item
                seq = getattr(item.content, "seq", None) if item.msg_type == "hugz" else item.seq
                if not isinstance(seq, int) or seq <= last:
                    continue
                if item.msg_type == "hugz" or seq > last + 1:
                    log.info("slot %s: gap after seq %d (saw %d), filling from the bridge", slot, last, seq)
                    async for event in self._replay(slot, last):
                        last = cast(int, event.seq)
                        yield event
                    if seq <= last or item.msg_type == "hugz":
                        continue
                    if seq > last + 1:
                        raise EventGap(slot, last + 1, seq)
                last = seq
                yield item
        finally:
            self._listeners[slot].remove(queue)
            if not self._listeners[slot]:
                del self._listeners[slot]
            if subscribed:
                self._unsubscribe(topic)

    async def _replay(self, slot: str, since: int) -> AsyncIterator[Event]:
        while True:
            reply, events = await self.snapshot(slot, since)
            if not reply.complete:
                raise EventGap(slot, since + 1, reply.first_seq)
            for event in events:
                if event.header.session != self.bridge_session:
                    raise BridgeRestarted(self.bridge_session, event.header.session)
                if event.seq != since + 1:
                    raise EventGap(slot, since + 1, event.seq or 0)
                since += 1
                yield event
            if not reply.more or not events:
                return

    async def wait_for(
        self,
        slot: str,
        predicate: Callable[[Event], bool],
        timeout: float,
        *,
        since_seq: int | None = None,
    ) -> Event:
        """The first event of ``slot`` (after ``since_seq``) matching ``predicate``; TimeoutError else."""

        async def first() -> Event:
            async with contextlib.aclosing(self.events(slot, since_seq)) as stream:
                async for event in stream:
                    if predicate(event):
                        return event
            raise BridgeError("event stream ended")  # pragma: no cover - events() never ends by itself

        return await asyncio.wait_for(first(), timeout)

    def _parse_event(self, msg: Message) -> Event | None:
        model = EVENTS.get(msg.msg_type, Content)
        try:
            content = model.model_validate(msg.content)
        except ValidationError as exc:
            log.warning("dropped %s event: %s", msg.msg_type, exc)
            return None
        return Event(msg.msg_type, msg.header, msg.parent, content, msg.topic)

    async def _read_events(self) -> None:
        while True:
            frames = await self._sub.recv_multipart()
            try:
                msg = self.session.deserialize(frames)
            except WireError as exc:
                log.warning("dropped event: %s", exc)
                continue
            self._check_session(msg.header)
            event = self._parse_event(msg)
            if event is None:
                continue
            if isinstance(event.content, WelcomeContent):
                welcome = self._welcomes.get(event.content.subscription.encode())
                if welcome is not None and not welcome.done():
                    welcome.set_result(None)
                continue
            slot = event.slot
            for queue in self._listeners.get(slot or "", ()):
                queue.put_nowait(event)

    def _check_session(self, header: Header) -> None:
        if header.session == self.bridge_session:
            return
        restarted = BridgeRestarted(self.bridge_session, header.session)
        log.warning("%s", restarted)
        self.bridge_session = header.session
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(restarted)
        for callback in self.on_restart:
            try:
                callback(restarted)
            except Exception:
                log.exception("on_restart callback failed")


__all__ = [
    "BridgeClient",
    "BridgeError",
    "BridgeRestarted",
    "BridgeTimeout",
    "CommandError",
    "CommandTimeout",
    "ConnectFailed",
    "Event",
    "EventGap",
    "InvalidCommand",
    "ShuttingDown",
    "SlotDown",
    "SlotExists",
    "UnknownSlot",
]
